//! The host's producers, one per configured name and shared by every sink
//! granted it ([`KafkaProducers`]), and producing one call's messages on
//! one of them ([`KafkaProducers::produce`]).

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use rdkafka::error::{KafkaError as ClientError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer as _};

use super::config::{KafkaConfigError, ProducerConfig};
use super::{KafkaError, Message};

/// Most bytes (keys, values, header names and values) of one `produce`
/// call, all its messages together.
pub const MAX_CALL_BYTES: usize = 16 << 20;

/// How long a `produce` waits for room in the producer's local queue before
/// it tries again (the queue holds 100 000 messages: a batch rarely fills it).
const QUEUE_FULL_PAUSE: Duration = Duration::from_millis(5);

/// One producer and the settings it was built from. The producer is
/// replaced when librdkafka reports a fatal error (an idempotent producer
/// whose sequence the broker no longer accepts must be created anew).
struct Entry {
    producer: RwLock<Arc<FutureProducer>>,
    config: ProducerConfig,
}

impl Entry {
    fn current(&self) -> Arc<FutureProducer> {
        self.producer
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// If `used` hit a fatal error, replaces it with a new producer (once,
    /// however many calls saw it) and says why.
    fn renew_if_fatal(&self, used: &Arc<FutureProducer>) -> Option<String> {
        let (code, reason) = used.client().fatal_error()?;
        let mut slot = self
            .producer
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if Arc::ptr_eq(&slot, used) {
            match create(&self.config) {
                Ok(fresh) => {
                    *slot = Arc::new(fresh);
                    tracing::warn!(producer = %self.config.name, error = %reason, code = ?code, "kafka producer hit a fatal error and was created anew");
                }
                Err(e) => {
                    tracing::error!(producer = %self.config.name, error = %e, "kafka producer hit a fatal error and could not be created anew");
                }
            }
        }
        Some(format!("{code:?}: {reason}"))
    }
}

fn create(config: &ProducerConfig) -> Result<FutureProducer, KafkaConfigError> {
    config
        .client_config()
        .create()
        .map_err(|e| KafkaConfigError::Client {
            name: config.name.clone(),
            reason: e.to_string(),
        })
}

/// The host's producers by name. Cheap to clone. Each is created at start
/// (librdkafka checks its settings then) and connects in the background:
/// brokers that are down at start give `unavailable` errors (retryable),
/// not a failed start.
#[derive(Clone, Default)]
pub struct KafkaProducers {
    by_name: Arc<HashMap<String, Entry>>,
}

impl std::fmt::Debug for KafkaProducers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut names: Vec<&String> = self.by_name.keys().collect();
        names.sort();
        f.debug_struct("KafkaProducers")
            .field("names", &names)
            .finish()
    }
}

impl KafkaProducers {
    /// Checks and creates every configured producer.
    pub fn new(configs: &[ProducerConfig]) -> Result<Self, KafkaConfigError> {
        let mut by_name = HashMap::new();
        for config in configs {
            config.check()?;
            if by_name.contains_key(&config.name) {
                return Err(KafkaConfigError::Duplicate {
                    name: config.name.clone(),
                });
            }
            by_name.insert(
                config.name.clone(),
                Entry {
                    producer: RwLock::new(Arc::new(create(config)?)),
                    config: config.clone(),
                },
            );
        }
        Ok(Self {
            by_name: Arc::new(by_name),
        })
    }

    /// Whether a producer named `name` is configured.
    pub fn contains(&self, name: &str) -> bool {
        self.by_name.contains_key(name)
    }

    /// Produces `messages` to `topic` with producer `name`, in order, and
    /// waits until every one is acknowledged (`acks=all`) or shortly before
    /// `deadline` ([`cutoff`]). The caller has checked the grant. A producer
    /// that hit a fatal error is created anew and the call is `unavailable`
    /// (retry).
    pub async fn produce(
        &self,
        name: &str,
        topic: &str,
        messages: &[Message],
        deadline: Option<Instant>,
    ) -> Result<(), KafkaError> {
        let entry = self.by_name.get(name).ok_or_else(|| {
            KafkaError::Denied(format!(
                "kafka producer '{name}' is not configured on this host"
            ))
        })?;
        let producer = entry.current();
        let result = send_all(
            &producer,
            name,
            topic,
            messages,
            deadline,
            entry.config.message_max_bytes,
        )
        .await;
        if result.is_err()
            && let Some(fatal) = entry.renew_if_fatal(&producer)
        {
            return Err(KafkaError::Unavailable(format!(
                "producer '{name}' hit a fatal error ({fatal}) and was created anew: retry"
            )));
        }
        result
    }
}

