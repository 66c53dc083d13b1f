//! The kafka capability and `sinks/kafka` against a real Apache Kafka
//! broker (single-node KRaft, `tests/scripts/kafka.sh`), read back by a
//! real consumer: the KubeDL fixture replayed through the pipeline lands
//! exactly once, keyed by uid, each object's updates in order in one
//! partition; a broker stopped and started again mid-stream loses and
//! duplicates nothing; a topic outside the sink's grant is denied and
//! logged naming the sink and the topic; a bad producer configuration
//! fails at start naming the field.

use std::collections::BTreeMap;
use std::io::BufReader;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, ensure};
use kubesink::config::Config;
use kubesink::pipeline::{Pipeline, SinkReport};
use kubesink::source::{Normalizer, replay};
use kubesink_host::kafka::{KafkaGrant, ProducerConfig};
use kubesink_host::{CallError, Host, HostOptions, Limits, ModuleSource, SinkSpec};
use kubesink_normalize::record::{Change, Entry, Event, Meta, ObjectRef, Record, Timestamp};
use kubesink_tests::guests::guest_wasm;
use kubesink_tests::kafka::{self, Got, PrivateKafka, read_topic};
use kubesink_tests::wait::eventually;
use serde_json::Value;

use crate::hostile::{capture_log, log_events, tagged};
use crate::replay::fixture;

const KAFKA_SINK: &str = "kubesink-sink-kafka";
const READ_LIMIT: Duration = Duration::from_secs(60);

/// A topic prefix no earlier run used (the shared broker keeps its data).
fn unique(name: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("kubesink-e2e-{name}-{}-{nanos}", std::process::id())
}

/// The fixture's entries, as the replay source normalizes them.
fn fixture_entries() -> Result<Vec<Entry>> {
    let normalizer = Normalizer::with_region(None);
    let file = std::fs::File::open(fixture("watch.json"))?;
    let mut entries = Vec::new();
    let report = replay::replay(BufReader::new(file), "watch.json", &normalizer, |e| {
        entries.push(e);
        true
    });
    ensure!(report.problems.is_empty(), "{:?}", report.problems);
    ensure!(!entries.is_empty(), "the fixture has entries");
    Ok(entries)
}

fn kind_name(r: &Record) -> &'static str {
    match r {
        Record::Job(_) => "job",
        Record::Pod(_) => "pod",
        Record::Event(_) => "event",
    }
}

/// What identifies one message: (kind, uid) -> the sequence of
/// (change, resource version) in order.
type Expected = BTreeMap<(String, String), Vec<(String, String)>>;

fn expected(entries: &[Entry]) -> Expected {
    let mut out = Expected::new();
    for e in entries {
        let (change, r) = match e {
            Change::Applied(r) => ("applied", r),
            Change::Removed(r) => ("removed", &r.record),
            Change::Tombstone(_) => continue,
        };
        let m = r.meta();
        out.entry((kind_name(r).to_owned(), m.uid.clone()))
            .or_default()
            .push((change.to_owned(), m.resource_version.clone()));
    }
    out
}

