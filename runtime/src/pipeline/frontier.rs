//! A sink's delivery frontier per resource: the highest resourceVersion
//! at or below which everything handed to the sink has been settled
//! (delivered, or recorded failed for good). It is what a durable
//! checkpoint keeps ([`crate::checkpoint`]): an object met again at or
//! below the frontier — in the listing after a restart, a leader hand-over
//! or a 410 — was delivered already and is not handed again.
//!
//! The frontier only moves while entries come in resourceVersion order: a
//! watch does, a listing does not. It is frozen while a resource is being
//! listed (the watch's initial listing and its relists) and while the sink
//! lags or catches up; once the listing is done it moves to just below the
//! oldest entry not yet settled (or to the newest handed, when all are).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use kubesink_normalize::record::{Entry, Record};

use super::lag::{LagState, SinkLag};

/// The resource of an entry for checkpoints: its Kubernetes kind (`Event`,
/// `Pod`, `Job`, `TFJob`, ...). `None` for entries without a version
/// (reconciliation's tombstones), which the frontier ignores.
pub fn resource_of(entry: &Entry) -> Option<&str> {
    match entry.record()? {
        Record::Job(j) => Some(j.kind.as_str()),
        Record::Pod(_) => Some("Pod"),
        Record::Event(_) => Some("Event"),
    }
}

#[derive(Debug, Default)]
struct Frontier {
    /// Everything handed at or below it is settled.
    value: Option<u64>,
    /// Handed, not settled: resourceVersion → entries.
    outstanding: BTreeMap<u64, usize>,
    /// The newest resourceVersion handed (or the loaded frontier).
    max_handed: u64,
    /// Being listed: entries come in no particular order.
    listing: bool,
    /// Objects handed by a watch resumed from the checkpoint, by uid, at
    /// their newest resourceVersion: the listing that follows does not
    /// hand them again (until it is done).
    resumed: HashMap<String, u64>,
}

impl Frontier {
    /// Moves the value up if nothing holds it; whether it moved.
    fn advance(&mut self, frozen: bool) -> bool {
        if frozen || self.listing {
            return false;
        }
        let next = match self.outstanding.first_key_value() {
            Some((&oldest, _)) => oldest.saturating_sub(1),
            None => self.max_handed,
        };
        if next > 0 && self.value.is_none_or(|v| next > v) {
            self.value = Some(next);
            true
        } else {
            false
        }
    }
}

/// The frontiers of one sink, per resource.
#[derive(Debug, Default)]
pub struct Frontiers {
    by_resource: Mutex<HashMap<String, Frontier>>,
    /// The sink's lag: the frontiers are frozen while it is not `ok`.
    lag: Option<Arc<SinkLag>>,
    /// Woken when a frontier moves.
    changed: tokio::sync::Notify,
}

impl Frontiers {
    /// The frontiers of the sink whose lag is `lag`, before any load.
    pub fn new(lag: Arc<SinkLag>) -> Self {
        Self {
            lag: Some(lag),
            ..Self::default()
        }
    }

    /// Whether the sink lags or catches up.
    fn frozen(&self) -> bool {
        self.lag.as_ref().is_some_and(|l| l.state() != LagState::Ok)
    }

    fn with<T>(&self, resource: &str, f: impl FnOnce(&mut Frontier, bool) -> T) -> T {
        let frozen = self.frozen();
        let mut map = self.by_resource.lock().unwrap_or_else(|e| e.into_inner());
        f(map.entry(resource.to_owned()).or_default(), frozen)
    }

    fn moved(&self, moved: bool) {
        if moved {
            self.changed.notify_one();
        }
    }

    /// Starts from a checkpoint read back: `resource` was delivered up to
    /// `value`. Only raises a frontier.
    pub fn load(&self, resource: &str, value: u64) {
        self.with(resource, |f, _| {
            if value > 0 && f.value.is_none_or(|v| value > v) {
                f.value = Some(value);
                f.max_handed = f.max_handed.max(value);
            }
        });
    }

    /// Whether `entry` was delivered already: its resource's frontier is
    /// at or above its resourceVersion.
    pub fn covers(&self, entry: &Entry) -> bool {
        let Some(resource) = resource_of(entry) else {
            return false;
        };
        let rv = entry.resource_version_num();
        let map = self.by_resource.lock().unwrap_or_else(|e| e.into_inner());
        map.get(resource).is_some_and(|f| {
            f.value.is_some_and(|v| rv <= v) || f.resumed.get(entry.uid()).is_some_and(|&v| rv <= v)
        })
    }

    /// The frontier of `resource`, if there is one (loaded, or moved).
    pub fn value(&self, resource: &str) -> Option<u64> {
        let map = self.by_resource.lock().unwrap_or_else(|e| e.into_inner());
        map.get(resource).and_then(|f| f.value)
    }

    /// `entry` was handed by a watch resumed from the checkpoint: the
    /// listing that follows skips its object at that version.
    pub fn resumed(&self, entry: &Entry) {
        let Some(resource) = resource_of(entry) else {
            return;
        };
        let rv = entry.resource_version_num();
        let uid = entry.uid().to_owned();
        self.with(resource, |f, _| {
            let at = f.resumed.entry(uid).or_default();
            *at = (*at).max(rv);
        });
    }

    /// An entry of `resource` at `rv` was queued for the sink.
    pub fn handed(&self, resource: &str, rv: u64) {
        let moved = self.with(resource, |f, frozen| {
            *f.outstanding.entry(rv).or_default() += 1;
            f.max_handed = f.max_handed.max(rv);
            f.advance(frozen)
        });
        self.moved(moved);
    }

