//! From records to sinks: one bounded queue and one worker per sink, so a
//! slow or failing sink never holds back another (beyond the backpressure a
//! full queue puts on the source), and nothing is dropped.
//!
//! Each worker takes batches from its queue ([`queue::SinkQueue`]) and
//! writes them to its sink instance:
//! - `retryable` errors: the same batch is retried after exponential backoff
//!   with full jitter, capped ([`backoff`]), until it is delivered;
//! - `fatal` errors and faults (trap, deadline, memory cap): the instance is
//!   rebuilt and the batch is split in halves and retried, so that only the
//!   entries the sink rejects on their own are recorded as failed (logged
//!   with the sink, the object and the cause); consecutive failures back the
//!   sink off instead of spinning.
//!
//! A sink's module can be replaced while it runs ([`ModuleSlot::swap`], used
//! by [`crate::modules`] for ConfigMap modules): the new instance, already
//! compiled and initialized, takes over between batches — the batch in
//! flight completes (or is recorded failed) on the old one, so nothing is
//! lost or delivered twice; a batch waiting in a retry's backoff is
//! redelivered to the new one instead of holding the swap back. A sink whose module comes from a ConfigMap
//! starts without an instance: its records queue up (bounded, as for a slow
//! sink) and are delivered once the first version is swapped in.

pub mod backoff;
pub mod lag;
pub mod queue;
mod worker;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use std::collections::HashSet;

use kubesink_host::{Host, HostError, SinkInstance};
use kubesink_normalize::record::{
    Change, Entry, Event, Job, Meta, ObjectRef, Pod, Record, RecordKind, Timestamp,
};
use thiserror::Error;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::config::{RecordKind as RecordKind_, SinkPlan};
use crate::ops::Ops;
use crate::ops::health::Health;
use crate::ops::metrics::SinkMetrics;
use lag::{LagState, SinkLag};
use queue::{Pushed, SinkQueue};
use worker::Worker;

/// Bounds on asking a sink what it holds (reconciliation), so that a stuck
/// sink, or one answering with more than kubesink should keep in memory,
/// costs only its own reconciliation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeldLimits {
    /// How long to wait for every worker of the sink to deliver what is
    /// queued and answer. Past it the sink is skipped (logged, naming it).
    pub deadline: Duration,
    /// The most uids an answer may hold.
    pub max_uids: usize,
    /// The most bytes (sum of the uids' lengths) an answer may hold.
    pub max_bytes: usize,
}

impl Default for HeldLimits {
    fn default() -> Self {
        Self {
            deadline: Duration::from_secs(30),
            max_uids: 2_000_000,
            max_bytes: 128 << 20,
        }
    }
}

/// Where catch-up requests go: the name of each sink that starts catching
/// up ([`Pipeline::enable_catch_up`]).
#[derive(Debug, Default)]
struct CatchUps {
    /// Set once a source took catch-up requests: sinks may fall behind.
    enabled: AtomicBool,
    to: std::sync::Mutex<Option<mpsc::UnboundedSender<String>>>,
}

impl CatchUps {
    fn enabled(&self) -> bool {
        self.enabled.load(Ordering::Acquire)
    }

    /// Asks the source for a catch-up of `sink`; false when no source
    /// takes requests (any more).
    fn request(&self, sink: &str) -> bool {
        self.to
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .is_some_and(|tx| tx.send(sink.to_owned()).is_ok())
    }
}

type CatchUpLink = Arc<CatchUps>;

/// Errors starting the pipeline.
#[derive(Debug, Error)]
pub enum PipelineError {
    /// Loading a sink failed; the host's error names the sink and the module.
    #[error(transparent)]
    Load(HostError),
    /// A file module does not have its pinned `sha256`.
    #[error(transparent)]
    Pin(crate::modules::PinError),
}

/// Counters of one sink.
#[derive(Debug)]
pub struct SinkStats {
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
    metrics: SinkMetrics,
    /// Readiness and liveness ([`crate::ops::health`]).
    health: Arc<Health>,
}

