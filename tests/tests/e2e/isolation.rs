//! Sinks stopped by their limits do not hold back another sink in the same
//! runtime: a guest that loops forever (wall-time deadline) and one that
//! grows memory without end (memory cap) fail their entries, while a
//! well-behaved sink fed the same records receives every one of them, and
//! the pipeline drains and stops.

use anyhow::Result;
use kubesink::config::Config;
use kubesink::pipeline::Pipeline;
use kubesink::source::{Normalizer, replay};
use kubesink_host::Host;
use kubesink_tests::guests;
use sqlx::Connection;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_sinks_are_contained_and_the_good_sink_gets_everything() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let db = dir.path().join("counter.db");
    let spin = guests::guest_wasm(guests::SPIN)?;
    let balloon = guests::guest_wasm(guests::BALLOON)?;
    let counter = guests::guest_wasm(guests::COUNTER)?;
    let common = "records: [events]\n    batch: { max_records: 4, max_delay: 0s }\n    retry: { initial: 10ms, max: 50ms }";
    let yaml = format!(
        "connections:\n  main: {{ driver: sqlite, path: '{}' }}\nsinks:\n  - name: spin\n    module: '{}'\n    limits: {{ call_timeout: 300ms }}\n    {common}\n  - name: balloon\n    module: '{}'\n    limits: {{ memory: 16Mi }}\n    {common}\n  - name: counter\n    module: '{}'\n    connections: [main]\n    {common}\n",
        db.display(),
        spin.display(),
        balloon.display(),
        counter.display()
    );
    let plan = Config::parse(&yaml, "test")?.resolve("test")?;
    let host = Host::new(plan.host.clone())?;
    let pipeline = Pipeline::start(&host, plan.sinks.clone()).await?;

    // The first 8 events of the fixture (distinct uids).
    let fixture = guests::workspace_root().join("tests/fixtures/kubedl/watch.json");
    let mut events = Vec::new();
    let mut uids = std::collections::BTreeSet::new();
    replay::replay(
        std::io::BufReader::new(std::fs::File::open(fixture)?),
        "watch.json",
        &Normalizer::default(),
        |e| {
            if let Some(kubesink_normalize::record::Record::Event(ev)) = e.record()
                && uids.insert(ev.meta.uid.clone())
            {
                events.push(e);
            }
            events.len() < 8
        },
    );
    assert_eq!(events.len(), 8);
    for e in events {
        pipeline.send(e).await;
    }
    let reports = tokio::time::timeout(std::time::Duration::from_secs(120), pipeline.finish())
        .await
        .expect("the pipeline drains although two sinks never succeed");
    let by_name = |n: &str| reports.iter().find(|r| r.name == n).cloned().unwrap();
    let (spin, balloon, counter) = (by_name("spin"), by_name("balloon"), by_name("counter"));
    assert_eq!(counter.delivered, 8, "{counter:?}");
    assert_eq!(counter.failed, 0, "{counter:?}");
    for r in [&spin, &balloon] {
        assert_eq!(r.delivered, 0, "{r:?}");
        assert_eq!(r.failed, 8, "every entry is recorded as failed: {r:?}");
        assert!(r.faults > 0, "{r:?}");
    }
    let mut conn = sqlx::SqliteConnection::connect(&format!("sqlite://{}", db.display())).await?;
    let (n,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM received")
        .fetch_one(&mut conn)
        .await?;
    assert_eq!(n, 8, "the counter sink stored every uid");
    Ok(())
}
