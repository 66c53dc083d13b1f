//! Normalized records: the types of the WIT interface `kubesink:sink/types`,
//! generated here once and reused by the host's bindings (`with:`), so a
//! record built by [`crate::normalize`] is handed to a sink without copying
//! into another type.
//!
//! The runtime calls an element of a batch an [`Entry`]: the WIT `change`
//! (`applied`, `removed` with the last state, or a `tombstone` known only
//! by kind and uid).

wasmtime::component::bindgen!({
    inline: "
        package kubesink:records;
        world records { import kubesink:sink/types@0.2.4; }
    ",
    path: "../../wit",
    additional_derives: [PartialEq, serde::Serialize, serde::Deserialize],
});

pub use kubesink::sink::types::{
    Change, Error as SinkError, Event, HeldPage, Job, Meta, ObjectRef, OptionalField, Pod, Record,
    RecordKind, Removal, Shape, Timestamp, Tombstone, Wants,
};

/// An element of a batch: the WIT `change`.
pub type Entry = Change;

impl Record {
    /// Its kind.
    pub fn kind(&self) -> RecordKind {
        match self {
            Record::Job(_) => RecordKind::Job,
            Record::Pod(_) => RecordKind::Pod,
            Record::Event(_) => RecordKind::Event,
        }
    }

    /// Its metadata.
    pub fn meta(&self) -> &Meta {
        match self {
            Record::Job(j) => &j.meta,
            Record::Pod(p) => &p.meta,
            Record::Event(e) => &e.meta,
        }
    }
}

impl Change {
    /// `applied(record)`.
    pub fn applied(record: Record) -> Change {
        Change::Applied(record)
    }

    /// `removed` at `at`, with the object's last state.
    pub fn removed(record: Record, at: Timestamp) -> Change {
        Change::Removed(Removal { at, record })
    }

    /// A `tombstone`: the object `uid` of `kind` is gone, its last state
    /// unknown.
    pub fn tombstone(kind: RecordKind, uid: String, at: Timestamp) -> Change {
        Change::Tombstone(Tombstone { kind, uid, at })
    }

    /// The record (applied or removed); `None` for a tombstone.
    pub fn record(&self) -> Option<&Record> {
        match self {
            Change::Applied(r) | Change::Removed(Removal { record: r, .. }) => Some(r),
            Change::Tombstone(_) => None,
        }
    }

    /// The kind of the object.
    pub fn kind(&self) -> RecordKind {
        match self {
            Change::Applied(r) | Change::Removed(Removal { record: r, .. }) => r.kind(),
            Change::Tombstone(t) => t.kind,
        }
    }

    /// The object's uid.
    pub fn uid(&self) -> &str {
        match self {
            Change::Applied(r) | Change::Removed(Removal { record: r, .. }) => &r.meta().uid,
            Change::Tombstone(t) => &t.uid,
        }
    }

    /// The record's `resource-version-num`; 0 for a tombstone (no version).
    pub fn resource_version_num(&self) -> u64 {
        self.record().map_or(0, |r| r.meta().resource_version_num)
    }

    /// True for `removed` and `tombstone`: the object is gone.
    pub fn is_removal(&self) -> bool {
        !matches!(self, Change::Applied(_))
    }

    /// When the object was removed; `None` for `applied`.
    pub fn removed_at(&self) -> Option<Timestamp> {
        match self {
            Change::Applied(_) => None,
            Change::Removed(r) => Some(r.at),
            Change::Tombstone(t) => Some(t.at),
        }
    }
}