/// A snapshot of [`SinkStats`].
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

impl SinkStats {
    /// Zero counters of sink `name`, reporting to `ops`.
    fn new(name: &str, ops: &Ops) -> Self {
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
    fn undelivered(&self) -> u64 {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        g(&self.received).saturating_sub(g(&self.delivered) + g(&self.failed))
    }

    fn report(&self, name: &str) -> SinkReport {
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

/// Requests a worker answers between batches.
enum Control {
    /// Deliver what is queued, then ask the sink what it holds.
    Held {
        kind: RecordKind,
        reply: oneshot::Sender<Result<Vec<String>, String>>,
    },
}

/// A new instance for a sink (a new module version, compiled and
/// initialized), taken between batches, or during a retry's backoff (the
/// batch is then redelivered to the new instance).
struct Swap {
    instance: SinkInstance,
    reply: oneshot::Sender<()>,
}

/// Replaces the instances of one running sink; see [`Pipeline::module_slot`].
#[derive(Debug, Clone)]
pub struct ModuleSlot {
    name: String,
    /// One per worker.
    swaps: Vec<mpsc::Sender<Swap>>,
}

/// Why [`ModuleSlot::swap`] did not happen.
#[derive(Debug, Error)]
pub enum SwapError {
    /// The sink's worker has stopped (kubesink is shutting down).
    #[error("sink '{0}' has stopped; its new module was not swapped in")]
    Stopped(String),
}

impl ModuleSlot {
    /// The sink's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// How many instances [`swap`](Self::swap) takes: the sink's workers.
    pub fn workers(&self) -> usize {
        self.swaps.len()
    }

    /// Hands one new instance to each of the sink's workers (`instances`
    /// holds [`workers`](Self::workers) of them) and waits until all have
    /// taken over: each after its batch in flight, before its next one —
    /// or, when that batch is waiting to be retried (a retryable error, or
    /// a fault's backoff), right away, the batch going to the new instance.
    /// The old instances are dropped.
    pub async fn swap(&self, instances: Vec<SinkInstance>) -> Result<(), SwapError> {
        assert_eq!(
            instances.len(),
            self.swaps.len(),
            "one instance per worker of sink '{}'",
            self.name
        );
        let mut waits = Vec::with_capacity(instances.len());
        for (swaps, instance) in self.swaps.iter().zip(instances) {
            let (reply, done) = oneshot::channel();
            swaps
                .send(Swap { instance, reply })
                .await
                .map_err(|_| SwapError::Stopped(self.name.clone()))?;
            waits.push(done);
        }
        for done in waits {
            done.await
                .map_err(|_| SwapError::Stopped(self.name.clone()))?;
        }
        Ok(())
    }
}

impl std::fmt::Debug for Control {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Control::Held { kind, .. } => write!(f, "Held({kind:?})"),
        }
    }
}

/// One worker of a sink: its queue, its task (which owns its instance),
/// and how to reach it.
struct Lane {
    control: mpsc::Sender<Control>,
    swaps: mpsc::Sender<Swap>,
    queue: Arc<SinkQueue>,
    worker: JoinHandle<()>,
}

struct SinkHandle {
    name: String,
    records: Vec<RecordKind_>,
    stats: Arc<SinkStats>,
    lag: Arc<SinkLag>,
    /// Headroom above a queue's capacity for live entries while catching up.
    headroom: usize,
    /// `workers` lanes; an object's entries always go to the same one.
    lanes: Vec<Lane>,
}

impl SinkHandle {
    fn lane(&self, entry: &Entry) -> &Lane {
        &self.lanes[queue::lane_of(entry, self.lanes.len())]
    }

    fn queued(&self) -> usize {
        self.lanes.iter().map(|l| l.queue.len()).sum()
    }

    fn close(&self) {
        for l in &self.lanes {
            l.queue.close();
        }
    }

