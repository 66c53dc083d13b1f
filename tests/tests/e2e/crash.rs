//! Crash safety of `kubesink run` on the real control plane and MariaDB:
//! a stream of changes (TFJobs and batch Jobs, their pods going through
//! their phases, events with count bumps, deletions) is driven through the
//! API while one kubesink is killed with SIGKILL at random points and
//! restarted, and another runs uninterrupted over the same changes into
//! its own database. The final row sets must be the same (see
//! `live::diff_rows` for the columns that legitimately differ, and the
//! test for objects deleted while the victim was down).
//!
//! Also home of [`Driver`], the stream of changes the HA test uses too.

use std::collections::HashMap;
use std::time::Duration;

use anyhow::{Context, Result};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Event, Pod};
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, Patch, PatchParams, PostParams};
use kube::core::GroupVersionKind;
use kubesink_tests::{cluster, guests, mariadb};
use serde_json::json;

use crate::live::{col, run_kubedl, wait_same_rows};

/// One change driven through the API.
#[derive(Debug, Clone)]
pub(crate) enum Op {
    CreateTfJob(String),
    CreateBatchJob(String),
    /// A pod controlled by the job (`kind`, `name`).
    CreatePod {
        name: String,
        kind: &'static str,
        job: String,
    },
    PodRunning(String),
    PodSucceeded(String),
    /// An event about a pod, created (count 1) or bumped to `count`.
    Event {
        name: String,
        pod: String,
        count: i32,
    },
    TfJobStatus(String, &'static str),
    DeletePod(String),
    DeleteEvent(String),
    DeleteTfJob(String),
    DeleteBatchJob(String),
}

impl Op {
    /// The table and `name` of the object it changes.
    pub(crate) fn object(&self) -> (&'static str, &str) {
        match self {
            Op::CreateTfJob(n)
            | Op::CreateBatchJob(n)
            | Op::TfJobStatus(n, _)
            | Op::DeleteTfJob(n)
            | Op::DeleteBatchJob(n) => ("job_info", n),
            Op::CreatePod { name, .. } => ("replica_info", name),
            Op::PodRunning(n) | Op::PodSucceeded(n) | Op::DeletePod(n) => ("replica_info", n),
            Op::Event { name, .. } | Op::DeleteEvent(name) => ("event_info", name),
        }
    }

    fn is_delete(&self) -> bool {
        matches!(
            self,
            Op::DeletePod(_) | Op::DeleteEvent(_) | Op::DeleteTfJob(_) | Op::DeleteBatchJob(_)
        )
    }
}

/// The changes of `jobs` rounds: each round a TFJob and a batch Job with a
/// pod each through their phases, an event with two count bumps, and for
/// two rounds in three some deletions (of finished and of running objects).
pub(crate) fn plan(jobs: usize) -> Vec<Op> {
    let mut ops = Vec::new();
    for i in 0..jobs {
        let (tf, bj) = (format!("tf-{i}"), format!("bj-{i}"));
        let (tfp, bjp, ev) = (
            format!("tf-{i}-worker-0"),
            format!("bj-{i}-pod"),
            format!("tf-{i}.started"),
        );
        let event = |count| Op::Event {
            name: ev.clone(),
            pod: tfp.clone(),
            count,
        };
        ops.extend([
            Op::CreateTfJob(tf.clone()),
            Op::CreatePod {
                name: tfp.clone(),
                kind: "TFJob",
                job: tf.clone(),
            },
            Op::CreateBatchJob(bj.clone()),
            Op::PodRunning(tfp.clone()),
            event(1),
            Op::TfJobStatus(tf.clone(), "Running"),
            Op::CreatePod {
                name: bjp.clone(),
                kind: "Job",
                job: bj.clone(),
            },
            event(2),
            Op::PodRunning(bjp.clone()),
            Op::PodSucceeded(tfp.clone()),
            event(3),
            Op::TfJobStatus(tf.clone(), "Succeeded"),
        ]);
        match i % 3 {
            1 => ops.extend([
                Op::DeleteEvent(ev.clone()),
                Op::DeletePod(tfp.clone()),
                Op::DeleteTfJob(tf.clone()),
            ]),
            2 => ops.extend([Op::DeletePod(bjp.clone()), Op::DeleteBatchJob(bj.clone())]),
            _ => {}
        }
    }
    ops
}

/// Applies [`Op`]s to a cluster (namespace `default`).
pub(crate) struct Driver {
    tfjobs: Api<DynamicObject>,
    jobs: Api<Job>,
    pods: Api<Pod>,
    events: Api<Event>,
    uids: HashMap<String, String>,
}

/// A fixed time `minutes` after 2026-01-01T00:00:00Z, RFC 3339.
fn at(minutes: usize) -> String {
    format!(
        "2026-01-01T{:02}:{:02}:00Z",
        (minutes / 60) % 24,
        minutes % 60
    )
}

impl Driver {
    /// For the cluster of `client` (the TFJob CRD must be installed).
    pub(crate) fn new(client: kube::Client) -> Self {
        Self {
            tfjobs: Api::namespaced_with(
                client.clone(),
                "default",
                &ApiResource::from_gvk_with_plural(
                    &GroupVersionKind::gvk("training.kubedl.io", "v1alpha1", "TFJob"),
                    "tfjobs",
                ),
            ),
            jobs: Api::namespaced(client.clone(), "default"),
            pods: Api::namespaced(client.clone(), "default"),
            events: Api::namespaced(client, "default"),
            uids: HashMap::new(),
        }
    }

