//! `kubesink run`'s live source against a real kube-apiserver and etcd:
//! a TFJob, its pod and an event are created and driven through the API;
//! the rows that the wasm mysql sink writes follow them (status changes, a
//! count bump, a deletion that marks the pod removed and `Stopped`), and a
//! pod deleted while kubesink was stopped is marked removed at its next start.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use k8s_openapi::api::core::v1::{Event, Pod};
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, Patch, PatchParams, PostParams};
use kube::core::GroupVersionKind;
use kubesink::config::Config;
use kubesink::pipeline::Pipeline;
use kubesink::source::{Normalizer, watch};
use kubesink_host::Host;
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
    let (pipeline, watcher) = start_kubesink(&yaml, client.clone()).await?;

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
        "SELECT count, reason FROM event_info",
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
        "SELECT COUNT(*), MAX(count), MAX(source) FROM event_info",
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
    stop_kubesink(pipeline, watcher).await?;
    pods.delete("mnist-worker-1", &DeleteParams::default())
        .await?;
    let (pipeline, watcher) = start_kubesink(&yaml, client.clone()).await?;
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
    stop_kubesink(pipeline, watcher).await
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

async fn start_kubesink(
    yaml: &str,
    client: kube::Client,
) -> Result<(Arc<Pipeline>, tokio::task::JoinHandle<()>)> {
    let plan = Config::parse(yaml)
        .map_err(|(f, m)| anyhow::anyhow!("{f}: {m}"))?
        .resolve("test")?;
    let host = Host::new(plan.host.clone())?;
    let pipeline = Arc::new(Pipeline::start(&host, plan.sinks.clone()).await?);
    let watcher = tokio::spawn(watch::run(
        client,
        pipeline.clone(),
        Normalizer::default(),
        watch::WatchOptions::default(),
    ));
    Ok((pipeline, watcher))
}

async fn stop_kubesink(
    pipeline: Arc<Pipeline>,
    watcher: tokio::task::JoinHandle<()>,
) -> Result<()> {
    watcher.abort();
    let _ = watcher.await;
    let reports = Pipeline::finish_shared(pipeline)
        .await
        .map_err(|_| anyhow::anyhow!("pipeline still shared after the watch stopped"))?;
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
    let (pipeline, watcher) = start_kubesink(&yaml, client.clone()).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
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
    stop_kubesink(pipeline, watcher).await
}
