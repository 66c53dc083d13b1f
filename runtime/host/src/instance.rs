//! One running sink: a wasmtime store with its limits, the guest's exports,
//! and the rebuild-after-fault logic.
//!
//! Every call into the guest (`init`, `write`) runs under two deadlines:
//! an epoch deadline, checked by wasm code every tick of the host's epoch
//! ticker (this stops a guest that spins), and a `tokio::time::timeout`
//! around the whole call (this stops a call stuck in a host function, e.g.
//! SQL waiting on a slow database, which epochs do not interrupt). Memory is
//! capped by a [`wasmtime::ResourceLimiter`] that turns a refused growth
//! into a trap naming the cap. Wasm tables are charged to the sink's host
//! memory budget ([`crate::budget`]) and resource handles are capped
//! ([`Limits::max_resources`]). Guest CPU is metered and held to the sink's
//! quota ([`crate::cpu`]) by the store's call hook and epoch callback. After
//! a trap or timeout the store is discarded; the next call builds a fresh
//! one from the pre-instantiated component and runs `init` again.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use wasmtime::component::{ResourceTable, ResourceTableError};
use wasmtime::{
    CallHook, ResourceLimiter, Store, StoreLimits, StoreLimitsBuilder, Trap, UpdateDeadline,
};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use crate::bindings::{SinkWorld, SinkWorldPre};
use crate::budget::{BudgetExceeded, HostBudget, Reservation};
use crate::cpu::{CpuClock, CpuQuota};
use crate::log::{GuestLog, LogCounters};
use crate::sql::{SqlCaps, SqlCtx, SqlCtxView, SqlPools, SqlView};
use crate::{Entry, Limits, SinkError};
pub use kubesink_normalize::record::RecordKind;

/// Extra time the async timeout allows past the epoch deadline, so a guest
/// that spins is stopped by the epoch (a clean trap) and a call stuck in a
/// host function by the timeout.
const TIMEOUT_GRACE: Duration = Duration::from_millis(100);

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

/// Why a call into a sink failed. Messages start with the sink's name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WriteError {
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

impl WriteError {
    /// True for errors after which the same batch may succeed: retryable
    /// guest errors and timeouts (a slow database, a slow network).
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            WriteError::Retryable(_)
                | WriteError::Fault {
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

/// The memory-cap error a grow past the cap traps with.
#[derive(Debug, thiserror::Error)]
#[error("memory cap of {cap} bytes exceeded: growing to {wanted} bytes")]
struct MemoryCapExceeded {
    cap: usize,
    wanted: usize,
}

/// Host bytes one wasm table element takes (a pointer), as charged to the
/// sink's host memory budget.
pub const TABLE_ELEMENT_BYTES: usize = std::mem::size_of::<usize>();

/// Counts memory across all of an instance's linear memories against the
/// cap; charges table elements to the sink's host memory budget; table
/// sizes and instance counts also go through [`StoreLimits`].
struct SinkLimiter {
    memory_cap: usize,
    memory_used: usize,
    hit: bool,
    /// The store's tables, reserved from the sink's host memory budget
    /// (given back when the store is dropped).
    tables: Reservation,
    others: StoreLimits,
}

impl SinkLimiter {
    fn new(memory_cap: usize, budget: &HostBudget) -> Self {
        Self {
            memory_cap,
            memory_used: 0,
            hit: false,
            tables: budget
                .try_reserve_for("wasm tables", 0)
                .expect("an empty reservation always fits"),
            others: StoreLimitsBuilder::new()
                .table_elements(1 << 20)
                .instances(100)
                .tables(100)
                .memories(16)
                .trap_on_grow_failure(true)
                .build(),
        }
    }
}

impl ResourceLimiter for SinkLimiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let wanted = self
            .memory_used
            .saturating_add(desired.saturating_sub(current));
        if wanted > self.memory_cap {
            self.hit = true;
            return Err(wasmtime::Error::new(MemoryCapExceeded {
                cap: self.memory_cap,
                wanted,
            }));
        }
        self.memory_used = wanted;
        Ok(true)
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let result = self.others.table_growing(current, desired, maximum);
        if result.is_err() {
            self.hit = true;
            return result;
        }
        let more = desired
            .saturating_sub(current)
            .saturating_mul(TABLE_ELEMENT_BYTES);
        if let Err(e) = self.tables.grow(more) {
            self.hit = true;
            return Err(wasmtime::Error::new(e));
        }
        result
    }

