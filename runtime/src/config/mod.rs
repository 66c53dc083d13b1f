//! kubesink's configuration: the YAML file given with `--config`, and the
//! configuration built from KubeDL's command-line switches
//! (`--meta-storage`, `--event-storage`, `--region`) when there is no file.
//!
//! A configuration names SQL **connections** (owned by the host; sinks open
//! them by name) and **sinks** (a module, the records it receives, its
//! settings, the connections it may open, its limits and batching).
//!
//! ```yaml
//! region: cn-hangzhou            # deploy_region of every record (optional)
//! connections:
//!   kubedl:                      # the name sinks open it by
//!     driver: mysql              # mysql | sqlite
//!     host: ${MYSQL_HOST}        # ${VAR} and ${VAR:-default} read the environment
//!     port: 3306
//!     database: kubedl
//!     user: ${MYSQL_USER}
//!     password: ${MYSQL_PASSWORD}
//!   local:
//!     driver: sqlite
//!     path: ./kubesink.db
//! sinks:
//!   - name: kubedl-mysql
//!     module: builtin:mysql      # or a path to a .wasm file, or configmap:NAME/KEY
//!     # sha256: <hex>            # optional pin of the component's digest
//!     records: [jobs, pods, events]
//!     connections: [kubedl]      # what the sink may open
//!     settings: { connection: kubedl }
//!     limits: { memory: 64Mi, call_timeout: 30s, host_memory: 64Mi, cpu: 500m }
//!     batch: { max_records: 500, max_delay: 200ms }
//!     queue: { capacity: 10000 }
//! ```
//!
//! Unknown fields are rejected, naming the field path (for example
//! `sinks[0].limits.memroy`).

mod env;
mod kubedl;
mod resolve;
mod size;

pub use env::{EnvError, expand_env, expand_process_env};
pub use kubedl::{DEFAULT_SQLITE_PATH, EventStorage, KubedlFlags, MetaStorage};
pub use resolve::{Plan, SINK_DIR_ENV, SinkPlan, builtin_dirs, default_cache_dir, locate_module};
pub use size::parse_size;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use thiserror::Error;

/// Errors reading or checking a configuration.
#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("config file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("config file {path}: field `{field}`: {message}")]
    Parse {
        path: PathBuf,
        field: String,
        message: String,
    },
    #[error("config {origin}: field `{field}`: {message}")]
    Invalid {
        origin: String,
        field: String,
        message: String,
    },
    #[error("config {origin}: field `{field}`: {source}")]
    Env {
        origin: String,
        field: String,
        #[source]
        source: EnvError,
    },
}

/// The whole configuration.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// `deploy_region` written on every record; overrides the region of the
    /// `kubedl.io/tenancy` annotation. Empty: take it from the annotation.
    #[serde(default)]
    pub region: Option<String>,
    /// Where compiled components are cached. Default
    /// `$XDG_CACHE_HOME/kubesink/components` (`~/.cache/kubesink/components`).
    #[serde(default)]
    pub cache_dir: Option<PathBuf>,
    /// Named SQL connections.
    #[serde(default)]
    pub connections: BTreeMap<String, ConnectionSpec>,
    /// The sinks, each with its own queue.
    #[serde(default)]
    pub sinks: Vec<SinkConfig>,
}

/// A named SQL connection.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ConnectionSpec {
    /// `mysql` (MySQL or MariaDB) or `sqlite`.
    pub driver: Driver,
    /// MySQL host. Default `localhost`.
    #[serde(default)]
    pub host: Option<String>,
    /// MySQL port. Default 3306. A string is accepted so that it can come
    /// from the environment.
    #[serde(default)]
    pub port: Option<StringOrInt>,
    /// MySQL database. Default `kubedl`.
    #[serde(default)]
    pub database: Option<String>,
    /// MySQL user.
    #[serde(default)]
    pub user: Option<String>,
    /// MySQL password (`Debug` shows `[REDACTED]`).
    #[serde(default)]
    pub password: Option<kubesink_host::secret::Secret>,
    /// SQLite database file, created when missing.
    #[serde(default)]
    pub path: Option<String>,
    /// Most pooled connections per sink (each sink granted the connection
    /// has its own pool). Default 4.
    #[serde(default)]
    pub max_connections: Option<u32>,
}

/// A port given as a number or a string.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum StringOrInt {
    Int(u16),
    String(String),
}

/// Database kinds.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Driver {
    Mysql,
    Sqlite,
}

/// Kinds of records a sink receives.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum RecordKind {
    Jobs,
    Pods,
    Events,
}

