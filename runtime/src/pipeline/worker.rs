//! A sink's worker: takes batches from its queue and hands them to its
//! instance ([`super::deliver`]), answers `held` requests between batches,
//! takes module swaps, and asks for a catch-up once a lagging sink's queue
//! is delivered.

use std::sync::Arc;

use kubesink_normalize::record::RecordKind;
use tokio::sync::{mpsc, oneshot};

use super::CatchUpLink;
use super::backoff::Backoff;
use super::instance::Instance;
use super::lag::SinkLag;
use super::lanes::{Control, Swap};
use super::queue::SinkQueue;
use super::stats::DeliveryCounters;
use crate::config::{BatchConfig, RetryConfig, SinkPlan};
use crate::ops::health::Health;

/// What a worker needs to know of its sink's configuration.
#[derive(Debug, Clone)]
pub(super) struct WorkerConfig {
    /// The sink's name.
    pub(super) name: String,
    /// Where its configured module comes from (named while none is loaded).
    pub(super) module: String,
    pub(super) batch: BatchConfig,
    pub(super) retry: RetryConfig,
}

impl WorkerConfig {
    pub(super) fn of(plan: &SinkPlan) -> Self {
        Self {
            name: plan.spec.name.clone(),
            module: plan.module.origin(),
            batch: plan.batch.clone(),
            retry: plan.retry.clone(),
        }
    }
}

/// What the workers of one sink share.
#[derive(Clone)]
pub(super) struct SinkContext {
    pub(super) config: WorkerConfig,
    pub(super) counters: Arc<DeliveryCounters>,
    /// The sink's lag.
    pub(super) lag: Arc<SinkLag>,
    /// Where to ask for a catch-up.
    pub(super) catch_up: CatchUpLink,
    /// Its delivery frontiers, when it keeps a checkpoint.
    pub(super) frontiers: Option<Arc<super::frontier::Frontiers>>,
}

/// Reports a sink worker that unwinds from a panic to the health state
/// (`/healthz` then fails).
struct PanicGuard {
    sink: String,
    health: Arc<Health>,
}

impl Drop for PanicGuard {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.health.worker_died(&self.sink);
        }
    }
}

pub(super) struct Worker<S> {
    pub(super) instance: S,
    pub(super) queue: Arc<SinkQueue>,
    pub(super) sink: SinkContext,
    /// New instances for the sink ([`super::ModuleSlot::swap`]).
    pub(super) swaps: mpsc::Receiver<Swap<S>>,
}

impl<S: Instance> Worker<S> {
    /// A sink without a module yet: answers control requests until the
    /// first instance is swapped in, then runs as a worker. Its records
    /// wait in the queue meanwhile. Ends (reporting what was not delivered)
    /// when the queue is closed first.
    pub(super) async fn wait_for_module(
        queue: Arc<SinkQueue>,
        sink: SinkContext,
        mut control: mpsc::Receiver<Control>,
        mut swaps: mpsc::Receiver<Swap<S>>,
    ) {
        let name = sink.config.name.clone();
        // `held` requests wait for the module: answered by the first
        // instance once it has delivered what queued (the asker's deadline
        // still applies). Answering "cannot say" instead would make the
        // sink fall behind and catch up from a listing, delivering what is
        // already queued for it a second time.
        let mut pending = Vec::new();
        loop {
            tokio::select! {
                swap = swaps.recv() => match swap {
                    Some(Swap { instance, reply }) => {
                        tracing::info!(sink = %name, module = %instance.origin(), queued = queue.len(), "module loaded; the sink starts");
                        let _ = reply.send(());
                        let mut worker = Worker { instance, queue, sink, swaps };
                        let retry = &worker.sink.config.retry;
                        let mut failures = Backoff::new(retry.initial, retry.max);
                        for (kind, before, reply) in pending {
                            worker.answer_held(kind, before, reply, &mut failures).await;
                        }
                        return worker.run(control).await;
                    }
                    None => return,
                },
                request = control.recv() => match request {
                    Some(Control::Held { kind, before, reply }) => pending.push((kind, before, reply)),
                    None => return,
                },
                () = queue.closed() => {
                    tracing::error!(sink = %name, module = %sink.config.module, undelivered = queue.len(), "stopping before the sink's module was ever loaded; its queued records were not delivered");
                    return;
                }
            }
        }
    }

