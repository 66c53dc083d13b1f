//! One running sink: a wasmtime store with its limits, the guest's exports,
//! and the rebuild-after-fault logic. [`store`] holds the store's data, its
//! limiter and WASI view; [`calls`] the calls into the guest (`init`,
//! `write`, `held`) and how their failures are classified.
//!
//! Every call into the guest (`init`, `write`, `held`) runs under two deadlines:
//! an epoch deadline, checked by wasm code every tick of the host's epoch
//! ticker, which runs while any call is in flight ([`crate::epoch`]; this
//! stops a guest that spins), and a `tokio::time::timeout`
//! around the whole call (this stops a call stuck in a host function, e.g.
//! SQL waiting on a slow database, which epochs do not interrupt). Memory is
//! capped by a [`wasmtime::ResourceLimiter`] that turns a refused growth
//! into a trap naming the cap. Wasm tables are charged to the sink's host
//! memory budget ([`crate::budget`]) and resource handles are capped
//! ([`Limits::max_resources`]). Guest CPU is metered and held to the sink's
//! quota ([`crate::cpu`]) by metering each call's polls and the epoch callback. After
//! a trap or timeout the store is discarded; the next call builds a fresh
//! one from the pre-instantiated component and runs `init` again.

mod calls;
mod store;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::Limits;
use crate::bindings::{SinkWorld, SinkWorldPre};
use crate::budget::HostBudget;
use crate::cpu::CpuQuota;
use crate::log::LogCounters;
use crate::sql::SqlPools;
pub(crate) use kubesink_normalize::record::{RecordKind, Shape, Wants};
pub(crate) use store::StoreData;

/// Extra time the async timeout allows past the epoch deadline, so a guest
/// that spins is stopped by the epoch (a clean trap) and a call stuck in a
/// host function by the timeout.
pub(crate) const TIMEOUT_GRACE: Duration = Duration::from_millis(100);

/// What stopped a guest call that did not return normally.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultCause {
    /// The call ran past its wall-time deadline.
    Timeout,
    /// The guest tried to grow its memory past the cap, its tables past the
    /// sink's host memory budget, or to hold more resource handles than
    /// [`Limits::max_resources`].
    Memory,
    /// Any other trap: a guest panic, `unreachable`, an out-of-bounds access,
    /// a stack overflow, or a host function that failed.
    Trap,
}

impl std::fmt::Display for FaultCause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            FaultCause::Timeout => "timeout",
            FaultCause::Memory => "memory",
            FaultCause::Trap => "trap",
        })
    }
}

/// Why a call into a sink (`init`, `write`, `held`) failed. Messages start
/// with the sink's name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    /// The guest returned `error.retryable`: retry the same batch later.
    #[error("{0}")]
    Retryable(String),
    /// The guest returned `error.fatal`: record the batch as failed and
    /// rebuild the instance ([`SinkInstance::rebuild`]).
    #[error("{0}")]
    Fatal(String),
    /// The guest was stopped (or could not be rebuilt because of a fault).
    /// The instance has already been discarded; the next call rebuilds it.
    #[error("{detail}")]
    Fault {
        /// What stopped it.
        cause: FaultCause,
        /// A description naming the sink.
        detail: String,
    },
}

impl CallError {
    /// True for errors after which the same batch may succeed: retryable
    /// guest errors and timeouts (a slow database, a slow network).
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            CallError::Retryable(_)
                | CallError::Fault {
                    cause: FaultCause::Timeout,
                    ..
                }
        )
    }
}

/// Counters of one sink instance, across rebuilds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SinkStats {
    /// Calls to `write` that reached the guest.
    pub writes: u64,
    /// Faults (timeouts, memory, traps), in `init` or `write`.
    pub faults: u64,
    /// Stores built (the first one included).
    pub builds: u64,
    /// Wall time spent in guest calls (`init` and `write`).
    pub guest_time: Duration,
    /// CPU time the guest's wasm code ran (host calls and pauses excluded;
    /// see [`crate::cpu`]).
    pub guest_cpu: Duration,
    /// Duration of the last call.
    pub last_call: Duration,
    /// Bytes of stdout/stderr logged.
    pub log_bytes: u64,
    /// Bytes of stdout/stderr dropped by the log rate limit.
    pub log_dropped_bytes: u64,
}

/// What a [`SinkInstance`] needs to build stores; shared by its rebuilds.
pub(crate) struct Blueprint {
    pub(crate) name: String,
    pub(crate) origin: String,
    pub(crate) settings: Vec<(String, String)>,
    pub(crate) grants: Vec<String>,
    pub(crate) limits: Limits,
    pub(crate) pre: SinkWorldPre<StoreData>,
    /// `write-packed-v2` or `write-packed` (WIT `kubesink:sink/packed`),
    /// when the component exports it: batches then go to it, packed in its
    /// layout ([`crate::packed`]).
    pub(crate) packed: Option<crate::bindings::PackedExport>,
    pub(crate) pools: SqlPools,
    pub(crate) producers: crate::kafka::KafkaProducers,
    pub(crate) engine: wasmtime::Engine,
    /// The epoch ticker's gate: held for each call ([`crate::epoch`]).
    pub(crate) epoch: crate::epoch::EpochGate,
    /// The sink's host memory budget, shared by all its instances.
    pub(crate) budget: HostBudget,
    /// The sink's CPU meter and quota, shared by all its instances.
    pub(crate) cpu: CpuQuota,
    /// The sink's output budget (log lines, error text), shared by all its
    /// instances.
    pub(crate) output: Arc<crate::log::SinkOutput>,
    /// The sink's HTTP requests in flight, shared by all its instances.
    pub(crate) http_slots: crate::http::SinkSlots,
}

