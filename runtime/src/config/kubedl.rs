//! KubeDL's switches: `--meta-storage mysql`, `--event-storage
//! mysql|aliyun-sls`, `--region`, with the `MYSQL_*` and `SLS_*`
//! environment variables of KubeDL's Deployment, turned into a [`Config`];
//! and the embedded default (SQLite file, bundled mysql sink) when nothing
//! is given.

use std::collections::BTreeMap;

use super::{
    BatchConfig, Config, ConfigError, ConnectionSpec, Driver, LimitsConfig, QueueConfig,
    RecordKind, RetryConfig, SinkConfig, StringOrInt,
};

/// Where KubeDL's `--meta-storage` puts jobs and pods.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum MetaStorage {
    /// MySQL/MariaDB from `MYSQL_HOST`, `MYSQL_PORT`, `MYSQL_DB_NAME`,
    /// `MYSQL_USER`, `MYSQL_PASSWORD`.
    Mysql,
}

/// Where KubeDL's `--event-storage` puts events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum EventStorage {
    /// The same MySQL/MariaDB as `--meta-storage mysql`.
    Mysql,
    /// Alibaba Cloud Simple Log Service from `SLS_ENDPOINT`, `SLS_KEY_ID`,
    /// `SLS_KEY_SECRET`, `SLS_PROJECT`, `SLS_LOG_STORE`.
    #[value(name = "aliyun-sls")]
    AliyunSls,
}

/// KubeDL-compatible switches.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KubedlFlags {
    pub meta_storage: Option<MetaStorage>,
    pub event_storage: Option<EventStorage>,
    pub region: Option<String>,
    /// The SQLite file of the embedded default.
    pub sqlite_path: Option<String>,
}

/// The SQLite file used when nothing else is configured.
pub const DEFAULT_SQLITE_PATH: &str = "./kubesink.db";

impl KubedlFlags {
    /// True when any storage switch is given.
    pub fn any_storage(&self) -> bool {
        self.meta_storage.is_some() || self.event_storage.is_some()
    }

    /// Builds the configuration these switches mean, reading variables with
    /// `lookup` (the process environment in `main`). With no storage switch:
    /// the embedded default, everything through the bundled mysql sink into
    /// a SQLite file.
    pub fn to_config(
        &self,
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let region = self.region.clone().filter(|r| !r.is_empty());
        let mut connections = BTreeMap::new();
        let mut sinks = Vec::new();
        if !self.any_storage() {
            let path = self
                .sqlite_path
                .clone()
                .unwrap_or_else(|| DEFAULT_SQLITE_PATH.to_owned());
            connections.insert("default".to_owned(), sqlite(path));
            sinks.push(mysql_sink(
                "kubesink-db",
                "default",
                RecordKind::ALL.to_vec(),
            ));
            return Ok(Config {
                region,
                cache_dir: None,
                connections,
                sinks,
            });
        }
        let mut mysql_records = Vec::new();
        if self.meta_storage == Some(MetaStorage::Mysql) {
            mysql_records.extend([RecordKind::Jobs, RecordKind::Pods]);
        }
        if self.event_storage == Some(EventStorage::Mysql) {
            mysql_records.push(RecordKind::Events);
        }
        if !mysql_records.is_empty() {
            let var = |name: &str, default: Option<&str>| -> Option<String> {
                lookup(name)
                    .filter(|v| !v.is_empty())
                    .or(default.map(str::to_owned))
            };
            connections.insert(
                "mysql".to_owned(),
                ConnectionSpec {
                    driver: Driver::Mysql,
                    host: var("MYSQL_HOST", Some("localhost")),
                    port: var("MYSQL_PORT", Some("3306")).map(StringOrInt::String),
                    database: var("MYSQL_DB_NAME", Some("kubedl")),
                    user: var("MYSQL_USER", None),
                    password: var("MYSQL_PASSWORD", None).map(Into::into),
                    path: None,
                    max_connections: None,
                },
            );
            sinks.push(mysql_sink("mysql", "mysql", mysql_records));
        }
        if self.event_storage == Some(EventStorage::AliyunSls) {
            // The host's reading of KubeDL's SLS_* variables (endpoint
            // forms, allow-list), turned back into a sink configuration.
            let spec = kubesink_host::http::sls_sink_spec(
                "aliyun-sls",
                kubesink_host::ModuleSource::Path("builtin:sls".into()),
                &lookup,
                kubesink_host::Limits::default(),
            )
            .map_err(|e| ConfigError::Invalid {
                origin: "--event-storage aliyun-sls".into(),
                field: "SLS_*".into(),
                message: e.to_string(),
            })?;
            let settings: BTreeMap<String, String> = spec.settings.into_iter().collect();
            let allow_hosts = spec.limits.http_allow;
            sinks.push(SinkConfig {
                name: "aliyun-sls".into(),
                module: "builtin:sls".into(),
                sha256: None,
                records: vec![RecordKind::Events],
                connections: vec![],
                allow_hosts,
                settings,
                limits: LimitsConfig::default(),
                batch: BatchConfig::default(),
                queue: QueueConfig {
                    coalesce: Some(false),
                    ..QueueConfig::default()
                },
                retry: RetryConfig::default(),
                workers: 1,
            });
        }
        Ok(Config {
            region,
            cache_dir: None,
            connections,
            sinks,
        })
    }
}

