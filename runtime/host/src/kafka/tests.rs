use std::time::Duration;

use super::*;
use crate::budget::HostBudget;
use crate::secret::Secret;

fn producer(name: &str) -> ProducerConfig {
    // Nothing listens on port 1: librdkafka connects in the background
    // only, and these tests never produce.
    ProducerConfig::new(name, vec!["127.0.0.1:1".into()])
}

fn field_of(err: KafkaConfigError) -> String {
    match err {
        KafkaConfigError::Invalid { field, .. } => field,
        other => panic!("expected Invalid, got {other:?}"),
    }
}

#[test]
fn bad_settings_name_the_producer_and_the_field() {
    let mut c = producer("bus");
    c.brokers = vec!["127.0.0.1:9092".into(), "no-port".into()];
    let err = c.check().expect_err("a broker without a port");
    assert!(err.to_string().contains("kafka producer 'bus'"), "{err}");
    assert_eq!(field_of(err), "brokers[1]");

    let mut c = producer("bus");
    c.brokers.clear();
    assert_eq!(field_of(c.check().expect_err("no broker")), "brokers");

    let mut c = producer("bus");
    c.brokers = vec!["h:0".into()];
    assert_eq!(field_of(c.check().expect_err("port 0")), "brokers[0]");

    let mut c = producer("bus");
    c.message_max_bytes = 10;
    assert_eq!(field_of(c.check().expect_err("tiny")), "message_max_bytes");

    let mut c = producer("bus");
    c.delivery_timeout = Duration::from_millis(10);
    assert_eq!(
        field_of(c.check().expect_err("too short")),
        "delivery_timeout"
    );

    let mut c = producer("bus");
    c.sasl = Some(SaslPlain {
        username: String::new(),
        password: Secret::from("pw"),
    });
    assert_eq!(field_of(c.check().expect_err("no user")), "sasl.username");

    assert!(producer("bus").check().is_ok());
}

#[test]
fn every_producer_is_idempotent_with_acks_all_and_hides_its_password() {
    let mut c = producer("bus");
    c.sasl = Some(SaslPlain {
        username: "kube".into(),
        password: Secret::from("hunter2"),
    });
    let cc = c.client_config();
    assert_eq!(cc.get("enable.idempotence"), Some("true"));
    assert_eq!(cc.get("acks"), Some("all"));
    assert_eq!(cc.get("security.protocol"), Some("sasl_plaintext"));
    assert_eq!(cc.get("sasl.password"), Some("hunter2"));
    assert_eq!(cc.get("message.timeout.ms"), Some("20000"));
    let shown = format!("{c:?}");
    assert!(!shown.contains("hunter2"), "{shown}");
    assert!(shown.contains("[REDACTED]"), "{shown}");
}

#[test]
fn a_producer_configured_twice_is_refused() {
    let err = KafkaProducers::new(&[producer("bus"), producer("bus")]).expect_err("twice");
    assert!(
        matches!(&err, KafkaConfigError::Duplicate { name } if name == "bus"),
        "{err:?}"
    );
}

#[test]
fn topic_names_follow_kafka_rules() {
    for ok in ["kubesink.events", "a", "A-b_c.9", &"x".repeat(249)] {
        assert!(is_valid_topic(ok), "{ok}");
    }
    for bad in ["", ".", "..", "a b", "a/b", "ü", &"x".repeat(250)] {
        assert!(!is_valid_topic(bad), "{bad}");
    }
}

