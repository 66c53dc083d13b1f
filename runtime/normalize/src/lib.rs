//! Where a Kubernetes object becomes a kubesink record.
//!
//! [`record`] holds the record types (generated from the WIT); the rest of
//! the crate is pure functions from Kubernetes objects (as JSON) to records,
//! following KubeDL's conversion rules:
//!
//! - [`normalize`] dispatches on `apiVersion`/`kind`: batch/v1 `Job`
//!   ([`job::batch_job`]), the training kinds of [`Options::training_kinds`]
//!   ([`job::training_job`]), v1 `Pod` ([`pod::pod`]), v1 `Event` and
//!   events.k8s.io/v1 `Event` ([`event`]); anything else is `Ok(None)`.
//! - [`removed_at`] reads `metadata.deletionTimestamp`, and [`entry`] builds
//!   the [`Entry`] a sink receives for an applied or removed object.
//!
//! The rules each module applies where KubeDL and docs/reference.md are silent are
//! listed in that module's documentation. Errors ([`NormalizeError`]) name
//! the object (`Kind namespace/name`) and the field at fault.
//!
//! ```
//! use kubesink_normalize::{normalize, Options, record::Record};
//! let pod = serde_json::json!({
//!     "apiVersion": "v1", "kind": "Pod",
//!     "metadata": {"name": "p", "namespace": "ns", "uid": "u-1"},
//!     "status": {"phase": "Pending"}
//! });
//! let Some(Record::Pod(p)) = normalize(&pod, &Options::default()).unwrap() else { panic!() };
//! assert_eq!(p.status, "Pending");
//! ```

pub mod error;
pub mod event;
pub mod job;
pub mod meta;
pub mod options;
pub mod pod;
pub mod quantity;
pub mod record;
pub mod resources;
pub mod time;

#[cfg(test)]
mod proptests;

use serde_json::Value;

pub use error::{Doc, NormalizeError};
pub use options::{Options, TrainingKind, default_training_kinds};
use record::{Change, Entry, Record, Timestamp};

/// Turns a Kubernetes object into a record, or `Ok(None)` when its
/// `apiVersion`/`kind` is not one kubesink records.
///
/// Errors: the document is not a JSON object, lacks a string `apiVersion`
/// or `kind`, or a field the record needs is missing or malformed (the
/// error names the object and the field).
pub fn normalize(obj: &Value, opts: &Options) -> Result<Option<Record>, NormalizeError> {
    let Some(map) = obj.as_object() else {
        return Err(NormalizeError::NotAnObject {
            found: error::json_type(obj),
        });
    };
    let text = |field: &str| -> Result<&str, NormalizeError> {
        match map.get(field) {
            Some(Value::String(s)) => Ok(s),
            None | Some(Value::Null) => Err(NormalizeError::Missing {
                object: error::describe(obj),
                field: field.to_string(),
            }),
            Some(other) => Err(NormalizeError::Invalid {
                object: error::describe(obj),
                field: field.to_string(),
                reason: format!("expected a string, found a {}", error::json_type(other)),
            }),
        }
    };
    let api_version = text("apiVersion")?;
    let kind = text("kind")?;
    normalize_as(Doc::Value(obj), api_version, kind, opts)
}

/// [`normalize`] for an object given as JSON text (as a watch or a list
/// sent it) whose `apiVersion` and `kind` the caller knows: list items may
/// omit them. The typed kinds are decoded straight from the text, with no
/// `serde_json::Value` in between.
pub fn normalize_json(
    json: &str,
    api_version: &str,
    kind: &str,
    opts: &Options,
) -> Result<Option<Record>, NormalizeError> {
    normalize_as(Doc::Text { json, kind }, api_version, kind, opts)
}

fn normalize_as(
    obj: Doc<'_>,
    api_version: &str,
    kind: &str,
    opts: &Options,
) -> Result<Option<Record>, NormalizeError> {
    let record = match (api_version, kind) {
        ("batch/v1", "Job") => Record::Job(job::batch_job(obj, opts)?),
        ("v1", "Pod") => Record::Pod(pod::pod(obj, opts)?),
        ("v1", "Event") => Record::Event(event::core_event(obj, opts)?),
        ("events.k8s.io/v1", "Event") => Record::Event(event::events_event(obj, opts)?),
        _ => match opts.training_kind(api_version, kind) {
            Some(k) => {
                let mut value = obj.value()?.into_owned();
                if let Value::Object(m) = &mut value {
                    // List items may omit them; the record carries both.
                    m.entry("apiVersion")
                        .or_insert_with(|| Value::String(api_version.to_owned()));
                    m.entry("kind")
                        .or_insert_with(|| Value::String(kind.to_owned()));
                }
                Record::Job(job::training_job(&value, k, opts)?)
            }
            None => return Ok(None),
        },
    };
    Ok(Some(record))
}

