//! `kubesink run` as a library: [`Runtime::start`] assembles the operations
//! server, the Kubernetes client, the sandbox host, the pipeline, the
//! ConfigMap module watchers and (with leader election) the Lease, then
//! watches the cluster in a task of its own until [`Runtime::shutdown`].

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use thiserror::Error;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

use super::ExitStatus;
use crate::checkpoint::Checkpoints;
use crate::config::Plan;
use crate::modules::{ModuleWatcher, watch_modules};
use crate::ops::Ops;
use crate::ops::server::{Server, ServerError};
use crate::pipeline::{HeldLimits, Pipeline, PipelineError, ShutdownReport};
use crate::source::Normalizer;
use crate::source::leader::{LeaderError, LeaderOptions, Leadership};
use crate::source::watch::{EventFilter, WatchOptions};

/// The Kubernetes API server to watch.
#[derive(Clone)]
pub enum Cluster {
    /// A client from this kubeconfig file, or (`None`) from `KUBECONFIG`,
    /// `~/.kube/config` or the in-cluster service account (`--kubeconfig`).
    Kubeconfig(Option<PathBuf>),
    /// A client already built, and its API server's URL (named in messages).
    Client {
        /// The client.
        client: kube::Client,
        /// The API server's URL.
        server: String,
    },
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Cluster::Kubeconfig(path) => f.debug_tuple("Kubeconfig").field(path).finish(),
            Cluster::Client { server, .. } => {
                f.debug_struct("Client").field("server", server).finish()
            }
        }
    }
}

impl Cluster {
    /// The client and the API server's URL.
    async fn connect(self) -> Result<(kube::Client, String), RunError> {
        let config = match self {
            Cluster::Client { client, server } => return Ok((client, server)),
            Cluster::Kubeconfig(Some(path)) => {
                let at_fault = |source| RunError::Kubeconfig {
                    path: path.clone(),
                    source,
                };
                let kc = kube::config::Kubeconfig::read_from(&path).map_err(at_fault)?;
                kube::Config::from_custom_kubeconfig(
                    kc,
                    &kube::config::KubeConfigOptions::default(),
                )
                .await
                .map_err(at_fault)?
            }
            Cluster::Kubeconfig(None) => kube::Config::infer()
                .await
                .map_err(RunError::NoKubeconfig)?,
        };
        let server = config.cluster_url.to_string();
        let client = kube::Client::try_from(config).map_err(RunError::Client)?;
        Ok((client, server))
    }
}

/// Leader election (`--leader-elect`): only the holder of a
/// `coordination.k8s.io/v1` Lease watches and delivers.
#[derive(Debug, Clone)]
pub struct LeaderElection {
    /// The Lease's name (`--lease-name`).
    pub lease_name: String,
    /// The Lease's namespace (`--lease-namespace`); `None`: kubesink's own.
    pub lease_namespace: Option<String>,
    /// How long the Lease stays valid without renewal (`--lease-duration`).
    pub lease_duration: Duration,
}

/// How to run, besides the [`Plan`] (which sinks).
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// The cluster to watch.
    pub cluster: Cluster,
    /// Address of the operations server (`--listen`; port 0 picks a free
    /// one); `None`: no server (the [`Ops`] are still kept).
    pub listen: Option<String>,
    /// Watch only this namespace (`--namespace`); `None`: all.
    pub namespace: Option<String>,
    /// Which events are delivered (`--events`, `--event-*`).
    pub events: EventFilter,
    /// kubesink's own namespace, where ConfigMap modules (and by default the
    /// Lease) are; `None`: [`crate::namespace::own_namespace`].
    pub own_namespace: Option<String>,
    /// Leader election; `None`: watch at once.
    pub leader: Option<LeaderElection>,
    /// The ConfigMap in kubesink's own namespace that keeps the
    /// checkpointed sinks' delivery frontiers (`--checkpoint-configmap`,
    /// default [`crate::checkpoint::DEFAULT_NAME`]); `None`: none kept.
    pub checkpoint_configmap: Option<String>,
}

impl RunOptions {
    /// Watches every namespace and event of `cluster`, without an
    /// operations server or leader election.
    pub fn new(cluster: Cluster) -> Self {
        Self {
            cluster,
            listen: None,
            namespace: None,
            events: EventFilter::default(),
            own_namespace: None,
            leader: None,
            checkpoint_configmap: Some(crate::checkpoint::DEFAULT_NAME.to_owned()),
        }
    }
}

