//! A sink's lanes — one bounded queue and one worker each — how entries are
//! routed into them ([`Pipeline::send`]), and how a new module version is
//! handed to their workers ([`ModuleSlot::swap`]).

use std::sync::Arc;
use std::sync::atomic::Ordering;

use kubesink_host::SinkInstance;
use kubesink_normalize::record::{Entry, RecordKind};
use thiserror::Error;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use super::frontier::{Frontiers, resource_of};
use super::instance::Instance;
use super::lag::{LagState, SinkLag};
use super::queue::{self, Pushed, SinkQueue};
use super::stats::DeliveryCounters;
use super::worker::{SinkContext, Worker};
use super::{Pipeline, entry};
use crate::config;

/// Requests a worker answers between batches.
pub(super) enum Control {
    /// Deliver what was queued before queue position `before` (`u64::MAX`:
    /// everything queued when the request is taken), then ask the sink
    /// what it holds.
    Held {
        kind: RecordKind,
        before: u64,
        reply: oneshot::Sender<Result<Vec<String>, String>>,
    },
}

impl std::fmt::Debug for Control {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Control::Held { kind, .. } => write!(f, "Held({kind:?})"),
        }
    }
}

/// A new instance for a sink (a new module version, compiled and
/// initialized), taken between batches, or during a retry's backoff (the
/// batch is then redelivered to the new instance).
pub(super) struct Swap<S = SinkInstance> {
    pub(super) instance: S,
    pub(super) reply: oneshot::Sender<()>,
}

/// Replaces the instances of one running sink; see [`Pipeline::module_slot`].
#[derive(Debug, Clone)]
pub struct ModuleSlot {
    pub(super) name: String,
    /// One per worker.
    pub(super) swaps: Vec<mpsc::Sender<Swap>>,
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

/// One worker of a sink: its queue, its task (which owns its instance),
/// and how to reach it.
pub(super) struct Lane {
    pub(super) control: mpsc::Sender<Control>,
    pub(super) swaps: mpsc::Sender<Swap>,
    pub(super) queue: Arc<SinkQueue>,
    pub(super) worker: JoinHandle<()>,
    /// Closed when the worker's task ends, however it ends (delivered its
    /// queue, aborted, panicked): nothing is ever sent on it.
    pub(super) done: watch::Receiver<()>,
}

impl Lane {
    /// Starts a worker on `queue`: with `instance`, or without one (its
    /// module comes from a ConfigMap) waiting for the first swapped in
    /// through `swaps_rx`. `swaps` is the lane's end for [`ModuleSlot`].
    pub(super) fn spawn<S: Instance>(
        instance: Option<S>,
        queue: Arc<SinkQueue>,
        sink: SinkContext,
        (swaps, swaps_rx): (mpsc::Sender<Swap>, mpsc::Receiver<Swap<S>>),
    ) -> Lane {
        let (control, control_rx) = mpsc::channel(4);
        let (done_tx, done) = watch::channel(());
        let task = {
            let queue = queue.clone();
            async move {
                // Dropped with the task, closing `done`.
                let _done = done_tx;
                match instance {
                    None => {
                        Worker::wait_for_module(queue, sink, control_rx, swaps_rx).await;
                    }
                    Some(instance) => {
                        Worker {
                            instance,
                            queue,
                            sink,
                            swaps: swaps_rx,
                        }
                        .run(control_rx)
                        .await;
                    }
                }
            }
        };
        Lane {
            control,
            swaps,
            queue,
            worker: tokio::spawn(task),
            done,
        }
    }

