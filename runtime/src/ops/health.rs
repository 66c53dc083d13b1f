//! Liveness and readiness, as `/healthz` and `/readyz` report them.
//!
//! - **Live** (`/healthz`): the process answers, its async runtime is
//!   responsive (a heartbeat task ticks every [`HEARTBEAT`]; a tick older
//!   than [`STALL`] means the runtime is stuck) and no sink worker has
//!   died of a panic.
//! - **Ready** (`/readyz`): every watcher has completed its first listing
//!   (a resource the API server does not serve, such as a training-job CRD
//!   that is not installed, counts as listed: there is nothing to list),
//!   every sink has been initialized, and the process is not shutting down.
//!   At least one watcher must have been declared, so a process that has
//!   not started its watches yet is not ready. A sink that lags or catches
//!   up ([`crate::pipeline::lag`]) does not make the process unready — the
//!   watches and the other sinks go on, and restarting kubesink would not
//!   help the sink — but the answer names it, with its lag.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use kube::runtime::watcher;

use crate::pipeline::lag::{LagState, SinkLag};

/// How often the heartbeat ticks.
pub(crate) const HEARTBEAT: Duration = Duration::from_millis(500);
/// A heartbeat older than this makes `/healthz` fail.
pub const STALL: Duration = Duration::from_secs(10);

/// State of one watched resource.
#[derive(Debug, Clone, PartialEq, Eq)]
enum WatchState {
    /// Declared; its first listing has not completed.
    Listing,
    /// The first listing completed.
    Synced,
    /// The API server does not serve the resource (404): nothing to list.
    Absent,
}

/// State of one sink.
#[derive(Debug, Clone, PartialEq, Eq)]
enum SinkState {
    Loading,
    Ready,
}

#[derive(Debug, Default)]
struct State {
    watchers: BTreeMap<String, WatchState>,
    sinks: BTreeMap<String, SinkState>,
    dead_workers: Vec<String>,
    stopping: bool,
    lags: Vec<std::sync::Weak<SinkLag>>,
}

/// Tracks what `/healthz` and `/readyz` answer.
#[derive(Debug)]
pub struct Health {
    state: Mutex<State>,
    started: Instant,
    /// Milliseconds since `started` at the last heartbeat.
    beat: AtomicU64,
}

impl Default for Health {
    fn default() -> Self {
        Self::new()
    }
}

impl Health {
    /// Nothing declared yet: live, not ready.
    pub fn new() -> Self {
        Self {
            state: Mutex::new(State::default()),
            started: Instant::now(),
            beat: AtomicU64::new(0),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Declares a watch whose first listing is awaited.
    pub(crate) fn watcher_pending(&self, resource: &str) {
        self.lock()
            .watchers
            .insert(resource.to_owned(), WatchState::Listing);
    }

    /// The watch on `resource` completed a listing.
    pub(crate) fn watcher_synced(&self, resource: &str) {
        self.lock()
            .watchers
            .insert(resource.to_owned(), WatchState::Synced);
    }

    /// The watch on `resource` failed; a resource the API server does not
    /// serve (404 on the initial list) counts as listed until it appears.
    pub(crate) fn watcher_failed(&self, resource: &str, error: &watcher::Error) {
        if not_served(error) {
            let mut s = self.lock();
            let state = s
                .watchers
                .entry(resource.to_owned())
                .or_insert(WatchState::Listing);
            if *state == WatchState::Listing {
                *state = WatchState::Absent;
            }
        }
    }

    /// Declares a sink being loaded.
    pub(crate) fn sink_pending(&self, sink: &str) {
        self.lock()
            .sinks
            .insert(sink.to_owned(), SinkState::Loading);
    }

    /// Sink `sink` is initialized.
    pub(crate) fn sink_ready(&self, sink: &str) {
        self.lock().sinks.insert(sink.to_owned(), SinkState::Ready);
    }

    /// Names sink `lag` in the readiness answer while it lags.
    pub(crate) fn watch_lag(&self, lag: std::sync::Weak<SinkLag>) {
        self.lock().lags.push(lag);
    }

    /// The worker of `sink` ended by a panic.
    pub(crate) fn worker_died(&self, sink: &str) {
        self.lock().dead_workers.push(sink.to_owned());
    }

    /// Shutting down: no longer ready.
    pub(crate) fn set_stopping(&self) {
        self.lock().stopping = true;
    }

    /// Records a heartbeat now.
    pub(crate) fn beat(&self) {
        let ms = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.beat.store(ms, Ordering::Relaxed);
    }

    /// Starts the heartbeat task (on the current tokio runtime).
    pub(crate) fn spawn_heartbeat(self: &std::sync::Arc<Self>) -> tokio::task::JoinHandle<()> {
        let me = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(HEARTBEAT);
            loop {
                tick.tick().await;
                me.beat();
            }
        })
    }

    /// `Ok(text)` when live, `Err(text)` saying what is wrong.
    pub(crate) fn liveness(&self) -> Result<String, String> {
        let now = self.started.elapsed();
        let last = Duration::from_millis(self.beat.load(Ordering::Relaxed));
        let age = now.saturating_sub(last);
        let s = self.lock();
        let mut problems = Vec::new();
        if age > STALL {
            problems.push(format!(
                "the async runtime is stalled: last heartbeat {:.1} s ago",
                age.as_secs_f64()
            ));
        }
        for sink in &s.dead_workers {
            problems.push(format!("the worker of sink {sink} panicked"));
        }
        if problems.is_empty() {
            Ok("ok\n".into())
        } else {
            Err(format!("not live:\n- {}\n", problems.join("\n- ")))
        }
    }

