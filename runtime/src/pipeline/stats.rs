//! What the pipeline counts per sink, and the snapshots it reports: at the
//! end of a replay ([`super::Pipeline::finish`]) and of a run
//! ([`super::Pipeline::shutdown`]).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::ops::Ops;
use crate::ops::health::Health;
use crate::ops::metrics::SinkMetrics;

/// What became of the entries routed to one sink (shared by its workers).
/// Not to be confused with `kubesink_host::SinkStats`, the counters of one
/// sink instance (guest calls, builds, guest time).
#[derive(Debug)]
pub struct DeliveryCounters {
    /// Entries queued for the sink (after coalescing, counted once each).
    pub received: AtomicU64,
    /// Entries replaced by a newer update while waiting.
    pub coalesced: AtomicU64,
    /// Entries the sink accepted.
    pub delivered: AtomicU64,
    /// Entries the sink rejected for good (fatal errors, faults).
    pub failed: AtomicU64,
    /// Batches retried after a retryable error.
    pub retries: AtomicU64,
    /// Faults: traps, deadlines, memory caps, fatal errors.
    pub faults: AtomicU64,
    /// Batches written.
    pub batches: AtomicU64,
    /// The sink's Prometheus metrics ([`crate::ops::metrics`]).
    pub(super) metrics: SinkMetrics,
    /// Readiness and liveness ([`crate::ops::health`]).
    pub(super) health: Arc<Health>,
}

/// A snapshot of [`DeliveryCounters`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SinkReport {
    pub name: String,
    pub received: u64,
    pub coalesced: u64,
    pub delivered: u64,
    pub failed: u64,
    pub retries: u64,
    pub faults: u64,
    pub batches: u64,
}

/// What [`super::Pipeline::shutdown`] achieved.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ShutdownReport {
    /// Final counters of every sink, in configuration order.
    pub reports: Vec<SinkReport>,
    /// Sinks that still had records (queued or in flight) when the grace
    /// period ran out, with how many; empty when everything was delivered.
    pub undelivered: Vec<(String, u64)>,
}

impl DeliveryCounters {
    /// Zero counters of sink `name`, reporting to `ops`.
    pub(super) fn new(name: &str, ops: &Ops) -> Self {
        Self {
            received: AtomicU64::new(0),
            coalesced: AtomicU64::new(0),
            delivered: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            retries: AtomicU64::new(0),
            faults: AtomicU64::new(0),
            batches: AtomicU64::new(0),
            metrics: ops.metrics.sink(name),
            health: ops.health.clone(),
        }
    }

    /// Entries taken but not yet delivered or failed (queued or in flight).
    pub(super) fn undelivered(&self) -> u64 {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        g(&self.received).saturating_sub(g(&self.delivered) + g(&self.failed))
    }

    pub(super) fn report(&self, name: &str) -> SinkReport {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        SinkReport {
            name: name.to_owned(),
            received: g(&self.received),
            coalesced: g(&self.coalesced),
            delivered: g(&self.delivered),
            failed: g(&self.failed),
            retries: g(&self.retries),
            faults: g(&self.faults),
            batches: g(&self.batches),
        }
    }
}
