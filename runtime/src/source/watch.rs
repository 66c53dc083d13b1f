//! The live source: one kube-runtime watcher per resource type (batch/v1
//! Jobs, each training-job kind, Pods, Events), shared by all sinks, with
//! bookmarks and a backoff of its own (0.8 s doubling to 30 s, reset
//! once a listing completes). Objects are normalized by
//! the same [`Normalizer`] as the replay source and pushed into the
//! pipeline; a full sink queue makes the watch wait (Kubernetes is the
//! buffer).
//!
//! A resource the API server does not serve (a CRD not installed yet) or
//! may not be listed (RBAC) is reported once, naming it, and retried with
//! backoff, so it is picked up when it appears or is granted. One not
//! served is not listed again until its group-version's discovery
//! document names it (`watch/served.rs`, shared by all such watches).
//!
//! With several sinks, the watches go at the pace of the fastest: a sink
//! that falls behind ([`crate::pipeline::lag`]) is caught up here once it
//! has delivered its queue — every resource is listed again (in pages) for
//! that sink alone, and what it holds is reconciled against the listing
//! (`watch/catch_up.rs`).
//!
//! Before its first listing, a resource's watch is resumed from the oldest
//! checkpointed frontier (`watch/resume.rs`), so a log sink gets each
//! update made while kubesink was down ([`crate::checkpoint`]).

use std::sync::Arc;

use futures_util::StreamExt;
use kube::Client;
use kube::api::{Api, ApiResource, ListParams, WatchEvent, WatchParams};
use kube::runtime::watcher;
use std::collections::HashSet;

use kubesink_normalize::record::{Entry, Record, RecordKind};

mod catch_up;
mod resume;
mod served;

use super::jobs::JobListings;
use super::object::RawObject;
use super::{Normalizer, now};
use crate::pipeline::Pipeline;
use crate::pipeline::backoff::Backoff;
use catch_up::{CatchUp, serve_catch_ups};
use resume::resume;
use served::Served;

/// The first delay before a failed watch or listing is tried again (it
/// doubles, with jitter, up to [`WATCH_RETRY_MAX`]); client-go's figures.
pub const WATCH_RETRY_FIRST: std::time::Duration = std::time::Duration::from_millis(800);
/// The longest delay between two tries of a failing watch: a resource
/// that is not served (its CRD not installed) costs one request per
/// resource per this long.
pub const WATCH_RETRY_MAX: std::time::Duration = std::time::Duration::from_secs(30);

/// Which events are delivered.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventFilter {
    /// Only events about watched jobs and pods (`true`), or all (`false`).
    pub related_only: bool,
    /// Only these namespaces (empty: all).
    pub namespaces: Vec<String>,
    /// Only these involved kinds (empty: all).
    pub involved_kinds: Vec<String>,
    /// Only these types, `Normal`/`Warning` (empty: all).
    pub types: Vec<String>,
    /// Only these reasons (empty: all).
    pub reasons: Vec<String>,
}

impl EventFilter {
    fn accepts(&self, record: &Record, job_kinds: &[String]) -> bool {
        let Record::Event(e) = record else {
            return true;
        };
        let in_list = |list: &[String], v: &str| list.is_empty() || list.iter().any(|x| x == v);
        in_list(&self.namespaces, &e.meta.namespace)
            && in_list(&self.involved_kinds, &e.involved.kind)
            && in_list(&self.types, &e.event_type)
            && in_list(&self.reasons, &e.reason)
            && (!self.related_only
                || e.involved.kind == "Pod"
                || job_kinds.contains(&e.involved.kind))
    }
}

/// What the live source watches.
#[derive(Debug, Clone, Default)]
pub struct WatchOptions {
    /// Only this namespace (`None`: all namespaces).
    pub namespace: Option<String>,
    /// Event filters.
    pub events: EventFilter,
    /// The API server's URL, named in messages about reaching it.
    pub server: String,
}

/// One watched resource type.
#[derive(Debug, Clone)]
struct Resource {
    resource: ApiResource,
    /// Pods are delivered only when controlled by a watched job kind.
    pods_of_jobs: bool,
}

fn resource(api_version: &str, kind: &str, plural: &str) -> ApiResource {
    let (group, version) = match api_version.split_once('/') {
        Some((g, v)) => (g.to_owned(), v.to_owned()),
        None => (String::new(), api_version.to_owned()),
    };
    ApiResource {
        group,
        version,
        api_version: api_version.to_owned(),
        kind: kind.to_owned(),
        plural: plural.to_owned(),
    }
}

