//! The watcher behind a ConfigMap module: one kube-runtime watcher per sink
//! on its one ConfigMap (field selector), which loads each new version of
//! the key off the delivery path and swaps it into the sink's worker.
//!
//! Per event: the key is decoded and checked ([`super::decode`]); a digest
//! equal to the running one is ignored (a re-list, an unrelated change); a
//! digest already rejected is not tried again; anything else is compiled,
//! linked and initialized by the host (compilation runs on a blocking
//! thread, never in the sink's worker), then swapped in. Problems are
//! logged once each (until the situation changes) and kept in
//! [`ModuleStatus`]. A version whose `init` fails with a retryable error
//! (its database is down) is tried again with backoff.

use std::time::Duration;

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::Api;
use kube::runtime::{WatchStreamExt, watcher};
use kubesink_host::{Host, ModuleSource};
use tokio::sync::watch as state;
use tokio::task::JoinHandle;

use super::{Cause, ConfigMapRef, Located, ModuleError, decode};
use crate::config::{SinkPlan, SinkTemplate};
use crate::pipeline::backoff::Backoff;
use crate::pipeline::{ModuleSlot, Pipeline};

/// What the watcher of one sink's ConfigMap module has done so far.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ModuleStatus {
    /// SHA-256 of the version running, once one is.
    pub active: Option<String>,
    /// How many versions were swapped in.
    pub loaded: u64,
    /// How many distinct problems were reported.
    pub errors: u64,
    /// The last problem reported (the full error line); `None` once a
    /// version loads after it.
    pub error: Option<String>,
}

/// A running watcher of one sink's ConfigMap module. Dropping it stops the
/// watch (the sink keeps the version it runs).
#[derive(Debug)]
pub struct ModuleWatcher {
    sink: String,
    status: state::Receiver<ModuleStatus>,
    task: JoinHandle<()>,
}

impl ModuleWatcher {
    /// The sink's name.
    pub fn sink(&self) -> &str {
        &self.sink
    }

    /// The status now.
    pub fn status(&self) -> ModuleStatus {
        self.status.borrow().clone()
    }

    /// Waits until `pred` holds for the status, up to `timeout`; returns the
    /// status that satisfied it, or the last one seen as the error.
    pub async fn wait_for(
        &mut self,
        timeout: Duration,
        mut pred: impl FnMut(&ModuleStatus) -> bool,
    ) -> Result<ModuleStatus, ModuleStatus> {
        let waited = tokio::time::timeout(timeout, self.status.wait_for(|s| pred(s)))
            .await
            .map(|r| r.map(|s| s.clone()));
        match waited {
            Ok(Ok(s)) => Ok(s),
            _ => Err(self.status.borrow().clone()),
        }
    }

    /// Stops the watch.
    pub fn abort(&self) {
        self.task.abort();
    }
}

impl Drop for ModuleWatcher {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Starts a watcher for every sink of `plans` whose module is a ConfigMap
/// key, in `namespace` (kubesink's own: [`crate::namespace::own_namespace`]).
/// The sinks must have been started by `pipeline`, which left them waiting
/// for their first version.
pub(crate) fn watch_modules(
    client: &kube::Client,
    namespace: &str,
    host: &Host,
    pipeline: &Pipeline,
    plans: &[SinkPlan],
) -> Vec<ModuleWatcher> {
    let mut watchers = Vec::new();
    for plan in plans {
        let Some(cm) = plan.configmap() else {
            continue;
        };
        let Some(slot) = pipeline.module_slot(&plan.spec.name) else {
            tracing::error!(sink = %plan.spec.name, "internal: sink not in the pipeline; its ConfigMap module is not watched");
            continue;
        };
        let (tx, rx) = state::channel(ModuleStatus::default());
        let task = Loader {
            api: Api::namespaced(client.clone(), namespace),
            at: cm.located(namespace),
            cm: cm.clone(),
            pin: plan.sha256.clone(),
            spec: plan.spec.clone(),
            host: host.clone(),
            slot,
            status: tx,
            reported: None,
            rejected: None,
            retry: Backoff::new(Duration::from_secs(1), Duration::from_secs(60)),
            retry_at: None,
        };
        watchers.push(ModuleWatcher {
            sink: plan.spec.name.clone(),
            status: rx,
            task: tokio::spawn(task.run()),
        });
    }
    watchers
}

struct Loader {
    api: Api<ConfigMap>,
    at: Located,
    cm: ConfigMapRef,
    pin: Option<String>,
    spec: SinkTemplate,
    host: Host,
    slot: ModuleSlot,
    status: state::Sender<ModuleStatus>,
    /// The last problem logged, so that a repeat is not logged again.
    reported: Option<String>,
    /// Digest of the last version rejected for good.
    rejected: Option<String>,
    retry: Backoff,
    retry_at: Option<tokio::time::Instant>,
}

impl Loader {
    async fn run(mut self) {
        let config = watcher::Config::default().fields(&format!("metadata.name={}", self.cm.name));
        let mut stream = watcher(self.api.clone(), config).default_backoff().boxed();
        // Whether the current listing returned the ConfigMap.
        let mut listed = false;
        let mut last: Option<ConfigMap> = None;
        loop {
            let retry_at = self.retry_at;
            let event = tokio::select! {
                event = stream.next() => match event {
                    Some(event) => event,
                    None => return,
                },
                _ = async { tokio::time::sleep_until(retry_at.unwrap_or_else(tokio::time::Instant::now)).await }, if retry_at.is_some() => {
                    self.retry_at = None;
                    if let Some(cm) = last.clone() {
                        self.consider(&cm).await;
                    }
                    continue;
                }
            };
            match event {
                Ok(watcher::Event::Init) => listed = false,
                Ok(watcher::Event::InitApply(cm) | watcher::Event::Apply(cm)) => {
                    listed = true;
                    self.consider(&cm).await;
                    last = Some(cm);
                }
                Ok(watcher::Event::InitDone) => {
                    if !listed {
                        last = None;
                        self.retry_at = None;
                        self.report(Cause::NotFound);
                    }
                }
                Ok(watcher::Event::Delete(_)) => {
                    last = None;
                    self.retry_at = None;
                    self.report(Cause::NotFound);
                }
                Err(e) => self.report(Cause::Api(e.to_string())),
            }
        }
    }

