//! The application: what `kubesink run` and `kubesink replay` assemble
//! from the library's parts, as an API the binary (`main.rs`: flags,
//! configuration, signals, printing) and in-process tests both drive.
//!
//! - [`Runtime`]: sources, pipeline, operations server, ConfigMap modules
//!   and leader election of `kubesink run`, started from a
//!   [`Plan`](crate::config::Plan) and [`RunOptions`] and stopped with
//!   [`Runtime::shutdown`].
//! - [`replay()`]: `kubesink replay`, a file or stdin through the pipeline.
//! - [`ExitStatus`]: the binary's exit codes, each outcome's
//!   `exit_status()`.

mod replay;
mod run;

pub use replay::{ReplayError, ReplayInput, ReplayOutcome, replay};
pub use run::{Cluster, LeaderElection, RunError, RunOptions, Runtime, Stopped};

/// How the `kubesink` process ends: its exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitStatus {
    /// 0: everything delivered (`run`: everything queued at shutdown, or it
    /// stood by and delivered nothing).
    Delivered,
    /// 1: a startup error (configuration, module, input file, cluster,
    /// operations server), or `run` stopped on an error (this replica lost
    /// its leadership).
    Error,
    /// 3 (`replay`): some input was malformed and skipped; everything else
    /// was delivered.
    Malformed,
    /// 4: some records were rejected by a sink for good.
    Rejected,
    /// 5 (`run`): the shutdown grace period ran out with records left
    /// undelivered.
    Undelivered,
}

impl ExitStatus {
    /// The process exit code.
    pub fn code(self) -> u8 {
        match self {
            ExitStatus::Delivered => 0,
            ExitStatus::Error => 1,
            ExitStatus::Malformed => 3,
            ExitStatus::Rejected => 4,
            ExitStatus::Undelivered => 5,
        }
    }
}

impl From<ExitStatus> for std::process::ExitCode {
    fn from(status: ExitStatus) -> Self {
        std::process::ExitCode::from(status.code())
    }
}
