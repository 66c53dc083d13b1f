//! What the sink does with a batch, apart from the host: each change becomes
//! a message (key: the uid; value: the change's JSON; headers: its kind and
//! change), grouped by topic in batch order, and each topic's messages are
//! produced in one call ([`Produce`], the host's `kafka.produce` in the
//! component, a fake in unit tests).

use serde_json::{Value, json};

use crate::bindings::kubesink::sink::kafka::{KafkaError, Message};
use crate::bindings::kubesink::sink::types::{Change, Error, RecordKind};
use crate::record::{change_json, kind_name, rfc3339};
use crate::settings::Settings;

/// Produces one topic's messages (the host's `kafka.produce`).
pub trait Produce {
    /// Produce `messages` to `topic` with `producer`; returns once all are
    /// acknowledged.
    fn produce(
        &mut self,
        producer: &str,
        topic: &str,
        messages: &[Message],
    ) -> Result<(), KafkaError>;
}

/// The sink: its settings.
#[derive(Debug, Clone)]
pub struct KafkaSink {
    settings: Settings,
}

fn kind_of(c: &Change) -> RecordKind {
    match c {
        Change::Applied(r) => r.kind(),
        Change::Removed(r) => r.record.kind(),
        Change::Tombstone(t) => t.kind,
    }
}

impl crate::bindings::kubesink::sink::types::Record {
    /// Its kind.
    pub fn kind(&self) -> RecordKind {
        use crate::bindings::kubesink::sink::types::Record;
        match self {
            Record::Job(_) => RecordKind::Job,
            Record::Pod(_) => RecordKind::Pod,
            Record::Event(_) => RecordKind::Event,
        }
    }

    /// Its uid.
    pub fn uid(&self) -> &str {
        use crate::bindings::kubesink::sink::types::Record;
        match self {
            Record::Job(j) => &j.meta.uid,
            Record::Pod(p) => &p.meta.uid,
            Record::Event(e) => &e.meta.uid,
        }
    }
}

fn kind_text(k: RecordKind) -> &'static str {
    match k {
        RecordKind::Job => "job",
        RecordKind::Pod => "pod",
        RecordKind::Event => "event",
    }
}

/// The message of one change: key the uid, value its JSON, headers
/// `kubesink-kind` and `kubesink-change`.
pub fn message(c: &Change) -> Message {
    let (uid, change, value): (&str, &str, Value) = match c {
        Change::Applied(r) => (r.uid(), "applied", change_json(c).unwrap_or(Value::Null)),
        Change::Removed(r) => (
            r.record.uid(),
            "removed",
            change_json(c).unwrap_or(Value::Null),
        ),
        Change::Tombstone(t) => (
            &t.uid,
            "tombstone",
            json!({
                "kind": kind_text(t.kind),
                "change": "tombstone",
                "removed_at": rfc3339(t.at.seconds, t.at.nanos),
                "record": null,
                "uid": t.uid,
            }),
        ),
    };
    let kind = match c {
        Change::Applied(r) => kind_name(r),
        Change::Removed(r) => kind_name(&r.record),
        Change::Tombstone(t) => kind_text(t.kind),
    };
    Message {
        key: Some(uid.as_bytes().to_vec()),
        value: value.to_string().into_bytes(),
        headers: vec![
            ("kubesink-kind".into(), kind.as_bytes().to_vec()),
            ("kubesink-change".into(), change.as_bytes().to_vec()),
        ],
    }
}

/// The sink's answer for a failed `produce`: `unavailable` is retryable,
/// anything else (denied, rejected, too large) is fatal.
pub fn to_wit(topic: &str, e: KafkaError) -> Error {
    match e {
        KafkaError::Unavailable(m) => Error::Retryable(format!("kafka topic {topic}: {m}")),
        KafkaError::Denied(m) => Error::Fatal(format!("kafka topic {topic}: denied: {m}")),
        KafkaError::Rejected(m) => Error::Fatal(format!("kafka topic {topic}: rejected: {m}")),
        KafkaError::TooLarge(m) => Error::Fatal(format!("kafka topic {topic}: too large: {m}")),
    }
}

impl KafkaSink {
    /// A sink with checked settings.
    pub fn new(settings: Settings) -> Self {
        Self { settings }
    }