    /// Whether the worker's task has ended.
    fn stopped(&self) -> bool {
        self.done.has_changed().is_err()
    }
}

pub(super) struct SinkHandle {
    pub(super) name: String,
    pub(super) records: Vec<config::RecordKind>,
    pub(super) counters: Arc<DeliveryCounters>,
    pub(super) lag: Arc<SinkLag>,
    /// Headroom above a queue's capacity for live entries while catching up.
    pub(super) headroom: usize,
    /// `workers` lanes; an object's entries always go to the same one.
    pub(super) lanes: Vec<Lane>,
    /// Its delivery frontiers, when it keeps a checkpoint.
    pub(super) frontiers: Option<Arc<Frontiers>>,
    /// The objects queued to it while a reconciliation waits for its
    /// answers.
    pub(super) recent: Arc<Recent>,
}

/// The objects queued to a sink while at least one reconciliation of it
/// is under way ([`Recent::begin`] until its [`Reconciling`] is dropped).
///
/// A reconciliation takes for deleted each uid the sink holds that the
/// listing lacks. The sink's workers deliver concurrently, and one
/// worker's answer can hold an object another worker delivered after the
/// listing (a job created just then). Such an object was queued after the
/// reconciliation began, so it is here, and it is not taken for deleted:
/// a tombstone would mark a live object removed, and no later update
/// revives a removed row.
#[derive(Debug, Default)]
pub(super) struct Recent {
    /// Reconciliations under way: noting costs nothing while there are none.
    active: std::sync::atomic::AtomicUsize,
    uids: std::sync::Mutex<std::collections::HashSet<(u8, String)>>,
}

/// One reconciliation under way ([`Recent::begin`]); the set is emptied
/// when the last one ends (and when the next first one begins).
pub(super) struct Reconciling(Arc<Recent>);

impl Recent {
    fn lock(&self) -> std::sync::MutexGuard<'_, std::collections::HashSet<(u8, String)>> {
        self.uids.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// From now on, until the guard is dropped, every entry queued is
    /// noted. Called before the sink is asked what it holds (for jobs under
    /// the job watchers' gate, for the other kinds in the watcher that
    /// queues them), so that an entry queued after the listing is noted
    /// before it can be delivered.
    pub(super) fn begin(self: &Arc<Self>) -> Reconciling {
        {
            let mut uids = self.lock();
            if self.active.fetch_add(1, Ordering::SeqCst) == 0 {
                // Noted after the last one ended (a race with its end).
                uids.clear();
            }
        }
        Reconciling(self.clone())
    }

    /// `entry` is about to be queued.
    pub(super) fn note(&self, entry: &Entry) {
        if self.active.load(Ordering::SeqCst) > 0 {
            let (kind, uid) = queue::object_of(entry);
            self.lock().insert((kind, uid.to_owned()));
        }
    }
}

impl Reconciling {
    /// Whether the object was queued since this reconciliation began.
    pub(super) fn queued_since(&self, kind: u8, uid: &str) -> bool {
        self.0.lock().contains(&(kind, uid.to_owned()))
    }
}

impl Drop for Reconciling {
    fn drop(&mut self) {
        let mut uids = self.0.lock();
        if self.0.active.fetch_sub(1, Ordering::SeqCst) == 1 {
            uids.clear();
            uids.shrink_to(64);
        }
    }
}

/// What a sink's frontier needs of an entry, taken before it is queued:
/// its resource and resourceVersion (`None` when the sink keeps no
/// checkpoint, or for a tombstone).
pub(super) type Mark = Option<(String, u64)>;

impl SinkHandle {
    /// Whether the sink's checkpoint says `entry` was delivered already.
    pub(super) fn covers(&self, entry: &Entry) -> bool {
        self.frontiers.as_ref().is_some_and(|f| f.covers(entry))
    }

    pub(super) fn mark(&self, entry: &Entry) -> Mark {
        self.frontiers.as_ref()?;
        Some((resource_of(entry)?.to_owned(), entry.resource_version_num()))
    }

    pub(super) fn lane(&self, entry: &Entry) -> &Lane {
        &self.lanes[queue::lane_of(entry, self.lanes.len())]
    }

    pub(super) fn queued(&self) -> usize {
        self.lanes.iter().map(|l| l.queue.len()).sum()
    }

    pub(super) fn close(&self) {
        for l in &self.lanes {
            l.queue.close();
        }
    }

    /// Whether every worker of the sink has ended.
    pub(super) fn finished(&self) -> bool {
        self.lanes.iter().all(Lane::stopped)
    }

