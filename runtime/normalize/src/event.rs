//! Where an event becomes an [`Event`] record. core/v1 and events.k8s.io/v1
//! events are the same stored object seen through two APIs; both give one
//! record per uid, updated in place as the event repeats.
//!
//! Rules (docs/reference.md "Events: core/v1 and events.k8s.io/v1"):
//!
//! - **count**: `series.count`, else `count` (`deprecatedCount`), at least 1.
//! - **first-seen**: `eventTime`, else `firstTimestamp`
//!   (`deprecatedFirstTimestamp`), else creation.
//! - **last-seen**: `series.lastObservedTime`, else `lastTimestamp`
//!   (`deprecatedLastTimestamp`), else first-seen.
//! - **source**: `component/host` from `source` (`deprecatedSource`); when
//!   that is empty, `reportingComponent/reportingInstance`
//!   (`reportingController/reportingInstance`). events.k8s.io/v1 prefers
//!   the reporting pair, core/v1 the source. No trailing `/` when the host
//!   is empty.
//! - **involved**: `involvedObject` (`regarding`); **message**: `message`
//!   (`note`).
//! - **region**: `--region`, else the event's own tenancy annotation.

use k8s_openapi::api::core::v1::{Event as CoreEvent, EventSource, ObjectReference};
use k8s_openapi::api::events::v1::Event as EventsEvent;

use crate::error::{Doc, NormalizeError};
use crate::meta::{Tenancy, meta};
use crate::options::Options;
use crate::record::{Event, ObjectRef, Timestamp};
use crate::time;

/// Normalizes a core/v1 Event.
pub fn core_event<'a>(obj: impl Into<Doc<'a>>, opts: &Options) -> Result<Event, NormalizeError> {
    let obj = obj.into();
    let mut e: CoreEvent = obj.de()?;
    let meta = meta(obj, &mut e.metadata)?;
    let first_seen = e
        .event_time
        .as_ref()
        .map(time::from_micro)
        .or_else(|| e.first_timestamp.as_ref().map(time::from_time))
        .unwrap_or(meta.created);
    let last_seen = e
        .series
        .as_ref()
        .and_then(|s| s.last_observed_time.as_ref())
        .map(time::from_micro)
        .or_else(|| e.last_timestamp.as_ref().map(time::from_time))
        .unwrap_or(first_seen);
    let count = e.series.as_ref().and_then(|s| s.count).or(e.count);
    let source = source_of(e.source.as_ref())
        .or_else(|| {
            join_source(
                e.reporting_component.as_deref(),
                e.reporting_instance.as_deref(),
            )
        })
        .unwrap_or_default();
    Ok(Event {
        involved: object_ref(Some(&e.involved_object)),
        event_type: e.type_.unwrap_or_default(),
        reason: e.reason.unwrap_or_default(),
        message: e.message.unwrap_or_default(),
        source,
        count: clamp_count(count),
        first_seen,
        last_seen,
        region: Tenancy::of(&e.metadata).region(opts),
        meta,
    })
}

/// Normalizes an events.k8s.io/v1 Event.
pub fn events_event<'a>(obj: impl Into<Doc<'a>>, opts: &Options) -> Result<Event, NormalizeError> {
    let obj = obj.into();
    let mut e: EventsEvent = obj.de()?;
    let meta = meta(obj, &mut e.metadata)?;
    let first_seen = e
        .event_time
        .as_ref()
        .map(time::from_micro)
        .or_else(|| e.deprecated_first_timestamp.as_ref().map(time::from_time))
        .unwrap_or(meta.created);
    let last_seen: Timestamp = e
        .series
        .as_ref()
        .map(|s| time::from_micro(&s.last_observed_time))
        .or_else(|| e.deprecated_last_timestamp.as_ref().map(time::from_time))
        .unwrap_or(first_seen);
    let count = e.series.as_ref().map(|s| s.count).or(e.deprecated_count);
    let source = join_source(
        e.reporting_controller.as_deref(),
        e.reporting_instance.as_deref(),
    )
    .or_else(|| source_of(e.deprecated_source.as_ref()))
    .unwrap_or_default();
    Ok(Event {
        involved: object_ref(e.regarding.as_ref()),
        event_type: e.type_.unwrap_or_default(),
        reason: e.reason.unwrap_or_default(),
        message: e.note.unwrap_or_default(),
        source,
        count: clamp_count(count),
        first_seen,
        last_seen,
        region: Tenancy::of(&e.metadata).region(opts),
        meta,
    })
}

/// At least 1; absent, zero or negative counts are 1.
fn clamp_count(count: Option<i32>) -> u32 {
    count
        .and_then(|c| u32::try_from(c).ok())
        .unwrap_or(1)
        .max(1)
}

