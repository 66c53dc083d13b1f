//! Why the host could not start, or could not load a sink ([`HostError`]).

use std::path::PathBuf;

use crate::cache::CompileError;
use crate::instance::CallError;
use crate::sql;

/// Why the host could not start, or could not load a sink.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    /// The wasmtime engine could not be created.
    #[error("cannot create the wasmtime engine: {0}")]
    Engine(String),
    /// A SQL connection in the options is unusable.
    #[error(transparent)]
    Sql(#[from] sql::SqlConfigError),
    /// A Kafka producer in the options is unusable.
    #[error(transparent)]
    Kafka(#[from] crate::kafka::KafkaConfigError),
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
    /// The component was built against a version of the WIT package
    /// `kubesink:sink` this host does not serve (wit/README.md, "Versions").
    #[error(
        "sink '{sink}': {origin} was built against kubesink:sink@{found}, but this kubesink runs sinks built against kubesink:sink@{serves} (or a compatible 0.{minor}.x): rebuild the sink against the wit/ folder of this kubesink release (see wit/README.md for what changed)",
        minor = serves.split('.').nth(1).unwrap_or("?")
    )]
    Version {
        /// The sink.
        sink: String,
        /// The file or origin.
        origin: String,
        /// The version(s) the component names, e.g. `0.1.0`.
        found: String,
        /// The version this host implements ([`crate::bindings::CONTRACT_VERSION`]).
        serves: String,
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
        source: CallError,
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
