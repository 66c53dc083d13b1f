//! kubesink's benchmark harness (`just bench`, issue 7): generated cluster
//! history replayed through the wasm mysql sink, the same sink logic built
//! natively, and plain sqlx upserts into MariaDB; the sls sink into the
//! emulator; host→guest call costs (criterion, `benches/host_call.rs`);
//! kubesink's resident memory while it holds many pods, end-to-end
//! latency at a fixed event rate and the CPU of an idle `kubesink run`
//! against a real control plane. The binary
//! `kubesink-bench` runs the scenarios and writes `docs/benchmarks.md`.
//!
//! Modules: [`data`] (generated stream → batches of entries), [`convert`]
//! (host records → sink model), [`native`] (the native sink's database),
//! [`ceiling`] (plain sqlx), [`mysql`] (the three MariaDB runs), [`sls`]
//! (the sls run), [`live`] (memory and latency against the control plane),
//! [`idle`] (the CPU of an idle `kubesink run`),
//! [`restart`] (a log sink's duplicates per restart, with and without the
//! checkpoint),
//! [`calls`] (criterion results), [`procfs`] (memory, machine), [`report`].

pub mod calls;
pub mod ceiling;
pub mod convert;
pub mod data;
pub mod idle;
pub mod live;
pub mod livecpu;
pub mod mysql;
pub mod native;
pub mod procfs;
pub mod report;
pub mod restart;
pub mod sls;
