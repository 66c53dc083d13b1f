//! The sandbox: the wasmtime engine, the compiled-component cache, sink
//! instances with their limits, and one module per capability
//! ([`sql`]; `http` later).
//!
//! API used by the rest of the runtime (the pipeline):
//!
//! ```text
//! let host = Host::new(HostOptions { cache_dir: Some(dir), sql: connections })?;
//! let mut sink = host.load(SinkSpec { name, module, settings, sql_grants, limits }).await?;
//! sink.write(&batch).await?; // WriteError::{Retryable, Fatal, Fault}
//! ```
//!
//! Module map: [`cache`] (compile + on-disk artifacts), [`instance`]
//! (stores, limits, faults, rebuilds), [`budget`] (the per-sink host
//! memory budget), [`cpu`] (the per-sink CPU quota), [`log`] (guest
//! stdout/stderr to `tracing`), [`sql`] (the SQL capability and native
//! pools).

pub mod bindings;
pub mod budget;
pub mod cache;
pub mod cpu;
pub mod http;
pub mod instance;
pub mod log;
pub mod secret;
pub mod sql;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use wasmtime::component::Linker;
use wasmtime::{Config, Engine, Strategy};

pub use budget::{BudgetExceeded, DEFAULT_HOST_MEMORY_BYTES, HostBudget, Reservation};
pub use cache::{CacheOutcome, CompileError};
pub use cpu::CpuQuota;
pub use instance::{FaultCause, SinkInstance, SinkStats, StoreData, WriteError};
pub use kubesink_normalize::record::Entry;
pub use kubesink_normalize::record::SinkError;

/// How often the epoch ticker advances the engine's epoch: the resolution
/// of call deadlines.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);

/// Default of [`Limits::max_module_bytes`]: 64 MiB.
pub const DEFAULT_MAX_MODULE_BYTES: usize = 64 << 20;

/// Default of [`Limits::max_resources`]: 10 000 handles.
pub const DEFAULT_MAX_RESOURCES: usize = 10_000;

/// Where a sink's component comes from.
#[derive(Debug, Clone)]
pub enum ModuleSource {
    /// A `.wasm` file on disk.
    Path(PathBuf),
    /// Bytes obtained elsewhere (a ConfigMap key, or bundled in the binary);
    /// `origin` names them in errors, e.g. `configmap kubesink/sinks key mysql.wasm`.
    Bytes {
        /// Names the bytes in errors and logs.
        origin: String,
        /// The component.
        bytes: Arc<Vec<u8>>,
    },
}

impl ModuleSource {
    /// How errors name this source: the file path, or the origin.
    pub fn origin(&self) -> String {
        match self {
            ModuleSource::Path(p) => p.display().to_string(),
            ModuleSource::Bytes { origin, .. } => origin.clone(),
        }
    }
}