/// The messages of one topic as the same map, checking on the way that
/// each is keyed by its record's uid, carries its kind and change in its
/// headers, and that all of one uid's messages share a partition.
fn received(got: &[Got], topic: &str) -> Result<Expected> {
    let mut out = Expected::new();
    let mut partition_of: BTreeMap<String, i32> = BTreeMap::new();
    for g in got {
        let v: Value = serde_json::from_slice(&g.value)
            .with_context(|| format!("{topic}: a JSON value at offset {}", g.offset))?;
        let uid = v["record"]["meta"]["uid"].as_str().context("meta.uid")?;
        let kind = v["kind"].as_str().context("kind")?;
        let change = v["change"].as_str().context("change")?;
        let rv = v["record"]["meta"]["resource_version"]
            .as_str()
            .context("resource_version")?;
        ensure!(
            g.key.as_deref() == Some(uid.as_bytes()),
            "{topic}: message at {}/{} keyed {:?}, not by uid {uid}",
            g.partition,
            g.offset,
            g.key.as_deref().map(String::from_utf8_lossy)
        );
        ensure!(
            g.headers
                == vec![
                    ("kubesink-kind".to_owned(), kind.as_bytes().to_vec()),
                    ("kubesink-change".to_owned(), change.as_bytes().to_vec()),
                ],
            "{topic}: headers {:?}",
            g.headers
        );
        let p = *partition_of.entry(uid.to_owned()).or_insert(g.partition);
        ensure!(
            p == g.partition,
            "{topic}: uid {uid} in partitions {p} and {}",
            g.partition
        );
        out.entry((kind.to_owned(), uid.to_owned()))
            .or_default()
            .push((change.to_owned(), rv.to_owned()));
    }
    Ok(out)
}

/// Every expected message present exactly once, in order per uid.
fn check_exactly_once(want: &Expected, got: &Expected) -> Result<()> {
    let n = |m: &Expected| m.values().map(Vec::len).sum::<usize>();
    for (key, seq) in want {
        let g = got.get(key).map(Vec::as_slice).unwrap_or_default();
        ensure!(
            g == seq.as_slice(),
            "{key:?}: expected {seq:?}, read back {g:?}"
        );
    }
    ensure!(
        got.len() == want.len() && n(got) == n(want),
        "read back {} messages of {} objects, expected {} of {}",
        n(got),
        got.len(),
        n(want),
        want.len()
    );
    Ok(())
}

/// The pipeline configuration of a kafka sink writing each kind to
/// `{prefix}.jobs|pods|events` through producer `bus` on `brokers`.
fn config(brokers: &str, prefix: &str) -> Result<Config> {
    let module = guest_wasm(KAFKA_SINK)?;
    let yaml = format!(
        "kafka:
  bus: {{ brokers: ['{brokers}'] }}
sinks:
  - name: kafka
    module: '{module}'
    kafka: {{ bus: [{prefix}.jobs, {prefix}.pods, {prefix}.events] }}
    settings: {{ producer: bus, topic.jobs: {prefix}.jobs, topic.pods: {prefix}.pods, topic.events: {prefix}.events }}
    queue: {{ capacity: 100000, coalesce: false }}
    batch: {{ max_records: 500 }}
",
        module = module.display()
    );
    Ok(Config::parse(&yaml, "kafka test config")?)
}

async fn read_all(brokers: &str, prefix: &str) -> Result<Expected> {
    let mut all = Expected::new();
    for kind in ["jobs", "pods", "events"] {
        let topic = format!("{prefix}.{kind}");
        let (b, t) = (brokers.to_owned(), topic.clone());
        let got = tokio::task::spawn_blocking(move || read_topic(&b, &t, READ_LIMIT)).await??;
        let part = received(&got, &topic)?;
        let singular = kind.trim_end_matches('s');
        ensure!(
            part.keys().all(|(k, _)| k == singular),
            "{topic} holds other kinds"
        );
        all.extend(part);
    }
    Ok(all)
}

