//! Scenarios against a real control plane (etcd + kube-apiserver from
//! `kubesink_tests::cluster`) with the `kubesink` binary running `run` as a
//! child process (`kubesink_tests::binary::Kubesink`), delivering through
//! the wasm mysql sink into MariaDB:
//!
//! - **memory**: kubesink's resident memory with no pods; after it has
//!   delivered `pods` pods created while it watched; and, the hard case, a
//!   new kubesink started while the `pods` pods exist, which lists them all
//!   and reconciles them with what the sink holds (peak `VmHWM` and settled
//!   RSS of each); the slope per pod, and the figure for 100k pods (measured
//!   when `pods` is 100k, else extrapolated from the slope and said so).
//!   Creating the pods is timed too (the API server's cost, not kubesink's).
//! - **latency**: events created at a fixed rate; for each, the time from
//!   just before the create request to its row appearing in `event_info`
//!   (polled every [`POLL`]); p50 and p99.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use futures_util::stream::{self, StreamExt};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Event, Pod};
use kube::api::{Api, DynamicObject, PostParams};
use kubesink::ops::metrics::sample;
use kubesink_tests::binary::Kubesink;
use kubesink_tests::cluster::Cluster;
use kubesink_tests::mariadb::TestDb;
use serde_json::json;
use sqlx::MySqlPool;

use crate::procfs;

/// How often the database is polled for new rows.
pub const POLL: Duration = Duration::from_millis(5);

/// Concurrent create requests while loading pods.
pub const CREATE_CONCURRENCY: usize = 64;

/// Namespace of everything created.
const NS: &str = "default";

/// Starts `kubesink run` (the binary `kubesink`) against `cluster`,
/// delivering jobs, pods and events through the mysql component `wasm`
/// into `db`, its operations server on a free port. Its log goes to
/// `dir/kubesink.log` (appended to by each start).
pub fn start(
    kubesink: &Path,
    wasm: &Path,
    cluster: &Cluster,
    db: &TestDb,
    dir: &Path,
) -> anyhow::Result<Kubesink> {
    let env: HashMap<&str, String> = db.kubedl_env().into_iter().collect();
    let get = |k: &str| env.get(k).cloned().unwrap_or_default();
    let config = format!(
        "connections:\n  db: {{ driver: mysql, host: '{}', port: {}, database: '{}', user: '{}', password: '{}' }}\nsinks:\n  - name: mysql\n    module: '{}'\n    connections: [db]\n    settings: {{ connection: db }}\n",
        get("MYSQL_HOST"),
        get("MYSQL_PORT"),
        get("MYSQL_DB_NAME"),
        get("MYSQL_USER"),
        get("MYSQL_PASSWORD"),
        wasm.display()
    );
    let config_path = dir.join("kubesink.yaml");
    std::fs::write(&config_path, config)
        .with_context(|| format!("writing {}", config_path.display()))?;
    let args = [
        "--config".to_owned(),
        config_path.display().to_string(),
        "run".to_owned(),
        "--kubeconfig".to_owned(),
        cluster.kubeconfig_path().display().to_string(),
        "--listen".to_owned(),
        "127.0.0.1:0".to_owned(),
    ];
    let env = [(
        "KUBESINK_CACHE_DIR".to_owned(),
        dir.join("cache").display().to_string(),
    )];
    Kubesink::start(kubesink, &args, &env, &dir.join("kubesink.log"))
}

/// Its process id, failing if it has exited.
fn pid(ks: &mut Kubesink) -> anyhow::Result<u32> {
    ks.check_alive()?;
    ks.pid().context("kubesink is not running")
}

/// `VmRSS` and `VmHWM` of `ks` in bytes.
pub fn memory(ks: &mut Kubesink) -> anyhow::Result<(u64, u64)> {
    procfs::memory(pid(ks)?).context("reading kubesink's /proc status")
}

/// The resident memory of `ks` split into anonymous and file-backed pages.
pub fn rollup(ks: &mut Kubesink) -> anyhow::Result<procfs::Rollup> {
    procfs::rollup(pid(ks)?).context("reading kubesink's /proc smaps_rollup")
}

/// The guests' linear memory in `ks` in bytes (0 if it cannot be read).
pub fn guest_memory(ks: &mut Kubesink) -> u64 {
    pid(ks).ok().and_then(procfs::linear_memory).unwrap_or(0)
}

