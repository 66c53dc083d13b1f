//! A sink's worker: takes batches from its queue and writes them to its
//! instance, with retries, bisection of failing batches, module swaps and
//! `held` requests (moved out of `mod.rs` unchanged).

use std::sync::Arc;
use std::sync::atomic::Ordering;

use kubesink_host::{SinkInstance, WriteError};
use kubesink_normalize::record::Entry;
use tokio::sync::mpsc;

use super::backoff::Backoff;
use super::lag::SinkLag;
use super::queue::SinkQueue;
use super::{CatchUpLink, Control, SinkStats, Swap, describe};
use crate::config::SinkPlan;
use crate::ops::health::Health;

/// The `cause` label of a failed call: the host's fault cause (`timeout`,
/// `memory`, `trap`, ...), `fatal` for the sink's own fatal error,
/// `retryable` for a retryable one.
fn fault_cause(err: &WriteError) -> String {
    match err {
        WriteError::Fault { cause, .. } => cause.to_string(),
        WriteError::Fatal(_) => "fatal".to_owned(),
        WriteError::Retryable(_) => "retryable".to_owned(),
    }
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

/// How many times a failing batch is halved at most (up to 64 pieces), so a
/// sink that fails every call costs a bounded number of calls per batch.
const MAX_SPLIT_DEPTH: u32 = 6;

pub(super) struct Worker {
    pub(super) instance: SinkInstance,
    pub(super) queue: Arc<SinkQueue>,
    pub(super) stats: Arc<SinkStats>,
    pub(super) plan: SinkPlan,
    /// New instances for the sink ([`super::ModuleSlot::swap`]).
    pub(super) swaps: mpsc::Receiver<Swap>,
    /// The sink's lag, shared by its workers.
    pub(super) lag: Arc<SinkLag>,
    /// Where to ask for a catch-up.
    pub(super) catch_up: CatchUpLink,
}

impl Worker {
    /// A sink without a module yet: answers control requests until the
    /// first instance is swapped in, then runs as a worker. Its records
    /// wait in the queue meanwhile. Ends (reporting what was not delivered)
    /// when the queue is closed first.
    pub(super) async fn wait_for_module(
        queue: Arc<SinkQueue>,
        stats: Arc<SinkStats>,
        plan: SinkPlan,
        (lag, catch_up): (Arc<SinkLag>, CatchUpLink),
        mut control: mpsc::Receiver<Control>,
        mut swaps: mpsc::Receiver<Swap>,
    ) {
        let name = plan.spec.name.clone();
        let mut tick = tokio::time::interval(std::time::Duration::from_millis(100));
        loop {
            tokio::select! {
                swap = swaps.recv() => match swap {
                    Some(Swap { instance, reply }) => {
                        tracing::info!(sink = %name, module = %instance.origin(), queued = queue.len(), "module loaded; the sink starts");
                        let _ = reply.send(());
                        return Worker { instance, queue, stats, plan, swaps, lag, catch_up }.run(control).await;
                    }
                    None => return,
                },
                request = control.recv() => match request {
                    Some(Control::Held { reply, .. }) => {
                        let _ = reply.send(Err(format!(
                            "sink '{name}' has no module yet (waiting for {})",
                            plan.module.origin()
                        )));
                    }
                    None => return,
                },
                _ = tick.tick() => {
                    if queue.is_closed() {
                        tracing::error!(sink = %name, module = %plan.module.origin(), undelivered = queue.len(), "stopping before the sink's module was ever loaded; its queued records were not delivered");
                        return;
                    }
                }
            }
        }
    }

    pub(super) async fn run(mut self, mut control: mpsc::Receiver<Control>) {
        self.stats.health.sink_ready(&self.plan.spec.name);
        let _panic_guard = PanicGuard {
            sink: self.plan.spec.name.clone(),
            health: self.stats.health.clone(),
        };
        let mut failures = Backoff::new(self.plan.retry.initial, self.plan.retry.max);
        let mut control_open = true;
        let mut swaps_open = true;
        loop {
            let lag = self.lag.clone();
            let lagged = lag.lagged();
            // It may have fallen behind while idle or before it could
            // write (no module yet): registered first, so none is missed.
            self.maybe_catch_up();
            // `next_batch` takes entries only after its last await, so it is
            // safe to drop it when a control request wins.
            tokio::select! {
                biased;
                request = control.recv(), if control_open => match request {
                    Some(Control::Held { kind, reply }) => {
                        if reply.is_closed() {
                            // Asked long ago; the asker gave up (deadline).
                            continue;
                        }
                        while !self.queue.is_empty() {
                            let Some(batch) = self
                                .queue
                                .next_batch(self.plan.batch.max_records, std::time::Duration::ZERO)
                                .await
                            else {
                                break;
                            };
                            self.deliver(batch, &mut failures).await;
                        }
                        let started = std::time::Instant::now();
                        let answer = self.instance.held(kind).await.map_err(|e| e.to_string());
                        self.stats.metrics.add_guest_time(started.elapsed());
                        let _ = reply.send(answer);
                    }
                    None => control_open = false,
                },
                swap = self.swaps.recv(), if swaps_open => match swap {
                    Some(swap) => self.take(swap, "between batches"),
                    None => swaps_open = false,
                },
                // Fell behind while idle (it could not answer `held`).
                () = lagged => self.maybe_catch_up(),
                batch = self.queue.next_batch(self.plan.batch.max_records, self.plan.batch.max_delay) => {
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
        if !self.lag.start_catch_up() {
            return;
        }
        let name = &self.plan.spec.name;
        if self.catch_up.request(name) {
            tracing::info!(sink = %name, skipped = self.lag.skipped(), lag = ?self.lag.lag(), "sink delivered its queue; catching up from a fresh listing");
        } else {
            tracing::warn!(sink = %name, "no source takes catch-up requests now; the sink stays lagging until the watches start again");
            self.lag.catch_up_failed();
        }
    }

    /// Makes `swap`'s instance the sink's; the old one is dropped.
    fn take(&mut self, swap: Swap, when: &str) {
        let old = std::mem::replace(&mut self.instance, swap.instance);
        tracing::info!(sink = %self.plan.spec.name, from = %old.origin(), to = %self.instance.origin(), "module swapped {when}");
        drop(old);
        let _ = swap.reply.send(());
    }

    /// Waits `delay` before a retry; a new instance arriving meanwhile is
    /// taken at once, and the retry goes to it.
    async fn pause(&mut self, delay: std::time::Duration) {
        let deadline = tokio::time::Instant::now() + delay;
        tokio::select! {
            _ = tokio::time::sleep_until(deadline) => {}
            swap = self.swaps.recv() => match swap {
                Some(swap) => {
                    self.take(swap, "during a retry's backoff; the batch goes to the new instance");
                }
                // No more swaps can come: wait out the delay.
                None => tokio::time::sleep_until(deadline).await,
            }
        }
    }

    /// Delivers one batch: retries retryable errors; on a fatal error or a
    /// fault, splits the batch to isolate the entries at fault.
    async fn deliver(&mut self, batch: Vec<Entry>, failures: &mut Backoff) {
        let name = self.plan.spec.name.clone();
        let mut pending = vec![(0, batch)];
        while let Some((depth, batch)) = pending.pop() {
            let mut retry = Backoff::new(self.plan.retry.initial, self.plan.retry.max);
            loop {
                self.stats.batches.fetch_add(1, Ordering::Relaxed);
                let started = std::time::Instant::now();
                let result = self.instance.write(&batch).await;
                let elapsed = started.elapsed();
                self.stats.metrics.observe_batch(elapsed);
                self.stats.metrics.add_guest_time(elapsed);
                match result {
                    Ok(()) => {
                        self.stats
                            .delivered
                            .fetch_add(batch.len() as u64, Ordering::Relaxed);
                        self.stats.metrics.delivered.inc_by(batch.len() as u64);
                        tracing::debug!(sink = %name, records = batch.len(), ?elapsed, "batch delivered");
                        self.lag.set_retrying(false);
                        failures.reset();
                        break;
                    }
                    Err(WriteError::Retryable(message)) => {
                        self.lag.set_retrying(true);
                        self.stats.retries.fetch_add(1, Ordering::Relaxed);
                        self.stats.metrics.retries.inc();
                        let bound = retry.bound();
                        let delay = retry.next_delay();
                        tracing::warn!(sink = %name, records = batch.len(), %message, retry_in = ?delay, retry_bound = ?bound, "retryable error; will redeliver the batch");
                        self.pause(delay).await;
                    }
                    Err(err) => {
                        self.lag.set_retrying(true);
                        self.stats.faults.fetch_add(1, Ordering::Relaxed);
                        self.stats.metrics.fault(&fault_cause(&err));
                        let delay = failures.next_delay();
                        if batch.len() > 1 && depth < MAX_SPLIT_DEPTH {
                            tracing::warn!(sink = %name, records = batch.len(), error = %err, "batch failed; splitting it to isolate the entries at fault");
                            let mut first = batch;
                            let second = first.split_off(first.len() / 2);
                            pending.push((depth + 1, second));
                            pending.push((depth + 1, first));
                        } else {
                            self.stats
                                .failed
                                .fetch_add(batch.len() as u64, Ordering::Relaxed);
                            self.stats.metrics.failed.inc_by(batch.len() as u64);
                            for entry in &batch {
                                let object = describe(entry);
                                tracing::error!(sink = %name, %object, error = %err, "entry failed for good");
                            }
                        }
                        // The next write runs in a fresh instance.
                        self.instance.invalidate();
                        self.pause(delay).await;
                        break;
                    }
                }
            }
        }
    }
}