    /// Loads the version in `configmap` unless it runs already or was
    /// rejected before.
    async fn consider(&mut self, configmap: &ConfigMap) {
        self.retry_at = None;
        let limit = self.spec.limits.max_module_bytes;
        let decoded = match decode(configmap, &self.cm, limit, self.pin.as_deref()) {
            Ok(d) => d,
            Err(cause) => return self.report(cause),
        };
        let active = self.status.borrow().active.clone();
        if active.as_deref() == Some(decoded.sha256.as_str()) {
            return self.recovered();
        }
        if self.rejected.as_deref() == Some(decoded.sha256.as_str()) {
            return;
        }
        tracing::info!(sink = %self.spec.name, configmap = %self.at, sha256 = %decoded.sha256, bytes = decoded.bytes.len(), stored = decoded.stored, "loading a new module version");
        let spec = self.spec.with_module(ModuleSource::Bytes {
            origin: format!("{} (sha256 {})", self.at, short(&decoded.sha256)),
            bytes: decoded.bytes.clone(),
        });
        // One instance per worker of the sink.
        let mut instances = Vec::with_capacity(self.slot.workers());
        let mut loaded = Ok(());
        for _ in 0..self.slot.workers() {
            match self.host.load(spec.clone()).await {
                Ok(instance) => instances.push(instance),
                Err(e) => {
                    loaded = Err(e);
                    break;
                }
            }
        }
        match loaded.map(|()| instances) {
            Ok(instances) => {
                if let Err(e) = self.slot.swap(instances).await {
                    tracing::warn!(sink = %self.spec.name, configmap = %self.at, error = %e, "new module version not swapped in");
                    return;
                }
                tracing::info!(sink = %self.spec.name, configmap = %self.at, sha256 = %decoded.sha256, previous = ?active, "module version swapped in");
                self.rejected = None;
                self.reported = None;
                self.retry.reset();
                self.status.send_modify(|s| {
                    s.active = Some(decoded.sha256.clone());
                    s.loaded += 1;
                    s.error = None;
                });
            }
            Err(err) => {
                let cause = Cause::Load(err);
                if cause.is_retryable() {
                    let delay = self.retry.next_delay();
                    self.retry_at = Some(tokio::time::Instant::now() + delay);
                } else {
                    self.rejected = Some(decoded.sha256.clone());
                }
                self.report(cause);
            }
        }
    }

    /// The running version is what the ConfigMap holds again: a problem
    /// reported since (e.g. the ConfigMap was deleted) is over.
    fn recovered(&mut self) {
        if self.reported.take().is_some() {
            tracing::info!(sink = %self.spec.name, configmap = %self.at, "the ConfigMap holds the running version again");
            self.status.send_modify(|s| s.error = None);
        }
    }

    /// Logs a problem once (until it changes) and records it in the status.
    fn report(&mut self, cause: Cause) {
        let running = self.status.borrow().active.clone();
        let retryable = cause.is_retryable();
        let error = ModuleError {
            sink: self.spec.name.clone(),
            at: self.at.clone(),
            cause,
        };
        let consequence = match (&running, retryable) {
            (Some(sha), _) => format!("the sink keeps running version sha256 {}", short(sha)),
            (None, true) => "the sink waits; trying again with backoff".to_owned(),
            (None, false) => {
                "the sink waits for a usable version; its records queue up meanwhile".to_owned()
            }
        };
        let line = format!("{error}; {consequence}");
        if self.reported.as_deref() == Some(line.as_str()) {
            return;
        }
        if running.is_some() && matches!(error.cause, Cause::NotFound) {
            tracing::warn!(sink = %self.spec.name, configmap = %self.at, "{line}");
        } else {
            tracing::error!(sink = %self.spec.name, configmap = %self.at, "{line}");
        }
        self.status.send_modify(|s| {
            s.errors += 1;
            s.error = Some(line.clone());
        });
        self.reported = Some(line);
    }
}

/// The first 12 hex digits of a digest, for messages.
fn short(sha: &str) -> &str {
    sha.get(..12).unwrap_or(sha)
}
