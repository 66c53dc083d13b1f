//! KubeDL's switches: `--meta-storage mysql`, `--event-storage
//! mysql|aliyun-sls`, `--region`, with the `MYSQL_*` and `SLS_*`
//! environment variables of KubeDL's Deployment, turned into an ordinary
//! [`Config`] (checked and resolved like a file's); and the embedded
//! default (SQLite file, bundled mysql sink) when nothing is given.
//!
//! KubeDL stays at this edge: the values of its variables are taken as
//! they are (a `$` in a password is not a `${VAR}` of the configuration),
//! and its `SLS_ENDPOINT` is read by the host's allow-list parser
//! ([`kubesink_host::http::Rule::parse`]), the same that later checks the
//! grant made from it.

use std::collections::BTreeMap;
use std::net::IpAddr;

use kubesink_host::http::{HostRule, PortRule, Rule, SchemeRule};

use super::{
    Builtin, Config, ConfigError, ConnectionSpec, Driver, HeldConfig, ModuleRef, QueueConfig,
    RecordKind, Settings, SinkConfig, StringOrInt,
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
            connections.insert("default".to_owned(), sqlite(literal(&path)));
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
                held: HeldConfig::default(),
                ..Config::default()
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
                    .map(|v| literal(&v))
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
            sinks.push(sls_sink_config("aliyun-sls", &lookup)?);
        }
        Ok(Config {
            region,
            cache_dir: None,
            connections,
            sinks,
            held: HeldConfig::default(),
            ..Config::default()
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
    let mut settings = Settings::default();
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
        records,
        connections: vec![connection.to_owned()],
        settings,
        ..SinkConfig::new(name, ModuleRef::Builtin(Builtin::Mysql))
    }
}

/// A value taken as it is into the configuration, where `$` starts a
/// `${VAR}`: `$` is written `$$`.
fn literal(value: &str) -> String {
    value.replace('$', "$$")
}

/// A missing or invalid `SLS_*` variable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KubedlEnvError {
    /// A required variable is unset or empty.
    #[error("environment variable {0} is required for --event-storage aliyun-sls")]
    Missing(&'static str),
    /// `SLS_PROJECT` is not a project name (3-63 of `a-z`, `0-9`, `-`).
    #[error(
        "SLS_PROJECT `{0}` is invalid: a project name is 3 to 63 lower-case letters, digits and hyphens, starting and ending with a letter or digit"
    )]
    Project(String),
    /// `SLS_ENDPOINT` is not a host or `scheme://host[:port]`.
    #[error(
        "SLS_ENDPOINT `{value}` is invalid: {reason} (expected a host like cn-hangzhou.log.aliyuncs.com or a URL like http://127.0.0.1:9000)"
    )]
    Endpoint {
        /// The value.
        value: String,
        /// Why.
        reason: String,
    },
}

/// An SLS endpoint: where the sls sink connects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SlsEndpoint {
    /// `http` or `https`.
    pub scheme: &'static str,
    /// A DNS name (lower case) or an IPv4 address.
    pub host: String,
    /// The port (the scheme's default when none is given).
    pub port: u16,
    /// Whether `host` is an IPv4 address.
    pub is_ip: bool,
}

/// Parses `SLS_ENDPOINT`: `host` (https) or `scheme://host[:port]`, with
/// the host a DNS name or an IPv4 address, through the allow-list's parser
/// ([`Rule::parse`]); wildcards, ranges, IPv6 and `*` ports are refused.
pub(crate) fn parse_sls_endpoint(value: &str) -> Result<SlsEndpoint, KubedlEnvError> {
    let bad = |reason: &str| KubedlEnvError::Endpoint {
        value: value.to_string(),
        reason: reason.to_string(),
    };
    let rule = Rule::parse(value).map_err(|e| bad(&e.reason))?;
    let (scheme, default_port) = match rule.scheme {
        SchemeRule::Http => ("http", 80),
        SchemeRule::Https => ("https", 443),
        SchemeRule::Any => return Err(bad("the scheme must be http or https")),
    };
    let (host, is_ip) = match rule.host {
        HostRule::Exact(name) => (name, false),
        HostRule::Net(ip @ IpAddr::V4(_), 32) => (ip.to_string(), true),
        _ => return Err(bad("the host must be a DNS name or an IPv4 address")),
    };
    let port = match rule.port {
        PortRule::Exact(p) => p,
        PortRule::Default => default_port,
        PortRule::Any => return Err(bad("the port must be a number in 1..=65535")),
    };
    Ok(SlsEndpoint {
        scheme,
        host,
        port,
        is_ip,
    })
}