    /// Resolves once every worker of the sink has ended.
    pub(super) async fn stopped(&self) {
        for l in &self.lanes {
            let mut done = l.done.clone();
            // Nothing is ever sent: `changed` returns when the task ends.
            while done.changed().await.is_ok() {}
        }
    }
}

impl Pipeline {
    /// Queues an entry for every sink that receives its kind.
    ///
    /// Until [`enable_catch_up`](Self::enable_catch_up), it waits while a
    /// queue is full (every sink paces the source). After it, it waits only
    /// while the queues of *all* its sinks that are not lagging are full:
    /// once one sink took the entry, a sink whose queue is still full falls
    /// behind ([`super::lag`]) instead of holding the others back, and
    /// lagging sinks are skipped until they catch up.
    pub async fn send(&self, entry: Entry) {
        let kind = entry::configured_kind(&entry);
        // A sink whose checkpoint covers the entry delivered it before (a
        // listing after a restart, a hand-over or a 410).
        let targets = self
            .sinks
            .iter()
            .filter(|s| s.records.contains(&kind) && !s.covers(&entry))
            .inspect(|s| s.recent.note(&entry));
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
                // A deletion is the last word on its object, and the
                // catch-up's listing will not have it: it is queued
                // (within the headroom) so that the sink still gets the
                // object's final state.
                if entry.is_removal() {
                    let mark = s.mark(&entry);
                    if let Ok(pushed) = s.lane(&entry).queue.try_push(entry.clone(), s.headroom) {
                        Self::count(s, pushed, mark);
                        continue;
                    }
                }
                s.lag.skip();
                s.counters.metrics.skipped.inc();
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
                let mark = s.mark(&entry);
                match s.lane(&entry).queue.try_push(entry.clone(), extra) {
                    Ok(pushed) => {
                        taken = true;
                        if pushed == Pushed::Queued && !entry.is_removal() {
                            let (k, uid) = queue::object_of(&entry);
                            s.lag.queued_live(k, uid);
                        }
                        Self::count(s, pushed, mark);
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

    /// Queues a batch of entries, in order, as [`send`](Self::send) does
    /// each: for a source that hands entries over in batches (the replay),
    /// one hand-off for many entries.
    pub async fn send_batch(&self, entries: Vec<Entry>) {
        for entry in entries {
            self.send(entry).await;
        }
    }

    /// Where a watch of `resource` can resume for the checkpointed sinks:
    /// the oldest of their frontiers (`None`: no checkpointed sink has one,
    /// the listing serves them all).
    pub(crate) fn resume_point(&self, resource: &str) -> Option<u64> {
        self.sinks
            .iter()
            .filter_map(|s| s.frontiers.as_ref()?.value(resource))
            .min()
    }

    /// Queues an entry of a watch resumed from the checkpoint for each
    /// checkpointed sink that receives its kind, has a frontier for its
    /// resource and did not deliver it yet; the others get the listing
    /// that follows. Waits while a queue is full.
    pub(crate) async fn send_resumed(&self, entry: Entry) {
        let kind = entry::configured_kind(&entry);
        let Some(resource) = resource_of(&entry) else {
            return;
        };
        for s in self.sinks.iter().filter(|s| s.records.contains(&kind)) {
            let Some(frontiers) = &s.frontiers else {
                continue;
            };
            if frontiers.value(resource).is_none() || frontiers.covers(&entry) {
                continue;
            }
            frontiers.resumed(&entry);
            Self::push(s, entry.clone()).await;
        }
    }

    /// `sink`'s queue was full while another sink took the entry.
    pub(super) fn fall_behind(sink: &SinkHandle) {
        sink.counters.metrics.skipped.inc();
        if sink.lag.fall_behind() {
            tracing::warn!(sink = %sink.name, queued = sink.queued(), "sink falls behind: its queue is full while the other sinks take records; it gets nothing more until it has delivered what is queued, then catches up from a fresh listing");
        }
    }

    /// Counts an entry offered to `sink` and, once queued, hands it to the
    /// sink's frontier (`mark`, taken before it was queued).
    pub(super) fn count(sink: &SinkHandle, pushed: Pushed, mark: Mark) {
        match pushed {
            Pushed::Queued => {
                sink.counters.received.fetch_add(1, Ordering::Relaxed);
                sink.counters.metrics.received.inc();
                if let (Some(frontiers), Some((resource, version))) = (&sink.frontiers, mark) {
                    frontiers.handed(&resource, version);
                }
            }
            // A stale update dropped counts as coalesced: the object's
            // newer entry, already waiting, stands for both.
            Pushed::Coalesced | Pushed::Stale => {
                sink.counters.coalesced.fetch_add(1, Ordering::Relaxed);
                sink.counters.metrics.coalesced.inc();
            }
            Pushed::Closed => {
                tracing::error!(sink = %sink.name, "queue closed; entry not taken");
            }
        }
    }

    pub(super) async fn push(sink: &SinkHandle, entry: Entry) {
        let mark = sink.mark(&entry);
        let pushed = sink.lane(&entry).queue.push(entry).await;
        Self::count(sink, pushed, mark);
    }

    /// The handle that swaps a new module into sink `name`, if it exists.
    pub fn module_slot(&self, name: &str) -> Option<ModuleSlot> {
        self.sink(name).map(|s| ModuleSlot {
            name: s.name.clone(),
            swaps: s.lanes.iter().map(|l| l.swaps.clone()).collect(),
        })
    }
}
