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
pub mod queue;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use std::collections::HashSet;

use kubesink_host::{Host, HostError, SinkInstance, WriteError};
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
use backoff::Backoff;
use queue::{Pushed, SinkQueue};

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

/// Names an entry's object in logs: `Pod ns/name (uid)`.
pub fn describe(entry: &Entry) -> String {
    let (kind, meta) = match &entry.record {
        Record::Job(j) => (j.kind.as_str(), &j.meta),
        Record::Pod(p) => ("Pod", &p.meta),
        Record::Event(e) => ("Event", &e.meta),
    };
    format!("{kind} {}/{} ({})", meta.namespace, meta.name, meta.uid)
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
        for plan in plans {
            let name = plan.spec.name.clone();
            let stats = Arc::new(SinkStats::new(&name, &ops));
            let workers = plan.workers.max(1);
            // The sink's capacity is shared by its workers' queues.
            let capacity = plan.queue_capacity.div_ceil(workers);
            let spec = match plan.configmap {
                // Its module comes from a ConfigMap: `crate::modules` swaps
                // the first version in when it has one.
                Some(_) => None,
                None => Some(
                    crate::modules::pin_file(&plan)
                        .await
                        .map_err(PipelineError::Pin)?,
                ),
            };
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
            sinks.push(SinkHandle {
                name,
                records: plan.records,
                stats,
                lanes,
            });
        }
        Ok(Pipeline { sinks, ops })
    }

    /// The metrics and health state this pipeline reports to.
    pub fn ops(&self) -> &Arc<Ops> {
        &self.ops
    }

    /// Queues an entry for every sink that receives its kind, waiting while
    /// a queue is full.
    pub async fn send(&self, entry: Entry) {
        let kind = kind_of(&entry.record);
        let targets: Vec<&SinkHandle> = self
            .sinks
            .iter()
            .filter(|s| s.records.contains(&kind))
            .collect();
        let Some((last, rest)) = targets.split_last() else {
            return;
        };
        for s in rest {
            Self::push(s, entry.clone()).await;
        }
        Self::push(last, entry).await;
    }

    async fn push(sink: &SinkHandle, entry: Entry) {
        match sink.lane(&entry).queue.push(entry).await {
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

    /// After a complete listing of `kind` (`listed`: the uids the cluster
    /// has), delivers a `removed` tombstone to every sink for each uid it
    /// holds that the cluster no longer has (deleted while kubesink was not
    /// watching). Each sink first delivers what is queued for it. Returns
    /// how many tombstones were queued; a sink that cannot answer is logged
    /// and skipped (the next listing tries again).
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
        let mut sent = 0;
        for sink in self
            .sinks
            .iter()
            .filter(|s| s.records.contains(&record_kind))
        {
            match Self::held(sink, kind).await {
                Ok(held) => {
                    for uid in held.into_iter().filter(|u| !listed.contains(u)) {
                        Self::push(sink, tombstone(kind, uid, at)).await;
                        sent += 1;
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

    /// What `sink` holds of `kind`: every worker first delivers what is
    /// queued for it, then each instance is asked, and the answers are
    /// joined (a sink that stores in a database answers alike from each; one
    /// that keeps state per instance answers for its share). `Err(None)`:
    /// the sink is stopping.
    async fn held(sink: &SinkHandle, kind: RecordKind) -> Result<Vec<String>, Option<String>> {
        let mut answers = Vec::with_capacity(sink.lanes.len());
        for lane in &sink.lanes {
            let (reply, answer) = oneshot::channel();
            lane.control
                .send(Control::Held { kind, reply })
                .await
                .map_err(|_| None)?;
            answers.push(answer);
        }
        let mut held = Vec::new();
        let mut seen = HashSet::new();
        for answer in answers {
            for uid in answer.await.map_err(|_| None)?.map_err(Some)? {
                if seen.insert(uid.clone()) {
                    held.push(uid);
                }
            }
        }
        Ok(held)
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

/// The `cause` label of a failed call: the host's fault cause (`timeout`,
/// `memory`, `trap`, ...), `fatal` for the sink's own fatal error,
/// `retryable` for a retryable one.
fn fault_cause(err: &WriteError) -> String {
    match err {
        WriteError::Fault { cause, .. } => cause.to_string(),
        WriteError::Fatal(_) => "fatal".to_owned(),
        WriteError::Retryable(_) => "retryable".to_owned(),
    }
}

/// Reports a sink worker that unwinds from a panic to the health state
/// (`/healthz` then fails).
struct PanicGuard {
    sink: String,
    health: Arc<Health>,
}

impl Drop for PanicGuard {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.health.worker_died(&self.sink);
        }
    }
}

/// How many times a failing batch is halved at most (up to 64 pieces), so a
/// sink that fails every call costs a bounded number of calls per batch.
const MAX_SPLIT_DEPTH: u32 = 6;

struct Worker {
    instance: SinkInstance,
    queue: Arc<SinkQueue>,
    stats: Arc<SinkStats>,
    plan: SinkPlan,
    /// New instances for the sink ([`ModuleSlot::swap`]).
    swaps: mpsc::Receiver<Swap>,
}

impl Worker {
    /// A sink without a module yet: answers control requests until the
    /// first instance is swapped in, then runs as a worker. Its records
    /// wait in the queue meanwhile. Ends (reporting what was not delivered)
    /// when the queue is closed first.
    async fn wait_for_module(
        queue: Arc<SinkQueue>,
        stats: Arc<SinkStats>,
        plan: SinkPlan,
        mut control: mpsc::Receiver<Control>,
        mut swaps: mpsc::Receiver<Swap>,
    ) {
        let name = plan.spec.name.clone();
        let mut tick = tokio::time::interval(std::time::Duration::from_millis(100));
        loop {
            tokio::select! {
                swap = swaps.recv() => match swap {
                    Some(Swap { instance, reply }) => {
                        tracing::info!(sink = %name, module = %instance.origin(), queued = queue.len(), "module loaded; the sink starts");
                        let _ = reply.send(());
                        return Worker { instance, queue, stats, plan, swaps }.run(control).await;
                    }
                    None => return,
                },
                request = control.recv() => match request {
                    Some(Control::Held { reply, .. }) => {
                        let _ = reply.send(Err(format!(
                            "sink '{name}' has no module yet (waiting for {})",
                            plan.spec.module.origin()
                        )));
                    }
                    None => return,
                },
                _ = tick.tick() => {
                    if queue.is_closed() {
                        tracing::error!(sink = %name, module = %plan.spec.module.origin(), undelivered = queue.len(), "stopping before the sink's module was ever loaded; its queued records were not delivered");
                        return;
                    }
                }
            }
        }
    }

    async fn run(mut self, mut control: mpsc::Receiver<Control>) {
        self.stats.health.sink_ready(&self.plan.spec.name);
        let _panic_guard = PanicGuard {
            sink: self.plan.spec.name.clone(),
            health: self.stats.health.clone(),
        };
        let mut failures = Backoff::new(self.plan.retry.initial, self.plan.retry.max);
        let mut control_open = true;
        let mut swaps_open = true;
        loop {
            // `next_batch` takes entries only after its last await, so it is
            // safe to drop it when a control request wins.
            tokio::select! {
                biased;
                request = control.recv(), if control_open => match request {
                    Some(Control::Held { kind, reply }) => {
                        while !self.queue.is_empty() {
                            let Some(batch) = self
                                .queue
                                .next_batch(self.plan.batch.max_records, std::time::Duration::ZERO)
                                .await
                            else {
                                break;
                            };
                            self.deliver(batch, &mut failures).await;
                        }
                        let started = std::time::Instant::now();
                        let answer = self.instance.held(kind).await.map_err(|e| e.to_string());
                        self.stats.metrics.add_guest_time(started.elapsed());
                        let _ = reply.send(answer);
                    }
                    None => control_open = false,
                },
                swap = self.swaps.recv(), if swaps_open => match swap {
                    Some(swap) => self.take(swap, "between batches"),
                    None => swaps_open = false,
                },
                batch = self.queue.next_batch(self.plan.batch.max_records, self.plan.batch.max_delay) => {
                    match batch {
                        Some(batch) => self.deliver(batch, &mut failures).await,
                        None => break,
                    }
                }
            }
        }
    }

    /// Makes `swap`'s instance the sink's; the old one is dropped.
    fn take(&mut self, swap: Swap, when: &str) {
        let old = std::mem::replace(&mut self.instance, swap.instance);
        tracing::info!(sink = %self.plan.spec.name, from = %old.origin(), to = %self.instance.origin(), "module swapped {when}");
        drop(old);
        let _ = swap.reply.send(());
    }

    /// Waits `delay` before a retry; a new instance arriving meanwhile is
    /// taken at once, and the retry goes to it.
    async fn pause(&mut self, delay: std::time::Duration) {
        let deadline = tokio::time::Instant::now() + delay;
        tokio::select! {
            _ = tokio::time::sleep_until(deadline) => {}
            swap = self.swaps.recv() => match swap {
                Some(swap) => {
                    self.take(swap, "during a retry's backoff; the batch goes to the new instance");
                }
                // No more swaps can come: wait out the delay.
                None => tokio::time::sleep_until(deadline).await,
            }
        }
    }

    /// Delivers one batch: retries retryable errors; on a fatal error or a
    /// fault, splits the batch to isolate the entries at fault.
    async fn deliver(&mut self, batch: Vec<Entry>, failures: &mut Backoff) {
        let name = self.plan.spec.name.clone();
        let mut pending = vec![(0, batch)];
        while let Some((depth, batch)) = pending.pop() {
            let mut retry = Backoff::new(self.plan.retry.initial, self.plan.retry.max);
            loop {
                self.stats.batches.fetch_add(1, Ordering::Relaxed);
                let started = std::time::Instant::now();
                let result = self.instance.write(&batch).await;
                let elapsed = started.elapsed();
                self.stats.metrics.observe_batch(elapsed);
                self.stats.metrics.add_guest_time(elapsed);
                match result {
                    Ok(()) => {
                        self.stats
                            .delivered
                            .fetch_add(batch.len() as u64, Ordering::Relaxed);
                        self.stats.metrics.delivered.inc_by(batch.len() as u64);
                        tracing::debug!(sink = %name, records = batch.len(), ?elapsed, "batch delivered");
                        failures.reset();
                        break;
                    }
                    Err(WriteError::Retryable(message)) => {
                        self.stats.retries.fetch_add(1, Ordering::Relaxed);
                        self.stats.metrics.retries.inc();
                        let delay = retry.next_delay();
                        tracing::warn!(sink = %name, records = batch.len(), %message, retry_in = ?delay, "retryable error; will redeliver the batch");
                        self.pause(delay).await;
                    }
                    Err(err) => {
                        self.stats.faults.fetch_add(1, Ordering::Relaxed);
                        self.stats.metrics.fault(&fault_cause(&err));
                        let delay = failures.next_delay();
                        if batch.len() > 1 && depth < MAX_SPLIT_DEPTH {
                            tracing::warn!(sink = %name, records = batch.len(), error = %err, "batch failed; splitting it to isolate the entries at fault");
                            let mut first = batch;
                            let second = first.split_off(first.len() / 2);
                            pending.push((depth + 1, second));
                            pending.push((depth + 1, first));
                        } else {
                            self.stats
                                .failed
                                .fetch_add(batch.len() as u64, Ordering::Relaxed);
                            self.stats.metrics.failed.inc_by(batch.len() as u64);
                            for entry in &batch {
                                let object = describe(entry);
                                tracing::error!(sink = %name, %object, error = %err, "entry failed for good");
                            }
                        }
                        // The next write runs in a fresh instance.
                        self.instance.invalidate();
                        self.pause(delay).await;
                        break;
                    }
                }
            }
        }
    }
}