    /// Its settings.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// Produces `batch`: one call per topic, topics in the order they first
    /// appear, each topic's messages in batch order. Changes of a kind
    /// without a topic are left out. Stops at the first failed call.
    pub fn write(&self, out: &mut impl Produce, batch: &[Change]) -> Result<(), Error> {
        let mut by_topic: Vec<(&str, Vec<Message>)> = Vec::new();
        for c in batch {
            let Some(topic) = self.settings.topic(kind_of(c)) else {
                continue;
            };
            let m = message(c);
            match by_topic.iter_mut().find(|(t, _)| *t == topic) {
                Some((_, ms)) => ms.push(m),
                None => by_topic.push((topic, vec![m])),
            }
        }
        for (topic, messages) in &by_topic {
            out.produce(&self.settings.producer, topic, messages)
                .map_err(|e| to_wit(topic, e))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bindings::kubesink::sink::types::{
        Event, Meta, ObjectRef, Pod, Record, Removal, Timestamp, Tombstone,
    };

    fn meta(uid: &str, rv: u64) -> Meta {
        Meta {
            uid: uid.into(),
            name: format!("n-{uid}"),
            namespace: "ns".into(),
            resource_version: rv.to_string(),
            resource_version_num: rv,
            labels: vec![("app".into(), "x".into())],
            created: Timestamp {
                seconds: 0,
                nanos: 0,
            },
        }
    }

    fn event(uid: &str, rv: u64) -> Change {
        Change::Applied(Record::Event(Event {
            meta: meta(uid, rv),
            involved: ObjectRef {
                api_version: "v1".into(),
                kind: "Pod".into(),
                namespace: "ns".into(),
                name: "p".into(),
                uid: "p1".into(),
            },
            event_type: "Warning".into(),
            reason: "BackOff".into(),
            message: "m".into(),
            source: "kubelet".into(),
            count: 1,
            first_seen: Timestamp {
                seconds: 60,
                nanos: 0,
            },
            last_seen: Timestamp {
                seconds: 61,
                nanos: 5,
            },
            region: String::new(),
        }))
    }

    fn pod_removed(uid: &str) -> Change {
        Change::Removed(Removal {
            at: Timestamp {
                seconds: 86_400,
                nanos: 0,
            },
            record: Record::Pod(Pod {
                meta: meta(uid, 9),
                job_uid: "j".into(),
                job_kind: "TFJob".into(),
                replica_type: "worker".into(),
                status: "Succeeded".into(),
                image: "i".into(),
                resources: "{}".into(),
                host_ip: String::new(),
                pod_ip: String::new(),
                region: String::new(),
                modified: Timestamp {
                    seconds: 0,
                    nanos: 0,
                },
                started_at: None,
                finished_at: None,
                remark: String::new(),
            }),
        })
    }

    #[derive(Default)]
    struct Fake {
        calls: Vec<(String, String, Vec<Message>)>,
        fail: Option<KafkaError>,
    }

    impl Produce for Fake {
        fn produce(
            &mut self,
            producer: &str,
            topic: &str,
            messages: &[Message],
        ) -> Result<(), KafkaError> {
            if let Some(e) = self.fail.take() {
                return Err(e);
            }
            self.calls
                .push((producer.into(), topic.into(), messages.to_vec()));
            Ok(())
        }
    }

    fn settings(pairs: &[(&str, &str)]) -> Result<Settings, crate::SettingsError> {
        let pairs: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        Settings::parse(&pairs)
    }

    #[test]
    fn settings_need_a_producer_and_a_topic_and_name_a_bad_key() {
        let s =
            settings(&[("producer", "bus"), ("topic", "all"), ("topic.pods", "p")]).expect("valid");
        assert_eq!(s.topic(RecordKind::Job), Some("all"));
        assert_eq!(s.topic(RecordKind::Pod), Some("p"));
        let s = settings(&[("producer", "bus"), ("topic.events", "e")]).expect("valid");
        assert_eq!(s.kinds(), vec![RecordKind::Event]);

        let e = settings(&[("topic", "t")]).expect_err("no producer");
        assert!(e.to_string().contains("`producer`"), "{e}");
        let e = settings(&[("producer", "bus")]).expect_err("no topic");
        assert!(e.to_string().contains("no topic"), "{e}");
        let e = settings(&[("producer", "bus"), ("topics", "t")]).expect_err("unknown");
        assert!(e.to_string().contains("`topics`"), "{e}");
        let e = settings(&[("producer", "bus"), ("topic.jobs", "a b")]).expect_err("bad");
        assert!(e.to_string().contains("`topic.jobs`"), "{e}");
    }

    #[test]
    fn a_change_is_its_json_keyed_by_uid() {
        let m = message(&event("e1", 7));
        assert_eq!(m.key.as_deref(), Some(&b"e1"[..]));
        let v: Value = serde_json::from_slice(&m.value).expect("json");
        assert_eq!(v["kind"], "event");
        assert_eq!(v["change"], "applied");
        assert_eq!(v["removed_at"], Value::Null);
        assert_eq!(v["record"]["meta"]["uid"], "e1");
        assert_eq!(v["record"]["meta"]["resource_version"], "7");
        assert_eq!(v["record"]["meta"]["labels"]["app"], "x");
        assert_eq!(v["record"]["last_seen"], "1970-01-01T00:01:01.000000005Z");
        assert_eq!(
            m.headers,
            vec![
                ("kubesink-kind".to_owned(), b"event".to_vec()),
                ("kubesink-change".to_owned(), b"applied".to_vec()),
            ]
        );

        let m = message(&pod_removed("p1"));
        let v: Value = serde_json::from_slice(&m.value).expect("json");
        assert_eq!(v["change"], "removed");
        assert_eq!(v["removed_at"], "1970-01-02T00:00:00Z");
        assert_eq!(v["record"]["replica_type"], "worker");

        let m = message(&Change::Tombstone(Tombstone {
            kind: RecordKind::Job,
            uid: "j9".into(),
            at: Timestamp {
                seconds: 0,
                nanos: 0,
            },
        }));
        assert_eq!(m.key.as_deref(), Some(&b"j9"[..]));
        let v: Value = serde_json::from_slice(&m.value).expect("json");
        assert_eq!(
            (v["kind"].as_str(), v["change"].as_str(), v["uid"].as_str()),
            (Some("job"), Some("tombstone"), Some("j9"))
        );
        assert_eq!(v["record"], Value::Null);
    }

    #[test]
    fn a_batch_is_one_call_per_topic_in_order() {
        let sink = KafkaSink::new(
            settings(&[
                ("producer", "bus"),
                ("topic.events", "ev"),
                ("topic.pods", "po"),
            ])
            .expect("valid"),
        );
        let job = Change::Tombstone(Tombstone {
            kind: RecordKind::Job,
            uid: "j".into(),
            at: Timestamp {
                seconds: 0,
                nanos: 0,
            },
        });
        let batch = vec![
            event("a", 1),
            pod_removed("p"),
            job,
            event("a", 2),
            event("b", 1),
        ];
        let mut out = Fake::default();
        sink.write(&mut out, &batch).expect("written");
        let calls: Vec<(&str, &str, Vec<&[u8]>)> = out
            .calls
            .iter()
            .map(|(p, t, ms)| {
                (
                    p.as_str(),
                    t.as_str(),
                    ms.iter().map(|m| m.key.as_deref().unwrap_or(b"")).collect(),
                )
            })
            .collect();
        assert_eq!(
            calls,
            vec![
                ("bus", "ev", vec![&b"a"[..], b"a", b"b"]),
                ("bus", "po", vec![&b"p"[..]]),
            ],
            "the job has no topic and is left out"
        );
        let rv = |m: &Message| {
            let v: Value = serde_json::from_slice(&m.value).expect("json");
            v["record"]["meta"]["resource_version"]
                .as_str()
                .map(String::from)
        };
        assert_eq!(rv(&out.calls[0].2[0]).as_deref(), Some("1"));
        assert_eq!(rv(&out.calls[0].2[1]).as_deref(), Some("2"));
    }

    #[test]
    fn unavailable_is_retryable_and_the_rest_fatal() {
        let sink = KafkaSink::new(settings(&[("producer", "bus"), ("topic", "t")]).expect("ok"));
        let cases = [
            (KafkaError::Unavailable("down".into()), true),
            (KafkaError::Denied("no".into()), false),
            (KafkaError::Rejected("no".into()), false),
            (KafkaError::TooLarge("no".into()), false),
        ];
        for (e, retryable) in cases {
            let mut out = Fake {
                fail: Some(e),
                ..Fake::default()
            };
            let got = sink.write(&mut out, &[event("a", 1)]).expect_err("fails");
            assert_eq!(matches!(got, Error::Retryable(_)), retryable, "{got:?}");
            let (Error::Retryable(m) | Error::Fatal(m)) = got;
            assert!(m.contains("kafka topic t"), "{m}");
        }
    }
}
