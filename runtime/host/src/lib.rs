//! The sandbox: the wasmtime engine, the compiled-component cache, sink
//! instances with their limits, and one module per capability a sink can
//! be granted ([`sql`], [`http`]).
//!
//! API used by the rest of the runtime (the pipeline):
//!
//! ```text
//! let host = Host::new(HostOptions { cache_dir: Some(dir), sql: connections, kafka: producers })?;
//! let mut sink = host.load(SinkSpec { name, module, settings, sql_grants, limits }).await?;
//! sink.write(&batch).await?; // CallError::{Retryable, Fatal, Fault}
//! ```
//!
//! Module map:
//!
//! - the host and what it loads: [`host`] (engine, linker, the epoch
//!   ticker of [`epoch`], what a sink's instances share, [`Host::load`]), [`spec`] (a sink's
//!   module, settings, grants and [`Limits`]), [`error`] ([`HostError`]),
//!   [`cache`] (compile + on-disk artifacts), [`bindings`] (the WIT world);
//! - a running sink: [`instance`] (stores, limits, faults, rebuilds);
//! - what a sink may use, each limited per sink: [`budget`] (host memory),
//!   [`cpu`] (guest CPU time and quota), [`log`] (guest stdout/stderr and
//!   error text to `tracing`, escaped and rate-limited);
//! - capabilities: [`sql`] (SQL by connection name on the host's pools),
//!   [`http`] (`wasi:http` behind an allow-list), [`kafka`] (produce with
//!   the host's producers to granted topics);
//! - [`secret`] (values that never reach a log).

// The module docs are written for maintainers and link internals:
// `cargo doc --document-private-items` renders those links.
#![allow(rustdoc::private_intra_doc_links)]

mod bindings;
mod budget;
mod cache;
pub mod cpu;
mod epoch;
mod error;
mod host;
pub mod http;
mod instance;
pub mod kafka;
pub mod log;
mod packed;
pub mod secret;
mod spec;
pub mod sql;

pub use budget::{DEFAULT_HOST_MEMORY_BYTES, HostBudget};
pub use cache::{CacheOutcome, CompileError};
pub use cpu::CpuQuota;
pub use epoch::EPOCH_TICK;
pub use error::HostError;
pub use host::{Host, HostOptions};
pub use instance::{CallError, FaultCause, HeldCap, SinkInstance, SinkStats};
pub use packed::{Layout as PackedLayout, Packer, TooLarge};
pub use spec::{DEFAULT_MAX_MODULE_BYTES, DEFAULT_MAX_RESOURCES, Limits, ModuleSource, SinkSpec};
