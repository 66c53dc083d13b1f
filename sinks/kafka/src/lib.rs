//! kubesink sink for Apache Kafka: every change becomes one JSON message,
//! keyed by the object's uid (so one object's updates stay in one
//! partition, in order), produced through the host's `kafka` capability
//! (`wit/kafka-sink.wit`, world `kafka-sink-world`). The brokers and their
//! credentials stay with the host; the sink names a producer and topics,
//! which its configuration must grant (`kafka: { PRODUCER: [TOPIC, ...] }`).
//!
//! Build: `cargo build --target wasm32-wasip2 --profile guest -p kubesink-sink-kafka`
//! (`target/wasm32-wasip2/guest/kubesink_sink_kafka.wasm`).
//!
//! Settings, the message schema and an example: `sinks/README.md`
//! ("kafka").

#[allow(unsafe_code, missing_docs, clippy::all)]
pub mod bindings;
/// The JSON of a change: the same source as the webhook sink's
/// (`sinks/webhook/src/record.rs`), compiled against this sink's bindings,
/// so the two sinks send one schema.
#[allow(dead_code)]
#[path = "../../webhook/src/record.rs"]
pub mod record;
pub mod settings;
pub mod sink;

// wit-bindgen's export glue uses `unsafe` (canonical ABI).
#[cfg(target_arch = "wasm32")]
#[allow(unsafe_code)]
mod component;

pub use settings::{Settings, SettingsError};
pub use sink::{KafkaSink, Produce};
