//! From records to sinks: one bounded queue and one worker per sink, so a
//! slow or failing sink never holds back another (beyond the backpressure a
//! full queue puts on the source), and nothing is dropped.
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

pub mod backoff;
pub mod queue;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use std::collections::HashSet;

use kubesink_host::{Host, HostError, SinkInstance, WriteError};
use kubesink_normalize::record::{
    Change, Entry, Event, Job, Meta, ObjectRef, Pod, Record, RecordKind, Timestamp,
};
use thiserror::Error;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::config::{RecordKind as RecordKind_, SinkPlan};
use backoff::Backoff;
use queue::{Pushed, SinkQueue};

/// Errors starting the pipeline.
#[derive(Debug, Error)]
pub enum PipelineError {
    /// Loading a sink failed; the host's error names the sink and the module.
    #[error(transparent)]
    Load(HostError),
}

/// Counters of one sink.
#[derive(Debug, Default)]
pub struct SinkStats {
    /// Entries queued for the sink (after coalescing, counted once each).
    pub received: AtomicU64,
    /// Entries replaced by a newer update while waiting.
    pub coalesced: AtomicU64,
    /// Entries the sink accepted.
    pub delivered: AtomicU64,
    /// Entries the sink rejected for good (fatal errors, faults).
    pub failed: AtomicU64,
    /// Batches retried after a retryable error.
    pub retries: AtomicU64,
    /// Faults: traps, deadlines, memory caps, fatal errors.
    pub faults: AtomicU64,
    /// Batches written.
    pub batches: AtomicU64,
}

/// A snapshot of [`SinkStats`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SinkReport {
    pub name: String,
    pub received: u64,
    pub coalesced: u64,
    pub delivered: u64,
    pub failed: u64,
    pub retries: u64,
    pub faults: u64,
    pub batches: u64,
}

impl SinkStats {
    fn report(&self, name: &str) -> SinkReport {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        SinkReport {
            name: name.to_owned(),
            received: g(&self.received),
            coalesced: g(&self.coalesced),
            delivered: g(&self.delivered),
            failed: g(&self.failed),
            retries: g(&self.retries),
            faults: g(&self.faults),
            batches: g(&self.batches),
        }
    }
}

/// Requests a worker answers between batches.
enum Control {
    /// Deliver what is queued, then ask the sink what it holds.
    Held {
        kind: RecordKind,
        reply: oneshot::Sender<Result<Vec<String>, String>>,
    },
}

struct SinkHandle {
    control: mpsc::Sender<Control>,
    name: String,
    records: Vec<RecordKind_>,
    queue: Arc<SinkQueue>,
    stats: Arc<SinkStats>,
    worker: JoinHandle<()>,
}

/// The running sinks.
pub struct Pipeline {
    sinks: Vec<SinkHandle>,
}

impl std::fmt::Debug for Pipeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.sinks.iter().map(|s| &s.name))
            .finish()
    }
}

fn kind_of(record: &Record) -> RecordKind_ {
    match record {
        Record::Job(_) => RecordKind_::Jobs,
        Record::Pod(_) => RecordKind_::Pods,
        Record::Event(_) => RecordKind_::Events,
    }
}

/// A `removed` entry for an object known only by its uid: every other field
/// empty and `resource-version-num` 0, so a sink marks its stored record
/// removed without changing the stored fields.
pub fn tombstone(kind: RecordKind, uid: String, at: Timestamp) -> Entry {
    let zero = Timestamp {
        seconds: 0,
        nanos: 0,
    };
    let meta = Meta {
        uid,
        name: String::new(),
        namespace: String::new(),
        resource_version: String::new(),
        resource_version_num: 0,
        labels: Vec::new(),
        created: zero,
    };
    let record = match kind {
        RecordKind::Job => Record::Job(Job {
            meta,
            api_version: String::new(),
            kind: String::new(),
            status: String::new(),
            resources: String::new(),
            tenant: String::new(),
            owner: String::new(),
            region: String::new(),
            modified: zero,
            running_at: None,
            finished_at: None,
            remark: String::new(),
        }),
        RecordKind::Pod => Record::Pod(Pod {
            meta,
            job_uid: String::new(),
            job_kind: String::new(),
            replica_type: String::new(),
            status: String::new(),
            image: String::new(),
            resources: String::new(),
            host_ip: String::new(),
            pod_ip: String::new(),
            region: String::new(),
            modified: zero,
            started_at: None,
            finished_at: None,
            remark: String::new(),
        }),
        RecordKind::Event => Record::Event(Event {
            meta,
            involved: ObjectRef {
                api_version: String::new(),
                kind: String::new(),
                namespace: String::new(),
                name: String::new(),
                uid: String::new(),
            },
            event_type: String::new(),
            reason: String::new(),
            message: String::new(),
            source: String::new(),
            count: 0,
            first_seen: zero,
            last_seen: zero,
            region: String::new(),
        }),
    };
    Entry {
        change: Change::Removed(at),
        record,
    }
}