fn resources(normalizer: &Normalizer) -> Vec<Resource> {
    let mut out = vec![Resource {
        resource: resource("batch/v1", "Job", "jobs"),
        pods_of_jobs: false,
    }];
    for k in &normalizer.options.training_kinds {
        out.push(Resource {
            resource: resource(
                &k.api_version,
                &k.kind,
                &format!("{}s", k.kind.to_lowercase()),
            ),
            pods_of_jobs: false,
        });
    }
    out.push(Resource {
        resource: resource("v1", "Pod", "pods"),
        pods_of_jobs: true,
    });
    out.push(Resource {
        resource: resource("v1", "Event", "events"),
        pods_of_jobs: false,
    });
    out
}

/// The name of a watch in logs, metrics and readiness: `plural (apiVersion)`.
fn watch_name(r: &Resource) -> String {
    format!("{} ({})", r.resource.plural, r.resource.api_version)
}

/// Watches until the process stops; returns only if every watch ended.
pub async fn run(
    client: Client,
    pipeline: Arc<Pipeline>,
    normalizer: Normalizer,
    options: WatchOptions,
) {
    let job_kinds: Vec<String> = std::iter::once("Job".to_owned())
        .chain(
            normalizer
                .options
                .training_kinds
                .iter()
                .map(|k| k.kind.clone()),
        )
        .collect();
    let all = resources(&normalizer);
    let jobs = Arc::new(JobListings::new(
        all.iter().filter(|r| is_job(r)).map(watch_name),
    ));
    let served = Arc::new(Served::new(client.clone()));
    let mut tasks = tokio::task::JoinSet::new();
    {
        let requests = pipeline.enable_catch_up();
        let catch_up = Arc::new(CatchUp {
            client: client.clone(),
            pipeline: pipeline.clone(),
            normalizer: normalizer.clone(),
            job_kinds: job_kinds.clone(),
            events: options.events.clone(),
            namespace: options.namespace.clone(),
            resources: all.clone(),
        });
        tasks.spawn(serve_catch_ups(requests, catch_up));
    }
    for r in all {
        // Readiness waits for this watch's first listing; restarts are counted.
        pipeline.ops().health.watcher_pending(&watch_name(&r));
        pipeline.ops().metrics.watch_started(&watch_name(&r));
        let api: Api<RawObject> = match &options.namespace {
            Some(ns) => Api::namespaced_with(client.clone(), ns, &r.resource),
            None => Api::all_with(client.clone(), &r.resource),
        };
        let pipeline = pipeline.clone();
        let normalizer = normalizer.clone();
        let job_kinds = job_kinds.clone();
        let context = Context {
            pipeline,
            normalizer,
            job_kinds,
            events: options.events.clone(),
            jobs: jobs.clone(),
            server: options.server.clone(),
            served: served.clone(),
        };
        tasks.spawn(async move {
            watch_one(api, r, context).await;
        });
    }
    while tasks.join_next().await.is_some() {}
}

/// What every watch shares.
struct Context {
    pipeline: Arc<Pipeline>,
    normalizer: Normalizer,
    job_kinds: Vec<String>,
    events: EventFilter,
    jobs: Arc<JobListings>,
    server: String,
    /// Discovery answers, asked while a resource is not served.
    served: Arc<Served>,
}

/// Whether a resource holds jobs (batch/v1 Jobs and the training kinds).
fn is_job(r: &Resource) -> bool {
    !matches!(r.resource.kind.as_str(), "Pod" | "Event")
}

/// Whether a watch failed because the API server does not serve the
/// resource (404 on the list: a CRD not installed).
fn not_served(e: &watcher::Error) -> bool {
    matches!(e, watcher::Error::InitialListFailed(kube::Error::Api(s)) if s.code == 404)
}

async fn reconcile_jobs(jobs: &JobListings, pipeline: &Arc<Pipeline>, name: &str) {
    match jobs.reconcile(pipeline).await {
        Ok(reconciled) => {
            let name = name.to_owned();
            tokio::spawn(async move {
                let gone = reconciled.await;
                if gone > 0 {
                    tracing::info!(resource = %name, removed = gone, "marked jobs deleted while not watching");
                }
            });
        }
        Err(blocked) => {
            tracing::debug!(resource = %name, waiting_for = ?blocked, "jobs not reconciled yet: these job resources are served but not listed");
        }
    }
}