/// Per-sink resource limits. Defaults are documented on each field.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Most linear memory (all memories of the instance together) it may
    /// grow to. Default 64 MiB.
    pub memory_bytes: usize,
    /// Wall-time deadline for one call into the guest (`init` or `write`),
    /// including the host calls it makes. Default 30 s.
    pub call_timeout: Duration,
    /// Longest SQL statement (text plus parameters) the guest may send.
    /// Default 4 MiB.
    pub max_statement_bytes: usize,
    /// Most bytes of result rows a query may return to the guest. Default 16 MiB.
    pub max_result_bytes: usize,
    /// Most bytes of stdout+stderr per second logged for the sink; the rest
    /// is dropped and counted. Default 64 KiB.
    pub log_bytes_per_sec: usize,
    /// Where the sink may send HTTP requests: `[scheme://]host[:port]`
    /// entries, e.g. `https://*.log.aliyuncs.com` (syntax in [`http`]).
    /// Default empty: every request is denied.
    pub http_allow: Vec<String>,
    /// Deadline of one outgoing HTTP request, from connecting to the end of
    /// the response body. Default 20 s.
    pub http_timeout: Duration,
    /// Largest HTTP request body the guest may send. Default 16 MiB.
    pub max_http_request_bytes: usize,
    /// Largest HTTP response body handed to the guest. Default 4 MiB.
    pub max_http_response_bytes: usize,
    /// Most HTTP requests the sink has in flight at once, all its workers'
    /// instances together; one more fails at once with
    /// `connection-limit-reached`. Default 16 (the sls sink sends up to 8).
    pub http_max_in_flight: usize,
    /// Largest component (after decompression, for a gzipped ConfigMap
    /// key) the host compiles for this sink; a bigger one is refused before
    /// compiling. Default 64 MiB (the Rust sinks are 0.1–0.2 MiB; components
    /// that bundle an interpreter are tens of MiB).
    pub max_module_bytes: usize,
    /// Host memory the sink may cause outside its linear memory, all its
    /// workers' instances together (`limits.host_memory`): SQL result rows,
    /// HTTP bodies buffered, wasm tables. Going past it fails that call,
    /// naming the sink (see [`budget`]). Default 64 MiB.
    pub host_memory_bytes: usize,
    /// Most resource handles (SQL connections, HTTP requests and bodies,
    /// streams, pollables, ...) one instance may hold at once
    /// (`limits.max_resources`). One more faults the call. Default 10 000.
    pub max_resources: usize,
    /// CPU quota in cores of guest execution (wasm code, not host calls),
    /// all the sink's workers together (`limits.cpu`, e.g. `200m` = 0.2).
    /// A sink over it is paused at its next epoch check until its share
    /// refills (see [`cpu`]). Default `None`: no quota (the call deadline
    /// still applies).
    pub cpu: Option<f64>,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            memory_bytes: 64 << 20,
            call_timeout: Duration::from_secs(30),
            max_statement_bytes: 4 << 20,
            max_result_bytes: 16 << 20,
            log_bytes_per_sec: 64 << 10,
            http_allow: Vec::new(),
            http_timeout: Duration::from_secs(20),
            max_http_request_bytes: 16 << 20,
            max_http_response_bytes: 4 << 20,
            http_max_in_flight: 16,
            max_module_bytes: DEFAULT_MAX_MODULE_BYTES,
            host_memory_bytes: DEFAULT_HOST_MEMORY_BYTES,
            max_resources: DEFAULT_MAX_RESOURCES,
            cpu: None,
        }
    }
}

/// What the host needs to build one sink instance. `Debug` redacts the
/// values of secret settings ([`secret::is_secret_key`]).
#[derive(Clone)]
pub struct SinkSpec {
    /// The sink's name from the configuration; tags its logs and errors.
    pub name: String,
    /// The component.
    pub module: ModuleSource,
    /// Passed to the guest's `init`.
    pub settings: Vec<(String, String)>,
    /// SQL connection names this sink may open.
    pub sql_grants: Vec<String>,
    /// Its resource limits.
    pub limits: Limits,
}

impl std::fmt::Debug for SinkSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SinkSpec")
            .field("name", &self.name)
            .field("module", &self.module)
            .field("settings", &secret::RedactedSettings(&self.settings))
            .field("sql_grants", &self.sql_grants)
            .field("limits", &self.limits)
            .finish()
    }
}

/// Options for the whole host.
#[derive(Debug, Clone, Default)]
pub struct HostOptions {
    /// Where compiled components are cached; `None` disables the cache.
    pub cache_dir: Option<PathBuf>,
    /// Named SQL connections (name -> settings), owned by the host.
    pub sql: Vec<sql::ConnectionConfig>,
}