/// When the object is being deleted: `metadata.deletionTimestamp`, if set
/// and readable. The caller builds `Change::Removed` from it, falling back
/// to the time it noticed the deletion.
pub fn removed_at(obj: &Value) -> Option<Timestamp> {
    obj.get("metadata")?
        .get("deletionTimestamp")?
        .as_str()
        .and_then(time::parse)
}

/// The change a sink receives for `obj`: `applied`, or `removed` at
/// [`removed_at`] (else `now`) when `removed` is set. `Ok(None)` for kinds
/// kubesink does not record.
pub fn entry(
    obj: &Value,
    opts: &Options,
    removed: bool,
    now: Timestamp,
) -> Result<Option<Entry>, NormalizeError> {
    let Some(record) = normalize(obj, opts)? else {
        return Ok(None);
    };
    Ok(Some(if removed {
        Change::removed(record, removed_at(obj).unwrap_or(now))
    } else {
        Change::applied(record)
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn opts() -> Options {
        Options::default()
    }

    #[test]
    fn dispatches_on_api_version_and_kind() {
        let base = |api: &str, kind: &str| {
            json!({"apiVersion": api, "kind": kind, "metadata": {"uid": "u", "name": "n"},
                   "involvedObject": {}})
        };
        assert!(matches!(
            normalize(&base("batch/v1", "Job"), &opts()),
            Ok(Some(Record::Job(_)))
        ));
        assert!(matches!(
            normalize(&base("v1", "Pod"), &opts()),
            Ok(Some(Record::Pod(_)))
        ));
        assert!(matches!(
            normalize(&base("v1", "Event"), &opts()),
            Ok(Some(Record::Event(_)))
        ));
        assert!(matches!(
            normalize(&base("events.k8s.io/v1", "Event"), &opts()),
            Ok(Some(Record::Event(_)))
        ));
        for (api, kind) in [
            ("training.kubedl.io/v1alpha1", "TFJob"),
            ("training.kubedl.io/v1alpha1", "PyTorchJob"),
            ("training.kubedl.io/v1alpha1", "XGBoostJob"),
            ("training.kubedl.io/v1alpha1", "XDLJob"),
            ("training.kubedl.io/v1alpha1", "MarsJob"),
            ("inference.kubedl.io/v1alpha1", "ElasticBatchJob"),
            ("kubeflow.org/v1", "TFJob"),
            ("kubeflow.org/v1", "PyTorchJob"),
            ("kubeflow.org/v1", "MPIJob"),
            ("kubeflow.org/v1", "XGBoostJob"),
        ] {
            match normalize(&base(api, kind), &opts()) {
                Ok(Some(Record::Job(j))) => {
                    assert_eq!((j.api_version.as_str(), j.kind.as_str()), (api, kind));
                }
                other => panic!("{api} {kind}: {other:?}"),
            }
        }
        for (api, kind) in [
            ("v1", "ConfigMap"),
            ("apps/v1", "Deployment"),
            ("batch/v1", "CronJob"),
        ] {
            assert_eq!(
                normalize(&base(api, kind), &opts()),
                Ok(None),
                "{api} {kind}"
            );
        }
    }

    #[test]
    fn no_training_kinds_means_training_jobs_are_ignored() {
        let o = Options {
            region: None,
            training_kinds: vec![],
        };
        let tf = json!({"apiVersion": "training.kubedl.io/v1alpha1", "kind": "TFJob", "metadata": {"uid": "u"}});
        assert_eq!(normalize(&tf, &o), Ok(None));
    }

    #[test]
    fn rejects_non_objects_and_missing_kind() {
        assert_eq!(
            normalize(&json!([1, 2]), &opts()),
            Err(NormalizeError::NotAnObject { found: "array" })
        );
        let err = normalize(
            &json!({"apiVersion": "v1", "metadata": {"name": "x"}}),
            &opts(),
        )
        .expect_err("no kind");
        assert_eq!(err.field(), Some("kind"));
        let err = normalize(&json!({"apiVersion": 1, "kind": "Pod"}), &opts())
            .expect_err("numeric apiVersion");
        assert_eq!(err.field(), Some("apiVersion"));
        assert!(
            err.to_string()
                .contains("expected a string, found a number"),
            "{err}"
        );
    }

    /// Malformed objects never panic: each gives an error naming the field.
    #[test]
    fn malformed_objects_give_errors_naming_the_field() {
        let cases = [
            (
                json!({"apiVersion": "v1", "kind": "Pod", "metadata": "nope"}),
                "metadata",
            ),
            (
                json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"uid": "u", "labels": ["a"]}}),
                "metadata.labels",
            ),
            (
                json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"uid": "u"}, "spec": {"containers": "all"}}),
                "spec.containers",
            ),
            (
                json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"uid": "u"}, "status": {"phase": 3}}),
                "status.phase",
            ),
            (
                json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"uid": "u", "creationTimestamp": "last tuesday"}}),
                "metadata.creationTimestamp",
            ),
            (
                json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"uid": 17}}),
                "metadata.uid",
            ),
            (
                json!({"apiVersion": "v1", "kind": "Pod", "metadata": {}}),
                "metadata.uid",
            ),
            (
                json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"uid": "u"}, "status": {"conditions": {}}}),
                "status.conditions",
            ),
            (
                json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"uid": "u"}, "spec": {"template": {"spec": {"containers": [{"name": "a", "resources": {"limits": {"cpu": "x"}}}]}}}}),
                "spec.template.spec.containers[0].resources.limits.cpu",
            ),
            (
                json!({"apiVersion": "training.kubedl.io/v1alpha1", "kind": "TFJob", "metadata": {"uid": "u"}, "spec": {"tfReplicaSpecs": []}}),
                "spec.tfReplicaSpecs",
            ),
            (
                json!({"apiVersion": "training.kubedl.io/v1alpha1", "kind": "TFJob", "metadata": {"uid": "u"}, "status": {"conditions": [{"type": 5}]}}),
                "status.conditions[0].type",
            ),
            (
                json!({"apiVersion": "training.kubedl.io/v1alpha1", "kind": "TFJob", "metadata": {"uid": "u"}, "status": "Running"}),
                "status",
            ),
            (
                json!({"apiVersion": "v1", "kind": "Event", "metadata": {"uid": "u"}, "involvedObject": {}, "lastTimestamp": 12}),
                "lastTimestamp",
            ),
            (
                json!({"apiVersion": "v1", "kind": "Event", "metadata": {"uid": "u"}, "involvedObject": {}, "series": {"count": "x"}}),
                "series.count",
            ),
            (
                json!({"apiVersion": "events.k8s.io/v1", "kind": "Event", "metadata": {"uid": "u"}, "regarding": "pod"}),
                "regarding",
            ),
            (
                json!({"apiVersion": "events.k8s.io/v1", "kind": "Event", "metadata": {"uid": "u"}, "deprecatedCount": 1.5}),
                "deprecatedCount",
            ),
        ];
        for (obj, field) in cases {
            let result = std::panic::catch_unwind(|| normalize(&obj, &opts()));
            let Ok(result) = result else {
                panic!("panicked on {obj}")
            };
            let err = result.expect_err(&obj.to_string());
            assert_eq!(err.field(), Some(field), "{obj}: {err}");
        }
    }

    #[test]
    fn removed_at_reads_deletion_timestamp() {
        let o = json!({"metadata": {"deletionTimestamp": "2024-05-01T12:00:00Z"}});
        assert_eq!(removed_at(&o), time::parse("2024-05-01T12:00:00Z"));
        assert_eq!(removed_at(&json!({"metadata": {}})), None);
        assert_eq!(
            removed_at(&json!({"metadata": {"deletionTimestamp": "bad"}})),
            None
        );
        assert_eq!(removed_at(&json!(null)), None);
    }

    #[test]
    fn entry_flags_removal() {
        let now = Timestamp {
            seconds: 99,
            nanos: 1,
        };
        let mut pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"uid": "u"}});
        let e = entry(&pod, &opts(), false, now).expect("ok").expect("some");
        assert!(matches!(e, Change::Applied(Record::Pod(_))), "{e:?}");
        assert_eq!(e.removed_at(), None);
        let e = entry(&pod, &opts(), true, now).expect("ok").expect("some");
        assert!(matches!(&e, Change::Removed(r) if r.at == now), "{e:?}");
        assert_eq!((e.uid(), e.kind()), ("u", record::RecordKind::Pod));
        pod["metadata"]["deletionTimestamp"] = json!("2024-05-01T12:00:00Z");
        let e = entry(&pod, &opts(), true, now).expect("ok").expect("some");
        assert_eq!(e.removed_at(), time::parse("2024-05-01T12:00:00Z"));
        assert!(e.record().is_some());
        let cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"uid": "u"}});
        assert_eq!(entry(&cm, &opts(), true, now), Ok(None));
    }
}