    fn finished(&self) -> bool {
        self.lanes.iter().all(|l| l.worker.is_finished())
    }
}

/// The running sinks.
pub struct Pipeline {
    sinks: Vec<SinkHandle>,
    ops: Arc<Ops>,
    catch_up: CatchUpLink,
    held_limits: HeldLimits,
}

/// What [`Pipeline::shutdown`] achieved.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ShutdownReport {
    /// Final counters of every sink, in configuration order.
    pub reports: Vec<SinkReport>,
    /// Sinks that still had records (queued or in flight) when the grace
    /// period ran out, with how many; empty when everything was delivered.
    pub undelivered: Vec<(String, u64)>,
}

impl std::fmt::Debug for Pipeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.sinks.iter().map(|s| &s.name))
            .finish()
    }
}

fn kind_of(record: &Record) -> RecordKind_ {
    match record {
        Record::Job(_) => RecordKind_::Jobs,
        Record::Pod(_) => RecordKind_::Pods,
        Record::Event(_) => RecordKind_::Events,
    }
}

/// A `removed` entry for an object known only by its uid: every other field
/// empty and `resource-version-num` 0, so a sink marks its stored record
/// removed without changing the stored fields.
pub fn tombstone(kind: RecordKind, uid: String, at: Timestamp) -> Entry {
    let zero = Timestamp {
        seconds: 0,
        nanos: 0,
    };
    let meta = Meta {
        uid,
        name: String::new(),
        namespace: String::new(),
        resource_version: String::new(),
        resource_version_num: 0,
        labels: Vec::new(),
        created: zero,
    };
    let record = match kind {
        RecordKind::Job => Record::Job(Job {
            meta,
            api_version: String::new(),
            kind: String::new(),
            status: String::new(),
            resources: String::new(),
            tenant: String::new(),
            owner: String::new(),
            region: String::new(),
            modified: zero,
            running_at: None,
            finished_at: None,
            remark: String::new(),
        }),
        RecordKind::Pod => Record::Pod(Pod {
            meta,
            job_uid: String::new(),
            job_kind: String::new(),
            replica_type: String::new(),
            status: String::new(),
            image: String::new(),
            resources: String::new(),
            host_ip: String::new(),
            pod_ip: String::new(),
            region: String::new(),
            modified: zero,
            started_at: None,
            finished_at: None,
            remark: String::new(),
        }),
        RecordKind::Event => Record::Event(Event {
            meta,
            involved: ObjectRef {
                api_version: String::new(),
                kind: String::new(),
                namespace: String::new(),
                name: String::new(),
                uid: String::new(),
            },
            event_type: String::new(),
            reason: String::new(),
            message: String::new(),
            source: String::new(),
            count: 0,
            first_seen: zero,
            last_seen: zero,
            region: String::new(),
        }),
    };
    Entry {
        change: Change::Removed(at),
        record,
    }
}

/// Names an entry's object in logs: `Pod ns/name (uid)`, escaped
/// ([`kubesink_host::log::sanitize`]): names come from the cluster, and the
/// uids of tombstones from a sink's `held` answer.
pub fn describe(entry: &Entry) -> String {
    let (kind, meta) = match &entry.record {
        Record::Job(j) => (j.kind.as_str(), &j.meta),
        Record::Pod(p) => ("Pod", &p.meta),
        Record::Event(e) => ("Event", &e.meta),
    };
    kubesink_host::log::sanitize(
        &format!("{kind} {}/{} ({})", meta.namespace, meta.name, meta.uid),
        1024,
    )
}

impl Pipeline {
    /// Loads every sink (compiling, instantiating and calling `init`) and
    /// starts its worker. A sink that cannot be loaded is a startup error
    /// naming it.
    pub async fn start(host: &Host, plans: Vec<SinkPlan>) -> Result<Pipeline, PipelineError> {
        Self::start_with_ops(host, plans, Ops::new()).await
    }

