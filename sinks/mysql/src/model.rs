//! The records the sink consumes: plain Rust mirrors of the WIT types in
//! `kubesink:sink/types`, so the same logic runs in the wasm component (the
//! adapter moves the generated bindings into these) and natively (a caller
//! builds them directly, e.g. from `kubesink_normalize` records).

/// A point in time, UTC, as seconds and nanoseconds since the Unix epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Timestamp {
    /// Whole seconds since 1970-01-01T00:00:00Z.
    pub seconds: i64,
    /// Nanoseconds past `seconds`, 0..=999_999_999.
    pub nanos: u32,
}

/// Identifies the Kubernetes object an event is about.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ObjectRef {
    /// `apiVersion` of the object.
    pub api_version: String,
    /// `kind` of the object.
    pub kind: String,
    /// Namespace of the object; empty for cluster-scoped objects.
    pub namespace: String,
    /// Name of the object.
    pub name: String,
    /// UID of the object; may be empty.
    pub uid: String,
}

/// Metadata shared by every record.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Meta {
    /// `metadata.uid`: the key of the record's row.
    pub uid: String,
    /// `metadata.name`.
    pub name: String,
    /// `metadata.namespace`.
    pub namespace: String,
    /// `metadata.resourceVersion` as given.
    pub resource_version: String,
    /// `resource_version` as an integer (0 when it is not one); the sink
    /// ignores a record whose number is lower than the stored one.
    pub resource_version_num: u64,
    /// `metadata.labels`, sorted by key (not stored by this sink).
    pub labels: Vec<(String, String)>,
    /// `metadata.creationTimestamp`.
    pub created: Timestamp,
}

/// A job (batch/v1 Job or a training job); a row of `job_info`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Job {
    /// Common metadata.
    pub meta: Meta,
    /// `apiVersion`, e.g. `training.kubedl.io/v1alpha1`.
    pub api_version: String,
    /// `kind`, e.g. `TFJob`.
    pub kind: String,
    /// KubeDL's job status (`Created`, `Running`, `Succeeded`, ...).
    pub status: String,
    /// JSON: replica type -> {"resources", "replicas"}.
    pub resources: String,
    /// Tenant from the tenancy annotation.
    pub tenant: String,
    /// Owner (user) from the tenancy annotation.
    pub owner: String,
    /// Deploy region.
    pub region: String,
    /// When the status last changed.
    pub modified: Timestamp,
    /// When the job started running.
    pub running_at: Option<Timestamp>,
    /// When the job finished.
    pub finished_at: Option<Timestamp>,
    /// Free text (the Failed condition's message).
    pub remark: String,
}

/// A pod of a watched job; a row of `replica_info`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Pod {
    /// Common metadata.
    pub meta: Meta,
    /// UID of the controlling job.
    pub job_uid: String,
    /// Kind of the controlling job.
    pub job_kind: String,
    /// Replica type (`PS`, `Worker`, ...).
    pub replica_type: String,
    /// Pod phase (`Pending`, `Running`, `Succeeded`, `Failed`, `Unknown`).
    pub status: String,
    /// Image of the main container.
    pub image: String,
    /// JSON ResourceRequirements.
    pub resources: String,
    /// `status.hostIP`.
    pub host_ip: String,
    /// `status.podIP`.
    pub pod_ip: String,
    /// Deploy region.
    pub region: String,
    /// When the status last changed.
    pub modified: Timestamp,
    /// When the main container started.
    pub started_at: Option<Timestamp>,
    /// When the main container terminated.
    pub finished_at: Option<Timestamp>,
    /// For a failed pod: reason, exit code and message.
    pub remark: String,
}

/// A Kubernetes event; a row of `event_info`, one per event uid.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Event {
    /// Common metadata.
    pub meta: Meta,
    /// The object the event is about.
    pub involved: ObjectRef,
    /// `Normal` or `Warning`.
    pub event_type: String,
    /// Short machine-readable reason.
    pub reason: String,
    /// Human-readable message.
    pub message: String,
    /// `component/host` of the reporter.
    pub source: String,
    /// How many times it occurred.
    pub count: u32,
    /// First occurrence.
    pub first_seen: Timestamp,
    /// Last occurrence.
    pub last_seen: Timestamp,
    /// Deploy region.
    pub region: String,
}

/// One normalized object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    /// A job.
    Job(Job),
    /// A pod.
    Pod(Pod),
    /// An event.
    Event(Event),
}

impl Record {
    /// The record's metadata.
    #[must_use]
    pub fn meta(&self) -> &Meta {
        match self {
            Record::Job(j) => &j.meta,
            Record::Pod(p) => &p.meta,
            Record::Event(e) => &e.meta,
        }
    }
}

/// What happened to the object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// The object exists in this state.
    Applied,
    /// The object is gone from the cluster since this time; the record is
    /// its last known state.
    Removed(Timestamp),
}

/// One element of a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Applied or removed.
    pub change: Change,
    /// The object's state.
    pub record: Record,
}

impl Entry {
    /// A tombstone (the object `uid` of `kind` is gone, its last state
    /// unknown) as this model has it: a removal of a record with only its
    /// uid and version 0. The upsert keeps every stored column of a row
    /// with a higher version and only marks it removed
    /// ([`crate::schema::upsert`]).
    #[must_use]
    pub fn tombstone(kind: crate::HeldKind, uid: String, at: Timestamp) -> Entry {
        let meta = Meta {
            uid,
            ..Meta::default()
        };
        Entry {
            change: Change::Removed(at),
            record: match kind {
                crate::HeldKind::Job => Record::Job(Job {
                    meta,
                    ..Job::default()
                }),
                crate::HeldKind::Pod => Record::Pod(Pod {
                    meta,
                    ..Pod::default()
                }),
                crate::HeldKind::Event => Record::Event(Event {
                    meta,
                    ..Event::default()
                }),
            },
        }
    }
}
