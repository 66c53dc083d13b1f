//! Turns a checked [`Config`] into what the runtime starts: host options
//! (connections with their URLs built and variables expanded), and one
//! [`SinkPlan`] per sink (module located, limits parsed, queue policy).

use std::path::{Path, PathBuf};

use kubesink_host::{HostOptions, Limits, ModuleSource, SinkSpec, sql::ConnectionConfig};

use super::{
    BatchConfig, Config, ConfigError, Driver, RecordKind, RetryConfig, StringOrInt,
    env::expand_process_env, parse_size,
};

/// Everything needed to start the sinks.
#[derive(Debug, Clone)]
pub struct Plan {
    pub host: HostOptions,
    pub sinks: Vec<SinkPlan>,
    /// `--region` / `region:`, passed to normalization.
    pub region: Option<String>,
}

/// One sink, ready to load.
#[derive(Debug, Clone)]
pub struct SinkPlan {
    pub spec: SinkSpec,
    pub records: Vec<RecordKind>,
    pub batch: BatchConfig,
    pub retry: RetryConfig,
    pub queue_capacity: usize,
    /// Whether a newer update replaces an older one still queued.
    pub coalesce: bool,
    /// Instances writing in parallel, each for its share of the objects.
    pub workers: usize,
    /// For `module: configmap:NAME/KEY`: the ConfigMap key to watch. The
    /// sink then starts without a module (`spec.module` holds no bytes)
    /// and [`crate::modules`] loads each version of the key.
    pub configmap: Option<crate::modules::ConfigMapRef>,
    /// The pinned SHA-256 of the component (lowercase hex), if any.
    pub sha256: Option<String>,
}

/// Environment variable naming a directory with the bundled sinks.
pub const SINK_DIR_ENV: &str = "KUBESINK_SINK_DIR";

impl Config {
    /// Resolves the configuration; `origin` names it in errors (a file
    /// path or `command-line flags`).
    pub fn resolve(&self, origin: &str) -> Result<Plan, ConfigError> {
        self.check(origin)?;
        let env_err = |field: String| {
            move |source| ConfigError::Env {
                origin: origin.to_owned(),
                field,
                source,
            }
        };
        let mut sql = Vec::new();
        for (name, c) in &self.connections {
            let field = |f: &str| format!("connections.{name}.{f}");
            let get = |f: &str, v: &Option<String>| -> Result<Option<String>, ConfigError> {
                v.as_deref()
                    .map(expand_process_env)
                    .transpose()
                    .map_err(env_err(field(f)))
            };
            let url = match c.driver {
                Driver::Sqlite => {
                    let path = get("path", &c.path)?.unwrap_or_default();
                    format!("sqlite://{path}?mode=rwc")
                }
                Driver::Mysql => {
                    let host = get("host", &c.host)?.unwrap_or_else(|| "localhost".into());
                    let port = match &c.port {
                        None => 3306,
                        Some(StringOrInt::Int(p)) => *p,
                        Some(StringOrInt::String(s)) => {
                            let s = expand_process_env(s).map_err(env_err(field("port")))?;
                            s.trim().parse().map_err(|_| ConfigError::Invalid {
                                origin: origin.to_owned(),
                                field: field("port"),
                                message: format!("`{s}` is not a port number"),
                            })?
                        }
                    };
                    let db = get("database", &c.database)?.unwrap_or_else(|| "kubedl".into());
                    let user = get("user", &c.user)?.unwrap_or_default();
                    let password = c.password.as_ref().map(|p| p.expose().to_owned());
                    let password = get("password", &password)?.unwrap_or_default();
                    let enc = |s: &str| {
                        percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC)
                            .to_string()
                    };
                    let auth = match (user.is_empty(), password.is_empty()) {
                        (true, _) => String::new(),
                        (false, true) => format!("{}@", enc(&user)),
                        (false, false) => format!("{}:{}@", enc(&user), enc(&password)),
                    };
                    format!("mysql://{auth}{host}:{port}/{}", enc(&db))
                }
            };
            sql.push(ConnectionConfig {
                name: name.clone(),
                url: url.into(),
                max_connections: c.max_connections.unwrap_or(4),
            });
        }
        let mut sinks = Vec::new();
        for (i, s) in self.sinks.iter().enumerate() {
            let at = |f: &str| format!("sinks[{i}].{f}");
            let mut settings = Vec::new();
            for (k, v) in &s.settings {
                let v = expand_process_env(v).map_err(env_err(at(&format!("settings.{k}"))))?;
                settings.push((k.clone(), v));
            }
            let invalid_module = |message| ConfigError::Invalid {
                origin: origin.to_owned(),
                field: at("module"),
                message,
            };
            let (module, configmap) = match s.module.strip_prefix(crate::modules::CONFIGMAP_PREFIX)
            {
                Some(spec) => {
                    let cm = crate::modules::ConfigMapRef::parse(spec).map_err(invalid_module)?;
                    let placeholder = ModuleSource::Bytes {
                        origin: cm.to_string(),
                        bytes: std::sync::Arc::new(Vec::new()),
                    };
                    (placeholder, Some(cm))
                }
                None => (locate_module(&s.module).map_err(invalid_module)?, None),
            };
            let mut limits = Limits::default();
            let size = |f: &str, v: &Option<String>, d: usize| -> Result<usize, ConfigError> {
                v.as_deref().map_or(Ok(d), |v| {
                    parse_size(v).map_err(|message| ConfigError::Invalid {
                        origin: origin.to_owned(),
                        field: at(f),
                        message,
                    })
                })
            };
            limits.memory_bytes = size("limits.memory", &s.limits.memory, limits.memory_bytes)?;
            limits.max_statement_bytes = size(
                "limits.max_statement",
                &s.limits.max_statement,
                limits.max_statement_bytes,
            )?;
            limits.max_result_bytes = size(
                "limits.max_result",
                &s.limits.max_result,
                limits.max_result_bytes,
            )?;
            limits.log_bytes_per_sec = size(
                "limits.log_rate",
                &s.limits.log_rate,
                limits.log_bytes_per_sec,
            )?;
            limits.max_module_bytes = size(
                "limits.max_module",
                &s.limits.max_module,
                limits.max_module_bytes,
            )?;
            limits.host_memory_bytes = size(
                "limits.host_memory",
                &s.limits.host_memory,
                limits.host_memory_bytes,
            )?;
            if let Some(n) = s.limits.max_resources {
                limits.max_resources = n;
            }
            if let Some(cpu) = &s.limits.cpu {
                limits.cpu = Some(cpu.cores().map_err(|message| ConfigError::Invalid {
                    origin: origin.to_owned(),
                    field: at("limits.cpu"),
                    message,
                })?);
            }
            limits.http_allow = s.allow_hosts.clone();
            if let Some(t) = s.limits.call_timeout {
                limits.call_timeout = t;
            }
            let coalesce = s
                .queue
                .coalesce
                .unwrap_or(!s.module.starts_with("builtin:sls"));
            sinks.push(SinkPlan {
                spec: SinkSpec {
                    name: s.name.clone(),
                    module,
                    settings,
                    sql_grants: s.connections.clone(),
                    limits,
                },
                records: s.records.clone(),
                batch: s.batch.clone(),
                retry: s.retry.clone(),
                queue_capacity: s.queue.capacity,
                coalesce,
                workers: s.workers,
                configmap,
                sha256: s.sha256.as_deref().map(str::to_ascii_lowercase),
            });
        }
        let cache_dir = self.cache_dir.clone().or_else(default_cache_dir);
        // Host options this configuration does not set keep their defaults.
        #[allow(clippy::needless_update)]
        let host = HostOptions {
            cache_dir,
            sql,
            ..HostOptions::default()
        };
        Ok(Plan {
            host,
            sinks,
            region: self.region.clone().filter(|r| !r.is_empty()),
        })
    }
}

