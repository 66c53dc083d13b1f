//! `kubesink history` on the KubeDL fixture's rows, on SQLite, MariaDB and
//! PostgreSQL:
//! the jobs of a namespace or time range with status and duration, one job
//! with its pods and its events aggregated (counts checked against the
//! reviewed expected rows), and the three output formats.

use anyhow::{Context, Result, ensure};
use chrono::{DateTime, Utc};
use kubesink::history::{History, HistoryError, JobQuery, OutputFormat, Tables, render};
use kubesink_tests::mariadb::fresh_database;
use serde_json::Value;

use super::replay::{fixture, mariadb_config, postgres_config, replay_fixture, sqlite_config};

const MNIST_UID: &str = "fc477abd-2a3e-4c59-a724-ca692f40e1ab";

fn at(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text).expect("valid").to_utc()
}

/// Sum of the expected rows' event counts about the mnist TFJob and its
/// pods (by uid, as the sink stored them).
fn expected_mnist_event_count() -> Result<u64> {
    let rows: Value =
        serde_json::from_str(&std::fs::read_to_string(fixture("expected-rows.json"))?)?;
    let pods: Vec<&str> = rows["replica_info"]
        .as_array()
        .context("replica_info")?
        .iter()
        .filter(|p| p["job_id"] == MNIST_UID)
        .filter_map(|p| p["pod_id"].as_str())
        .collect();
    let mut total = 0;
    for e in rows["event_info"].as_array().context("event_info")? {
        let uid = e["obj_uid"].as_str().unwrap_or_default();
        if uid == MNIST_UID || pods.contains(&uid) {
            total += e["count"].as_str().context("count")?.parse::<u64>()?;
        }
    }
    Ok(total)
}