    fn instances(&self) -> usize {
        self.others.instances()
    }

    fn tables(&self) -> usize {
        self.others.tables()
    }

    fn memories(&self) -> usize {
        self.others.memories()
    }
}

/// The data of a sink's store: WASI (deny by default), the `sql`
/// capability, limits and the current call's deadline.
///
/// The `http` capability (`crate::http`, wasmtime-wasi-http with an
/// allow-list) adds its context as a field here and implements its view
/// for this type; [`crate::Host`] adds it to the linker in `build_linker`.
pub struct StoreData {
    wasi: WasiCtx,
    table: ResourceTable,
    sql: SqlCtx,
    http: crate::http::HttpCtx,
    limiter: SinkLimiter,
    cpu: CpuClock,
    deadline: Option<Instant>,
    timed_out: bool,
}

impl WasiView for StoreData {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl wasmtime_wasi_http::WasiHttpView for StoreData {
    fn http(&mut self) -> wasmtime_wasi_http::WasiHttpCtxView<'_> {
        self.http.view(&mut self.table)
    }
}

impl SqlView for StoreData {
    fn sql(&mut self) -> SqlCtxView<'_> {
        SqlCtxView {
            ctx: &mut self.sql,
            table: &mut self.table,
        }
    }
}

/// The WASI context of a sink: nothing inherited. No environment, no
/// arguments, no preopened directories, stdin closed; no TCP, UDP or name
/// lookup, and every socket address refused; stdout/stderr to the log;
/// clocks and random from the host.
fn sandbox_wasi(log: &GuestLog) -> WasiCtx {
    WasiCtx::builder()
        .stdout(log.stdout())
        .stderr(log.stderr())
        .allow_tcp(false)
        .allow_udp(false)
        .allow_ip_name_lookup(false)
        .socket_addr_check(|_, _| Box::pin(async { false }))
        .build()
}

/// What a [`SinkInstance`] needs to build stores; shared by its rebuilds.
pub(crate) struct Blueprint {
    pub(crate) name: String,
    pub(crate) origin: String,
    pub(crate) settings: Vec<(String, String)>,
    pub(crate) grants: Vec<String>,
    pub(crate) limits: Limits,
    pub(crate) pre: SinkWorldPre<StoreData>,
    pub(crate) pools: SqlPools,
    pub(crate) engine: wasmtime::Engine,
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
    store: Store<StoreData>,
    bindings: SinkWorld,
}

