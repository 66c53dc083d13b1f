//! Catch-up and reconciliation: asking sinks what they hold (within
//! [`HeldLimits`]) to deliver tombstones for objects deleted while nobody
//! watched, and a lagging sink's catch-up from a fresh listing
//! ([`super::lag`]).

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use kubesink_normalize::record::{Entry, RecordKind, Timestamp};
use tokio::sync::{mpsc, oneshot};

use super::Pipeline;
use super::entry::{to_configured, tombstone};
use super::lag::LagState;
use super::lanes::{Control, Reconciling, SinkHandle};
use super::queue::{self, Pushed};

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

impl HeldLimits {
    /// From the configuration's `held:` (defaults where it says nothing).
    pub fn of(held: &crate::config::HeldConfig) -> Self {
        let d = Self::default();
        Self {
            deadline: held.deadline.unwrap_or(d.deadline),
            max_uids: held.max_uids.unwrap_or(d.max_uids),
            max_bytes: held.max_bytes.map_or(d.max_bytes, |b| b.bytes()),
        }
    }
}

/// Where catch-up requests go: the name of each sink that starts catching
/// up ([`Pipeline::enable_catch_up`]).
#[derive(Debug, Default)]
pub(super) struct CatchUps {
    /// Set once a source took catch-up requests: sinks may fall behind.
    enabled: AtomicBool,
    to: std::sync::Mutex<Option<mpsc::UnboundedSender<String>>>,
}

impl CatchUps {
    pub(super) fn enabled(&self) -> bool {
        self.enabled.load(Ordering::Acquire)
    }

    /// Asks the source for a catch-up of `sink`; false when no source
    /// takes requests (any more).
    pub(super) fn request(&self, sink: &str) -> bool {
        self.to
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .is_some_and(|tx| tx.send(sink.to_owned()).is_ok())
    }
}

pub(super) type CatchUpLink = Arc<CatchUps>;

impl Pipeline {
    /// Bounds on asking sinks what they hold (default [`HeldLimits`]).
    pub(crate) fn set_held_limits(&mut self, limits: HeldLimits) {
        self.held_limits = limits;
    }