impl RecordKind {
    /// All kinds.
    pub const ALL: [RecordKind; 3] = [RecordKind::Jobs, RecordKind::Pods, RecordKind::Events];
}

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
    pub module: String,
    /// The SHA-256 (64 hex digits) the component must have, after
    /// decompression: `sha256sum sink.wasm`. A module with another digest
    /// is refused (at start for a file; a ConfigMap version is rejected and
    /// the running one kept). Default: not pinned.
    #[serde(default)]
    pub sha256: Option<String>,
    /// Which records it receives. Default: all.
    #[serde(default = "all_kinds")]
    pub records: Vec<RecordKind>,
    /// SQL connection names the sink may open.
    #[serde(default)]
    pub connections: Vec<String>,
    /// Hosts the sink may send HTTP requests to: `[scheme://]host[:port]`,
    /// host a name, an IP, `*.domain` or `*`; port a number or `*`; scheme
    /// https when absent. Empty: no HTTP at all.
    #[serde(default)]
    pub allow_hosts: Vec<String>,
    /// Passed to the sink's `init` (values may use `${VAR}`).
    #[serde(default)]
    pub settings: BTreeMap<String, String>,
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
    /// stay in order. Default 1.
    #[serde(default = "default_workers")]
    pub workers: usize,
}

/// Most workers a sink may have.
pub const MAX_WORKERS: usize = 16;

fn default_workers() -> usize {
    1
}

fn all_kinds() -> Vec<RecordKind> {
    RecordKind::ALL.to_vec()
}

/// Per-sink limits (see `kubesink_host::Limits` for the defaults).
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    /// Memory cap, e.g. `64Mi`. Default 64 MiB.
    #[serde(default)]
    pub memory: Option<String>,
    /// Wall-time deadline per call, e.g. `30s`. Default 30 s.
    #[serde(default, with = "humantime_serde")]
    pub call_timeout: Option<Duration>,
    /// Longest SQL statement, e.g. `4Mi`. Default 4 MiB.
    #[serde(default)]
    pub max_statement: Option<String>,
    /// Most result bytes per query, e.g. `16Mi`. Default 16 MiB.
    #[serde(default)]
    pub max_result: Option<String>,
    /// Guest stdout/stderr bytes logged per second, e.g. `64Ki`.
    #[serde(default)]
    pub log_rate: Option<String>,
    /// Largest component accepted (after decompression), e.g. `8Mi`.
    /// Default 64 MiB.
    #[serde(default)]
    pub max_module: Option<String>,
    /// Host memory the sink may cause outside its linear memory (SQL
    /// results, HTTP bodies, wasm tables), all its workers together, e.g.
    /// `64Mi`. Default 64 MiB.
    #[serde(default)]
    pub host_memory: Option<String>,
    /// Most resource handles one instance may hold at once. Default 10000.
    #[serde(default)]
    pub max_resources: Option<usize>,
    /// CPU quota of the sink's guest code, all its workers together, in
    /// cores as in Kubernetes: `200m`, `0.5`, `1`. Default: none.
    #[serde(default)]
    pub cpu: Option<CpuQuantity>,
}

/// A CPU quantity as written: `200m` (a string) or `0.5` / `1` (a number).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum CpuQuantity {
    /// A number of cores.
    Number(f64),
    /// A quantity like `200m` or `1.5`.
    Text(String),
}

