use super::*;
use kubesink_normalize::record::{Change, Entry, Event, Meta, ObjectRef, Record, Timestamp};
use std::sync::Arc;

fn entry(uid: &str) -> Entry {
    let ts = Timestamp {
        seconds: 0,
        nanos: 0,
    };
    Change::Applied(Record::Event(Event {
        meta: Meta {
            uid: uid.into(),
            name: uid.into(),
            namespace: "ns".into(),
            resource_version: "1".into(),
            resource_version_num: 1,
            labels: vec![],
            created: ts,
        },
        involved: ObjectRef {
            api_version: "v1".into(),
            kind: "Pod".into(),
            namespace: "ns".into(),
            name: "p".into(),
            uid: String::new(),
        },
        event_type: "Normal".into(),
        reason: "r".into(),
        message: "m".into(),
        source: "s".into(),
        count: 1,
        first_seen: ts,
        last_seen: ts,
        region: String::new(),
    }))
}

#[test]
fn sink_counters_faults_and_latency_are_encoded_per_sink() {
    let m = Metrics::new();
    let a = m.sink("a");
    let b = m.sink("b");
    a.received.inc_by(5);
    a.delivered.inc_by(4);
    a.failed.inc();
    a.retries.inc_by(2);
    a.fault("trap");
    a.fault("trap");
    a.fault("timeout");
    a.observe_batch(Duration::from_millis(3));
    a.observe_batch(Duration::from_millis(300));
    a.add_guest_time(Duration::from_millis(1500));
    b.coalesced.inc();
    let text = m.encode();
    let s = |name: &str, labels: &str| sample(&text, name, labels);
    assert_eq!(
        s("kubesink_sink_records_received_total", "sink=\"a\""),
        Some(5.0)
    );
    assert_eq!(
        s("kubesink_sink_records_delivered_total", "sink=\"a\""),
        Some(4.0)
    );
    assert_eq!(
        s("kubesink_sink_records_failed_total", "sink=\"a\""),
        Some(1.0)
    );
    assert_eq!(
        s("kubesink_sink_records_delivered_total", "sink=\"b\""),
        Some(0.0)
    );
    assert_eq!(
        s("kubesink_sink_records_coalesced_total", "sink=\"b\""),
        Some(1.0)
    );
    assert_eq!(s("kubesink_sink_retries_total", "sink=\"a\""), Some(2.0));
    assert_eq!(
        s("kubesink_sink_faults_total", "sink=\"a\",cause=\"trap\""),
        Some(2.0)
    );
    assert_eq!(
        s("kubesink_sink_faults_total", "sink=\"a\",cause=\"timeout\""),
        Some(1.0)
    );
    assert_eq!(
        s("kubesink_sink_batch_duration_seconds_count", "sink=\"a\""),
        Some(2.0)
    );
    // 3 ms falls in the 4 ms bucket, 300 ms in the 512 ms one.
    assert_eq!(
        s(
            "kubesink_sink_batch_duration_seconds_bucket",
            "le=\"0.004\",sink=\"a\""
        ),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        s(
            "kubesink_sink_batch_duration_seconds_bucket",
            "le=\"0.512\",sink=\"a\""
        ),
        Some(2.0)
    );
    let guest = s("kubesink_sink_guest_seconds_total", "sink=\"a\"").expect("guest seconds");
    assert!((guest - 1.5).abs() < 1e-9, "{guest}");
    assert!(text.ends_with("# EOF\n"), "{text}");
}

#[tokio::test]
async fn queue_depth_is_read_when_encoding_and_restarts_are_per_resource() {
    let m = Metrics::new();
    let q = Arc::new(SinkQueue::new(10, false));
    m.watch_queue("a", vec![Arc::downgrade(&q)]);
    assert_eq!(
        sample(&m.encode(), "kubesink_sink_queue_depth", "sink=\"a\""),
        Some(0.0)
    );
    q.push(entry("1")).await;
    q.push(entry("2")).await;
    assert_eq!(
        sample(&m.encode(), "kubesink_sink_queue_depth", "sink=\"a\""),
        Some(2.0)
    );
    drop(q);
    assert_eq!(
        sample(&m.encode(), "kubesink_sink_queue_depth", "sink=\"a\""),
        Some(0.0)
    );
    m.watch_started("pods (v1)");
    m.watch_restart("events (v1)");
    m.watch_restart("events (v1)");
    let text = m.encode();
    assert_eq!(
        sample(
            &text,
            "kubesink_watch_restarts_total",
            "resource=\"pods (v1)\""
        ),
        Some(0.0)
    );
    assert_eq!(
        sample(
            &text,
            "kubesink_watch_restarts_total",
            "resource=\"events (v1)\""
        ),
        Some(2.0)
    );
}

#[test]
fn lag_state_and_skipped_records_are_encoded_per_sink() {
    let m = Metrics::new();
    let lag = Arc::new(SinkLag::new("slow"));
    m.watch_lag(Arc::downgrade(&lag));
    let s = m.sink("slow");
    let text = m.encode();
    assert_eq!(
        sample(&text, "kubesink_sink_state", "sink=\"slow\",state=\"ok\""),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, "kubesink_sink_lag_seconds", "sink=\"slow\""),
        Some(0.0)
    );
    lag.fall_behind();
    s.skipped.inc();
    let text = m.encode();
    assert_eq!(
        sample(
            &text,
            "kubesink_sink_state",
            "sink=\"slow\",state=\"lagging\""
        ),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, "kubesink_sink_state", "sink=\"slow\",state=\"ok\""),
        Some(0.0)
    );
    assert_eq!(
        sample(
            &text,
            "kubesink_sink_records_skipped_total",
            "sink=\"slow\""
        ),
        Some(1.0)
    );
    assert!(sample(&text, "kubesink_sink_lag_seconds", "sink=\"slow\"").is_some());
}

#[test]
fn guest_cpu_seconds_and_quota_are_read_from_the_meters() {
    let m = Metrics::new();
    let spin = kubesink_host::CpuQuota::new("spin", Some(0.2));
    let free = kubesink_host::CpuQuota::new("free", None);
    m.watch_cpu(spin.clone());
    m.watch_cpu(free.clone());
    spin.charge(1_500_000_000);
    let text = m.encode();
    let cpu = "kubesink_sink_guest_cpu_seconds_total";
    assert_eq!(sample(&text, cpu, "sink=\"spin\""), Some(1.5), "{text}");
    assert_eq!(sample(&text, cpu, "sink=\"free\""), Some(0.0), "{text}");
    let quota = "kubesink_sink_cpu_quota_cores";
    assert_eq!(sample(&text, quota, "sink=\"spin\""), Some(0.2), "{text}");
    assert_eq!(sample(&text, quota, "sink=\"free\""), None, "{text}");
    spin.charge(500_000_000);
    free.charge(250_000_000);
    let text = m.encode();
    assert_eq!(sample(&text, cpu, "sink=\"spin\""), Some(2.0), "{text}");
    assert_eq!(sample(&text, cpu, "sink=\"free\""), Some(0.25), "{text}");
}

#[test]
fn sample_matches_whole_names_only() {
    let text = "a_total{sink=\"x\"} 3\na_total_more{sink=\"x\"} 4\nb 1.5\n";
    assert_eq!(sample(text, "a_total", "sink=\"x\""), Some(3.0));
    assert_eq!(sample(text, "b", ""), Some(1.5));
    assert_eq!(sample(text, "a", "sink=\"x\""), None);
}
