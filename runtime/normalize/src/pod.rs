//! Where a pod becomes a [`Pod`] record (KubeDL's `ConvertPodToDMOPod`).
//!
//! Rules:
//!
//! - **job-uid / job-kind**: the controller ownerReference (`controller:
//!   true`); empty when there is none.
//! - **replica-type**: label `replica-type` (KubeDL), else
//!   `training.kubeflow.org/replica-type` (Kubeflow), else `worker` for a
//!   pod controlled by a batch/v1 Job (the lower-cased key of the job's
//!   `Worker` entry in `resources`, as KubeDL labels pods with the
//!   lower-cased replica type), else empty.
//! - **main container**: the container named like the owning training
//!   kind's default container (`tensorflow`, `pytorch`, ...), else the first.
//!   Its image is the record's image; its status gives the times below.
//! - **status**: `status.phase`; `Unknown` when there are no container
//!   statuses and the phase is not `Pending`, or when there is no phase.
//! - **started-at**: the main container's `state.running.startedAt`, else
//!   `state.terminated.startedAt`; for a `Running`, `Succeeded` or `Failed`
//!   pod without either, its creation time (as KubeDL does).
//! - **finished-at** (`Succeeded`/`Failed` only): the main container's
//!   `state.terminated.finishedAt`, else `lastState.terminated.finishedAt`,
//!   else `modified` (KubeDL uses "now"; a pure function cannot).
//! - **remark** (`Failed` only): `Reason: ..\nExitCode: ..\nMessage: ..` from
//!   the main container's terminated state (or last terminated state); with
//!   no container information, from `status.reason`/`status.message` with an
//!   empty exit code.
//! - **modified**: the latest of creation, the conditions'
//!   lastTransitionTime, and every (init) container's running/terminated
//!   state times (current and last).
//! - **region**: `--region`, else the pod's own tenancy annotation.

use k8s_openapi::api::core::v1::{Container, ContainerState, ContainerStatus, Pod as K8sPod};

use crate::error::{Doc, NormalizeError};
use crate::meta::{Tenancy, meta};
use crate::options::{Options, group_of};
use crate::record::{Pod, Timestamp};
use crate::resources::{pod_resources, to_json};
use crate::time;

/// KubeDL's replica-type label.
pub const KUBEDL_REPLICA_TYPE_LABEL: &str = "replica-type";
/// Kubeflow's replica-type label.
pub const KUBEFLOW_REPLICA_TYPE_LABEL: &str = "training.kubeflow.org/replica-type";
/// Replica type given to pods of batch/v1 Jobs.
pub const BATCH_POD_REPLICA_TYPE: &str = "worker";