    /// [`start`](Self::start), reporting metrics and readiness to `ops`
    /// (every sink is declared not ready first, then ready once its
    /// instance is initialized).
    pub async fn start_with_ops(
        host: &Host,
        plans: Vec<SinkPlan>,
        ops: Arc<Ops>,
    ) -> Result<Pipeline, PipelineError> {
        for plan in &plans {
            ops.health.sink_pending(&plan.spec.name);
        }
        let mut sinks = Vec::new();
        let catch_up = CatchUpLink::default();
        for plan in plans {
            let name = plan.spec.name.clone();
            let stats = Arc::new(SinkStats::new(&name, &ops));
            let lag = Arc::new(SinkLag::new(&name));
            let workers = plan.workers.max(1);
            // The sink's capacity is shared by its workers' queues.
            let capacity = plan.queue_capacity.div_ceil(workers);
            // None when its module comes from a ConfigMap: `crate::modules`
            // swaps the first version in when it has one.
            let spec = crate::modules::file_spec(&plan)
                .await
                .map_err(PipelineError::Pin)?;
            let mut lanes = Vec::with_capacity(workers);
            for _ in 0..workers {
                let queue = Arc::new(SinkQueue::new(capacity, plan.coalesce));
                let (control, control_rx) = mpsc::channel(4);
                let (swaps, swaps_rx) = mpsc::channel(1);
                let worker = match &spec {
                    None => tokio::spawn(Worker::wait_for_module(
                        queue.clone(),
                        stats.clone(),
                        plan.clone(),
                        (lag.clone(), catch_up.clone()),
                        control_rx,
                        swaps_rx,
                    )),
                    Some(spec) => {
                        // Loaded one after another: a sink's `init` (its
                        // schema, say) never races another instance's.
                        let instance =
                            host.load(spec.clone()).await.map_err(PipelineError::Load)?;
                        tokio::spawn(
                            Worker {
                                instance,
                                queue: queue.clone(),
                                stats: stats.clone(),
                                plan: plan.clone(),
                                swaps: swaps_rx,
                                lag: lag.clone(),
                                catch_up: catch_up.clone(),
                            }
                            .run(control_rx),
                        )
                    }
                };
                lanes.push(Lane {
                    control,
                    swaps,
                    queue,
                    worker,
                });
            }
            ops.metrics.watch_queue(
                &name,
                lanes.iter().map(|l| Arc::downgrade(&l.queue)).collect(),
            );
            ops.metrics.watch_cpu(plan.cpu_meter(host));
            lag.set_queues(lanes.iter().map(|l| Arc::downgrade(&l.queue)).collect());
            ops.metrics.watch_lag(Arc::downgrade(&lag));
            ops.health.watch_lag(Arc::downgrade(&lag));
            sinks.push(SinkHandle {
                name,
                records: plan.records,
                stats,
                lag,
                headroom: capacity,
                lanes,
            });
        }
        Ok(Pipeline {
            sinks,
            ops,
            catch_up,
            held_limits: HeldLimits::default(),
        })
    }

    /// Bounds on asking sinks what they hold (default [`HeldLimits`]).
    pub fn set_held_limits(&mut self, limits: HeldLimits) {
        self.held_limits = limits;
    }

    /// Lets sinks fall behind (see [`lag`]): from now on a sink whose queue
    /// is full while another sink takes the entry is not waited for, and
    /// the returned receiver gets the name of each sink that needs a
    /// catch-up (a fresh listing for it alone, through
    /// [`send_to`](Self::send_to), then
    /// [`reconcile_sink`](Self::reconcile_sink) and
    /// [`caught_up`](Self::caught_up)). Only a source that can list again
    /// calls this (the live watch); without it every sink paces the source
    /// (replay). A later call (a new source: the watches restarted)
    /// replaces the receiver, and sinks whose catch-up was left unfinished
    /// by the previous source start it again.
    pub fn enable_catch_up(&self) -> mpsc::UnboundedReceiver<String> {
        let (tx, rx) = mpsc::unbounded_channel();
        *self.catch_up.to.lock().unwrap_or_else(|e| e.into_inner()) = Some(tx);
        self.catch_up.enabled.store(true, Ordering::Release);
        for s in &self.sinks {
            if s.lag.state() == LagState::CatchingUp {
                s.lag.catch_up_failed();
            }
            if s.lag.start_catch_up() && !self.catch_up.request(&s.name) {
                s.lag.catch_up_failed();
            }
        }
        rx
    }

