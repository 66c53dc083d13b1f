//! A database outage during a steady stream: `kubesink replay -` reads
//! events from a pipe fed at a fixed rate into the wasm mysql sink on a
//! private MariaDB, which the test stops for 60 s and starts again.
//! Every event lands exactly once (one row per uid, the latest update
//! wins), the retries back off (counted, and each delay within the
//! configured cap: no spinning), the queue stays bounded (backpressure
//! reaches the pipe: the feeder is held back) and the peak RSS is reported.

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use kubesink_tests::binary::{Kubesink, cache_env, kubesink_binary};
use kubesink_tests::mariadb::PrivateMariaDb;
use serde_json::json;
use sqlx::Row;

use super::ops::{mysql_connection, mysql_sink_config};

/// Events per second fed into the pipe.
const RATE: u64 = 100;
/// Seconds of stream before the outage, of outage, and after it.
const BEFORE: u64 = 20;
const OUTAGE: u64 = 60;
const AFTER: u64 = 20;
/// Every `UPDATE_EVERY`-th document is a count bump of an earlier event.
const UPDATE_EVERY: u64 = 10;
/// The retry cap in the test's configuration.
const RETRY_MAX: Duration = Duration::from_secs(5);

/// Document `i` of the stream: a new event `ev-<n>`, or (every tenth) the
/// second occurrence of an event sent earlier.
fn document(i: u64) -> (String, serde_json::Value) {
    let (n, count) = if i % UPDATE_EVERY == UPDATE_EVERY - 1 {
        (i / 2, 2)
    } else {
        (i, 1)
    };
    let uid = format!("ev-{n}");
    let doc = json!({
        "apiVersion": "v1", "kind": "Event",
        "metadata": {"name": format!("pod-{n}.x"), "namespace": "outage", "uid": uid,
            "resourceVersion": (i + 1).to_string(), "creationTimestamp": "2026-01-01T00:00:00Z"},
        "involvedObject": {"kind": "Pod", "namespace": "outage", "name": format!("pod-{n}"), "apiVersion": "v1"},
        "reason": "Tested", "message": format!("event {n}"), "type": "Normal", "count": count,
        "firstTimestamp": "2026-01-01T00:00:00Z", "lastTimestamp": "2026-01-01T00:00:00Z",
        "source": {"component": "outage-test"},
    });
    (uid, doc)
}

