//! `kubesink run`'s live source against a real kube-apiserver and etcd:
//! a TFJob, its pod and an event are created and driven through the API;
//! the rows that the wasm mysql sink writes follow them (status changes, a
//! count bump, a deletion that marks the pod removed and `Stopped`), and a
//! pod deleted while kubesink was stopped is marked removed at its next start.
//!
//! `kubesink run` as a process on MariaDB: the KubeDL switches with no
//! config file, jobs deleted while it was down (and the rule for job kinds
//! it may not list), a forced watch expiry (410) across an API server
//! restart, and faults (API server unreachable at start and mid-run, a
//! malformed object). Also the process and row-set helpers of `ha.rs` and
//! `crash.rs`.

use std::time::Duration;

use anyhow::{Context, Result};
use k8s_openapi::api::core::v1::{Event, Pod};
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, Patch, PatchParams, PostParams};
use kube::core::GroupVersionKind;
use kubesink::app::{self, RunOptions, Runtime};
use kubesink::config::Config;
use kubesink::pipeline::SinkReport;
use kubesink_tests::binary::{Kubesink, cache_env, kubesink_binary};
use kubesink_tests::wait::eventually;
use kubesink_tests::{cluster, guests};
use serde_json::json;
use sqlx::Connection;

async fn query_row(db: &std::path::Path, sql: &str) -> Option<Vec<Option<String>>> {
    let mut conn = sqlx::SqliteConnection::connect(&format!("sqlite://{}", db.display()))
        .await
        .ok()?;
    let row = sqlx::query(sqlx::AssertSqlSafe(sql.to_owned()))
        .fetch_optional(&mut conn)
        .await
        .ok()??;
    use sqlx::Row;
    Some(
        (0..row.len())
            .map(|i| {
                row.try_get::<Option<String>, _>(i).unwrap_or_else(|_| {
                    row.try_get::<Option<i64>, _>(i)
                        .ok()
                        .flatten()
                        .map(|n| n.to_string())
                })
            })
            .collect(),
    )
}