    /// Delivers what was queued before queue position `before`, then asks
    /// the sink what it holds of `kind`.
    async fn answer_held(
        &mut self,
        kind: RecordKind,
        before: u64,
        reply: oneshot::Sender<Result<Vec<String>, String>>,
        failures: &mut Backoff,
    ) {
        if reply.is_closed() {
            // Asked long ago; the asker gave up (deadline).
            return;
        }
        let max_records = self.sink.config.batch.max_records;
        while let Some(batch) = self.queue.take(max_records, before) {
            self.deliver(batch, failures).await;
        }
        let started = std::time::Instant::now();
        let answer = self.instance.held(kind).await.map_err(|e| e.to_string());
        self.sink.counters.metrics.add_guest_time(started.elapsed());
        let _ = reply.send(answer);
    }

    pub(super) async fn run(mut self, mut control: mpsc::Receiver<Control>) {
        self.sink.counters.health.sink_ready(&self.sink.config.name);
        self.sink.lag.started();
        let _panic_guard = PanicGuard {
            sink: self.sink.config.name.clone(),
            health: self.sink.counters.health.clone(),
        };
        let retry = &self.sink.config.retry;
        let mut failures = Backoff::new(retry.initial, retry.max);
        let (max_records, max_delay) = (
            self.sink.config.batch.max_records,
            self.sink.config.batch.max_delay,
        );
        let mut control_open = true;
        let mut swaps_open = true;
        loop {
            let lag = self.sink.lag.clone();
            let lagged = lag.lagged();
            // It may have fallen behind while idle or before it could
            // write (no module yet): registered first, so none is missed.
            self.maybe_catch_up();
            // `next_batch` takes entries only after its last await, so it is
            // safe to drop it when a control request wins.
            tokio::select! {
                biased;
                request = control.recv(), if control_open => match request {
                    Some(Control::Held { kind, before, reply }) => {
                        self.answer_held(kind, before, reply, &mut failures).await;
                    }
                    None => control_open = false,
                },
                swap = self.swaps.recv(), if swaps_open => match swap {
                    Some(swap) => self.take(swap, "between batches"),
                    None => swaps_open = false,
                },
                // Fell behind while idle (it could not answer `held`).
                () = lagged => self.maybe_catch_up(),
                batch = self.queue.next_batch(max_records, max_delay) => {
                    match batch {
                        Some(batch) => {
                            self.deliver(batch, &mut failures).await;
                            self.maybe_catch_up();
                        }
                        None => break,
                    }
                }
            }
        }
    }

    /// A lagging sink whose queues are now empty asks for its catch-up.
    fn maybe_catch_up(&self) {
        let lag = &self.sink.lag;
        if !lag.start_catch_up() {
            return;
        }
        let name = &self.sink.config.name;
        if self.sink.catch_up.request(name) {
            tracing::info!(sink = %name, skipped = lag.skipped(), lag = ?lag.lag(), "sink delivered its queue; catching up from a fresh listing");
        } else {
            tracing::warn!(sink = %name, "no source takes catch-up requests now; the sink stays lagging until the watches start again");
            lag.catch_up_failed();
        }
    }

    /// Makes `swap`'s instance the sink's; the old one is dropped.
    pub(super) fn take(&mut self, swap: Swap<S>, when: &str) {
        let old = std::mem::replace(&mut self.instance, swap.instance);
        tracing::info!(sink = %self.sink.config.name, from = %old.origin(), to = %self.instance.origin(), "module swapped {when}");
        drop(old);
        let _ = swap.reply.send(());
    }
}
