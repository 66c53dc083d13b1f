//! Operations of a running `kubesink run` binary against the real control
//! plane: `/readyz` is 503 while a watch has not listed (API server down)
//! and 200 after; `/metrics` counts what was delivered (equal to the rows
//! and to the objects in the cluster), watch restarts and queue depth; and
//! SIGTERM delivers what is queued within `--shutdown-grace` and exits 0,
//! or says what was left and exits 5 when the grace runs out.
//!
//! Also the helpers the outage and lagging tests share: starting the
//! binary (`kubesink_tests::binary::Kubesink`), reading metrics, the mysql
//! sink's configuration.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use k8s_openapi::api::core::v1::Event;
use kube::api::{Api, ListParams, PostParams};
use kubesink::ops::metrics::sample;
use kubesink_tests::binary::{Kubesink, cache_env, http_get, kubesink_binary};
use kubesink_tests::mariadb::PrivateMariaDb;
use kubesink_tests::wait::eventually;
use kubesink_tests::{cluster, guests};
use serde_json::json;
use sqlx::Row;

/// Starts `kubesink ARGS` (with the compiled-component cache of the
/// tests), its output in `dir/name.log`.
pub(crate) fn spawn(dir: &Path, name: &str, args: &[&str]) -> Result<Kubesink> {
    let args: Vec<String> = args.iter().map(|&a| a.to_owned()).collect();
    Kubesink::start(
        &kubesink_binary()?,
        &args,
        &cache_env(),
        &dir.join(format!("{name}.log")),
    )
}

/// Starts `kubesink --config dir/<name>.yaml run` on `cluster`, with
/// `config` written there, its operations server on a free port, and
/// `extra` arguments to `run`.
fn run_with(
    dir: &Path,
    name: &str,
    cluster: &cluster::Cluster,
    config: &str,
    extra: &[&str],
) -> Result<Kubesink> {
    let path = dir.join(format!("{name}.yaml"));
    std::fs::write(&path, config)?;
    let kubeconfig = cluster.kubeconfig_path().display().to_string();
    let config_arg = path.display().to_string();
    let mut args = vec![
        "--config",
        &config_arg,
        "run",
        "--kubeconfig",
        &kubeconfig,
        "--listen",
        "127.0.0.1:0",
    ];
    args.extend_from_slice(extra);
    spawn(dir, name, &args)
}

/// [`run_with`] the mysql sink writing into the SQLite file
/// `dir/<name>.db` in small, quick batches, events about pods only: the
/// process and the database's path.
fn run_into_sqlite(
    dir: &Path,
    name: &str,
    cluster: &cluster::Cluster,
) -> Result<(Kubesink, std::path::PathBuf)> {
    let db = dir.join(format!("{name}.db"));
    let config = mysql_sink_config(
        &format!("{{ driver: sqlite, path: '{}' }}", db.display()),
        "    batch: { max_records: 16, max_delay: 20ms }\n",
    )?;
    // Only events about pods: the tests' own.
    let extra = ["--event-kind", "Pod"];
    Ok((run_with(dir, name, cluster, &config, &extra)?, db))
}

/// Its exit code once it has exited (within `limit`).
async fn exit_code(ks: &mut Kubesink, limit: Duration) -> Result<i32> {
    let status = ks.wait_exit(limit).await?;
    status
        .code()
        .with_context(|| format!("kubesink {} ended by a signal: {status}", ks.name()))
}

/// One sample of `/metrics` (0 when the series is absent).
pub(crate) async fn metric(addr: SocketAddr, name: &str, labels: &str) -> Result<f64> {
    let (code, text) = http_get(addr, "/metrics").await?;
    ensure!(code == 200, "/metrics answered {code}");
    Ok(sample(&text, name, labels).unwrap_or(0.0))
}