/// Waits (up to 60 s) until `sql` returns `want`.
async fn wait_for(db: &std::path::Path, sql: &str, want: &[&str]) -> Result<()> {
    let want: Vec<Option<String>> = want.iter().map(|s| Some((*s).to_owned())).collect();
    let mut last = None;
    for _ in 0..600 {
        last = query_row(db, sql).await;
        if last.as_ref() == Some(&want) {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    anyhow::bail!("{sql}: wanted {want:?}, last saw {last:?}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_live_watch_follows_a_tfjob_its_pod_and_events() -> Result<()> {
    let cluster = cluster::start().await?;
    let client = cluster.client();
    cluster
        .install_crd(
            &guests::workspace_root().join("tests/fixtures/crds/training.kubedl.io_tfjobs.yaml"),
        )
        .await?;

    let dir = tempfile::tempdir()?;
    let db = dir.path().join("live.db");
    let yaml = sink_config(&db)?;
    let runtime = start_in_process(&yaml, &cluster).await?;

    // A TFJob, Running.
    let tfjobs = tfjob_api(client.clone());
    let job: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "training.kubedl.io/v1alpha1", "kind": "TFJob",
        "metadata": {"name": "mnist", "annotations": {"kubedl.io/tenancy": "{\"tenant\":\"lab\",\"user\":\"ana\",\"region\":\"r1\"}"}},
        "spec": {"tfReplicaSpecs": {"Worker": {"replicas": 1, "template": {"spec": {"containers": [
            {"name": "tensorflow", "image": "tf:2", "resources": {"requests": {"cpu": "1"}}}]}}}}},
    }))?;
    let job = tfjobs
        .create(&PostParams::default(), &job)
        .await
        .context("create TFJob")?;
    let job_uid = job.metadata.uid.clone().context("uid")?;
    tfjobs
        .patch_status(
            "mnist",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"conditions": [
                {"type": "Created", "status": "True", "lastTransitionTime": "2026-01-01T00:00:00Z"},
                {"type": "Running", "status": "True", "lastTransitionTime": "2026-01-01T00:01:00Z"}]}})),
        )
        .await
        .context("TFJob status")?;
    wait_for(
        &db,
        "SELECT status, owner, tenant FROM job_info WHERE name = 'mnist'",
        &["Running", "ana", "lab"],
    )
    .await?;

    // Its pod, Pending then Running.
    let pods = Api::<Pod>::namespaced(client.clone(), "default");
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": "mnist-worker-0", "labels": {"replica-type": "worker"},
            "ownerReferences": [{"apiVersion": "training.kubedl.io/v1alpha1", "kind": "TFJob",
                "name": "mnist", "uid": job_uid, "controller": true}]},
        "spec": {"containers": [{"name": "tensorflow", "image": "tf:2"}]},
    }))?;
    pods.create(&PostParams::default(), &pod)
        .await
        .context("create pod")?;
    // A pod of something else is not delivered.
    let stray: Pod = serde_json::from_value(json!({
        "metadata": {"name": "stray"}, "spec": {"containers": [{"name": "c", "image": "busybox"}]},
    }))?;
    pods.create(&PostParams::default(), &stray).await?;
    pods.patch_status(
        "mnist-worker-0",
        &PatchParams::default(),
        &Patch::Merge(json!({"status": {"phase": "Running", "hostIP": "10.0.0.5", "podIP": "10.1.0.7",
            "containerStatuses": [{"name": "tensorflow", "image": "tf:2", "imageID": "", "ready": true,
                "restartCount": 0, "state": {"running": {"startedAt": "2026-01-01T00:01:05Z"}}}]}})),
    )
    .await
    .context("pod status")?;
    wait_for(
        &db,
        "SELECT status, job_id, replica_type, host_ip, is_in_etcd FROM replica_info WHERE name = 'mnist-worker-0'",
        &["Running", &job_uid, "worker", "10.0.0.5", "1"],
    )
    .await?;

    // An event, then its repeat (count bump on the same object).
    let events = Api::<Event>::namespaced(client.clone(), "default");
    let ev = |count: i32, last: &str| -> Result<Event> {
        Ok(serde_json::from_value(json!({
            "metadata": {"name": "mnist-worker-0.backoff"},
            "involvedObject": {"kind": "Pod", "namespace": "default", "name": "mnist-worker-0", "apiVersion": "v1"},
            "reason": "BackOff", "message": "Back-off restarting failed container", "type": "Warning",
            "count": count, "firstTimestamp": "2026-01-01T00:02:00Z", "lastTimestamp": last,
            "source": {"component": "kubelet", "host": "node-1"},
        }))?)
    };
    events
        .create(&PostParams::default(), &ev(1, "2026-01-01T00:02:00Z")?)
        .await?;
    wait_for(
        &db,
        // Pods' events only: the API server makes some of its own.
        "SELECT count, reason FROM event_info WHERE obj_kind = 'Pod'",
        &["1", "BackOff"],
    )
    .await?;
    let mut bumped = ev(2, "2026-01-01T00:03:00Z")?;
    bumped.metadata.resource_version = events
        .get("mnist-worker-0.backoff")
        .await?
        .metadata
        .resource_version;
    events
        .replace("mnist-worker-0.backoff", &PostParams::default(), &bumped)
        .await?;
    wait_for(
        &db,
        "SELECT COUNT(*), MAX(count), MAX(source) FROM event_info WHERE obj_kind = 'Pod'",
        &["1", "2", "kubelet/node-1"],
    )
    .await?;

    // Deleting the running pod keeps its row, removed and Stopped.
    pods.delete("mnist-worker-0", &DeleteParams::default())
        .await?;
    wait_for(
        &db,
        "SELECT status, is_in_etcd FROM replica_info WHERE name = 'mnist-worker-0'",
        &["Stopped", "0"],
    )
    .await?;
    assert_eq!(
        query_row(
            &db,
            "SELECT COUNT(*) FROM replica_info WHERE name = 'stray'"
        )
        .await,
        Some(vec![Some("0".into())])
    );

    // A second pod, then kubesink stops; the pod is deleted while nobody
    // watches; at the next start its row is marked removed and Stopped.
    let mut pod2 = pod.clone();
    pod2.metadata.name = Some("mnist-worker-1".into());
    pods.create(&PostParams::default(), &pod2).await?;
    wait_for(
        &db,
        "SELECT status, is_in_etcd FROM replica_info WHERE name = 'mnist-worker-1'",
        &["Pending", "1"],
    )
    .await?;
    stop_kubesink(runtime).await?;
    pods.delete("mnist-worker-1", &DeleteParams::default())
        .await?;
    let runtime = start_in_process(&yaml, &cluster).await?;
    wait_for(
        &db,
        "SELECT status, is_in_etcd, image FROM replica_info WHERE name = 'mnist-worker-1'",
        &["Stopped", "0", "tf:2"],
    )
    .await?;
    // Nothing else changed: still one row per object, the job untouched.
    wait_for(
        &db,
        "SELECT COUNT(*), SUM(is_in_etcd) FROM replica_info",
        &["2", "0"],
    )
    .await?;
    wait_for(
        &db,
        "SELECT status, is_in_etcd FROM job_info",
        &["Running", "1"],
    )
    .await?;
    stop_kubesink(runtime).await
}

/// The mysql sink into the SQLite file `db`, batches flushed quickly.
fn sink_config(db: &std::path::Path) -> Result<String> {
    let module = guests::guest_wasm("kubesink-sink-mysql")?;
    Ok(format!(
        "connections:\n  db: {{ driver: sqlite, path: '{}' }}\nsinks:\n  - name: mysql\n    module: '{}'\n    connections: [db]\n    settings: {{ connection: db }}\n    batch: {{ max_records: 100, max_delay: 50ms }}\n",
        db.display(),
        module.display()
    ))
}

/// KubeDL TFJobs in namespace `default`.
fn tfjob_api(client: kube::Client) -> Api<DynamicObject> {
    Api::namespaced_with(
        client,
        "default",
        &ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk("training.kubedl.io", "v1alpha1", "TFJob"),
            "tfjobs",
        ),
    )
}

