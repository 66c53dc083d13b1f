//! Where a job becomes a [`Job`] record: batch/v1 `Job` (typed, through
//! k8s-openapi) and training jobs such as KubeDL's `TFJob` (read as dynamic
//! objects: only metadata, the replica specs and the status conditions are
//! needed).
//!
//! Rules (KubeDL's `ConvertJobToDMOJob`, docs/reference.md "KubeDL conversion rules"):
//!
//! - **status**, training jobs: `Created` without conditions, else the type
//!   of the last condition (KubeDL appends the newest condition last).
//! - **status**, batch/v1: the last condition whose status is `True` among
//!   `Complete` (→ `Succeeded`), `Failed` (→ `Failed`) and `Suspended`
//!   (→ `Suspended`); without one, `Running` when `status.active > 0` or
//!   `status.startTime` is set, else `Created`. (`SuccessCriteriaMet` and
//!   `FailureTarget` are steps towards `Complete`/`Failed` and are skipped.)
//! - **modified**: the time of the condition that gave the status
//!   (lastTransitionTime, else lastUpdateTime/lastProbeTime); for a batch
//!   job `Running` without such a condition, `status.startTime`; else
//!   creation.
//! - **running-at**: the `Running` condition's lastTransitionTime (training
//!   jobs); `status.startTime` (batch/v1).
//! - **finished-at**: `status.completionTime`, else, when the status is
//!   `Succeeded`/`Failed`, that condition's time.
//! - **remark**: a training job's is what KubeDL v0.5.0's
//!   `ConvertJobToDMOJob` writes: `EnableTensorBoard` when it is annotated
//!   `kubedl.io/tensorboard-config`, else empty (NULL in the table; the
//!   failure's reason is in its events). A batch/v1 job, which KubeDL does
//!   not persist, gets the message of a `Failed` condition whose status is
//!   `True`.
//! - **resources**: replica type → `{"resources", "replicas"}`; replicas
//!   default to 1 (as the operators' defaulting does). A batch/v1 job has one
//!   replica type, `Worker`, whose replicas are `spec.parallelism`
//!   (default 1) and whose resources come from the pod template.
//! - **tenant/owner/region**: from `kubedl.io/tenancy` (see [`crate::meta`]).

use std::collections::BTreeMap;

use k8s_openapi::api::batch::v1::Job as BatchJob;
use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use serde_json::Value;

use crate::error::{Doc, NormalizeError, de};
use crate::meta::{Tenancy, meta};
use crate::options::{Options, TrainingKind};
use crate::record::{Job, Timestamp};
use crate::resources::{ReplicaResources, pod_resources, to_json};
use crate::time;

/// Replica type of a batch/v1 job's pods in `resources`.
pub const BATCH_REPLICA_TYPE: &str = "Worker";

/// A job condition as training operators (KubeDL, Kubeflow) write it.
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(rename_all = "camelCase", default)]
struct Condition {
    #[serde(rename = "type")]
    type_: String,
    status: String,
    message: Option<String>,
    last_transition_time: Option<Time>,
    last_update_time: Option<Time>,
}

impl Condition {
    fn time(&self) -> Option<Timestamp> {
        self.last_transition_time
            .as_ref()
            .or(self.last_update_time.as_ref())
            .map(time::from_time)
    }
}

/// The parts of a training job's status used here.
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(rename_all = "camelCase", default)]
struct TrainingStatus {
    conditions: Option<Vec<Condition>>,
    completion_time: Option<Time>,
}

/// One replica spec of a training job.
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(default)]
struct ReplicaSpec {
    replicas: Option<i32>,
    template: Option<PodTemplateSpec>,
}