    /// Applies the `n`th change.
    pub(crate) async fn apply(&mut self, n: usize, op: &Op) -> Result<()> {
        let pp = PostParams::default();
        let patch = PatchParams::default();
        match op {
            Op::CreateTfJob(name) => {
                let job: DynamicObject = serde_json::from_value(json!({
                    "apiVersion": "training.kubedl.io/v1alpha1", "kind": "TFJob",
                    "metadata": {"name": name, "annotations": {"kubedl.io/tenancy": "{\"tenant\":\"lab\",\"user\":\"ana\"}"}},
                    "spec": {"tfReplicaSpecs": {"Worker": {"replicas": 1, "template": {"spec": {"containers": [
                        {"name": "tensorflow", "image": "tf:2", "resources": {"requests": {"cpu": "1"}}}]}}}}},
                }))?;
                let job = self.tfjobs.create(&pp, &job).await?;
                self.uids
                    .insert(name.clone(), job.metadata.uid.context("TFJob uid")?);
            }
            Op::CreateBatchJob(name) => {
                let job: Job = serde_json::from_value(json!({
                    "metadata": {"name": name},
                    "spec": {"template": {"spec": {"restartPolicy": "Never",
                        "containers": [{"name": "main", "image": "busybox:1"}]}}},
                }))?;
                let job = self.jobs.create(&pp, &job).await?;
                self.uids
                    .insert(name.clone(), job.metadata.uid.context("Job uid")?);
            }
            Op::CreatePod { name, kind, job } => {
                let api_version = if *kind == "Job" {
                    "batch/v1"
                } else {
                    "training.kubedl.io/v1alpha1"
                };
                let uid = self.uids.get(job).context("owner uid")?;
                let pod: Pod = serde_json::from_value(json!({
                    "metadata": {"name": name, "labels": {"replica-type": "worker"},
                        "ownerReferences": [{"apiVersion": api_version, "kind": kind,
                            "name": job, "uid": uid, "controller": true}]},
                    "spec": {"containers": [{"name": "tensorflow", "image": "tf:2"}]},
                }))?;
                self.pods.create(&pp, &pod).await?;
            }
            Op::PodRunning(name) => {
                self.pods
                    .patch_status(name, &patch, &Patch::Merge(json!({"status": {
                        "phase": "Running", "hostIP": "10.0.0.5", "podIP": "10.1.0.7",
                        "containerStatuses": [{"name": "tensorflow", "image": "tf:2", "imageID": "",
                            "ready": true, "restartCount": 0, "state": {"running": {"startedAt": at(n)}}}]}})))
                    .await?;
            }
            Op::PodSucceeded(name) => {
                self.pods
                    .patch_status(name, &patch, &Patch::Merge(json!({"status": {
                        "phase": "Succeeded",
                        "containerStatuses": [{"name": "tensorflow", "image": "tf:2", "imageID": "",
                            "ready": false, "restartCount": 0, "state": {"terminated": {
                                "exitCode": 0, "reason": "Completed", "startedAt": at(1), "finishedAt": at(n)}}}]}})))
                    .await?;
            }
            Op::Event { name, pod, count } => {
                if *count == 1 {
                    let ev: Event = serde_json::from_value(json!({
                        "metadata": {"name": name},
                        "involvedObject": {"kind": "Pod", "namespace": "default", "name": pod, "apiVersion": "v1"},
                        "reason": "Started", "message": format!("Started container of {pod}"), "type": "Normal",
                        "count": 1, "firstTimestamp": at(n), "lastTimestamp": at(n),
                        "source": {"component": "kubelet", "host": "node-1"},
                    }))?;
                    self.events.create(&pp, &ev).await?;
                } else {
                    self.events
                        .patch(
                            name,
                            &patch,
                            &Patch::Merge(json!({"count": count, "lastTimestamp": at(n)})),
                        )
                        .await?;
                }
            }
            Op::TfJobStatus(name, status) => {
                let mut conditions =
                    vec![json!({"type": "Created", "status": "True", "lastTransitionTime": at(0)})];
                conditions.push(
                    json!({"type": "Running", "status": "True", "lastTransitionTime": at(n)}),
                );
                if *status == "Succeeded" {
                    conditions.push(
                        json!({"type": "Succeeded", "status": "True", "lastTransitionTime": at(n)}),
                    );
                }
                let mut status_obj = json!({"conditions": conditions});
                if *status == "Succeeded" {
                    status_obj["completionTime"] = json!(at(n));
                }
                self.tfjobs
                    .patch_status(name, &patch, &Patch::Merge(json!({"status": status_obj})))
                    .await?;
            }
            Op::DeletePod(name) => {
                self.pods.delete(name, &DeleteParams::default()).await?;
            }
            Op::DeleteEvent(name) => {
                self.events.delete(name, &DeleteParams::default()).await?;
            }
            Op::DeleteTfJob(name) => {
                self.tfjobs.delete(name, &DeleteParams::default()).await?;
            }
            Op::DeleteBatchJob(name) => {
                self.jobs.delete(name, &DeleteParams::background()).await?;
            }
        }
        Ok(())
    }
}

/// A small pseudo-random generator (xorshift), seeded from the clock and
/// printed, so that a failing run can be repeated with `KUBESINK_TEST_SEED`.
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn from_env_or_clock() -> Self {
        let seed = std::env::var("KUBESINK_TEST_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_nanos() as u64)
                    .unwrap_or(1)
            })
            | 1;
        eprintln!("random points: KUBESINK_TEST_SEED={seed}");
        Self(seed)
    }

    /// A number in `0..n`.
    pub(crate) fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }
}