/// kubesink `run` in-process on `cluster` with the sinks of `yaml` (no
/// operations server, no leader election).
pub(crate) async fn start_in_process(yaml: &str, cluster: &cluster::Cluster) -> Result<Runtime> {
    let plan = Config::parse(yaml, "test")?.resolve("test")?;
    let mut options = RunOptions::new(app::Cluster::Client {
        client: cluster.client(),
        server: cluster.base_url(),
    });
    options.own_namespace = Some("default".into());
    Ok(Runtime::start(&plan, options).await?)
}

/// Shuts `runtime` down (everything queued delivered) and returns the
/// final counters of its sinks.
pub(crate) async fn stop_in_process(runtime: Runtime) -> Result<Vec<SinkReport>> {
    let stopped = runtime.shutdown(Duration::from_secs(60)).await?;
    let shutdown = stopped
        .shutdown
        .context("the runtime stood by instead of watching")?;
    anyhow::ensure!(
        shutdown.undelivered.is_empty(),
        "undelivered after 60 s: {:?}",
        shutdown.undelivered
    );
    Ok(shutdown.reports)
}

async fn stop_kubesink(runtime: Runtime) -> Result<()> {
    let reports = stop_in_process(runtime).await?;
    assert_eq!(reports[0].failed, 0, "{reports:?}");
    Ok(())
}

/// A training kind whose CRD is installed after kubesink started is picked
/// up without a restart, and the watches recover from an API server restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_live_watch_picks_up_a_late_crd_and_survives_an_apiserver_restart() -> Result<()> {
    let mut cluster = cluster::start().await?;
    let client = cluster.client();
    let dir = tempfile::tempdir()?;
    let db = dir.path().join("late.db");
    let yaml = sink_config(&db)?;
    let runtime = start_in_process(&yaml, &cluster).await?;
    // Every watch has made its first listing (the TFJob one found no CRD:
    // 404), so the CRD below is installed after the watch started.
    let health = runtime.ops().health.clone();
    eventually(Duration::from_secs(60), "every watch listed once", || {
        let ready = health.readiness();
        async move { Ok(ready.is_ok_and(|text| text.contains("tfjobs (training.kubedl.io"))) }
    })
    .await?;
    cluster
        .install_crd(
            &guests::workspace_root().join("tests/fixtures/crds/training.kubedl.io_tfjobs.yaml"),
        )
        .await?;
    let tfjobs = tfjob_api(client.clone());
    let job: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "training.kubedl.io/v1alpha1", "kind": "TFJob",
        "metadata": {"name": "late"}, "spec": {"tfReplicaSpecs": {}},
    }))?;
    let job = tfjobs.create(&PostParams::default(), &job).await?;
    let job_uid = job.metadata.uid.clone().context("uid")?;
    wait_for(
        &db,
        "SELECT name, status FROM job_info",
        &["late", "Created"],
    )
    .await?;

    cluster.stop_apiserver();
    tokio::time::sleep(Duration::from_secs(1)).await;
    cluster.start_apiserver().await?;
    let pods = Api::<Pod>::namespaced(cluster.client(), "default");
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": "late-worker-0",
            "ownerReferences": [{"apiVersion": "training.kubedl.io/v1alpha1", "kind": "TFJob",
                "name": "late", "uid": job_uid, "controller": true}]},
        "spec": {"containers": [{"name": "tensorflow", "image": "tf:2"}]},
    }))?;
    pods.create(&PostParams::default(), &pod).await?;
    wait_for(
        &db,
        "SELECT name, is_in_etcd FROM replica_info",
        &["late-worker-0", "1"],
    )
    .await?;
    wait_for(&db, "SELECT COUNT(*) FROM job_info", &["1"]).await?;
    stop_kubesink(runtime).await
}

// ---------------------------------------------------------------------------
// `kubesink run` as a process, and MariaDB row sets: shared by live.rs,
// ha.rs and crash.rs.

/// Starts a `kubesink run` process on the cluster of `kubeconfig` with the
/// KubeDL switches (`--meta-storage mysql --event-storage mysql`, `MYSQL_*`
/// of `db`, no config file) and `extra` arguments, appending its output to
/// `<dir>/<name>.log` (one log for all its runs).
pub(crate) fn run_kubedl(
    name: &str,
    kubeconfig: &std::path::Path,
    db: &kubesink_tests::mariadb::TestDb,
    extra: &[&str],
    dir: &std::path::Path,
) -> Result<Kubesink> {
    let mut args: Vec<String> = [
        "run",
        "--meta-storage",
        "mysql",
        "--event-storage",
        "mysql",
        "--listen",
        "127.0.0.1:0",
        "--kubeconfig",
    ]
    .map(String::from)
    .into();
    args.push(kubeconfig.display().to_string());
    args.extend(extra.iter().map(|&a| a.to_owned()));
    let mut env: Vec<(String, String)> = db
        .kubedl_env()
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
    env.push((
        "KUBESINK_LOG".into(),
        "warn,kubesink=info,kubesink_host=info,kube_lease_manager=info".into(),
    ));
    env.extend(cache_env());
    Kubesink::start(
        &kubesink_binary()?,
        &args,
        &env,
        &dir.join(format!("{name}.log")),
    )
}

/// One table's rows: key (the object's uid) → (column, value as text).
pub(crate) type Rows = std::collections::BTreeMap<String, Vec<(String, Option<String>)>>;