/// Waits until `ks` is ready (every watch listed), its sink has delivered
/// at least `delivered` records in all and its queue is empty; fails after
/// `timeout`. Returns the time taken.
pub async fn wait_settled(
    ks: &mut Kubesink,
    delivered: u64,
    timeout: Duration,
) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let mut last = String::new();
    loop {
        ks.check_alive()?;
        if let Ok((200, _)) = ks.get("/readyz").await
            && let Ok((200, text)) = ks.get("/metrics").await
        {
            let done = sample(&text, "kubesink_sink_records_delivered_total", SINK);
            let depth = sample(&text, "kubesink_sink_queue_depth", SINK);
            if done.is_some_and(|d| d >= delivered as f64) && depth == Some(0.0) {
                return Ok(started.elapsed());
            }
            last = format!("delivered {done:?}, queue depth {depth:?}");
        }
        if started.elapsed() > timeout {
            bail!(
                "kubesink did not settle within {timeout:?} (want ready, {delivered} delivered, an empty queue; last: {last})"
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The label of the bench's one sink in kubesink's metrics.
const SINK: &str = "sink=\"mysql\"";

async fn count(pool: &MySqlPool, sql: &str) -> i64 {
    sqlx::query_scalar::<_, i64>(sqlx::AssertSqlSafe(sql.to_owned()))
        .fetch_one(pool)
        .await
        .unwrap_or(-1)
}

/// Waits until `sql` (a `COUNT(*)`) returns at least `want`, checking that
/// kubesink is alive; fails after `timeout`.
pub async fn wait_count(
    pool: &MySqlPool,
    ks: &mut Kubesink,
    sql: &str,
    want: i64,
    timeout: Duration,
) -> anyhow::Result<Duration> {
    let started = Instant::now();
    loop {
        let n = count(pool, sql).await;
        if n >= want {
            return Ok(started.elapsed());
        }
        ks.check_alive()?;
        if started.elapsed() > timeout {
            bail!("`{sql}` is {n}, want {want}, after {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Creates the batch/v1 Job `load` (no controller runs it) and returns
/// its uid, the owner of the pods.
pub async fn create_job(client: &kube::Client) -> anyhow::Result<String> {
    let jobs: Api<Job> = Api::namespaced(client.clone(), NS);
    let job: Job = serde_json::from_value(json!({
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": "load"},
        "spec": {"template": {"spec": {"restartPolicy": "Never",
            "containers": [{"name": "c", "image": "busybox"}]}}}
    }))?;
    let created = jobs.create(&PostParams::default(), &job).await?;
    created.metadata.uid.context("created job has no uid")
}

/// Creates pods `load-{from}..load-{to}` owned by job `uid`, with
/// [`CREATE_CONCURRENCY`] requests in flight; returns the time taken.
pub async fn create_pods(
    client: &kube::Client,
    job_uid: &str,
    from: u64,
    to: u64,
) -> anyhow::Result<Duration> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), NS);
    let started = Instant::now();
    let total = to - from;
    let mut done = 0u64;
    let mut results = stream::iter(from..to)
        .map(|i| {
            let pods = pods.clone();
            async move {
                let pod: Pod = serde_json::from_value(json!({
                    "apiVersion": "v1", "kind": "Pod",
                    "metadata": {"name": format!("load-{i}"), "labels": {"job-name": "load", "replica-type": "worker"},
                        "ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job", "name": "load",
                            "uid": job_uid, "controller": true}]},
                    "spec": {"containers": [{"name": "c", "image": "registry.example.com/train/worker:v1",
                        "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}}}]}
                }))?;
                pods.create(&PostParams::default(), &pod)
                    .await
                    .with_context(|| format!("creating pod load-{i}"))?;
                anyhow::Ok(())
            }
        })
        .buffer_unordered(CREATE_CONCURRENCY);
    while let Some(r) = results.next().await {
        r?;
        done += 1;
        if total >= 1000 && done.is_multiple_of(total / 10) {
            eprintln!(
                "  created {done}/{total} pods, {:.1} s",
                started.elapsed().as_secs_f64()
            );
        }
    }
    Ok(started.elapsed())
}

/// Size in bytes of pod `name` as JSON, the way the API server stores and
/// lists it (with `status` and `managedFields`).
pub async fn pod_json_bytes(client: &kube::Client, name: &str) -> anyhow::Result<usize> {
    let pods: Api<DynamicObject> = Api::namespaced_with(
        client.clone(),
        NS,
        &kube::api::ApiResource::erase::<Pod>(&()),
    );
    let pod = pods
        .get(name)
        .await
        .with_context(|| format!("reading pod {name}"))?;
    Ok(serde_json::to_vec(&pod)?.len())
}

/// Latency figures in seconds.
#[derive(Debug, Clone, Copy)]
pub struct Latency {
    /// Events created.
    pub sent: usize,
    /// Events whose row was seen.
    pub seen: usize,
    /// Median.
    pub p50: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Largest.
    pub max: f64,
    /// The rate achieved by the creator, events/s.
    pub achieved_rate: f64,
}

/// The `q` quantile of sorted `v` (nearest rank).
#[must_use]
pub fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// Creates `total` events at `rate`/s (each create is its own task, so a
/// slow response does not slow the schedule) and measures, per event, the
/// time until its row is in `event_info`.
pub async fn latency(
    client: &kube::Client,
    pool: &MySqlPool,
    ks: &mut Kubesink,
    rate: u64,
    total: usize,
) -> anyhow::Result<Latency> {
    let events: Api<Event> = Api::namespaced(client.clone(), NS);
    let sent: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let start_id: i64 =
        sqlx::query_scalar("SELECT CAST(COALESCE(MAX(id), 0) AS SIGNED) FROM event_info")
            .fetch_one(pool)
            .await
            .context("reading event_info's last id")?;
    // Several workers commit at once: rows may appear out of id order.
    let mut cursor = kubesink_tests::id_cursor::IdCursor::after(start_id);
    let creator = {
        let sent = sent.clone();
        tokio::spawn(async move {
            let period = Duration::from_secs_f64(1.0 / rate.max(1) as f64);
            let mut tick = tokio::time::interval(period);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
            let started = Instant::now();
            let mut tasks = Vec::with_capacity(total);
            for i in 0..total {
                tick.tick().await;
                let name = format!("lat-{i}");
                let ev: Event = serde_json::from_value(json!({
                    "apiVersion": "v1", "kind": "Event",
                    "metadata": {"name": name},
                    "involvedObject": {"kind": "Pod", "namespace": NS, "name": "load-0"},
                    "reason": "Pulled", "message": format!("Container image pulled {i}"),
                    "type": "Normal", "count": 1,
                    "firstTimestamp": "2026-01-01T00:00:00Z", "lastTimestamp": "2026-01-01T00:00:00Z",
                    "source": {"component": "kubelet", "host": "n1"}
                }))?;
                if let Ok(mut m) = sent.lock() {
                    m.insert(name, Instant::now());
                }
                let events = events.clone();
                tasks.push(tokio::spawn(async move {
                    events.create(&PostParams::default(), &ev).await.map(|_| ())
                }));
            }
            let elapsed = started.elapsed();
            for t in tasks {
                t.await??;
            }
            anyhow::Ok(elapsed)
        })
    };
    let mut latencies = Vec::with_capacity(total);
    let deadline_after_sent = Duration::from_secs(30);
    let mut creator = Some(creator);
    let mut sending_took = None;
    let mut finished_sending: Option<Instant> = None;
    while latencies.len() < total {
        let rows: Vec<(i64, String)> = sqlx::query_as(
            "SELECT CAST(id AS SIGNED), name FROM event_info WHERE id > ? ORDER BY id",
        )
        .bind(cursor.low())
        .fetch_all(pool)
        .await
        .context("polling event_info")?;
        let now = Instant::now();
        cursor.seen(rows.iter().map(|(id, _)| *id));
        if let Ok(mut m) = sent.lock() {
            for (_, name) in rows {
                // Removed once measured: a row read again is not counted twice.
                if let Some(t0) = m.remove(&name) {
                    latencies.push(now.duration_since(t0).as_secs_f64());
                }
            }
        }
        if creator.as_ref().is_some_and(|c| c.is_finished())
            && let Some(c) = creator.take()
        {
            sending_took = Some(c.await??);
            finished_sending = Some(Instant::now());
        }
        if finished_sending.is_some_and(|t| t.elapsed() > deadline_after_sent) {
            break;
        }
        ks.check_alive()?;
        tokio::time::sleep(POLL).await;
    }
    if let Some(c) = creator.take() {
        sending_took = Some(c.await??);
    }
    latencies.sort_by(f64::total_cmp);
    let took = sending_took.unwrap_or_default().as_secs_f64().max(1e-9);
    Ok(Latency {
        sent: total,
        seen: latencies.len(),
        p50: quantile(&latencies, 0.5),
        p99: quantile(&latencies, 0.99),
        max: latencies.last().copied().unwrap_or(f64::NAN),
        achieved_rate: total as f64 / took,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_by_nearest_rank() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(quantile(&v, 0.5), 50.0);
        assert_eq!(quantile(&v, 0.99), 99.0);
        assert_eq!(quantile(&v, 1.0), 100.0);
        assert_eq!(quantile(&[3.0], 0.99), 3.0);
        assert!(quantile(&[], 0.5).is_nan());
    }
}