impl CpuQuantity {
    /// The quota in cores (see `kubesink_host::cpu::parse_cores`).
    pub fn cores(&self) -> Result<f64, String> {
        match self {
            CpuQuantity::Number(n) => kubesink_host::cpu::parse_cores(&n.to_string()),
            CpuQuantity::Text(t) => kubesink_host::cpu::parse_cores(t),
        }
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
    /// `true` (default for state sinks such as mysql): a newer update of an
    /// object still waiting in the queue replaces the older one, so a slow
    /// sink's queue holds at most one entry per object. `false`: every
    /// update is delivered (log sinks such as sls).
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

impl Config {
    /// Reads and checks a YAML configuration file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let config = Self::parse(&text).map_err(|(field, message)| ConfigError::Parse {
            path: path.to_owned(),
            field,
            message,
        })?;
        config.check(&path.display().to_string())?;
        Ok(config)
    }

    /// Parses YAML; on error returns the field path and the message.
    pub fn parse(text: &str) -> Result<Config, (String, String)> {
        let de = serde_yaml::Deserializer::from_str(text);
        serde_path_to_error::deserialize(de).map_err(|e| {
            let mut field = e.path().to_string();
            let message = e.into_inner().to_string();
            // serde names the struct holding an unknown field; name the field.
            if let Some(rest) = message.strip_prefix("unknown field `")
                && let Some((unknown, _)) = rest.split_once('`')
            {
                if field == "." {
                    field = unknown.to_owned();
                } else if !field.ends_with(unknown) {
                    field = format!("{field}.{unknown}");
                }
            }
            let field = if field == "." { "<root>".into() } else { field };
            (field, message)
        })
    }

    /// Checks cross-references: unique sink names, granted connections that
    /// exist, non-empty record kinds, sane batch and queue sizes.
    pub fn check(&self, origin: &str) -> Result<(), ConfigError> {
        let invalid = |field: String, message: String| ConfigError::Invalid {
            origin: origin.to_owned(),
            field,
            message,
        };
        let mut names = std::collections::BTreeSet::new();
        for (i, sink) in self.sinks.iter().enumerate() {
            let at = |f: &str| format!("sinks[{i}].{f}");
            if sink.name.is_empty() {
                return Err(invalid(at("name"), "must not be empty".into()));
            }
            if !names.insert(sink.name.as_str()) {
                return Err(invalid(
                    at("name"),
                    format!("sink name `{}` is used twice", sink.name),
                ));
            }
            for (j, c) in sink.connections.iter().enumerate() {
                if !self.connections.contains_key(c) {
                    return Err(invalid(
                        format!("sinks[{i}].connections[{j}]"),
                        format!("no connection named `{c}` under `connections`"),
                    ));
                }
            }
            if let Err(e) = kubesink_host::http::AllowList::parse(&sink.allow_hosts) {
                return Err(invalid(at("allow_hosts"), e.to_string()));
            }
            if let Some(spec) = sink.module.strip_prefix(crate::modules::CONFIGMAP_PREFIX) {
                crate::modules::ConfigMapRef::parse(spec).map_err(|m| invalid(at("module"), m))?;
            }
            if let Some(pin) = &sink.sha256 {
                crate::modules::check_sha256(pin).map_err(|m| invalid(at("sha256"), m))?;
            }
            if sink.records.is_empty() {
                return Err(invalid(
                    at("records"),
                    "must name at least one of jobs, pods, events".into(),
                ));
            }
            if sink.batch.max_records == 0 {
                return Err(invalid(
                    at("batch.max_records"),
                    "must be at least 1".into(),
                ));
            }
            if sink.queue.capacity == 0 {
                return Err(invalid(at("queue.capacity"), "must be at least 1".into()));
            }
            if !(1..=MAX_WORKERS).contains(&sink.workers) {
                return Err(invalid(
                    at("workers"),
                    format!("must be between 1 and {MAX_WORKERS}"),
                ));
            }
            for (f, v) in [
                ("limits.memory", &sink.limits.memory),
                ("limits.max_statement", &sink.limits.max_statement),
                ("limits.max_result", &sink.limits.max_result),
                ("limits.log_rate", &sink.limits.log_rate),
                ("limits.max_module", &sink.limits.max_module),
                ("limits.host_memory", &sink.limits.host_memory),
            ] {
                if let Some(v) = v {
                    parse_size(v).map_err(|m| invalid(at(f), m))?;
                }
            }
            if let Some(cpu) = &sink.limits.cpu {
                cpu.cores().map_err(|m| invalid(at("limits.cpu"), m))?;
            }
            if sink.limits.max_resources == Some(0) {
                return Err(invalid(
                    at("limits.max_resources"),
                    "must be at least 1".into(),
                ));
            }
        }
        for (name, c) in &self.connections {
            let at = |f: &str| format!("connections.{name}.{f}");
            match c.driver {
                Driver::Sqlite if c.path.is_none() => {
                    return Err(invalid(
                        at("path"),
                        "a sqlite connection needs `path`".into(),
                    ));
                }
                Driver::Mysql if c.path.is_some() => {
                    return Err(invalid(
                        at("path"),
                        "`path` is for sqlite connections".into(),
                    ));
                }
                _ => {}
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_documented_example() {
        let text = r#"
region: cn-hangzhou
connections:
  kubedl:
    driver: mysql
    host: ${MYSQL_HOST}
    port: 3306
    database: kubedl
    user: u
    password: p
  local:
    driver: sqlite
    path: ./kubesink.db
sinks:
  - name: kubedl-mysql
    module: builtin:mysql
    records: [jobs, pods]
    connections: [kubedl]
    settings: { connection: kubedl }
    limits: { memory: 64Mi, call_timeout: 30s }
    batch: { max_records: 100, max_delay: 50ms }
"#;
        let c = Config::parse(text).unwrap();
        c.check("test").unwrap();
        assert_eq!(c.region.as_deref(), Some("cn-hangzhou"));
        assert_eq!(c.sinks[0].records, vec![RecordKind::Jobs, RecordKind::Pods]);
        assert_eq!(c.sinks[0].batch.max_delay, Duration::from_millis(50));
        assert_eq!(
            c.sinks[0].limits.call_timeout,
            Some(Duration::from_secs(30))
        );
        assert_eq!(c.sinks[0].queue.capacity, 10_000);
        assert_eq!(c.connections["kubedl"].port, Some(StringOrInt::Int(3306)));
    }

    #[test]
    fn unknown_field_is_named_with_its_path() {
        let text = "sinks:\n  - name: a\n    module: x.wasm\n    limits: { memroy: 1Mi }\n";
        let (field, message) = Config::parse(text).unwrap_err();
        assert_eq!(field, "sinks[0].limits.memroy");
        assert!(message.contains("memroy"), "{message}");
        let (field, _) = Config::parse("sinkz: []\n").unwrap_err();
        assert_eq!(field, "sinkz");
    }

    #[test]
    fn check_rejects_ungranted_connection_and_duplicate_names() {
        let text = "sinks:\n  - name: a\n    module: x.wasm\n    connections: [nope]\n";
        let err = Config::parse(text)
            .unwrap()
            .check("f.yaml")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("sinks[0].connections[0]") && err.contains("nope"),
            "{err}"
        );
        let text = "sinks:\n  - {name: a, module: x.wasm}\n  - {name: a, module: y.wasm}\n";
        let err = Config::parse(text)
            .unwrap()
            .check("f.yaml")
            .unwrap_err()
            .to_string();
        assert!(err.contains("sinks[1].name"), "{err}");
    }

    #[test]
    fn workers_are_between_1_and_the_maximum() {
        for (n, ok) in [
            (0, false),
            (1, true),
            (MAX_WORKERS, true),
            (MAX_WORKERS + 1, false),
        ] {
            let text = format!("sinks:\n  - {{name: a, module: x.wasm, workers: {n}}}\n");
            let checked = Config::parse(&text).unwrap().check("f.yaml");
            match checked {
                Ok(()) => assert!(ok, "{n} accepted"),
                Err(e) => {
                    assert!(!ok, "{n} refused: {e}");
                    assert!(e.to_string().contains("sinks[0].workers"), "{e}");
                }
            }
        }
    }

    #[test]
    fn configmap_module_and_sha256_are_checked() {
        let pin = "ab".repeat(32);
        let text = format!(
            "sinks:\n  - {{name: a, module: 'configmap:sinks/mysql.wasm.gz', sha256: '{pin}', limits: {{max_module: 2Mi}}}}\n"
        );
        let c = Config::parse(&text).unwrap();
        c.check("f.yaml").unwrap();
        assert_eq!(c.sinks[0].sha256.as_deref(), Some(pin.as_str()));
        for (text, field) in [
            (
                "sinks:\n  - {name: a, module: 'configmap:sinks'}\n",
                "sinks[0].module",
            ),
            (
                "sinks:\n  - {name: a, module: 'configmap:/k'}\n",
                "sinks[0].module",
            ),
            (
                "sinks:\n  - {name: a, module: x.wasm, sha256: abc}\n",
                "sinks[0].sha256",
            ),
            (
                "sinks:\n  - {name: a, module: x.wasm, limits: {max_module: big}}\n",
                "sinks[0].limits.max_module",
            ),
        ] {
            let err = Config::parse(text)
                .unwrap()
                .check("f.yaml")
                .unwrap_err()
                .to_string();
            assert!(err.contains(field), "{text}: {err}");
        }
    }

    #[test]
    fn check_rejects_bad_sizes() {
        let text = "sinks:\n  - name: a\n    module: x.wasm\n    limits: { memory: lots }\n";
        let err = Config::parse(text)
            .unwrap()
            .check("f.yaml")
            .unwrap_err()
            .to_string();
        assert!(err.contains("sinks[0].limits.memory"), "{err}");
    }

    #[test]
    fn check_rejects_bad_host_memory_cpu_and_resources() {
        for (limits, field) in [
            ("{ host_memory: lots }", "sinks[0].limits.host_memory"),
            ("{ cpu: 2cores }", "sinks[0].limits.cpu"),
            ("{ cpu: 0 }", "sinks[0].limits.cpu"),
            ("{ cpu: -1 }", "sinks[0].limits.cpu"),
            ("{ max_resources: 0 }", "sinks[0].limits.max_resources"),
        ] {
            let text = format!("sinks:\n  - name: a\n    module: x.wasm\n    limits: {limits}\n");
            let err = Config::parse(&text)
                .unwrap()
                .check("f.yaml")
                .unwrap_err()
                .to_string();
            assert!(
                err.contains(field) && err.contains("f.yaml"),
                "{limits}: {err}"
            );
        }
    }
}
