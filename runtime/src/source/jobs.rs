//! Reconciliation of jobs: jobs come from several resources (batch/v1 Jobs
//! and every training kind), so the jobs the cluster has are the union of
//! the current contents of all of them. After a job resource is listed
//! (at start and after every re-list), each sink is told which jobs it
//! holds that none of the resources has any more, and delivers them as
//! `removed`.
//!
//! The rule for resources that could not be listed: a resource the API
//! server does not serve (404 on the list: its CRD is not installed, so no
//! object of it exists — deleting a CRD deletes all its objects) counts as
//! empty; a resource that is served but could not be listed yet (403, the
//! API server unreachable, any other error) blocks job reconciliation
//! until it is listed, because the sinks' held uids carry no kind and a
//! job of that resource must never be marked removed on a guess.
//!
//! The current contents are kept as uids only (a few bytes per job),
//! updated by every watch event. Job watchers hold [`JobListings::gate`]
//! (shared) from recording an event to queueing its entry; a
//! reconciliation holds it exclusively from taking the union to asking the
//! sinks, when each sink starts noting what is queued to it until its
//! tombstones are queued (`Recent` in the pipeline), so a job created
//! meanwhile is never taken for gone.

use std::collections::{BTreeMap, HashSet};
use std::sync::Mutex;

use kubesink_normalize::record::RecordKind;
use tokio::sync::{RwLock, RwLockReadGuard};

use super::now;
use crate::pipeline::Pipeline;

#[derive(Debug, Default)]
struct Listing {
    /// The uids the resource has now, once listed.
    live: Option<HashSet<String>>,
    /// The listing in progress (between `Init` and `InitDone`).
    relisting: Option<HashSet<String>>,
    /// The API server answered 404: no such resource is served.
    not_served: bool,
}

/// The current uids of every job resource.
#[derive(Debug)]
pub struct JobListings {
    listings: Mutex<BTreeMap<String, Listing>>,
    gate: RwLock<()>,
}

/// What [`JobListings::union`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Union {
    /// Every resource is listed or not served: the uids of all jobs.
    Complete(HashSet<String>),
    /// These resources are served (or may be) but not listed yet.
    Blocked(Vec<String>),
}

impl JobListings {
    /// For these job resources (names as used in logs).
    pub fn new(resources: impl IntoIterator<Item = String>) -> Self {
        Self {
            listings: Mutex::new(
                resources
                    .into_iter()
                    .map(|r| (r, Listing::default()))
                    .collect(),
            ),
            gate: RwLock::new(()),
        }
    }

