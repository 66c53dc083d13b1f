//! Turns a checked [`Config`] into what the runtime starts: host options
//! (connections with their URLs built and variables expanded), and one
//! [`SinkPlan`] per sink (module located, limits in bytes, queue policy).

use std::path::{Path, PathBuf};

use kubesink_host::{HostOptions, Limits, ModuleSource, SinkSpec, sql::ConnectionConfig};

use super::{
    BatchConfig, Builtin, Config, ConfigError, ConfigMapRef, Driver, ModuleRef, RecordKind,
    RetryConfig, StringOrInt, env::expand_process_env,
};

/// Everything needed to start the sinks.
#[derive(Debug, Clone)]
pub struct Plan {
    pub host: HostOptions,
    pub sinks: Vec<SinkPlan>,
    /// `--region` / `region:`, passed to normalization.
    pub region: Option<String>,
    /// Bounds on `held` answers (`held:`).
    pub held: super::HeldConfig,
}

/// One sink, ready to load.
#[derive(Debug, Clone)]
pub struct SinkPlan {
    /// Name, settings, grants and limits: the host's spec but its module.
    pub spec: SinkTemplate,
    /// Where its component comes from.
    pub module: PlannedModule,
    pub records: Vec<RecordKind>,
    pub batch: BatchConfig,
    pub retry: RetryConfig,
    pub queue_capacity: usize,
    /// Whether a newer update replaces an older one still queued (`None`:
    /// as the sink's declared shape says).
    pub coalesce: Option<bool>,
    /// Whether a durable checkpoint is kept for it (`None`: as the sink's
    /// declared shape says).
    pub checkpoint: Option<bool>,
    /// Instances writing in parallel, each for its share of the objects.
    pub workers: usize,
    /// The pinned SHA-256 of the component (lowercase hex), if any.
    pub sha256: Option<String>,
}

/// Where a planned sink's component comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PlannedModule {
    /// A file (a bundled sink, located, or a path as configured), read
    /// when the sink starts ([`crate::modules::file_spec`]).
    File(PathBuf),
    /// A ConfigMap key: the sink starts without a module and
    /// [`crate::modules`] loads each version of the key.
    ConfigMap(ConfigMapRef),
}

impl PlannedModule {
    /// How errors and logs name it: the file path, or `configmap NAME key
    /// KEY`.
    pub(crate) fn origin(&self) -> String {
        match self {
            PlannedModule::File(path) => path.display().to_string(),
            PlannedModule::ConfigMap(cm) => cm.to_string(),
        }
    }
}

impl SinkPlan {
    /// The ConfigMap key its module comes from, if it does.
    pub(crate) fn configmap(&self) -> Option<&ConfigMapRef> {
        match &self.module {
            PlannedModule::ConfigMap(cm) => Some(cm),
            PlannedModule::File(_) => None,
        }
    }

    /// The sink's CPU meter and quota, shared by its instances, for
    /// metrics. `Host::sink_cpu` reads only the name and limits of the spec
    /// it is given; a sink whose module is not loaded yet (a ConfigMap key)
    /// has no component to put in it, so the spec names the module's
    /// origin without bytes.
    pub(crate) fn cpu_meter(&self, host: &kubesink_host::Host) -> kubesink_host::CpuQuota {
        host.sink_cpu(&self.spec.with_module(ModuleSource::Bytes {
            origin: self.module.origin(),
            bytes: std::sync::Arc::default(),
        }))
    }
}

/// The host's [`SinkSpec`] of a sink without its module. `Debug` redacts
/// the values of secret settings, as `SinkSpec`'s does.
#[derive(Clone)]
pub struct SinkTemplate {
    /// The sink's name; tags its logs and errors.
    pub name: String,
    /// Passed to the guest's `init`, variables expanded.
    pub settings: Vec<(String, String)>,
    /// SQL connection names the sink may open.
    pub sql_grants: Vec<String>,
    /// Its resource limits.
    pub limits: Limits,
}

impl SinkTemplate {
    /// The spec the host loads, with `module`.
    pub(crate) fn with_module(&self, module: ModuleSource) -> SinkSpec {
        SinkSpec {
            name: self.name.clone(),
            module,
            settings: self.settings.clone(),
            sql_grants: self.sql_grants.clone(),
            limits: self.limits.clone(),
        }
    }
}

impl std::fmt::Debug for SinkTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SinkTemplate")
            .field("name", &self.name)
            .field(
                "settings",
                &kubesink_host::secret::RedactedSettings(&self.settings),
            )
            .field("sql_grants", &self.sql_grants)
            .field("limits", &self.limits)
            .finish()
    }
}