/// The tables the mysql sink writes.
pub(crate) const TABLES: [&str; 3] = ["job_info", "replica_info", "event_info"];

/// Every row of `table` but the `id` column (an auto-increment counter:
/// insertion order, which legitimately differs between runs), keyed by
/// the uid column that follows `id`. Empty if the table does not exist yet.
pub(crate) async fn table_rows(pool: &sqlx::MySqlPool, table: &str) -> Result<Rows> {
    use sqlx::Row;
    let columns: Vec<String> = sqlx::query_scalar(
        "SELECT CAST(column_name AS CHAR) FROM information_schema.columns \
         WHERE table_schema = DATABASE() AND table_name = ? ORDER BY ordinal_position",
    )
    .bind(table)
    .fetch_all(pool)
    .await
    .with_context(|| format!("columns of {table}"))?;
    let columns: Vec<String> = columns.into_iter().filter(|c| c != "id").collect();
    if columns.is_empty() {
        return Ok(Rows::new());
    }
    let select = columns
        .iter()
        .map(|c| format!("CAST(`{c}` AS CHAR)"))
        .collect::<Vec<_>>()
        .join(", ");
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {select} FROM `{table}`"
    )))
    .fetch_all(pool)
    .await
    .with_context(|| format!("rows of {table}"))?;
    let mut out = Rows::new();
    for row in rows {
        let values: Vec<(String, Option<String>)> = columns
            .iter()
            .enumerate()
            .map(|(i, c)| {
                (
                    c.clone(),
                    row.try_get::<Option<String>, _>(i).ok().flatten(),
                )
            })
            .collect();
        let key = values[0].1.clone().unwrap_or_default();
        anyhow::ensure!(
            out.insert(key.clone(), values).is_none(),
            "{table}: two rows for {key}"
        );
    }
    Ok(out)
}

/// Columns that legitimately differ between two runs over the same changes
/// in a row whose object was removed: when kubesink did not see the delete
/// happen (it was down, or its watch expired), the removal is noticed at
/// the next listing, so the removal time (`gmt_finished` of a job or pod
/// marked `Stopped`, a job's `gmt_job_finished` too, and `gmt_modified`)
/// is that moment, and the version stays the last one seen applied instead
/// of the deleted object's.
pub(crate) const REMOVAL_COLUMNS: [&str; 5] = [
    "gmt_finished",
    "gmt_job_finished",
    "gmt_modified",
    "version",
    "version_num",
];

/// Objects (table, `name` column) whose rows are compared only for their
/// removal: see `crash.rs`.
pub(crate) type Relaxed = std::collections::HashSet<(String, String)>;

/// The differences between two row sets of `table` (empty: identical),
/// ignoring [`REMOVAL_COLUMNS`] in rows removed in both. A row of an
/// object in `relaxed` may be missing from `got`; if present it must be
/// removed and name the same object, its other columns are not compared.
pub(crate) fn diff_rows(table: &str, want: &Rows, got: &Rows, relaxed: &Relaxed) -> Vec<String> {
    let mut out = Vec::new();
    let removed = |r: &Vec<(String, Option<String>)>| {
        r.iter()
            .any(|(c, v)| c == "is_in_etcd" && v.as_deref() == Some("0"))
    };
    for (key, w) in want {
        let name = col(w, "name").unwrap_or_default().to_owned();
        let relax = relaxed.contains(&(table.to_owned(), name.clone()));
        let Some(g) = got.get(key) else {
            if !relax {
                out.push(format!("{table} {key}: missing (want {w:?})"));
            }
            continue;
        };
        if relax {
            if !removed(g) || col(g, "name") != Some(name.as_str()) {
                out.push(format!(
                    "{table} {key} ({name}): want it removed, got {g:?}"
                ));
            }
            continue;
        }
        let both_removed = removed(w) && removed(g);
        for ((c, wv), (_, gv)) in w.iter().zip(g) {
            if wv != gv && !(both_removed && REMOVAL_COLUMNS.contains(&c.as_str())) {
                out.push(format!(
                    "{table} {key} ({name}) {c}: want {wv:?}, got {gv:?}"
                ));
            }
        }
    }
    for key in got.keys().filter(|k| !want.contains_key(*k)) {
        out.push(format!("{table} {key}: unexpected row"));
    }
    out
}

/// Waits (up to `secs`) until the mysql sink's tables in `got` match those
/// in `want` (see [`diff_rows`]) and stay so for 2 s; returns the row sets.
pub(crate) async fn wait_same_rows(
    want: &sqlx::MySqlPool,
    got: &sqlx::MySqlPool,
    relaxed: &Relaxed,
    secs: u64,
) -> Result<Vec<Rows>> {
    let mut last = Vec::new();
    let mut stable = 0;
    for _ in 0..secs * 2 {
        let mut diffs = Vec::new();
        let mut sets = Vec::new();
        for t in TABLES {
            let (w, g) = (table_rows(want, t).await?, table_rows(got, t).await?);
            diffs.extend(diff_rows(t, &w, &g, relaxed));
            sets.push(w);
        }
        if diffs.is_empty() {
            stable += 1;
            if stable >= 4 {
                return Ok(sets);
            }
        } else {
            stable = 0;
        }
        last = diffs;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    anyhow::bail!(
        "rows still differ after {secs} s ({} differences):\n{}",
        last.len(),
        last.iter().take(40).cloned().collect::<Vec<_>>().join("\n")
    )
}

/// The value of `column` in a row.
pub(crate) fn col<'a>(row: &'a [(String, Option<String>)], column: &str) -> Option<&'a str> {
    row.iter()
        .find(|(c, _)| c == column)
        .and_then(|(_, v)| v.as_deref())
}