/// Normalizes a training job (`kind` names its replica specs field).
pub fn training_job(
    obj: &Value,
    kind: &TrainingKind,
    opts: &Options,
) -> Result<Job, NormalizeError> {
    let null = Value::Null;
    let metadata: Option<ObjectMeta> = de(obj, "metadata", obj.get("metadata").unwrap_or(&null))?;
    let mut metadata = metadata.unwrap_or_default();
    let meta = meta(Doc::Value(obj), &mut metadata)?;
    let status: Option<TrainingStatus> = de(obj, "status", obj.get("status").unwrap_or(&null))?;
    let status = status.unwrap_or_default();
    let specs_path = format!("spec.{}", kind.replica_specs);
    let specs_value = obj
        .get("spec")
        .and_then(|s| s.get(&kind.replica_specs))
        .unwrap_or(&null);
    let specs: Option<BTreeMap<String, Option<ReplicaSpec>>> = de(obj, &specs_path, specs_value)?;

    let mut resources = BTreeMap::new();
    for (rtype, spec) in specs.iter().flatten() {
        let spec = spec.clone().unwrap_or_default();
        let pod_res = match spec.template.as_ref().and_then(|t| t.spec.as_ref()) {
            Some(pod_spec) => pod_resources(
                Doc::Value(obj),
                &format!("{specs_path}.{rtype}.template.spec"),
                pod_spec,
            )?,
            None => Default::default(),
        };
        resources.insert(
            rtype.clone(),
            ReplicaResources {
                resources: pod_res,
                replicas: spec.replicas.unwrap_or(1),
            },
        );
    }

    let conditions = status.conditions.unwrap_or_default();
    let last = conditions.last();
    let status_text = last.map_or_else(|| "Created".to_string(), |c| c.type_.clone());
    let modified = last.and_then(Condition::time).unwrap_or(meta.created);
    let running_at = conditions
        .iter()
        .rev()
        .find(|c| c.type_ == "Running")
        .and_then(|c| c.last_transition_time.as_ref().map(time::from_time));
    let finished_at = status
        .completion_time
        .as_ref()
        .map(time::from_time)
        .or_else(|| {
            last.filter(|c| c.type_ == "Succeeded" || c.type_ == "Failed")
                .and_then(Condition::time)
        });
    let remark = if metadata
        .annotations
        .as_ref()
        .is_some_and(|a| a.contains_key(TENSORBOARD_ANNOTATION))
    {
        REMARK_TENSORBOARD.to_owned()
    } else {
        String::new()
    };
    let tenancy = Tenancy::of(&metadata);
    Ok(Job {
        meta,
        api_version: kind.api_version.clone(),
        kind: kind.kind.clone(),
        status: status_text,
        resources: to_json(&resources),
        region: tenancy.region(opts),
        tenant: tenancy.tenant,
        owner: tenancy.user,
        modified,
        running_at,
        finished_at,
        remark,
    })
}

/// The annotation that enables KubeDL's TensorBoard for a job.
const TENSORBOARD_ANNOTATION: &str = "kubedl.io/tensorboard-config";
/// KubeDL's remark for a job with [`TENSORBOARD_ANNOTATION`].
const REMARK_TENSORBOARD: &str = "EnableTensorBoard";

