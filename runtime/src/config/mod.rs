//! kubesink's configuration: the YAML file given with `--config`, and the
//! configuration built from KubeDL's command-line switches
//! (`--meta-storage`, `--event-storage`, `--region`) when there is no file.
//!
//! A configuration names SQL **connections** and Kafka producers
//! (`kafka:`, see `kafka.rs`), owned by the host (sinks use them by name),
//! and **sinks** (a module, the records it receives, its settings, the
//! connections and Kafka topics it may use, its limits and batching).
//!
//! ```yaml
//! region: cn-hangzhou            # deploy_region of every record (optional)
//! connections:
//!   kubedl:                      # the name sinks open it by
//!     driver: mysql              # mysql | postgres | sqlite
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
//!     limits: { memory: 64Mi, call_timeout: 30s, host_memory: 64Mi, cpu: 500m, http_max_in_flight: 16 }
//!     batch: { max_records: 500, max_delay: 200ms }
//!     queue: { capacity: 10000 }
//! ```
//!
//! Sizes (`64Mi`), durations (`30s`), CPU quantities (`500m`), module
//! references and digest pins are typed ([`ByteSize`], [`ModuleRef`],
//! [`Sha256`], ...) and checked when the file is parsed; checks across
//! fields (unique names, granted connections, ranges) are in
//! [`Config::check`], which [`Config::parse`] and [`Config::resolve`] both
//! run. Every error names where the configuration came from and the field
//! path (for example `sinks[0].limits.memroy` for an unknown field).

mod env;
mod kafka;
mod kubedl;
mod module;
mod resolve;
mod sink;
mod size;

pub use env::EnvError;
pub use kafka::{CompressionSpec, KafkaGrants, ProducerSpec, SaslMechanism, SaslSpec};
pub use kubedl::{
    DEFAULT_SQLITE_PATH, EventStorage, KubedlEnvError, KubedlFlags, MetaStorage, sls_sink_config,
};
pub use module::{Builtin, ConfigMapRef, ModuleRef, Sha256};
pub use resolve::{Plan, PlannedModule, SinkPlan, SinkTemplate};
pub use sink::{BatchConfig, Cores, LimitsConfig, QueueConfig, RetryConfig, Settings, SinkConfig};
pub(crate) use sink::{MAX_HTTP_IN_FLIGHT, MAX_WORKERS};
pub use size::ByteSize;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use thiserror::Error;

/// Errors reading or checking a configuration. Each names where the
/// configuration came from (`origin`: `file PATH`, a name given to
/// [`Config::parse`], or the KubeDL switches) and the field at fault.
#[derive(Debug, Error)]
pub enum ConfigError {
    /// The file cannot be read.
    #[error("config file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The YAML does not parse, or a field is unknown or of the wrong type
    /// or value (a size, a duration, a module reference, ...).
    #[error("config {origin}: field `{field}`: {message}")]
    Parse {
        origin: String,
        field: String,
        message: String,
    },
    /// A check across fields failed, or a value cannot be used (a bundled
    /// sink that is not installed, a port from the environment).
    #[error("config {origin}: field `{field}`: {message}")]
    Invalid {
        origin: String,
        field: String,
        message: String,
    },
    /// A `${VAR}` in a field cannot be expanded.
    #[error("config {origin}: field `{field}`: {source}")]
    Env {
        origin: String,
        field: String,
        #[source]
        source: EnvError,
    },
    /// KubeDL's `SLS_*` environment (for `--event-storage aliyun-sls`) is
    /// incomplete or invalid; the error names the variable.
    #[error(transparent)]
    Kubedl(#[from] KubedlEnvError),
}

impl ConfigError {
    /// The field path at fault, if the error is about one field.
    pub fn field(&self) -> Option<&str> {
        match self {
            ConfigError::Parse { field, .. }
            | ConfigError::Invalid { field, .. }
            | ConfigError::Env { field, .. } => Some(field),
            ConfigError::Read { .. } | ConfigError::Kubedl(_) => None,
        }
    }
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
    /// Named Kafka producers (see [`ProducerSpec`]).
    #[serde(default)]
    pub kafka: BTreeMap<String, ProducerSpec>,
    /// The sinks, each with its own queue.
    #[serde(default)]
    pub sinks: Vec<SinkConfig>,
    /// Bounds on asking a sink what it holds (`held`), for reconciliation.
    #[serde(default)]
    pub held: HeldConfig,
}

/// Bounds on one sink's `held` answer during a reconciliation: a sink
/// that cannot answer within them is skipped and catches up later.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct HeldConfig {
    /// How long a sink may take to deliver what is queued and answer.
    /// Default 30 s.
    #[serde(default, with = "humantime_serde")]
    pub deadline: Option<std::time::Duration>,
    /// The most uids an answer may hold. Default 2 000 000.
    #[serde(default)]
    pub max_uids: Option<usize>,
    /// The most bytes of uids an answer may hold. Default 128Mi.
    #[serde(default)]
    pub max_bytes: Option<ByteSize>,
}

