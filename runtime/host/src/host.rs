//! The host itself: one wasmtime engine and linker, the epoch ticker
//! ([`crate::epoch`]), the
//! SQL pools, the component cache, and what each sink's instances share
//! (its host memory budget, CPU quota, output budget and HTTP slots).
//! [`Host::load`] turns a [`SinkSpec`] into a running [`SinkInstance`].

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use wasmtime::component::Linker;
use wasmtime::{Config, Engine, Strategy};

use crate::budget::HostBudget;
use crate::cache::{self, CacheOutcome};
use crate::cpu::CpuQuota;
use crate::epoch::EpochGate;
use crate::error::HostError;
use crate::instance::{self, SinkInstance, StoreData};
use crate::spec::{Limits, ModuleSource, SinkSpec};
use crate::{bindings, http, kafka, log, sql};

/// Options for the whole host.
#[derive(Debug, Clone, Default)]
pub struct HostOptions {
    /// Where compiled components are cached; `None` disables the cache.
    pub cache_dir: Option<PathBuf>,
    /// Named SQL connections (name -> settings), owned by the host.
    pub sql: Vec<sql::ConnectionConfig>,
    /// Named Kafka producers, owned by the host and shared by the sinks
    /// granted them.
    pub kafka: Vec<kafka::ProducerConfig>,
}

struct HostInner {
    engine: Engine,
    linker: Linker<StoreData>,
    pools: sql::SqlPools,
    producers: kafka::KafkaProducers,
    cache_dir: Option<PathBuf>,
    sinks: Mutex<HashMap<String, SinkShared>>,
    outputs: log::SinkOutputs,
    http_slots: http::InFlightSlots,
    epoch: EpochGate,
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
/// clone and the last sink instance loaded from it are dropped.
#[derive(Clone)]
pub struct Host {
    inner: Arc<HostInner>,
}

impl std::fmt::Debug for Host {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Host")
            .field("cache_dir", &self.inner.cache_dir)
            .field("sql", &self.inner.pools)
            .field("kafka", &self.inner.producers)
            .finish()
    }
}

/// Adds everything a sink may import to `linker`: WASI 0.2 (what a
/// `wasm32-wasip2` program links; denied at run time by the context, see
/// [`crate::instance`]), `kubesink:sink/sql`, `kubesink:sink/kafka` and
/// `wasi:http` (`crate::http::add_to_linker`). A component imports what its
/// world has; the rest is unused.
fn build_linker(engine: &Engine) -> wasmtime::Result<Linker<StoreData>> {
    let mut linker = Linker::new(engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
    sql::add_to_linker(&mut linker)?;
    http::add_to_linker(&mut linker)?;
    kafka::add_to_linker(&mut linker)?;
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
    /// linker, the epoch ticker (parked until a guest call), the SQL pools (lazily: nothing connects
    /// yet) and the cache directory.
    pub fn new(options: HostOptions) -> Result<Host, HostError> {
        let mut config = Config::new();
        config.strategy(Strategy::Cranelift);
        config.epoch_interruption(true);
        config.wasm_component_model(true);
        // For profiling: wasmtime writes /tmp/perf-<pid>.map, so that
        // `perf report` names the guests' functions (docs/benchmarks.md,
        // "Hot paths"). Off unless set; it changes nothing else.
        if std::env::var_os("KUBESINK_PERF_MAP").is_some() {
            config.profiler(wasmtime::ProfilingStrategy::PerfMap);
        }
        let engine = Engine::new(&config).map_err(|e| HostError::Engine(error_text(&e)))?;
        let linker = build_linker(&engine).map_err(|e| HostError::Engine(error_text(&e)))?;
        let pools = sql::SqlPools::new(&options.sql)?;
        let producers = kafka::KafkaProducers::new(&options.kafka)?;
        if let Some(dir) = &options.cache_dir {
            std::fs::create_dir_all(dir).map_err(|source| HostError::CacheDir {
                path: dir.clone(),
                source,
            })?;
        }
        let epoch = EpochGate::start(engine.clone())
            .map_err(|e| HostError::Engine(format!("cannot start the epoch ticker: {e}")))?;
        Ok(Host {
            inner: Arc::new(HostInner {
                engine,
                linker,
                pools,
                producers,
                cache_dir: options.cache_dir,
                sinks: Mutex::new(HashMap::new()),
                outputs: log::SinkOutputs::default(),
                http_slots: http::InFlightSlots::default(),
                epoch,
            }),
        })
    }

    /// The gate of the epoch ticker: it ticks only while a guest call
    /// holds a [`crate::epoch::Ticking`] from it.
    pub fn epoch(&self) -> &EpochGate {
        &self.inner.epoch
    }

    /// The engine (e.g. to precompile ahead of time).
    pub fn engine(&self) -> &Engine {
        &self.inner.engine
    }

    /// The host's SQL pools, for native use.
    pub fn sql_pools(&self) -> &sql::SqlPools {
        &self.inner.pools
    }

    /// The host's Kafka producers, for native use.
    pub fn kafka_producers(&self) -> &kafka::KafkaProducers {
        &self.inner.producers
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

    /// Sink `spec.name`'s host memory budget (see [`crate::budget`]), shared by all
    /// its instances.
    #[cfg(test)]
    pub(crate) fn sink_budget(&self, spec: &SinkSpec) -> HostBudget {
        self.shared(&spec.name, &spec.limits).budget
    }

    /// Sink `spec.name`'s guest CPU meter and quota (see [`crate::cpu`]), shared
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
        let versions = bindings::contract_versions(&component, &self.inner.engine);
        if versions.iter().any(|v| !bindings::is_served(v)) {
            return Err(HostError::Version {
                sink: spec.name.clone(),
                origin: origin.clone(),
                found: versions.join(", "),
                serves: bindings::CONTRACT_VERSION.to_owned(),
            });
        }
        let pre = self
            .inner
            .linker
            .instantiate_pre(&component)
            .map_err(|e| world(error_text(&e)))?;
        let pre = bindings::SinkWorldPre::new(pre).map_err(|e| world(error_text(&e)))?;
        let packed = bindings::packed_export(&component, &self.inner.engine);
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
            packed,
            pools: self.inner.pools.clone(),
            producers: self.inner.producers.clone(),
            engine: self.inner.engine.clone(),
            epoch: self.inner.epoch.clone(),
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
mod tests;