fn source_of(s: Option<&EventSource>) -> Option<String> {
    s.and_then(|s| join_source(s.component.as_deref(), s.host.as_deref()))
}

/// `component/host`, `component` when host is empty; `None` when both are.
fn join_source(component: Option<&str>, host: Option<&str>) -> Option<String> {
    let c = component.unwrap_or_default();
    let h = host.unwrap_or_default();
    match (c.is_empty(), h.is_empty()) {
        (true, true) => None,
        (_, true) => Some(c.to_string()),
        _ => Some(format!("{c}/{h}")),
    }
}

fn object_ref(r: Option<&ObjectReference>) -> ObjectRef {
    let s = |v: Option<&String>| v.cloned().unwrap_or_default();
    ObjectRef {
        api_version: s(r.and_then(|r| r.api_version.as_ref())),
        kind: s(r.and_then(|r| r.kind.as_ref())),
        namespace: s(r.and_then(|r| r.namespace.as_ref())),
        name: s(r.and_then(|r| r.name.as_ref())),
        uid: s(r.and_then(|r| r.uid.as_ref())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;
    use serde_json::json;

    fn ts(s: &str) -> Timestamp {
        time::parse(s).expect("timestamp")
    }

    /// `base` with the top-level fields of `extra` added (replacing).
    fn merged(mut base: Value, extra: Value) -> Value {
        if let (Some(o), Value::Object(extra)) = (base.as_object_mut(), extra) {
            o.extend(extra);
        }
        base
    }

    fn core(extra: Value) -> Value {
        let v = json!({
            "apiVersion": "v1", "kind": "Event",
            "metadata": {"name": "mnist-worker-0.17c1", "namespace": "ml", "uid": "e-1",
                         "resourceVersion": "30", "creationTimestamp": "2024-05-01T10:00:05Z"},
            "involvedObject": {"apiVersion": "v1", "kind": "Pod", "namespace": "ml",
                               "name": "mnist-worker-0", "uid": "p-1", "fieldPath": "spec.containers{tensorflow}"},
            "type": "Warning", "reason": "BackOff", "message": "Back-off restarting failed container"
        });
        merged(v, extra)
    }

    fn c(v: &Value) -> Event {
        core_event(v, &Options::default()).expect("event")
    }

    #[test]
    fn core_event_counts_and_times() {
        let e = c(&core(
            json!({"count": 5, "firstTimestamp": "2024-05-01T10:00:05Z",
            "lastTimestamp": "2024-05-01T10:03:00Z", "source": {"component": "kubelet", "host": "node-1"}}),
        ));
        assert_eq!(e.count, 5);
        assert_eq!(e.first_seen, ts("2024-05-01T10:00:05Z"));
        assert_eq!(e.last_seen, ts("2024-05-01T10:03:00Z"));
        assert_eq!(e.source, "kubelet/node-1");
        assert_eq!(e.involved.kind, "Pod");
        assert_eq!(e.involved.uid, "p-1");
        assert_eq!(
            (e.event_type.as_str(), e.reason.as_str()),
            ("Warning", "BackOff")
        );
        assert_eq!(e.message, "Back-off restarting failed container");
        assert_eq!(e.meta.uid, "e-1");
    }

    #[test]
    fn core_event_series_wins_and_event_time_is_first() {
        let e = c(&core(
            json!({"count": 2, "eventTime": "2024-05-01T10:00:04.123456Z",
            "firstTimestamp": "2024-05-01T10:00:05Z", "lastTimestamp": "2024-05-01T10:01:00Z",
            "series": {"count": 9, "lastObservedTime": "2024-05-01T10:09:00.500000Z"}}),
        ));
        assert_eq!(e.count, 9);
        assert_eq!(e.first_seen, ts("2024-05-01T10:00:04.123456Z"));
        assert_eq!(e.last_seen, ts("2024-05-01T10:09:00.5Z"));
    }

    #[test]
    fn core_event_with_only_series() {
        let e = c(&core(
            json!({"series": {"count": 3, "lastObservedTime": "2024-05-01T10:02:00.000000Z"}}),
        ));
        assert_eq!(e.count, 3);
        // No eventTime/firstTimestamp: creation.
        assert_eq!(e.first_seen, ts("2024-05-01T10:00:05Z"));
        assert_eq!(e.last_seen, ts("2024-05-01T10:02:00Z"));
    }

    #[test]
    fn core_event_without_times_or_count() {
        let e = c(&core(json!({"count": 0})));
        assert_eq!(e.count, 1);
        assert_eq!(e.first_seen, ts("2024-05-01T10:00:05Z"));
        assert_eq!(e.last_seen, e.first_seen);
        assert_eq!(c(&core(json!({"count": -4}))).count, 1);
    }

    #[test]
    fn core_event_source_fallbacks() {
        assert_eq!(
            c(&core(json!({"source": {"component": "kubelet"}}))).source,
            "kubelet"
        );
        assert_eq!(
            c(&core(
                json!({"source": {"component": "kubelet", "host": ""}})
            ))
            .source,
            "kubelet"
        );
        assert_eq!(
            c(&core(json!({"source": {}, "reportingComponent": "kubedl", "reportingInstance": "kubedl-0"}))).source,
            "kubedl/kubedl-0"
        );
        assert_eq!(c(&core(json!({}))).source, "");
    }

    #[test]
    fn core_event_non_ascii_text() {
        let e = c(&core(
            json!({"message": "作业 mnist 已创建 ✓", "metadata": {"name": "训练", "uid": "e-9"}}),
        ));
        assert_eq!(e.message, "作业 mnist 已创建 ✓");
        assert_eq!(e.meta.name, "训练");
    }

    fn events_v1(extra: Value) -> Value {
        let v = json!({
            "apiVersion": "events.k8s.io/v1", "kind": "Event",
            "metadata": {"name": "mnist.17c2", "namespace": "ml", "uid": "e-2",
                         "resourceVersion": "31", "creationTimestamp": "2024-05-01T10:00:06Z"},
            "regarding": {"apiVersion": "training.kubedl.io/v1alpha1", "kind": "TFJob",
                          "namespace": "ml", "name": "mnist", "uid": "j-1"},
            "type": "Normal", "reason": "SuccessfulCreatePod", "note": "Created pod: mnist-ps-0"
        });
        merged(v, extra)
    }

    fn ev(v: &Value) -> Event {
        events_event(v, &Options::default()).expect("event")
    }

    #[test]
    fn events_v1_new_style() {
        let e = ev(&events_v1(
            json!({"eventTime": "2024-05-01T10:00:06.250000Z",
            "reportingController": "kubedl", "reportingInstance": "kubedl-7f9c",
            "series": {"count": 4, "lastObservedTime": "2024-05-01T10:04:00.000000Z"}}),
        ));
        assert_eq!(e.involved.kind, "TFJob");
        assert_eq!(e.message, "Created pod: mnist-ps-0");
        assert_eq!(e.source, "kubedl/kubedl-7f9c");
        assert_eq!(e.count, 4);
        assert_eq!(e.first_seen, ts("2024-05-01T10:00:06.25Z"));
        assert_eq!(e.last_seen, ts("2024-05-01T10:04:00Z"));
    }

    #[test]
    fn events_v1_deprecated_fields() {
        let e = ev(&events_v1(
            json!({"eventTime": null, "reportingController": "",
            "deprecatedSource": {"component": "default-scheduler"},
            "deprecatedCount": 7, "deprecatedFirstTimestamp": "2024-05-01T10:00:01Z",
            "deprecatedLastTimestamp": "2024-05-01T10:06:00Z"}),
        ));
        assert_eq!(e.source, "default-scheduler");
        assert_eq!(e.count, 7);
        assert_eq!(e.first_seen, ts("2024-05-01T10:00:01Z"));
        assert_eq!(e.last_seen, ts("2024-05-01T10:06:00Z"));
    }

    #[test]
    fn events_v1_without_regarding() {
        let mut v = events_v1(json!({}));
        v.as_object_mut().expect("object").remove("regarding");
        let e = ev(&v);
        assert_eq!(e.involved.kind, "");
        assert_eq!(e.count, 1);
        assert_eq!(e.first_seen, ts("2024-05-01T10:00:06Z"));
    }

    #[test]
    fn wrong_types_name_the_field() {
        let err = core_event(&core(json!({"count": "many"})), &Options::default())
            .expect_err("bad count");
        assert_eq!(err.field(), Some("count"));
        assert!(
            err.to_string()
                .starts_with("Event ml/mnist-worker-0.17c1: "),
            "{err}"
        );
        let err = events_event(
            &events_v1(json!({"series": {"count": 2}})),
            &Options::default(),
        )
        .expect_err("series without lastObservedTime");
        assert_eq!(err.field(), Some("series.lastObservedTime"));
        let mut v = core(json!({}));
        v.as_object_mut().expect("object").remove("involvedObject");
        // k8s-openapi defaults a missing involvedObject: an empty reference.
        let e = core_event(&v, &Options::default()).expect("no involvedObject");
        assert_eq!(e.involved.name, "");
        v["involvedObject"] = json!({"name": ["x"]});
        let err = core_event(&v, &Options::default()).expect_err("bad involvedObject");
        assert_eq!(err.field(), Some("involvedObject.name"));
    }
}