fn single(reports: &[SinkReport]) -> Result<&SinkReport> {
    ensure!(reports.len() == 1, "{reports:?}");
    let r = &reports[0];
    ensure!(r.failed == 0 && r.faults == 0, "{r:?}");
    Ok(r)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_sink_replays_the_fixture_into_a_real_broker_exactly_once_in_order() -> Result<()> {
    let brokers = kafka::brokers()?;
    let prefix = unique("replay");
    let plan = config(&brokers, &prefix)?.resolve("kafka test config")?;
    let host = Host::new(plan.host.clone())?;
    let pipeline = Pipeline::start(&host, plan.sinks.clone()).await?;
    let entries = fixture_entries()?;
    let want = expected(&entries);
    for e in entries {
        pipeline.send(e).await;
    }
    let reports = pipeline.finish().await;
    let r = single(&reports)?;
    ensure!(r.coalesced == 0, "{r:?}");
    let got = read_all(&brokers, &prefix).await?;
    check_exactly_once(&want, &got)?;
    ensure!(
        want.keys().any(|(k, _)| k == "job")
            && want.keys().any(|(k, _)| k == "pod")
            && want.keys().any(|(k, _)| k == "event"),
        "the fixture covers every kind"
    );
    Ok(())
}

const T0: i64 = 1_714_557_600;

/// Update `n` of event `uid`: count and resource version grow with `n`.
fn event(uid: &str, n: u32) -> Entry {
    let ts = |s: i64| Timestamp {
        seconds: s,
        nanos: 0,
    };
    Change::Applied(Record::Event(Event {
        meta: Meta {
            uid: uid.into(),
            name: format!("ev-{uid}"),
            namespace: "kubedl".into(),
            resource_version: (1000 + n).to_string(),
            resource_version_num: u64::from(1000 + n),
            labels: vec![],
            created: ts(T0),
        },
        involved: ObjectRef {
            api_version: "v1".into(),
            kind: "Pod".into(),
            namespace: "kubedl".into(),
            name: "mnist-worker-0".into(),
            uid: "pod-1".into(),
        },
        event_type: "Warning".into(),
        reason: "BackOff".into(),
        message: format!("back-off {n}"),
        source: "kubelet/node-a".into(),
        count: n,
        first_seen: ts(T0),
        last_seen: ts(T0 + i64::from(n)),
        region: String::new(),
    }))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_broker_restart_mid_stream_loses_and_duplicates_nothing() -> Result<()> {
    let broker = PrivateKafka::start()?;
    let brokers = broker.brokers();
    let prefix = unique("restart");
    let plan = config(&brokers, &prefix)?.resolve("kafka test config")?;
    let host = Host::new(plan.host.clone())?;
    let pipeline = Pipeline::start(&host, plan.sinks.clone()).await?;

    // 200 events updated 20 times each, interleaved: 4000 messages.
    let entries: Vec<Entry> = (1..=20)
        .flat_map(|n| (0..200).map(move |i| event(&format!("ev-{i:03}"), n)))
        .collect();
    let want = expected(&entries);
    let (first, second) = entries.split_at(entries.len() / 2);
    let half = first.len() as u64;
    for e in first {
        pipeline.send(e.clone()).await;
    }
    eventually(Duration::from_secs(60), "the first half delivered", || {
        let delivered = pipeline.reports()[0].delivered;
        async move { Ok(delivered >= half) }
    })
    .await?;

    broker.stop()?;
    for e in second {
        pipeline.send(e.clone()).await;
    }
    let total = entries.len() as u64;
    eventually(Duration::from_secs(30), "the second half queued", || {
        let received = pipeline.reports()[0].received;
        async move { Ok(received >= total) }
    })
    .await?;
    let while_down = pipeline.reports()[0].delivered;
    ensure!(
        while_down < total,
        "the sink delivered everything ({while_down}) while the broker was down"
    );
    broker.start_again()?;

    let reports = pipeline.finish().await;
    let r = single(&reports)?;
    ensure!(r.delivered == total, "{r:?}");
    let got = read_all(&brokers, &prefix).await?;
    check_exactly_once(&want, &got)?;
    Ok(())
}

fn one_event_spec(name: &str, topic: &str, granted: &str) -> Result<SinkSpec> {
    Ok(SinkSpec {
        name: name.into(),
        module: ModuleSource::Path(guest_wasm(KAFKA_SINK)?),
        settings: vec![
            ("producer".into(), "bus".into()),
            ("topic.events".into(), topic.into()),
        ],
        sql_grants: vec![],
        limits: Limits {
            kafka: vec![KafkaGrant {
                producer: "bus".into(),
                topics: vec![granted.into()],
            }],
            ..Limits::default()
        },
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_topic_outside_the_grant_is_denied_and_logged_naming_sink_and_topic() -> Result<()> {
    let log = capture_log();
    let brokers = kafka::brokers()?;
    let granted = unique("granted");
    let other = unique("ungranted");
    let cache = tempfile::tempdir()?;
    let host = Host::new(HostOptions {
        cache_dir: Some(cache.path().to_path_buf()),
        kafka: vec![ProducerConfig::new("bus", vec![brokers.clone()])],
        ..HostOptions::default()
    })?;
    // Two sinks share the producer, each with its own grant.
    let mut allowed = host
        .load(one_event_spec("kafka-allowed", &granted, &granted)?)
        .await?;
    let mut intruder = host
        .load(one_event_spec("kafka-intruder", &other, &granted)?)
        .await?;

    allowed.write(&[event("ok-1", 1)]).await?;
    let err = intruder
        .write(&[event("no-1", 1)])
        .await
        .expect_err("an ungranted topic");
    match &err {
        CallError::Fatal(m) => ensure!(
            m.contains("denied") && m.contains(&other) && m.contains("kafka-intruder"),
            "{m}"
        ),
        other => anyhow::bail!("expected a fatal error, got {other:?}"),
    }
    let events = log_events(&log.text());
    ensure!(
        events.iter().any(|e| tagged(e, "kafka-intruder")
            && e.contains("kafka produce denied")
            && e.contains(&format!("topic={other}"))),
        "no denial naming the sink and topic in the log"
    );
    ensure!(
        !events
            .iter()
            .any(|e| tagged(e, "kafka-allowed") && e.contains("denied")),
        "the granted sink was denied"
    );

    let (b, t) = (brokers.clone(), granted.clone());
    let got = tokio::task::spawn_blocking(move || read_topic(&b, &t, READ_LIMIT)).await??;
    ensure!(
        got.len() == 1 && got[0].key.as_deref() == Some(&b"ok-1"[..]),
        "{got:?}"
    );
    let (b, t) = (brokers.clone(), other.clone());
    let leaked = tokio::task::spawn_blocking(move || read_topic(&b, &t, READ_LIMIT)).await??;
    ensure!(leaked.is_empty(), "the ungranted topic holds {leaked:?}");
    Ok(())
}

/// Throughput of the wasm sink into the broker through the host (as the
/// tests build it): 100 000 events in writes of 1000, each write returning
/// once the broker acknowledged all of it; every event read back once.
/// Prints events/s and the guest's share (its wasm CPU time); measured
/// figures in `sinks/README.md`, "Measured".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_sink_throughput_100k_events_into_the_broker() -> Result<()> {
    const N: usize = 100_000;
    let brokers = kafka::brokers()?;
    let topic = unique("throughput");
    let cache = tempfile::tempdir()?;
    let host = Host::new(HostOptions {
        cache_dir: Some(cache.path().to_path_buf()),
        kafka: vec![ProducerConfig::new("bus", vec![brokers.clone()])],
        ..HostOptions::default()
    })?;
    let mut sink = host
        .load(one_event_spec("kafka-throughput", &topic, &topic)?)
        .await?;
    let events: Vec<Entry> = (0..N).map(|i| event(&format!("u{i:06}"), 1)).collect();
    let started = std::time::Instant::now();
    for batch in events.chunks(1000) {
        sink.write(batch).await?;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let stats = sink.stats();
    let (b, t) = (brokers.clone(), topic.clone());
    let got = tokio::task::spawn_blocking(move || read_topic(&b, &t, READ_LIMIT)).await??;
    ensure!(got.len() == N, "{} of {N} events read back", got.len());
    let distinct: std::collections::HashSet<_> = got.iter().map(|g| &g.key).collect();
    ensure!(
        distinct.len() == N,
        "duplicates: {} distinct",
        distinct.len()
    );
    let value_bytes: usize = got.iter().map(|g| g.value.len()).sum();
    println!(
        "kafka throughput: {N} events in {elapsed:.2} s = {:.0} events/s; {:.1} MB of JSON values ({:.1} MB/s); guest wasm CPU {:.2} s of {:.2} s in calls",
        N as f64 / elapsed,
        value_bytes as f64 / 1e6,
        value_bytes as f64 / 1e6 / elapsed,
        stats.guest_cpu.as_secs_f64(),
        stats.guest_time.as_secs_f64(),
    );
    Ok(())
}

/// No broker answers (nothing listens on the port): a write is
/// `retryable`, returned before the call's deadline so that the instance is
/// kept (not a timeout fault), and the next write is tried on it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_broker_down_is_retryable_within_the_call_deadline() -> Result<()> {
    let cache = tempfile::tempdir()?;
    let host = Host::new(HostOptions {
        cache_dir: Some(cache.path().to_path_buf()),
        kafka: vec![ProducerConfig::new("bus", vec!["127.0.0.1:1".into()])],
        ..HostOptions::default()
    })?;
    let mut spec = one_event_spec("kafka-down", "t.down", "t.down")?;
    spec.limits.call_timeout = Duration::from_secs(3);
    let mut sink = host.load(spec).await?;
    for attempt in 1..=2 {
        let started = std::time::Instant::now();
        let err = sink
            .write(&[event("down-1", attempt)])
            .await
            .expect_err("no broker");
        let took = started.elapsed();
        match &err {
            CallError::Retryable(m) => ensure!(
                m.contains("kafka topic t.down") && m.contains("acknowledged"),
                "{m}"
            ),
            other => anyhow::bail!("expected retryable, got {other:?}"),
        }
        ensure!(took < Duration::from_secs(3), "took {took:?}");
    }
    let stats = sink.stats();
    ensure!(
        stats.builds == 1 && stats.faults == 0,
        "the instance is kept: {stats:?}"
    );
    Ok(())
}

#[test]
fn kafka_bad_producer_config_fails_at_start_naming_the_field() -> Result<()> {
    let cases = [
        (
            "kafka:\n  bus: { brokers: ['no-port'] }\n",
            "kafka.bus.brokers[0]",
        ),
        (
            "kafka:\n  bus: { brokers: ['k:9092'], acks: '1' }\n",
            "kafka.bus.acks",
        ),
        (
            "kafka:\n  bus: { brokers: ['k:9092'], delivery_timeout: 10ms }\n",
            "kafka.bus.delivery_timeout",
        ),
        (
            "kafka:\n  bus: { brokers: ['k:9092'], sasl: { mechanism: GSSAPI, username: u, password: p } }\n",
            "kafka.bus.sasl.mechanism",
        ),
        (
            "kafka:\n  bus: { brokers: ['k:9092'] }\nsinks:\n  - { name: k, module: x.wasm, kafka: { nope: [t] } }\n",
            "sinks[0].kafka.nope",
        ),
        (
            "kafka:\n  bus: { brokers: ['k:9092'] }\nsinks:\n  - { name: k, module: x.wasm, kafka: { bus: ['a b'] } }\n",
            "sinks[0].kafka.bus[0]",
        ),
    ];
    for (yaml, field) in cases {
        let err = Config::parse(yaml, "test")
            .and_then(|c| c.resolve("test").map(drop))
            .expect_err(yaml);
        ensure!(
            err.field() == Some(field),
            "{yaml}: {err} (field {:?})",
            err.field()
        );
        ensure!(err.to_string().contains(field), "{err}");
    }
    // The password never reaches the error.
    let err = Config::parse(
        "kafka:\n  bus: { brokers: ['bad'], sasl: { mechanism: PLAIN, username: u, password: hunter2-kafka } }\n",
        "test",
    )
    .and_then(|c| c.resolve("test").map(drop))
    .expect_err("bad broker");
    ensure!(!format!("{err} {err:?}").contains("hunter2"), "{err:?}");
    Ok(())
}