/// Normalizes a batch/v1 Job.
pub fn batch_job<'a>(obj: impl Into<Doc<'a>>, opts: &Options) -> Result<Job, NormalizeError> {
    let obj = obj.into();
    let mut job: BatchJob = obj.de()?;
    let meta = meta(obj, &mut job.metadata)?;
    let spec = job.spec.as_ref();
    let status = job.status.clone().unwrap_or_default();

    let pod_res = match spec.and_then(|s| s.template.spec.as_ref()) {
        Some(pod_spec) => pod_resources(obj, "spec.template.spec", pod_spec)?,
        None => Default::default(),
    };
    let mut resources = BTreeMap::new();
    resources.insert(
        BATCH_REPLICA_TYPE.to_string(),
        ReplicaResources {
            resources: pod_res,
            replicas: spec.and_then(|s| s.parallelism).unwrap_or(1),
        },
    );

    let conditions = status.conditions.unwrap_or_default();
    let deciding = conditions.iter().rev().find(|c| {
        c.status == "True" && matches!(c.type_.as_str(), "Complete" | "Failed" | "Suspended")
    });
    let cond_time = |c: &k8s_openapi::api::batch::v1::JobCondition| {
        c.last_transition_time
            .as_ref()
            .or(c.last_probe_time.as_ref())
            .map(time::from_time)
    };
    let start = status.start_time.as_ref().map(time::from_time);
    let (status_text, modified) = match deciding {
        Some(c) => {
            let s = if c.type_ == "Complete" {
                "Succeeded"
            } else {
                c.type_.as_str()
            };
            (s.to_string(), cond_time(c).unwrap_or(meta.created))
        }
        None if status.active.unwrap_or(0) > 0 || start.is_some() => {
            ("Running".to_string(), start.unwrap_or(meta.created))
        }
        None => ("Created".to_string(), meta.created),
    };
    let finished_at = status
        .completion_time
        .as_ref()
        .map(time::from_time)
        .or_else(|| {
            deciding
                .filter(|c| c.type_ == "Complete" || c.type_ == "Failed")
                .and_then(cond_time)
        });
    let remark = conditions
        .iter()
        .rev()
        .find(|c| c.type_ == "Failed" && c.status == "True")
        .and_then(|c| c.message.clone())
        .unwrap_or_default();
    let tenancy = Tenancy::of(&job.metadata);
    Ok(Job {
        meta,
        api_version: "batch/v1".to_string(),
        kind: "Job".to_string(),
        status: status_text,
        resources: to_json(&resources),
        region: tenancy.region(opts),
        tenant: tenancy.tenant,
        owner: tenancy.user,
        modified,
        running_at: start,
        finished_at,
        remark,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn tf() -> TrainingKind {
        TrainingKind::new(
            "training.kubedl.io/v1alpha1",
            "TFJob",
            "tfReplicaSpecs",
            "tensorflow",
        )
    }

    fn tfjob(status: Value) -> Value {
        json!({
            "apiVersion": "training.kubedl.io/v1alpha1", "kind": "TFJob",
            "metadata": {"name": "mnist", "namespace": "ml", "uid": "j-1", "resourceVersion": "10",
                         "creationTimestamp": "2024-05-01T10:00:00Z",
                         "annotations": {"kubedl.io/tenancy": r#"{"tenant":"t","user":"u","region":"cn-hz"}"#}},
            "spec": {"tfReplicaSpecs": {
                "PS": {"replicas": 1, "template": {"spec": {"containers": [
                    {"name": "tensorflow", "image": "tf:2", "resources": {"requests": {"cpu": "1", "memory": "2Gi"}}}]}}},
                "Worker": {"replicas": 2, "template": {"spec": {"containers": [
                    {"name": "tensorflow", "image": "tf:2", "resources": {"limits": {"nvidia.com/gpu": "1"}}}]}}}
            }},
            "status": status
        })
    }

    fn ts(s: &str) -> Timestamp {
        time::parse(s).expect("timestamp")
    }

    fn cond(t: &str, status: &str, at: &str) -> Value {
        json!({"type": t, "status": status, "lastTransitionTime": at, "lastUpdateTime": at, "message": format!("{t} msg")})
    }

    #[test]
    fn training_job_without_conditions_is_created() {
        let j = training_job(&tfjob(json!({})), &tf(), &Options::default()).expect("job");
        assert_eq!(j.status, "Created");
        assert_eq!(j.modified, ts("2024-05-01T10:00:00Z"));
        assert_eq!(j.running_at, None);
        assert_eq!(j.finished_at, None);
        assert_eq!(j.kind, "TFJob");
        assert_eq!(j.api_version, "training.kubedl.io/v1alpha1");
    }

    #[test]
    fn training_job_missing_status_is_created() {
        let mut o = tfjob(json!({}));
        o.as_object_mut().expect("object").remove("status");
        let j = training_job(&o, &tf(), &Options::default()).expect("job");
        assert_eq!(j.status, "Created");
    }

    #[test]
    fn training_job_status_is_last_condition() {
        let o = tfjob(json!({"conditions": [
            cond("Created", "True", "2024-05-01T10:00:01Z"),
            cond("Running", "True", "2024-05-01T10:01:00Z"),
        ]}));
        let j = training_job(&o, &tf(), &Options::default()).expect("job");
        assert_eq!(j.status, "Running");
        assert_eq!(j.modified, ts("2024-05-01T10:01:00Z"));
        assert_eq!(j.running_at, Some(ts("2024-05-01T10:01:00Z")));
        assert_eq!(j.finished_at, None);
        assert_eq!(j.remark, "");
    }

    #[test]
    fn training_job_succeeded_uses_completion_time() {
        let o = tfjob(json!({"conditions": [
            cond("Created", "True", "2024-05-01T10:00:01Z"),
            cond("Running", "False", "2024-05-01T10:01:00Z"),
            cond("Succeeded", "True", "2024-05-01T11:00:00Z"),
        ], "completionTime": "2024-05-01T11:00:01Z"}));
        let j = training_job(&o, &tf(), &Options::default()).expect("job");
        assert_eq!(j.status, "Succeeded");
        assert_eq!(j.running_at, Some(ts("2024-05-01T10:01:00Z")));
        assert_eq!(j.finished_at, Some(ts("2024-05-01T11:00:01Z")));
        assert_eq!(j.modified, ts("2024-05-01T11:00:00Z"));
    }

    #[test]
    fn training_job_with_tensorboard_has_kubedls_remark() {
        let mut o = tfjob(json!({"conditions": [
            cond("Created", "True", "2024-05-01T10:00:01Z"),
            cond("Failed", "True", "2024-05-01T10:30:00Z"),
        ]}));
        o["metadata"]["annotations"] = json!({"kubedl.io/tensorboard-config": "{}"});
        let j = training_job(&o, &tf(), &Options::default()).expect("job");
        assert_eq!(j.remark, "EnableTensorBoard");
    }

    #[test]
    fn training_job_failed_without_completion_time_uses_condition() {
        let o = tfjob(json!({"conditions": [
            cond("Created", "True", "2024-05-01T10:00:01Z"),
            cond("Failed", "True", "2024-05-01T10:30:00Z"),
        ]}));
        let j = training_job(&o, &tf(), &Options::default()).expect("job");
        assert_eq!(j.status, "Failed");
        assert_eq!(j.finished_at, Some(ts("2024-05-01T10:30:00Z")));
        assert_eq!(j.remark, "", "KubeDL leaves a failed job's remark NULL");
    }

    #[test]
    fn training_job_resources_per_replica_type() {
        let j = training_job(&tfjob(json!({})), &tf(), &Options::default()).expect("job");
        assert_eq!(
            j.resources,
            r#"{"PS":{"resources":{"requests":{"cpu":"1","memory":"2Gi"}},"replicas":1},"Worker":{"resources":{"limits":{"nvidia.com/gpu":"1"}},"replicas":2}}"#
        );
    }

    #[test]
    fn training_job_tenancy_and_region() {
        let j = training_job(&tfjob(json!({})), &tf(), &Options::default()).expect("job");
        assert_eq!(
            (j.tenant.as_str(), j.owner.as_str(), j.region.as_str()),
            ("t", "u", "cn-hz")
        );
        let opts = Options::default().with_region(Some("cn-sh".into()));
        let j = training_job(&tfjob(json!({})), &tf(), &opts).expect("job");
        assert_eq!(j.region, "cn-sh");
    }

    #[test]
    fn training_job_replicas_default_to_one() {
        let o = json!({"apiVersion": "training.kubedl.io/v1alpha1", "kind": "TFJob",
            "metadata": {"uid": "x"}, "spec": {"tfReplicaSpecs": {"Chief": {"template": {}}, "Eval": null}}});
        let j = training_job(&o, &tf(), &Options::default()).expect("job");
        assert_eq!(
            j.resources,
            r#"{"Chief":{"resources":{},"replicas":1},"Eval":{"resources":{},"replicas":1}}"#
        );
    }

    #[test]
    fn training_job_wrong_types_name_the_field() {
        let mut o = tfjob(json!({}));
        o["spec"]["tfReplicaSpecs"]["Worker"]["replicas"] = json!("two");
        let err = training_job(&o, &tf(), &Options::default()).expect_err("bad replicas");
        assert_eq!(err.field(), Some("spec.tfReplicaSpecs.Worker.replicas"));
        assert!(err.to_string().starts_with("TFJob ml/mnist: "), "{err}");

        let o = tfjob(json!({"conditions": [{"type": "Running", "lastTransitionTime": "soon"}]}));
        let err = training_job(&o, &tf(), &Options::default()).expect_err("bad time");
        assert_eq!(err.field(), Some("status.conditions[0].lastTransitionTime"));
    }

    fn batch(status: Value) -> Value {
        json!({
            "apiVersion": "batch/v1", "kind": "Job",
            "metadata": {"name": "pi", "namespace": "default", "uid": "b-1", "resourceVersion": "7",
                         "creationTimestamp": "2024-05-01T10:00:00Z"},
            "spec": {"parallelism": 2, "completions": 4, "template": {"spec": {"restartPolicy": "Never", "containers": [
                {"name": "pi", "image": "perl:5.34", "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}}}]}}},
            "status": status
        })
    }

    #[test]
    fn batch_job_new_is_created() {
        let j = batch_job(&batch(json!({})), &Options::default()).expect("job");
        assert_eq!(j.status, "Created");
        assert_eq!(j.modified, ts("2024-05-01T10:00:00Z"));
        assert_eq!(
            j.resources,
            r#"{"Worker":{"resources":{"requests":{"cpu":"100m","memory":"64Mi"}},"replicas":2}}"#
        );
        assert_eq!(
            (j.api_version.as_str(), j.kind.as_str()),
            ("batch/v1", "Job")
        );
    }

    #[test]
    fn batch_job_active_is_running() {
        let j = batch_job(
            &batch(json!({"active": 2, "startTime": "2024-05-01T10:00:02Z"})),
            &Options::default(),
        )
        .expect("job");
        assert_eq!(j.status, "Running");
        assert_eq!(j.running_at, Some(ts("2024-05-01T10:00:02Z")));
        assert_eq!(j.modified, ts("2024-05-01T10:00:02Z"));
    }

    #[test]
    fn batch_job_complete_is_succeeded() {
        let j = batch_job(
            &batch(json!({"startTime": "2024-05-01T10:00:02Z", "completionTime": "2024-05-01T10:01:00Z",
                "succeeded": 4, "conditions": [
                    cond("SuccessCriteriaMet", "True", "2024-05-01T10:00:59Z"),
                    cond("Complete", "True", "2024-05-01T10:01:00Z")]})),
            &Options::default(),
        )
        .expect("job");
        assert_eq!(j.status, "Succeeded");
        assert_eq!(j.finished_at, Some(ts("2024-05-01T10:01:00Z")));
        assert_eq!(j.modified, ts("2024-05-01T10:01:00Z"));
    }

    #[test]
    fn batch_job_failed_has_remark_and_finish() {
        let j = batch_job(
            &batch(json!({"startTime": "2024-05-01T10:00:02Z", "conditions": [
                cond("FailureTarget", "True", "2024-05-01T10:05:00Z"),
                cond("Failed", "True", "2024-05-01T10:05:01Z")]})),
            &Options::default(),
        )
        .expect("job");
        assert_eq!(j.status, "Failed");
        assert_eq!(j.remark, "Failed msg");
        assert_eq!(j.finished_at, Some(ts("2024-05-01T10:05:01Z")));
    }

    #[test]
    fn batch_job_suspended_then_resumed() {
        let o = batch(json!({"conditions": [cond("Suspended", "True", "2024-05-01T10:00:05Z")]}));
        assert_eq!(
            batch_job(&o, &Options::default()).expect("job").status,
            "Suspended"
        );
        let o = batch(json!({"active": 1, "startTime": "2024-05-01T10:10:00Z",
            "conditions": [cond("Suspended", "False", "2024-05-01T10:10:00Z")]}));
        assert_eq!(
            batch_job(&o, &Options::default()).expect("job").status,
            "Running"
        );
    }

    #[test]
    fn batch_job_wrong_types_name_the_field() {
        let mut o = batch(json!({}));
        o["spec"]["parallelism"] = json!("many");
        let err = batch_job(&o, &Options::default()).expect_err("bad parallelism");
        assert_eq!(err.field(), Some("spec.parallelism"));
        let mut o = batch(json!({}));
        o["status"] = json!({"active": [1]});
        let err = batch_job(&o, &Options::default()).expect_err("bad active");
        assert_eq!(err.field(), Some("status.active"));
        let mut o = batch(json!({}));
        o["spec"]["template"]["spec"]["containers"][0]["resources"]["requests"]["cpu"] =
            json!("1 core");
        let err = batch_job(&o, &Options::default()).expect_err("bad cpu");
        assert_eq!(
            err.field(),
            Some("spec.template.spec.containers[0].resources.requests.cpu")
        );
    }
}