/// A loaded sink: call [`SinkInstance::write`] with batches.
pub struct SinkInstance {
    blueprint: Arc<Blueprint>,
    live: Option<Live>,
    log_counters: Arc<LogCounters>,
    stats: SinkStats,
    guest_nanos: Arc<AtomicU64>,
    guest_cpu_nanos: Arc<AtomicU64>,
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
        }
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

    /// Discards the store and builds a new one now (instantiate + `init`).
    /// The pipeline calls this after a [`WriteError::Fatal`].
    pub async fn rebuild(&mut self) -> Result<(), WriteError> {
        self.live = None;
        self.ensure_live().await
    }

    async fn ensure_live(&mut self) -> Result<(), WriteError> {
        if self.live.is_some() {
            return Ok(());
        }
        let bp = self.blueprint.clone();
        let log = GuestLog::with_output(bp.output.clone(), self.log_counters.clone());
        let mut table = ResourceTable::new();
        table.set_max_capacity(bp.limits.max_resources);
        let data = StoreData {
            wasi: sandbox_wasi(&log),
            table,
            sql: SqlCtx::new(
                bp.name.clone(),
                bp.grants.clone(),
                bp.pools.clone(),
                SqlCaps {
                    max_statement_bytes: bp.limits.max_statement_bytes,
                    max_result_bytes: bp.limits.max_result_bytes,
                    statement_time: bp.limits.call_timeout,
                },
                bp.budget.clone(),
            ),
            http: crate::http::HttpCtx::new(&bp.name, &bp.limits, bp.budget.clone())
                .with_slots(bp.http_slots.clone()),
            limiter: SinkLimiter::new(bp.limits.memory_bytes, &bp.budget),
            cpu: CpuClock::new(bp.cpu.clone(), self.guest_cpu_nanos.clone()),
            deadline: None,
            timed_out: false,
        };
        let mut store = Store::new(&bp.engine, data);
        store.limiter(|d| &mut d.limiter);
        // Guest CPU: the thread clock runs while wasm code runs (crate::cpu).
        store.call_hook(|mut ctx, hook| {
            let cpu = &mut ctx.data_mut().cpu;
            match hook {
                CallHook::CallingWasm | CallHook::ReturningFromHost => cpu.enter(),
                CallHook::ReturningFromWasm | CallHook::CallingHost => cpu.leave(),
            }
            Ok(())
        });
        store.epoch_deadline_callback(|mut ctx| {
            let data = ctx.data_mut();
            let now = Instant::now();
            match data.deadline {
                Some(deadline) if now >= deadline => {
                    data.timed_out = true;
                    Ok(UpdateDeadline::Interrupt)
                }
                deadline => match data.cpu.quota().pause_needed() {
                    // Over its CPU quota: pause (the thread runs other
                    // sinks meanwhile), at most until the call's deadline.
                    Some(wait) => {
                        let wait = deadline.map_or(wait, |d| wait.min(d - now));
                        Ok(UpdateDeadline::YieldCustom(
                            1,
                            Box::pin(data.cpu.pause(wait)),
                        ))
                    }
                    // Yield to the executor every tick so that a busy guest
                    // does not hold a runtime thread for its whole deadline.
                    None => Ok(UpdateDeadline::Yield(1)),
                },
            }
        });
        self.stats.builds += 1;
        let _turn = bp.cpu.turn().await; // instantiate and init run wasm too
        let timeout = bp.limits.call_timeout;
        begin_call(&mut store, timeout);
        let started = Instant::now();
        let instantiate = tokio::time::timeout(
            timeout + TIMEOUT_GRACE,
            bp.pre.instantiate_async(&mut store),
        )
        .await;
        let bindings = match instantiate {
            Ok(Ok(b)) => b,
            Ok(Err(err)) => {
                self.stats.faults += 1;
                return Err(fault(&bp, "instantiate", store.data(), &err));
            }
            Err(_) => {
                self.stats.faults += 1;
                return Err(timeout_fault(&bp, "instantiate"));
            }
        };
        let init = tokio::time::timeout(
            timeout + TIMEOUT_GRACE,
            bindings
                .kubesink_sink_sink()
                .call_init(&mut store, &bp.settings),
        )
        .await;
        self.account(started);
        match init {
            Ok(Ok(Ok(()))) => {
                end_call(&mut store);
                self.live = Some(Live { store, bindings });
                Ok(())
            }
            Ok(Ok(Err(e))) => Err(guest_error(&bp, "init", e)),
            Ok(Err(err)) => {
                self.stats.faults += 1;
                Err(fault(&bp, "init", store.data(), &err))
            }
            Err(_) => {
                self.stats.faults += 1;
                Err(timeout_fault(&bp, "init"))
            }
        }
    }

    fn account(&mut self, started: Instant) {
        let elapsed = started.elapsed();
        self.stats.last_call = elapsed;
        self.guest_nanos.fetch_add(
            u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
    }

    /// Delivers one batch. Rebuilds the store first when the last call
    /// faulted (or after [`invalidate`](Self::invalidate)); a failed rebuild
    /// is reported like a failed write.
    pub async fn write(&mut self, batch: &[Entry]) -> Result<(), WriteError> {
        guest_call!(self, "write", |sink, store| sink.call_write(store, batch))
    }

    /// The uids of `kind` the sink holds as still in the cluster (WIT
    /// `sink.held`), under the same limits and rebuild rules as
    /// [`write`](Self::write).
    pub async fn held(&mut self, kind: RecordKind) -> Result<Vec<String>, WriteError> {
        guest_call!(self, "held", |sink, store| sink.call_held(store, kind))
    }
}

