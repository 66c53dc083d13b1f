//! Prometheus metrics of the runtime (`prometheus-client`), exposed by
//! [`super::server`] at `/metrics` in the OpenMetrics text format.
//!
//! Per sink (label `sink`): records received, delivered, failed and
//! coalesced, retries, faults by cause (label `cause`: `timeout`, `memory`,
//! `trap`, ... as `kubesink_host` names them, and `fatal` for a sink's own
//! fatal error), the queue depth, a histogram of batch (write call)
//! latency, and the seconds spent in guest calls; how far behind it is
//! (`kubesink_sink_lag_seconds`), its state (`kubesink_sink_state`, one
//! series per `state` — `ok`, `lagging`, `catching_up` — set to one for
//! the current state) and the records it missed while lagging
//! (`kubesink_sink_records_skipped_total`; see [`crate::pipeline::lag`]).
//! Per watched resource (label `resource`): watch restarts.
//!
//! The pipeline takes a [`SinkMetrics`] per sink once and updates its
//! handles directly (an atomic add each), so the hot path takes no lock.
//! Queue depths are read from the queues when the metrics are encoded.

use std::fmt::Write as _;
use std::sync::atomic::AtomicU64;
use std::sync::{Mutex, Weak};
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::pipeline::lag::{LagState, SinkLag};
use crate::pipeline::queue::SinkQueue;

/// Label set of per-sink metrics.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct SinkLabel {
    /// The sink's name from the configuration.
    pub sink: String,
}

/// Label set of sink faults.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct FaultLabel {
    /// The sink's name.
    pub sink: String,
    /// What stopped the call: `timeout`, `memory`, `trap`, `fatal`, ...
    pub cause: String,
}

/// Label set of the sink state gauge.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct StateLabel {
    /// The sink's name.
    pub sink: String,
    /// `ok`, `lagging` or `catching_up`.
    pub state: String,
}

/// Label set of watch metrics.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct ResourceLabel {
    /// The watched resource, e.g. `pods (v1)`.
    pub resource: String,
}

type SecondsCounter = Counter<f64, AtomicU64>;
type HistogramFamily = Family<SinkLabel, Histogram, fn() -> Histogram>;

/// Batch latency buckets: 1 ms doubling to about 33 s.
fn batch_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 16))
}

/// The runtime's metrics registry.
pub struct Metrics {
    registry: Registry,
    received: Family<SinkLabel, Counter>,
    delivered: Family<SinkLabel, Counter>,
    failed: Family<SinkLabel, Counter>,
    coalesced: Family<SinkLabel, Counter>,
    retries: Family<SinkLabel, Counter>,
    faults: Family<FaultLabel, Counter>,
    queue_depth: Family<SinkLabel, Gauge>,
    batch_seconds: HistogramFamily,
    guest_seconds: Family<SinkLabel, SecondsCounter>,
    watch_restarts: Family<ResourceLabel, Counter>,
    queues: Mutex<Vec<(Gauge, Vec<Weak<SinkQueue>>)>>,
    cpu: CpuMetrics,
    skipped: Family<SinkLabel, Counter>,
    lag_seconds: Family<SinkLabel, Gauge<f64, AtomicU64>>,
    state: Family<StateLabel, Gauge>,
    lags: Mutex<Vec<Weak<SinkLag>>>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// The handles of one sink's metrics (cheap clones of shared atomics).
#[derive(Clone, Debug)]
pub(crate) struct SinkMetrics {
    name: String,
    /// Entries queued for the sink.
    pub received: Counter,
    /// Entries the sink accepted.
    pub delivered: Counter,
    /// Entries the sink rejected for good.
    pub failed: Counter,
    /// Entries replaced in the queue by a newer update of the same object.
    pub coalesced: Counter,
    /// Batches redelivered after a retryable error.
    pub retries: Counter,
    /// Entries not queued because the sink was lagging.
    pub skipped: Counter,
    batch_seconds: Histogram,
    guest_seconds: SecondsCounter,
    faults: Family<FaultLabel, Counter>,
}

impl SinkMetrics {
    /// Records the latency of one write call.
    pub(crate) fn observe_batch(&self, elapsed: Duration) {
        self.batch_seconds.observe(elapsed.as_secs_f64());
    }

    /// Adds time spent in guest calls.
    pub(crate) fn add_guest_time(&self, elapsed: Duration) {
        self.guest_seconds.inc_by(elapsed.as_secs_f64());
    }

