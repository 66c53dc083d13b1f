//! One sink's configuration: [`SinkConfig`] and its parts (limits,
//! batching, queue, retry, settings). Sizes, durations, CPU quantities and
//! module references are typed here, so a bad value is refused when the
//! file is parsed, naming its field.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Deserializer};

use super::{ByteSize, ModuleRef, RecordKind, Sha256};

/// One sink.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SinkConfig {
    /// Unique name; tags logs, errors and metrics.
    pub name: String,
    /// `builtin:NAME` for a sink shipped with kubesink (`mysql`, `sls`), a
    /// path to a `.wasm` component, or `configmap:NAME/KEY`: the
    /// `binaryData` key KEY of ConfigMap NAME in kubesink's own namespace
    /// (gzip-decompressed when KEY ends in `.gz`), watched and swapped in
    /// when it changes (see [`crate::modules`]).
    pub module: ModuleRef,
    /// The SHA-256 (64 hex digits) the component must have, after
    /// decompression: `sha256sum sink.wasm`. A module with another digest
    /// is refused (at start for a file; a ConfigMap version is rejected and
    /// the running one kept). Default: not pinned.
    #[serde(default)]
    pub sha256: Option<Sha256>,
    /// Which records it receives. Default: all.
    #[serde(default = "all_kinds")]
    pub records: Vec<RecordKind>,
    /// SQL connection names the sink may open.
    #[serde(default)]
    pub connections: Vec<String>,
    /// Kafka producers the sink may produce with, each with the topics it
    /// may write: `{ bus: [kubesink.events] }`. Default: none.
    #[serde(default)]
    pub kafka: super::KafkaGrants,
    /// Hosts the sink may send HTTP requests to: `[scheme://]host[:port]`,
    /// host a name, an IP, `*.domain` or `*`; port a number or `*`; scheme
    /// https when absent. Empty: no HTTP at all.
    #[serde(default)]
    pub allow_hosts: Vec<String>,
    /// Passed to the sink's `init` (values may use `${VAR}`). `Debug`
    /// redacts the values of secret keys.
    #[serde(default)]
    pub settings: Settings,
    /// Resource limits.
    #[serde(default)]
    pub limits: LimitsConfig,
    /// Batching.
    #[serde(default)]
    pub batch: BatchConfig,
    /// The sink's queue.
    #[serde(default)]
    pub queue: QueueConfig,
    /// Retry of retryable failures.
    #[serde(default)]
    pub retry: RetryConfig,
    /// Instances of the sink writing in parallel (1 to [`MAX_WORKERS`]).
    /// Records are shared out by object (kind and uid), each worker with
    /// its own queue, instance and batches, so the updates of one object
    /// stay in order. Default: [`auto_workers`].
    #[serde(default)]
    pub workers: Option<usize>,
    /// Whether kubesink keeps a durable checkpoint of what this sink has
    /// delivered (per resource, the resourceVersion at or below which
    /// everything handed to it is acknowledged), so that a restart, a
    /// leader hand-over or a relist does not deliver it again. Default:
    /// what the sink declares at `init` — yes for a log (sls), no for a
    /// state sink (mysql, whose upserts make redelivery harmless); no for a
    /// ConfigMap module, whose shape is known only once loaded.
    #[serde(default)]
    pub checkpoint: Option<bool>,
}

/// Most workers a sink may have.
pub(crate) const MAX_WORKERS: usize = 16;

/// Most HTTP requests in flight a sink may be given
/// (`limits.http_max_in_flight`): far above what a log service's write
/// quota allows, and a bound on a typo.
pub(crate) const MAX_HTTP_IN_FLIGHT: usize = 4096;

