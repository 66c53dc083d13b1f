//! How far behind a sink is, and its catch-up.
//!
//! Once a source that can list again is attached
//! ([`super::Pipeline::enable_catch_up`]), the source is paced by the
//! fastest sink, not the slowest: an entry whose queue is full for one sink
//! while another sink took it is not waited for. That sink is then
//! **lagging**: nothing more is queued for it but deletions, within a
//! headroom above its capacity (the catch-up's listing will not have a
//! deleted object, so its final state would be lost); what is queued stays
//! and is delivered in order, and every entry it misses is counted as
//! skipped.
//! When its workers have emptied its queues (it delivers again), it asks
//! for a **catch-up**: the source lists every resource again for that sink
//! alone and reconciles the listing against what the sink holds, while live
//! entries are queued for it again (with headroom above its capacity, so
//! that the catch-up's own entries do not push it back to lagging). Once
//! the catch-up is delivered and reconciled the sink is **ok** again.
//!
//! A sink left alone by every other (all queues full) still paces the
//! source: with a single sink nothing is ever skipped.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::sync::{Mutex, Weak};
use std::time::{Duration, Instant};

use super::queue::SinkQueue;

/// Where a sink stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LagState {
    /// Receives every entry.
    Ok,
    /// Its queue was full while another sink took an entry: receives
    /// nothing until its queues are empty, then catches up.
    Lagging,
    /// Delivering a fresh listing (and live entries) after lagging.
    CatchingUp,
}

impl LagState {
    /// The state's name in metrics and messages.
    pub fn as_str(self) -> &'static str {
        match self {
            LagState::Ok => "ok",
            LagState::Lagging => "lagging",
            LagState::CatchingUp => "catching_up",
        }
    }

    /// Every state, for one-hot gauges.
    pub const ALL: [LagState; 3] = [LagState::Ok, LagState::Lagging, LagState::CatchingUp];

    fn from_u8(v: u8) -> Self {
        match v {
            1 => LagState::Lagging,
            2 => LagState::CatchingUp,
            _ => LagState::Ok,
        }
    }
}

/// The lag of one sink, shared by the pipeline's `send`, the sink's
/// workers, the catch-up and the metrics.
#[derive(Debug)]
pub struct SinkLag {
    name: String,
    state: AtomicU8,
    /// When the sink started to lag (kept while catching up).
    since: Mutex<Option<Instant>>,
    /// Entries not queued because the sink was lagging.
    skipped: AtomicU64,
    /// Objects (kind, uid) queued live while catching up: the catch-up's
    /// reconciliation must not take them for deleted.
    live: Mutex<HashSet<(u8, String)>>,
    queues: Mutex<Vec<Weak<SinkQueue>>>,
    /// A write of the sink failed and waits to be retried.
    retrying: AtomicBool,
    /// A module is loaded: the sink can answer (a ConfigMap module may be
    /// missing at first).
    started: AtomicBool,
    /// Woken when the sink starts lagging, so that an idle worker (its
    /// queue already empty) starts the catch-up.
    lagged: tokio::sync::Notify,
    /// Woken on every change of state.
    changed: tokio::sync::Notify,
}

impl SinkLag {
    /// An `ok` sink named `name`.
    pub fn new(name: &str) -> Self {
        Self {
            name: name.to_owned(),
            state: AtomicU8::new(0),
            since: Mutex::new(None),
            skipped: AtomicU64::new(0),
            live: Mutex::new(HashSet::new()),
            queues: Mutex::new(Vec::new()),
            retrying: AtomicBool::new(false),
            started: AtomicBool::new(false),
            lagged: tokio::sync::Notify::new(),
            changed: tokio::sync::Notify::new(),
        }
    }

    /// The sink's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The queues of the sink's workers (for its lag and for knowing when
    /// they are empty).
    pub fn set_queues(&self, queues: Vec<Weak<SinkQueue>>) {
        *self.queues.lock().unwrap_or_else(|e| e.into_inner()) = queues;
    }

    /// A write failed (`true`) or succeeded (`false`).
    pub fn set_retrying(&self, retrying: bool) {
        self.retrying.store(retrying, Ordering::Relaxed);
    }

    /// Whether the sink's last write failed and waits to be retried.
    pub fn retrying(&self) -> bool {
        self.retrying.load(Ordering::Relaxed)
    }

    /// A worker of the sink runs: its module is loaded.
    pub fn started(&self) {
        self.started.store(true, Ordering::Release);
    }

    /// Whether a module of the sink was ever loaded. Until then it holds
    /// nothing back by not answering `held`: what is queued for it waits.
    pub fn is_started(&self) -> bool {
        self.started.load(Ordering::Acquire)
    }

    /// The current state.
    pub fn state(&self) -> LagState {
        LagState::from_u8(self.state.load(Ordering::Acquire))
    }

    fn transition(&self, from: LagState, to: LagState) -> bool {
        let done = self
            .state
            .compare_exchange(from as u8, to as u8, Ordering::AcqRel, Ordering::Acquire)
            .is_ok();
        if done {
            self.changed.notify_waiters();
        }
        done
    }