/// A named SQL connection.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ConnectionSpec {
    /// `mysql` (MySQL or MariaDB), `postgres` (PostgreSQL) or `sqlite`.
    pub driver: Driver,
    /// MySQL/PostgreSQL host. Default `localhost`.
    #[serde(default)]
    pub host: Option<String>,
    /// MySQL/PostgreSQL port. Default 3306 (MySQL), 5432 (PostgreSQL). A
    /// string is accepted so that it can come from the environment.
    #[serde(default)]
    pub port: Option<StringOrInt>,
    /// MySQL/PostgreSQL database. Default `kubedl`.
    #[serde(default)]
    pub database: Option<String>,
    /// MySQL/PostgreSQL user.
    #[serde(default)]
    pub user: Option<String>,
    /// MySQL/PostgreSQL password (`Debug` shows `[REDACTED]`).
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
    Postgres,
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

impl Config {
    /// Reads, parses and checks a YAML configuration file; errors name it
    /// as `file PATH`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text, &format!("file {}", path.display()))
    }

    /// Parses YAML text and checks it ([`check`](Self::check)); `origin`
    /// names the text in errors (`file PATH`, `test`, ...). A field that is
    /// unknown, of the wrong type or with a bad value is a
    /// [`ConfigError::Parse`] naming its path.
    pub fn parse(text: &str, origin: &str) -> Result<Config, ConfigError> {
        let de = serde_yaml::Deserializer::from_str(text);
        let config: Config = serde_path_to_error::deserialize(de).map_err(|e| {
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
            ConfigError::Parse {
                origin: origin.to_owned(),
                field,
                message,
            }
        })?;
        config.check(origin)?;
        Ok(config)
    }

    /// Checks what a field's type cannot: unique sink names, granted
    /// connections that exist, allow-lists, non-empty record kinds, the
    /// ranges of counts, a path for sqlite connections only. Run by
    /// [`parse`](Self::parse) and [`resolve`](Self::resolve), so a
    /// configuration built in code (the KubeDL switches) is checked too.
    pub fn check(&self, origin: &str) -> Result<(), ConfigError> {
        let invalid = |field: String, message: String| ConfigError::Invalid {
            origin: origin.to_owned(),
            field,
            message,
        };
        if self.held.max_uids == Some(0) {
            return Err(invalid("held.max_uids".into(), "must be at least 1".into()));
        }
        if self.held.max_bytes.is_some_and(|b| b.bytes() == 0) {
            return Err(invalid(
                "held.max_bytes".into(),
                "must be at least 1".into(),
            ));
        }
        if self.held.deadline == Some(std::time::Duration::ZERO) {
            return Err(invalid(
                "held.deadline".into(),
                "must be more than 0".into(),
            ));
        }
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
            if sink.records.is_empty() {
                return Err(invalid(
                    at("records"),
                    "must name at least one of jobs, pods, events".into(),
                ));
            }
            if sink.checkpoint == Some(true) && sink.queue.coalesce == Some(true) {
                return Err(invalid(
                    at("checkpoint"),
                    "a checkpointed sink gets every update: set `queue.coalesce: false` or leave it out".into(),
                ));
            }
            let at_least_1 = [
                ("batch.max_records", Some(sink.batch.max_records)),
                ("queue.capacity", Some(sink.queue.capacity)),
                ("limits.max_resources", sink.limits.max_resources),
            ];
            for (f, v) in at_least_1 {
                if v == Some(0) {
                    return Err(invalid(at(f), "must be at least 1".into()));
                }
            }
            let ranges = [
                ("workers", sink.workers, MAX_WORKERS),
                (
                    "limits.http_max_in_flight",
                    sink.limits.http_max_in_flight,
                    MAX_HTTP_IN_FLIGHT,
                ),
            ];
            for (f, v, max) in ranges {
                if v.is_some_and(|v| !(1..=max).contains(&v)) {
                    return Err(invalid(at(f), format!("must be between 1 and {max}")));
                }
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
                Driver::Mysql | Driver::Postgres if c.path.is_some() => {
                    return Err(invalid(
                        at("path"),
                        "`path` is for sqlite connections".into(),
                    ));
                }
                _ => {}
            }
        }
        self.check_kafka(origin)
    }
}

#[cfg(test)]
mod tests;