/// Names an entry's object in logs: `Pod ns/name (uid)`.
pub fn describe(entry: &Entry) -> String {
    let (kind, meta) = match &entry.record {
        Record::Job(j) => (j.kind.as_str(), &j.meta),
        Record::Pod(p) => ("Pod", &p.meta),
        Record::Event(e) => ("Event", &e.meta),
    };
    format!("{kind} {}/{} ({})", meta.namespace, meta.name, meta.uid)
}

impl Pipeline {
    /// Loads every sink (compiling, instantiating and calling `init`) and
    /// starts its worker. A sink that cannot be loaded is a startup error
    /// naming it.
    pub async fn start(host: &Host, plans: Vec<SinkPlan>) -> Result<Pipeline, PipelineError> {
        let mut sinks = Vec::new();
        for plan in plans {
            let name = plan.spec.name.clone();
            let instance = host
                .load(plan.spec.clone())
                .await
                .map_err(PipelineError::Load)?;
            let queue = Arc::new(SinkQueue::new(plan.queue_capacity, plan.coalesce));
            let stats = Arc::new(SinkStats::default());
            let (control, control_rx) = mpsc::channel(4);
            let worker = tokio::spawn(
                Worker {
                    instance,
                    queue: queue.clone(),
                    stats: stats.clone(),
                    plan: plan.clone(),
                }
                .run(control_rx),
            );
            sinks.push(SinkHandle {
                control,
                name,
                records: plan.records,
                queue,
                stats,
                worker,
            });
        }
        Ok(Pipeline { sinks })
    }

    /// Queues an entry for every sink that receives its kind, waiting while
    /// a queue is full.
    pub async fn send(&self, entry: Entry) {
        let kind = kind_of(&entry.record);
        let targets: Vec<&SinkHandle> = self
            .sinks
            .iter()
            .filter(|s| s.records.contains(&kind))
            .collect();
        let Some((last, rest)) = targets.split_last() else {
            return;
        };
        for s in rest {
            Self::push(s, entry.clone()).await;
        }
        Self::push(last, entry).await;
    }

    async fn push(sink: &SinkHandle, entry: Entry) {
        match sink.queue.push(entry).await {
            Pushed::Queued => {
                sink.stats.received.fetch_add(1, Ordering::Relaxed);
            }
            Pushed::Coalesced => {
                sink.stats.coalesced.fetch_add(1, Ordering::Relaxed);
            }
            Pushed::Closed => {
                tracing::error!(sink = %sink.name, "queue closed; entry not taken");
            }
        }
    }

    /// After a complete listing of `kind` (`listed`: the uids the cluster
    /// has), delivers a `removed` tombstone to every sink for each uid it
    /// holds that the cluster no longer has (deleted while kubesink was not
    /// watching). Each sink first delivers what is queued for it. Returns
    /// how many tombstones were queued; a sink that cannot answer is logged
    /// and skipped (the next listing tries again).
    pub async fn reconcile(
        &self,
        kind: RecordKind,
        listed: &HashSet<String>,
        at: Timestamp,
    ) -> usize {
        let record_kind = match kind {
            RecordKind::Job => RecordKind_::Jobs,
            RecordKind::Pod => RecordKind_::Pods,
            RecordKind::Event => RecordKind_::Events,
        };
        let mut sent = 0;
        for sink in self
            .sinks
            .iter()
            .filter(|s| s.records.contains(&record_kind))
        {
            let (reply, answer) = oneshot::channel();
            if sink
                .control
                .send(Control::Held { kind, reply })
                .await
                .is_err()
            {
                continue;
            }
            match answer.await {
                Ok(Ok(held)) => {
                    for uid in held.into_iter().filter(|u| !listed.contains(u)) {
                        Self::push(sink, tombstone(kind, uid, at)).await;
                        sent += 1;
                    }
                }
                Ok(Err(message)) => {
                    tracing::warn!(sink = %sink.name, ?kind, %message, "cannot ask the sink what it holds; objects removed while not watching are marked at the next listing");
                }
                Err(_) => {}
            }
        }
        sent
    }