/// Why the host could not start, or could not load a sink.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    /// The wasmtime engine could not be created.
    #[error("cannot create the wasmtime engine: {0}")]
    Engine(String),
    /// A SQL connection in the options is unusable.
    #[error(transparent)]
    Sql(#[from] sql::SqlConfigError),
    /// The cache directory cannot be created.
    #[error("cannot create the component cache directory {path}: {source}")]
    CacheDir {
        /// The directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The component file cannot be read.
    #[error("sink '{sink}': cannot read component {origin}: {source}")]
    Read {
        /// The sink.
        sink: String,
        /// The file.
        origin: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The component is bigger than the sink's [`Limits::max_module_bytes`].
    #[error(
        "sink '{sink}': {origin}: the component is {size} bytes, over the sink's module size limit of {limit} bytes (limits.max_module)"
    )]
    TooLarge {
        /// The sink.
        sink: String,
        /// The file or origin.
        origin: String,
        /// Its size in bytes.
        size: u64,
        /// The limit in bytes.
        limit: usize,
    },
    /// The bytes are not a usable component.
    #[error("sink '{sink}': {origin}: {source}")]
    Compile {
        /// The sink.
        sink: String,
        /// The file or origin.
        origin: String,
        /// Why.
        #[source]
        source: CompileError,
    },
    /// The component does not fit `kubesink:sink/sink-world`: it lacks the
    /// `kubesink:sink/sink` export, or imports something the host does not
    /// provide.
    #[error("sink '{sink}': {origin} does not implement kubesink:sink/sink-world: {reason}")]
    World {
        /// The sink.
        sink: String,
        /// The file or origin.
        origin: String,
        /// What is missing or mismatched.
        reason: String,
    },
    /// The guest's `init` failed (or faulted). See [`HostError::is_retryable`].
    #[error("{source} (component {origin})")]
    Init {
        /// The sink.
        sink: String,
        /// The file or origin.
        origin: String,
        /// The failure, as for a write.
        #[source]
        source: WriteError,
    },
    /// A background task panicked or was cancelled.
    #[error("sink '{sink}': internal error: {reason}")]
    Internal {
        /// The sink.
        sink: String,
        /// What happened.
        reason: String,
    },
}

impl HostError {
    /// True when loading again later may succeed: `init` returned
    /// `retryable` (e.g. its database is down) or timed out. Everything else
    /// (missing file, bad component, fatal init, memory or trap) needs a
    /// configuration or code change.
    pub fn is_retryable(&self) -> bool {
        matches!(self, HostError::Init { source, .. } if source.is_retryable())
    }
}

