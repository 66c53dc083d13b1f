//! What the host needs to build a sink: where its component comes from
//! ([`ModuleSource`]), its settings and grants ([`SinkSpec`]) and its
//! resource limits ([`Limits`]) with their defaults.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::budget::DEFAULT_HOST_MEMORY_BYTES;
use crate::secret;

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
    /// entries, e.g. `https://*.log.aliyuncs.com` (syntax in [`crate::http`]).
    /// Default empty: every request is denied.
    pub http_allow: Vec<String>,
    /// The Kafka producers the sink may produce with, each with the topics
    /// it may write (`kafka` of the sink's configuration). Default empty:
    /// every `produce` is denied.
    pub kafka: Vec<crate::kafka::KafkaGrant>,
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
    /// naming the sink (see [`crate::budget`]). Default 64 MiB.
    pub host_memory_bytes: usize,
    /// Most resource handles (SQL connections, HTTP requests and bodies,
    /// streams, pollables, ...) one instance may hold at once
    /// (`limits.max_resources`). One more faults the call. Default 10 000.
    pub max_resources: usize,
    /// CPU quota in cores of guest execution (wasm code, not host calls),
    /// all the sink's workers together (`limits.cpu`, e.g. `200m` = 0.2).
    /// A sink over it is paused at its next epoch check until its share
    /// refills, and at most ceil(cores) of its instances are inside a guest
    /// call at once (see [`crate::cpu`]). Default `None`: no quota (the
    /// call deadline still applies).
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
            kafka: Vec::new(),
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