    /// Resolves at the next change of state. Create it before looking at
    /// the state so that no change in between is missed.
    pub fn changed(&self) -> tokio::sync::futures::Notified<'_> {
        self.changed.notified()
    }

    /// The sink's queue was full while another sink took the entry: it lags
    /// from now on. Returns whether this is news (it was not lagging).
    pub fn fall_behind(&self) -> bool {
        self.skipped.fetch_add(1, Ordering::Relaxed);
        self.lag_behind()
    }

    /// The sink missed a reconciliation (it could not answer what it holds
    /// in time): it lags from now on, so that its catch-up reconciles it.
    /// Returns whether this is news.
    pub fn lag_behind(&self) -> bool {
        let news = self.transition(LagState::Ok, LagState::Lagging)
            || self.transition(LagState::CatchingUp, LagState::Lagging);
        if news {
            let mut since = self.since.lock().unwrap_or_else(|e| e.into_inner());
            since.get_or_insert_with(Instant::now);
            self.live.lock().unwrap_or_else(|e| e.into_inner()).clear();
            self.lagged.notify_waiters();
        }
        news
    }

    /// Resolves when the sink next starts lagging.
    pub fn lagged(&self) -> tokio::sync::futures::Notified<'_> {
        self.lagged.notified()
    }

    /// An entry not queued because the sink lags.
    pub fn skip(&self) {
        self.skipped.fetch_add(1, Ordering::Relaxed);
    }

    /// Entries skipped so far.
    pub fn skipped(&self) -> u64 {
        self.skipped.load(Ordering::Relaxed)
    }

    /// True when every queue of the sink is empty.
    pub fn drained(&self) -> bool {
        self.queues
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .all(|q| q.upgrade().is_none_or(|q| q.is_empty()))
    }

    /// A lagging sink whose queues are empty starts catching up; returns
    /// whether it did (the caller then asks the source for a listing).
    pub fn start_catch_up(&self) -> bool {
        if self.state() == LagState::Lagging && self.drained() {
            return self.transition(LagState::Lagging, LagState::CatchingUp);
        }
        false
    }

    /// Remembers an object queued live while catching up.
    pub fn queued_live(&self, kind: u8, uid: &str) {
        if self.state() == LagState::CatchingUp {
            self.live
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert((kind, uid.to_owned()));
        }
    }

    /// Whether the object was queued live since the catch-up started.
    pub fn was_queued_live(&self, kind: u8, uid: &str) -> bool {
        self.live
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(&(kind, uid.to_owned()))
    }

    /// The catch-up is delivered and reconciled: `ok` again, unless the
    /// sink fell behind meanwhile. Returns whether it is `ok`.
    pub(crate) fn caught_up(&self) -> bool {
        if self.transition(LagState::CatchingUp, LagState::Ok) {
            *self.since.lock().unwrap_or_else(|e| e.into_inner()) = None;
            self.live.lock().unwrap_or_else(|e| e.into_inner()).clear();
            return true;
        }
        false
    }

    /// A catch-up that failed (a listing or the reconciliation): lagging
    /// again, so that the next empty queue starts another one.
    pub fn catch_up_failed(&self) {
        if self.transition(LagState::CatchingUp, LagState::Lagging) {
            self.live.lock().unwrap_or_else(|e| e.into_inner()).clear();
        }
    }

    /// How far behind the sink is: since it started lagging (until caught
    /// up), or else how long its oldest queued entry has waited.
    pub fn lag(&self) -> Duration {
        let now = Instant::now();
        let since = *self.since.lock().unwrap_or_else(|e| e.into_inner());
        let oldest = self
            .queues
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter_map(|q| q.upgrade()?.oldest())
            .min();
        [since, oldest]
            .into_iter()
            .flatten()
            .min()
            .map_or(Duration::ZERO, |t| now.saturating_duration_since(t))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lagging_catching_up_and_back_to_ok() {
        let l = SinkLag::new("s");
        assert_eq!(l.state(), LagState::Ok);
        assert!(!l.start_catch_up(), "an ok sink does not catch up");
        assert!(l.fall_behind());
        assert!(!l.fall_behind(), "news once");
        l.skip();
        assert_eq!(l.skipped(), 3);
        assert_eq!(l.state(), LagState::Lagging);
        assert!(l.lag() < Duration::from_secs(5));
        // No queues: drained.
        assert!(l.start_catch_up());
        assert_eq!(l.state(), LagState::CatchingUp);
        l.queued_live(1, "u");
        assert!(l.was_queued_live(1, "u"));
        // Falling behind while catching up, then failing: lagging again.
        assert!(l.fall_behind());
        assert!(!l.was_queued_live(1, "u"), "forgotten with the catch-up");
        assert!(l.start_catch_up());
        assert!(l.caught_up());
        assert_eq!(l.state(), LagState::Ok);
        assert_eq!(l.lag(), Duration::ZERO);
        assert!(!l.caught_up());
        l.fall_behind();
        l.start_catch_up();
        l.catch_up_failed();
        assert_eq!(l.state(), LagState::Lagging);
    }
}