/// The workers of a sink whose configuration does not set `workers`: one
/// per core, at most [`MAX_AUTO_WORKERS`], when it is granted a network
/// database connection (MySQL/MariaDB, PostgreSQL); else 1. A network database spends much of a
/// write in round trips that more connections overlap (docs/benchmarks.md:
/// through the pipeline 30k records/s into MariaDB with one worker, 46k
/// with two, 58k with four on 2 cores), but `kubesink replay` and `run`
/// also parse and normalize, and MariaDB shares the machine, so more
/// workers than cores only add contention (the replay measured 26k with
/// one, 30k with two and 19–23k with four on 2 cores). SQLite takes one
/// writer at a time, and an HTTP sink overlaps its requests within one
/// worker (`limits.http_max_in_flight`).
pub(crate) fn auto_workers(network_sql: bool) -> usize {
    if !network_sql {
        return 1;
    }
    std::thread::available_parallelism()
        .map_or(1, std::num::NonZeroUsize::get)
        .clamp(1, MAX_AUTO_WORKERS)
}

/// Most workers [`auto_workers`] chooses: the pool's default size
/// (`max_connections: 4`), so each worker has a connection of its own.
pub(crate) const MAX_AUTO_WORKERS: usize = 4;

fn all_kinds() -> Vec<RecordKind> {
    RecordKind::ALL.to_vec()
}

/// A sink's `settings`: key to value, passed to its `init`. They may hold
/// credentials, so `Debug` shows the values of secret keys
/// (`kubesink_host::secret::is_secret_key`: `password`, `access_key_secret`,
/// `token`, `Authorization`, ...) as `[REDACTED]`, as the host's
/// `SinkSpec` does.
#[derive(Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Settings(pub BTreeMap<String, String>);

impl std::ops::Deref for Settings {
    type Target = BTreeMap<String, String>;

    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl std::ops::DerefMut for Settings {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.0
    }
}

impl FromIterator<(String, String)> for Settings {
    fn from_iter<I: IntoIterator<Item = (String, String)>>(iter: I) -> Self {
        Settings(iter.into_iter().collect())
    }
}

impl<'a> IntoIterator for &'a Settings {
    type Item = (&'a String, &'a String);
    type IntoIter = std::collections::btree_map::Iter<'a, String, String>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

impl fmt::Debug for Settings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut map = f.debug_map();
        for (k, v) in &self.0 {
            if kubesink_host::secret::is_secret_key(k) {
                map.entry(k, &"[REDACTED]");
            } else {
                map.entry(k, v);
            }
        }
        map.finish()
    }
}

/// Per-sink limits (see `kubesink_host::Limits` for the defaults).
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    /// Memory cap, e.g. `64Mi`. Default 64 MiB.
    #[serde(default)]
    pub memory: Option<ByteSize>,
    /// Wall-time deadline per call, e.g. `30s`. Default 30 s.
    #[serde(default, with = "humantime_serde")]
    pub call_timeout: Option<Duration>,
    /// Longest SQL statement, e.g. `4Mi`. Default 4 MiB.
    #[serde(default)]
    pub max_statement: Option<ByteSize>,
    /// Most result bytes per query, e.g. `16Mi`. Default 16 MiB.
    #[serde(default)]
    pub max_result: Option<ByteSize>,
    /// Guest stdout/stderr bytes logged per second, e.g. `64Ki`.
    #[serde(default)]
    pub log_rate: Option<ByteSize>,
    /// Largest component accepted (after decompression), e.g. `8Mi`.
    /// Default 64 MiB.
    #[serde(default)]
    pub max_module: Option<ByteSize>,
    /// Host memory the sink may cause outside its linear memory (SQL
    /// results, HTTP bodies, wasm tables), all its workers together, e.g.
    /// `64Mi`. Default 64 MiB.
    #[serde(default)]
    pub host_memory: Option<ByteSize>,
    /// Most resource handles one instance may hold at once. Default 10000.
    #[serde(default)]
    pub max_resources: Option<usize>,
    /// CPU quota of the sink's guest code, all its workers together, in
    /// cores as in Kubernetes: `200m`, `0.5`, `1`. Default: none.
    #[serde(default)]
    pub cpu: Option<Cores>,
    /// Most HTTP requests the sink has in flight at once, all its workers
    /// together (1 to [`MAX_HTTP_IN_FLIGHT`]); one more fails at once with
    /// `connection-limit-reached`. Default 16.
    #[serde(default)]
    pub http_max_in_flight: Option<usize>,
}