/// Errors starting or running [`Runtime`]; each names what is at fault.
#[derive(Debug, Error)]
pub enum RunError {
    /// The operations server cannot listen.
    #[error(transparent)]
    Server(#[from] ServerError),
    /// A kubeconfig file cannot be read or used.
    #[error("kubeconfig {}", path.display())]
    Kubeconfig {
        /// The file.
        path: PathBuf,
        /// Why.
        source: kube::config::KubeconfigError,
    },
    /// No kubeconfig given and none found.
    #[error("no kubeconfig: set --kubeconfig or KUBECONFIG, or run in a cluster")]
    NoKubeconfig(#[source] kube::config::InferConfigError),
    /// The client cannot be built from the kubeconfig.
    #[error("building the Kubernetes client")]
    Client(#[source] kube::Error),
    /// The wasmtime engine cannot start.
    #[error("starting the sandbox host")]
    Host(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// A sink cannot be loaded.
    #[error(transparent)]
    Pipeline(#[from] PipelineError),
    /// Leader election cannot go on while standing by.
    #[error(transparent)]
    Leader(#[from] LeaderError),
    /// This replica led and lost the Lease: it stopped delivering.
    #[error("stopped delivering: this replica no longer leads (a restart stands by)")]
    LeadershipLost(#[source] LeaderError),
    /// The runtime's task panicked or was cancelled.
    #[error("the runtime's task ended abnormally: {0}")]
    Task(String),
}

/// How a [`Runtime`] ended.
#[derive(Debug)]
pub struct Stopped {
    /// What delivering the queues achieved; `None` when it was stopped
    /// while standing by for the Lease (it had delivered nothing).
    pub shutdown: Option<ShutdownReport>,
    /// The grace it was given to deliver what was queued.
    pub grace: Duration,
    /// Why it stopped on its own ([`RunError::LeadershipLost`]), after
    /// delivering what was queued.
    pub error: Option<RunError>,
}

impl Stopped {
    /// The exit status of `kubesink run` that ended so: 1 on an error, 5
    /// when records were left undelivered, 4 when a sink rejected records,
    /// else 0.
    pub fn exit_status(&self) -> ExitStatus {
        let shutdown = self.shutdown.as_ref();
        if self.error.is_some() {
            ExitStatus::Error
        } else if shutdown.is_some_and(|s| !s.undelivered.is_empty()) {
            ExitStatus::Undelivered
        } else if shutdown.is_some_and(|s| s.reports.iter().any(|r| r.failed > 0)) {
            ExitStatus::Rejected
        } else {
            ExitStatus::Delivered
        }
    }
}

/// What [`Runtime::shutdown`] hands the task.
struct Stop {
    grace: Duration,
    /// Dropped once the watch stopped, as the binary always did.
    modules: Vec<ModuleWatcher>,
}

/// A running `kubesink run`: the sinks are loaded and (once leading) the
/// cluster is watched. Dropping it aborts everything without delivering
/// what is queued; [`shutdown`](Self::shutdown) delivers it first.
pub struct Runtime {
    ops: Arc<Ops>,
    addr: Option<SocketAddr>,
    modules: Vec<ModuleWatcher>,
    stop: Option<oneshot::Sender<Stop>>,
    ended: watch::Receiver<bool>,
    task: Option<JoinHandle<Result<Stopped, RunError>>>,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl Runtime {
    /// Starts the operations server (answering, not ready, while the sinks
    /// load), connects to the cluster, loads every sink of `plan`, starts
    /// watching the ConfigMap modules, and then, in a task of its own,
    /// stands by for the Lease (with leader election) and watches.
    pub async fn start(plan: &Plan, options: RunOptions) -> Result<Runtime, RunError> {
        let normalizer = Normalizer::with_region(plan.region.clone());
        let ops = Ops::new();
        let heartbeat = ops.health.spawn_heartbeat();
        let server = match &options.listen {
            Some(listen) => Some(crate::ops::server::serve(listen, ops.clone()).await?),
            None => None,
        };
        let (client, server_url) = options.cluster.connect().await?;
        let host =
            kubesink_host::Host::new(plan.host.clone()).map_err(|e| RunError::Host(Box::new(e)))?;
        let mut pipeline = Pipeline::start_with_ops(&host, plan.sinks.clone(), ops.clone()).await?;
        pipeline.set_held_limits(HeldLimits::of(&plan.held));
        let pipeline = Arc::new(pipeline);
        let own_namespace = options
            .own_namespace
            .unwrap_or_else(|| crate::namespace::own_namespace(&client));
        // Sinks whose module is a ConfigMap key: watch it and swap each new
        // version in; a missing one waits, the others run.
        let modules = watch_modules(&client, &own_namespace, &host, &pipeline, &plan.sinks);
        let checkpoints = options
            .checkpoint_configmap
            .as_deref()
            .and_then(|name| Checkpoints::new(client.clone(), &own_namespace, name, &pipeline))
            .map(Arc::new);
        let leader = options.leader.map(|l| LeaderOptions {
            lease_name: l.lease_name,
            lease_namespace: l.lease_namespace.unwrap_or(own_namespace),
            lease_duration: l.lease_duration,
            identity: crate::source::leader::identity(),
            server: server_url.clone(),
        });
        let watch = WatchOptions {
            server: server_url,
            namespace: options.namespace,
            events: options.events,
        };
        let addr = server.as_ref().map(|s| s.addr);
        let (stop, stopped) = oneshot::channel();
        let (ended_tx, ended) = watch::channel(false);
        let task = tokio::spawn(
            Driver {
                client,
                pipeline,
                normalizer,
                watch,
                leader,
                server,
                heartbeat,
                checkpoints,
                ended: ended_tx,
            }
            .run(stopped),
        );
        Ok(Runtime {
            ops,
            addr,
            modules,
            stop: Some(stop),
            ended,
            task: Some(task),
        })
    }

    /// Metrics and health, as the operations server serves them.
    pub fn ops(&self) -> &Arc<Ops> {
        &self.ops
    }

    /// The operations server's bound address (`None` without one).
    pub fn listen_addr(&self) -> Option<SocketAddr> {
        self.addr
    }

    /// The watcher of sink `sink`'s ConfigMap module, if it has one.
    pub fn module(&mut self, sink: &str) -> Option<&mut ModuleWatcher> {
        self.modules.iter_mut().find(|m| m.sink() == sink)
    }

    /// Resolves when the runtime stopped delivering on its own — this
    /// replica lost its Lease, or standing by for it failed — and waits
    /// for [`shutdown`](Self::shutdown). Never resolves otherwise.
    pub async fn ended(&mut self) {
        // An error means the task is gone: ended all the same.
        let _ = self.ended.wait_for(|ended| *ended).await;
    }

    /// Stops watching, delivers what is queued for at most `grace` (then
    /// stops the sinks still busy), stops the operations server and
    /// releases the Lease. Stopped while standing by, it just ends.
    pub async fn shutdown(mut self, grace: Duration) -> Result<Stopped, RunError> {
        let modules = std::mem::take(&mut self.modules);
        if let Some(stop) = self.stop.take() {
            // An error means the task has ended already; its result says how.
            let _ = stop.send(Stop { grace, modules });
        }
        let Some(task) = self.task.take() else {
            return Err(RunError::Task("already shut down".into()));
        };
        match task.await {
            Ok(stopped) => stopped,
            Err(e) => Err(RunError::Task(e.to_string())),
        }
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// What runs after the sinks are loaded: leader election, the watch, the
/// shutdown.
struct Driver {
    client: kube::Client,
    pipeline: Arc<Pipeline>,
    normalizer: Normalizer,
    watch: WatchOptions,
    leader: Option<LeaderOptions>,
    server: Option<Server>,
    heartbeat: JoinHandle<()>,
    checkpoints: Option<Arc<Checkpoints>>,
    ended: watch::Sender<bool>,
}

impl Driver {
    async fn run(self, mut stop: oneshot::Receiver<Stop>) -> Result<Stopped, RunError> {
        let Driver {
            client,
            pipeline,
            normalizer,
            watch,
            leader,
            server,
            heartbeat,
            checkpoints,
            ended,
        } = self;
        // The heartbeat outlives nothing it reports on.
        let _heartbeat = AbortOnDrop(heartbeat);
        // With leader election, stand by (sinks loaded, nothing watched)
        // until this replica holds the Lease; stopped meanwhile, just end.
        let mut leadership = None;
        if let Some(options) = leader {
            tokio::select! {
                acquired = Leadership::acquire(client.clone(), options) => {
                    leadership = Some(acquired?);
                }
                stopping = &mut stop => {
                    tracing::info!("stopped while standing by");
                    return Ok(Stopped {
                        shutdown: None,
                        grace: stopping.map(|s| s.grace).unwrap_or_default(),
                        error: None,
                    });
                }
            }
        }
        // What the checkpointed sinks delivered before (an earlier run, the
        // previous leader) is not delivered again.
        let writer = match &checkpoints {
            Some(c) => {
                match c.load().await {
                    Ok(loaded) => {
                        tracing::info!(configmap = %c.name(), frontiers = loaded, "checkpoint read")
                    }
                    Err(e) => {
                        let error = kubesink_host::log::sanitize(&e.to_string(), 1024);
                        tracing::warn!(%error, "cannot read the checkpoint; log sinks get again what the cluster still holds");
                    }
                }
                Some(AbortOnDrop(
                    c.clone().spawn_writer(crate::checkpoint::INTERVAL),
                ))
            }
            None => None,
        };
        let watching = tokio::spawn(crate::source::watch::run(
            client,
            pipeline.clone(),
            normalizer,
            watch,
        ));
        tracing::info!("watching; stop with Ctrl-C or SIGTERM");
        let (stopping, lost) = match leadership.as_mut() {
            Some(l) => tokio::select! {
                stopping = &mut stop => (stopping, None),
                reason = l.lost() => {
                    // Not the leader any more: deliver nothing new.
                    watching.abort();
                    let _ = ended.send(true);
                    (stop.await, Some(reason))
                }
            },
            None => (stop.await, None),
        };
        // An error means the handle was dropped, which aborts this task.
        let Stop { grace, modules } = stopping.unwrap_or(Stop {
            grace: Duration::ZERO,
            modules: Vec::new(),
        });
        if lost.is_none() {
            tracing::info!("stopping: delivering what is queued");
        }
        watching.abort();
        let _ = watching.await;
        drop(modules);
        let shutdown = pipeline.shutdown(grace).await;
        drop(writer);
        // What the queues delivered is written before a standby may take
        // over.
        if let Some(c) = &checkpoints
            && let Err(e) = c.save().await
        {
            let error = kubesink_host::log::sanitize(&e.to_string(), 1024);
            tracing::warn!(%error, "cannot write the checkpoint at shutdown; the next start may deliver again what was delivered since the last write");
        }
        if let Some(server) = server {
            server.stop();
        }
        // The queues are delivered: give the Lease to a standby.
        if let Some(l) = leadership {
            l.release().await;
        }
        Ok(Stopped {
            shutdown: Some(shutdown),
            grace,
            error: lost.map(RunError::LeadershipLost),
        })
    }
}

/// Aborts a task when dropped.
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::SinkReport;

    fn stopped(failed: u64, undelivered: u64, error: Option<RunError>) -> Stopped {
        let report = SinkReport {
            name: "s".into(),
            failed,
            ..SinkReport::default()
        };
        Stopped {
            shutdown: Some(ShutdownReport {
                reports: vec![report],
                undelivered: if undelivered > 0 {
                    vec![("s".into(), undelivered)]
                } else {
                    Vec::new()
                },
            }),
            grace: Duration::from_secs(1),
            error,
        }
    }

    #[test]
    fn exit_status_is_error_then_undelivered_then_rejected() {
        let lost = || {
            Some(RunError::LeadershipLost(LeaderError::Duration(
                Duration::ZERO,
            )))
        };
        assert_eq!(stopped(0, 0, None).exit_status(), ExitStatus::Delivered);
        assert_eq!(stopped(2, 0, None).exit_status(), ExitStatus::Rejected);
        assert_eq!(stopped(2, 3, None).exit_status(), ExitStatus::Undelivered);
        assert_eq!(stopped(2, 3, lost()).exit_status(), ExitStatus::Error);
        let standing_by = Stopped {
            shutdown: None,
            grace: Duration::ZERO,
            error: None,
        };
        assert_eq!(standing_by.exit_status(), ExitStatus::Delivered);
    }

    #[tokio::test]
    async fn a_kubeconfig_that_cannot_be_read_is_named() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("missing.kubeconfig");
        let err = Cluster::Kubeconfig(Some(path.clone()))
            .connect()
            .await
            .err()
            .expect("a missing kubeconfig fails");
        assert!(
            err.to_string()
                .contains(&format!("kubeconfig {}", path.display())),
            "{err}"
        );
    }
}