/// The sls sink named `name` from KubeDL's variables, read through `var`
/// (`std::env::var(..).ok()` in the runtime): `SLS_ENDPOINT`,
/// `SLS_KEY_ID`, `SLS_KEY_SECRET`, `SLS_PROJECT`, `SLS_LOG_STORE` (all
/// required), and optional `SLS_SECURITY_TOKEN`. It receives events and
/// keeps every update (no coalescing). The allow-list grants exactly the
/// configured project: `scheme://<project>.<host>:port` for a name (the
/// project is a subdomain; other projects under the endpoint stay denied),
/// `scheme://<ip>:port` for an IPv4 address (SLS's IP form: the connection
/// goes to the address and `Host: <project>.<ip>` names the project; the
/// operator named that address). Errors name the variable and never
/// contain the secret.
pub fn sls_sink_config(
    name: &str,
    var: impl Fn(&str) -> Option<String>,
) -> Result<SinkConfig, KubedlEnvError> {
    let need = |key: &'static str| {
        var(key)
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
            .ok_or(KubedlEnvError::Missing(key))
    };
    let endpoint = need("SLS_ENDPOINT")?;
    let key_id = need("SLS_KEY_ID")?;
    let secret = need("SLS_KEY_SECRET")?;
    let project = need("SLS_PROJECT")?;
    let logstore = need("SLS_LOG_STORE")?;
    let SlsEndpoint {
        scheme,
        host,
        port,
        is_ip,
    } = parse_sls_endpoint(&endpoint)?;
    // SLS project names: 3-63 of a-z, 0-9 and `-`, starting and ending
    // with a letter or digit; a DNS label, so the grant is one exact name.
    let label_ok = (3..=63).contains(&project.len())
        && project
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !project.starts_with('-')
        && !project.ends_with('-');
    if !label_ok {
        return Err(KubedlEnvError::Project(project));
    }
    let allow = if is_ip {
        format!("{scheme}://{host}:{port}")
    } else {
        format!("{scheme}://{project}.{host}:{port}")
    };
    let mut settings = Settings::default();
    settings.insert("endpoint".into(), format!("{scheme}://{host}:{port}"));
    settings.insert("project".into(), project);
    settings.insert("logstore".into(), literal(&logstore));
    settings.insert("access_key_id".into(), literal(&key_id));
    settings.insert("access_key_secret".into(), literal(&secret));
    if let Some(token) = var("SLS_SECURITY_TOKEN").filter(|t| !t.is_empty()) {
        settings.insert("security_token".into(), literal(&token));
    }
    Ok(SinkConfig {
        records: vec![RecordKind::Events],
        allow_hosts: vec![allow],
        settings,
        queue: QueueConfig {
            coalesce: Some(false),
            ..QueueConfig::default()
        },
        ..SinkConfig::new(name, ModuleRef::Builtin(Builtin::Sls))
    })
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
        assert_eq!(c.sinks[0].module, ModuleRef::Builtin(Builtin::Mysql));
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
    fn variable_values_are_taken_as_they_are_not_expanded() {
        let flags = KubedlFlags {
            meta_storage: Some(MetaStorage::Mysql),
            event_storage: Some(EventStorage::AliyunSls),
            ..Default::default()
        };
        let odd = |k: &str| match k {
            "MYSQL_PASSWORD" => Some("pa$$${HOME}word".into()),
            "SLS_KEY_SECRET" => Some("se$cret${X}".into()),
            "SLS_LOG_STORE" => Some("ls".into()),
            other => env(other),
        };
        let c = flags.to_config(odd).unwrap();
        c.check("flags").unwrap();
        // What resolve does with every value: expand `${VAR}`.
        let expanded = |v: &str| crate::config::env::expand_process_env(v).unwrap();
        let password = c.connections["mysql"].password.as_ref().unwrap().expose();
        assert_eq!(expanded(password), "pa$$${HOME}word");
        let sls = c.sinks.iter().find(|s| s.name == "aliyun-sls").unwrap();
        assert_eq!(expanded(&sls.settings["access_key_secret"]), "se$cret${X}");
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
        c.check("flags").unwrap();
        assert_eq!(c.sinks[0].module, ModuleRef::Builtin(Builtin::Sls));
        assert_eq!(c.sinks[0].settings["logstore"], "ls");
        assert_eq!(
            c.sinks[0].allow_hosts,
            vec!["https://proj.cn-hangzhou.log.aliyuncs.com:443"]
        );
        assert_eq!(c.sinks[0].queue.coalesce, Some(false));
        assert_eq!(c.sinks[0].records, vec![RecordKind::Events]);
    }

    fn vars(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: std::collections::HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| map.get(k).cloned()
    }

    const FULL: [(&str, &str); 5] = [
        ("SLS_ENDPOINT", "cn-hangzhou.log.aliyuncs.com"),
        ("SLS_KEY_ID", "id"),
        ("SLS_KEY_SECRET", "very-secret"),
        ("SLS_PROJECT", "kubedl-project"),
        ("SLS_LOG_STORE", "kubedl"),
    ];

    #[test]
    fn sls_sink_from_env_grants_exactly_the_project() {
        use kubesink_host::http::AllowList;
        let sink = sls_sink_config("sls", vars(&FULL)).expect("valid");
        assert_eq!(
            sink.allow_hosts,
            ["https://kubedl-project.cn-hangzhou.log.aliyuncs.com:443"]
        );
        let allow = AllowList::parse(&sink.allow_hosts).expect("parses");
        assert!(allow.allows("https", "kubedl-project.cn-hangzhou.log.aliyuncs.com", None));
        // Exactly the configured project: not another one under the endpoint.
        assert!(!allow.allows("https", "other-project.cn-hangzhou.log.aliyuncs.com", None));
        assert!(!allow.allows("https", "cn-hangzhou.log.aliyuncs.com", None));
        for bad in ["ab", "Upper", "-lead", "trail-", "a.b.c", "x*y"] {
            let mut v = FULL.to_vec();
            v[3] = ("SLS_PROJECT", bad);
            let err = sls_sink_config("sls", vars(&v)).expect_err(bad);
            assert_eq!(err, KubedlEnvError::Project(bad.into()));
        }
        assert_eq!(
            sink.settings["endpoint"],
            "https://cn-hangzhou.log.aliyuncs.com:443"
        );
        assert_eq!(sink.settings["logstore"], "kubedl");
        let shown = format!("{sink:?}");
        assert!(
            !shown.contains("very-secret") && shown.contains("[REDACTED]"),
            "{shown}"
        );

        let mut local = FULL.to_vec();
        local[0] = ("SLS_ENDPOINT", "http://127.0.0.1:9000");
        let sink = sls_sink_config("sls", vars(&local)).expect("valid");
        assert_eq!(sink.allow_hosts, ["http://127.0.0.1:9000"]);
        assert_eq!(sink.settings["endpoint"], "http://127.0.0.1:9000");

        for missing in [
            "SLS_ENDPOINT",
            "SLS_KEY_ID",
            "SLS_KEY_SECRET",
            "SLS_PROJECT",
            "SLS_LOG_STORE",
        ] {
            let partial: Vec<_> = FULL
                .iter()
                .copied()
                .filter(|(k, _)| *k != missing)
                .collect();
            let err = sls_sink_config("sls", vars(&partial)).expect_err(missing);
            assert_eq!(err, KubedlEnvError::Missing(missing));
            assert!(err.to_string().contains(missing));
        }
        for bad in [
            "ftp://x",
            "http://h:99999",
            "http://h/p",
            "a..b",
            "*.log.aliyuncs.com",
            "http://10.0.0.0/8",
            "http://[::1]:9000",
            "http://h:*",
            "*://h",
        ] {
            let mut v = FULL.to_vec();
            v[0] = ("SLS_ENDPOINT", bad);
            let err = sls_sink_config("sls", vars(&v)).expect_err(bad);
            assert!(
                matches!(&err, KubedlEnvError::Endpoint { value, .. } if value == bad),
                "{bad}: {err}"
            );
            assert!(!err.to_string().contains("very-secret"));
        }
    }

    #[test]
    fn sls_endpoints_are_read_by_the_allow_list_parser() {
        let ep = |v: &str| parse_sls_endpoint(v).expect(v);
        assert_eq!(
            ep("Cn-Hangzhou.log.aliyuncs.com/"),
            SlsEndpoint {
                scheme: "https",
                host: "cn-hangzhou.log.aliyuncs.com".into(),
                port: 443,
                is_ip: false
            }
        );
        assert_eq!(
            ep("HTTP://127.0.0.1"),
            SlsEndpoint {
                scheme: "http",
                host: "127.0.0.1".into(),
                port: 80,
                is_ip: true
            }
        );
        assert_eq!(ep("http://sls.internal:8080").port, 8080);
        let err = parse_sls_endpoint("http://h:0").unwrap_err().to_string();
        assert!(
            err.contains("the port must be") && err.contains("`http://h:0`"),
            "{err}"
        );
    }
}