    /// Counts one fault of `cause` (`timeout`, `memory`, `trap`, `fatal`, ...).
    pub(crate) fn fault(&self, cause: &str) {
        self.faults
            .get_or_create(&FaultLabel {
                sink: self.name.clone(),
                cause: cause.to_owned(),
            })
            .inc();
    }
}

impl Metrics {
    /// An empty registry with every metric family registered.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("kubesink");
        let received = Family::<SinkLabel, Counter>::default();
        let delivered = Family::<SinkLabel, Counter>::default();
        let failed = Family::<SinkLabel, Counter>::default();
        let coalesced = Family::<SinkLabel, Counter>::default();
        let retries = Family::<SinkLabel, Counter>::default();
        let faults = Family::<FaultLabel, Counter>::default();
        let queue_depth = Family::<SinkLabel, Gauge>::default();
        let batch_seconds: HistogramFamily = Family::new_with_constructor(batch_histogram);
        let guest_seconds = Family::<SinkLabel, SecondsCounter>::default();
        let watch_restarts = Family::<ResourceLabel, Counter>::default();
        let cpu = CpuMetrics::register(&mut registry);
        let skipped = Family::<SinkLabel, Counter>::default();
        let lag_seconds = Family::<SinkLabel, Gauge<f64, AtomicU64>>::default();
        let state = Family::<StateLabel, Gauge>::default();
        registry.register(
            "sink_records_skipped",
            "Records not queued for a sink because it was lagging (it catches up from a fresh listing)",
            skipped.clone(),
        );
        registry.register(
            "sink_lag_seconds",
            "How far behind a sink is: seconds since it started lagging, or else the age of its oldest queued record",
            lag_seconds.clone(),
        );
        registry.register(
            "sink_state",
            "A sink's state: 1 for the current one of ok, lagging, catching_up",
            state.clone(),
        );
        registry.register(
            "sink_records_received",
            "Records queued for a sink (an update replacing a queued one is counted as coalesced instead)",
            received.clone(),
        );
        registry.register(
            "sink_records_delivered",
            "Records a sink accepted",
            delivered.clone(),
        );
        registry.register(
            "sink_records_failed",
            "Records a sink rejected for good (fatal error or fault on the record alone)",
            failed.clone(),
        );
        registry.register(
            "sink_records_coalesced",
            "Records replaced in a sink's queue by a newer update of the same object",
            coalesced.clone(),
        );
        registry.register(
            "sink_retries",
            "Batches redelivered after a retryable error",
            retries.clone(),
        );
        registry.register(
            "sink_faults",
            "Failed sink calls by cause (timeout, memory, trap, fatal, ...)",
            faults.clone(),
        );
        registry.register(
            "sink_queue_depth",
            "Records waiting in a sink's queue",
            queue_depth.clone(),
        );
        registry.register(
            "sink_batch_duration_seconds",
            "Duration of one write call (one batch) into a sink",
            batch_seconds.clone(),
        );
        registry.register(
            "sink_guest_seconds",
            "Wall time spent in a sink's guest calls (init, write, held)",
            guest_seconds.clone(),
        );
        registry.register(
            "watch_restarts",
            "Watch failures of a resource after which the watch restarted with backoff",
            watch_restarts.clone(),
        );
        Self {
            registry,
            received,
            delivered,
            failed,
            coalesced,
            retries,
            faults,
            queue_depth,
            batch_seconds,
            guest_seconds,
            watch_restarts,
            queues: Mutex::new(Vec::new()),
            cpu,
            skipped,
            lag_seconds,
            state,
            lags: Mutex::new(Vec::new()),
        }
    }

    /// The handles of sink `name`'s metrics; its series appear (at 0) from
    /// now on.
    pub(crate) fn sink(&self, name: &str) -> SinkMetrics {
        let l = SinkLabel {
            sink: name.to_owned(),
        };
        SinkMetrics {
            name: name.to_owned(),
            received: self.received.get_or_create_owned(&l),
            delivered: self.delivered.get_or_create_owned(&l),
            failed: self.failed.get_or_create_owned(&l),
            coalesced: self.coalesced.get_or_create_owned(&l),
            retries: self.retries.get_or_create_owned(&l),
            skipped: self.skipped.get_or_create_owned(&l),
            batch_seconds: self.batch_seconds.get_or_create_owned(&l),
            guest_seconds: self.guest_seconds.get_or_create_owned(&l),
            faults: self.faults.clone(),
        }
    }

    /// Reports the depth of sink `name`'s queues, one per worker, summed
    /// (read at every encoding).
    pub(crate) fn watch_queue(&self, name: &str, queues: Vec<Weak<SinkQueue>>) {
        let gauge = self.queue_depth.get_or_create_owned(&SinkLabel {
            sink: name.to_owned(),
        });
        self.queues
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((gauge, queues));
    }

    /// Reports a sink's lag and state (read at every encoding).
    pub(crate) fn watch_lag(&self, lag: Weak<SinkLag>) {
        self.lags
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(lag);
    }