async fn reads_the_fixture_back(db: crate::Db) -> Result<()> {
    let dir = tempfile::tempdir()?;
    let mut server = None;
    let mut pg_server = None;
    let target = match db {
        crate::Db::Mariadb => {
            let db = fresh_database("history").await?;
            replay_fixture(&mariadb_config(&db, "")).await?;
            let url = db.url().to_owned();
            server = Some(db);
            url
        }
        crate::Db::Postgres => {
            let db = kubesink_tests::postgres::fresh_database("history").await?;
            replay_fixture(&postgres_config(&db, "")).await?;
            let url = db.url().to_owned();
            pg_server = Some(db);
            url
        }
        crate::Db::Sqlite => {
            let path = dir.path().join("k.db");
            replay_fixture(&sqlite_config(&path)).await?;
            path.display().to_string()
        }
    };
    let mut h = History::open(&target, Tables::default()).await?;

    // Every job, newest first, with status and duration.
    let all = h.jobs(&JobQuery::default()).await?;
    let names: Vec<&str> = all.iter().map(|j| j.name.as_str()).collect();
    assert_eq!(names, ["pi", "mnist"]);
    let (pi, mnist) = (&all[0], &all[1]);
    assert_eq!(
        (pi.status.as_str(), pi.duration_seconds),
        ("Succeeded", Some(18))
    );
    assert!(!pi.in_cluster, "pi was deleted: {pi:?}");
    // Running 08:21:13 to finished 08:57:02.
    assert_eq!(mnist.duration_seconds, Some(35 * 60 + 49));
    assert_eq!((mnist.kind.as_str(), mnist.in_cluster), ("TFJob", true));

    // A namespace; a time range on creation.
    let ml = JobQuery {
        namespace: Some("ml".into()),
        ..JobQuery::default()
    };
    assert_eq!(h.jobs(&ml).await?, vec![mnist.clone()]);
    let late = JobQuery {
        since: Some(at("2026-03-02T08:00:10Z")),
        ..JobQuery::default()
    };
    assert_eq!(h.jobs(&late).await?, vec![pi.clone()]);
    let early = JobQuery {
        until: Some(at("2026-03-02T08:00:10Z")),
        ..JobQuery::default()
    };
    assert_eq!(h.jobs(&early).await?, vec![mnist.clone()]);

    // One job: its pods (the OOM-killed worker and its replacement too)
    // and its events, nobody else's.
    let detail = h.job("mnist", None).await?;
    assert_eq!(detail.job, *mnist);
    let pods: Vec<(&str, &str, &str)> = detail
        .pods
        .iter()
        .map(|p| (p.replica_type.as_str(), p.name.as_str(), p.status.as_str()))
        .collect();
    assert_eq!(pods.len(), 4, "{pods:?}");
    assert_eq!(pods[0], ("ps", "mnist-ps-0", "Stopped"));
    let oom = detail
        .pods
        .iter()
        .find(|p| p.status == "Failed")
        .context("the failed worker")?;
    assert_eq!(oom.node.as_deref(), Some("192.168.10.12"));
    assert!(
        oom.remark
            .as_deref()
            .unwrap_or_default()
            .contains("OOMKilled"),
        "{oom:?}"
    );
    let objects: std::collections::BTreeSet<&str> =
        detail.events.iter().map(|e| e.object.as_str()).collect();
    assert!(objects.contains("TFJob/mnist"), "{objects:?}");
    assert!(
        objects
            .iter()
            .all(|o| *o == "TFJob/mnist" || o.starts_with("Pod/mnist-")),
        "{objects:?}"
    );
    let counted: u64 = detail.events.iter().map(|e| e.count).sum();
    assert_eq!(counted, expected_mnist_event_count()?);
    let scheduling = detail
        .events
        .iter()
        .find(|e| e.reason == "FailedScheduling" && e.object == "Pod/mnist-worker-1")
        .context("FailedScheduling")?;
    assert!(scheduling.count >= 3, "{scheduling:?}");
    assert_eq!(h.job(MNIST_UID, Some("ml")).await?, detail);

    // The three formats.
    let now = at("2026-03-02T11:01:03Z");
    let table = render::job(&detail, OutputFormat::Table, now)?;
    for want in [
        "Name:       mnist",
        "Duration:   35m",
        "Pods:",
        "Events:",
        "FailedScheduling",
        "192.168.10.12",
    ] {
        assert!(table.contains(want), "{want:?} not in:\n{table}");
    }
    // kubectl describe's age: last seen 3h ago, N times since 3h1m ago.
    let age = format!("3h (x{} over 3h1m)", scheduling.count);
    assert!(table.contains(&age), "{age:?} not in:\n{table}");
    let json: Value = serde_json::from_str(&render::job(&detail, OutputFormat::Json, now)?)?;
    assert_eq!(json["job"]["uid"], MNIST_UID);
    assert_eq!(json["pods"].as_array().map(Vec::len), Some(4));
    let yaml: Value = serde_yaml::from_str(&render::jobs(&all, OutputFormat::Yaml, now)?)?;
    assert_eq!(yaml[1]["duration_seconds"], 35 * 60 + 49);
    let listed = render::jobs(&all, OutputFormat::Table, now)?;
    ensure!(
        listed.contains("mnist") && listed.contains("35m"),
        "{listed}"
    );

    // Errors name what is at fault.
    match h.job("no-such-job", Some("ml")).await {
        Err(e @ HistoryError::NoSuchJob(..)) => {
            let text = e.to_string();
            assert!(
                text.contains("no-such-job") && text.contains("ml"),
                "{text}"
            );
        }
        other => anyhow::bail!("expected NoSuchJob, got {other:?}"),
    }
    h.close().await;
    if let Some(db) = server {
        db.drop_database().await?;
    }
    if let Some(db) = pg_server {
        db.drop_database().await?;
    }
    Ok(())
}

on_all!(reads_the_fixture_back);

#[tokio::test]
async fn a_missing_sqlite_file_is_named_and_not_created() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("nothing-here.db");
    let err = History::open(&path.display().to_string(), Tables::default())
        .await
        .err()
        .context("opening a missing file must fail")?;
    assert!(err.to_string().contains("nothing-here.db"), "{err}");
    assert!(!path.exists());
    Ok(())
}