/// [`KafkaProducers::produce`] on one producer.
async fn send_all(
    producer: &FutureProducer,
    name: &str,
    topic: &str,
    messages: &[Message],
    deadline: Option<Instant>,
    max: usize,
) -> Result<(), KafkaError> {
    for (i, m) in messages.iter().enumerate() {
        let size = message_bytes(m);
        if size > max {
            return Err(KafkaError::TooLarge(format!(
                "message {i} to topic '{topic}' is {size} bytes, over producer '{name}''s message_max_bytes of {max}"
            )));
        }
    }
    let mut pending: Vec<DeliveryFuture> = Vec::with_capacity(messages.len());
    for m in messages {
        let headers = m.headers.iter().fold(OwnedHeaders::new(), |h, (k, v)| {
            h.insert(Header {
                key: k,
                value: Some(v),
            })
        });
        let mut record = FutureRecord::to(topic).payload(&m.value).headers(headers);
        if let Some(key) = &m.key {
            record = record.key(key);
        }
        loop {
            match producer.send_result(record) {
                Ok(delivery) => {
                    pending.push(delivery);
                    break;
                }
                Err((ClientError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    if deadline.is_some_and(|d| Instant::now() + QUEUE_FULL_PAUSE >= d) {
                        return Err(KafkaError::Unavailable(format!(
                            "producer '{name}': its queue stayed full until the call's deadline"
                        )));
                    }
                    record = back;
                    tokio::time::sleep(QUEUE_FULL_PAUSE).await;
                }
                Err((e, _)) => return Err(classify(name, topic, &e)),
            }
        }
    }
    let total = pending.len();
    let all = futures_util::future::join_all(pending);
    let results = match deadline.map(cutoff) {
        Some(d) => tokio::time::timeout_at(d.into(), all).await.map_err(|_| {
            KafkaError::Unavailable(format!(
                "producer '{name}': the {total} messages to topic '{topic}' were not all acknowledged before the call's deadline"
            ))
        })?,
        None => all.await,
    };
    for result in results {
        match result {
            Ok(Ok(_)) => {}
            Ok(Err((e, _))) => return Err(classify(name, topic, &e)),
            Err(_canceled) => {
                return Err(KafkaError::Unavailable(format!(
                    "producer '{name}' was shut down before every message to topic '{topic}' was acknowledged"
                )));
            }
        }
    }
    Ok(())
}

/// Most of a call's remaining time kept back when waiting for
/// acknowledgements, so that a broker that does not answer makes `produce`
/// return `unavailable` (the batch is retried on the same instance) before
/// the call's own deadline ends the call as a timeout fault (the instance
/// discarded, the batch bisected).
const DEADLINE_MARGIN: Duration = Duration::from_secs(1);

/// When to stop waiting for acknowledgements in a call ending at
/// `deadline`: [`DEADLINE_MARGIN`] before it, or half-way for a short call.
pub(crate) fn cutoff(deadline: Instant) -> Instant {
    let left = deadline.saturating_duration_since(Instant::now());
    deadline - DEADLINE_MARGIN.min(left / 2)
}

/// The bytes of a message as the caps count them.
pub(crate) fn message_bytes(m: &Message) -> usize {
    m.key.as_ref().map_or(0, Vec::len)
        + m.value.len()
        + m.headers
            .iter()
            .map(|(k, v)| k.len() + v.len())
            .sum::<usize>()
}

/// Maps a client error to the WIT case: the broker's refusals for good
/// are `rejected`/`too-large`, anything else (brokers down, timeouts,
/// leader changes) is `unavailable`.
pub(crate) fn classify(name: &str, topic: &str, e: &ClientError) -> KafkaError {
    let text = format!("producer '{name}', topic '{topic}': {e}");
    match e.rdkafka_error_code() {
        Some(
            RDKafkaErrorCode::MessageSizeTooLarge
            | RDKafkaErrorCode::InvalidMessageSize
            | RDKafkaErrorCode::MessageBatchTooLarge,
        ) => KafkaError::TooLarge(text),
        Some(
            RDKafkaErrorCode::TopicAuthorizationFailed
            | RDKafkaErrorCode::ClusterAuthorizationFailed
            | RDKafkaErrorCode::InvalidTopic
            | RDKafkaErrorCode::InvalidMessage
            | RDKafkaErrorCode::InvalidRecord
            | RDKafkaErrorCode::UnknownTopic
            | RDKafkaErrorCode::PolicyViolation
            | RDKafkaErrorCode::InvalidRequiredAcks
            | RDKafkaErrorCode::UnsupportedVersion
            | RDKafkaErrorCode::Fatal,
        ) => KafkaError::Rejected(text),
        _ => KafkaError::Unavailable(text),
    }
}