    /// `Ok(text)` when ready, `Err(text)` listing what is not.
    pub fn readiness(&self) -> Result<String, String> {
        let s = self.lock();
        let mut problems = Vec::new();
        if s.stopping {
            problems.push("shutting down".to_owned());
        }
        if s.watchers.is_empty() {
            problems.push("no watch started yet".to_owned());
        }
        for (resource, state) in &s.watchers {
            if *state == WatchState::Listing {
                problems.push(format!("watch {resource}: first listing not complete"));
            }
        }
        if s.sinks.is_empty() {
            problems.push("no sink loaded yet".to_owned());
        }
        for (sink, state) in &s.sinks {
            if *state == SinkState::Loading {
                problems.push(format!("sink {sink}: not initialized"));
            }
        }
        if !problems.is_empty() {
            return Err(format!("not ready:\n- {}\n", problems.join("\n- ")));
        }
        let synced = s
            .watchers
            .values()
            .filter(|w| **w == WatchState::Synced)
            .count();
        let absent: Vec<&str> = s
            .watchers
            .iter()
            .filter(|(_, w)| **w == WatchState::Absent)
            .map(|(r, _)| r.as_str())
            .collect();
        let mut text = format!(
            "ready: {synced} watches synced, {} sinks initialized\n",
            s.sinks.len()
        );
        if !absent.is_empty() {
            text.push_str(&format!(
                "not served by the API server: {}\n",
                absent.join(", ")
            ));
        }
        for lag in s.lags.iter().filter_map(std::sync::Weak::upgrade) {
            let doing = match lag.state() {
                LagState::Ok => continue,
                LagState::Lagging => "lagging: gets no records until it has delivered its queue",
                LagState::CatchingUp => "catching up from a fresh listing",
            };
            text.push_str(&format!(
                "sink {} {doing} (behind by {:.0} s, {} records skipped)\n",
                lag.name(),
                lag.lag().as_secs_f64(),
                lag.skipped()
            ));
        }
        Ok(text)
    }
}

/// True for an initial list that failed with 404: the API server does not
/// serve the resource (for instance a CRD that is not installed).
fn not_served(error: &watcher::Error) -> bool {
    matches!(error, watcher::Error::InitialListFailed(kube::Error::Api(status)) if status.code == 404)
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::core::Status;

    fn api_error(code: u16) -> watcher::Error {
        let mut status = Status::failure("boom", "NotFound");
        status.code = code;
        watcher::Error::InitialListFailed(kube::Error::Api(Box::new(status)))
    }

    #[test]
    fn ready_only_when_every_watch_listed_and_every_sink_initialized() {
        let h = Health::new();
        let err = h.readiness().expect_err("nothing declared");
        assert!(err.contains("no watch started yet"), "{err}");
        h.sink_pending("mysql");
        h.watcher_pending("pods (v1)");
        h.watcher_pending("tfjobs (training.kubedl.io/v1alpha1)");
        let err = h.readiness().expect_err("loading");
        assert!(err.contains("sink mysql: not initialized"), "{err}");
        assert!(err.contains("watch pods (v1): first listing"), "{err}");
        h.sink_ready("mysql");
        h.watcher_synced("pods (v1)");
        let err = h.readiness().expect_err("tfjobs pending");
        assert!(!err.contains("mysql"), "{err}");
        assert!(err.contains("tfjobs"), "{err}");
        // A 403 does not make it ready; a 404 (CRD not installed) does.
        h.watcher_failed("tfjobs (training.kubedl.io/v1alpha1)", &api_error(403));
        assert!(h.readiness().is_err());
        h.watcher_failed("tfjobs (training.kubedl.io/v1alpha1)", &api_error(404));
        let ok = h.readiness().expect("ready");
        assert!(ok.contains("1 watches synced, 1 sinks"), "{ok}");
        assert!(ok.contains("not served by the API server: tfjobs"), "{ok}");
        // A later 404 does not undo a completed listing.
        h.watcher_failed("pods (v1)", &api_error(404));
        assert!(h.readiness().expect("ready").contains("1 watches synced"));
        h.set_stopping();
        assert!(
            h.readiness()
                .expect_err("stopping")
                .contains("shutting down")
        );
    }

    #[test]
    fn a_lagging_sink_is_named_but_keeps_the_process_ready() {
        let h = Health::new();
        h.sink_pending("slow");
        h.sink_ready("slow");
        h.watcher_pending("pods (v1)");
        h.watcher_synced("pods (v1)");
        let lag = std::sync::Arc::new(SinkLag::new("slow"));
        h.watch_lag(std::sync::Arc::downgrade(&lag));
        assert!(!h.readiness().expect("ready").contains("slow"));
        lag.fall_behind();
        let ok = h.readiness().expect("still ready");
        assert!(ok.contains("sink slow lagging"), "{ok}");
        assert!(ok.contains("1 records skipped"), "{ok}");
        lag.start_catch_up();
        let ok = h.readiness().expect("still ready");
        assert!(ok.contains("sink slow catching up"), "{ok}");
        lag.caught_up();
        assert!(!h.readiness().expect("ready").contains("slow"));
    }

    #[test]
    fn liveness_fails_after_a_stall_or_a_dead_worker() {
        let h = Health::new();
        h.beat();
        assert!(h.liveness().is_ok());
        // Pretend the last beat was long ago.
        let h = Health {
            started: Instant::now() - STALL - Duration::from_secs(1),
            ..Health::new()
        };
        let err = h.liveness().expect_err("stalled");
        assert!(err.contains("stalled"), "{err}");
        h.beat();
        assert!(h.liveness().is_ok());
        h.worker_died("mysql");
        assert!(
            h.liveness()
                .expect_err("dead")
                .contains("sink mysql panicked")
        );
    }
}
