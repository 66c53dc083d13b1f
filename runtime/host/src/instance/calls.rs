//! The calls into a sink's guest: `init` (with instantiation, on every
//! (re)build), `write` and the pages of `held`, each under the call's
//! deadline, with accounting, and with the store discarded after a fault;
//! and how a failed call is classified ([`CallError`]).

use std::time::Instant;

use wasmtime::Trap;
use wasmtime::component::ResourceTableError;

use super::store::{MemoryCapExceeded, StoreData, begin_call, end_call, new_store};
use super::{Blueprint, CallError, FaultCause, Live, RecordKind, SinkInstance, TIMEOUT_GRACE};
use crate::bindings::SinkWorld;
use crate::budget::BudgetExceeded;
use crate::cpu::Metered;
use kubesink_normalize::record::{Entry, SinkError};

/// One call into the guest: rebuild when needed, deadline (epochs plus a
/// wall-clock timeout for host calls), accounting, and a discarded store
/// after a fault.
macro_rules! guest_call {
    ($self:ident, $name:literal, |$sink:ident, $store:ident $(, $packed:ident)?| $call:expr) => {{
        $self.ensure_live().await?;
        let bp = $self.blueprint.clone();
        // Under a CPU quota: wait for one of the sink's turns, and while
        // over the quota (crate::cpu). Not counted against the deadline.
        let _turn = bp.cpu.turn().await;
        let Some(live) = $self.live.as_mut() else {
            return Err(CallError::Fault {
                cause: FaultCause::Trap,
                detail: format!("sink '{}': no instance after rebuild", bp.name),
            });
        };
        let timeout = bp.limits.call_timeout;
        let _ticking = bp.epoch.ticking();
        begin_call(&mut live.store, timeout);
        let started = Instant::now();
        let meter = live.store.data().cpu.meter();
        let result = {
            let $sink = live.bindings.kubesink_sink_sink();
            $(let $packed = live.packed;)?
            let $store = &mut live.store;
            tokio::time::timeout(timeout + TIMEOUT_GRACE, Metered::new(meter, $call)).await
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
        if let Err(CallError::Fault { cause, detail }) = &outcome {
            $self.stats.faults += 1;
            $self.live = None;
            tracing::warn!(target: "kubesink::host", sink = %bp.name, %cause, "{detail}; the instance will be rebuilt");
        }
        outcome
    }};
}

impl SinkInstance {
    /// Discards the store and builds a new one now (instantiate + `init`).
    /// The pipeline calls this after a [`CallError::Fatal`].
    pub async fn rebuild(&mut self) -> Result<(), CallError> {
        self.live = None;
        self.ensure_live().await
    }

    async fn ensure_live(&mut self) -> Result<(), CallError> {
        if self.live.is_some() {
            return Ok(());
        }
        let bp = self.blueprint.clone();
        let mut store = new_store(&bp, self.log_counters.clone(), self.guest_cpu_nanos.clone());
        self.stats.builds += 1;
        let _turn = bp.cpu.turn().await; // instantiate and init run wasm too
        let timeout = bp.limits.call_timeout;
        let _ticking = bp.epoch.ticking();
        begin_call(&mut store, timeout);
        let started = Instant::now();
        let meter = store.data().cpu.meter();
        let instantiate = tokio::time::timeout(
            timeout + TIMEOUT_GRACE,
            Metered::new(
                meter.clone(),
                bp.pre.instance_pre().instantiate_async(&mut store),
            ),
        )
        .await;
        let linked = match instantiate {
            Ok(Ok(instance)) => link(&bp, &mut store, &instance),
            Ok(Err(err)) => Err(err),
            Err(_) => {
                end_call(&mut store);
                self.stats.faults += 1;
                return Err(timeout_fault(&bp, "instantiate"));
            }
        };
        let (bindings, packed) = match linked {
            Ok(b) => b,
            Err(err) => {
                end_call(&mut store);
                self.stats.faults += 1;
                return Err(fault(&bp, "instantiate", store.data(), &err));
            }
        };
        let init = tokio::time::timeout(
            timeout + TIMEOUT_GRACE,
            Metered::new(
                meter,
                bindings
                    .kubesink_sink_sink()
                    .call_init(&mut store, &bp.settings),
            ),
        )
        .await;
        // Disarms the deadline (the CPU of instantiate and init was charged
        // by their `Metered` polls, whatever came of them).
        end_call(&mut store);
        self.account(started);
        match init {
            Ok(Ok(Ok(wants))) => {
                self.wants = wants;
                self.live = Some(Live {
                    store,
                    bindings,
                    packed,
                });
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
            std::sync::atomic::Ordering::Relaxed,
        );
    }

    /// Delivers one batch. Rebuilds the store first when the last call
    /// faulted (or after [`invalidate`](Self::invalidate)); a failed rebuild
    /// is reported like a failed write.
    ///
    /// A sink that exports `write-packed-v2` or `write-packed` (WIT
    /// `kubesink:sink/packed`) gets the batch through it, as one buffer in
    /// that function's layout; others through `write`.
    pub async fn write(&mut self, batch: &[Entry]) -> Result<(), CallError> {
        let Some(export) = self.blueprint.packed else {
            return guest_call!(self, "write", |sink, store| sink.call_write(store, batch));
        };
        let bytes = self
            .packer
            .pack_in(export.layout, batch)
            .map_err(|e| CallError::Fatal(format!("sink '{}': {e}", self.blueprint.name)))?;
        let outcome = guest_call!(self, "write", |sink, store, packed| async {
            match packed {
                Some(func) => {
                    let func = crate::packed::write_packed(func, &*store)?;
                    func.call_async(&mut *store, (&bytes,)).await.map(|(r,)| r)
                }
                None => sink.call_write(store, batch).await,
            }
        });
        self.packer.recycle(bytes);
        outcome
    }

    /// The uids of `kind` the sink holds as still in the cluster (WIT
    /// `sink.held`), all pages joined: the host asks page after page, each
    /// of at most [`HeldCap::page_uids`](super::HeldCap::page_uids), each
    /// call under the same limits and rebuild rules as
    /// [`write`](Self::write), and all of them within the instance's
    /// [`HeldCap`](super::HeldCap) (deadline, uids, bytes). Over a bound,
    /// or with a page over its limit or a cursor that does not move, it is
    /// a fatal error naming the sink (the instance is kept).
    pub async fn held(&mut self, kind: RecordKind) -> Result<Vec<String>, CallError> {
        let cap = self.held_cap;
        let started = Instant::now();
        let name = self.blueprint.name.clone();
        let mut answer = HeldAnswer::new(&name, kind, cap);
        let mut cursor: Option<String> = None;
        loop {
            let page = {
                let cursor = cursor.as_deref();
                let limit = cap.page_uids;
                guest_call!(self, "held", |sink, store| sink
                    .call_held(store, kind, cursor, limit))?
            };
            match answer.add(page, cursor.as_deref())? {
                None => return Ok(answer.uids),
                Some(next) => cursor = Some(next),
            }
            if started.elapsed() > cap.deadline {
                return Err(CallError::Fatal(format!(
                    "sink '{name}': held({kind:?}) did not give its last page within {:?} ({} uids so far)",
                    cap.deadline,
                    answer.uids.len()
                )));
            }
        }
    }
}

/// The pages of one `held` answer, checked as they come.
struct HeldAnswer<'a> {
    sink: &'a str,
    kind: RecordKind,
    cap: super::HeldCap,
    uids: Vec<String>,
    bytes: usize,
}

impl<'a> HeldAnswer<'a> {
    fn new(sink: &'a str, kind: RecordKind, cap: super::HeldCap) -> Self {
        Self {
            sink,
            kind,
            cap,
            uids: Vec::new(),
            bytes: 0,
        }
    }

    /// Adds a page asked for with `cursor`; returns the next cursor, or
    /// `None` after the last page.
    fn add(
        &mut self,
        page: kubesink_normalize::record::HeldPage,
        cursor: Option<&str>,
    ) -> Result<Option<String>, CallError> {
        let (sink, kind) = (self.sink, self.kind);
        if page.uids.len() > self.cap.page_uids as usize {
            return Err(CallError::Fatal(format!(
                "sink '{sink}': held({kind:?}) returned a page of {} uids, over the limit of {} it was asked for",
                page.uids.len(),
                self.cap.page_uids
            )));
        }
        for uid in page.uids {
            self.bytes = self.bytes.saturating_add(uid.len());
            if self.uids.len() >= self.cap.max_uids || self.bytes > self.cap.max_bytes {
                return Err(CallError::Fatal(format!(
                    "sink '{sink}' holds more {kind:?} uids than kubesink takes in one answer (at most {} uids, {} bytes); not reconciled",
                    self.cap.max_uids, self.cap.max_bytes
                )));
            }
            self.uids.push(uid);
        }
        match page.next {
            Some(next) if cursor == Some(next.as_str()) => Err(CallError::Fatal(format!(
                "sink '{sink}': held({kind:?}) returned its cursor unchanged as the next one; its pages do not advance"
            ))),
            next => Ok(next),
        }
    }
}

/// The bindings of a new instance, and its `write-packed-v2` or
/// `write-packed` when the component exports one, checked to have the type
/// this host calls.
fn link(
    bp: &Blueprint,
    store: &mut wasmtime::Store<StoreData>,
    instance: &wasmtime::component::Instance,
) -> wasmtime::Result<(SinkWorld, Option<wasmtime::component::Func>)> {
    let bindings = SinkWorld::new(&mut *store, instance)?;
    let Some(export) = &bp.packed else {
        return Ok((bindings, None));
    };
    let name = export.name();
    let func = instance
        .get_func(&mut *store, export.index)
        .ok_or_else(|| {
            wasmtime::format_err!("its export `kubesink:sink/packed` has no function `{name}`")
        })?;
    crate::packed::write_packed(func, &*store).map_err(|e| {
        e.context(format!(
            "its `{name}` (kubesink:sink/packed) does not have the type \
             `func(batch: list<u8>) -> result<_, error>`"
        ))
    })?;
    Ok((bindings, Some(func)))
}

/// The guest's error, its text escaped, cut and charged to the sink's
/// output budget ([`crate::log::SinkOutput::admit`]) before it can reach a
/// log line.
fn guest_error(bp: &Blueprint, call: &str, e: SinkError) -> CallError {
    let e = match e {
        SinkError::Retryable(m) => SinkError::Retryable(bp.output.admit(&m)),
        SinkError::Fatal(m) => SinkError::Fatal(bp.output.admit(&m)),
    };
    match e {
        SinkError::Retryable(m) => CallError::Retryable(format!(
            "sink '{}': {call} failed (retryable): {m}",
            bp.name
        )),
        SinkError::Fatal(m) => {
            CallError::Fatal(format!("sink '{}': {call} failed (fatal): {m}", bp.name))
        }
    }
}

fn timeout_fault(bp: &Blueprint, call: &str) -> CallError {
    CallError::Fault {
        cause: FaultCause::Timeout,
        detail: format!(
            "sink '{}': {call} exceeded its deadline of {:?}",
            bp.name, bp.limits.call_timeout
        ),
    }
}

/// Classifies an error returned by a guest call.
fn fault(bp: &Blueprint, call: &str, data: &StoreData, err: &wasmtime::Error) -> CallError {
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
    CallError::Fault { cause, detail }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::instance::HeldCap;
    use kubesink_normalize::record::HeldPage;

    fn page(uids: &[&str], next: Option<&str>) -> HeldPage {
        HeldPage {
            uids: uids.iter().map(|u| (*u).to_owned()).collect(),
            next: next.map(str::to_owned),
        }
    }

    fn cap(page_uids: u32, max_uids: usize, max_bytes: usize) -> HeldCap {
        HeldCap {
            page_uids,
            max_uids,
            max_bytes,
            ..HeldCap::default()
        }
    }

    #[test]
    fn held_pages_are_joined_until_one_has_no_next() {
        let mut a = HeldAnswer::new("s", RecordKind::Pod, cap(2, 10, 100));
        assert_eq!(
            a.add(page(&["a", "b"], Some("b")), None),
            Ok(Some("b".into()))
        );
        assert_eq!(a.add(page(&[], Some("c")), Some("b")), Ok(Some("c".into())));
        assert_eq!(a.add(page(&["d"], None), Some("c")), Ok(None));
        assert_eq!(a.uids, ["a", "b", "d"]);
    }

    #[test]
    fn held_pages_over_their_limit_or_the_cap_or_stuck_fail_naming_the_sink() {
        let fatal = |r: Result<Option<String>, CallError>, want: &str| match r {
            Err(CallError::Fatal(m)) => assert!(m.contains("sink 's'") && m.contains(want), "{m}"),
            other => panic!("{other:?}"),
        };
        let mut a = HeldAnswer::new("s", RecordKind::Job, cap(2, 10, 100));
        fatal(
            a.add(page(&["a", "b", "c"], None), None),
            "over the limit of 2",
        );
        let mut a = HeldAnswer::new("s", RecordKind::Job, cap(2, 3, 100));
        assert!(a.add(page(&["a", "b"], Some("1")), None).is_ok());
        fatal(
            a.add(page(&["c", "d"], Some("2")), Some("1")),
            "at most 3 uids",
        );
        let mut a = HeldAnswer::new("s", RecordKind::Job, cap(2, 10, 5));
        fatal(a.add(page(&["abc", "def"], None), None), "5 bytes");
        let mut a = HeldAnswer::new("s", RecordKind::Job, cap(2, 10, 100));
        assert!(a.add(page(&["a"], Some("x")), None).is_ok());
        fatal(a.add(page(&["b"], Some("x")), Some("x")), "do not advance");
    }
}