/// One row of `sql` on MariaDB, every column as text (`None` if no row or
/// the table does not exist yet).
pub(crate) async fn mysql_row(pool: &sqlx::MySqlPool, sql: &str) -> Option<Vec<Option<String>>> {
    use sqlx::Row;
    let row = sqlx::query(sqlx::AssertSqlSafe(sql.to_owned()))
        .fetch_optional(pool)
        .await
        .ok()??;
    Some(
        (0..row.len())
            .map(|i| {
                row.try_get::<Option<String>, _>(i)
                    .or_else(|_| {
                        row.try_get::<Option<i64>, _>(i)
                            .map(|n| n.map(|n| n.to_string()))
                    })
                    .or_else(|_| {
                        row.try_get::<Option<u64>, _>(i)
                            .map(|n| n.map(|n| n.to_string()))
                    })
                    .or_else(|_| {
                        row.try_get::<Option<u32>, _>(i)
                            .map(|n| n.map(|n| n.to_string()))
                    })
                    .unwrap_or(None)
            })
            .collect(),
    )
}

/// Waits (up to `secs`) until `sql` on MariaDB returns `want`.
pub(crate) async fn wait_mysql(
    pool: &sqlx::MySqlPool,
    sql: &str,
    want: &[&str],
    secs: u64,
) -> Result<()> {
    let want: Vec<Option<String>> = want.iter().map(|s| Some((*s).to_owned())).collect();
    let mut last = None;
    for _ in 0..secs * 10 {
        last = mysql_row(pool, sql).await;
        if last.as_ref() == Some(&want) {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    anyhow::bail!("{sql}: wanted {want:?}, last saw {last:?}")
}

/// `kubesink run --meta-storage mysql --event-storage mysql` with only the
/// `MYSQL_*` variables (no config file) persists a TFJob, a batch Job,
/// their pods and an event; jobs deleted while it was stopped (a TFJob and
/// a batch Job; the other ten training kinds have no CRD, and count as
/// empty) are marked removed at its next start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_mariadb_kubedl_switches_run_live_and_jobs_deleted_while_down_are_removed()
-> Result<()> {
    use crate::crash::{Driver, Op};
    let cluster = crate::crash::cluster_with_tfjobs().await?;
    let dir = tempfile::tempdir()?;
    let db = kubesink_tests::mariadb::fresh_database("live_kubedl").await?;
    let pool = db.connect().await?;
    let mut ks = run_kubedl("kubedl", cluster.kubeconfig_path(), &db, &[], dir.path())?;
    let mut driver = Driver::new(cluster.client());
    let ops = [
        Op::CreateTfJob("tf-a".into()),
        Op::CreateBatchJob("bj-a".into()),
        Op::CreatePod {
            name: "tf-a-worker-0".into(),
            kind: "TFJob",
            job: "tf-a".into(),
        },
        Op::PodRunning("tf-a-worker-0".into()),
        Op::TfJobStatus("tf-a".into(), "Running"),
        Op::Event {
            name: "tf-a.started".into(),
            pod: "tf-a-worker-0".into(),
            count: 1,
        },
    ];
    for (n, op) in ops.iter().enumerate() {
        driver.apply(n, op).await?;
    }
    wait_mysql(
        &pool,
        "SELECT status, owner, is_in_etcd FROM job_info WHERE name = 'tf-a'",
        &["Running", "ana", "1"],
        60,
    )
    .await?;
    wait_mysql(
        &pool,
        "SELECT kind, is_in_etcd FROM job_info WHERE name = 'bj-a'",
        &["Job", "1"],
        60,
    )
    .await?;
    wait_mysql(
        &pool,
        "SELECT status, is_in_etcd FROM replica_info WHERE name = 'tf-a-worker-0'",
        &["Running", "1"],
        60,
    )
    .await?;
    wait_mysql(
        &pool,
        "SELECT reason, count FROM event_info WHERE name = 'tf-a.started'",
        &["Started", "1"],
        60,
    )
    .await?;

    let status = ks.terminate(Duration::from_secs(60)).await?;
    assert!(status.success(), "{status}: {}", ks.tail(20));
    for (n, op) in [
        Op::DeletePod("tf-a-worker-0".into()),
        Op::DeleteTfJob("tf-a".into()),
        Op::DeleteBatchJob("bj-a".into()),
    ]
    .iter()
    .enumerate()
    {
        driver.apply(n, op).await?;
    }
    let mut ks = run_kubedl("kubedl", cluster.kubeconfig_path(), &db, &[], dir.path())?;
    wait_mysql(
        &pool,
        "SELECT status, is_in_etcd, owner FROM job_info WHERE name = 'tf-a'",
        &["Stopped", "0", "ana"],
        60,
    )
    .await?;
    wait_mysql(
        &pool,
        "SELECT status, is_in_etcd FROM job_info WHERE name = 'bj-a'",
        &["Stopped", "0"],
        60,
    )
    .await?;
    wait_mysql(
        &pool,
        "SELECT status, is_in_etcd FROM replica_info WHERE name = 'tf-a-worker-0'",
        &["Stopped", "0"],
        60,
    )
    .await?;
    ks.wait_for_count(
        "marked jobs deleted while not watching",
        1,
        Duration::from_secs(10),
    )
    .await?;
    wait_mysql(
        &pool,
        "SELECT COUNT(*), CAST(SUM(is_in_etcd) AS SIGNED) FROM job_info",
        &["2", "0"],
        10,
    )
    .await?;
    drop(ks);
    pool.close().await;
    db.drop_database().await?;
    Ok(())
}

/// The rule for job resources that cannot be listed: a user that may list
/// everything but KubeDL TFJobs (403) never gets jobs marked removed on a
/// guess — a batch Job deleted while kubesink was down stays, while the
/// deleted pod (a single resource, listed) is marked — until the permission
/// is granted and the union of all job listings is complete.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_mariadb_jobs_are_not_reconciled_while_a_served_job_kind_cannot_be_listed()
-> Result<()> {
    use crate::crash::{Driver, Op};
    use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
    let cluster = crate::crash::cluster_with_tfjobs().await?;
    let dir = tempfile::tempdir()?;
    let db = kubesink_tests::mariadb::fresh_database("live_rbac").await?;
    let pool = db.connect().await?;
    let roles: Api<ClusterRole> = Api::all(cluster.client());
    // Read access to everything kubesink watches by default (its training
    // kinds, by group), but KubeDL TFJobs unless `tfjobs`.
    let role = |tfjobs: bool| -> Result<ClusterRole> {
        let read = json!(["get", "list", "watch"]);
        let mut rules = vec![
            json!({"apiGroups": [""], "resources": ["pods", "events"], "verbs": read}),
            json!({"apiGroups": ["batch"], "resources": ["jobs"], "verbs": read}),
        ];
        let mut groups: std::collections::BTreeMap<String, Vec<String>> = Default::default();
        for k in kubesink_normalize::Options::default().training_kinds {
            let group = k
                .api_version
                .split('/')
                .next()
                .unwrap_or_default()
                .to_owned();
            let plural = format!("{}s", k.kind.to_lowercase());
            if !tfjobs && group == "training.kubedl.io" && plural == "tfjobs" {
                continue;
            }
            groups.entry(group).or_default().push(plural);
        }
        for (group, resources) in groups {
            rules.push(json!({"apiGroups": [group], "resources": resources, "verbs": read}));
        }
        Ok(serde_json::from_value(json!({
            "metadata": {"name": "kubesink-reader"},
            "rules": rules,
        }))?)
    };
    roles.create(&PostParams::default(), &role(false)?).await?;
    let binding: ClusterRoleBinding = serde_json::from_value(json!({
        "metadata": {"name": "kubesink-reader"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "kubesink-reader"},
        "subjects": [{"kind": "User", "apiGroup": "rbac.authorization.k8s.io", "name": "reader"}],
    }))?;
    Api::<ClusterRoleBinding>::all(cluster.client())
        .create(&PostParams::default(), &binding)
        .await?;
    let kubeconfig = cluster.kubeconfig_for_user("reader", None).await?;

    let mut driver = Driver::new(cluster.client());
    let ops = [
        Op::CreateBatchJob("bj-r".into()),
        Op::CreatePod {
            name: "bj-r-pod".into(),
            kind: "Job",
            job: "bj-r".into(),
        },
    ];
    for (n, op) in ops.iter().enumerate() {
        driver.apply(n, op).await?;
    }
    let mut ks = run_kubedl("reader", &kubeconfig, &db, &[], dir.path())?;
    wait_mysql(
        &pool,
        "SELECT is_in_etcd FROM job_info WHERE name = 'bj-r'",
        &["1"],
        60,
    )
    .await?;
    ks.wait_for_count(
        "tfjobs (training.kubedl.io/v1alpha1)",
        1,
        Duration::from_secs(30),
    )
    .await?;
    assert!(ks.log().contains("403") || ks.log().contains("forbidden"));
    let status = ks.terminate(Duration::from_secs(60)).await?;
    assert!(status.success(), "{status}");

    driver.apply(2, &Op::DeletePod("bj-r-pod".into())).await?;
    driver.apply(3, &Op::DeleteBatchJob("bj-r".into())).await?;
    let ks = run_kubedl("reader", &kubeconfig, &db, &[], dir.path())?;
    // The pod is reconciled (pods are listed) ...
    wait_mysql(
        &pool,
        "SELECT is_in_etcd FROM replica_info WHERE name = 'bj-r-pod'",
        &["0"],
        60,
    )
    .await?;
    // ... the job is not, while TFJobs cannot be listed.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        mysql_row(&pool, "SELECT is_in_etcd FROM job_info WHERE name = 'bj-r'").await,
        Some(vec![Some("1".into())])
    );
    // Granted: TFJobs are listed, the union is complete, the job is gone.
    let mut granted = role(true)?;
    granted.metadata.resource_version = roles
        .get("kubesink-reader")
        .await?
        .metadata
        .resource_version;
    roles
        .replace("kubesink-reader", &PostParams::default(), &granted)
        .await?;
    wait_mysql(
        &pool,
        "SELECT status, is_in_etcd FROM job_info WHERE name = 'bj-r'",
        &["Stopped", "0"],
        90,
    )
    .await?;
    drop(ks);
    pool.close().await;
    db.drop_database().await?;
    Ok(())
}

/// Sends one HTTP/1.1 POST with a JSON body to etcd's gRPC gateway and
/// returns the response body.
async fn etcd_post(base: &str, path: &str, body: &str) -> Result<serde_json::Value> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = base.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(addr)
        .await
        .with_context(|| format!("etcd at {addr}"))?;
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await?;
    let text = String::from_utf8_lossy(&response);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .context("etcd: no HTTP response")?;
    anyhow::ensure!(head.starts_with("HTTP/1.1 200"), "etcd {path}: {head}");
    // The gateway may answer chunked: take the JSON object in the body.
    let start = body.find('{').context("etcd: no JSON in the response")?;
    let end = body.rfind('}').context("etcd: no JSON in the response")?;
    Ok(serde_json::from_str(&body[start..=end])?)
}