/// Starts a control plane with the KubeDL TFJob CRD installed.
pub(crate) async fn cluster_with_tfjobs() -> Result<cluster::Cluster> {
    let cluster = cluster::start().await?;
    cluster
        .install_crd(
            &guests::workspace_root().join("tests/fixtures/crds/training.kubedl.io_tfjobs.yaml"),
        )
        .await?;
    Ok(cluster)
}

/// Checks the reference rows hold what [`plan`]`(rounds)` leads to, so
/// that a comparison with them cannot pass on empty or partial tables.
pub(crate) fn check_plan_rows(rows: &[crate::live::Rows], rounds: usize) -> Result<()> {
    let (jobs, pods, events) = (&rows[0], &rows[1], &rows[2]);
    anyhow::ensure!(jobs.len() == 2 * rounds, "job rows: {}", jobs.len());
    anyhow::ensure!(pods.len() == 2 * rounds, "pod rows: {}", pods.len());
    let removed = |r: &crate::live::Rows| {
        r.values()
            .filter(|row| col(row, "is_in_etcd") == Some("0"))
            .count()
    };
    let deleting = |k: usize| (0..rounds).filter(|i| i % 3 == k).count();
    anyhow::ensure!(
        removed(jobs) == deleting(1) + deleting(2),
        "removed jobs: {}",
        removed(jobs)
    );
    anyhow::ensure!(
        removed(pods) == deleting(1) + deleting(2),
        "removed pods: {}",
        removed(pods)
    );
    let tf_events = events
        .values()
        .filter(|row| col(row, "reason") == Some("Started"))
        .collect::<Vec<_>>();
    anyhow::ensure!(tf_events.len() == rounds, "events: {}", tf_events.len());
    anyhow::ensure!(
        tf_events.iter().all(|row| col(row, "count") == Some("3")),
        "every event bumped to count 3"
    );
    let stopped = jobs
        .values()
        .filter(|row| col(row, "status") == Some("Stopped"))
        .count();
    // Deleted running batch Jobs are Stopped; deleted Succeeded TFJobs stay Succeeded.
    anyhow::ensure!(stopped == deleting(2), "Stopped jobs: {stopped}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_mariadb_sigkill_at_random_points_leaves_the_rows_of_an_uninterrupted_run()
-> Result<()> {
    let cluster = cluster_with_tfjobs().await?;
    let dir = tempfile::tempdir()?;
    let (want_db, got_db) = (
        mariadb::fresh_database("crash_want").await?,
        mariadb::fresh_database("crash_got").await?,
    );
    let kubeconfig = cluster.kubeconfig_path();
    let mut reference = run_kubedl("reference", kubeconfig, &want_db, &[], dir.path())?;
    let mut victim = run_kubedl("victim", kubeconfig, &got_db, &[], dir.path())?;
    reference
        .wait_for_count("listed; watching", 4, Duration::from_secs(120))
        .await?;
    victim
        .wait_for_count("listed; watching", 4, Duration::from_secs(120))
        .await?;

    let rounds = 9;
    let ops = plan(rounds);
    let mut rng = Rng::from_env_or_clock();
    // At least five kills at distinct random points; each restart follows
    // a random number (0-3) of changes later, so changes (deletions
    // among them) also happen while it is down.
    let mut kills = std::collections::BTreeSet::new();
    while kills.len() < 6 {
        kills.insert(2 + rng.below(ops.len() - 6));
    }
    eprintln!("killing before changes {kills:?} of {}", ops.len());
    let mut driver = Driver::new(cluster.client());
    let mut restart_at = None;
    let mut killed = 0;
    // Objects deleted while the victim is down (from the kill until its
    // restart has listed everything again). Their last changes before the
    // deletion may never have reached it (queued when it was killed, or
    // made while it was down), and the cluster has forgotten them once the
    // object is deleted: no watcher can recover them. Their rows are only
    // checked to be marked removed; every other row must be identical.
    let mut relaxed = crate::live::Relaxed::new();
    for (n, op) in ops.iter().enumerate() {
        if kills.contains(&n) {
            // Anywhere between two changes, often with a batch in flight.
            tokio::time::sleep(Duration::from_millis(rng.below(800) as u64)).await;
            victim.kill();
            killed += 1;
            restart_at = Some(n + rng.below(4));
        }
        if restart_at.is_some_and(|r| r <= n) {
            let listed = victim.log().matches("listed; watching").count();
            victim = run_kubedl("victim", kubeconfig, &got_db, &[], dir.path())?;
            // jobs, tfjobs, pods and events listed again.
            victim
                .wait_for_count("listed; watching", listed + 4, Duration::from_secs(120))
                .await?;
            restart_at = None;
        }
        if restart_at.is_some() && op.is_delete() {
            let (table, name) = op.object();
            relaxed.insert((table.to_owned(), name.to_owned()));
        }
        driver
            .apply(n, op)
            .await
            .with_context(|| format!("change {n}: {op:?}"))?;
        tokio::time::sleep(Duration::from_millis(60)).await;
    }
    if restart_at.is_some() {
        victim = run_kubedl("victim", kubeconfig, &got_db, &[], dir.path())?;
    }
    assert!(killed >= 5);
    eprintln!("objects deleted while the victim was down (compared for removal only): {relaxed:?}");

    let (want, got) = (want_db.connect().await?, got_db.connect().await?);
    let rows = wait_same_rows(&want, &got, &relaxed, 120)
        .await
        .with_context(|| format!("victim log:\n{}", victim.tail(30)))?;
    check_plan_rows(&rows, rounds)?;
    // Each restart's listing marked what was deleted while it was down.
    assert!(victim.running() && reference.running());
    want.close().await;
    got.close().await;
    drop((reference, victim));
    want_db.drop_database().await?;
    got_db.drop_database().await?;
    Ok(())
}