/// Parses a `Duration` as `{:?}` prints it (`1.5s`, `250ms`, `80µs`, `3ns`).
fn parse_debug_duration(text: &str) -> Option<Duration> {
    let units = [("ns", 1e-9), ("µs", 1e-6), ("ms", 1e-3), ("s", 1.0)];
    units.iter().find_map(|(unit, scale)| {
        let n: f64 = text.strip_suffix(unit)?.parse().ok()?;
        Some(Duration::from_secs_f64(n * scale))
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_outage_of_60s_loses_and_duplicates_nothing() -> Result<()> {
    // Build the binary first, so that building does not eat into the stream.
    let binary = kubesink_binary()?;
    let t0 = Instant::now();
    let phase = |what: &str| println!("outage test: {what} at {:.1?}", t0.elapsed());
    let mut mariadb = PrivateMariaDb::start().await?;
    phase("private MariaDB up");
    let testdb = mariadb.fresh_database("outage").await?;
    let dir = tempfile::tempdir()?;
    let config = dir.path().join("kubesink.yaml");
    std::fs::write(
        &config,
        mysql_sink_config(
            &mysql_connection(&testdb),
            &format!(
                "    batch: {{ max_records: 100, max_delay: 100ms }}\n    retry: {{ initial: 200ms, max: {}s }}\n    queue: {{ capacity: 500 }}\n",
                RETRY_MAX.as_secs()
            ),
        )?,
    )?;
    let args = ["--config", &config.display().to_string(), "replay", "-"].map(String::from);
    let (mut ks, mut stdin) =
        Kubesink::start_piped(&binary, &args, &cache_env(), &dir.path().join("outage.log"))?;

    // The feeder writes document i at start + i/RATE, or as soon as the
    // pipe takes it when kubesink pushes back.
    let total = RATE * (BEFORE + OUTAGE + AFTER);
    let lag_ms = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let feeder = {
        let lag_ms = lag_ms.clone();
        std::thread::spawn(move || -> Result<std::collections::BTreeMap<String, u64>> {
            let mut expected = std::collections::BTreeMap::new();
            for i in 0..total {
                let due = started + Duration::from_millis(i * 1000 / RATE);
                let now = Instant::now();
                if now < due {
                    std::thread::sleep(due - now);
                } else {
                    let late = u64::try_from((now - due).as_millis()).unwrap_or(u64::MAX);
                    lag_ms.fetch_max(late, Ordering::Relaxed);
                }
                let (uid, doc) = document(i);
                let count = doc["count"].as_u64().unwrap_or(0);
                writeln!(stdin, "{doc}").context("writing to kubesink's stdin")?;
                expected.insert(uid, count);
            }
            drop(stdin);
            Ok(expected)
        })
    };

    let at = |secs: u64| started + Duration::from_secs(secs);
    tokio::time::sleep_until(at(BEFORE).into()).await;
    phase("stopping MariaDB");
    mariadb.stop().await?;
    let stopped = Instant::now();
    phase("MariaDB stopped");
    tokio::time::sleep_until((stopped + Duration::from_secs(OUTAGE)).into()).await;
    let rss_outage = ks.peak_rss()?;
    mariadb.restart().await?;
    let outage = stopped.elapsed();
    phase("MariaDB started again");

    let expected = tokio::task::spawn_blocking(move || feeder.join())
        .await?
        .map_err(|_| anyhow::anyhow!("the feeder thread panicked"))??;
    let rss_peak = ks.peak_rss()?;
    phase("stream fed");
    let status = ks.wait_exit(Duration::from_secs(120)).await?;
    let code = status
        .code()
        .with_context(|| format!("kubesink: {status}"))?;
    let log = ks.log();
    ensure!(code == 0, "exit {code}; log:\n{log}");
    phase("kubesink exited");

    // Exactly once: one row per uid sent, with the latest count.
    let pool = testdb.connect().await?;
    let rows = sqlx::query("SELECT event_id, CAST(count AS SIGNED) FROM event_info")
        .fetch_all(&pool)
        .await?;
    let mut got = std::collections::BTreeMap::new();
    for r in &rows {
        let uid: String = r.try_get(0)?;
        let count: i64 = r.try_get(1)?;
        ensure!(
            got.insert(uid.clone(), u64::try_from(count)?).is_none(),
            "uid {uid} has two rows"
        );
    }
    ensure!(
        got.len() == expected.len(),
        "{} rows for {} events sent",
        got.len(),
        expected.len()
    );
    let wrong: Vec<_> = expected
        .iter()
        .filter(|(uid, count)| got.get(*uid) != Some(count))
        .take(5)
        .collect();
    ensure!(
        wrong.is_empty(),
        "rows differ from what was sent: {wrong:?}"
    );

    // Backoff: retried, but not spun; every delay within the cap.
    let summary = log
        .lines()
        .find(|l| l.starts_with("sink mysql:"))
        .with_context(|| format!("no sink summary in the log:\n{log}"))?;
    let number_before = |word: &str| -> Option<u64> {
        let words: Vec<&str> = summary
            .split([' ', ','])
            .filter(|w| !w.is_empty())
            .collect();
        let i = words.iter().position(|w| *w == word)?;
        words.get(i.checked_sub(1)?)?.parse().ok()
    };
    let retries = number_before("retries").context("retries in the summary")?;
    let failed = number_before("failed").context("failed in the summary")?;
    ensure!(failed == 0, "{summary}");
    // The outage outlasted the buffers (queue 500, the replay channel,
    // the pipe): the source was held back rather than memory growing.
    let held_back = Duration::from_millis(lag_ms.load(Ordering::Relaxed));
    ensure!(
        held_back >= Duration::from_secs(5),
        "the feeder was held back only {held_back:?}: no backpressure"
    );
    // Each retry logs its jittered delay and the bound it was drawn under.
    let field = |line: &str, key: &str| -> Option<Duration> {
        parse_debug_duration(line.split(key).nth(1)?.split_whitespace().next()?)
    };
    let retried: Vec<(Duration, Duration)> = log
        .lines()
        .filter(|l| l.contains("retryable error"))
        .filter_map(|l| Some((field(l, "retry_in=")?, field(l, "retry_bound=")?)))
        .collect();
    let delays: Vec<Duration> = retried.iter().map(|(d, _)| *d).collect();
    ensure!(
        delays.len() as u64 == retries,
        "{} logged retries, {retries} counted",
        delays.len()
    );
    ensure!(
        retries >= 2,
        "the outage caused {retries} retries: {summary}"
    );
    // Delays are at least a tenth of a bound that doubles up to the cap:
    // at most 5 ramping ones, then one per 0.5 s of outage at the very most.
    let most = 5 + outage.as_secs() * 2;
    ensure!(
        retries <= most,
        "{retries} retries in a {outage:?} outage (at most {most})"
    );
    let longest = delays.iter().max().copied().unwrap_or_default();
    ensure!(
        longest <= RETRY_MAX,
        "a delay of {longest:?} exceeds the cap"
    );
    // The bound doubles up to the cap (the jitter inside it is random, so
    // it is the bound that must reach the cap), and every delay lies
    // within its tenth-to-whole band.
    let widest = retried.iter().map(|(_, b)| *b).max().unwrap_or_default();
    ensure!(
        widest == RETRY_MAX,
        "the backoff bound never grew to the cap: {retried:?}"
    );
    let outside: Vec<_> = retried
        .iter()
        .filter(|(d, b)| *d > *b || *d < *b / 10)
        .collect();
    ensure!(
        outside.is_empty(),
        "delays outside their jitter band: {outside:?}"
    );

    println!(
        "outage {outage:.1?}: {} events ({} documents) sent, {} rows; {retries} retries (longest delay {longest:.2?}); feeder held back up to {} ms; kubesink peak RSS {:.1} MiB during the outage, {:.1} MiB overall",
        expected.len(),
        total,
        got.len(),
        lag_ms.load(Ordering::Relaxed),
        rss_outage as f64 / (1 << 20) as f64,
        rss_peak as f64 / (1 << 20) as f64
    );
    pool.close().await;
    drop(mariadb);
    Ok(())
}

#[test]
fn debug_durations_parse() {
    assert_eq!(
        parse_debug_duration("1.5s"),
        Some(Duration::from_millis(1500))
    );
    assert_eq!(
        parse_debug_duration("250ms"),
        Some(Duration::from_millis(250))
    );
    assert_eq!(
        parse_debug_duration("80µs"),
        Some(Duration::from_micros(80))
    );
    assert_eq!(parse_debug_duration("x"), None);
}