async fn watch_one(api: Api<RawObject>, r: Resource, context: Context) {
    let Context {
        pipeline,
        normalizer,
        job_kinds,
        events,
        jobs,
        server,
        served,
    } = context;
    let name = watch_name(&r);
    let job = is_job(&r);
    if let Some(from) = pipeline.resume_point(&r.resource.kind) {
        let filters = (&normalizer, job_kinds.as_slice(), &events);
        resume(&api, &r, from, &pipeline, filters).await;
    }
    let config = watcher::Config::default().any_semantic();
    // Not kube's `default_backoff()`: it resets on every `Ok` the watcher
    // yields, and a retried listing starts with `Event::Init`, so a
    // resource that is not served (a CRD not installed) was listed again
    // every second forever. Reset here only once a listing completed or a
    // change arrived.
    let mut stream = watcher(api, config).boxed();
    let mut backoff = Backoff::new(WATCH_RETRY_FIRST, WATCH_RETRY_MAX);
    let mut failing = false;
    // Pods and events come from one resource each, so a complete listing
    // tells which held records vanished while kubesink was not watching.
    // Jobs come from several resources: see `jobs.rs`.
    let reconcile_kind = match r.resource.kind.as_str() {
        "Pod" => Some(RecordKind::Pod),
        "Event" => Some(RecordKind::Event),
        _ => None,
    };
    let mut listed: Option<HashSet<String>> = None;
    while let Some(event) = stream.next().await {
        // A job watcher records an object and queues its entry under the
        // shared gate, so a job reconciliation never sees one without the
        // other.
        let _gate = match &event {
            Ok(
                watcher::Event::InitApply(_) | watcher::Event::Apply(_) | watcher::Event::Delete(_),
            ) if job => Some(jobs.gate().await),
            _ => None,
        };
        let (object, removed) = match event {
            Ok(watcher::Event::InitApply(o)) => {
                if let Some(uid) = o.metadata.uid.as_deref() {
                    if let Some(l) = listed.as_mut() {
                        l.insert(uid.to_owned());
                    }
                    if job {
                        jobs.listed(&name, uid);
                    }
                }
                (o, false)
            }
            Ok(watcher::Event::Apply(o)) => {
                if let (true, Some(uid)) = (job, o.metadata.uid.as_deref()) {
                    jobs.changed(&name, uid, true);
                }
                (o, false)
            }
            Ok(watcher::Event::Delete(o)) => {
                if let (true, Some(uid)) = (job, o.metadata.uid.as_deref()) {
                    jobs.changed(&name, uid, false);
                }
                (o, true)
            }
            Ok(watcher::Event::Init) => {
                // A listing comes in no resourceVersion order: checkpoint
                // frontiers stay put until it is done.
                pipeline.listing(&r.resource.kind, true);
                listed = reconcile_kind.map(|_| HashSet::new());
                if job {
                    jobs.list_started(&name);
                }
                continue;
            }
            Ok(watcher::Event::InitDone) => {
                pipeline.listing(&r.resource.kind, false);
                backoff.reset();
                pipeline.ops().health.watcher_synced(&name);
                if failing {
                    tracing::info!(resource = %name, "watching again");
                }
                failing = false;
                if let (Some(kind), Some(l)) = (reconcile_kind, listed.take()) {
                    let reconciled = pipeline.reconcile(kind, l, now());
                    let name = name.clone();
                    tokio::spawn(async move {
                        let gone = reconciled.await;
                        if gone > 0 {
                            tracing::info!(resource = %name, removed = gone, "marked records of objects deleted while not watching");
                        }
                    });
                }
                if job {
                    jobs.list_done(&name);
                    reconcile_jobs(&jobs, &pipeline, &name).await;
                }
                tracing::info!(resource = %name, "listed; watching");
                continue;
            }
            Err(e) => {
                pipeline.ops().metrics.watch_restart(&name);
                pipeline.ops().health.watcher_failed(&name, &e);
                if matches!(&e, watcher::Error::WatchError(s) if s.code == 410) {
                    // The resource version is compacted away: the watcher
                    // lists again, and that listing reconciles.
                    tracing::info!(resource = %name, error = %e, "watch expired (410 Gone); listing again");
                    tokio::time::sleep(backoff.next_delay()).await;
                    continue;
                }
                if failing {
                    tracing::debug!(resource = %name, error = %e, "watch still failing; retrying with backoff");
                } else {
                    tracing::warn!(resource = %name, %server, error = %e, "cannot watch; retrying with backoff (a CRD not installed yet, a missing RBAC permission, or the API server unreachable)");
                }
                failing = true;
                let absent = not_served(&e);
                if job && absent && jobs.not_served(&name) {
                    // Its CRD is absent: no job of it exists.
                    reconcile_jobs(&jobs, &pipeline, &name).await;
                }
                if absent {
                    // Not listed again until discovery says it is served:
                    // one request per group-version, not per resource.
                    loop {
                        tokio::time::sleep(backoff.next_delay()).await;
                        if served.serves(&r.resource).await {
                            break;
                        }
                    }
                    continue;
                }
                tokio::time::sleep(backoff.next_delay()).await;
                continue;
            }
        };
        if let Some(entry) = entry_of(&object, &r, removed, &normalizer, &job_kinds, &events) {
            pipeline.send(entry).await;
        }
    }
}