/// Environment variable naming a directory with the bundled sinks.
pub(crate) const SINK_DIR_ENV: &str = "KUBESINK_SINK_DIR";

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
                Driver::Mysql | Driver::Postgres => {
                    let (scheme, default_port) = match c.driver {
                        Driver::Postgres => ("postgres", 5432),
                        _ => ("mysql", 3306),
                    };
                    let host = get("host", &c.host)?.unwrap_or_else(|| "localhost".into());
                    let port = match &c.port {
                        None => default_port,
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
                    format!("{scheme}://{auth}{host}:{port}/{}", enc(&db))
                }
            };
            sql.push(ConnectionConfig {
                name: name.clone(),
                url: url.into(),
                max_connections: c.max_connections.unwrap_or(4),
            });
        }
        let kafka = self.resolve_kafka(origin)?;
        let mut sinks = Vec::new();
        for (i, s) in self.sinks.iter().enumerate() {
            let at = |f: &str| format!("sinks[{i}].{f}");
            let mut settings = Vec::new();
            for (k, v) in &s.settings {
                let v = expand_process_env(v).map_err(env_err(at(&format!("settings.{k}"))))?;
                settings.push((k.clone(), v));
            }
            let module = match &s.module {
                ModuleRef::ConfigMap(cm) => PlannedModule::ConfigMap(cm.clone()),
                ModuleRef::Path(path) => PlannedModule::File(path.clone()),
                ModuleRef::Builtin(b) => {
                    PlannedModule::File(locate_builtin(*b).map_err(|message| {
                        ConfigError::Invalid {
                            origin: origin.to_owned(),
                            field: at("module"),
                            message,
                        }
                    })?)
                }
            };
            let mut limits = Limits::default();
            let l = &s.limits;
            let size = |v: Option<super::ByteSize>, d: usize| v.map_or(d, |v| v.bytes());
            limits.memory_bytes = size(l.memory, limits.memory_bytes);
            limits.max_statement_bytes = size(l.max_statement, limits.max_statement_bytes);
            limits.max_result_bytes = size(l.max_result, limits.max_result_bytes);
            limits.log_bytes_per_sec = size(l.log_rate, limits.log_bytes_per_sec);
            limits.max_module_bytes = size(l.max_module, limits.max_module_bytes);
            limits.host_memory_bytes = size(l.host_memory, limits.host_memory_bytes);
            if let Some(n) = l.max_resources {
                limits.max_resources = n;
            }
            if let Some(n) = l.http_max_in_flight {
                limits.http_max_in_flight = n;
            }
            limits.cpu = l.cpu.map(|c| c.get());
            limits.http_allow = s.allow_hosts.clone();
            limits.kafka = super::kafka::grants_of(s);
            if let Some(t) = l.call_timeout {
                limits.call_timeout = t;
            }
            sinks.push(SinkPlan {
                spec: SinkTemplate {
                    name: s.name.clone(),
                    settings,
                    sql_grants: s.connections.clone(),
                    limits,
                },
                module,
                records: s.records.clone(),
                batch: s.batch.clone(),
                retry: s.retry.clone(),
                queue_capacity: s.queue.capacity,
                coalesce: s.queue.coalesce,
                checkpoint: s.checkpoint,
                workers: s.workers.unwrap_or_else(|| {
                    super::sink::auto_workers(s.connections.iter().any(|c| {
                        self.connections
                            .get(c)
                            .is_some_and(|c| c.driver != Driver::Sqlite)
                    }))
                }),
                sha256: s.sha256.as_ref().map(|p| p.as_str().to_owned()),
            });
        }
        let cache_dir = self.cache_dir.clone().or_else(default_cache_dir);
        // Host options this configuration does not set keep their defaults.
        #[allow(clippy::needless_update)]
        let host = HostOptions {
            cache_dir,
            sql,
            kafka,
            ..HostOptions::default()
        };
        Ok(Plan {
            host,
            sinks,
            region: self.region.clone().filter(|r| !r.is_empty()),
            held: self.held.clone(),
        })
    }
}