/// One call into the guest: rebuild when needed, deadline (epochs plus a
/// wall-clock timeout for host calls), accounting, and a discarded store
/// after a fault.
macro_rules! guest_call {
    ($self:ident, $name:literal, |$sink:ident, $store:ident| $call:expr) => {{
        $self.ensure_live().await?;
        let bp = $self.blueprint.clone();
        // Under a CPU quota: wait for one of the sink's turns, and while
        // over the quota (crate::cpu). Not counted against the deadline.
        let _turn = bp.cpu.turn().await;
        let Some(live) = $self.live.as_mut() else {
            return Err(WriteError::Fault {
                cause: FaultCause::Trap,
                detail: format!("sink '{}': no instance after rebuild", bp.name),
            });
        };
        let timeout = bp.limits.call_timeout;
        begin_call(&mut live.store, timeout);
        let started = Instant::now();
        let result = {
            let $sink = live.bindings.kubesink_sink_sink();
            let $store = &mut live.store;
            tokio::time::timeout(timeout + TIMEOUT_GRACE, $call).await
        };
        $self.stats.writes += 1;
        let outcome = match result {
            Ok(Ok(Ok(v))) => Ok(v),
            Ok(Ok(Err(e))) => Err(guest_error(&bp, $name, e)),
            Ok(Err(err)) => Err(fault(&bp, $name, live.store.data(), &err)),
            Err(_) => Err(timeout_fault(&bp, $name)),
        };
        if let Some(live) = $self.live.as_mut() {
            end_call(&mut live.store);
        }
        $self.account(started);
        if let Err(WriteError::Fault { cause, detail }) = &outcome {
            $self.stats.faults += 1;
            $self.live = None;
            tracing::warn!(target: "kubesink::host", sink = %bp.name, %cause, "{detail}; the instance will be rebuilt");
        }
        outcome
    }};
}
use guest_call;

fn begin_call(store: &mut Store<StoreData>, timeout: Duration) {
    let data = store.data_mut();
    data.deadline = Some(Instant::now() + timeout);
    data.sql.set_deadline(data.deadline);
    data.timed_out = false;
    data.cpu.begin_call();
    store.set_epoch_deadline(1);
}

fn end_call(store: &mut Store<StoreData>) {
    store.data_mut().deadline = None;
    store.data_mut().sql.set_deadline(None);
}

/// The guest's error, its text escaped, cut and charged to the sink's
/// output budget ([`crate::log::SinkOutput::admit`]) before it can reach a
/// log line.
fn guest_error(bp: &Blueprint, call: &str, e: SinkError) -> WriteError {
    let e = match e {
        SinkError::Retryable(m) => SinkError::Retryable(bp.output.admit(&m)),
        SinkError::Fatal(m) => SinkError::Fatal(bp.output.admit(&m)),
    };
    match e {
        SinkError::Retryable(m) => WriteError::Retryable(format!(
            "sink '{}': {call} failed (retryable): {m}",
            bp.name
        )),
        SinkError::Fatal(m) => {
            WriteError::Fatal(format!("sink '{}': {call} failed (fatal): {m}", bp.name))
        }
    }
}

fn timeout_fault(bp: &Blueprint, call: &str) -> WriteError {
    WriteError::Fault {
        cause: FaultCause::Timeout,
        detail: format!(
            "sink '{}': {call} exceeded its deadline of {:?}",
            bp.name, bp.limits.call_timeout
        ),
    }
}