    /// `entries` were delivered, or recorded failed for good.
    pub fn settled(&self, entries: &[Entry]) {
        let mut moved = false;
        for entry in entries {
            let Some(resource) = resource_of(entry) else {
                continue;
            };
            let rv = entry.resource_version_num();
            moved |= self.with(resource, |f, frozen| {
                if let Some(n) = f.outstanding.get_mut(&rv) {
                    *n -= 1;
                    if *n == 0 {
                        f.outstanding.remove(&rv);
                    }
                }
                f.advance(frozen)
            });
        }
        self.moved(moved);
    }

    /// `resource` is being listed (`true`) or the listing is done.
    pub(crate) fn listing(&self, resource: &str, listing: bool) {
        let moved = self.with(resource, |f, frozen| {
            f.listing = listing;
            if !listing {
                f.resumed = HashMap::new();
            }
            f.advance(frozen)
        });
        self.moved(moved);
    }

    /// The sink caught up and is `ok` again: the frontiers move on.
    pub fn resume(&self) {
        let frozen = self.frozen();
        let mut map = self.by_resource.lock().unwrap_or_else(|e| e.into_inner());
        let moved = map.values_mut().fold(false, |m, f| f.advance(frozen) | m);
        drop(map);
        self.moved(moved);
    }

    /// Every resource's frontier, for the checkpoint.
    pub fn snapshot(&self) -> BTreeMap<String, u64> {
        let map = self.by_resource.lock().unwrap_or_else(|e| e.into_inner());
        map.iter()
            .filter_map(|(r, f)| f.value.map(|v| (r.clone(), v)))
            .collect()
    }

    /// Resolves when a frontier moved since the last call.
    pub async fn changed(&self) {
        self.changed.notified().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(uid: &str, rv: u64) -> Entry {
        let object = serde_json::json!({
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {
                "name": format!("e-{uid}"),
                "namespace": "ns",
                "uid": uid,
                "resourceVersion": rv.to_string(),
                "creationTimestamp": "2026-01-01T00:00:00Z",
            },
            "involvedObject": {"kind": "Pod", "name": "p", "namespace": "ns"},
            "reason": "Pulled",
            "message": "m",
            "type": "Normal",
            "count": 1,
        });
        crate::source::Normalizer::default()
            .normalize(&object, None)
            .expect("an event")
            .expect("a watched kind")
    }

    fn hand(f: &Frontiers, entry: &Entry) {
        if let Some(resource) = resource_of(entry) {
            f.handed(resource, entry.resource_version_num());
        }
    }

    fn value(f: &Frontiers) -> Option<u64> {
        f.snapshot().get("Event").copied()
    }

    #[test]
    fn watch_order_moves_to_below_the_oldest_unsettled() {
        let f = Frontiers::default();
        let (a, b, c) = (event("a", 10), event("b", 11), event("c", 12));
        for e in [&a, &b, &c] {
            hand(&f, e);
        }
        assert_eq!(value(&f), Some(9));
        f.settled(std::slice::from_ref(&b));
        assert_eq!(value(&f), Some(9), "a is not settled yet");
        f.settled(std::slice::from_ref(&a));
        assert_eq!(value(&f), Some(11));
        f.settled(std::slice::from_ref(&c));
        assert_eq!(value(&f), Some(12));
        assert!(f.covers(&event("b", 11)) && f.covers(&event("b", 12)));
        assert!(!f.covers(&event("b", 13)));
    }

    #[test]
    fn a_listing_freezes_the_frontier_until_done() {
        let f = Frontiers::default();
        f.load("Event", 5);
        assert!(f.covers(&event("old", 4)));
        f.listing("Event", true);
        let (late, early) = (event("late", 30), event("early", 8));
        hand(&f, &late);
        f.settled(std::slice::from_ref(&late));
        assert_eq!(value(&f), Some(5), "frozen while listing");
        hand(&f, &early);
        f.listing("Event", false);
        assert_eq!(value(&f), Some(7), "below the oldest unsettled");
        f.settled(std::slice::from_ref(&early));
        assert_eq!(value(&f), Some(30));
    }

    #[test]
    fn lagging_freezes_every_resource_and_never_goes_back() {
        let lag = Arc::new(SinkLag::new("s"));
        let f = Frontiers::new(lag.clone());
        f.load("Event", 20);
        f.load("Event", 3);
        assert_eq!(value(&f), Some(20), "a load only raises");
        assert!(lag.fall_behind());
        let e = event("x", 25);
        hand(&f, &e);
        f.settled(std::slice::from_ref(&e));
        assert_eq!(value(&f), Some(20), "frozen while lagging");
        assert!(lag.start_catch_up());
        f.resume();
        assert_eq!(value(&f), Some(20), "frozen while catching up");
        assert!(lag.caught_up());
        f.resume();
        assert_eq!(value(&f), Some(25));
    }

    #[test]
    fn a_resumed_object_is_not_handed_again_by_the_listing() {
        let f = Frontiers::default();
        f.load("Event", 10);
        let bumped = event("a", 12);
        hand(&f, &bumped);
        f.resumed(&bumped);
        f.listing("Event", true);
        assert!(f.covers(&event("a", 12)), "the same version, listed");
        assert!(!f.covers(&event("a", 13)), "a newer one");
        assert!(!f.covers(&event("b", 13)), "another object");
        f.listing("Event", false);
        f.settled(std::slice::from_ref(&bumped));
        assert_eq!(value(&f), Some(12));
        assert!(!f.covers(&event("a", 13)));
    }

    #[test]
    fn tombstones_are_ignored() {
        let f = Frontiers::default();
        let t = super::super::entry::tombstone(
            kubesink_normalize::record::RecordKind::Pod,
            "u".into(),
            crate::source::now(),
        );
        hand(&f, &t);
        assert!(!f.covers(&t));
        assert!(f.snapshot().is_empty());
    }
}
