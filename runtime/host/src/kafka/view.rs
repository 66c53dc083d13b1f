//! The capability proper, following wasmtime's View pattern: [`KafkaCtx`]
//! (per store: the sink's name, its grants, the producers, its host memory
//! budget and the call's deadline), the [`KafkaView`] trait the store data
//! implements, and [`add_to_linker`].

use wasmtime::component::{HasData, Linker};

use super::producers::{MAX_CALL_BYTES, message_bytes};
use super::{KafkaError, KafkaGrant, KafkaProducers, Message};
use crate::bindings::kubesink::sink::kafka as wit;
use crate::log::sanitize;

/// Longest text from a sink (a producer or topic name) shown in a log line
/// or an error.
const MAX_NAME_SHOWN: usize = 256;

/// Per-store state of the `kafka` capability for one sink.
#[derive(Debug, Clone)]
pub(crate) struct KafkaCtx {
    sink: String,
    grants: Vec<KafkaGrant>,
    producers: KafkaProducers,
    /// The sink's host memory budget (messages in flight are charged to it).
    budget: crate::budget::HostBudget,
    /// The deadline of the call running now, if any.
    deadline: Option<std::time::Instant>,
}

impl KafkaCtx {
    /// The capability for sink `sink`, which may produce with the
    /// producers and to the topics of `grants`.
    pub(crate) fn new(
        sink: impl Into<String>,
        grants: Vec<KafkaGrant>,
        producers: KafkaProducers,
        budget: crate::budget::HostBudget,
    ) -> Self {
        Self {
            sink: sink.into(),
            grants,
            producers,
            budget,
            deadline: None,
        }
    }

    /// Sets the deadline of the call that starts now (`None` between calls).
    pub(crate) fn set_deadline(&mut self, deadline: Option<std::time::Instant>) {
        self.deadline = deadline;
    }

    /// Whether this sink may produce to `topic` with `producer`: `Err`
    /// names the sink, the producer and the topic (escaped).
    pub(crate) fn check_grant(&self, producer: &str, topic: &str) -> Result<(), KafkaError> {
        let shown_producer = sanitize(producer, MAX_NAME_SHOWN);
        let Some(grant) = self.grants.iter().find(|g| g.producer == producer) else {
            return Err(KafkaError::Denied(format!(
                "sink '{}' is not granted kafka producer '{shown_producer}'",
                self.sink
            )));
        };
        if !grant.topics.iter().any(|t| t == topic) {
            return Err(KafkaError::Denied(format!(
                "sink '{}' is not granted topic '{}' on kafka producer '{shown_producer}'",
                self.sink,
                sanitize(topic, MAX_NAME_SHOWN)
            )));
        }
        if !self.producers.contains(producer) {
            return Err(KafkaError::Denied(format!(
                "sink '{}': kafka producer '{shown_producer}' is not configured on this host",
                self.sink
            )));
        }
        Ok(())
    }

    /// Checks the grant and the caps, then produces.
    pub(crate) async fn produce(
        &self,
        producer: &str,
        topic: &str,
        messages: &[Message],
    ) -> Result<(), KafkaError> {
        if let Err(err) = self.check_grant(producer, topic) {
            tracing::warn!(
                target: "kubesink::sink",
                sink = %self.sink,
                producer = %sanitize(producer, MAX_NAME_SHOWN),
                topic = %sanitize(topic, MAX_NAME_SHOWN),
                "kafka produce denied: the topic is not granted to this sink"
            );
            return Err(err);
        }
        let bytes: usize = messages.iter().map(message_bytes).sum();
        if bytes > MAX_CALL_BYTES {
            return Err(KafkaError::TooLarge(format!(
                "sink '{}': {} messages of {bytes} bytes to topic '{topic}', over the {MAX_CALL_BYTES} bytes one produce call may send",
                self.sink,
                messages.len()
            )));
        }
        // librdkafka copies the messages into its queue until they are
        // acknowledged: host memory this sink causes.
        let _held = self
            .budget
            .try_reserve_for("kafka messages", bytes)
            .map_err(|e| KafkaError::TooLarge(e.to_string()))?;
        self.producers
            .produce(producer, topic, messages, self.deadline)
            .await
    }
}

/// What the host functions of the capability borrow from the store.
pub(crate) struct KafkaCtxView<'a> {
    /// The sink's grants and the producers.
    pub ctx: &'a mut KafkaCtx,
}

/// Implemented by store data that offers the `kafka` capability.
pub(crate) trait KafkaView: Send {
    /// Borrow the capability's state.
    fn kafka(&mut self) -> KafkaCtxView<'_>;
}

struct HasKafka;

impl HasData for HasKafka {
    type Data<'a> = KafkaCtxView<'a>;
}

/// Adds `kubesink:sink/kafka` to `linker`.
pub(crate) fn add_to_linker<T: KafkaView + 'static>(
    linker: &mut Linker<T>,
) -> wasmtime::Result<()> {
    wit::add_to_linker::<T, HasKafka>(linker, T::kafka)
}

impl wit::Host for KafkaCtxView<'_> {
    async fn produce(
        &mut self,
        producer: String,
        topic: String,
        messages: Vec<Message>,
    ) -> wasmtime::Result<Result<(), KafkaError>> {
        Ok(self.ctx.produce(&producer, &topic, &messages).await)
    }
}
