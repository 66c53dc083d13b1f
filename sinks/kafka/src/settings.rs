//! The sink's settings (its `settings:` map): which producer, and the topic
//! of each record kind.

use crate::bindings::kubesink::sink::types::RecordKind;

/// Checked settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// The host producer to use (granted in the sink's `kafka:`).
    pub producer: String,
    /// Topic of jobs; `None`: jobs are not wanted.
    pub jobs: Option<String>,
    /// Topic of pods; `None`: pods are not wanted.
    pub pods: Option<String>,
    /// Topic of events; `None`: events are not wanted.
    pub events: Option<String>,
}

/// A setting the sink cannot use; the message names the key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SettingsError(pub String);

impl std::fmt::Display for SettingsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "kafka sink settings: {}", self.0)
    }
}

impl std::error::Error for SettingsError {}

fn valid_topic(t: &str) -> bool {
    !t.is_empty()
        && t.len() <= 249
        && t != "."
        && t != ".."
        && t.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

impl Settings {
    /// Parses `producer`, `topic` (every kind) and `topic.jobs`,
    /// `topic.pods`, `topic.events` (one kind, over `topic`). At least one
    /// kind must get a topic. Any other key is an error naming it.
    pub fn parse(pairs: &[(String, String)]) -> Result<Settings, SettingsError> {
        let mut producer = None;
        let mut all = None;
        let (mut jobs, mut pods, mut events) = (None, None, None);
        for (k, v) in pairs {
            let slot = match k.as_str() {
                "producer" => &mut producer,
                "topic" => &mut all,
                "topic.jobs" => &mut jobs,
                "topic.pods" => &mut pods,
                "topic.events" => &mut events,
                other => {
                    return Err(SettingsError(format!(
                        "unknown key `{}` (known: producer, topic, topic.jobs, topic.pods, topic.events)",
                        other.escape_debug()
                    )));
                }
            };
            let v = v.trim();
            if k != "producer" && !valid_topic(v) {
                return Err(SettingsError(format!(
                    "`{k}`: `{}` is not a Kafka topic name (1 to 249 of A-Z a-z 0-9 . _ -)",
                    v.escape_debug()
                )));
            }
            *slot = Some(v.to_owned());
        }
        let producer = producer
            .filter(|p| !p.is_empty())
            .ok_or_else(|| SettingsError("`producer` is required".into()))?;
        let pick = |one: Option<String>| one.or_else(|| all.clone());
        let s = Settings {
            producer,
            jobs: pick(jobs),
            pods: pick(pods),
            events: pick(events),
        };
        if s.kinds().is_empty() {
            return Err(SettingsError(
                "no topic: set `topic` or one of `topic.jobs`, `topic.pods`, `topic.events`".into(),
            ));
        }
        Ok(s)
    }

    /// The topic of `kind`, if it is wanted.
    pub fn topic(&self, kind: RecordKind) -> Option<&str> {
        match kind {
            RecordKind::Job => self.jobs.as_deref(),
            RecordKind::Pod => self.pods.as_deref(),
            RecordKind::Event => self.events.as_deref(),
        }
    }

    /// The kinds with a topic.
    pub fn kinds(&self) -> Vec<RecordKind> {
        [RecordKind::Job, RecordKind::Pod, RecordKind::Event]
            .into_iter()
            .filter(|k| self.topic(*k).is_some())
            .collect()
    }
}
