//! Kafka in the configuration: the named producers the host owns (the
//! top-level `kafka:` section, [`ProducerSpec`]) and what a sink may
//! produce with (its `kafka:` grant: producer name -> topics).
//!
//! ```yaml
//! kafka:
//!   bus:                                   # the name sinks produce with
//!     brokers: [kafka-0.kafka:9092, kafka-1.kafka:9092]
//!     sasl: { mechanism: PLAIN, username: kubesink, password: ${KAFKA_PASSWORD} }
//!     compression: lz4                     # none | lz4 | snappy
//!     message_max_bytes: 1Mi
//!     linger: 5ms
//!     delivery_timeout: 20s
//! sinks:
//!   - name: kafka
//!     module: builtin:kafka
//!     kafka: { bus: [kubesink.jobs, kubesink.pods, kubesink.events] }
//!     settings: { producer: bus, topic.jobs: kubesink.jobs, ... }
//! ```

use std::time::Duration;

use kubesink_host::kafka::{
    Compression, KafkaConfigError, KafkaGrant, ProducerConfig, SaslPlain, is_valid_topic,
};
use serde::Deserialize;

use super::env::expand_process_env;
use super::{ByteSize, Config, ConfigError, SinkConfig};

/// A named Kafka producer. Every producer is idempotent with `acks=all`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ProducerSpec {
    /// Bootstrap brokers, `host:port` each (`${VAR}` expanded).
    pub brokers: Vec<String>,
    /// SASL credentials. Default: none.
    #[serde(default)]
    pub sasl: Option<SaslSpec>,
    /// The `client.id` the brokers see. Default `kubesink`.
    #[serde(default)]
    pub client_id: Option<String>,
    /// Batch compression. Default `lz4`.
    #[serde(default)]
    pub compression: Option<CompressionSpec>,
    /// Largest message the producer sends. Default 1Mi.
    #[serde(default)]
    pub message_max_bytes: Option<ByteSize>,
    /// How long the producer waits to fill a batch. Default 5ms.
    #[serde(default, with = "humantime_serde")]
    pub linger: Option<Duration>,
    /// How long the producer retries a message before failing it. Default 20s.
    #[serde(default, with = "humantime_serde")]
    pub delivery_timeout: Option<Duration>,
}

/// SASL credentials of a producer.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SaslSpec {
    /// The mechanism: `PLAIN`.
    pub mechanism: SaslMechanism,
    /// The user (`${VAR}` expanded).
    pub username: String,
    /// The password (`${VAR}` expanded; `Debug` shows `[REDACTED]`).
    pub password: kubesink_host::secret::Secret,
}

/// SASL mechanisms this build supports. SCRAM and TLS need librdkafka
/// built with OpenSSL, which kubesink's static image does not carry.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
pub enum SaslMechanism {
    /// SASL/PLAIN.
    #[serde(rename = "PLAIN")]
    Plain,
}

/// Batch compression.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum CompressionSpec {
    None,
    Lz4,
    Snappy,
}

/// The grants of a sink: producer name -> the topics it may write.
pub type KafkaGrants = std::collections::BTreeMap<String, Vec<String>>;

impl Config {
    /// The Kafka checks of [`Config::check`]: every granted producer is
    /// configured, every granted topic a legal name, every producer has
    /// brokers.
    pub(super) fn check_kafka(&self, origin: &str) -> Result<(), ConfigError> {
        let invalid = |field: String, message: String| ConfigError::Invalid {
            origin: origin.to_owned(),
            field,
            message,
        };
        for (name, p) in &self.kafka {
            if p.brokers.is_empty() {
                return Err(invalid(
                    format!("kafka.{name}.brokers"),
                    "must name at least one broker".into(),
                ));
            }
        }
        for (i, sink) in self.sinks.iter().enumerate() {
            check_grants(sink, &self.kafka, |f, m| {
                invalid(format!("sinks[{i}].kafka.{f}"), m)
            })?;
        }
        Ok(())
    }

    /// The host's producers, variables expanded and checked; errors name
    /// `kafka.NAME.FIELD`.
    pub(super) fn resolve_kafka(&self, origin: &str) -> Result<Vec<ProducerConfig>, ConfigError> {
        let mut out = Vec::new();
        for (name, p) in &self.kafka {
            let at = |f: &str| format!("kafka.{name}.{f}");
            let expand = |field: String, v: &str| {
                expand_process_env(v).map_err(|source| ConfigError::Env {
                    origin: origin.to_owned(),
                    field,
                    source,
                })
            };
            let mut brokers = Vec::new();
            for (j, b) in p.brokers.iter().enumerate() {
                brokers.push(expand(at(&format!("brokers[{j}]")), b)?.trim().to_owned());
            }
            let mut c = ProducerConfig::new(name.clone(), brokers);
            if let Some(s) = &p.sasl {
                let SaslMechanism::Plain = s.mechanism;
                c.sasl = Some(SaslPlain {
                    username: expand(at("sasl.username"), &s.username)?,
                    password: expand(at("sasl.password"), s.password.expose())?.into(),
                });
            }
            if let Some(id) = &p.client_id {
                c.client_id = id.clone();
            }
            if let Some(comp) = p.compression {
                c.compression = match comp {
                    CompressionSpec::None => Compression::None,
                    CompressionSpec::Lz4 => Compression::Lz4,
                    CompressionSpec::Snappy => Compression::Snappy,
                };
            }
            if let Some(m) = p.message_max_bytes {
                c.message_max_bytes = m.bytes();
            }
            if let Some(l) = p.linger {
                c.linger = l;
            }
            if let Some(t) = p.delivery_timeout {
                c.delivery_timeout = t;
            }
            c.check().map_err(|e| match e {
                KafkaConfigError::Invalid { field, message, .. } => ConfigError::Invalid {
                    origin: origin.to_owned(),
                    field: at(&field),
                    message,
                },
                other => ConfigError::Invalid {
                    origin: origin.to_owned(),
                    field: format!("kafka.{name}"),
                    message: other.to_string(),
                },
            })?;
            out.push(c);
        }
        Ok(out)
    }
}

/// A sink's grants as the host takes them.
pub(super) fn grants_of(sink: &SinkConfig) -> Vec<KafkaGrant> {
    sink.kafka
        .iter()
        .map(|(producer, topics)| KafkaGrant {
            producer: producer.clone(),
            topics: topics.clone(),
        })
        .collect()
}

fn check_grants(
    sink: &SinkConfig,
    producers: &std::collections::BTreeMap<String, ProducerSpec>,
    invalid: impl Fn(String, String) -> ConfigError,
) -> Result<(), ConfigError> {
    for (producer, topics) in &sink.kafka {
        if !producers.contains_key(producer) {
            return Err(invalid(
                producer.clone(),
                format!("no producer named `{producer}` under `kafka`"),
            ));
        }
        if topics.is_empty() {
            return Err(invalid(
                producer.clone(),
                "must name at least one topic".into(),
            ));
        }
        for (j, t) in topics.iter().enumerate() {
            if !is_valid_topic(t) {
                return Err(invalid(
                    format!("{producer}[{j}]"),
                    format!(
                        "`{}` is not a Kafka topic name (1 to 249 of A-Z a-z 0-9 . _ -)",
                        t.escape_debug()
                    ),
                ));
            }
        }
    }
    Ok(())
}