    /// Counters of every sink, in configuration order.
    pub fn reports(&self) -> Vec<SinkReport> {
        self.sinks.iter().map(|s| s.stats.report(&s.name)).collect()
    }

    /// Entries waiting per sink.
    pub fn depths(&self) -> Vec<(String, usize)> {
        self.sinks
            .iter()
            .map(|s| (s.name.clone(), s.queue.len()))
            .collect()
    }

    /// [`finish`](Self::finish) for a pipeline shared with sources that are
    /// being stopped: waits (up to 10 s) for their references to go.
    pub async fn finish_shared(
        mut pipeline: Arc<Pipeline>,
    ) -> Result<Vec<SinkReport>, Arc<Pipeline>> {
        for _ in 0..1000 {
            match Arc::try_unwrap(pipeline) {
                Ok(p) => return Ok(p.finish().await),
                Err(shared) => pipeline = shared,
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        Err(pipeline)
    }

    /// Closes the queues, lets every worker deliver what is queued, and
    /// returns the final counters.
    pub async fn finish(self) -> Vec<SinkReport> {
        for s in &self.sinks {
            s.queue.close();
        }
        let mut reports = Vec::new();
        for s in self.sinks {
            if let Err(e) = s.worker.await {
                tracing::error!(sink = %s.name, error = %e, "sink worker ended abnormally");
            }
            reports.push(s.stats.report(&s.name));
        }
        reports
    }
}

/// How many times a failing batch is halved at most (up to 64 pieces), so a
/// sink that fails every call costs a bounded number of calls per batch.
const MAX_SPLIT_DEPTH: u32 = 6;

struct Worker {
    instance: SinkInstance,
    queue: Arc<SinkQueue>,
    stats: Arc<SinkStats>,
    plan: SinkPlan,
}

impl Worker {
    async fn run(mut self, mut control: mpsc::Receiver<Control>) {
        let mut failures = Backoff::new(self.plan.retry.initial, self.plan.retry.max);
        let mut control_open = true;
        loop {
            // `next_batch` takes entries only after its last await, so it is
            // safe to drop it when a control request wins.
            tokio::select! {
                biased;
                request = control.recv(), if control_open => match request {
                    Some(Control::Held { kind, reply }) => {
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
                        let answer = self.instance.held(kind).await.map_err(|e| e.to_string());
                        let _ = reply.send(answer);
                    }
                    None => control_open = false,
                },
                batch = self.queue.next_batch(self.plan.batch.max_records, self.plan.batch.max_delay) => {
                    match batch {
                        Some(batch) => self.deliver(batch, &mut failures).await,
                        None => break,
                    }
                }
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
                match result {
                    Ok(()) => {
                        self.stats
                            .delivered
                            .fetch_add(batch.len() as u64, Ordering::Relaxed);
                        tracing::debug!(sink = %name, records = batch.len(), ?elapsed, "batch delivered");
                        failures.reset();
                        break;
                    }
                    Err(WriteError::Retryable(message)) => {
                        self.stats.retries.fetch_add(1, Ordering::Relaxed);
                        let delay = retry.next_delay();
                        tracing::warn!(sink = %name, records = batch.len(), %message, retry_in = ?delay, "retryable error; will redeliver the batch");
                        tokio::time::sleep(delay).await;
                    }
                    Err(err) => {
                        self.stats.faults.fetch_add(1, Ordering::Relaxed);
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
                            for entry in &batch {
                                let object = describe(entry);
                                tracing::error!(sink = %name, %object, error = %err, "entry failed for good");
                            }
                        }
                        // The next write runs in a fresh instance.
                        self.instance.invalidate();
                        tokio::time::sleep(delay).await;
                        break;
                    }
                }
            }
        }
    }
}