/// Classifies an error returned by a guest call.
fn fault(bp: &Blueprint, call: &str, data: &StoreData, err: &wasmtime::Error) -> WriteError {
    // The chain without the wasm backtrace (logged at debug level instead).
    let text = err
        .chain()
        .map(|e| e.to_string())
        .filter(|m| !m.starts_with("error while executing at wasm backtrace"))
        .collect::<Vec<_>>()
        .join(": ");
    tracing::debug!(target: "kubesink::host", sink = %bp.name, call, "guest call failed: {err:?}");
    let trap = err.downcast_ref::<Trap>().copied();
    let (cause, detail) = if data.timed_out || trap == Some(Trap::Interrupt) {
        let paused = data.cpu.call_paused();
        let quota = match (bp.limits.cpu, paused.is_zero()) {
            (Some(cores), false) => format!(
                " (its CPU quota, limits.cpu = {cores} cores, paused it for {paused:.1?} of that)"
            ),
            _ => String::new(),
        };
        (
            FaultCause::Timeout,
            format!(
                "sink '{}': {call} exceeded its deadline of {:?} and was interrupted{quota}",
                bp.name, bp.limits.call_timeout
            ),
        )
    } else if let Some(e) = err.downcast_ref::<BudgetExceeded>() {
        (
            FaultCause::Memory,
            format!("sink '{}': {call} failed: {e}", bp.name),
        )
    } else if let Some(ResourceTableError::Full) = err.downcast_ref::<ResourceTableError>() {
        (
            FaultCause::Memory,
            format!(
                "sink '{}': {call} holds too many resource handles: the cap of {} was reached (limits.max_resources)",
                bp.name, bp.limits.max_resources
            ),
        )
    } else if data.limiter.hit || err.downcast_ref::<MemoryCapExceeded>().is_some() {
        (
            FaultCause::Memory,
            format!(
                "sink '{}': {call} hit the memory cap of {} bytes: {text}",
                bp.name, bp.limits.memory_bytes
            ),
        )
    } else {
        (
            FaultCause::Trap,
            format!("sink '{}': {call} trapped: {text}", bp.name),
        )
    };
    WriteError::Fault { cause, detail }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limiter_counts_all_memories_against_the_cap() {
        let mut l = SinkLimiter::new(100, &HostBudget::unlimited("s"));
        assert!(l.memory_growing(0, 60, None).expect("fits"));
        assert!(l.memory_growing(0, 30, None).expect("fits"));
        let err = l.memory_growing(60, 80, None).expect_err("over the cap");
        assert!(l.hit);
        let cap = err
            .downcast_ref::<MemoryCapExceeded>()
            .expect("typed error");
        assert_eq!((cap.cap, cap.wanted), (100, 110));
        // A growth within the cap still works after a refusal.
        assert!(l.memory_growing(30, 40, None).expect("fits"));
    }

    #[test]
    fn table_growth_is_charged_to_the_host_memory_budget() {
        let budget = HostBudget::new("tbl", 1000 * TABLE_ELEMENT_BYTES);
        let mut l = SinkLimiter::new(100, &budget);
        assert!(l.table_growing(0, 600, None).expect("fits"));
        assert_eq!(budget.used(), 600 * TABLE_ELEMENT_BYTES);
        let err = l.table_growing(600, 1200, None).expect_err("over");
        assert!(l.hit);
        let e = err.downcast_ref::<BudgetExceeded>().expect("typed error");
        assert_eq!(e.sink, "tbl");
        assert_eq!(e.what, "wasm tables");
        assert!(err.to_string().contains("limits.host_memory"), "{err}");
        // Another store of the same sink shares the budget.
        let mut other = SinkLimiter::new(100, &budget);
        assert!(other.table_growing(0, 400, None).expect("fits exactly"));
        assert!(other.table_growing(400, 401, None).is_err());
        drop(l);
        drop(other);
        assert_eq!(budget.used(), 0, "dropping the stores gives it back");
    }

    #[test]
    fn retryable_classification() {
        assert!(WriteError::Retryable("x".into()).is_retryable());
        assert!(
            WriteError::Fault {
                cause: FaultCause::Timeout,
                detail: String::new()
            }
            .is_retryable()
        );
        assert!(!WriteError::Fatal("x".into()).is_retryable());
        assert!(
            !WriteError::Fault {
                cause: FaultCause::Memory,
                detail: String::new()
            }
            .is_retryable()
        );
    }
}
