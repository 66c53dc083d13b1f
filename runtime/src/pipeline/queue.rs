//! The bounded queue in front of one sink.
//!
//! Pushing waits while the queue is full: nothing is ever dropped, and the
//! wait is the backpressure that slows reading from the source. With
//! *coalescing* (the default for state sinks such as mysql), a newer update
//! of an object that is still waiting replaces the older one in place, so a
//! slow state sink's queue holds at most one entry per object and fills up
//! only when more distinct objects are pending than its capacity.
//!
//! "Newer" is decided by [`supersedes`]: a removal beats any update, and
//! between two updates the higher `resource-version-num` wins, not the one
//! that arrived last (a stale update arriving late is dropped).

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use kubesink_normalize::record::{Change, Entry};
use tokio::sync::Notify;
use tokio::sync::futures::Notified;

/// Identity of an entry's object: record kind and uid.
fn object(entry: &Entry) -> (u8, &str) {
    (kind_code(entry.kind()), entry.uid())
}

/// Identity of an entry's object: the code of its kind (as
/// [`kind_code`]) and its uid.
pub fn object_of(entry: &Entry) -> (u8, &str) {
    object(entry)
}

/// The code of a record kind in [`object_of`].
pub fn kind_code(kind: kubesink_normalize::record::RecordKind) -> u8 {
    use kubesink_normalize::record::RecordKind;
    match kind {
        RecordKind::Job => 0,
        RecordKind::Pod => 1,
        RecordKind::Event => 2,
    }
}

/// Identity of a queued entry for coalescing.
fn key(entry: &Entry) -> (u8, String) {
    let (kind, uid) = object(entry);
    (kind, uid.to_owned())
}

/// Whether `incoming` should replace `queued`, an entry of the same object
/// still waiting:
/// - a removal (a watch `DELETED` or a reconciliation tombstone) wins over
///   any update: a deleted object never comes back under its uid, so an
///   update arriving after its removal is stale;
/// - between two updates, or two removals, the higher resource version
///   wins; equal versions go to the one that arrived last;
/// - a version of 0 (missing or not a number) cannot be compared: between
///   updates the one that arrived last wins;
/// - a tombstone (no version, no fields) never replaces a removal that
///   carries the object's final fields.
pub fn supersedes(incoming: &Entry, queued: &Entry) -> bool {
    let rv = Entry::resource_version_num;
    match (queued.is_removal(), incoming.is_removal()) {
        (false, true) => true,
        (true, false) => false,
        (true, true) => match (queued, incoming) {
            (Change::Removed(_), Change::Tombstone(_)) => false,
            _ => rv(incoming) >= rv(queued),
        },
        (false, false) => rv(incoming) == 0 || rv(queued) == 0 || rv(incoming) >= rv(queued),
    }
}

/// Which of `lanes` queues takes `entry`: the same for every update of one
/// object (kind and uid), spread evenly over objects.
pub fn lane_of(entry: &Entry, lanes: usize) -> usize {
    use std::hash::{Hash as _, Hasher as _};
    if lanes <= 1 {
        return 0;
    }
    // `DefaultHasher::new` hashes alike in every instance of the process.
    let mut h = std::hash::DefaultHasher::new();
    object(entry).hash(&mut h);
    (h.finish() % lanes as u64) as usize
}

#[derive(Default)]
struct State {
    next_seq: u64,
    /// Entries with when they were queued (kept when coalesced: the object
    /// has waited since then).
    items: BTreeMap<u64, (Instant, Entry)>,
    index: HashMap<(u8, String), u64>,
    closed: bool,
    /// While the worker waits for a batch to fill: its size. A push wakes
    /// the worker only once the batch is full, not for every entry (at a
    /// low rate that was a thread wake-up per event).
    filling: Option<usize>,
}

/// A bounded, optionally coalescing FIFO of entries.
pub struct SinkQueue {
    state: Mutex<State>,
    capacity: usize,
    coalesce: bool,
    not_empty: Notify,
    not_full: Notify,
    /// Woken by [`close`](SinkQueue::close).
    closing: Notify,
}

