//! The `kubesink:sink/kafka` capability: Kafka producers the host owns.
//!
//! - [`ProducerConfig`] (`config.rs`): one producer as configured (brokers,
//!   SASL credentials as a [`Secret`](crate::secret::Secret), client
//!   settings) and the librdkafka settings built from it: always
//!   `enable.idempotence=true` and `acks=all`.
//! - [`KafkaProducers`] (`producers.rs`): one librdkafka producer per name,
//!   created at start and shared by every sink granted it; `produce` sends
//!   one call's messages in order and waits for every acknowledgement or
//!   the call's deadline, mapping errors to the WIT cases.
//! - The capability for a store (`view.rs`): the sink's [`KafkaGrant`]s
//!   (producer and topics) checked on every call, a call's bytes capped and
//!   charged to the sink's host memory budget, a denied topic logged naming
//!   the sink, the producer and the topic (escaped).
//!
//! Credentials never reach a log or an error: [`ProducerConfig`]'s `Debug`
//! redacts the password, and librdkafka's messages do not carry it.

pub use crate::bindings::kubesink::sink::kafka::{KafkaError, Message};

mod config;
pub(crate) mod producers;
mod view;

pub use config::{
    Compression, DEFAULT_DELIVERY_TIMEOUT, DEFAULT_LINGER, DEFAULT_MESSAGE_MAX_BYTES,
    KafkaConfigError, KafkaGrant, ProducerConfig, SaslPlain, is_valid_topic,
};
pub use producers::{KafkaProducers, MAX_CALL_BYTES};
pub(crate) use view::{KafkaCtx, KafkaCtxView, KafkaView, add_to_linker};

#[cfg(test)]
mod tests;