    fn sink(&self, name: &str) -> Option<&SinkHandle> {
        self.sinks.iter().find(|s| s.name == name)
    }

    /// The state of sink `name` (`None`: no such sink).
    pub fn lag_state(&self, name: &str) -> Option<LagState> {
        self.sink(name).map(|s| s.lag.state())
    }

    /// The record kinds sink `name` receives.
    pub fn sink_kinds(&self, name: &str) -> Vec<RecordKind> {
        self.sink(name).map_or_else(Vec::new, |s| {
            s.records
                .iter()
                .map(|r| match r {
                    RecordKind_::Jobs => RecordKind::Job,
                    RecordKind_::Pods => RecordKind::Pod,
                    RecordKind_::Events => RecordKind::Event,
                })
                .collect()
        })
    }

    /// The metrics and health state this pipeline reports to.
    pub fn ops(&self) -> &Arc<Ops> {
        &self.ops
    }

    /// Queues an entry for every sink that receives its kind.
    ///
    /// Until [`enable_catch_up`](Self::enable_catch_up), it waits while a
    /// queue is full (every sink paces the source). After it, it waits only
    /// while the queues of *all* its sinks that are not lagging are full:
    /// once one sink took the entry, a sink whose queue is still full falls
    /// behind ([`lag`]) instead of holding the others back, and lagging
    /// sinks are skipped until they catch up.
    pub async fn send(&self, entry: Entry) {
        let kind = kind_of(&entry.record);
        let targets = self.sinks.iter().filter(|s| s.records.contains(&kind));
        if !self.catch_up.enabled() {
            let targets: Vec<&SinkHandle> = targets.collect();
            let Some((last, rest)) = targets.split_last() else {
                return;
            };
            for s in rest {
                Self::push(s, entry.clone()).await;
            }
            Self::push(last, entry).await;
            return;
        }
        let mut pending: Vec<&SinkHandle> = Vec::new();
        for s in targets {
            if s.lag.state() == LagState::Lagging {
                s.lag.skip();
                s.stats.metrics.skipped.inc();
            } else {
                pending.push(s);
            }
        }
        let mut taken = false;
        while !pending.is_empty() {
            // Registered before trying, so that no room made in between is
            // missed.
            let rooms: Vec<_> = pending
                .iter()
                .map(|s| Box::pin(s.lane(&entry).queue.room()))
                .collect();
            let mut full = Vec::new();
            for (s, room) in pending.into_iter().zip(rooms) {
                let extra = match s.lag.state() {
                    LagState::CatchingUp => s.headroom,
                    _ => 0,
                };
                match s.lane(&entry).queue.try_push(entry.clone(), extra) {
                    Ok(pushed) => {
                        taken = true;
                        if pushed == Pushed::Queued && !matches!(entry.change, Change::Removed(_)) {
                            let (k, uid) = queue::object_of(&entry);
                            s.lag.queued_live(k, uid);
                        }
                        Self::count(s, pushed);
                    }
                    Err(_) => full.push((s, room)),
                }
            }
            if full.is_empty() {
                return;
            }
            if taken {
                for (s, _) in full {
                    Self::fall_behind(s);
                }
                return;
            }
            // Every sink is full: the source waits for the first to make room.
            let (rooms, sinks): (Vec<_>, Vec<_>) = full.into_iter().map(|(s, r)| (r, s)).unzip();
            futures_util::future::select_all(rooms).await;
            pending = sinks;
        }
    }

