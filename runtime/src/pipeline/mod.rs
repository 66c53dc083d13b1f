//! From records to sinks: one bounded queue and one worker per sink, so a
//! slow or failing sink never holds back another (beyond the backpressure a
//! full queue puts on the source), and nothing is dropped.
//!
//! Where each part lives:
//! - `lanes`: a sink's lanes (queue and worker, `workers:`
//!   of them), routing entries into their queues ([`Pipeline::send`]), and
//!   module swaps ([`ModuleSlot`]); the queues themselves are in [`queue`];
//! - `worker`: a lane's worker — takes batches, answers `held` requests
//!   between them, takes swapped-in instances, asks for catch-ups;
//! - `deliver`: writing one batch, with retries and bisection (below);
//! - `instance`: what a worker needs of a sink instance, as a trait
//!   implemented by [`kubesink_host::SinkInstance`] and, in the unit tests,
//!   by in-process fakes;
//! - `reconcile`: reconciliation against what sinks hold ([`HeldLimits`])
//!   and a lagging sink's catch-up; the lag itself is in [`lag`];
//! - `shutdown`: stopping, within a grace or to the end;
//! - `stats`: the counters per sink and the reports made of them;
//! - `entry`: tombstones and how entries are named in logs.
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
//! redelivered to the new one instead of holding the swap back. A sink
//! whose module comes from a ConfigMap starts without an instance: its
//! records queue up (bounded, as for a slow sink) and are delivered once
//! the first version is swapped in.
//!
//! Nothing here wakes up while nothing happens: every wait (for an entry,
//! for room in a queue, for a state change, for a worker to end) is on a
//! signal, and the only timers are batching delays, retry backoffs and
//! deadlines.

pub(crate) mod backoff;
mod deliver;
mod entry;
pub(crate) mod frontier;
mod instance;
pub(crate) mod lag;
mod lanes;
pub(crate) mod queue;
mod reconcile;
mod shutdown;
mod stats;
mod worker;

#[cfg(test)]
mod tests;

use std::sync::Arc;

use kubesink_host::{Host, HostError};
use kubesink_normalize::record::{RecordKind, Shape};
use thiserror::Error;
use tokio::sync::mpsc;

use crate::config::{self, SinkPlan};
use crate::ops::Ops;
use frontier::Frontiers;
use instance::Instance;
use lag::{LagState, SinkLag};
use lanes::{Lane, SinkHandle};
pub use lanes::{ModuleSlot, SwapError};
use queue::SinkQueue;
use reconcile::CatchUpLink;
pub use reconcile::HeldLimits;
pub use stats::{DeliveryCounters, ShutdownReport, SinkReport};
use worker::{SinkContext, WorkerConfig};

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

/// What the pipeline needs of a sink's configuration to run it.
struct SinkSetup {
    config: WorkerConfig,
    records: Vec<config::RecordKind>,
    /// Shared by the sink's workers.
    queue_capacity: usize,
    coalesce: bool,
    /// Whether it keeps delivery frontiers for a durable checkpoint.
    checkpoint: bool,
}

impl SinkSetup {
    /// From the sink's configuration and the shape its module declares
    /// (`None`: not known yet, a ConfigMap module): a state sink's queue
    /// coalesces; a log sink keeps a checkpoint. The configuration
    /// (`queue.coalesce`, `checkpoint`) overrides both; a checkpointed
    /// queue never coalesces ([`config`] refuses both set).
    fn of(plan: &SinkPlan, shape: Option<Shape>) -> Self {
        let checkpoint = plan.checkpoint.unwrap_or(shape == Some(Shape::Log));
        Self {
            config: WorkerConfig::of(plan),
            records: plan.records.clone(),
            queue_capacity: plan.queue_capacity,
            coalesce: !checkpoint && plan.coalesce.unwrap_or(shape == Some(Shape::State)),
            checkpoint,
        }
    }
}

/// The running sinks.
pub struct Pipeline {
    sinks: Vec<SinkHandle>,
    ops: Arc<Ops>,
    catch_up: CatchUpLink,
    held_limits: HeldLimits,
}

