//! Records for tests: small builders with realistic values, so each test
//! states only what it is about. Times count from [`T0`].

use kubesink_normalize::record::{
    Change, Entry, Event, Job, Meta, ObjectRef, Pod, Record, Timestamp,
};

/// The epoch of test times (2023-11-14T22:13:20Z).
pub const T0: i64 = 1_700_000_000;

/// `T0 + offset` seconds.
pub fn ts(offset: i64) -> Timestamp {
    Timestamp {
        seconds: T0 + offset,
        nanos: 0,
    }
}

/// Metadata: name `name-<uid>`, namespace `kubedl`, resource version `rv`.
pub fn meta(uid: &str, rv: u64) -> Meta {
    Meta {
        uid: uid.into(),
        name: format!("name-{uid}"),
        namespace: "kubedl".into(),
        resource_version: rv.to_string(),
        resource_version_num: rv,
        labels: vec![],
        created: ts(0),
    }
}

/// A TFJob with `status` (running and finish times follow it).
pub fn job(uid: &str, rv: u64, status: &str) -> Job {
    Job {
        meta: meta(uid, rv),
        api_version: "training.kubedl.io/v1alpha1".into(),
        kind: "TFJob".into(),
        status: status.into(),
        resources: r#"{"Worker":{"replicas":2}}"#.into(),
        tenant: "team-a".into(),
        owner: "alice".into(),
        region: "cn-hangzhou".into(),
        modified: ts(i64::try_from(rv).unwrap_or(0)),
        running_at: (status != "Created").then(|| ts(5)),
        finished_at: matches!(status, "Succeeded" | "Failed").then(|| ts(50)),
        remark: String::new(),
    }
}

/// A worker pod of job `job-1` with `status`.
pub fn pod(uid: &str, rv: u64, status: &str) -> Pod {
    Pod {
        meta: meta(uid, rv),
        job_uid: "job-1".into(),
        job_kind: "TFJob".into(),
        replica_type: "worker".into(),
        status: status.into(),
        image: "tensorflow:2.15".into(),
        resources: r#"{"limits":{"cpu":"1"}}"#.into(),
        host_ip: "10.0.0.1".into(),
        pod_ip: "10.1.0.7".into(),
        region: "cn-hangzhou".into(),
        modified: ts(i64::try_from(rv).unwrap_or(0)),
        started_at: Some(ts(6)),
        finished_at: matches!(status, "Succeeded" | "Failed").then(|| ts(40)),
        remark: String::new(),
    }
}

/// A `BackOff` warning about pod `pod-1`, seen `count` times.
pub fn event(uid: &str, rv: u64, count: u32) -> Event {
    Event {
        meta: meta(uid, rv),
        involved: ObjectRef {
            api_version: "v1".into(),
            kind: "Pod".into(),
            namespace: "kubedl".into(),
            name: "name-pod-1".into(),
            uid: "pod-1".into(),
        },
        event_type: "Warning".into(),
        reason: "BackOff".into(),
        message: "Back-off restarting failed container".into(),
        source: "kubelet/node-1".into(),
        count,
        first_seen: ts(10),
        last_seen: ts(10 + i64::from(count)),
        region: "cn-hangzhou".into(),
    }
}

/// The record as it exists.
pub fn applied(record: Record) -> Entry {
    Change::applied(record)
}

/// The record, removed at `T0 + at`.
pub fn removed(record: Record, at: i64) -> Entry {
    Change::removed(record, ts(at))
}
