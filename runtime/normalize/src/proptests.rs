//! Property tests of normalization over hostile input: arbitrary JSON
//! documents, and real Job/Pod/Event/TFJob objects (from the KubeDL
//! fixture, plus a batch/v1 Job) with random fields replaced by random
//! JSON. Normalization must never panic; an error must name the object
//! (`Kind namespace/name`, as [`crate::error::describe`] gives it); a
//! record it returns must carry the object's uid and name.

use proptest::prelude::*;
use proptest::sample::Index;
use serde_json::{Map, Value, json};

use crate::record::Record;
use crate::{NormalizeError, Options, entry, error, normalize, normalize_json, removed_at};

/// The `items` of the KubeDL fixture (TFJob, Pods, core and events.k8s.io
/// Events), one per apiVersion/kind/phase shape, plus a batch/v1 Job.
fn samples() -> Vec<Value> {
    let list: Value = serde_json::from_str(include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/fixtures/kubedl/list.json"
    )))
    .expect("the fixture list.json is JSON");
    let mut out: Vec<Value> = list["items"]
        .as_array()
        .expect("list.json has items")
        .iter()
        .take(12)
        .cloned()
        .collect();
    // Every pod of the fixture (failed and running shapes differ).
    out.extend(
        list["items"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|o| o["kind"] == "Pod")
            .cloned(),
    );
    out.push(json!({
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {
            "name": "pi", "namespace": "default", "uid": "0b7c7f4e-job",
            "resourceVersion": "4242", "creationTimestamp": "2026-03-02T08:00:00Z",
            "labels": {"app": "pi"},
            "annotations": {"kubedl.io/tenancy": "{\"tenant\":\"t\",\"user\":\"u\",\"region\":\"r\"}"}
        },
        "spec": {
            "parallelism": 2,
            "template": {"spec": {
                "initContainers": [{"name": "init", "image": "busybox",
                    "resources": {"requests": {"cpu": "2", "memory": "1Gi"}}}],
                "containers": [{"name": "pi", "image": "perl:5.34",
                    "resources": {"limits": {"cpu": "500m", "memory": "128Mi"},
                                  "requests": {"cpu": "250m", "nvidia.com/gpu": "1"}}}]
            }}
        },
        "status": {
            "startTime": "2026-03-02T08:00:05Z", "active": 1,
            "conditions": [{"type": "Failed", "status": "True",
                "lastTransitionTime": "2026-03-02T08:10:00Z", "message": "BackoffLimitExceeded"}]
        }
    }));
    out
}

/// Strings that look like what Kubernetes puts in fields, and some that
/// only pretend to: timestamps, quantities, numbers as text, JSON as text,
/// and arbitrary Unicode.
fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "\\PC{0,40}",
        "[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\\.[0-9]{1,12})?(Z|[+-][0-9]{2}:[0-9]{2})?",
        "-?[0-9]{0,40}(\\.[0-9]{0,20})?(m|k|Ki|Mi|Gi|Ti|Pi|Ei|E|P|e-?[0-9]{1,4})?",
        "\\{\"(tenant|user|idc|region)\":(\"[^\"]{0,8}\"|[0-9]+|null|\\{\\})\\}",
        Just(String::new()),
        Just("True".to_string()),
        Just("Failed".to_string()),
        Just("Running".to_string()),
    ]
}

/// Arbitrary JSON, a few levels deep.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        text().prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(prop_oneof![text(), "[a-zA-Z]{1,16}"], inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

/// Field names normalization reads, so that random objects hit its code
/// paths rather than only the "missing field" ones.
fn known_key() -> impl Strategy<Value = String> {
    prop::sample::select(vec![
        "metadata",
        "name",
        "namespace",
        "uid",
        "resourceVersion",
        "labels",
        "annotations",
        "creationTimestamp",
        "deletionTimestamp",
        "ownerReferences",
        "controller",
        "kind",
        "spec",
        "status",
        "conditions",
        "type",
        "lastTransitionTime",
        "completionTime",
        "startTime",
        "active",
        "parallelism",
        "template",
        "containers",
        "initContainers",
        "resources",
        "limits",
        "requests",
        "cpu",
        "memory",
        "image",
        "phase",
        "hostIP",
        "podIP",
        "containerStatuses",
        "state",
        "lastState",
        "running",
        "terminated",
        "startedAt",
        "finishedAt",
        "exitCode",
        "reason",
        "message",
        "involvedObject",
        "regarding",
        "source",
        "component",
        "host",
        "count",
        "series",
        "lastObservedTime",
        "eventTime",
        "firstTimestamp",
        "lastTimestamp",
        "type",
        "reportingController",
        "reportingInstance",
        "deprecatedCount",
        "tfReplicaSpecs",
        "replicas",
        "Worker",
        "PS",
        "replica-type",
    ])
    .prop_map(str::to_string)
}