    /// Lets sinks fall behind (see [`super::lag`]): from now on a sink
    /// whose queue is full while another sink takes the entry is not waited
    /// for, and the returned receiver gets the name of each sink that needs
    /// a catch-up (a fresh listing for it alone, through
    /// [`send_to`](Self::send_to), then
    /// [`reconcile_sink`](Self::reconcile_sink) and
    /// [`caught_up`](Self::caught_up)). Only a source that can list again
    /// calls this (the live watch); without it every sink paces the source
    /// (replay). A later call (a new source: the watches restarted)
    /// replaces the receiver, and sinks whose catch-up was left unfinished
    /// by the previous source start it again.
    pub(crate) fn enable_catch_up(&self) -> mpsc::UnboundedReceiver<String> {
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

    /// Queues `entry` for sink `name` alone (a catch-up's listing), waiting
    /// while its queue is full. Returns false, not queueing it, once the
    /// sink is no longer catching up (it fell behind again: the catch-up
    /// is abandoned and starts over later).
    pub(crate) async fn send_to(&self, name: &str, entry: Entry) -> bool {
        let Some(sink) = self.sink(name) else {
            return false;
        };
        if sink.covers(&entry) {
            // Delivered before it fell behind.
            return true;
        }
        let queue = &sink.lane(&entry).queue;
        let mark = sink.mark(&entry);
        let mut entry = entry;
        loop {
            // Both registered before looking, so that neither room made
            // nor a change of state in between is missed.
            let room = queue.room();
            let changed = sink.lag.changed();
            if sink.lag.state() != LagState::CatchingUp {
                return false;
            }
            match queue.try_push(entry, 0) {
                Ok(pushed) => {
                    Self::count(sink, pushed, mark);
                    return pushed != Pushed::Closed;
                }
                Err(back) => entry = back,
            }
            tokio::select! {
                () = room => {}
                () = changed => {}
            }
        }
    }

    /// The end of sink `name`'s catch-up: `ok` again unless it fell behind
    /// meanwhile. Returns whether it is `ok`.
    pub(crate) fn caught_up(&self, name: &str) -> bool {
        let Some(sink) = self.sink(name) else {
            return false;
        };
        let ok = sink.lag.caught_up();
        if let Some(frontiers) = sink.frontiers.as_ref().filter(|_| ok) {
            frontiers.resume();
        }
        if ok {
            tracing::info!(sink = %name, skipped = sink.lag.skipped(), "sink caught up");
        }
        ok
    }

    /// After a complete listing of `kind` (`listed`: the uids the cluster
    /// has), delivers a `removed` tombstone to every sink for each uid it
    /// holds that the cluster no longer has (deleted while kubesink was not
    /// watching).
    ///
    /// Each sink is asked at once, before this returns, to deliver what is
    /// queued for it up to now and then say what it holds; the returned
    /// future waits for the answers (each within the [`HeldLimits`]) and
    /// queues the tombstones. The caller spawns it, so that a sink slow to
    /// answer holds back no watch and no other sink. An object created
    /// after the listing is never taken for deleted: each worker answers
    /// after delivering what was queued to it before this call, and what is
    /// queued to the sink from this call on is noted and spared (another
    /// worker may deliver it before one answers from a shared store). A
    /// lagging or catching-up sink is skipped (its catch-up reconciles
    /// it); a sink that cannot answer is logged and falls behind (its
    /// catch-up reconciles it). The future returns how many tombstones were
    /// queued.
    pub(crate) fn reconcile(
        self: &Arc<Self>,
        kind: RecordKind,
        listed: HashSet<String>,
        at: Timestamp,
    ) -> impl std::future::Future<Output = usize> + Send + 'static {
        let record_kind = to_configured(kind);
        let lagging = self.catch_up.enabled();
        let asked: Vec<(usize, Reconciling, Asked)> = self
            .sinks
            .iter()
            .enumerate()
            .filter(|(_, s)| s.records.contains(&record_kind))
            .filter(|(_, s)| {
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
            // Noting what is queued from now on, before asking.
            .map(|(i, s)| (i, s.recent.begin(), Self::ask_held(s, kind, true)))
            .collect();
        let code = queue::kind_code(kind);
        let pipeline = self.clone();
        async move {
            let answers = asked.into_iter().map(|(i, recent, asked)| {
                let pipeline = &pipeline;
                async move {
                    let sink = &pipeline.sinks[i];
                    (sink, recent, pipeline.held_answers(sink, kind, asked).await)
                }
            });
            let answers = futures_util::future::join_all(answers).await;
            let mut sent = 0;
            for (sink, recent, answer) in answers {
                match answer {
                    Ok(held) => {
                        // Neither listed nor queued since: deleted. (One
                        // worker's answer can hold what another delivered
                        // after the listing; see `Recent`.)
                        let gone = held
                            .into_iter()
                            .filter(|u| !listed.contains(u) && !recent.queued_since(code, u));
                        for uid in gone {
                            let entry = tombstone(kind, uid, at);
                            match sink.lane(&entry).queue.try_push(entry, 0) {
                                Ok(pushed) => {
                                    Self::count(sink, pushed, None);
                                    sent += 1;
                                }
                                Err(entry) if !pipeline.catch_up.enabled() => {
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
    }

    /// A catch-up's reconciliation of sink `name` alone: a tombstone for
    /// each uid of `kind` it holds that is neither in `listed` (the
    /// catch-up's listing) nor queued live since the catch-up started.
    /// Returns how many were queued, or why the sink could not be asked.
    pub(crate) async fn reconcile_sink(
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
        let asked = Self::ask_held(sink, kind, false);
        self.held_answers(sink, kind, asked).await
    }

    /// Asks each worker of `sink` what it holds of `kind`, after delivering
    /// what is queued for it: up to now (`up_to_now`), or whatever is
    /// queued when the worker takes the request.
    fn ask_held(sink: &SinkHandle, kind: RecordKind, up_to_now: bool) -> Asked {
        let mut answers = Vec::with_capacity(sink.lanes.len());
        for lane in &sink.lanes {
            let (reply, answer) = oneshot::channel();
            let before = if up_to_now {
                lane.queue.position()
            } else {
                u64::MAX
            };
            lane.control
                .try_send(Control::Held {
                    kind,
                    before,
                    reply,
                })
                .map_err(|e| match e {
                    mpsc::error::TrySendError::Full(_) => Some(format!(
                        "sink '{}' has not answered earlier requests yet (a write is being retried)",
                        sink.name
                    )),
                    mpsc::error::TrySendError::Closed(_) => None,
                })?;
            answers.push(answer);
        }
        Ok(answers)
    }

    /// Waits for and joins the answers of [`ask_held`](Self::ask_held),
    /// within the [`HeldLimits`]. The deadline does not run out while no
    /// module of the sink was ever loaded (a ConfigMap module not there
    /// yet): its requests wait for the module, and nobody waits for them.
    async fn held_answers(
        &self,
        sink: &SinkHandle,
        kind: RecordKind,
        asked: Asked,
    ) -> Result<Vec<String>, Option<String>> {
        let limits = self.held_limits;
        let answers = asked?;
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
        let mut joined = std::pin::pin!(joined);
        loop {
            match tokio::time::timeout(limits.deadline, &mut joined).await {
                Ok(answer) => return answer,
                Err(_) if !sink.lag.is_started() => {}
                Err(_) => {
                    return Err(Some(format!(
                        "sink '{}' did not deliver its queue and answer what it holds within {:?}",
                        sink.name, limits.deadline
                    )));
                }
            }
        }
    }
}

/// The pending answers of each worker of a sink to a `held` request, or
/// why it could not be asked (`None`: the sink is stopping).
type Asked = Result<Vec<oneshot::Receiver<Result<Vec<String>, String>>>, Option<String>>;