    /// `sink`'s queue was full while another sink took the entry.
    fn fall_behind(sink: &SinkHandle) {
        sink.stats.metrics.skipped.inc();
        if sink.lag.fall_behind() {
            tracing::warn!(sink = %sink.name, queued = sink.queued(), "sink falls behind: its queue is full while the other sinks take records; it gets nothing more until it has delivered what is queued, then catches up from a fresh listing");
        }
    }

    fn count(sink: &SinkHandle, pushed: Pushed) {
        match pushed {
            Pushed::Queued => {
                sink.stats.received.fetch_add(1, Ordering::Relaxed);
                sink.stats.metrics.received.inc();
            }
            // A stale update dropped counts as coalesced: the object's
            // newer entry, already waiting, stands for both.
            Pushed::Coalesced | Pushed::Stale => {
                sink.stats.coalesced.fetch_add(1, Ordering::Relaxed);
                sink.stats.metrics.coalesced.inc();
            }
            Pushed::Closed => {
                tracing::error!(sink = %sink.name, "queue closed; entry not taken");
            }
        }
    }

    async fn push(sink: &SinkHandle, entry: Entry) {
        let pushed = sink.lane(&entry).queue.push(entry).await;
        Self::count(sink, pushed);
    }

    /// Queues `entry` for sink `name` alone (a catch-up's listing), waiting
    /// while its queue is full. Returns false, not queueing it, once the
    /// sink is no longer catching up (it fell behind again: the catch-up
    /// is abandoned and starts over later).
    pub async fn send_to(&self, name: &str, entry: Entry) -> bool {
        let Some(sink) = self.sink(name) else {
            return false;
        };
        let queue = &sink.lane(&entry).queue;
        let mut entry = entry;
        loop {
            let room = queue.room();
            if sink.lag.state() != LagState::CatchingUp {
                return false;
            }
            match queue.try_push(entry, 0) {
                Ok(pushed) => {
                    Self::count(sink, pushed);
                    return pushed != Pushed::Closed;
                }
                Err(back) => entry = back,
            }
            // Room, or a look at the state again (it may have fallen behind).
            let _ = tokio::time::timeout(Duration::from_millis(500), room).await;
        }
    }

    /// The end of sink `name`'s catch-up: `ok` again unless it fell behind
    /// meanwhile. Returns whether it is `ok`.
    pub fn caught_up(&self, name: &str) -> bool {
        let Some(sink) = self.sink(name) else {
            return false;
        };
        let ok = sink.lag.caught_up();
        if ok {
            tracing::info!(sink = %name, skipped = sink.lag.skipped(), "sink caught up");
        }
        ok
    }

