//! Records as JSON (what templates and the `json` format see) and the
//! fields routes match on.
//!
//! The JSON of a change is the line the Python webhook sink sends
//! (`sinks/webhook-py`): `{"kind", "change", "removed_at", "record"}`, the
//! record with every WIT field named with `_` for `-`, timestamps as RFC 3339
//! UTC text, `labels` an object, `option` fields the value or `null`.

use serde_json::{Map, Value, json};

use crate::bindings::kubesink::sink::types::{
    Change, Event, Job, Meta, ObjectRef, Pod, Record, Timestamp,
};

/// `(year, month, day)` of a day count since 1970-01-01 (proleptic
/// Gregorian; H. Hinnant's `civil_from_days`).
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// RFC 3339 in UTC: `YYYY-MM-DDTHH:MM:SS[.nnnnnnnnn]Z`.
pub fn rfc3339(seconds: i64, nanos: u32) -> String {
    let (y, m, d) = civil_from_days(seconds.div_euclid(86_400));
    let s = seconds.rem_euclid(86_400);
    let mut out = format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}",
        s / 3600,
        s / 60 % 60,
        s % 60
    );
    if nanos != 0 {
        out.push_str(&format!(".{nanos:09}"));
    }
    out.push('Z');
    out
}

fn ts(t: &Timestamp) -> Value {
    Value::String(rfc3339(t.seconds, t.nanos))
}

fn opt_ts(t: &Option<Timestamp>) -> Value {
    t.as_ref().map_or(Value::Null, ts)
}

fn meta(m: &Meta) -> Value {
    let labels: Map<String, Value> = m
        .labels
        .iter()
        .map(|(k, v)| (k.clone(), Value::String(v.clone())))
        .collect();
    json!({
        "uid": m.uid,
        "name": m.name,
        "namespace": m.namespace,
        "resource_version": m.resource_version,
        "resource_version_num": m.resource_version_num,
        "labels": labels,
        "created": ts(&m.created),
    })
}

fn object_ref(o: &ObjectRef) -> Value {
    json!({
        "api_version": o.api_version,
        "kind": o.kind,
        "namespace": o.namespace,
        "name": o.name,
        "uid": o.uid,
    })
}

fn job(j: &Job) -> Value {
    json!({
        "meta": meta(&j.meta),
        "api_version": j.api_version,
        "kind": j.kind,
        "status": j.status,
        "resources": j.resources,
        "tenant": j.tenant,
        "owner": j.owner,
        "region": j.region,
        "modified": ts(&j.modified),
        "running_at": opt_ts(&j.running_at),
        "finished_at": opt_ts(&j.finished_at),
        "remark": j.remark,
    })
}

fn pod(p: &Pod) -> Value {
    json!({
        "meta": meta(&p.meta),
        "job_uid": p.job_uid,
        "job_kind": p.job_kind,
        "replica_type": p.replica_type,
        "status": p.status,
        "image": p.image,
        "resources": p.resources,
        "host_ip": p.host_ip,
        "pod_ip": p.pod_ip,
        "region": p.region,
        "modified": ts(&p.modified),
        "started_at": opt_ts(&p.started_at),
        "finished_at": opt_ts(&p.finished_at),
        "remark": p.remark,
    })
}

fn event(e: &Event) -> Value {
    json!({
        "meta": meta(&e.meta),
        "involved": object_ref(&e.involved),
        "event_type": e.event_type,
        "reason": e.reason,
        "message": e.message,
        "source": e.source,
        "count": e.count,
        "first_seen": ts(&e.first_seen),
        "last_seen": ts(&e.last_seen),
        "region": e.region,
    })
}

/// `job`, `pod` or `event`.
pub fn kind_name(r: &Record) -> &'static str {
    match r {
        Record::Job(_) => "job",
        Record::Pod(_) => "pod",
        Record::Event(_) => "event",
    }
}

/// The record of a change (`None` for a tombstone: only its uid is known).
pub fn record_of(c: &Change) -> Option<&Record> {
    match c {
        Change::Applied(r) => Some(r),
        Change::Removed(r) => Some(&r.record),
        Change::Tombstone(_) => None,
    }
}