#[tokio::test]
async fn the_grant_is_checked_per_sink_producer_and_topic() {
    let producers = KafkaProducers::new(&[producer("bus")]).expect("created");
    let grant = |p: &str, topics: &[&str]| KafkaGrant {
        producer: p.into(),
        topics: topics.iter().map(|t| (*t).to_owned()).collect(),
    };
    let ctx = KafkaCtx::new(
        "audit",
        vec![grant("bus", &["jobs"]), grant("gone", &["jobs"])],
        producers.clone(),
        HostBudget::unlimited("audit"),
    );
    ctx.check_grant("bus", "jobs").expect("granted");

    let denied = |r: Result<(), KafkaError>| match r {
        Err(KafkaError::Denied(m)) => m,
        other => panic!("expected denied, got {other:?}"),
    };
    let m = denied(ctx.check_grant("bus", "events"));
    assert!(
        m.contains("sink 'audit'") && m.contains("topic 'events'") && m.contains("'bus'"),
        "{m}"
    );
    let m = denied(ctx.check_grant("other", "jobs"));
    assert!(m.contains("producer 'other'"), "{m}");
    let m = denied(ctx.check_grant("gone", "jobs"));
    assert!(m.contains("not configured"), "{m}");
    // Control characters from the guest are escaped in the message.
    let m = denied(ctx.check_grant("bus", "evil\n\u{1b}[31m"));
    assert!(!m.contains('\n') && !m.contains('\u{1b}'), "{m:?}");

    // The same producer, another sink: its own grant.
    let other = KafkaCtx::new(
        "mirror",
        vec![grant("bus", &["events"])],
        producers,
        HostBudget::unlimited("mirror"),
    );
    other
        .check_grant("bus", "events")
        .expect("granted to mirror");
    assert!(other.check_grant("bus", "jobs").is_err());

    // A denied call produces nothing, and says why.
    let m = denied(
        ctx.produce(
            "bus",
            "events",
            &[Message {
                key: None,
                value: b"x".to_vec(),
                headers: vec![],
            }],
        )
        .await,
    );
    assert!(m.contains("topic 'events'"), "{m}");
}

#[tokio::test]
async fn oversized_messages_are_refused_before_any_io() {
    let producers = KafkaProducers::new(&[producer("bus")]).expect("created");
    let big = Message {
        key: Some(b"k".to_vec()),
        value: vec![0; DEFAULT_MESSAGE_MAX_BYTES + 1],
        headers: vec![],
    };
    match producers.produce("bus", "t", &[big], None).await {
        Err(KafkaError::TooLarge(m)) => {
            assert!(m.contains("message 0") && m.contains("'bus'"), "{m}");
        }
        other => panic!("expected too-large, got {other:?}"),
    }
    let ctx = KafkaCtx::new(
        "s",
        vec![KafkaGrant {
            producer: "bus".into(),
            topics: vec!["t".into()],
        }],
        producers,
        HostBudget::new("s", 100),
    );
    let over_budget = Message {
        key: None,
        value: vec![0; 200],
        headers: vec![],
    };
    match ctx.produce("bus", "t", &[over_budget]).await {
        Err(KafkaError::TooLarge(m)) => assert!(m.contains("host_memory"), "{m}"),
        other => panic!("expected too-large, got {other:?}"),
    }
}

#[test]
fn client_errors_map_to_retryable_or_permanent_cases() {
    use rdkafka::error::{KafkaError as E, RDKafkaErrorCode as C};
    let case = |e: E| match producers::classify("bus", "t", &e) {
        KafkaError::Denied(_) => "denied",
        KafkaError::Rejected(_) => "rejected",
        KafkaError::Unavailable(_) => "unavailable",
        KafkaError::TooLarge(_) => "too-large",
    };
    assert_eq!(
        case(E::MessageProduction(C::MessageSizeTooLarge)),
        "too-large"
    );
    assert_eq!(
        case(E::MessageProduction(C::TopicAuthorizationFailed)),
        "rejected"
    );
    assert_eq!(
        case(E::MessageProduction(C::MessageTimedOut)),
        "unavailable"
    );
    assert_eq!(case(E::MessageProduction(C::AllBrokersDown)), "unavailable");
    assert_eq!(
        case(E::MessageProduction(C::NotEnoughReplicas)),
        "unavailable"
    );
}

#[test]
fn waiting_for_acks_stops_before_the_calls_deadline() {
    let now = std::time::Instant::now();
    let long = now + Duration::from_secs(30);
    let c = producers::cutoff(long);
    assert!(
        c < long && long - c <= Duration::from_secs(1),
        "{:?}",
        long - c
    );
    let short = now + Duration::from_millis(400);
    let c = producers::cutoff(short);
    assert!(c > now && c < short, "half-way for a short call");
}