    /// Held (shared) by a job watcher from recording an event to queueing
    /// its entry.
    pub async fn gate(&self) -> RwLockReadGuard<'_, ()> {
        self.gate.read().await
    }

    fn with<T>(&self, resource: &str, f: impl FnOnce(&mut Listing) -> T) -> Option<T> {
        let mut map = self
            .listings
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        map.get_mut(resource).map(f)
    }

    /// A listing of `resource` starts.
    pub fn list_started(&self, resource: &str) {
        self.with(resource, |l| l.relisting = Some(HashSet::new()));
    }

    /// An object seen in the listing in progress.
    pub fn listed(&self, resource: &str, uid: &str) {
        self.with(resource, |l| {
            if let Some(r) = l.relisting.as_mut() {
                r.insert(uid.to_owned());
            }
        });
    }

    /// The listing of `resource` is complete; it replaces what was known.
    pub fn list_done(&self, resource: &str) {
        self.with(resource, |l| {
            l.live = Some(l.relisting.take().unwrap_or_default());
            l.not_served = false;
        });
    }

    /// A watch event: the object exists (`present`) or was deleted.
    pub fn changed(&self, resource: &str, uid: &str, present: bool) {
        self.with(resource, |l| {
            if let Some(live) = l.live.as_mut() {
                if present {
                    live.insert(uid.to_owned());
                } else {
                    live.remove(uid);
                }
            }
        });
    }

    /// The API server does not serve `resource` (404). Returns whether
    /// this is news.
    pub fn not_served(&self, resource: &str) -> bool {
        self.with(resource, |l| {
            let news = !l.not_served;
            l.not_served = true;
            l.live = None;
            l.relisting = None;
            news
        })
        .unwrap_or(false)
    }

    /// The uids of all jobs, or the resources that block knowing them.
    pub fn union(&self) -> Union {
        let map = self
            .listings
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let blocked: Vec<String> = map
            .iter()
            .filter(|(_, l)| l.live.is_none() && !l.not_served)
            .map(|(r, _)| r.clone())
            .collect();
        if !blocked.is_empty() {
            return Union::Blocked(blocked);
        }
        Union::Complete(
            map.values()
                .filter_map(|l| l.live.as_ref())
                .flatten()
                .cloned()
                .collect(),
        )
    }

    /// Delivers `removed` for every job a sink holds that no job resource
    /// has, when the union is complete: the sinks are asked under the gate
    /// (see [`Pipeline::reconcile`]), and the returned future waits for
    /// their answers and returns the number of tombstones queued. `Err`
    /// names the resources that block reconciliation.
    pub async fn reconcile(
        &self,
        pipeline: &std::sync::Arc<Pipeline>,
    ) -> Result<impl Future<Output = usize> + Send + 'static, Vec<String>> {
        let _exclusive = self.gate.write().await;
        match self.union() {
            Union::Complete(uids) => Ok(pipeline.reconcile(RecordKind::Job, uids, now())),
            Union::Blocked(resources) => Err(resources),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(uids: &[&str]) -> HashSet<String> {
        uids.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn union_waits_for_every_served_resource_and_counts_absent_ones_as_empty() {
        let l = JobListings::new(["jobs".to_owned(), "tfjobs".to_owned(), "mpijobs".to_owned()]);
        l.list_started("jobs");
        l.listed("jobs", "a");
        l.list_done("jobs");
        assert_eq!(
            l.union(),
            Union::Blocked(vec!["mpijobs".into(), "tfjobs".into()])
        );
        assert!(l.not_served("mpijobs"));
        assert!(!l.not_served("mpijobs"), "reported once");
        assert_eq!(l.union(), Union::Blocked(vec!["tfjobs".into()]));
        l.list_started("tfjobs");
        l.listed("tfjobs", "t");
        l.list_done("tfjobs");
        assert_eq!(l.union(), Union::Complete(set(&["a", "t"])));
    }

    #[test]
    fn watch_events_keep_the_union_current_and_a_relisting_replaces_it() {
        let l = JobListings::new(["jobs".to_owned()]);
        // Events before the first listing are not a listing.
        l.changed("jobs", "x", true);
        assert_eq!(l.union(), Union::Blocked(vec!["jobs".into()]));
        l.list_started("jobs");
        l.listed("jobs", "a");
        l.list_done("jobs");
        l.changed("jobs", "b", true);
        l.changed("jobs", "a", false);
        assert_eq!(l.union(), Union::Complete(set(&["b"])));
        // A re-list: until it completes the old contents stand.
        l.list_started("jobs");
        l.listed("jobs", "c");
        assert_eq!(l.union(), Union::Complete(set(&["b"])));
        l.list_done("jobs");
        assert_eq!(l.union(), Union::Complete(set(&["c"])));
        // Unknown resources are ignored.
        l.changed("nope", "z", true);
        assert!(!l.not_served("nope"));
    }

    #[test]
    fn a_resource_that_stops_being_served_is_empty_and_listing_it_again_counts() {
        let l = JobListings::new(["tfjobs".to_owned()]);
        l.list_started("tfjobs");
        l.listed("tfjobs", "t");
        l.list_done("tfjobs");
        assert!(l.not_served("tfjobs"));
        assert_eq!(l.union(), Union::Complete(HashSet::new()));
        l.list_started("tfjobs");
        l.listed("tfjobs", "u");
        l.list_done("tfjobs");
        assert_eq!(l.union(), Union::Complete(set(&["u"])));
        assert!(l.not_served("tfjobs"), "news again after being listed");
    }
}