    /// After a complete listing of `kind` (`listed`: the uids the cluster
    /// has), delivers a `removed` tombstone to every sink for each uid it
    /// holds that the cluster no longer has (deleted while kubesink was not
    /// watching). The sinks are asked at once, each within the
    /// [`HeldLimits`]; a lagging or catching-up sink is skipped (its
    /// catch-up reconciles it). Returns how many tombstones were queued; a
    /// sink that cannot answer is logged and skipped (the next listing
    /// tries again).
    pub async fn reconcile(
        &self,
        kind: RecordKind,
        listed: &HashSet<String>,
        at: Timestamp,
    ) -> usize {
        let record_kind = match kind {
            RecordKind::Job => RecordKind_::Jobs,
            RecordKind::Pod => RecordKind_::Pods,
            RecordKind::Event => RecordKind_::Events,
        };
        let lagging = self.catch_up.enabled();
        let asked = self
            .sinks
            .iter()
            .filter(|s| s.records.contains(&record_kind))
            .filter(|s| {
                let state = s.lag.state();
                if state != LagState::Ok {
                    tracing::debug!(sink = %s.name, ?kind, state = state.as_str(), "not reconciled now: its catch-up reconciles it");
                    return false;
                }
                // A sink retrying a failed write would answer only after
                // it: it catches up (and is reconciled) once it delivers.
                if lagging && s.lag.retrying() {
                    if s.lag.lag_behind() {
                        tracing::warn!(sink = %s.name, ?kind, "sink is retrying a write and cannot say what it holds now; it falls behind and is reconciled when it catches up");
                    }
                    return false;
                }
                true
            })
            .map(|s| async move { (s, self.held(s, kind).await) });
        let answers = futures_util::future::join_all(asked).await;
        let mut sent = 0;
        for (sink, answer) in answers {
            match answer {
                Ok(held) => {
                    for uid in held.into_iter().filter(|u| !listed.contains(u)) {
                        let entry = tombstone(kind, uid, at);
                        match sink.lane(&entry).queue.try_push(entry, 0) {
                            Ok(pushed) => {
                                Self::count(sink, pushed);
                                sent += 1;
                            }
                            Err(entry) if !self.catch_up.enabled() => {
                                Self::push(sink, entry).await;
                                sent += 1;
                            }
                            Err(_) => Self::fall_behind(sink),
                        }
                    }
                }
                Err(Some(message)) if lagging => {
                    if sink.lag.lag_behind() {
                        tracing::warn!(sink = %sink.name, ?kind, %message, "cannot ask the sink what it holds; it falls behind and is reconciled when it catches up");
                    }
                }
                Err(Some(message)) => {
                    tracing::warn!(sink = %sink.name, ?kind, %message, "cannot ask the sink what it holds; objects removed while not watching are marked at the next listing");
                }
                Err(None) => {}
            }
        }
        sent
    }

    /// A catch-up's reconciliation of sink `name` alone: a tombstone for
    /// each uid of `kind` it holds that is neither in `listed` (the
    /// catch-up's listing) nor queued live since the catch-up started.
    /// Returns how many were queued, or why the sink could not be asked.
    pub async fn reconcile_sink(
        &self,
        name: &str,
        kind: RecordKind,
        listed: &HashSet<String>,
        at: Timestamp,
    ) -> Result<usize, String> {
        let sink = self.sink(name).ok_or_else(|| format!("no sink '{name}'"))?;
        let held = self
            .held(sink, kind)
            .await
            .map_err(|m| m.unwrap_or_else(|| format!("sink '{name}' is stopping")))?;
        let code = queue::kind_code(kind);
        let mut sent = 0;
        for uid in held {
            if listed.contains(&uid) || sink.lag.was_queued_live(code, &uid) {
                continue;
            }
            if !self.send_to(name, tombstone(kind, uid, at)).await {
                return Err(format!("sink '{name}' fell behind again"));
            }
            sent += 1;
        }
        Ok(sent)
    }

    /// What `sink` holds of `kind`: every worker first delivers what is
    /// queued for it, then each instance is asked, and the answers are
    /// joined (a sink that stores in a database answers alike from each; one
    /// that keeps state per instance answers for its share). All within the
    /// [`HeldLimits`]: past the deadline, or with an answer over the caps,
    /// it is an error naming the sink. `Err(None)`: the sink is stopping.
    async fn held(
        &self,
        sink: &SinkHandle,
        kind: RecordKind,
    ) -> Result<Vec<String>, Option<String>> {
        let limits = self.held_limits;
        let mut answers = Vec::with_capacity(sink.lanes.len());
        for lane in &sink.lanes {
            let (reply, answer) = oneshot::channel();
            lane.control
                .try_send(Control::Held { kind, reply })
                .map_err(|e| match e {
                    mpsc::error::TrySendError::Full(_) => Some(format!(
                        "sink '{}' has not answered earlier requests yet (a write is being retried)",
                        sink.name
                    )),
                    mpsc::error::TrySendError::Closed(_) => None,
                })?;
            answers.push(answer);
        }
        let joined = async {
            let mut held = Vec::new();
            let mut seen = HashSet::new();
            let mut bytes = 0usize;
            for answer in answers {
                for uid in answer.await.map_err(|_| None)?.map_err(Some)? {
                    bytes += uid.len();
                    if seen.len() >= limits.max_uids || bytes > limits.max_bytes {
                        return Err(Some(format!(
                            "sink '{}' holds more {kind:?} uids than kubesink takes in one answer (at most {} uids, {} bytes); not reconciled",
                            sink.name, limits.max_uids, limits.max_bytes
                        )));
                    }
                    if seen.insert(uid.clone()) {
                        held.push(uid);
                    }
                }
            }
            Ok(held)
        };
        match tokio::time::timeout(limits.deadline, joined).await {
            Ok(answer) => answer,
            Err(_) => Err(Some(format!(
                "sink '{}' did not deliver its queue and answer what it holds within {:?}",
                sink.name, limits.deadline
            ))),
        }
    }