/// Compacts etcd's history up to its current revision (what the API
/// server's periodic compaction does), so watches from any earlier
/// resource version get 410 Gone. Returns the revision.
pub(crate) async fn compact_etcd(base: &str) -> Result<i64> {
    // key "/" (base64 "Lw=="), just for the header's revision.
    let range = etcd_post(base, "/v3/kv/range", r#"{"key":"Lw==","limit":1}"#).await?;
    let revision: i64 = range
        .pointer("/header/revision")
        .and_then(|r| r.as_str().and_then(|s| s.parse().ok()).or(r.as_i64()))
        .context("etcd revision")?;
    etcd_post(
        base,
        "/v3/kv/compaction",
        &format!(r#"{{"revision":"{revision}","physical":true}}"#),
    )
    .await?;
    Ok(revision)
}

/// A forced watch expiry: kubesink is frozen (SIGSTOP) while the API
/// server restarts and objects change (a pod deleted, one created, a job's
/// status and an event's count changed), and etcd is compacted past every
/// version it saw. Resumed, its watches get 410 Gone, list again, and the
/// rows match the cluster: the deleted pod marked removed, nothing lost,
/// one row per object.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_mariadb_forced_410_after_apiserver_restart_loses_and_duplicates_nothing()
-> Result<()> {
    use crate::crash::{Driver, Op};
    let mut cluster = crate::crash::cluster_with_tfjobs().await?;
    let dir = tempfile::tempdir()?;
    let db = kubesink_tests::mariadb::fresh_database("live_410").await?;
    let pool = db.connect().await?;
    let mut ks = run_kubedl("expiry", cluster.kubeconfig_path(), &db, &[], dir.path())?;
    let mut driver = Driver::new(cluster.client());
    let pod = |name: &str| Op::CreatePod {
        name: name.into(),
        kind: "TFJob",
        job: "tf-e".into(),
    };
    let before = [
        Op::CreateTfJob("tf-e".into()),
        pod("tf-e-worker-0"),
        pod("tf-e-worker-1"),
        Op::Event {
            name: "tf-e.started".into(),
            pod: "tf-e-worker-0".into(),
            count: 1,
        },
    ];
    for (n, op) in before.iter().enumerate() {
        driver.apply(n, op).await?;
    }
    wait_mysql(
        &pool,
        "SELECT COUNT(*), CAST(SUM(is_in_etcd) AS SIGNED) FROM replica_info",
        &["2", "2"],
        60,
    )
    .await?;
    wait_mysql(
        &pool,
        "SELECT count FROM event_info WHERE obj_kind = 'Pod'",
        &["1"],
        60,
    )
    .await?;

    ks.pause()?;
    cluster.stop_apiserver();
    cluster.start_apiserver().await?;
    let during = [
        Op::DeletePod("tf-e-worker-0".into()),
        pod("tf-e-worker-2"),
        Op::PodRunning("tf-e-worker-1".into()),
        Op::TfJobStatus("tf-e".into(), "Running"),
        Op::Event {
            name: "tf-e.started".into(),
            pod: "tf-e-worker-0".into(),
            count: 5,
        },
    ];
    for (n, op) in during.iter().enumerate() {
        driver.apply(10 + n, op).await?;
    }
    let revision = compact_etcd(cluster.etcd_url()).await?;
    eprintln!("etcd compacted at revision {revision}");
    ks.resume()?;

    ks.wait_for_count(
        "watch expired (410 Gone); listing again",
        1,
        Duration::from_secs(60),
    )
    .await?;
    wait_mysql(
        &pool,
        "SELECT status, is_in_etcd FROM replica_info WHERE name = 'tf-e-worker-0'",
        &["Stopped", "0"],
        60,
    )
    .await?;
    wait_mysql(
        &pool,
        "SELECT status, is_in_etcd FROM replica_info WHERE name = 'tf-e-worker-1'",
        &["Running", "1"],
        60,
    )
    .await?;
    wait_mysql(
        &pool,
        "SELECT is_in_etcd FROM replica_info WHERE name = 'tf-e-worker-2'",
        &["1"],
        60,
    )
    .await?;
    wait_mysql(
        &pool,
        "SELECT status, is_in_etcd FROM job_info WHERE name = 'tf-e'",
        &["Running", "1"],
        60,
    )
    .await?;
    // Only the test's own event: a restarted API server may report events
    // of its own (e.g. `ClusterIPNotAllocated` for Service `kubernetes`
    // while its IP repair loop catches up), which kubesink rightly keeps.
    wait_mysql(
        &pool,
        "SELECT COUNT(*), MAX(count) FROM event_info WHERE obj_kind = 'Pod'",
        &["1", "5"],
        60,
    )
    .await?;
    wait_mysql(&pool, "SELECT COUNT(*) FROM replica_info", &["3"], 10).await?;
    wait_mysql(&pool, "SELECT COUNT(*) FROM job_info", &["1"], 10).await?;
    assert!(ks.running());
    drop(ks);
    pool.close().await;
    db.drop_database().await?;
    Ok(())
}

/// Faults: the API server unreachable at start and mid-run (one warning
/// per resource naming the server, retried with backoff, recovered), and a
/// malformed TFJob (wrong types in its spec, which the CRD's
/// `x-kubernetes-preserve-unknown-fields` accepts): one error naming its
/// kind, namespace and name, while the other jobs keep flowing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_mariadb_unreachable_apiserver_and_a_malformed_object_are_reported_and_survived()
-> Result<()> {
    use crate::crash::{Driver, Op};
    let mut cluster = crate::crash::cluster_with_tfjobs().await?;
    let dir = tempfile::tempdir()?;
    let db = kubesink_tests::mariadb::fresh_database("live_faults").await?;
    let pool = db.connect().await?;
    let server = cluster.base_url();

    // Unreachable at start.
    cluster.stop_apiserver();
    let mut ks = run_kubedl("faults", cluster.kubeconfig_path(), &db, &[], dir.path())?;
    ks.wait_for_count(
        "cannot watch; retrying with backoff",
        4,
        Duration::from_secs(60),
    )
    .await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let log = ks.log();
    let warnings: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("cannot watch") && l.contains("pods (v1)"))
        .collect();
    assert_eq!(warnings.len(), 1, "one warning per resource: {warnings:?}");
    assert!(
        warnings[0].contains(&server),
        "names the server: {}",
        warnings[0]
    );
    assert!(ks.running());
    cluster.start_apiserver().await?;
    let mut driver = Driver::new(cluster.client());
    driver.apply(0, &Op::CreateTfJob("tf-1".into())).await?;
    wait_mysql(
        &pool,
        "SELECT is_in_etcd FROM job_info WHERE name = 'tf-1'",
        &["1"],
        60,
    )
    .await?;
    ks.wait_for_count("watching again", 4, Duration::from_secs(30))
        .await?;

    // Unreachable mid-run.
    cluster.stop_apiserver();
    ks.wait_for_count(
        "cannot watch; retrying with backoff",
        5,
        Duration::from_secs(60),
    )
    .await?;
    cluster.start_apiserver().await?;
    driver.apply(1, &Op::CreateTfJob("tf-2".into())).await?;
    wait_mysql(
        &pool,
        "SELECT is_in_etcd FROM job_info WHERE name = 'tf-2'",
        &["1"],
        60,
    )
    .await?;

    // A malformed TFJob between two good ones.
    let tfjobs = tfjob_api(cluster.client());
    let bad: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "training.kubedl.io/v1alpha1", "kind": "TFJob",
        "metadata": {"name": "bad"},
        "spec": {"tfReplicaSpecs": {"Worker": {"replicas": "two", "template": {"spec": {"containers": [
            {"name": "tensorflow", "image": "tf:2", "resources": {"requests": {"cpu": "lots"}}}]}}}}},
    }))?;
    tfjobs.create(&PostParams::default(), &bad).await?;
    driver.apply(2, &Op::CreateTfJob("tf-3".into())).await?;
    wait_mysql(
        &pool,
        "SELECT is_in_etcd FROM job_info WHERE name = 'tf-3'",
        &["1"],
        60,
    )
    .await?;
    ks.wait_for_count("malformed object skipped", 1, Duration::from_secs(10))
        .await?;
    let log = ks.log();
    let errors: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("malformed object skipped"))
        .collect();
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(errors[0].contains("TFJob default/bad"), "{}", errors[0]);
    assert_eq!(
        mysql_row(&pool, "SELECT COUNT(*) FROM job_info WHERE name = 'bad'").await,
        Some(vec![Some("0".into())])
    );
    assert!(ks.running());
    let status = ks.terminate(Duration::from_secs(60)).await?;
    assert!(status.success(), "{status}");
    pool.close().await;
    db.drop_database().await?;
    Ok(())
}
