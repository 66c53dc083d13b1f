//! Delivering one batch: retryable errors are retried with backoff
//! ([`super::backoff`]); on a fatal error or a fault the instance is
//! rebuilt and the batch is bisected, so that only the entries the sink
//! rejects on their own are recorded as failed.

use std::sync::atomic::Ordering;
use std::time::Duration;

use kubesink_host::CallError;
use kubesink_normalize::record::Entry;

use super::backoff::Backoff;
use super::entry::describe;
use super::instance::Instance;
use super::worker::Worker;

/// The `cause` label of a failed call: the host's fault cause (`timeout`,
/// `memory`, `trap`, ...), `fatal` for the sink's own fatal error,
/// `retryable` for a retryable one.
fn fault_cause(err: &CallError) -> String {
    match err {
        CallError::Fault { cause, .. } => cause.to_string(),
        CallError::Fatal(_) => "fatal".to_owned(),
        CallError::Retryable(_) => "retryable".to_owned(),
    }
}

/// How many times a failing batch is halved at most (up to 64 pieces), so a
/// sink that fails every call costs a bounded number of calls per batch.
pub(super) const MAX_SPLIT_DEPTH: u32 = 6;

impl<S: Instance> Worker<S> {
    /// Waits `delay` before a retry; a new instance arriving meanwhile is
    /// taken at once, and the retry goes to it.
    async fn pause(&mut self, delay: Duration) {
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
    /// `failures` is the backoff between consecutive failed calls, kept
    /// across batches (reset by a delivered one).
    pub(super) async fn deliver(&mut self, batch: Vec<Entry>, failures: &mut Backoff) {
        let name = self.sink.config.name.clone();
        let retry_config = self.sink.config.retry.clone();
        let counters = self.sink.counters.clone();
        let lag = self.sink.lag.clone();
        let mut pending = vec![(0, batch)];
        while let Some((depth, batch)) = pending.pop() {
            let mut retry = Backoff::new(retry_config.initial, retry_config.max);
            loop {
                counters.batches.fetch_add(1, Ordering::Relaxed);
                let started = std::time::Instant::now();
                let result = self.instance.write(&batch).await;
                let elapsed = started.elapsed();
                counters.metrics.observe_batch(elapsed);
                counters.metrics.add_guest_time(elapsed);
                match result {
                    Ok(()) => {
                        counters
                            .delivered
                            .fetch_add(batch.len() as u64, Ordering::Relaxed);
                        counters.metrics.delivered.inc_by(batch.len() as u64);
                        tracing::debug!(sink = %name, records = batch.len(), ?elapsed, "batch delivered");
                        if let Some(frontiers) = &self.sink.frontiers {
                            frontiers.settled(&batch);
                        }
                        lag.set_retrying(false);
                        failures.reset();
                        break;
                    }
                    Err(CallError::Retryable(message)) => {
                        lag.set_retrying(true);
                        counters.retries.fetch_add(1, Ordering::Relaxed);
                        counters.metrics.retries.inc();
                        let bound = retry.bound();
                        let delay = retry.next_delay();
                        tracing::warn!(sink = %name, records = batch.len(), %message, retry_in = ?delay, retry_bound = ?bound, "retryable error; will redeliver the batch");
                        self.pause(delay).await;
                    }
                    Err(err) => {
                        lag.set_retrying(true);
                        counters.faults.fetch_add(1, Ordering::Relaxed);
                        counters.metrics.fault(&fault_cause(&err));
                        let delay = failures.next_delay();
                        if batch.len() > 1 && depth < MAX_SPLIT_DEPTH {
                            tracing::warn!(sink = %name, records = batch.len(), error = %err, "batch failed; splitting it to isolate the entries at fault");
                            let mut first = batch;
                            let second = first.split_off(first.len() / 2);
                            pending.push((depth + 1, second));
                            pending.push((depth + 1, first));
                        } else {
                            counters
                                .failed
                                .fetch_add(batch.len() as u64, Ordering::Relaxed);
                            counters.metrics.failed.inc_by(batch.len() as u64);
                            for entry in &batch {
                                let object = describe(entry);
                                tracing::error!(sink = %name, %object, error = %err, "entry failed for good");
                            }
                            if let Some(frontiers) = &self.sink.frontiers {
                                frontiers.settled(&batch);
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
