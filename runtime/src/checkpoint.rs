//! Durable checkpoints: what each checkpointed sink has delivered, kept in
//! a ConfigMap kubesink owns in its own namespace (default
//! `kubesink-checkpoints`, key `frontiers.json`), so that a restart, a
//! rollout or a leader hand-over does not deliver it again.
//!
//! The ConfigMap holds, per sink, per resource (Kubernetes kind), the
//! sink's delivery frontier ([`crate::pipeline::frontier`]): the
//! resourceVersion at or below which everything handed to the sink was
//! acknowledged. It is read when kubesink starts watching (once it leads,
//! with leader election), written at most once per interval while
//! frontiers move (nothing is written while nothing happens), and once
//! more after the queues are delivered at shutdown, before the Lease is
//! released.
//!
//! What it costs when it is stale (a crash between two writes): the
//! entries acknowledged since the last write are delivered again, at most
//! an interval's worth; nothing is ever skipped that was not acknowledged.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::Client;
use kube::api::{Api, Patch, PatchParams};
use thiserror::Error;
use tokio::task::JoinHandle;

use crate::pipeline::Pipeline;
use crate::pipeline::frontier::Frontiers;

/// The key of the ConfigMap that holds the frontiers.
pub const KEY: &str = "frontiers.json";

/// The default ConfigMap name (`--checkpoint-configmap`).
pub const DEFAULT_NAME: &str = "kubesink-checkpoints";

/// Most one write per this long while frontiers move.
pub const INTERVAL: Duration = Duration::from_secs(1);

/// Per sink, per resource: the frontier (a resourceVersion, as a string:
/// Kubernetes calls them opaque, kubesink compares them as numbers).
type Stored = BTreeMap<String, BTreeMap<String, String>>;

/// Why a checkpoint could not be read or written; each names the ConfigMap.
#[derive(Debug, Error)]
pub enum CheckpointError {
    /// The API server refused or could not be reached.
    #[error("checkpoint ConfigMap {namespace}/{name}: {source}")]
    Api {
        /// Its namespace.
        namespace: String,
        /// Its name.
        name: String,
        /// The cause.
        source: kube::Error,
    },
    /// The stored text is not what kubesink writes.
    #[error("checkpoint ConfigMap {namespace}/{name}, key {KEY}: {message}")]
    Invalid {
        /// Its namespace.
        namespace: String,
        /// Its name.
        name: String,
        /// What is wrong.
        message: String,
    },
}

/// Where the checkpoint lives, and the sinks that keep one.
pub struct Checkpoints {
    api: Api<ConfigMap>,
    namespace: String,
    name: String,
    sinks: Vec<(String, Arc<Frontiers>)>,
}

impl std::fmt::Debug for Checkpoints {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Checkpoints")
            .field("namespace", &self.namespace)
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl Checkpoints {
    /// The checkpoint of `pipeline`'s checkpointed sinks in ConfigMap
    /// `namespace/name`; `None` when no sink keeps one.
    pub fn new(client: Client, namespace: &str, name: &str, pipeline: &Pipeline) -> Option<Self> {
        let sinks = pipeline.checkpointed();
        if sinks.is_empty() {
            return None;
        }
        Some(Self {
            api: Api::namespaced(client, namespace),
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            sinks,
        })
    }

    /// The ConfigMap's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    fn api_error(&self, source: kube::Error) -> CheckpointError {
        CheckpointError::Api {
            namespace: self.namespace.clone(),
            name: self.name.clone(),
            source,
        }
    }

    /// Reads the checkpoint into the sinks' frontiers; returns how many
    /// frontiers were loaded (0 when there is no checkpoint yet).
    pub async fn load(&self) -> Result<usize, CheckpointError> {
        let Some(map) = self
            .api
            .get_opt(&self.name)
            .await
            .map_err(|e| self.api_error(e))?
        else {
            return Ok(0);
        };
        let Some(text) = map.data.as_ref().and_then(|d| d.get(KEY)) else {
            return Ok(0);
        };
        let stored = parse(text).map_err(|message| CheckpointError::Invalid {
            namespace: self.namespace.clone(),
            name: self.name.clone(),
            message,
        })?;
        let mut loaded = 0;
        for (sink, frontiers) in &self.sinks {
            for (resource, version) in stored.get(sink).into_iter().flatten() {
                frontiers.load(resource, *version);
                loaded += 1;
            }
        }
        Ok(loaded)
    }

    /// Writes every sink's frontiers (server-side apply: created if
    /// missing).
    pub async fn save(&self) -> Result<(), CheckpointError> {
        let stored: Stored = self
            .sinks
            .iter()
            .map(|(sink, f)| {
                let values = f
                    .snapshot()
                    .into_iter()
                    .map(|(r, v)| (r, v.to_string()))
                    .collect();
                (sink.clone(), values)
            })
            .collect();
        let text = serde_json::to_string(&stored).unwrap_or_default();
        let object = serde_json::json!({
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {
                "name": self.name,
                "labels": {"app.kubernetes.io/managed-by": "kubesink"},
            },
            "data": {KEY: text},
        });
        self.api
            .patch(
                &self.name,
                &PatchParams::apply("kubesink").force(),
                &Patch::Apply(object),
            )
            .await
            .map_err(|e| self.api_error(e))?;
        Ok(())
    }

    /// Writes the checkpoint whenever a frontier moved, at most once per
    /// `interval`; a failed write is logged and tried again an interval
    /// later. Waits on the frontiers, never on a timer, while nothing
    /// moves.
    pub fn spawn_writer(self: Arc<Self>, interval: Duration) -> JoinHandle<()> {
        tokio::spawn(async move {
            let mut failing = false;
            loop {
                if !failing {
                    let moved = self.sinks.iter().map(|(_, f)| Box::pin(f.changed()));
                    futures_util::future::select_all(moved).await;
                }
                match self.save().await {
                    Ok(()) => {
                        if failing {
                            tracing::info!(configmap = %self.name, "checkpoint written again");
                        }
                        failing = false;
                    }
                    Err(e) => {
                        if !failing {
                            let error = kubesink_host::log::sanitize(&e.to_string(), 1024);
                            tracing::warn!(%error, "cannot write the checkpoint; retrying (a restart now may deliver again what was delivered since the last write)");
                        }
                        failing = true;
                    }
                }
                tokio::time::sleep(interval).await;
            }
        })
    }
}

/// Parses what [`Checkpoints::save`] writes.
fn parse(text: &str) -> Result<BTreeMap<String, BTreeMap<String, u64>>, String> {
    let stored: Stored = serde_json::from_str(text).map_err(|e| e.to_string())?;
    stored
        .into_iter()
        .map(|(sink, resources)| {
            let resources = resources
                .into_iter()
                .map(|(resource, v)| {
                    v.parse::<u64>().map(|v| (resource.clone(), v)).map_err(|_| {
                        format!("sink `{sink}`, resource `{resource}`: `{v}` is not a resourceVersion kubesink wrote")
                    })
                })
                .collect::<Result<_, _>>()?;
            Ok((sink, resources))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_what_it_writes_and_names_a_bad_value() {
        let good = r#"{"sls":{"Event":"120","Pod":"7"}}"#;
        let parsed = parse(good).expect("valid");
        assert_eq!(parsed["sls"]["Event"], 120);
        assert_eq!(parsed["sls"]["Pod"], 7);
        let err = parse(r#"{"sls":{"Event":"x1"}}"#).unwrap_err();
        assert!(
            err.contains("sink `sls`") && err.contains("`Event`"),
            "{err}"
        );
        assert!(parse("[]").is_err());
    }
}