struct Live {
    store: wasmtime::Store<StoreData>,
    bindings: SinkWorld,
    /// The instance's `write-packed-v2` or `write-packed`, its type
    /// checked.
    packed: Option<wasmtime::component::Func>,
}

/// A loaded sink: call [`SinkInstance::write`] with batches.
pub struct SinkInstance {
    blueprint: Arc<Blueprint>,
    live: Option<Live>,
    log_counters: Arc<LogCounters>,
    stats: SinkStats,
    guest_nanos: Arc<AtomicU64>,
    guest_cpu_nanos: Arc<AtomicU64>,
    /// What the sink's last successful `init` returned.
    wants: Wants,
    /// Bounds on one (paged) `held` answer.
    held_cap: HeldCap,
    /// The buffer packed batches are encoded into.
    packer: crate::packed::Packer,
}

impl std::fmt::Debug for SinkInstance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SinkInstance")
            .field("name", &self.blueprint.name)
            .field("origin", &self.blueprint.origin)
            .field("live", &self.live.is_some())
            .field("stats", &self.stats())
            .finish()
    }
}

impl SinkInstance {
    pub(crate) fn new(blueprint: Blueprint) -> Self {
        Self {
            blueprint: Arc::new(blueprint),
            live: None,
            log_counters: Arc::new(LogCounters::default()),
            stats: SinkStats::default(),
            guest_nanos: Arc::new(AtomicU64::new(0)),
            guest_cpu_nanos: Arc::new(AtomicU64::new(0)),
            wants: Wants {
                kinds: Vec::new(),
                shape: Shape::State,
                fields: Vec::new(),
            },
            held_cap: HeldCap::default(),
            packer: crate::packed::Packer::default(),
        }
    }

    /// What the sink wants (WIT `wants`, returned by its `init`): the
    /// record kinds it takes, whether it keeps state or a log, and the
    /// optional fields it reads. The host keeps it here; the pipeline
    /// does not act on it yet (the sink's configuration decides).
    pub fn wants(&self) -> &Wants {
        &self.wants
    }

    /// Bounds on one `held` answer (all its pages); default [`HeldCap`].
    pub fn set_held_cap(&mut self, cap: HeldCap) {
        self.held_cap = cap;
    }

    /// The sink's host memory budget (shared by all its instances).
    pub fn budget(&self) -> &HostBudget {
        &self.blueprint.budget
    }

    /// The sink's CPU meter and quota (shared by all its instances).
    pub fn cpu(&self) -> &CpuQuota {
        &self.blueprint.cpu
    }

    /// The sink's name.
    pub fn name(&self) -> &str {
        &self.blueprint.name
    }

    /// Where its component came from (file path or origin).
    pub fn origin(&self) -> &str {
        &self.blueprint.origin
    }

    /// Whether its component exports `write-packed` (WIT
    /// `kubesink:sink/packed`), so batches reach it as one buffer; `false`:
    /// through `write`.
    pub fn takes_packed_batches(&self) -> bool {
        self.blueprint.packed.is_some()
    }

    /// The packed layout its batches are sent in: 2 when its component
    /// exports `write-packed-v2` (since 0.2.3), 1 for `write-packed` alone;
    /// `None` when they go through `write`.
    pub fn packed_layout(&self) -> Option<crate::packed::Layout> {
        self.blueprint.packed.map(|p| p.layout)
    }

    /// True when a store is ready (no rebuild needed before the next call).
    pub fn is_live(&self) -> bool {
        self.live.is_some()
    }

    /// Counters so far.
    pub fn stats(&self) -> SinkStats {
        SinkStats {
            log_bytes: self.log_counters.logged.load(Ordering::Relaxed),
            log_dropped_bytes: self.log_counters.dropped.load(Ordering::Relaxed),
            guest_time: Duration::from_nanos(self.guest_nanos.load(Ordering::Relaxed)),
            guest_cpu: Duration::from_nanos(self.guest_cpu_nanos.load(Ordering::Relaxed)),
            ..self.stats.clone()
        }
    }

    /// Discards the store; the next [`write`](Self::write) rebuilds it.
    pub fn invalidate(&mut self) {
        self.live = None;
    }
}

/// Bounds on one answer of [`SinkInstance::held`], all its pages
/// together: the same defaults as the pipeline's reconciliation
/// (`HeldLimits`), so a sink that pages without end or answers more than
/// kubesink keeps for a reconciliation is stopped inside the instance,
/// before its answer grows further.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeldCap {
    /// Wall time for all the pages (each call also has its own
    /// `call_timeout`).
    pub deadline: Duration,
    /// The most uids of one answer.
    pub max_uids: usize,
    /// The most bytes (the uids' lengths together) of one answer.
    pub max_bytes: usize,
    /// The `limit` passed to the guest: the most uids of one page.
    pub page_uids: u32,
}

impl Default for HeldCap {
    fn default() -> Self {
        Self {
            deadline: Duration::from_secs(30),
            max_uids: 2_000_000,
            max_bytes: 128 << 20,
            page_uids: 10_000,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retryable_classification() {
        assert!(CallError::Retryable("x".into()).is_retryable());
        assert!(
            CallError::Fault {
                cause: FaultCause::Timeout,
                detail: String::new()
            }
            .is_retryable()
        );
        assert!(!CallError::Fatal("x".into()).is_retryable());
        assert!(
            !CallError::Fault {
                cause: FaultCause::Memory,
                detail: String::new()
            }
            .is_retryable()
        );
    }
}