fn sqlite(path: String) -> ConnectionSpec {
    ConnectionSpec {
        driver: Driver::Sqlite,
        host: None,
        port: None,
        database: None,
        user: None,
        password: None,
        path: Some(path),
        max_connections: None,
    }
}

fn mysql_sink(name: &str, connection: &str, records: Vec<RecordKind>) -> SinkConfig {
    let mut settings = BTreeMap::new();
    settings.insert("connection".to_owned(), connection.to_owned());
    for kind in RecordKind::ALL {
        let key = match kind {
            RecordKind::Jobs => "jobs",
            RecordKind::Pods => "pods",
            RecordKind::Events => "events",
        };
        settings.insert(key.to_owned(), records.contains(&kind).to_string());
    }
    SinkConfig {
        name: name.to_owned(),
        module: "builtin:mysql".into(),
        sha256: None,
        records,
        connections: vec![connection.to_owned()],
        allow_hosts: vec![],
        settings,
        limits: LimitsConfig::default(),
        batch: BatchConfig::default(),
        queue: QueueConfig::default(),
        retry: RetryConfig::default(),
        workers: 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(k: &str) -> Option<String> {
        match k {
            "MYSQL_HOST" => Some("db.example".into()),
            "MYSQL_USER" => Some("kubedl".into()),
            "MYSQL_PASSWORD" => Some("p@ss".into()),
            "SLS_ENDPOINT" => Some("cn-hangzhou.log.aliyuncs.com".into()),
            "SLS_KEY_ID" => Some("id".into()),
            "SLS_KEY_SECRET" => Some("secret".into()),
            "SLS_PROJECT" => Some("proj".into()),
            _ => None,
        }
    }

    #[test]
    fn default_is_sqlite_through_bundled_mysql() {
        let c = KubedlFlags::default().to_config(env).unwrap();
        c.check("flags").unwrap();
        assert_eq!(c.sinks.len(), 1);
        assert_eq!(c.sinks[0].module, "builtin:mysql");
        assert_eq!(
            c.connections["default"].path.as_deref(),
            Some(DEFAULT_SQLITE_PATH)
        );
        assert_eq!(c.sinks[0].records, RecordKind::ALL.to_vec());
    }

    #[test]
    fn meta_and_event_storage_mysql_share_one_sink() {
        let flags = KubedlFlags {
            meta_storage: Some(MetaStorage::Mysql),
            event_storage: Some(EventStorage::Mysql),
            region: Some("cn-beijing".into()),
            sqlite_path: None,
        };
        let c = flags.to_config(env).unwrap();
        c.check("flags").unwrap();
        assert_eq!(c.region.as_deref(), Some("cn-beijing"));
        let conn = &c.connections["mysql"];
        assert_eq!(conn.host.as_deref(), Some("db.example"));
        assert_eq!(conn.database.as_deref(), Some("kubedl"));
        assert_eq!(conn.port, Some(StringOrInt::String("3306".into())));
        assert_eq!(c.sinks.len(), 1);
        assert_eq!(c.sinks[0].records, RecordKind::ALL.to_vec());
    }

    #[test]
    fn meta_only_leaves_events_out() {
        let flags = KubedlFlags {
            meta_storage: Some(MetaStorage::Mysql),
            ..Default::default()
        };
        let c = flags.to_config(env).unwrap();
        assert_eq!(c.sinks[0].records, vec![RecordKind::Jobs, RecordKind::Pods]);
        assert_eq!(c.sinks[0].settings["events"], "false");
    }

    #[test]
    fn sls_needs_every_variable_and_names_the_missing_one() {
        let flags = KubedlFlags {
            event_storage: Some(EventStorage::AliyunSls),
            ..Default::default()
        };
        let err = flags.to_config(env).unwrap_err().to_string();
        assert!(err.contains("SLS_LOG_STORE"), "{err}");
        assert!(!err.contains("secret"), "{err}");
        let full = |k: &str| env(k).or_else(|| (k == "SLS_LOG_STORE").then(|| "ls".into()));
        let c = flags.to_config(full).unwrap();
        assert_eq!(c.sinks[0].module, "builtin:sls");
        assert_eq!(c.sinks[0].settings["logstore"], "ls");
        assert_eq!(
            c.sinks[0].allow_hosts,
            vec!["https://proj.cn-hangzhou.log.aliyuncs.com:443"]
        );
        assert_eq!(c.sinks[0].queue.coalesce, Some(false));
    }
}