/// What [`SinkQueue::push`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pushed {
    /// Appended.
    Queued,
    /// Replaced an older update of the same object still waiting.
    Coalesced,
    /// Dropped: a newer update (or the removal) of the same object is
    /// still waiting ([`supersedes`]).
    Stale,
    /// The queue is closed; the entry was not taken.
    Closed,
}

impl std::fmt::Debug for SinkQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SinkQueue")
            .field("len", &self.len())
            .field("capacity", &self.capacity)
            .field("coalesce", &self.coalesce)
            .finish()
    }
}

impl SinkQueue {
    /// A queue holding at most `capacity` entries.
    pub fn new(capacity: usize, coalesce: bool) -> Self {
        Self {
            state: Mutex::new(State::default()),
            capacity: capacity.max(1),
            coalesce,
            not_empty: Notify::new(),
            not_full: Notify::new(),
            closing: Notify::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding this lock leaves no broken invariant worth
        // refusing to go on for: take the state as it is.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Entries waiting.
    pub fn len(&self) -> usize {
        self.lock().items.len()
    }

    /// True when nothing waits.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// True once [`close`](Self::close) was called.
    pub fn is_closed(&self) -> bool {
        self.lock().closed
    }

    /// Resolves once the queue is closed.
    pub async fn closed(&self) {
        loop {
            // Registered before looking, so that no close is missed.
            let closing = self.closing.notified();
            if self.is_closed() {
                return;
            }
            closing.await;
        }
    }

    /// When the entry waiting longest was queued.
    pub fn oldest(&self) -> Option<Instant> {
        self.lock().items.first_key_value().map(|(_, (at, _))| *at)
    }

    /// Resolves after the next batch is taken (room may have been made).
    /// Create it before [`try_push`](Self::try_push) so that no wake-up is
    /// missed in between.
    pub fn room(&self) -> Notified<'_> {
        self.not_full.notified()
    }

    /// Adds an entry, waiting while the queue is full.
    pub async fn push(&self, entry: Entry) -> Pushed {
        let mut entry = entry;
        loop {
            let notified = self.not_full.notified();
            match self.try_push(entry, 0) {
                Ok(pushed) => return pushed,
                Err(back) => entry = back,
            }
            notified.await;
        }
    }

    /// Adds an entry without waiting: coalesced with a waiting entry of the
    /// same object, or appended while fewer than capacity plus `extra`
    /// entries wait. `Err` gives the entry back when the queue is full.
    // The entry is handed back whole (not boxed): the caller retries it,
    // and a full queue is the rare path.
    #[allow(clippy::result_large_err)]
    pub fn try_push(&self, entry: Entry, extra: usize) -> Result<Pushed, Entry> {
        let mut s = self.lock();
        if s.closed {
            return Ok(Pushed::Closed);
        }
        let k = self.coalesce.then(|| key(&entry));
        if let Some(k) = &k
            && let Some(seq) = s.index.get(k).copied()
            && let Some((_, slot)) = s.items.get_mut(&seq)
        {
            if supersedes(&entry, slot) {
                *slot = entry;
                return Ok(Pushed::Coalesced);
            }
            return Ok(Pushed::Stale);
        }
        if s.items.len() >= self.capacity.saturating_add(extra) {
            return Err(entry);
        }
        let seq = s.next_seq;
        s.next_seq += 1;
        s.items.insert(seq, (Instant::now(), entry));
        if let Some(k) = k {
            s.index.insert(k, seq);
        }
        let wake = s.filling.is_none_or(|full| s.items.len() >= full);
        drop(s);
        if wake {
            self.not_empty.notify_one();
        }
        Ok(Pushed::Queued)
    }

    /// Takes the next batch: waits for a first entry, then up to `max_delay`
    /// for the batch to reach `max_records`. Returns `None` once the queue
    /// is closed and empty.
    pub async fn next_batch(&self, max_records: usize, max_delay: Duration) -> Option<Vec<Entry>> {
        let max_records = max_records.max(1);
        // Only the worker takes entries, so what it waited for is still
        // there; the loop only guards that.
        loop {
            // Wait for the first entry.
            loop {
                let notified = self.not_empty.notified();
                {
                    let mut s = self.lock();
                    s.filling = None;
                    if !s.items.is_empty() {
                        break;
                    }
                    if s.closed {
                        return None;
                    }
                }
                notified.await;
            }
            // Let the batch fill, unless it is full or the queue is closing.
            let deadline = tokio::time::Instant::now() + max_delay;
            loop {
                let notified = self.not_empty.notified();
                {
                    let mut s = self.lock();
                    if s.items.len() >= max_records || s.closed {
                        s.filling = None;
                        break;
                    }
                    s.filling = Some(max_records);
                }
                if tokio::time::timeout_at(deadline, notified).await.is_err() {
                    self.lock().filling = None;
                    break;
                }
            }
            if let Some(batch) = self.take(max_records, u64::MAX) {
                return Some(batch);
            }
        }
    }

    /// Where the queue ends now: [`take`](Self::take) with it as `before`
    /// takes only entries queued until this moment (an entry coalesced
    /// into one of them later included).
    pub fn position(&self) -> u64 {
        self.lock().next_seq
    }

    /// Takes, without waiting, up to `max_records` of the entries queued
    /// before [`position`](Self::position) `before`; `None` when there is
    /// none.
    pub fn take(&self, max_records: usize, before: u64) -> Option<Vec<Entry>> {
        let mut s = self.lock();
        let mut batch = Vec::new();
        while batch.len() < max_records.max(1) {
            if s.items
                .first_key_value()
                .is_none_or(|(&seq, _)| seq >= before)
            {
                break;
            }
            let Some((seq, (_, entry))) = s.items.pop_first() else {
                break;
            };
            if self.coalesce {
                let k = key(&entry);
                if s.index.get(&k) == Some(&seq) {
                    s.index.remove(&k);
                }
            }
            batch.push(entry);
        }
        drop(s);
        if batch.is_empty() {
            return None;
        }
        self.not_full.notify_waiters();
        Some(batch)
    }

    /// No more pushes; `next_batch` drains what is left, then returns `None`.
    pub fn close(&self) {
        self.lock().closed = true;
        self.not_empty.notify_waiters();
        self.not_full.notify_waiters();
        self.closing.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kubesink_normalize::record::{Event, Meta, ObjectRef, Record, RecordKind, Timestamp};
    use std::sync::Arc;

    fn event(uid: &str, count: u32) -> Entry {
        let ts = Timestamp {
            seconds: 0,
            nanos: 0,
        };
        Change::Applied(Record::Event(Event {
            meta: Meta {
                uid: uid.into(),
                name: uid.into(),
                namespace: "ns".into(),
                resource_version: count.to_string(),
                resource_version_num: count.into(),
                labels: vec![],
                created: ts,
            },
            involved: ObjectRef {
                api_version: "v1".into(),
                kind: "Pod".into(),
                namespace: "ns".into(),
                name: "p".into(),
                uid: "u".into(),
            },
            event_type: "Normal".into(),
            reason: "R".into(),
            message: "m".into(),
            source: "s".into(),
            count,
            first_seen: ts,
            last_seen: ts,
            region: String::new(),
        }))
    }

    /// The event's count; 0 for a tombstone.
    fn count(e: &Entry) -> u32 {
        match e.record() {
            Some(Record::Event(e)) => e.count,
            _ => 0,
        }
    }

    #[tokio::test]
    async fn coalesces_in_place_and_keeps_order() {
        let q = SinkQueue::new(10, true);
        assert_eq!(q.push(event("a", 1)).await, Pushed::Queued);
        assert_eq!(q.push(event("b", 1)).await, Pushed::Queued);
        assert_eq!(q.push(event("a", 2)).await, Pushed::Coalesced);
        let batch = q.next_batch(10, Duration::ZERO).await.unwrap();
        assert_eq!(batch.len(), 2);
        assert_eq!(
            count(&batch[0]),
            2,
            "a keeps its place with its newest state"
        );
        // After a batch is taken, a new update of `a` is queued again.
        assert_eq!(q.push(event("a", 3)).await, Pushed::Queued);
    }

    const AT: Timestamp = Timestamp {
        seconds: 1,
        nanos: 0,
    };

    fn removed(e: Entry) -> Entry {
        match e {
            Change::Applied(r) => Change::removed(r, AT),
            other => other,
        }
    }

    fn tombstone(uid: &str) -> Entry {
        Change::tombstone(RecordKind::Event, uid.into(), AT)
    }

    /// Drains a closed queue: (count, removed) of every entry, in order.
    async fn drain(q: &SinkQueue) -> Vec<(u32, bool)> {
        q.close();
        let mut out = Vec::new();
        while let Some(b) = q.next_batch(100, Duration::ZERO).await {
            out.extend(b.iter().map(|e| (count(e), e.is_removal())));
        }
        out
    }

    #[tokio::test]
    async fn the_higher_resource_version_wins_not_the_last_arrival() {
        let q = SinkQueue::new(10, true);
        assert_eq!(q.push(event("a", 7)).await, Pushed::Queued);
        // A stale update arriving late is dropped ...
        assert_eq!(q.push(event("a", 5)).await, Pushed::Stale);
        // ... a newer (or the same) version replaces it in place.
        assert_eq!(q.push(event("a", 9)).await, Pushed::Coalesced);
        assert_eq!(q.push(event("a", 9)).await, Pushed::Coalesced);
        assert_eq!(q.push(event("a", 8)).await, Pushed::Stale);
        assert_eq!(drain(&q).await, vec![(9, false)]);
    }

    #[tokio::test]
    async fn without_comparable_versions_the_last_arrival_wins() {
        // `event(_, 0)` has resource-version-num 0: missing or not a number.
        let q = SinkQueue::new(10, true);
        q.push(event("a", 7)).await;
        assert_eq!(q.push(event("a", 0)).await, Pushed::Coalesced);
        assert_eq!(q.push(event("a", 3)).await, Pushed::Coalesced);
        assert_eq!(drain(&q).await, vec![(3, false)]);
    }

    #[tokio::test]
    async fn a_removal_wins_over_any_update_and_tombstones_keep_final_fields() {
        let q = SinkQueue::new(10, true);
        q.push(event("a", 7)).await;
        // A tombstone (no version) still replaces the update; an update
        // after it is stale.
        assert_eq!(q.push(tombstone("a")).await, Pushed::Coalesced);
        assert_eq!(q.push(event("a", 9)).await, Pushed::Stale);
        // The watch's DELETED, carrying the final fields, replaces the
        // tombstone; a tombstone does not replace it back.
        assert_eq!(q.push(removed(event("a", 10))).await, Pushed::Coalesced);
        assert_eq!(q.push(tombstone("a")).await, Pushed::Stale);
        // A removal with a lower version replaces an update too.
        q.push(event("b", 2)).await;
        assert_eq!(q.push(removed(event("b", 1))).await, Pushed::Coalesced);
        // A tombstone alone stays one.
        q.push(tombstone("c")).await;
        assert_eq!(drain(&q).await, vec![(10, true), (1, true), (0, true)]);
    }

    #[tokio::test]
    async fn without_coalescing_every_update_is_kept() {
        let q = SinkQueue::new(10, false);
        q.push(event("a", 1)).await;
        q.push(event("a", 2)).await;
        let batch = q.next_batch(10, Duration::ZERO).await.unwrap();
        assert_eq!(batch.iter().map(count).collect::<Vec<_>>(), vec![1, 2]);
    }

    #[tokio::test(start_paused = true)]
    async fn full_queue_waits_instead_of_dropping() {
        let q = Arc::new(SinkQueue::new(2, false));
        q.push(event("a", 1)).await;
        q.push(event("b", 1)).await;
        let q2 = q.clone();
        let pusher = tokio::spawn(async move { q2.push(event("c", 1)).await });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!pusher.is_finished(), "push must wait while full");
        let first = q.next_batch(1, Duration::ZERO).await.unwrap();
        assert_eq!(first.len(), 1);
        assert_eq!(pusher.await.unwrap(), Pushed::Queued);
        q.close();
        let mut rest = Vec::new();
        while let Some(b) = q.next_batch(10, Duration::ZERO).await {
            rest.extend(b);
        }
        assert_eq!(rest.len(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn batch_waits_for_delay_to_fill() {
        let q = Arc::new(SinkQueue::new(100, false));
        q.push(event("a", 1)).await;
        let q2 = q.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(20)).await;
            q2.push(event("b", 1)).await;
        });
        let batch = q.next_batch(2, Duration::from_secs(5)).await.unwrap();
        assert_eq!(batch.len(), 2, "second entry arrives within the delay");
    }

    /// At a low rate, entries trickle in while the worker waits for its
    /// batch to fill: they must not wake it one by one.
    #[tokio::test(start_paused = true)]
    async fn a_filling_batch_wakes_the_worker_only_once_full() {
        struct Wakes(std::sync::atomic::AtomicUsize);
        impl futures_util::task::ArcWake for Wakes {
            fn wake_by_ref(this: &Arc<Self>) {
                this.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
        }
        let wakes = Arc::new(Wakes(Default::default()));
        let count = || wakes.0.load(std::sync::atomic::Ordering::SeqCst);
        let waker = futures_util::task::waker(wakes.clone());
        let mut cx = std::task::Context::from_waker(&waker);
        let q = SinkQueue::new(100, false);
        q.push(event("a", 1)).await;
        let mut batch = std::pin::pin!(q.next_batch(3, Duration::from_secs(5)));
        assert!(batch.as_mut().poll(&mut cx).is_pending());
        assert_eq!(q.try_push(event("b", 1), 0).ok(), Some(Pushed::Queued));
        assert_eq!(
            count(),
            0,
            "an entry short of a full batch does not wake the worker"
        );
        assert_eq!(q.try_push(event("c", 1), 0).ok(), Some(Pushed::Queued));
        assert_eq!(count(), 1, "the entry that fills the batch does");
        match batch.as_mut().poll(&mut cx) {
            std::task::Poll::Ready(Some(b)) => assert_eq!(b.len(), 3),
            other => panic!("{other:?}"),
        }
        // Waiting for a first entry again: the next one wakes it at once.
        let mut next = std::pin::pin!(q.next_batch(3, Duration::from_secs(5)));
        assert!(next.as_mut().poll(&mut cx).is_pending());
        assert_eq!(q.try_push(event("d", 1), 0).ok(), Some(Pushed::Queued));
        assert_eq!(count(), 2, "the first entry wakes a waiting worker");
    }

    #[tokio::test]
    async fn closed_queue_refuses_pushes_and_ends() {
        let q = SinkQueue::new(4, true);
        q.close();
        assert_eq!(q.push(event("a", 1)).await, Pushed::Closed);
        assert!(q.next_batch(1, Duration::ZERO).await.is_none());
    }

    #[test]
    fn lanes_keep_an_object_together_and_spread_objects() {
        assert_eq!(lane_of(&event("a", 1), 1), 0);
        for uid in ["a", "b", "c"] {
            let lane = lane_of(&event(uid, 1), 4);
            assert_eq!(lane, lane_of(&event(uid, 9), 4), "{uid}");
        }
        let mut per_lane = [0usize; 4];
        for i in 0..4000 {
            per_lane[lane_of(&event(&format!("uid-{i}"), 1), 4)] += 1;
        }
        assert!(
            per_lane.iter().all(|&n| (800..1200).contains(&n)),
            "{per_lane:?}"
        );
    }
}
