//! Entries the pipeline makes or names itself: reconciliation tombstones,
//! an entry's object in logs, and which configured record kind an entry is.

use kubesink_normalize::record::{Change, Entry, Record, RecordKind, Timestamp};

use crate::config;

/// The configured record kind (`records:` of a sink) of an entry.
pub(super) fn configured_kind(entry: &Entry) -> config::RecordKind {
    to_configured(entry.kind())
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

/// A `tombstone` for an object known only by its kind and uid (deleted
/// while kubesink was not watching): a sink marks its stored record removed
/// without changing the stored fields.
pub fn tombstone(kind: RecordKind, uid: String, at: Timestamp) -> Entry {
    Change::tombstone(kind, uid, at)
}

/// Names an entry's object in logs: `Pod ns/name (uid)`, escaped
/// ([`kubesink_host::log::sanitize`]): names come from the cluster, and the
/// uids of tombstones from a sink's `held` answer.
pub fn describe(entry: &Entry) -> String {
    let text = match entry.record() {
        Some(record) => {
            let (kind, meta) = match record {
                Record::Job(j) => (j.kind.as_str(), &j.meta),
                Record::Pod(p) => ("Pod", &p.meta),
                Record::Event(e) => ("Event", &e.meta),
            };
            format!("{kind} {}/{} ({})", meta.namespace, meta.name, meta.uid)
        }
        None => format!("{:?} tombstone ({})", entry.kind(), entry.uid()),
    };
    kubesink_host::log::sanitize(&text, 1024)
}