/// The JSON of a change with a record (`None` for a tombstone).
pub fn change_json(c: &Change) -> Option<Value> {
    let (change, removed_at, r) = match c {
        Change::Applied(r) => ("applied", Value::Null, r),
        Change::Removed(r) => ("removed", ts(&r.at), &r.record),
        Change::Tombstone(_) => return None,
    };
    let record = match r {
        Record::Job(j) => job(j),
        Record::Pod(p) => pod(p),
        Record::Event(e) => event(e),
    };
    Some(json!({
        "kind": kind_name(r),
        "change": change,
        "removed_at": removed_at,
        "record": record,
    }))
}

/// What route rules look at, borrowed from a record.
#[derive(Debug, Clone, Copy)]
pub struct Fields<'a> {
    /// `job`, `pod` or `event`.
    pub record: &'static str,
    /// `meta.namespace`.
    pub namespace: &'a str,
    /// Events: the involved object's kind; jobs: their kind (`TFJob`);
    /// pods: `Pod`.
    pub kind: &'a str,
    /// Events: `Normal`/`Warning`; else empty.
    pub event_type: &'a str,
    /// Events: the reason; else empty.
    pub reason: &'a str,
    /// Events: the message; jobs and pods: the remark.
    pub message: &'a str,
    /// `meta.labels`.
    pub labels: &'a [(String, String)],
}

impl<'a> Fields<'a> {
    /// The fields of a record.
    pub fn of(r: &'a Record) -> Self {
        match r {
            Record::Event(e) => Fields {
                record: "event",
                namespace: &e.meta.namespace,
                kind: &e.involved.kind,
                event_type: &e.event_type,
                reason: &e.reason,
                message: &e.message,
                labels: &e.meta.labels,
            },
            Record::Job(j) => Fields {
                record: "job",
                namespace: &j.meta.namespace,
                kind: &j.kind,
                event_type: "",
                reason: "",
                message: &j.remark,
                labels: &j.meta.labels,
            },
            Record::Pod(p) => Fields {
                record: "pod",
                namespace: &p.meta.namespace,
                kind: "Pod",
                event_type: "",
                reason: "",
                message: &p.remark,
                labels: &p.meta.labels,
            },
        }
    }

    /// What the rate limit's summary counts a suppressed record under:
    /// `Warning BackOff` for events, `TFJob Failed` for jobs, `Pod Failed`
    /// for pods.
    pub fn summary_key(r: &Record) -> String {
        match r {
            Record::Event(e) => format!("{} {}", e.event_type, e.reason),
            Record::Job(j) => format!("{} {}", j.kind, j.status),
            Record::Pod(p) => format!("Pod {}", p.status),
        }
    }
}

/// When a change happened, in milliseconds since the epoch: an event's
/// last occurrence, a job's or pod's last status change, a removal's time.
pub fn change_time_ms(c: &Change) -> Option<i64> {
    let t = match c {
        Change::Applied(Record::Event(e)) => &e.last_seen,
        Change::Applied(Record::Job(j)) => &j.modified,
        Change::Applied(Record::Pod(p)) => &p.modified,
        Change::Removed(r) => &r.at,
        Change::Tombstone(_) => return None,
    };
    Some(t.seconds.saturating_mul(1000) + i64::from(t.nanos / 1_000_000))
}

/// What identifies one change for idempotency keys and redelivery:
/// `change kind uid resource-version`.
pub fn identity(c: &Change) -> String {
    match c {
        Change::Applied(r) => format!("applied {} {}", kind_name(r), uid_rv(r)),
        Change::Removed(r) => format!("removed {} {}", kind_name(&r.record), uid_rv(&r.record)),
        Change::Tombstone(t) => format!("tombstone {:?} {}", t.kind, t.uid),
    }
}

fn uid_rv(r: &Record) -> String {
    let m = match r {
        Record::Job(j) => &j.meta,
        Record::Pod(p) => &p.meta,
        Record::Event(e) => &e.meta,
    };
    format!("{} {}", m.uid, m.resource_version)
}
