//! kubesink: watches Kubernetes jobs, pods and events, normalizes them into
//! records and delivers batches to sinks that run as sandboxed WebAssembly
//! components.
//!
//! Where things happen:
//! - [`app`]: `kubesink run` and `kubesink replay` assembled, for the
//!   binary and in-process tests;
//! - [`source`]: where objects come from (replay files, the live watch);
//! - `kubesink_normalize`: where a Kubernetes object becomes a record;
//! - [`pipeline`]: per-sink queues, batching, retry;
//! - [`checkpoint`]: what log sinks have delivered, kept in a ConfigMap
//!   across restarts and hand-overs;
//! - `kubesink_host`: the wasmtime engine, sink instances, limits and
//!   capabilities;
//! - [`config`]: the configuration file and command-line switches;
//! - [`modules`]: sink modules from ConfigMaps, watched and hot-swapped;
//! - [`namespace`]: kubesink's own namespace;
//! - [`ops`]: metrics, health and readiness, and their HTTP server.

// The module docs are written for maintainers and link internals:
// `cargo doc --document-private-items` renders those links.
#![allow(rustdoc::private_intra_doc_links)]

pub mod app;
pub mod checkpoint;
pub mod config;
pub mod history;
pub mod modules;
pub mod namespace;
pub mod ops;
pub mod pipeline;
pub mod show;
pub mod source;