/// Normalizes a v1 Pod.
pub fn pod<'a>(obj: impl Into<Doc<'a>>, opts: &Options) -> Result<Pod, NormalizeError> {
    let obj = obj.into();
    let mut pod: K8sPod = obj.de()?;
    let meta = meta(obj, &mut pod.metadata)?;
    let owner = pod
        .metadata
        .owner_references
        .iter()
        .flatten()
        .find(|o| o.controller == Some(true));
    let (job_uid, job_kind) =
        owner.map_or_else(Default::default, |o| (o.uid.clone(), o.kind.clone()));

    // The labels have moved into the record's metadata (sorted by key).
    let label = |k: &str| {
        meta.labels
            .binary_search_by(|(key, _)| key.as_str().cmp(k))
            .ok()
            .map(|i| meta.labels[i].1.clone())
            .filter(|v| !v.is_empty())
    };
    let replica_type = label(KUBEDL_REPLICA_TYPE_LABEL)
        .or_else(|| label(KUBEFLOW_REPLICA_TYPE_LABEL))
        .or_else(|| {
            owner
                .filter(|o| o.kind == "Job" && group_of(&o.api_version) == "batch")
                .map(|_| BATCH_POD_REPLICA_TYPE.to_string())
        })
        .unwrap_or_default();

    let default_container = owner
        .and_then(|o| opts.training_kind(&o.api_version, &o.kind))
        .map(|k| k.default_container.as_str());
    let spec = pod.spec.as_ref();
    let containers: &[Container] = spec.map_or(&[], |s| &s.containers);
    let main = default_container
        .and_then(|d| containers.iter().find(|c| c.name == d))
        .or_else(|| containers.first());
    let image = main.and_then(|c| c.image.clone()).unwrap_or_default();
    let resources = match spec {
        Some(s) => to_json(&pod_resources(obj, "spec", s)?),
        None => "{}".to_string(),
    };

    let status = pod.status.clone().unwrap_or_default();
    let statuses = status.container_statuses.as_deref().unwrap_or_default();
    let main_status: Option<&ContainerStatus> = main
        .and_then(|m| statuses.iter().find(|s| s.name == m.name))
        .or_else(|| statuses.first());

    let phase = status.phase.clone().unwrap_or_default();
    let status_text = if phase.is_empty() || (statuses.is_empty() && phase != "Pending") {
        "Unknown".to_string()
    } else {
        phase.clone()
    };

    // modified: the latest transition we can see.
    let mut times: Vec<Timestamp> = vec![meta.created];
    for c in status.conditions.iter().flatten() {
        times.extend(c.last_transition_time.as_ref().map(time::from_time));
    }
    let all_statuses = statuses
        .iter()
        .chain(status.init_container_statuses.iter().flatten());
    for cs in all_statuses {
        for state in [cs.state.as_ref(), cs.last_state.as_ref()]
            .into_iter()
            .flatten()
        {
            times.extend(state_times(state));
        }
    }
    let modified = time::latest(times).unwrap_or(meta.created);

    let state = main_status.and_then(|s| s.state.as_ref());
    let last_terminated = main_status
        .and_then(|s| s.last_state.as_ref())
        .and_then(|s| s.terminated.as_ref());
    let terminated = state.and_then(|s| s.terminated.as_ref());
    let started_at = state
        .and_then(|s| s.running.as_ref())
        .and_then(|r| r.started_at.as_ref())
        .or_else(|| terminated.and_then(|t| t.started_at.as_ref()))
        .map(time::from_time)
        .or_else(|| {
            matches!(status_text.as_str(), "Running" | "Succeeded" | "Failed")
                .then_some(meta.created)
        });
    let finished = matches!(status_text.as_str(), "Succeeded" | "Failed");
    let finished_at = finished.then(|| {
        terminated
            .or(last_terminated)
            .and_then(|t| t.finished_at.as_ref())
            .map_or(modified, time::from_time)
    });
    let remark = if status_text == "Failed" {
        match terminated.or(last_terminated) {
            Some(t) => format!(
                "Reason: {}\nExitCode: {}\nMessage: {}",
                t.reason.as_deref().unwrap_or_default(),
                t.exit_code,
                t.message.as_deref().unwrap_or_default()
            ),
            None => format!(
                "Reason: {}\nExitCode: \nMessage: {}",
                status.reason.as_deref().unwrap_or_default(),
                status.message.as_deref().unwrap_or_default()
            ),
        }
    } else {
        String::new()
    };

    Ok(Pod {
        meta,
        job_uid,
        job_kind,
        replica_type,
        status: status_text,
        image,
        resources,
        host_ip: status.host_ip.unwrap_or_default(),
        pod_ip: status.pod_ip.unwrap_or_default(),
        region: Tenancy::of(&pod.metadata).region(opts),
        modified,
        started_at,
        finished_at,
        remark,
    })
}