    /// Counts a restart of the watch on `resource`.
    pub(crate) fn watch_restart(&self, resource: &str) {
        self.watch_restarts
            .get_or_create(&ResourceLabel {
                resource: resource.to_owned(),
            })
            .inc();
    }

    /// Makes the watch-restart series of `resource` appear (at 0).
    pub(crate) fn watch_started(&self, resource: &str) {
        let _ = self.watch_restarts.get_or_create(&ResourceLabel {
            resource: resource.to_owned(),
        });
    }

    /// Reports sink `meter.sink()`'s guest CPU seconds and CPU quota (read
    /// at every encoding).
    pub fn watch_cpu(&self, meter: kubesink_host::CpuQuota) {
        self.cpu.watch(meter);
    }

    /// The metrics in the OpenMetrics text format.
    pub fn encode(&self) -> String {
        self.cpu.update();
        for (gauge, queues) in self.queues.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            let depth: usize = queues
                .iter()
                .map(|q| q.upgrade().map_or(0, |q| q.len()))
                .sum();
            gauge.set(i64::try_from(depth).unwrap_or(i64::MAX));
        }
        for lag in self.lags.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            let Some(lag) = lag.upgrade() else { continue };
            let sink = lag.name().to_owned();
            self.lag_seconds
                .get_or_create(&SinkLabel { sink: sink.clone() })
                .set(lag.lag().as_secs_f64());
            let current = lag.state();
            for state in LagState::ALL {
                self.state
                    .get_or_create(&StateLabel {
                        sink: sink.clone(),
                        state: state.as_str().to_owned(),
                    })
                    .set(i64::from(state == current));
            }
        }
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            // Writing into a String does not fail; say so if it ever does.
            let _ = writeln!(out, "# encoding the metrics failed");
        }
        out
    }
}

/// Reads one sample from an encoded exposition: the value of the line
/// `name{labels}` (labels exactly as encoded, e.g. `sink="mysql"`), or of
/// `name` without labels when `labels` is empty.
pub fn sample(text: &str, name: &str, labels: &str) -> Option<f64> {
    let key = if labels.is_empty() {
        name.to_owned()
    } else {
        format!("{name}{{{labels}}}")
    };
    text.lines().find_map(|l| {
        let rest = l.strip_prefix(&key)?;
        let value = rest.strip_prefix(' ')?;
        value.split_whitespace().next()?.parse().ok()
    })
}

/// Per sink: `kubesink_sink_guest_cpu_seconds_total` (CPU time of the
/// sink's wasm code, all workers; its rate is the sink's CPU use in cores)
/// and `kubesink_sink_cpu_quota_cores` (its `limits.cpu`; absent without a
/// quota). See `kubesink_host::cpu`.
struct CpuMetrics {
    seconds: Family<SinkLabel, SecondsCounter>,
    quota: Family<SinkLabel, Gauge<f64, AtomicU64>>,
    /// Each meter with the nanoseconds already added to its counter.
    meters: Mutex<Vec<(kubesink_host::CpuQuota, u64)>>,
}

impl CpuMetrics {
    fn register(registry: &mut Registry) -> Self {
        let seconds = Family::<SinkLabel, SecondsCounter>::default();
        let quota = Family::<SinkLabel, Gauge<f64, AtomicU64>>::default();
        registry.register(
            "sink_guest_cpu_seconds",
            "CPU time of a sink's wasm code (host calls and quota pauses excluded), all its workers",
            seconds.clone(),
        );
        registry.register(
            "sink_cpu_quota_cores",
            "A sink's CPU quota (limits.cpu) in cores; absent when it has none",
            quota.clone(),
        );
        Self {
            seconds,
            quota,
            meters: Mutex::new(Vec::new()),
        }
    }

    fn watch(&self, meter: kubesink_host::CpuQuota) {
        let l = SinkLabel {
            sink: meter.sink().to_owned(),
        };
        let _ = self.seconds.get_or_create(&l);
        if let Some(cores) = meter.cores() {
            self.quota.get_or_create(&l).set(cores);
        }
        let mut meters = self.meters.lock().unwrap_or_else(|e| e.into_inner());
        meters.retain(|(m, _)| m.sink() != meter.sink());
        meters.push((meter, 0));
    }

    fn update(&self) {
        for (meter, counted) in self
            .meters
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter_mut()
        {
            let used = u64::try_from(meter.used().as_nanos()).unwrap_or(u64::MAX);
            let new = used.saturating_sub(*counted);
            if new > 0 {
                self.seconds
                    .get_or_create(&SinkLabel {
                        sink: meter.sink().to_owned(),
                    })
                    .inc_by(new as f64 / 1e9);
                *counted = used;
            }
        }
    }
}

#[cfg(test)]
mod tests;