/// A CPU quota in cores, written as in Kubernetes: `200m` (a string) or
/// `0.5` / `1` (a number); checked by `kubesink_host::cpu::parse_cores`
/// when the file is parsed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Cores(f64);

impl Cores {
    /// Parses a quantity (`200m`, `0.5`, `1`).
    pub fn parse(text: &str) -> Result<Cores, String> {
        kubesink_host::cpu::parse_cores(text).map(Cores)
    }

    /// The quota in cores.
    pub fn get(self) -> f64 {
        self.0
    }
}

impl<'de> Deserialize<'de> for Cores {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        /// A CPU quantity as written.
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Written {
            Number(f64),
            Text(String),
        }
        let text = match Written::deserialize(d)? {
            Written::Number(n) => n.to_string(),
            Written::Text(t) => t,
        };
        Cores::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// Batching of one sink.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct BatchConfig {
    /// Most records per `write`. Default 500.
    #[serde(default = "default_max_records")]
    pub max_records: usize,
    /// Longest a record waits for its batch to fill. Default 200 ms.
    #[serde(default = "default_max_delay", with = "humantime_serde")]
    pub max_delay: Duration,
}

fn default_max_records() -> usize {
    500
}
fn default_max_delay() -> Duration {
    Duration::from_millis(200)
}

impl Default for BatchConfig {
    fn default() -> Self {
        Self {
            max_records: default_max_records(),
            max_delay: default_max_delay(),
        }
    }
}

/// The queue in front of one sink.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct QueueConfig {
    /// Most pending records. When full, reading from the source waits
    /// (nothing is dropped). Default 10000.
    #[serde(default = "default_capacity")]
    pub capacity: usize,
    /// `true`: a newer update of an object still waiting in the queue
    /// replaces the older one, so a slow sink's queue holds at most one
    /// entry per object. `false`: every update is delivered. Default: what
    /// the sink declares at `init` — `true` for a state sink (mysql),
    /// `false` for a log (sls) and for a ConfigMap module (its shape is
    /// known only once loaded). A checkpointed sink never coalesces.
    #[serde(default)]
    pub coalesce: Option<bool>,
}

fn default_capacity() -> usize {
    10_000
}

impl Default for QueueConfig {
    fn default() -> Self {
        Self {
            capacity: default_capacity(),
            coalesce: None,
        }
    }
}

/// Retry of retryable failures: exponential backoff with full jitter.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RetryConfig {
    /// First delay. Default 200 ms.
    #[serde(default = "default_initial", with = "humantime_serde")]
    pub initial: Duration,
    /// Cap on the delay. Default 30 s.
    #[serde(default = "default_max", with = "humantime_serde")]
    pub max: Duration,
}

fn default_initial() -> Duration {
    Duration::from_millis(200)
}
fn default_max() -> Duration {
    Duration::from_secs(30)
}

impl Default for RetryConfig {
    fn default() -> Self {
        Self {
            initial: default_initial(),
            max: default_max(),
        }
    }
}

impl SinkConfig {
    /// A sink named `name` running `module` with every default: all
    /// records, no grants, no settings, default limits, batching, queue
    /// and retry, one worker.
    pub fn new(name: impl Into<String>, module: ModuleRef) -> SinkConfig {
        SinkConfig {
            name: name.into(),
            module,
            sha256: None,
            records: all_kinds(),
            connections: Vec::new(),
            kafka: Default::default(),
            allow_hosts: Vec::new(),
            settings: Settings::default(),
            limits: LimitsConfig::default(),
            batch: BatchConfig::default(),
            queue: QueueConfig::default(),
            retry: RetryConfig::default(),
            workers: None,
            checkpoint: None,
        }
    }
}