/// The entry of a watched or listed object, or `None` when it is not
/// delivered (a pod no watched job controls, an event filtered out, a
/// malformed object: logged).
fn entry_of(
    object: &RawObject,
    r: &Resource,
    removed: bool,
    normalizer: &Normalizer,
    job_kinds: &[String],
    events: &EventFilter,
) -> Option<Entry> {
    if r.pods_of_jobs && !controlled_by_job(object.controller_kind.as_deref(), job_kinds) {
        return None;
    }
    // Watch objects of a typed list may omit apiVersion/kind.
    let api_version = object
        .api_version
        .as_deref()
        .unwrap_or(&r.resource.api_version);
    let kind = object.kind.as_deref().unwrap_or(&r.resource.kind);
    let removed_at = removed.then(|| object.removed_at().unwrap_or_else(now));
    match normalizer.normalize_json(object.json.get(), api_version, kind, removed_at) {
        Ok(Some(entry)) => entry
            .record()
            .is_some_and(|r| events.accepts(r, job_kinds))
            .then_some(entry),
        Ok(None) => None,
        Err(e) => {
            let name = watch_name(r);
            let object = sanitize(&describe(kind, &object.metadata));
            let error = sanitize(&e);
            tracing::warn!(resource = %name, %object, %error, "malformed object skipped");
            None
        }
    }
}

/// Text from the cluster made safe for one log line.
fn sanitize(text: &str) -> String {
    kubesink_host::log::sanitize(text, 1024)
}

/// `Kind namespace/name`, as the normalizer's errors name objects.
fn describe(kind: &str, meta: &kube::api::ObjectMeta) -> String {
    let name = meta.name.as_deref().unwrap_or("<unnamed>");
    match meta.namespace.as_deref() {
        Some(ns) if !ns.is_empty() => format!("{kind} {ns}/{name}"),
        _ => format!("{kind} {name}"),
    }
}

/// Whether a pod's controller (its owner reference marked `controller`) is
/// of a watched job kind.
fn controlled_by_job(controller_kind: Option<&str>, job_kinds: &[String]) -> bool {
    controller_kind.is_some_and(|k| job_kinds.iter().any(|j| j == k))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn pods_are_kept_only_when_a_watched_job_controls_them() {
        let kinds = vec!["Job".to_owned(), "TFJob".to_owned()];
        let controller = |line: &str| {
            serde_json::from_str::<RawObject>(line)
                .expect("object")
                .controller_kind
        };
        let pod = |kind: &str, controller: bool| {
            json!({"metadata": {"ownerReferences": [{"kind": kind, "controller": controller}]}})
                .to_string()
        };
        let kept = |line: &str| controlled_by_job(controller(line).as_deref(), &kinds);
        assert!(kept(&pod("TFJob", true)));
        assert!(!kept(&pod("TFJob", false)));
        assert!(!kept(&pod("ReplicaSet", true)));
        assert!(!kept(r#"{"metadata": {}}"#));
    }

    #[test]
    fn training_kinds_get_lowercase_plural_resources() {
        let rs = resources(&Normalizer::default());
        let plurals: Vec<&str> = rs.iter().map(|r| r.resource.plural.as_str()).collect();
        assert!(
            plurals.contains(&"tfjobs") && plurals.contains(&"pytorchjobs"),
            "{plurals:?}"
        );
        assert!(plurals.contains(&"elasticbatchjobs") && plurals.contains(&"mpijobs"));
        let tf = rs
            .iter()
            .find(|r| {
                r.resource.api_version == "training.kubedl.io/v1alpha1"
                    && r.resource.kind == "TFJob"
            })
            .unwrap();
        assert_eq!(tf.resource.group, "training.kubedl.io");
        assert_eq!(tf.resource.version, "v1alpha1");
    }
}