/// A config with the wasm mysql sink writing events (and jobs and pods)
/// through connection `db` (`connection` is the YAML of the connection).
pub(crate) fn mysql_sink_config(connection: &str, extra: &str) -> Result<String> {
    let module = guests::guest_wasm("kubesink-sink-mysql")?;
    Ok(format!(
        "connections:\n  db: {connection}\nsinks:\n  - name: mysql\n    module: '{}'\n    connections: [db]\n    settings: {{ connection: db }}\n{extra}",
        module.display()
    ))
}

/// The YAML of a mysql connection to `db`.
pub(crate) fn mysql_connection(db: &kubesink_tests::mariadb::TestDb) -> String {
    let env = db.kubedl_env();
    let get = |k: &str| {
        env.iter()
            .find(|(n, _)| *n == k)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    format!(
        "{{ driver: mysql, host: '{}', port: {}, database: '{}', user: '{}', password: '{}' }}",
        get("MYSQL_HOST"),
        get("MYSQL_PORT"),
        get("MYSQL_DB_NAME"),
        get("MYSQL_USER"),
        get("MYSQL_PASSWORD")
    )
}

/// A failed wait's error with what explains it: the running kubesink's
/// sink and watch metrics and the last lines of its log.
async fn explain(e: anyhow::Error, ks: &mut Kubesink) -> anyhow::Error {
    let metrics = ks.sink_metrics().await;
    e.context(format!(
        "kubesink's metrics:\n{metrics}\nthe last lines of its log:\n{}",
        ks.tail(60)
    ))
}

fn event(name: &str) -> Result<Event> {
    Ok(serde_json::from_value(json!({
        "metadata": {"name": name},
        "involvedObject": {"kind": "Pod", "namespace": "default", "name": "p", "apiVersion": "v1"},
        "reason": "Tested", "message": format!("event {name}"), "type": "Normal", "count": 1,
        "firstTimestamp": "2026-01-01T00:00:00Z", "lastTimestamp": "2026-01-01T00:00:00Z",
        "source": {"component": "e2e"},
    }))?)
}

async fn create_events(api: &Api<Event>, prefix: &str, n: usize) -> Result<()> {
    for i in 0..n {
        api.create(&PostParams::default(), &event(&format!("{prefix}-{i}"))?)
            .await
            .with_context(|| format!("create event {prefix}-{i}"))?;
    }
    Ok(())
}

/// Events about pods in all namespaces, as the API server has them (it
/// makes events of its own about other objects, e.g.
/// `ClusterIPNotAllocated` about a service, at a time of its choosing).
async fn pod_events_in_cluster(client: &kube::Client) -> Result<usize> {
    Ok(Api::<Event>::all(client.clone())
        .list(&ListParams::default().fields("involvedObject.kind=Pod"))
        .await?
        .items
        .len())
}

async fn sqlite_count(db: &Path, sql: &str) -> Result<i64> {
    use sqlx::Connection;
    let mut conn = sqlx::SqliteConnection::connect(&format!("sqlite://{}", db.display())).await?;
    let n: i64 = sqlx::query(sqlx::AssertSqlSafe(sql.to_owned()))
        .fetch_one(&mut conn)
        .await?
        .try_get(0)?;
    Ok(n)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_ops_readyz_waits_for_the_listing_and_metrics_count_the_rows() -> Result<()> {
    let mut cluster = cluster::start().await?;
    let client = cluster.client();
    let events = Api::<Event>::namespaced(client.clone(), "default");
    create_events(&events, "before", 40).await?;

    let dir = tempfile::tempdir()?;
    // The API server is down when kubesink starts: no watch can list.
    cluster.stop_apiserver();
    let (mut ks, db) = run_into_sqlite(dir.path(), "ops", &cluster)?;
    let addr = ks.listen_addr(Duration::from_secs(120)).await?;
    // Sinks load, watches fail: live but not ready, saying why.
    eventually(Duration::from_secs(60), "the watch to fail", || async {
        Ok(metric(
            addr,
            "kubesink_watch_restarts_total",
            "resource=\"events (v1)\"",
        )
        .await?
            >= 1.0)
    })
    .await?;
    let (code, body) = http_get(addr, "/readyz").await?;
    ensure!(code == 503, "/readyz before any listing: {code} {body}");
    ensure!(
        body.contains("watch events (v1): first listing not complete"),
        "{body}"
    );
    ensure!(
        !body.contains("sink mysql"),
        "the sink is initialized: {body}"
    );
    let (code, body) = http_get(addr, "/healthz").await?;
    ensure!(
        code == 200 && body.trim() == "ok",
        "/healthz: {code} {body}"
    );

    // API server back: every watch lists (training kinds without a CRD are
    // not served, which counts as listed), and the process is ready.
    cluster.start_apiserver().await?;
    let client = cluster.client();
    eventually(Duration::from_secs(90), "/readyz 200", || async {
        Ok(http_get(addr, "/readyz").await?.0 == 200)
    })
    .await?;
    let (_, body) = http_get(addr, "/readyz").await?;
    ensure!(body.contains("not served by the API server"), "{body}");

    let events = Api::<Event>::namespaced(client.clone(), "default");
    create_events(&events, "after", 25).await?;
    let in_cluster = pod_events_in_cluster(&client).await?;
    ensure!(in_cluster >= 65, "{in_cluster} events in the cluster");
    eventually(Duration::from_secs(60), "every event as a row", || async {
        Ok(sqlite_count(
            &db,
            "SELECT COUNT(*) FROM event_info WHERE obj_kind = 'Pod'",
        )
        .await?
            == in_cluster as i64)
    })
    .await?;
    // Each event was delivered once (no updates): the counter equals the rows.
    eventually(Duration::from_secs(10), "delivered == rows", || async {
        Ok(metric(
            addr,
            "kubesink_sink_records_delivered_total",
            "sink=\"mysql\"",
        )
        .await?
            == in_cluster as f64)
    })
    .await?;
    let (_, text) = http_get(addr, "/metrics").await?;
    let m = |name: &str, labels: &str| sample(&text, name, labels).unwrap_or(-1.0);
    ensure!(
        m("kubesink_sink_records_received_total", "sink=\"mysql\"") == in_cluster as f64,
        "{text}"
    );
    ensure!(
        m("kubesink_sink_records_failed_total", "sink=\"mysql\"") == 0.0,
        "{text}"
    );
    ensure!(
        m("kubesink_sink_queue_depth", "sink=\"mysql\"") == 0.0,
        "{text}"
    );
    let batches = m(
        "kubesink_sink_batch_duration_seconds_count",
        "sink=\"mysql\"",
    );
    // At most 16 per batch: at least 65/16 batches.
    ensure!(
        batches >= (in_cluster as f64 / 16.0).ceil(),
        "{batches} batches: {text}"
    );
    ensure!(
        m("kubesink_sink_guest_seconds_total", "sink=\"mysql\"") > 0.0,
        "{text}"
    );
    ensure!(
        m("kubesink_watch_restarts_total", "resource=\"pods (v1)\"") >= 1.0,
        "{text}"
    );

    ks.signal("-TERM")?;
    let code = exit_code(&mut ks, Duration::from_secs(60)).await?;
    ensure!(code == 0, "exit {code}; log:\n{}", ks.log());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_sigterm_delivers_the_queue_within_the_grace_then_exits() -> Result<()> {
    let cluster = cluster::start().await?;
    let client = cluster.client();
    let mut mariadb = PrivateMariaDb::start().await?;
    let testdb = mariadb.fresh_database("sigterm").await?;
    let dir = tempfile::tempdir()?;
    let config = mysql_sink_config(
        &mysql_connection(&testdb),
        "    batch: { max_records: 50, max_delay: 20ms }\n    retry: { initial: 200ms, max: 2s }\n",
    )?;
    let start = |name: &str, grace: &str| {
        run_with(
            dir.path(),
            name,
            &cluster,
            &config,
            // Only the test's events (about pods): the API server makes
            // some of its own, e.g. `ClusterIPNotAllocated` about a
            // service, at a time of its choosing.
            &["--shutdown-grace", grace, "--event-kind", "Pod"],
        )
    };
    let pool = testdb.connect().await?;
    let rows = || async {
        let n: i64 = sqlx::query("SELECT COUNT(*) FROM event_info")
            .fetch_one(&pool)
            .await?
            .try_get(0)?;
        anyhow::Ok(n)
    };
    let events = Api::<Event>::namespaced(client.clone(), "default");

    // 1. The database goes away, records queue up behind the retrying sink;
    //    SIGTERM; the database comes back within the grace: all delivered,
    //    exit 0.
    let mut ks = start("drain", "60s")?;
    let addr = ks.listen_addr(Duration::from_secs(120)).await?;
    eventually(Duration::from_secs(60), "/readyz 200", || async {
        Ok(http_get(addr, "/readyz").await?.0 == 200)
    })
    .await?;
    create_events(&events, "a", 30).await?;
    if let Err(e) = eventually(Duration::from_secs(60), "30 rows", || async {
        Ok(rows().await? == 30)
    })
    .await
    {
        let e = e.context(format!("rows: {:?}", rows().await));
        return Err(explain(e, &mut ks).await);
    }
    mariadb.stop().await?;
    create_events(&events, "b", 120).await?;
    if let Err(e) = eventually(
        Duration::from_secs(60),
        "a queue behind retries",
        || async {
            let (_, text) = http_get(addr, "/metrics").await?;
            let m = |n: &str| sample(&text, n, "sink=\"mysql\"").unwrap_or(0.0);
            Ok(m("kubesink_sink_retries_total") >= 1.0
                && m("kubesink_sink_records_received_total") == 150.0
                && m("kubesink_sink_records_delivered_total") == 30.0)
        },
    )
    .await
    {
        return Err(explain(e, &mut ks).await);
    }
    ks.signal("-TERM")?;
    // It has taken the signal (readiness says so) and keeps draining: it is
    // still running with records queued behind the stopped database.
    eventually(
        Duration::from_secs(30),
        "/readyz saying shutting down",
        || async {
            let (code, body) = http_get(addr, "/readyz").await?;
            Ok(code == 503 && body.contains("shutting down"))
        },
    )
    .await?;
    ensure!(
        ks.exited()?.is_none(),
        "kubesink exited while records were queued; log:\n{}",
        ks.log()
    );
    mariadb.restart().await?;
    let code = exit_code(&mut ks, Duration::from_secs(60)).await?;
    let log = ks.log();
    ensure!(code == 0, "exit {code}; log:\n{log}");
    ensure!(log.contains("sink mysql: 150 delivered, 0 failed"), "{log}");
    ensure!(
        rows().await? == 150,
        "rows after the drain: {}",
        rows().await?
    );

    // 2. The database stays away: the grace runs out, kubesink says what it
    //    did not deliver and exits 5.
    let mut ks = start("grace", "3s")?;
    let addr = ks.listen_addr(Duration::from_secs(120)).await?;
    // It lists the 150 events again and upserts them (no new rows).
    eventually(Duration::from_secs(60), "the listing delivered", || async {
        Ok(http_get(addr, "/readyz").await?.0 == 200
            && metric(
                addr,
                "kubesink_sink_records_delivered_total",
                "sink=\"mysql\"",
            )
            .await?
                == 150.0)
    })
    .await?;
    mariadb.stop().await?;
    create_events(&events, "c", 20).await?;
    eventually(Duration::from_secs(60), "20 queued", || async {
        let (_, text) = http_get(addr, "/metrics").await?;
        let m = |n: &str| sample(&text, n, "sink=\"mysql\"").unwrap_or(0.0);
        Ok(
            m("kubesink_sink_records_received_total") - m("kubesink_sink_records_delivered_total")
                == 20.0,
        )
    })
    .await?;
    let stopped_at = Instant::now();
    ks.signal("-TERM")?;
    let code = exit_code(&mut ks, Duration::from_secs(30)).await?;
    let took = stopped_at.elapsed();
    let log = ks.log();
    ensure!(code == 5, "exit {code}; log:\n{log}");
    ensure!(
        log.contains("sink mysql: 20 records left undelivered: the shutdown grace of 3s ran out"),
        "{log}"
    );
    ensure!(took < Duration::from_secs(10), "stopping took {took:?}");
    mariadb.restart().await?;
    pool.close().await;
    testdb.drop_database().await?;
    Ok(())
}

/// A training-job CRD installed while kubesink runs is watched once it is
/// served, and the watches of CRDs that stay missing do not list their
/// resource again meanwhile: they ask the group-version's discovery
/// document, shared among them (idle cost, issue 18).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_a_crd_installed_later_is_watched_and_missing_ones_are_not_listed_again()
-> Result<()> {
    use kube::api::{ApiResource, DynamicObject, GroupVersionKind};
    let cluster = cluster::start().await?;
    let dir = tempfile::tempdir()?;
    let (mut ks, db) = run_into_sqlite(dir.path(), "late", &cluster)?;
    let addr = ks.listen_addr(Duration::from_secs(120)).await?;
    eventually(Duration::from_secs(60), "/readyz 200", || async {
        Ok(http_get(addr, "/readyz").await?.0 == 200)
    })
    .await?;
    let (_, body) = http_get(addr, "/readyz").await?;
    ensure!(
        body.contains("tfjobs (training.kubedl.io/v1alpha1)") && body.contains("not served"),
        "{body}"
    );

    cluster
        .install_crd(
            &guests::workspace_root().join("tests/fixtures/crds/training.kubedl.io_tfjobs.yaml"),
        )
        .await?;
    let tfjobs: Api<DynamicObject> = Api::namespaced_with(
        cluster.client(),
        "default",
        &ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk("training.kubedl.io", "v1alpha1", "TFJob"),
            "tfjobs",
        ),
    );
    let job: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "training.kubedl.io/v1alpha1", "kind": "TFJob",
        "metadata": {"name": "late"},
        "spec": {"tfReplicaSpecs": {"Worker": {"replicas": 1, "template": {"spec": {"containers": [
            {"name": "tensorflow", "image": "tf:2"}]}}}}},
    }))?;
    tfjobs.create(&PostParams::default(), &job).await?;
    // Discovery answers are reused for 15 s and the watch asks at most
    // every 30 s: the job is there within 45 s of the CRD.
    if let Err(e) = eventually(Duration::from_secs(90), "the TFJob's row", || async {
        Ok(sqlite_count(&db, "SELECT COUNT(*) FROM job_info WHERE name = 'late'").await? == 1)
    })
    .await
    {
        return Err(explain(e, &mut ks).await);
    }

    // Each watch of a missing CRD failed its first listing and has not
    // listed again since; the TFJob watch listed once more when served.
    let (_, text) = http_get(addr, "/metrics").await?;
    let restarts = |resource: &str| {
        sample(
            &text,
            "kubesink_watch_restarts_total",
            &format!("resource=\"{resource}\""),
        )
    };
    for missing in [
        "pytorchjobs (training.kubedl.io/v1alpha1)",
        "mpijobs (kubeflow.org/v1)",
        "elasticbatchjobs (inference.kubedl.io/v1alpha1)",
    ] {
        ensure!(
            restarts(missing) == Some(1.0),
            "{missing}: {:?} failed listings; metrics:\n{}",
            restarts(missing),
            ks.sink_metrics().await
        );
    }
    ensure!(
        restarts("tfjobs (training.kubedl.io/v1alpha1)") == Some(1.0),
        "tfjobs: {:?}",
        restarts("tfjobs (training.kubedl.io/v1alpha1)")
    );
    ks.signal("-TERM")?;
    let code = exit_code(&mut ks, Duration::from_secs(30)).await?;
    ensure!(code == 0, "exit {code}; log:\n{}", ks.log());
    Ok(())
}