/// Advances the engine's epoch every [`EPOCH_TICK`] until dropped.
struct Ticker {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Ticker {
    fn start(engine: Engine) -> std::io::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("kubesink-epoch".into())
            .spawn(move || {
                while !flag.load(Ordering::Relaxed) {
                    std::thread::sleep(EPOCH_TICK);
                    engine.increment_epoch();
                }
            })?;
        Ok(Self {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for Ticker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

struct HostInner {
    engine: Engine,
    linker: Linker<StoreData>,
    pools: sql::SqlPools,
    cache_dir: Option<PathBuf>,
    sinks: Mutex<HashMap<String, SinkShared>>,
    outputs: log::SinkOutputs,
    http_slots: http::InFlightSlots,
    _ticker: Ticker,
}

/// What all instances of one sink share: its host memory budget and its
/// CPU meter and quota.
#[derive(Clone)]
struct SinkShared {
    budget: HostBudget,
    cpu: CpuQuota,
}

/// The sandbox host: one engine, one linker, the SQL pools and the cache.
/// Cheap to clone; `Send + Sync`. The epoch ticker stops when the last
/// clone is dropped.
#[derive(Clone)]
pub struct Host {
    inner: Arc<HostInner>,
}

impl std::fmt::Debug for Host {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Host")
            .field("cache_dir", &self.inner.cache_dir)
            .field("sql", &self.inner.pools)
            .finish()
    }
}

/// Adds everything a sink may import to `linker`: WASI 0.2 (what a
/// `wasm32-wasip2` program links; denied at run time by the context, see
/// [`instance`]) and `kubesink:sink/sql`. The `http` capability is added
/// here too when it exists (`crate::http::add_to_linker`).
fn build_linker(engine: &Engine) -> wasmtime::Result<Linker<StoreData>> {
    let mut linker = Linker::new(engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
    sql::add_to_linker(&mut linker)?;
    http::add_to_linker(&mut linker)?;
    Ok(linker)
}

fn error_text(err: &wasmtime::Error) -> String {
    err.chain()
        .map(|e| e.to_string())
        .collect::<Vec<_>>()
        .join(": ")
}

impl Host {
    /// Creates the engine (Cranelift, epoch interruption, async), the
    /// linker, the epoch ticker, the SQL pools (lazily: nothing connects
    /// yet) and the cache directory.
    pub fn new(options: HostOptions) -> Result<Host, HostError> {
        let mut config = Config::new();
        config.strategy(Strategy::Cranelift);
        config.epoch_interruption(true);
        config.wasm_component_model(true);
        let engine = Engine::new(&config).map_err(|e| HostError::Engine(error_text(&e)))?;
        let linker = build_linker(&engine).map_err(|e| HostError::Engine(error_text(&e)))?;
        let pools = sql::SqlPools::new(&options.sql)?;
        if let Some(dir) = &options.cache_dir {
            std::fs::create_dir_all(dir).map_err(|source| HostError::CacheDir {
                path: dir.clone(),
                source,
            })?;
        }
        let ticker = Ticker::start(engine.clone())
            .map_err(|e| HostError::Engine(format!("cannot start the epoch ticker: {e}")))?;
        Ok(Host {
            inner: Arc::new(HostInner {
                engine,
                linker,
                pools,
                cache_dir: options.cache_dir,
                sinks: Mutex::new(HashMap::new()),
                outputs: log::SinkOutputs::default(),
                http_slots: http::InFlightSlots::default(),
                _ticker: ticker,
            }),
        })
    }

    /// The engine (e.g. to precompile ahead of time).
    pub fn engine(&self) -> &Engine {
        &self.inner.engine
    }

    /// The host's SQL pools, for native use.
    pub fn sql_pools(&self) -> &sql::SqlPools {
        &self.inner.pools
    }

    /// The cache directory, if any.
    pub fn cache_dir(&self) -> Option<&std::path::Path> {
        self.inner.cache_dir.as_deref()
    }

    /// The host memory budget and CPU meter of sink `name`, shared by every
    /// instance loaded for it (its workers, its rebuilds, a new module
    /// version). Created on first use with `limits`; a later call with
    /// another `host_memory_bytes` or `cpu` starts a new budget and meter
    /// for the instances loaded from then on.
    fn shared(&self, name: &str, limits: &Limits) -> SinkShared {
        let mut sinks = self.inner.sinks.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(s) = sinks.get(name)
            && s.budget.limit() == limits.host_memory_bytes
            && s.cpu.cores() == CpuQuota::new(name, limits.cpu).cores()
        {
            return s.clone();
        }
        let shared = SinkShared {
            budget: HostBudget::new(name, limits.host_memory_bytes),
            cpu: CpuQuota::new(name, limits.cpu),
        };
        sinks.insert(name.to_owned(), shared.clone());
        shared
    }

    /// Sink `spec.name`'s host memory budget (see [`budget`]), shared by all
    /// its instances.
    pub fn sink_budget(&self, spec: &SinkSpec) -> HostBudget {
        self.shared(&spec.name, &spec.limits).budget
    }

    /// Sink `spec.name`'s guest CPU meter and quota (see [`cpu`]), shared
    /// by all its instances: e.g. for `/metrics`.
    pub fn sink_cpu(&self, spec: &SinkSpec) -> CpuQuota {
        self.shared(&spec.name, &spec.limits).cpu
    }

    /// Reads, compiles (or loads from the cache), links and instantiates
    /// the sink's component and calls its `init(settings)`.
    pub async fn load(&self, spec: SinkSpec) -> Result<SinkInstance, HostError> {
        let (instance, _) = self.load_with_outcome(spec).await?;
        Ok(instance)
    }

    /// [`load`](Self::load), also telling whether the compiled component
    /// came from the cache.
    pub async fn load_with_outcome(
        &self,
        spec: SinkSpec,
    ) -> Result<(SinkInstance, CacheOutcome), HostError> {
        let origin = spec.module.origin();
        let limit = spec.limits.max_module_bytes;
        let too_large = |size: u64| HostError::TooLarge {
            sink: spec.name.clone(),
            origin: origin.clone(),
            size,
            limit,
        };
        let bytes = match &spec.module {
            ModuleSource::Path(path) => {
                let read = |source| HostError::Read {
                    sink: spec.name.clone(),
                    origin: origin.clone(),
                    source,
                };
                let size = tokio::fs::metadata(path).await.map_err(read)?.len();
                if size > limit as u64 {
                    return Err(too_large(size));
                }
                Arc::new(tokio::fs::read(path).await.map_err(read)?)
            }
            ModuleSource::Bytes { bytes, .. } => bytes.clone(),
        };
        if bytes.len() > limit {
            return Err(too_large(bytes.len() as u64));
        }
        let engine = self.inner.engine.clone();
        let cache_dir = self.inner.cache_dir.clone();
        let compiled = tokio::task::spawn_blocking(move || {
            cache::load_component(&engine, cache_dir.as_deref(), &bytes)
        })
        .await
        .map_err(|e| HostError::Internal {
            sink: spec.name.clone(),
            reason: format!("compile task: {e}"),
        })?;
        let (component, outcome) = compiled.map_err(|source| HostError::Compile {
            sink: spec.name.clone(),
            origin: origin.clone(),
            source,
        })?;
        let world = |reason: String| HostError::World {
            sink: spec.name.clone(),
            origin: origin.clone(),
            reason,
        };
        let pre = self
            .inner
            .linker
            .instantiate_pre(&component)
            .map_err(|e| world(error_text(&e)))?;
        let pre = bindings::SinkWorldPre::new(pre).map_err(|e| world(error_text(&e)))?;
        let shared = self.shared(&spec.name, &spec.limits);
        let output = self
            .inner
            .outputs
            .get(&spec.name, spec.limits.log_bytes_per_sec);
        let http_slots = self
            .inner
            .http_slots
            .get(&spec.name, spec.limits.http_max_in_flight);
        let mut instance = SinkInstance::new(instance::Blueprint {
            name: spec.name.clone(),
            origin: origin.clone(),
            settings: spec.settings,
            grants: spec.sql_grants,
            limits: spec.limits,
            pre,
            pools: self.inner.pools.clone(),
            engine: self.inner.engine.clone(),
            budget: shared.budget,
            cpu: shared.cpu,
            output,
            http_slots,
        });
        instance.rebuild().await.map_err(|source| HostError::Init {
            sink: spec.name,
            origin,
            source,
        })?;
        Ok((instance, outcome))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send_sync<T: Send + Sync>() {}

    #[test]
    fn host_is_send_sync_and_instances_are_send() {
        assert_send_sync::<Host>();
        fn assert_send<T: Send>() {}
        assert_send::<SinkInstance>();
    }

    #[tokio::test]
    async fn dropping_the_host_stops_the_ticker() {
        let host = Host::new(HostOptions::default()).expect("host");
        let stop = host.inner._ticker.stop.clone();
        let weak = Arc::downgrade(&host.inner);
        drop(host);
        assert!(
            weak.upgrade().is_none(),
            "no reference cycle keeps the host alive"
        );
        assert!(
            stop.load(Ordering::Relaxed),
            "ticker told to stop (and joined)"
        );
    }

    #[tokio::test]
    async fn a_sinks_instances_share_one_budget_and_one_cpu_meter() {
        let host = Host::new(HostOptions::default()).expect("host");
        let spec = |name: &str, limits: Limits| SinkSpec {
            name: name.into(),
            module: ModuleSource::Path("unused.wasm".into()),
            settings: vec![],
            sql_grants: vec![],
            limits,
        };
        let quota = Limits {
            cpu: Some(0.5),
            host_memory_bytes: 1 << 20,
            ..Limits::default()
        };
        let a = spec("a", quota.clone());
        assert!(host.sink_budget(&a).same(&host.sink_budget(&a)));
        assert!(host.sink_cpu(&a).same(&host.sink_cpu(&a)));
        assert_eq!(host.sink_budget(&a).limit(), 1 << 20);
        assert_eq!(host.sink_cpu(&a).cores(), Some(0.5));
        let b = spec("b", quota.clone());
        assert!(!host.sink_budget(&a).same(&host.sink_budget(&b)));
        assert!(!host.sink_cpu(&a).same(&host.sink_cpu(&b)));
        // New limits for the same name: a new budget and meter from then on.
        let a2 = spec("a", Limits::default());
        let old = host.sink_budget(&a);
        let new = host.sink_budget(&a2);
        assert!(!old.same(&new));
        assert_eq!(new.limit(), DEFAULT_HOST_MEMORY_BYTES);
        assert_eq!(host.sink_cpu(&a2).cores(), None);
    }

    #[tokio::test]
    async fn missing_file_names_sink_and_path() {
        let host = Host::new(HostOptions::default()).expect("host");
        let err = host
            .load(SinkSpec {
                name: "s1".into(),
                module: ModuleSource::Path("does/not/exist.wasm".into()),
                settings: vec![],
                sql_grants: vec![],
                limits: Limits::default(),
            })
            .await
            .expect_err("missing");
        let msg = err.to_string();
        assert!(
            msg.contains("s1") && msg.contains("does/not/exist.wasm"),
            "{msg}"
        );
        assert!(!err.is_retryable());
    }

    #[tokio::test]
    async fn module_over_the_size_limit_is_refused_before_compiling() {
        let host = Host::new(HostOptions::default()).expect("host");
        let err = host
            .load(SinkSpec {
                name: "big".into(),
                module: ModuleSource::Bytes {
                    origin: "configmap ns/cm key big.wasm".into(),
                    bytes: Arc::new(vec![0; 2048]),
                },
                settings: vec![],
                sql_grants: vec![],
                limits: Limits {
                    max_module_bytes: 1024,
                    ..Limits::default()
                },
            })
            .await
            .expect_err("too large");
        assert!(
            matches!(
                err,
                HostError::TooLarge {
                    size: 2048,
                    limit: 1024,
                    ..
                }
            ),
            "{err:?}"
        );
        let msg = err.to_string();
        assert!(
            msg.contains("big") && msg.contains("configmap ns/cm key big.wasm"),
            "{msg}"
        );
    }

    #[tokio::test]
    async fn a_component_without_the_sink_export_is_the_wrong_world() {
        let host = Host::new(HostOptions::default()).expect("host");
        let err = host
            .load(SinkSpec {
                name: "empty".into(),
                module: ModuleSource::Bytes {
                    origin: "configmap ns/cm key empty.wasm".into(),
                    // The smallest valid component: a header, nothing else.
                    bytes: Arc::new(b"\0asm\x0d\0\x01\0".to_vec()),
                },
                settings: vec![],
                sql_grants: vec![],
                limits: Limits::default(),
            })
            .await
            .expect_err("no sink export");
        assert!(matches!(err, HostError::World { .. }), "{err:?}");
        assert!(
            err.to_string().contains("kubesink:sink/sink-world"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn core_module_bytes_are_refused_with_origin() {
        let host = Host::new(HostOptions::default()).expect("host");
        let err = host
            .load(SinkSpec {
                name: "s2".into(),
                module: ModuleSource::Bytes {
                    origin: "configmap ns/cm key x.wasm".into(),
                    bytes: Arc::new(b"\0asm\x01\0\0\0".to_vec()),
                },
                settings: vec![],
                sql_grants: vec![],
                limits: Limits::default(),
            })
            .await
            .expect_err("core module");
        let msg = err.to_string();
        assert!(matches!(
            err,
            HostError::Compile {
                source: CompileError::CoreModule,
                ..
            }
        ));
        assert!(
            msg.contains("s2") && msg.contains("configmap ns/cm key x.wasm"),
            "{msg}"
        );
    }
}
