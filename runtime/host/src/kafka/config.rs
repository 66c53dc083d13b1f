//! The producers as configured ([`ProducerConfig`]), why one is unusable
//! ([`KafkaConfigError`]), what a sink is granted ([`KafkaGrant`]), and the
//! librdkafka settings a producer is built with.

use std::time::Duration;

use rdkafka::ClientConfig;

use crate::secret::Secret;

/// Default of [`ProducerConfig::message_max_bytes`]: 1 MiB, the brokers'
/// default `message.max.bytes`.
pub const DEFAULT_MESSAGE_MAX_BYTES: usize = 1 << 20;

/// Default of [`ProducerConfig::delivery_timeout`]: 20 s, below the
/// sinks' default call deadline (30 s), so that a call normally learns the
/// fate of every message it produced before it ends.
pub const DEFAULT_DELIVERY_TIMEOUT: Duration = Duration::from_secs(20);

/// Default of [`ProducerConfig::linger`]: 5 ms.
pub const DEFAULT_LINGER: Duration = Duration::from_millis(5);

/// One named producer from the runtime configuration. `Debug` shows the
/// SASL password as `[REDACTED]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProducerConfig {
    /// The name sinks produce with.
    pub name: String,
    /// Bootstrap brokers, `host:port` each.
    pub brokers: Vec<String>,
    /// SASL/PLAIN credentials; `None`: no authentication.
    pub sasl: Option<SaslPlain>,
    /// `client.id` the brokers see. Default `kubesink`.
    pub client_id: String,
    /// Compression of message batches.
    pub compression: Compression,
    /// Largest message (key, value and headers) the producer sends
    /// (`message.max.bytes`). Default 1 MiB.
    pub message_max_bytes: usize,
    /// How long the producer waits to fill a batch (`linger.ms`). Default 5 ms.
    pub linger: Duration,
    /// How long the producer keeps retrying a message before it fails it
    /// (`message.timeout.ms`, Kafka's `delivery.timeout.ms`). Default 20 s.
    pub delivery_timeout: Duration,
}

impl ProducerConfig {
    /// A producer named `name` for `brokers` with the defaults.
    #[must_use]
    pub fn new(name: impl Into<String>, brokers: Vec<String>) -> Self {
        Self {
            name: name.into(),
            brokers,
            sasl: None,
            client_id: "kubesink".into(),
            compression: Compression::default(),
            message_max_bytes: DEFAULT_MESSAGE_MAX_BYTES,
            linger: DEFAULT_LINGER,
            delivery_timeout: DEFAULT_DELIVERY_TIMEOUT,
        }
    }

    /// The librdkafka settings: idempotence and `acks=all` always, the
    /// rest from the configuration.
    pub(crate) fn client_config(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", self.brokers.join(","))
            .set("client.id", &self.client_id)
            // Exactly once and in order per partition across the
            // producer's own retries; implies max.in.flight <= 5 and
            // retries > 0.
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("compression.type", self.compression.as_str())
            .set("message.max.bytes", self.message_max_bytes.to_string())
            .set("linger.ms", self.linger.as_millis().to_string())
            .set(
                "message.timeout.ms",
                self.delivery_timeout.as_millis().to_string(),
            );
        match &self.sasl {
            None => {
                c.set("security.protocol", "plaintext");
            }
            Some(sasl) => {
                c.set("security.protocol", "sasl_plaintext")
                    .set("sasl.mechanism", "PLAIN")
                    .set("sasl.username", &sasl.username)
                    .set("sasl.password", sasl.password.expose());
            }
        }
        c
    }
}

/// SASL/PLAIN credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SaslPlain {
    /// The user.
    pub username: String,
    /// The password (never shown).
    pub password: Secret,
}

/// Compression of message batches.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Compression {
    /// None.
    None,
    /// LZ4 (built into librdkafka).
    #[default]
    Lz4,
    /// Snappy (built into librdkafka).
    Snappy,
}

impl Compression {
    /// The librdkafka name.
    pub fn as_str(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Lz4 => "lz4",
            Compression::Snappy => "snappy",
        }
    }
}

/// What one sink may produce with: a producer and the topics it may
/// write through it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KafkaGrant {
    /// The producer's name.
    pub producer: String,
    /// The topics, by exact name.
    pub topics: Vec<String>,
}

/// A producer configuration the host cannot use.
#[derive(Debug, thiserror::Error)]
pub enum KafkaConfigError {
    /// Two producers share a name.
    #[error("kafka producer '{name}' is configured twice")]
    Duplicate {
        /// The repeated name.
        name: String,
    },
    /// A field has a value the host cannot use.
    #[error("kafka producer '{name}': field `{field}`: {message}")]
    Invalid {
        /// The producer.
        name: String,
        /// The field at fault (`brokers[0]`, `client_id`, ...).
        field: String,
        /// Why.
        message: String,
    },
    /// librdkafka refused the configuration.
    #[error("kafka producer '{name}': cannot create the producer: {reason}")]
    Client {
        /// The producer.
        name: String,
        /// librdkafka's reason.
        reason: String,
    },
}

/// Whether `topic` is a legal Kafka topic name: 1 to 249 of `[A-Za-z0-9._-]`,
/// not `.` or `..`.
pub fn is_valid_topic(topic: &str) -> bool {
    !topic.is_empty()
        && topic.len() <= 249
        && topic != "."
        && topic != ".."
        && topic
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

impl ProducerConfig {
    /// Checks what the types cannot: brokers given as `host:port`, a
    /// client id, sizes and durations in range.
    pub fn check(&self) -> Result<(), KafkaConfigError> {
        let invalid = |field: String, message: &str| KafkaConfigError::Invalid {
            name: self.name.clone(),
            field,
            message: message.to_owned(),
        };
        if self.brokers.is_empty() {
            return Err(invalid("brokers".into(), "must name at least one broker"));
        }
        for (i, b) in self.brokers.iter().enumerate() {
            let ok = b.rsplit_once(':').is_some_and(|(host, port)| {
                !host.is_empty()
                    && !host.contains([',', ' '])
                    && port.parse::<u16>().is_ok_and(|p| p > 0)
            });
            if !ok {
                return Err(invalid(
                    format!("brokers[{i}]"),
                    "expected host:port with a port from 1 to 65535",
                ));
            }
        }
        if self.client_id.is_empty() {
            return Err(invalid("client_id".into(), "must not be empty"));
        }
        if !(1000..=1_000_000_000).contains(&self.message_max_bytes) {
            return Err(invalid(
                "message_max_bytes".into(),
                "must be from 1000 bytes to 1000000000 bytes",
            ));
        }
        if self.linger > Duration::from_secs(1) {
            return Err(invalid("linger".into(), "must be at most 1s"));
        }
        if self.delivery_timeout < Duration::from_secs(1)
            || self.delivery_timeout > Duration::from_secs(3600)
        {
            return Err(invalid("delivery_timeout".into(), "must be from 1s to 1h"));
        }
        if let Some(sasl) = &self.sasl
            && sasl.username.is_empty()
        {
            return Err(invalid("sasl.username".into(), "must not be empty"));
        }
        Ok(())
    }
}