/// JSON objects whose keys are mostly ones normalization reads.
fn shaped_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        text().prop_map(Value::String),
    ];
    leaf.prop_recursive(5, 64, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(known_key(), inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

/// The JSON pointers of every value inside `v` (not the root).
fn pointers(v: &Value, prefix: &str, out: &mut Vec<String>) {
    let escape = |k: &str| k.replace('~', "~0").replace('/', "~1");
    match v {
        Value::Object(m) => {
            for (k, child) in m {
                let p = format!("{prefix}/{}", escape(k));
                out.push(p.clone());
                pointers(child, &p, out);
            }
        }
        Value::Array(a) => {
            for (i, child) in a.iter().enumerate() {
                let p = format!("{prefix}/{i}");
                out.push(p.clone());
                pointers(child, &p, out);
            }
        }
        _ => {}
    }
}

/// Normalizes `obj` (also as a removed entry) and checks the contract.
fn check(obj: &Value) -> Result<(), TestCaseError> {
    let result = normalize(obj, &Options::default());
    let _ = removed_at(obj);
    let now = crate::record::Timestamp {
        seconds: 0,
        nanos: 0,
    };
    let _ = entry(obj, &Options::default(), true, now);
    check_text(obj, &result)?;
    match result {
        Ok(None) => {}
        Ok(Some(record)) => {
            let meta = match &record {
                Record::Job(j) => &j.meta,
                Record::Pod(p) => &p.meta,
                Record::Event(e) => &e.meta,
            };
            prop_assert!(!meta.uid.is_empty(), "a record has a uid: {record:?}");
            prop_assert_eq!(
                Some(meta.uid.as_str()),
                obj.pointer("/metadata/uid").and_then(Value::as_str)
            );
            if let Some(name) = obj.pointer("/metadata/name").and_then(Value::as_str) {
                prop_assert_eq!(meta.name.as_str(), name);
            }
            if let Record::Event(e) = &record {
                prop_assert!(e.count >= 1, "count is at least 1: {}", e.count);
            }
        }
        Err(err @ NormalizeError::NotAnObject { .. }) => {
            prop_assert!(!obj.is_object(), "{err} for an object");
        }
        Err(err) => {
            let object = error::describe(obj);
            let message = err.to_string();
            prop_assert!(
                message.starts_with(&object),
                "the error `{message}` names the object `{object}`"
            );
            prop_assert!(err.field().is_some_and(|f| !f.is_empty()), "{message}");
        }
    }
    Ok(())
}

/// The text path (a watched object's JSON, decoded straight into its typed
/// form) gives what the value path gives: the same record, or an error
/// naming the same object and field; also when the text omits `apiVersion`
/// and `kind`, as list items do.
fn check_text(
    obj: &Value,
    by_value: &Result<Option<Record>, NormalizeError>,
) -> Result<(), TestCaseError> {
    let (Some(api), Some(kind)) = (
        obj.get("apiVersion").and_then(Value::as_str),
        obj.get("kind").and_then(Value::as_str),
    ) else {
        return Ok(());
    };
    let mut bare = obj.clone();
    if let Some(m) = bare.as_object_mut() {
        m.remove("apiVersion");
        m.remove("kind");
    }
    for text in [obj.to_string(), bare.to_string()] {
        let by_text = normalize_json(&text, api, kind, &Options::default());
        match (by_value, &by_text) {
            (Ok(v), Ok(t)) => prop_assert_eq!(v, t, "{}", text),
            (Err(v), Err(t)) => {
                prop_assert_eq!(v.field(), t.field(), "{} / {}", v, t);
                let object = error::describe(obj);
                prop_assert!(
                    t.to_string().starts_with(&object),
                    "`{}` names `{}`",
                    t,
                    object
                );
            }
            _ => prop_assert!(
                false,
                "by value {:?}, by text {:?} for {}",
                by_value,
                by_text,
                text
            ),
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// Any JSON document at all.
    #[test]
    fn arbitrary_json_never_panics(doc in json_value()) {
        check(&doc)?;
    }

    /// Objects of a recorded kind with arbitrary bodies.
    #[test]
    fn recorded_kinds_with_arbitrary_bodies_never_panic(
        (api, kind) in prop::sample::select(vec![
            ("batch/v1", "Job"), ("v1", "Pod"), ("v1", "Event"),
            ("events.k8s.io/v1", "Event"), ("training.kubedl.io/v1alpha1", "TFJob"),
            ("kubeflow.org/v1", "PyTorchJob"),
        ]),
        body in prop::collection::btree_map(known_key(), shaped_value(), 0..8),
        uid in prop::option::of(text()),
    ) {
        let mut obj: Map<String, Value> = body.into_iter().collect();
        obj.insert("apiVersion".into(), api.into());
        obj.insert("kind".into(), kind.into());
        if let Some(uid) = uid {
            let meta = obj.entry("metadata").or_insert_with(|| json!({}));
            if let Some(m) = meta.as_object_mut() {
                m.insert("uid".into(), uid.into());
            }
        }
        check(&Value::Object(obj))?;
    }

    /// Real objects with up to four random fields replaced (or removed).
    #[test]
    fn real_objects_with_fields_replaced_never_panic(
        which in any::<Index>(),
        edits in edits(),
    ) {
        check(&mutate(which, edits))?;
    }
}

/// Up to four edits: where (an index into the object's pointers) and what
/// (a new value, or `None` to remove the field).
fn edits() -> impl Strategy<Value = Vec<(Index, Option<Value>)>> {
    prop::collection::vec((any::<Index>(), prop::option::of(json_value())), 1..5)
}

/// Sample `which` with `edits` applied.
fn mutate(which: Index, edits: Vec<(Index, Option<Value>)>) -> Value {
    let samples = samples();
    let mut obj = which.get(&samples).clone();
    {
        for (at, replacement) in edits {
            let mut ptrs = Vec::new();
            pointers(&obj, "", &mut ptrs);
            if ptrs.is_empty() {
                break;
            }
            let ptr = at.get(&ptrs).clone();
            match replacement {
                Some(v) => {
                    if let Some(slot) = obj.pointer_mut(&ptr) {
                        *slot = v;
                    }
                }
                None => {
                    let (parent, key) = ptr.rsplit_once('/').unwrap_or(("", ""));
                    let key = key.replace("~1", "/").replace("~0", "~");
                    match obj.pointer_mut(parent) {
                        Some(Value::Object(m)) => {
                            m.remove(&key);
                        }
                        Some(Value::Array(a)) => {
                            if let Ok(i) = key.parse::<usize>()
                                && i < a.len()
                            {
                                a.remove(i);
                            }
                        }
                        _ => {}
                    }
                }
            }
        }
    }
    obj
}

/// The mutation test is only worth something if mutated objects still
/// normalize often, and fail often: count both over a fixed run.
#[test]
fn mutated_objects_both_normalize_and_fail() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};
    let mut runner = TestRunner::new_with_rng(
        Config::default(),
        TestRng::deterministic_rng(RngAlgorithm::ChaCha),
    );
    let strategy = (any::<Index>(), edits());
    let (mut records, mut errors) = (0, 0);
    for _ in 0..400 {
        let (which, edits) = strategy.new_tree(&mut runner).expect("strategy").current();
        match normalize(&mutate(which, edits), &Options::default()) {
            Ok(Some(_)) => records += 1,
            Ok(None) => {}
            Err(_) => errors += 1,
        }
    }
    assert!(records > 40, "{records} of 400 still normalize");
    assert!(errors > 40, "{errors} of 400 are rejected with an error");
}

#[test]
fn every_sample_normalizes_unchanged() {
    for obj in samples() {
        let record = normalize(&obj, &Options::default());
        assert!(
            matches!(record, Ok(Some(_))),
            "{}: {record:?}",
            error::describe(&obj)
        );
    }
}