/// Times at which a container entered or left a state.
fn state_times(state: &ContainerState) -> impl Iterator<Item = Timestamp> + '_ {
    let running = state.running.as_ref().and_then(|r| r.started_at.as_ref());
    let term = state.terminated.as_ref();
    let term_start = term.and_then(|t| t.started_at.as_ref());
    let term_end = term.and_then(|t| t.finished_at.as_ref());
    [running, term_start, term_end]
        .into_iter()
        .flatten()
        .map(time::from_time)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;
    use serde_json::json;

    fn ts(s: &str) -> Timestamp {
        time::parse(s).expect("timestamp")
    }

    fn tf_pod(status: Value) -> Value {
        json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "mnist-worker-0", "namespace": "ml", "uid": "p-1", "resourceVersion": "20",
                "creationTimestamp": "2024-05-01T10:00:00Z",
                "labels": {"replica-type": "worker", "replica-index": "0", "job-name": "mnist"},
                "ownerReferences": [
                    {"apiVersion": "v1", "kind": "ConfigMap", "name": "x", "uid": "cm-1"},
                    {"apiVersion": "training.kubedl.io/v1alpha1", "kind": "TFJob", "name": "mnist",
                     "uid": "j-1", "controller": true, "blockOwnerDeletion": true}]},
            "spec": {"containers": [
                {"name": "sidecar", "image": "busybox:1.36"},
                {"name": "tensorflow", "image": "tf:2.15", "resources": {"requests": {"cpu": "2"}}}
            ]},
            "status": status
        })
    }

    fn n(v: &Value) -> Pod {
        pod(v, &Options::default()).expect("pod")
    }

    #[test]
    fn owner_replica_type_and_default_container_image() {
        let p = n(&tf_pod(json!({"phase": "Pending"})));
        assert_eq!(p.job_uid, "j-1");
        assert_eq!(p.job_kind, "TFJob");
        assert_eq!(p.replica_type, "worker");
        assert_eq!(p.image, "tf:2.15");
        assert_eq!(p.status, "Pending");
        assert_eq!(p.started_at, None);
        assert_eq!(p.finished_at, None);
        assert_eq!(p.resources, r#"{"requests":{"cpu":"2"}}"#);
    }

    #[test]
    fn first_container_image_without_default() {
        let mut v = tf_pod(json!({}));
        v["spec"]["containers"][1]["name"] = json!("main");
        assert_eq!(n(&v).image, "busybox:1.36");
    }

    #[test]
    fn kubeflow_label_and_batch_default() {
        let mut v = tf_pod(json!({}));
        v["metadata"]["labels"] = json!({"training.kubeflow.org/replica-type": "master"});
        assert_eq!(n(&v).replica_type, "master");
        v["metadata"]["labels"] = json!({"job-name": "pi"});
        v["metadata"]["ownerReferences"] = json!([{"apiVersion": "batch/v1", "kind": "Job", "name": "pi", "uid": "b-1", "controller": true}]);
        let p = n(&v);
        assert_eq!(p.replica_type, "worker");
        assert_eq!(p.job_kind, "Job");
        assert_eq!(p.image, "busybox:1.36");
    }

    #[test]
    fn no_controller_means_no_job() {
        let mut v = tf_pod(json!({}));
        v["metadata"]["ownerReferences"][1]["controller"] = json!(false);
        v["metadata"]["labels"] = json!({});
        let p = n(&v);
        assert_eq!(
            (
                p.job_uid.as_str(),
                p.job_kind.as_str(),
                p.replica_type.as_str()
            ),
            ("", "", "")
        );
    }

    #[test]
    fn unknown_without_container_statuses_unless_pending() {
        assert_eq!(n(&tf_pod(json!({"phase": "Running"}))).status, "Unknown");
        assert_eq!(n(&tf_pod(json!({}))).status, "Unknown");
        let mut v = tf_pod(json!({}));
        v.as_object_mut().expect("object").remove("status");
        assert_eq!(n(&v).status, "Unknown");
    }

    #[test]
    fn running_pod_times_from_main_container() {
        let p = n(&tf_pod(json!({
            "phase": "Running", "hostIP": "10.0.0.5", "podIP": "172.16.0.9",
            "conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": "2024-05-01T10:00:40Z"}],
            "containerStatuses": [
                {"name": "sidecar", "ready": true, "restartCount": 0, "image": "busybox", "imageID": "",
                 "state": {"running": {"startedAt": "2024-05-01T10:00:10Z"}}},
                {"name": "tensorflow", "ready": true, "restartCount": 0, "image": "tf", "imageID": "",
                 "state": {"running": {"startedAt": "2024-05-01T10:00:30Z"}}}
            ]
        })));
        assert_eq!(p.status, "Running");
        assert_eq!(p.started_at, Some(ts("2024-05-01T10:00:30Z")));
        assert_eq!(p.finished_at, None);
        assert_eq!(p.modified, ts("2024-05-01T10:00:40Z"));
        assert_eq!(
            (p.host_ip.as_str(), p.pod_ip.as_str()),
            ("10.0.0.5", "172.16.0.9")
        );
        assert_eq!(p.remark, "");
    }

    #[test]
    fn running_pod_without_start_uses_creation() {
        let p = n(&tf_pod(json!({"phase": "Running", "containerStatuses": [
            {"name": "tensorflow", "ready": false, "restartCount": 0, "image": "tf", "imageID": "",
             "state": {"waiting": {"reason": "ContainerCreating"}}}]})));
        assert_eq!(p.started_at, Some(ts("2024-05-01T10:00:00Z")));
    }

    #[test]
    fn failed_pod_remark_from_terminated_main_container() {
        let p = n(&tf_pod(json!({"phase": "Failed", "containerStatuses": [
            {"name": "tensorflow", "ready": false, "restartCount": 0, "image": "tf", "imageID": "",
             "state": {"terminated": {"exitCode": 137, "reason": "OOMKilled", "message": "内存不足",
                "startedAt": "2024-05-01T10:00:30Z", "finishedAt": "2024-05-01T10:20:00Z"}}}]})));
        assert_eq!(p.status, "Failed");
        assert_eq!(
            p.remark,
            "Reason: OOMKilled\nExitCode: 137\nMessage: 内存不足"
        );
        assert_eq!(p.started_at, Some(ts("2024-05-01T10:00:30Z")));
        assert_eq!(p.finished_at, Some(ts("2024-05-01T10:20:00Z")));
        assert_eq!(p.modified, ts("2024-05-01T10:20:00Z"));
    }

    #[test]
    fn failed_pod_without_container_info_uses_pod_reason() {
        let p = n(&tf_pod(json!({"phase": "Failed", "reason": "Evicted",
            "message": "The node was low on resource: memory.", "containerStatuses": [
            {"name": "tensorflow", "ready": false, "restartCount": 0, "image": "tf", "imageID": "",
             "state": {"waiting": {}}}]})));
        assert_eq!(
            p.remark,
            "Reason: Evicted\nExitCode: \nMessage: The node was low on resource: memory."
        );
        // No terminated state: finished falls back to modified, started to creation.
        assert_eq!(p.finished_at, Some(p.modified));
        assert_eq!(p.started_at, Some(ts("2024-05-01T10:00:00Z")));
    }

    #[test]
    fn succeeded_pod_has_no_remark() {
        let p = n(&tf_pod(json!({"phase": "Succeeded", "containerStatuses": [
            {"name": "tensorflow", "ready": false, "restartCount": 0, "image": "tf", "imageID": "",
             "state": {"terminated": {"exitCode": 0, "reason": "Completed",
                "startedAt": "2024-05-01T10:00:30Z", "finishedAt": "2024-05-01T11:00:00Z"}}}]})));
        assert_eq!(p.status, "Succeeded");
        assert_eq!(p.remark, "");
        assert_eq!(p.finished_at, Some(ts("2024-05-01T11:00:00Z")));
    }

    #[test]
    fn init_container_and_last_state_times_count_for_modified() {
        let p = n(&tf_pod(json!({"phase": "Running",
            "initContainerStatuses": [{"name": "init", "ready": true, "restartCount": 0, "image": "i", "imageID": "",
                "state": {"terminated": {"exitCode": 0, "finishedAt": "2024-05-01T10:00:20Z"}}}],
            "containerStatuses": [{"name": "tensorflow", "ready": true, "restartCount": 1, "image": "tf", "imageID": "",
                "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                "lastState": {"terminated": {"exitCode": 1, "startedAt": "2024-05-01T10:00:30Z",
                    "finishedAt": "2024-05-01T10:05:00Z"}}}]})));
        assert_eq!(p.modified, ts("2024-05-01T10:05:00Z"));
        assert_eq!(p.status, "Running");
    }

    #[test]
    fn pod_region_flag_wins() {
        let opts = Options::default().with_region(Some("cn-hz".into()));
        assert_eq!(pod(&tf_pod(json!({})), &opts).expect("pod").region, "cn-hz");
        assert_eq!(n(&tf_pod(json!({}))).region, "");
    }

    #[test]
    fn wrong_types_name_the_field() {
        let mut v = tf_pod(json!({}));
        v["spec"]["containers"][1]["image"] = json!(42);
        let err = pod(&v, &Options::default()).expect_err("bad image");
        assert_eq!(err.field(), Some("spec.containers[1].image"));
        assert!(
            err.to_string().starts_with("Pod ml/mnist-worker-0: "),
            "{err}"
        );
        let v = tf_pod(json!({"containerStatuses": {"name": "x"}}));
        let err = pod(&v, &Options::default()).expect_err("bad statuses");
        assert_eq!(err.field(), Some("status.containerStatuses"));
    }
}
