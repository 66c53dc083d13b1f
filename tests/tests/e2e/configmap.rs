//! Sink modules from ConfigMaps on a real kube-apiserver: a sink loads its
//! component from a ConfigMap key, a new version is swapped in mid-stream
//! with every record delivered exactly once (to the old or the new
//! version), bad versions (corrupt, wrong world, too large, digest
//! mismatch) are rejected while the running one keeps delivering, and a
//! missing ConfigMap is reported and picked up when it is created while
//! another sink delivers meanwhile.
//!
//! The two versions differ observably: the `counter` test guest writes
//! table `received`, the mysql sink writes `event_info`, into the same
//! SQLite file; together they must hold each created event once.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{ConfigMap, Event};
use kube::api::{Api, Patch, PatchParams, PostParams};
use kubesink::app::Runtime;
use kubesink::config::Config;
use kubesink::modules::{ModuleStatus, ModuleWatcher, sha256_hex};
use kubesink::pipeline::Pipeline;
use kubesink_host::Host;
use kubesink_tests::wait::eventually;
use kubesink_tests::{cluster, guests};
use serde_json::json;
use sqlx::{Connection, Row};

use crate::live::{start_in_process, stop_in_process};

const NS: &str = "default";
const WAIT: Duration = Duration::from_secs(60);

/// The watcher of sink `sink`'s ConfigMap module in `runtime`.
fn module<'a>(runtime: &'a mut Runtime, sink: &str) -> Result<&'a mut ModuleWatcher> {
    runtime
        .module(sink)
        .with_context(|| format!("no module watcher for sink {sink}"))
}

/// Waits until sink `sink`'s module status satisfies `pred`.
async fn wait_module(
    runtime: &mut Runtime,
    sink: &str,
    what: &str,
    pred: impl FnMut(&ModuleStatus) -> bool,
) -> Result<ModuleStatus> {
    module(runtime, sink)?
        .wait_for(WAIT, pred)
        .await
        .map_err(|last| anyhow::anyhow!("sink {sink}: waited for {what}; last status {last:?}"))
}

/// The uids in column `column` of `table` (empty when the table is absent).
async fn uids(db: &Path, table: &str, column: &str) -> Result<BTreeSet<String>> {
    Ok(rows(db, &format!("SELECT {column} FROM {table}"))
        .await?
        .into_iter()
        .map(|mut r| r.remove(0))
        .collect())
}

/// Rows of `sql` as text cells; no rows when the table does not exist yet.
async fn rows(db: &Path, sql: &str) -> Result<Vec<Vec<String>>> {
    let mut conn = sqlx::SqliteConnection::connect(&format!("sqlite://{}?mode=rwc", db.display()))
        .await
        .with_context(|| format!("open {}", db.display()))?;
    let found = match sqlx::query(sqlx::AssertSqlSafe(sql.to_owned()))
        .fetch_all(&mut conn)
        .await
    {
        Ok(found) => found,
        Err(e) if e.to_string().contains("no such table") => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| sql.to_owned()),
    };
    Ok(found
        .iter()
        .map(|row| {
            (0..row.len())
                .map(|i| {
                    row.try_get::<String, _>(i)
                        .or_else(|_| row.try_get::<i64, _>(i).map(|n| n.to_string()))
                        .unwrap_or_default()
                })
                .collect()
        })
        .collect())
}

/// Creates a Warning event named `name`; returns its uid.
async fn create_event(events: &Api<Event>, name: &str) -> Result<String> {
    let ev: Event = serde_json::from_value(json!({
        "metadata": {"name": name},
        "involvedObject": {"kind": "Pod", "namespace": NS, "name": "p", "apiVersion": "v1"},
        "reason": "Test", "message": format!("event {name}"), "type": "Warning",
        "count": 1, "firstTimestamp": "2026-01-01T00:00:00Z", "lastTimestamp": "2026-01-01T00:00:00Z",
        "source": {"component": "configmap-test"},
    }))?;
    let ev = events
        .create(&PostParams::default(), &ev)
        .await
        .with_context(|| format!("create event {name}"))?;
    ev.metadata.uid.context("event uid")
}

