//! A sink's store: its data (WASI, deny by default; the `sql` and `http`
//! capabilities; the CPU clock; the current call's deadline), the limiter
//! that caps its memories and charges its tables to the sink's host memory
//! budget, and how a store is built and armed for one call.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

use wasmtime::component::ResourceTable;
use wasmtime::{ResourceLimiter, Store, StoreLimits, StoreLimitsBuilder, UpdateDeadline};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use super::Blueprint;
use crate::budget::{HostBudget, Reservation};
use crate::cpu::CpuClock;
use crate::kafka::{KafkaCtx, KafkaCtxView, KafkaView};
use crate::log::{GuestLog, LogCounters};
use crate::sql::{SqlCaps, SqlCtx, SqlCtxView, SqlView};

/// The memory-cap error a grow past the cap traps with.
#[derive(Debug, thiserror::Error)]
#[error("memory cap of {cap} bytes exceeded: growing to {wanted} bytes")]
pub(super) struct MemoryCapExceeded {
    pub(super) cap: usize,
    pub(super) wanted: usize,
}

/// Host bytes one wasm table element takes (a pointer), as charged to the
/// sink's host memory budget.
pub(crate) const TABLE_ELEMENT_BYTES: usize = std::mem::size_of::<usize>();

/// Counts memory across all of an instance's linear memories against the
/// cap; charges table elements to the sink's host memory budget; table
/// sizes and instance counts also go through [`StoreLimits`].
pub(super) struct SinkLimiter {
    memory_cap: usize,
    memory_used: usize,
    pub(super) hit: bool,
    /// The store's tables, reserved from the sink's host memory budget
    /// (given back when the store is dropped).
    tables: Reservation,
    others: StoreLimits,
}

impl SinkLimiter {
    pub(super) fn new(memory_cap: usize, budget: &HostBudget) -> Self {
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

/// The data of a sink's store: WASI (deny by default), the `sql` and
/// `kafka` capabilities, limits and the current call's deadline.
///
/// The `http` capability (`crate::http`, wasmtime-wasi-http with an
/// allow-list) adds its context as a field here and implements its view
/// for this type; [`crate::Host`] adds it to the linker in `build_linker`.
pub(crate) struct StoreData {
    wasi: WasiCtx,
    table: ResourceTable,
    sql: SqlCtx,
    http: crate::http::HttpCtx,
    kafka: KafkaCtx,
    pub(super) limiter: SinkLimiter,
    pub(super) cpu: CpuClock,
    deadline: Option<Instant>,
    pub(super) timed_out: bool,
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

/// A new store for `bp`'s sink: its data, its limiter, and the epoch
/// callback that enforces the call's deadline and the sink's CPU quota
/// (its calls' CPU is metered by [`crate::cpu::Metered`]).
pub(super) fn new_store(
    bp: &Blueprint,
    log_counters: Arc<LogCounters>,
    cpu_nanos: Arc<AtomicU64>,
) -> Store<StoreData> {
    let log = GuestLog::with_output(bp.output.clone(), log_counters);
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
        kafka: KafkaCtx::new(
            bp.name.clone(),
            bp.limits.kafka.clone(),
            bp.producers.clone(),
            bp.budget.clone(),
        ),
        limiter: SinkLimiter::new(bp.limits.memory_bytes, &bp.budget),
        cpu: CpuClock::new(bp.cpu.clone(), cpu_nanos),
        deadline: None,
        timed_out: false,
    };
    let mut store = Store::new(&bp.engine, data);
    store.limiter(|d| &mut d.limiter);
    // Guest CPU: each call's polls are metered (crate::cpu::Metered); an
    // epoch tick charges a poll that runs on.
    store.epoch_deadline_callback(|mut ctx| {
        let data = ctx.data_mut();
        data.cpu.checkpoint();
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
    store
}

impl KafkaView for StoreData {
    fn kafka(&mut self) -> KafkaCtxView<'_> {
        KafkaCtxView {
            ctx: &mut self.kafka,
        }
    }
}

/// Arms the store for one call: its deadline (epochs and SQL) and the
/// CPU clock's per-call pause count.
pub(super) fn begin_call(store: &mut Store<StoreData>, timeout: Duration) {
    let data = store.data_mut();
    data.deadline = Some(Instant::now() + timeout);
    data.sql.set_deadline(data.deadline);
    data.kafka.set_deadline(data.deadline);
    data.timed_out = false;
    data.cpu.begin_call();
    store.set_epoch_deadline(1);
}

/// Disarms the deadline after a call.
pub(super) fn end_call(store: &mut Store<StoreData>) {
    store.data_mut().deadline = None;
    store.data_mut().sql.set_deadline(None);
    store.data_mut().kafka.set_deadline(None);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::budget::BudgetExceeded;

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
}
