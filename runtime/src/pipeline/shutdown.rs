//! Stopping: every queue is closed and the workers deliver what is queued
//! — within a grace period ([`Pipeline::shutdown`], `kubesink run`), or to
//! the end ([`Pipeline::finish`], `kubesink replay`). Both wait on the
//! workers' ends, not by looking again and again.

use super::Pipeline;
use super::lanes::SinkHandle;
use super::stats::{ShutdownReport, SinkReport};

impl Pipeline {
    /// Graceful stop: marks the process not ready, closes every queue (no
    /// more entries are taken: stop the sources first) and lets the
    /// workers deliver what is queued, for at most `grace`. Workers still
    /// busy then are stopped; the report says how many records each of
    /// their sinks had not delivered.
    pub async fn shutdown(&self, grace: std::time::Duration) -> ShutdownReport {
        self.ops.health.set_stopping();
        self.close();
        let _ = tokio::time::timeout(grace, self.stopped()).await;
        let mut undelivered = Vec::new();
        for s in &self.sinks {
            if !s.finished() {
                for l in &s.lanes {
                    l.worker.abort();
                }
                let left = s.counters.undelivered();
                tracing::error!(sink = %s.name, undelivered = left, ?grace, "shutdown grace ran out; the sink's remaining records were not delivered");
                undelivered.push((s.name.clone(), left));
            }
        }
        ShutdownReport {
            reports: self.reports(),
            undelivered,
        }
    }

    /// Closes every queue: no more entries are taken.
    fn close(&self) {
        for s in &self.sinks {
            s.close();
        }
    }

    /// Resolves once every worker has ended.
    async fn stopped(&self) {
        futures_util::future::join_all(self.sinks.iter().map(SinkHandle::stopped)).await;
    }

    /// Closes the queues, lets every worker deliver what is queued, and
    /// returns the final counters.
    pub async fn finish(self) -> Vec<SinkReport> {
        self.close();
        let mut reports = Vec::new();
        for s in self.sinks {
            for l in s.lanes {
                if let Err(e) = l.worker.await {
                    tracing::error!(sink = %s.name, error = %e, "sink worker ended abnormally");
                }
            }
            reports.push(s.counters.report(&s.name));
        }
        reports
    }

    /// Counters of every sink, in configuration order.
    pub fn reports(&self) -> Vec<SinkReport> {
        self.sinks
            .iter()
            .map(|s| s.counters.report(&s.name))
            .collect()
    }

    /// Entries waiting per sink.
    pub fn depths(&self) -> Vec<(String, usize)> {
        self.sinks
            .iter()
            .map(|s| (s.name.clone(), s.queued()))
            .collect()
    }
}