/// Creates or replaces ConfigMap `name` with these binaryData keys
/// (server-side apply, so a key left out is removed).
async fn put_configmap(api: &Api<ConfigMap>, name: &str, keys: &[(&str, &[u8])]) -> Result<()> {
    let binary: BTreeMap<String, ByteString> = keys
        .iter()
        .map(|(k, v)| ((*k).to_owned(), ByteString(v.to_vec())))
        .collect();
    let cm = ConfigMap {
        metadata: kube::api::ObjectMeta {
            name: Some(name.to_owned()),
            ..Default::default()
        },
        binary_data: Some(binary),
        ..Default::default()
    };
    let mut value = serde_json::to_value(&cm)?;
    value["apiVersion"] = json!("v1");
    value["kind"] = json!("ConfigMap");
    api.patch(
        name,
        &PatchParams::apply("kubesink-e2e").force(),
        &Patch::Apply(value),
    )
    .await
    .with_context(|| format!("apply configmap {name}"))?;
    Ok(())
}

fn read(package: &str) -> Result<Vec<u8>> {
    let path = guests::guest_wasm(package)?;
    std::fs::read(&path).with_context(|| format!("read {}", path.display()))
}

/// Swap mid-stream, then corrupt, wrong-world and too-large versions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_configmap_module_is_swapped_mid_stream_and_bad_versions_are_rejected() -> Result<()>
{
    let counter = read(guests::COUNTER)?;
    let mysql = read("kubesink-sink-mysql")?;
    let sls = read("kubesink-sink-sls")?;
    // The limit lets the counter and mysql sinks in and keeps sls out:
    // halfway between the larger of the two and sls.
    let limit = (counter.len().max(mysql.len()) + sls.len()) / 2;
    ensure!(
        counter.len() < limit && mysql.len() < limit && sls.len() > limit,
        "sizes: counter {}, mysql {}, sls {} bytes",
        counter.len(),
        mysql.len(),
        sls.len()
    );

    let cluster = cluster::start().await?;
    let client = cluster.client();
    let configmaps = Api::<ConfigMap>::namespaced(client.clone(), NS);
    let events = Api::<Event>::namespaced(client.clone(), NS);
    put_configmap(&configmaps, "sinks", &[("sink.wasm", &counter)]).await?;

    let dir = tempfile::tempdir()?;
    let db = dir.path().join("hot.db");
    let yaml = format!(
        "connections:\n  db: {{ driver: sqlite, path: '{}' }}\nsinks:\n  - name: hot\n    module: 'configmap:sinks/sink.wasm'\n    records: [events]\n    connections: [db]\n    settings: {{ connection: db }}\n    limits: {{ max_module: {limit} }}\n    batch: {{ max_records: 5, max_delay: 20ms }}\n",
        db.display()
    );
    let mut ks = start_in_process(&yaml, &cluster).await?;
    let first = wait_module(&mut ks, "hot", "the counter version", |s| s.loaded == 1).await?;
    assert_eq!(first.active.as_deref(), Some(sha256_hex(&counter).as_str()));

    // A stream of events; the mysql sink replaces the counter mid-stream:
    // events keep coming while it is compiled and swapped in, and after.
    let mut created = BTreeSet::new();
    let mut i = 0;
    let mut after_swap = 0;
    while after_swap < 20 {
        created.insert(create_event(&events, &format!("ev-{i}")).await?);
        if i == 20 {
            put_configmap(&configmaps, "sinks", &[("sink.wasm", &mysql)]).await?;
        }
        if module(&mut ks, "hot")?.status().loaded >= 2 {
            after_swap += 1;
        }
        i += 1;
        ensure!(i < 2000, "the mysql version was never swapped in");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let second = wait_module(&mut ks, "hot", "the mysql version", |s| s.loaded == 2).await?;
    assert_eq!(second.active.as_deref(), Some(sha256_hex(&mysql).as_str()));
    assert_eq!(second.error, None);
    eventually(
        Duration::from_secs(60),
        "every event in one of the tables",
        || async {
            let old = uids(&db, "received", "uid").await?;
            let new = uids(&db, "event_info", "event_id").await?;
            Ok(created.iter().all(|u| old.contains(u) || new.contains(u)))
        },
    )
    .await?;
    let old = uids(&db, "received", "uid").await?;
    let new = uids(&db, "event_info", "event_id").await?;
    let old: BTreeSet<String> = old.intersection(&created).cloned().collect();
    let new: BTreeSet<String> = new.intersection(&created).cloned().collect();
    assert!(
        !old.is_empty() && !new.is_empty(),
        "both versions delivered: {} old, {} new",
        old.len(),
        new.len()
    );
    assert!(
        old.is_disjoint(&new),
        "no event delivered to both versions: {:?}",
        old.intersection(&new).collect::<Vec<_>>()
    );
    assert_eq!(old.len() + new.len(), created.len());
    // Each event reached the old version in exactly one batch.
    let repeats = rows(&db, "SELECT uid, batches FROM received WHERE batches <> 1").await?;
    assert!(
        repeats.is_empty(),
        "redelivered to the old version: {repeats:?}"
    );

    // Bad versions: each rejected with one error naming namespace, name,
    // key and cause; the mysql version keeps delivering.
    let at = "configmap default/sinks key sink.wasm";
    let bad: [(&str, Vec<u8>, &str); 3] = [
        (
            "corrupt",
            b"\0asm\x0d\0\x01\0garbage".to_vec(),
            "invalid or corrupt component",
        ),
        (
            "wrong world",
            b"\0asm\x0d\0\x01\0".to_vec(),
            "does not implement kubesink:sink/sink-world",
        ),
        (
            "too large",
            sls.clone(),
            &format!("over the sink's module size limit of {limit} bytes"),
        ),
    ];
    for (i, (what, bytes, cause)) in bad.iter().enumerate() {
        let errors = module(&mut ks, "hot")?.status().errors;
        put_configmap(&configmaps, "sinks", &[("sink.wasm", bytes)]).await?;
        let status = wait_module(&mut ks, "hot", what, |s| s.errors > errors).await?;
        let error = status.error.clone().unwrap_or_default();
        assert!(
            error.contains("sink 'hot'") && error.contains(at) && error.contains(cause),
            "{what}: {error}"
        );
        assert!(error.contains("keeps running version"), "{what}: {error}");
        assert_eq!(
            status.active, second.active,
            "{what}: still the mysql version"
        );
        assert_eq!(status.loaded, 2, "{what}");
        let uid = create_event(&events, &format!("after-bad-{i}")).await?;
        eventually(
            Duration::from_secs(60),
            &format!("event after the {what} version"),
            || async { Ok(uids(&db, "event_info", "event_id").await?.contains(&uid)) },
        )
        .await?;
    }

    let reports = stop_in_process(ks).await?;
    assert_eq!(reports[0].failed, 0, "{reports:?}");
    Ok(())
}

/// A ConfigMap that does not exist (then lacks the key, then has a version
/// with the wrong digest) keeps its sink waiting with a clear error while
/// another sink delivers; the pinned version starts it with everything
/// that queued meanwhile; a later version with another digest is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_configmap_module_missing_at_start_is_picked_up_and_pinned_by_sha256() -> Result<()>
{
    let counter = read(guests::COUNTER)?;
    let counter_path = guests::guest_wasm(guests::COUNTER)?;
    let mysql = read("kubesink-sink-mysql")?;
    let pin = sha256_hex(&counter);

    let cluster = cluster::start().await?;
    let client = cluster.client();
    let configmaps = Api::<ConfigMap>::namespaced(client.clone(), NS);
    let events = Api::<Event>::namespaced(client.clone(), NS);

    let dir = tempfile::tempdir()?;
    let late_db = dir.path().join("late.db");
    let file_db = dir.path().join("file.db");
    let yaml = format!(
        "connections:\n  late: {{ driver: sqlite, path: '{}' }}\n  file: {{ driver: sqlite, path: '{}' }}\nsinks:\n  - name: late\n    module: 'configmap:late-sinks/counter.wasm.gz'\n    sha256: '{pin}'\n    records: [events]\n    connections: [late]\n    settings: {{ connection: late }}\n    batch: {{ max_records: 100, max_delay: 20ms }}\n  - name: file\n    module: '{}'\n    records: [events]\n    connections: [file]\n    settings: {{ connection: file }}\n    batch: {{ max_records: 100, max_delay: 20ms }}\n",
        late_db.display(),
        file_db.display(),
        counter_path.display()
    );
    let mut ks = start_in_process(&yaml, &cluster).await?;
    let at = "configmap default/late-sinks key counter.wasm.gz";
    let status = wait_module(&mut ks, "late", "the missing ConfigMap error", |s| {
        s.error.is_some()
    })
    .await?;
    let error = status.error.unwrap_or_default();
    assert!(
        error.contains("sink 'late'") && error.contains(at) && error.contains("does not exist"),
        "{error}"
    );
    assert!(error.contains("waits"), "{error}");

    // The other sink delivers meanwhile; the late one queues.
    let mut created = BTreeSet::new();
    for i in 0..5 {
        created.insert(create_event(&events, &format!("early-{i}")).await?);
    }
    eventually(
        Duration::from_secs(60),
        "the file sink delivering",
        || async { Ok(created.is_subset(&uids(&file_db, "received", "uid").await?)) },
    )
    .await?;
    assert!(uids(&late_db, "received", "uid").await?.is_empty());

    // The ConfigMap appears without the key, then with the wrong digest.
    put_configmap(&configmaps, "late-sinks", &[("other.wasm", b"x")]).await?;
    let status = wait_module(&mut ks, "late", "the missing key error", |s| {
        s.error
            .as_deref()
            .is_some_and(|e| e.contains("no binaryData key"))
    })
    .await?;
    let error = status.error.unwrap_or_default();
    assert!(
        error.contains(at) && error.contains("other.wasm"),
        "{error}"
    );
    put_configmap(
        &configmaps,
        "late-sinks",
        &[("counter.wasm.gz", &gzip(&mysql)?)],
    )
    .await?;
    let status = wait_module(&mut ks, "late", "the digest mismatch", |s| {
        s.error
            .as_deref()
            .is_some_and(|e| e.contains("sha256 mismatch"))
    })
    .await?;
    let error = status.error.unwrap_or_default();
    assert!(
        error.contains(at) && error.contains(&pin) && error.contains(&sha256_hex(&mysql)),
        "{error}"
    );
    assert_eq!(status.loaded, 0);

    // The pinned version, gzipped: the sink starts with what queued.
    put_configmap(
        &configmaps,
        "late-sinks",
        &[("counter.wasm.gz", &gzip(&counter)?)],
    )
    .await?;
    let status = wait_module(&mut ks, "late", "the pinned version", |s| s.loaded == 1).await?;
    assert_eq!(status.active.as_deref(), Some(pin.as_str()));
    assert_eq!(status.error, None);
    eventually(
        Duration::from_secs(60),
        "the queued events in the late sink",
        || async { Ok(created.is_subset(&uids(&late_db, "received", "uid").await?)) },
    )
    .await?;

    // Another digest later is refused; the pinned version keeps delivering.
    put_configmap(
        &configmaps,
        "late-sinks",
        &[("counter.wasm.gz", &gzip(&mysql)?)],
    )
    .await?;
    let status = wait_module(&mut ks, "late", "the later digest mismatch", |s| {
        s.error.is_some()
    })
    .await?;
    let error = status.error.unwrap_or_default();
    assert!(
        error.contains("sha256 mismatch") && error.contains("keeps running version"),
        "{error}"
    );
    let uid = create_event(&events, "late-after").await?;
    created.insert(uid.clone());
    eventually(
        Duration::from_secs(60),
        "an event after the refused version",
        || async { Ok(uids(&late_db, "received", "uid").await?.contains(&uid)) },
    )
    .await?;
    let repeats = rows(
        &late_db,
        "SELECT uid, batches FROM received WHERE batches <> 1",
    )
    .await?;
    assert!(repeats.is_empty(), "redelivered: {repeats:?}");
    let reports = stop_in_process(ks).await?;
    assert!(reports.iter().all(|r| r.failed == 0), "{reports:?}");
    Ok(())
}

fn gzip(bytes: &[u8]) -> Result<Vec<u8>> {
    use std::io::Write;
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(bytes)?;
    Ok(enc.finish()?)
}

/// No service needed (SQLite): a version stuck retrying a batch (every
/// write `retryable`) is replaced at once, during the retry's backoff, and
/// the batch is redelivered to the new version, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configmap_swap_during_a_retry_redelivers_the_batch_to_the_new_version() -> Result<()> {
    use kubesink_host::{Limits, ModuleSource, SinkSpec};
    use kubesink_normalize::record::Record;
    use kubesink_tests::records::{applied, event};

    let hostile = guests::guest_wasm("kubesink-guest-hostile")?;
    let counter = guests::guest_wasm(guests::COUNTER)?;
    let dir = tempfile::tempdir()?;
    let db = dir.path().join("retry.db");
    let yaml = format!(
        "connections:\n  db: {{ driver: sqlite, path: '{}' }}\nsinks:\n  - name: stuck\n    module: '{}'\n    records: [events]\n    connections: [db]\n    settings: {{ mode: retryable, connection: db }}\n    batch: {{ max_records: 10, max_delay: 10ms }}\n    retry: {{ initial: 300ms, max: 600ms }}\n",
        db.display(),
        hostile.display()
    );
    let plan = Config::parse(&yaml, "test")?.resolve("test")?;
    let host = Host::new(plan.host.clone())?;
    let pipeline = Pipeline::start(&host, plan.sinks.clone()).await?;
    let sent: BTreeSet<String> = (0..5).map(|i| format!("uid-{i}")).collect();
    for uid in &sent {
        pipeline
            .send(applied(Record::Event(event(uid, 1, 1))))
            .await;
    }
    eventually(
        Duration::from_secs(60),
        "a few retries of the stuck batch",
        || async { Ok(pipeline.reports()[0].retries >= 2) },
    )
    .await?;
    assert_eq!(pipeline.reports()[0].delivered, 0);

    let fixed = host
        .load(SinkSpec {
            name: "stuck".into(),
            module: ModuleSource::Path(counter),
            settings: vec![("connection".into(), "db".into())],
            sql_grants: vec!["db".into()],
            limits: Limits::default(),
        })
        .await?;
    let slot = pipeline.module_slot("stuck").context("slot")?;
    tokio::time::timeout(Duration::from_secs(5), slot.swap(vec![fixed]))
        .await
        .context("the swap waited for the stuck batch instead of taking over")??;
    eventually(
        Duration::from_secs(60),
        "the batch in the new version",
        || async { Ok(sent.is_subset(&uids(&db, "received", "uid").await?)) },
    )
    .await?;
    let repeats = rows(&db, "SELECT uid, batches FROM received WHERE batches <> 1").await?;
    assert!(
        repeats.is_empty(),
        "redelivered more than once: {repeats:?}"
    );
    let reports = pipeline.finish().await;
    assert_eq!(
        (reports[0].delivered, reports[0].failed),
        (5, 0),
        "{reports:?}"
    );
    Ok(())
}