/// `$KUBESINK_CACHE_DIR`, else `$XDG_CACHE_HOME/kubesink/components`, else
/// `~/.cache/kubesink/components`.
pub(crate) fn default_cache_dir() -> Option<PathBuf> {
    if let Some(d) = std::env::var_os("KUBESINK_CACHE_DIR") {
        return Some(PathBuf::from(d));
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cache")))?;
    Some(base.join("kubesink").join("components"))
}

/// Where bundled sinks are looked for, in order.
pub(crate) fn builtin_dirs() -> Vec<PathBuf> {
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

/// The file of a bundled sink, looked for in [`builtin_dirs`].
pub(crate) fn locate_builtin(builtin: Builtin) -> Result<PathBuf, String> {
    let (name, file) = (builtin.name(), builtin.file_name());
    let dirs = builtin_dirs();
    for d in &dirs {
        let p = d.join(file);
        if p.is_file() {
            return Ok(p);
        }
    }
    let looked: Vec<String> = dirs.iter().map(|d| d.display().to_string()).collect();
    Err(format!(
        "bundled sink `{name}` ({file}) not found; looked in {}. Build it with `scripts/just guests`, or set {SINK_DIR_ENV}",
        looked.join(", ")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(text: &str) -> Plan {
        Config::parse(text, "t").unwrap().resolve("t").unwrap()
    }

    #[test]
    fn mysql_url_is_percent_encoded_and_sqlite_gets_rwc() {
        let text = r#"
connections:
  m: { driver: mysql, host: db, port: "3307", database: kubedl, user: "u@x", password: "p:/@" }
  s: { driver: sqlite, path: ./x.db }
  p: { driver: postgres, host: pg, user: kube, password: "p w" }
"#;
        let plan = plan(text);
        let p = plan.host.sql.iter().find(|c| c.name == "p").unwrap();
        assert_eq!(p.url.expose(), "postgres://kube:p%20w@pg:5432/kubedl");
        assert!(!format!("{p:?}").contains("p%20w"), "Debug redacts: {p:?}");
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
    fn missing_env_is_named() {
        let text =
            "connections:\n  m: { driver: mysql, password: '${KUBESINK_TEST_SURELY_UNSET}' }\n";
        let err = Config::parse(text, "t")
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
    fn configmap_module_is_planned_as_its_own_variant() {
        let text = "sinks:\n  - {name: a, module: 'configmap:sinks/mysql.wasm.gz', sha256: 'ABCDEF0123456789abcdef0123456789abcdef0123456789abcdef0123456789', limits: {max_module: 1Mi}}\n  - {name: b, module: x.wasm}\n";
        let plan = plan(text);
        let a = &plan.sinks[0];
        assert_eq!(
            a.module,
            PlannedModule::ConfigMap(ConfigMapRef {
                name: "sinks".into(),
                key: "mysql.wasm.gz".into()
            })
        );
        assert_eq!(
            a.configmap(),
            Some(&ConfigMapRef::parse("sinks/mysql.wasm.gz").unwrap())
        );
        assert_eq!(a.module.origin(), "configmap sinks key mysql.wasm.gz");
        assert_eq!(
            a.sha256.as_deref(),
            Some("abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789")
        );
        assert_eq!(a.spec.limits.max_module_bytes, 1 << 20);
        let b = &plan.sinks[1];
        assert_eq!(b.module, PlannedModule::File("x.wasm".into()));
        assert!(b.configmap().is_none());
        assert_eq!(
            b.spec.limits.max_module_bytes,
            kubesink_host::DEFAULT_MAX_MODULE_BYTES
        );
    }

    #[test]
    fn limits_and_queue_policy() {
        let text = "sinks:\n  - {name: a, module: x.wasm, limits: {memory: 8Mi, call_timeout: 2s}}\n  - {name: b, module: y.wasm, queue: {coalesce: false}}\n";
        let plan = plan(text);
        assert_eq!(plan.sinks[0].spec.limits.memory_bytes, 8 << 20);
        assert_eq!(plan.sinks[0].spec.limits.call_timeout.as_secs(), 2);
        assert_eq!(plan.sinks[0].coalesce, None, "as the sink declares");
        assert_eq!(plan.sinks[1].coalesce, Some(false));
    }

    #[test]
    fn host_memory_resources_cpu_and_http_in_flight() {
        let text = "sinks:
  - {name: a, module: x.wasm, limits: {host_memory: 8Mi, max_resources: 100, cpu: 200m, http_max_in_flight: 3}}
  - {name: b, module: y.wasm, limits: {cpu: 1}}
  - {name: c, module: z.wasm, limits: {cpu: 0.5}}
  - {name: d, module: w.wasm}
";
        let plan = plan(text);
        let l = |i: usize| &plan.sinks[i].spec.limits;
        assert_eq!(l(0).host_memory_bytes, 8 << 20);
        assert_eq!(l(0).max_resources, 100);
        assert_eq!(l(0).cpu, Some(0.2));
        assert_eq!(l(0).http_max_in_flight, 3);
        assert_eq!(l(1).cpu, Some(1.0));
        assert_eq!(l(2).cpu, Some(0.5));
        assert_eq!(l(3).cpu, None, "no quota by default");
        assert_eq!(
            l(3).host_memory_bytes,
            kubesink_host::DEFAULT_HOST_MEMORY_BYTES
        );
        assert_eq!(l(3).max_resources, kubesink_host::DEFAULT_MAX_RESOURCES);
        assert_eq!(
            l(3).http_max_in_flight,
            Limits::default().http_max_in_flight,
            "the host's default"
        );
    }

    #[test]
    fn planned_settings_are_expanded_and_redacted_in_debug() {
        let text = "sinks:\n  - name: a\n    module: x.wasm\n    settings: { endpoint: 'http://h', access_key_secret: 'hunter2-${KUBESINK_TEST_UNSET_X:-dflt}' }\n";
        let plan = plan(text);
        let spec = &plan.sinks[0].spec;
        assert!(
            spec.settings
                .contains(&("access_key_secret".into(), "hunter2-dflt".into()))
        );
        let shown = format!("{plan:?}");
        assert!(
            !shown.contains("hunter2")
                && shown.contains("[REDACTED]")
                && shown.contains("http://h"),
            "{shown}"
        );
        let loaded = spec.with_module(ModuleSource::Path("x.wasm".into()));
        assert_eq!(loaded.settings, spec.settings);
        assert_eq!(loaded.name, "a");
    }
}