    /// The handle that swaps a new module into sink `name`, if it exists.
    pub fn module_slot(&self, name: &str) -> Option<ModuleSlot> {
        self.sinks
            .iter()
            .find(|s| s.name == name)
            .map(|s| ModuleSlot {
                name: s.name.clone(),
                swaps: s.lanes.iter().map(|l| l.swaps.clone()).collect(),
            })
    }

    /// Graceful stop: marks the process not ready, closes every queue (no
    /// more entries are taken: stop the sources first) and lets the
    /// workers deliver what is queued, for at most `grace`. Workers still
    /// busy then are stopped; the report says how many records each of
    /// their sinks had not delivered.
    pub async fn shutdown(&self, grace: std::time::Duration) -> ShutdownReport {
        self.ops.health.set_stopping();
        for s in &self.sinks {
            s.close();
        }
        let deadline = tokio::time::Instant::now() + grace;
        while !self.sinks.iter().all(SinkHandle::finished) && tokio::time::Instant::now() < deadline
        {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        let mut undelivered = Vec::new();
        for s in &self.sinks {
            if !s.finished() {
                for l in &s.lanes {
                    l.worker.abort();
                }
                let left = s.stats.undelivered();
                tracing::error!(sink = %s.name, undelivered = left, ?grace, "shutdown grace ran out; the sink's remaining records were not delivered");
                undelivered.push((s.name.clone(), left));
            }
        }
        ShutdownReport {
            reports: self.reports(),
            undelivered,
        }
    }

    /// Counters of every sink, in configuration order.
    pub fn reports(&self) -> Vec<SinkReport> {
        self.sinks.iter().map(|s| s.stats.report(&s.name)).collect()
    }

    /// Entries waiting per sink.
    pub fn depths(&self) -> Vec<(String, usize)> {
        self.sinks
            .iter()
            .map(|s| (s.name.clone(), s.queued()))
            .collect()
    }

    /// [`finish`](Self::finish) for a pipeline shared with sources that are
    /// being stopped: waits (up to 10 s) for their references to go.
    pub async fn finish_shared(
        mut pipeline: Arc<Pipeline>,
    ) -> Result<Vec<SinkReport>, Arc<Pipeline>> {
        for _ in 0..1000 {
            match Arc::try_unwrap(pipeline) {
                Ok(p) => return Ok(p.finish().await),
                Err(shared) => pipeline = shared,
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        Err(pipeline)
    }

    /// Closes the queues, lets every worker deliver what is queued, and
    /// returns the final counters.
    pub async fn finish(self) -> Vec<SinkReport> {
        for s in &self.sinks {
            s.close();
        }
        let mut reports = Vec::new();
        for s in self.sinks {
            for l in s.lanes {
                if let Err(e) = l.worker.await {
                    tracing::error!(sink = %s.name, error = %e, "sink worker ended abnormally");
                }
            }
            reports.push(s.stats.report(&s.name));
        }
        reports
    }
}
