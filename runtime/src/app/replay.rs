//! `kubesink replay` as a library: objects from a file or stdin, through
//! the pipeline to every sink of a [`Plan`], until the input ends and
//! every queue is delivered.

use std::io::BufRead;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use thiserror::Error;

use super::ExitStatus;
use crate::config::Plan;
use crate::pipeline::{Pipeline, PipelineError, SinkReport};
use crate::source::replay::ReplayReport;
use crate::source::{Normalizer, replay as source};

/// Entries per batch handed from the reading thread to the pipeline.
const HANDOFF_BATCH: usize = 256;
/// Batches read ahead of the pipeline (as many entries as the 4096 the
/// hand-off held when it went entry by entry).
const HANDOFF_BATCHES: usize = 16;

/// Where `kubesink replay` reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplayInput {
    /// Standard input (`-`), named `<stdin>` in messages.
    Stdin,
    /// A file.
    File(PathBuf),
}

impl ReplayInput {
    /// The command line's argument: `-` is stdin, anything else a file.
    pub fn from_arg(arg: &str) -> Self {
        if arg == "-" {
            ReplayInput::Stdin
        } else {
            ReplayInput::File(arg.into())
        }
    }
}

/// Errors of [`replay`](replay()); each names what is at fault.
#[derive(Debug, Error)]
pub enum ReplayError {
    /// A sink's module is a ConfigMap key, and replay has no cluster.
    #[error(
        "sink '{sink}': module {module} comes from a ConfigMap, which needs a cluster: use `kubesink run`, or give replay a file module"
    )]
    ConfigMapModule {
        /// The sink.
        sink: String,
        /// Where its module comes from (`configmap:NAME/KEY`).
        module: String,
    },
    /// The wasmtime engine cannot start.
    #[error("starting the sandbox host")]
    Host(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// A sink cannot be loaded.
    #[error(transparent)]
    Pipeline(#[from] PipelineError),
    /// The input file cannot be opened.
    #[error("replay input {}", file.display())]
    Input {
        /// The file.
        file: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The reading thread panicked.
    #[error("replay reader")]
    Reader(#[source] tokio::task::JoinError),
}

/// What a replay did.
#[derive(Debug)]
pub struct ReplayOutcome {
    /// What was read: documents, records, ignored objects, problems.
    pub input: ReplayReport,
    /// Final counters of every sink, in configuration order.
    pub sinks: Vec<SinkReport>,
    /// From the first record sent to the last one delivered.
    pub elapsed: Duration,
}

impl ReplayOutcome {
    /// The exit status of `kubesink replay` that ended so: 4 when a sink
    /// rejected records, else 3 when some input was malformed, else 0.
    pub fn exit_status(&self) -> ExitStatus {
        if self.sinks.iter().any(|s| s.failed > 0) {
            ExitStatus::Rejected
        } else if !self.input.problems.is_empty() {
            ExitStatus::Malformed
        } else {
            ExitStatus::Delivered
        }
    }
}

/// Loads every sink of `plan`, feeds it the objects of `input` (a `kubectl
/// get -o json` object or List, or a `--watch --output-watch-events`
/// stream) and waits until everything is delivered.
pub async fn replay(plan: &Plan, input: ReplayInput) -> Result<ReplayOutcome, ReplayError> {
    if let Some(sink) = plan.sinks.iter().find(|s| s.configmap().is_some()) {
        return Err(ReplayError::ConfigMapModule {
            sink: sink.spec.name.clone(),
            module: sink.module.origin(),
        });
    }
    let normalizer = Normalizer::with_region(plan.region.clone());
    let host =
        kubesink_host::Host::new(plan.host.clone()).map_err(|e| ReplayError::Host(Box::new(e)))?;
    let pipeline = Pipeline::start(&host, plan.sinks.clone()).await?;

    let (name, reader): (String, Box<dyn BufRead + Send>) = match input {
        ReplayInput::Stdin => (
            "<stdin>".into(),
            Box::new(std::io::BufReader::new(std::io::stdin())),
        ),
        ReplayInput::File(file) => {
            let f = std::fs::File::open(&file).map_err(|source| ReplayError::Input {
                file: file.clone(),
                source,
            })?;
            (
                file.display().to_string(),
                Box::new(std::io::BufReader::with_capacity(1 << 20, f)),
            )
        }
    };
    // Entries cross from the reading thread in batches: one hand-off (and
    // at most one wake-up of each side) per batch, not per entry.
    let (tx, mut rx) = tokio::sync::mpsc::channel(HANDOFF_BATCHES);
    let reader_task = tokio::task::spawn_blocking(move || {
        source::replay_batches(reader, &name, &normalizer, HANDOFF_BATCH, |batch| {
            tx.blocking_send(batch).is_ok()
        })
    });
    let started = Instant::now();
    while let Some(batch) = rx.recv().await {
        pipeline.send_batch(batch).await;
    }
    let input = reader_task.await.map_err(ReplayError::Reader)?;
    let sinks = pipeline.finish().await;
    Ok(ReplayOutcome {
        input,
        sinks,
        elapsed: started.elapsed(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(failed: u64, problems: usize) -> ReplayOutcome {
        ReplayOutcome {
            input: ReplayReport {
                problems: vec!["x: line 1: bad".into(); problems],
                ..ReplayReport::default()
            },
            sinks: vec![SinkReport {
                name: "s".into(),
                failed,
                ..SinkReport::default()
            }],
            elapsed: Duration::ZERO,
        }
    }

    #[test]
    fn exit_status_is_rejected_then_malformed() {
        assert_eq!(outcome(0, 0).exit_status(), ExitStatus::Delivered);
        assert_eq!(outcome(0, 1).exit_status(), ExitStatus::Malformed);
        assert_eq!(outcome(1, 1).exit_status(), ExitStatus::Rejected);
        assert_eq!(ExitStatus::Undelivered.code(), 5);
    }

    #[test]
    fn a_dash_is_stdin() {
        assert_eq!(ReplayInput::from_arg("-"), ReplayInput::Stdin);
        assert_eq!(
            ReplayInput::from_arg("w.json"),
            ReplayInput::File("w.json".into())
        );
    }
}