/// `$KUBESINK_CACHE_DIR`, else `$XDG_CACHE_HOME/kubesink/components`, else
/// `~/.cache/kubesink/components`.
pub fn default_cache_dir() -> Option<PathBuf> {
    if let Some(d) = std::env::var_os("KUBESINK_CACHE_DIR") {
        return Some(PathBuf::from(d));
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cache")))?;
    Some(base.join("kubesink").join("components"))
}

/// Where bundled sinks are looked for, in order.
pub fn builtin_dirs() -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    if let Some(d) = std::env::var_os(SINK_DIR_ENV) {
        dirs.push(PathBuf::from(d));
    }
    if let Ok(exe) = std::env::current_exe()
        && let Some(bin) = exe.parent()
    {
        dirs.push(bin.join("sinks"));
        // A cargo build: target/<profile>/kubesink next to target/wasm32-wasip2/guest/.
        if let Some(target) = bin.parent() {
            dirs.push(target.join("wasm32-wasip2").join("guest"));
        }
    }
    dirs.push(PathBuf::from("/usr/share/kubesink/sinks"));
    dirs
}

/// Resolves `builtin:NAME` or a path to a module source.
pub fn locate_module(module: &str) -> Result<ModuleSource, String> {
    let Some(name) = module.strip_prefix("builtin:") else {
        return Ok(ModuleSource::Path(PathBuf::from(module)));
    };
    let file = match name {
        "mysql" => "kubesink_sink_mysql.wasm",
        "sls" => "kubesink_sink_sls.wasm",
        other => {
            return Err(format!(
                "no bundled sink named `{other}` (bundled: mysql, sls)"
            ));
        }
    };
    let dirs = builtin_dirs();
    for d in &dirs {
        let p = d.join(file);
        if p.is_file() {
            return Ok(ModuleSource::Path(p));
        }
    }
    let looked: Vec<String> = dirs.iter().map(|d| d.display().to_string()).collect();
    Err(format!(
        "bundled sink `{name}` ({file}) not found; looked in {}. Build it with `tests/just guests`, or set {SINK_DIR_ENV}",
        looked.join(", ")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mysql_url_is_percent_encoded_and_sqlite_gets_rwc() {
        let text = r#"
connections:
  m: { driver: mysql, host: db, port: "3307", database: kubedl, user: "u@x", password: "p:/@" }
  s: { driver: sqlite, path: ./x.db }
"#;
        let plan = Config::parse(text).unwrap().resolve("t").unwrap();
        let m = plan.host.sql.iter().find(|c| c.name == "m").unwrap();
        assert_eq!(m.url.expose(), "mysql://u%40x:p%3A%2F%40@db:3307/kubedl");
        assert!(
            !format!("{m:?}").contains("p%3A"),
            "Debug redacts the URL: {m:?}"
        );
        let s = plan.host.sql.iter().find(|c| c.name == "s").unwrap();
        assert_eq!(s.url.expose(), "sqlite://./x.db?mode=rwc");
    }

    #[test]
    fn unknown_builtin_and_missing_env_are_named() {
        let text = "sinks:\n  - {name: a, module: 'builtin:nope'}\n";
        let err = Config::parse(text)
            .unwrap()
            .resolve("t")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("sinks[0].module") && err.contains("nope"),
            "{err}"
        );
        let text =
            "connections:\n  m: { driver: mysql, password: '${KUBESINK_TEST_SURELY_UNSET}' }\n";
        let err = Config::parse(text)
            .unwrap()
            .resolve("t")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("connections.m.password") && err.contains("KUBESINK_TEST_SURELY_UNSET"),
            "{err}"
        );
    }

    #[test]
    fn configmap_module_is_planned_without_bytes() {
        let text = "sinks:\n  - {name: a, module: 'configmap:sinks/mysql.wasm.gz', sha256: 'ABCDEF0123456789abcdef0123456789abcdef0123456789abcdef0123456789', limits: {max_module: 1Mi}}\n  - {name: b, module: x.wasm}\n";
        let plan = Config::parse(text).unwrap().resolve("t").unwrap();
        let a = &plan.sinks[0];
        let cm = a.configmap.as_ref().expect("configmap");
        assert_eq!(
            (cm.name.as_str(), cm.key.as_str()),
            ("sinks", "mysql.wasm.gz")
        );
        assert_eq!(
            a.sha256.as_deref(),
            Some("abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789")
        );
        assert_eq!(a.spec.limits.max_module_bytes, 1 << 20);
        assert!(
            matches!(&a.spec.module, ModuleSource::Bytes { bytes, .. } if bytes.is_empty()),
            "{:?}",
            a.spec.module
        );
        assert!(plan.sinks[1].configmap.is_none());
        assert_eq!(
            plan.sinks[1].spec.limits.max_module_bytes,
            kubesink_host::DEFAULT_MAX_MODULE_BYTES
        );
    }

    #[test]
    fn limits_and_queue_policy() {
        let text = "sinks:\n  - {name: a, module: x.wasm, limits: {memory: 8Mi, call_timeout: 2s}}\n  - {name: b, module: y.wasm, queue: {coalesce: false}}\n";
        let plan = Config::parse(text).unwrap().resolve("t").unwrap();
        assert_eq!(plan.sinks[0].spec.limits.memory_bytes, 8 << 20);
        assert_eq!(plan.sinks[0].spec.limits.call_timeout.as_secs(), 2);
        assert!(plan.sinks[0].coalesce);
        assert!(!plan.sinks[1].coalesce);
    }

    #[test]
    fn host_memory_resources_and_cpu() {
        let text = "sinks:
  - {name: a, module: x.wasm, limits: {host_memory: 8Mi, max_resources: 100, cpu: 200m}}
  - {name: b, module: y.wasm, limits: {cpu: 1}}
  - {name: c, module: z.wasm, limits: {cpu: 0.5}}
  - {name: d, module: w.wasm}
";
        let plan = Config::parse(text).unwrap().resolve("t").unwrap();
        let l = |i: usize| &plan.sinks[i].spec.limits;
        assert_eq!(l(0).host_memory_bytes, 8 << 20);
        assert_eq!(l(0).max_resources, 100);
        assert_eq!(l(0).cpu, Some(0.2));
        assert_eq!(l(1).cpu, Some(1.0));
        assert_eq!(l(2).cpu, Some(0.5));
        assert_eq!(l(3).cpu, None, "no quota by default");
        assert_eq!(
            l(3).host_memory_bytes,
            kubesink_host::DEFAULT_HOST_MEMORY_BYTES
        );
        assert_eq!(l(3).max_resources, kubesink_host::DEFAULT_MAX_RESOURCES);
    }
}