impl std::fmt::Debug for Pipeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.sinks.iter().map(|s| &s.name))
            .finish()
    }
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
        let mut pipeline = Pipeline::empty(ops);
        for plan in plans {
            // None when its module comes from a ConfigMap: `crate::modules`
            // swaps the first version in when it has one.
            let spec = crate::modules::file_spec(&plan)
                .await
                .map_err(PipelineError::Pin)?;
            let mut instances = Vec::new();
            for _ in 0..plan.workers.max(1) {
                instances.push(match &spec {
                    // Loaded one after another: a sink's `init` (its
                    // schema, say) never races another instance's.
                    Some(spec) => Some(host.load(spec.clone()).await.map_err(PipelineError::Load)?),
                    None => None,
                });
            }
            let shape = instances
                .first()
                .and_then(Option::as_ref)
                .map(|i: &kubesink_host::SinkInstance| i.wants().shape);
            pipeline.add_sink(SinkSetup::of(&plan, shape), instances, |swaps| swaps);
            pipeline.ops.metrics.watch_cpu(plan.cpu_meter(host));
        }
        Ok(pipeline)
    }

    /// A pipeline without sinks, reporting to `ops`.
    fn empty(ops: Arc<Ops>) -> Pipeline {
        Pipeline {
            sinks: Vec::new(),
            ops,
            catch_up: CatchUpLink::default(),
            held_limits: HeldLimits::default(),
        }
    }

    /// Starts a sink with one worker per element of `instances` (each
    /// `None` until a module is swapped in). `lane_swaps` makes each lane's
    /// end for [`ModuleSlot`] out of the channel its worker takes new
    /// instances from (the identity for [`kubesink_host::SinkInstance`]).
    fn add_sink<S: Instance>(
        &mut self,
        setup: SinkSetup,
        instances: Vec<Option<S>>,
        mut lane_swaps: impl FnMut(mpsc::Sender<lanes::Swap<S>>) -> mpsc::Sender<lanes::Swap>,
    ) {
        let name = setup.config.name.clone();
        let lag = Arc::new(SinkLag::new(&name));
        let sink = SinkContext {
            config: setup.config,
            counters: Arc::new(DeliveryCounters::new(&name, &self.ops)),
            frontiers: setup
                .checkpoint
                .then(|| Arc::new(Frontiers::new(lag.clone()))),
            lag,
            catch_up: self.catch_up.clone(),
        };
        // The sink's capacity is shared by its workers' queues.
        let capacity = setup.queue_capacity.div_ceil(instances.len().max(1));
        let lanes: Vec<Lane> = instances
            .into_iter()
            .map(|instance| {
                let queue = Arc::new(SinkQueue::new(capacity, setup.coalesce));
                let (tx, rx) = mpsc::channel(1);
                Lane::spawn(instance, queue, sink.clone(), (lane_swaps(tx), rx))
            })
            .collect();
        let queues = || lanes.iter().map(|l| Arc::downgrade(&l.queue)).collect();
        self.ops.metrics.watch_queue(&name, queues());
        sink.lag.set_queues(queues());
        self.ops.metrics.watch_lag(Arc::downgrade(&sink.lag));
        self.ops.health.watch_lag(Arc::downgrade(&sink.lag));
        self.sinks.push(SinkHandle {
            name,
            records: setup.records,
            counters: sink.counters,
            lag: sink.lag,
            headroom: capacity,
            lanes,
            frontiers: sink.frontiers,
            recent: Arc::default(),
        });
    }

    fn sink(&self, name: &str) -> Option<&SinkHandle> {
        self.sinks.iter().find(|s| s.name == name)
    }

    /// The state of sink `name` (`None`: no such sink).
    pub(crate) fn lag_state(&self, name: &str) -> Option<LagState> {
        self.sink(name).map(|s| s.lag.state())
    }

    /// The record kinds sink `name` receives.
    pub(crate) fn sink_kinds(&self, name: &str) -> Vec<RecordKind> {
        self.sink(name).map_or_else(Vec::new, |s| {
            s.records
                .iter()
                .copied()
                .map(entry::from_configured)
                .collect()
        })
    }

    /// The delivery frontiers of every sink that keeps a checkpoint, by
    /// sink name.
    pub(crate) fn checkpointed(&self) -> Vec<(String, Arc<Frontiers>)> {
        self.sinks
            .iter()
            .filter_map(|s| Some((s.name.clone(), s.frontiers.clone()?)))
            .collect()
    }

    /// The source starts (`true`) or ends listing `resource` (a kind):
    /// the frontiers of that resource stay put meanwhile.
    pub(crate) fn listing(&self, resource: &str, listing: bool) {
        for frontiers in self.sinks.iter().filter_map(|s| s.frontiers.as_ref()) {
            frontiers.listing(resource, listing);
        }
    }

    /// The metrics and health state this pipeline reports to.
    pub fn ops(&self) -> &Arc<Ops> {
        &self.ops
    }
}
