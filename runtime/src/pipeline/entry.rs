//! Entries the pipeline makes or names itself: reconciliation tombstones,
//! an entry's object in logs, and which configured record kind an entry is.

use kubesink_normalize::record::{
    Change, Entry, Event, Job, Meta, ObjectRef, Pod, Record, RecordKind, Timestamp,
};

use crate::config;

/// The configured record kind (`records:` of a sink) of an entry's record.
pub(super) fn configured_kind(record: &Record) -> config::RecordKind {
    match record {
        Record::Job(_) => config::RecordKind::Jobs,
        Record::Pod(_) => config::RecordKind::Pods,
        Record::Event(_) => config::RecordKind::Events,
    }
}

/// The configured record kind of a record kind.
pub(super) fn to_configured(kind: RecordKind) -> config::RecordKind {
    match kind {
        RecordKind::Job => config::RecordKind::Jobs,
        RecordKind::Pod => config::RecordKind::Pods,
        RecordKind::Event => config::RecordKind::Events,
    }
}

/// The record kind of a configured record kind.
pub(super) fn from_configured(kind: config::RecordKind) -> RecordKind {
    match kind {
        config::RecordKind::Jobs => RecordKind::Job,
        config::RecordKind::Pods => RecordKind::Pod,
        config::RecordKind::Events => RecordKind::Event,
    }
}

/// A `removed` entry for an object known only by its uid: every other field
/// empty and `resource-version-num` 0, so a sink marks its stored record
/// removed without changing the stored fields.
pub fn tombstone(kind: RecordKind, uid: String, at: Timestamp) -> Entry {
    let zero = Timestamp {
        seconds: 0,
        nanos: 0,
    };
    let meta = Meta {
        uid,
        name: String::new(),
        namespace: String::new(),
        resource_version: String::new(),
        resource_version_num: 0,
        labels: Vec::new(),
        created: zero,
    };
    let record = match kind {
        RecordKind::Job => Record::Job(Job {
            meta,
            api_version: String::new(),
            kind: String::new(),
            status: String::new(),
            resources: String::new(),
            tenant: String::new(),
            owner: String::new(),
            region: String::new(),
            modified: zero,
            running_at: None,
            finished_at: None,
            remark: String::new(),
        }),
        RecordKind::Pod => Record::Pod(Pod {
            meta,
            job_uid: String::new(),
            job_kind: String::new(),
            replica_type: String::new(),
            status: String::new(),
            image: String::new(),
            resources: String::new(),
            host_ip: String::new(),
            pod_ip: String::new(),
            region: String::new(),
            modified: zero,
            started_at: None,
            finished_at: None,
            remark: String::new(),
        }),
        RecordKind::Event => Record::Event(Event {
            meta,
            involved: ObjectRef {
                api_version: String::new(),
                kind: String::new(),
                namespace: String::new(),
                name: String::new(),
                uid: String::new(),
            },
            event_type: String::new(),
            reason: String::new(),
            message: String::new(),
            source: String::new(),
            count: 0,
            first_seen: zero,
            last_seen: zero,
            region: String::new(),
        }),
    };
    Entry {
        change: Change::Removed(at),
        record,
    }
}

/// Names an entry's object in logs: `Pod ns/name (uid)`, escaped
/// ([`kubesink_host::log::sanitize`]): names come from the cluster, and the
/// uids of tombstones from a sink's `held` answer.
pub fn describe(entry: &Entry) -> String {
    let (kind, meta) = match &entry.record {
        Record::Job(j) => (j.kind.as_str(), &j.meta),
        Record::Pod(p) => ("Pod", &p.meta),
        Record::Event(e) => ("Event", &e.meta),
    };
    kubesink_host::log::sanitize(
        &format!("{kind} {}/{} ({})", meta.namespace, meta.name, meta.uid),
        1024,
    )
}
