//! The records the sink consumes: plain Rust mirrors of the WIT types in
//! `kubesink:sink/types`, so the same logic runs in the wasm component and
//! natively (a caller builds them directly, e.g. from `kubesink_normalize`
//! records). Their strings are [`Text`]: borrowed from the batch the
//! component received ([`Entry::from_packed`]: a packed buffer, or the
//! bindings of `write`), or owned.

use std::borrow::Cow;

/// A string of a record: borrowed from the batch, or owned.
pub type Text<'a> = Cow<'a, str>;

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
pub struct ObjectRef<'a> {
    /// `apiVersion` of the object.
    pub api_version: Text<'a>,
    /// `kind` of the object.
    pub kind: Text<'a>,
    /// Namespace of the object; empty for cluster-scoped objects.
    pub namespace: Text<'a>,
    /// Name of the object.
    pub name: Text<'a>,
    /// UID of the object; may be empty.
    pub uid: Text<'a>,
}

/// Metadata shared by every record.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Meta<'a> {
    /// `metadata.uid`: the key of the record's row.
    pub uid: Text<'a>,
    /// `metadata.name`.
    pub name: Text<'a>,
    /// `metadata.namespace`.
    pub namespace: Text<'a>,
    /// `metadata.resourceVersion` as given.
    pub resource_version: Text<'a>,
    /// `resource_version` as an integer (0 when it is not one); the sink
    /// ignores a record whose number is lower than the stored one.
    pub resource_version_num: u64,
    /// `metadata.labels`, sorted by key (not stored by this sink).
    pub labels: Vec<(Text<'a>, Text<'a>)>,
    /// `metadata.creationTimestamp`.
    pub created: Timestamp,
}

/// A job (batch/v1 Job or a training job); a row of `job_info`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Job<'a> {
    /// Common metadata.
    pub meta: Meta<'a>,
    /// `apiVersion`, e.g. `training.kubedl.io/v1alpha1`.
    pub api_version: Text<'a>,
    /// `kind`, e.g. `TFJob`.
    pub kind: Text<'a>,
    /// KubeDL's job status (`Created`, `Running`, `Succeeded`, ...).
    pub status: Text<'a>,
    /// JSON: replica type -> {"resources", "replicas"}.
    pub resources: Text<'a>,
    /// Tenant from the tenancy annotation.
    pub tenant: Text<'a>,
    /// Owner (user) from the tenancy annotation.
    pub owner: Text<'a>,
    /// Deploy region.
    pub region: Text<'a>,
    /// When the status last changed.
    pub modified: Timestamp,
    /// When the job started running.
    pub running_at: Option<Timestamp>,
    /// When the job finished.
    pub finished_at: Option<Timestamp>,
    /// Free text (the Failed condition's message).
    pub remark: Text<'a>,
}

/// A pod of a watched job; a row of `replica_info`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Pod<'a> {
    /// Common metadata.
    pub meta: Meta<'a>,
    /// UID of the controlling job.
    pub job_uid: Text<'a>,
    /// Kind of the controlling job.
    pub job_kind: Text<'a>,
    /// Replica type (`PS`, `Worker`, ...).
    pub replica_type: Text<'a>,
    /// Pod phase (`Pending`, `Running`, `Succeeded`, `Failed`, `Unknown`).
    pub status: Text<'a>,
    /// Image of the main container.
    pub image: Text<'a>,
    /// JSON ResourceRequirements.
    pub resources: Text<'a>,
    /// `status.hostIP`.
    pub host_ip: Text<'a>,
    /// `status.podIP`.
    pub pod_ip: Text<'a>,
    /// Deploy region.
    pub region: Text<'a>,
    /// When the status last changed.
    pub modified: Timestamp,
    /// When the main container started.
    pub started_at: Option<Timestamp>,
    /// When the main container terminated.
    pub finished_at: Option<Timestamp>,
    /// For a failed pod: reason, exit code and message.
    pub remark: Text<'a>,
}

/// A Kubernetes event; a row of `event_info`, one per event uid.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Event<'a> {
    /// Common metadata.
    pub meta: Meta<'a>,
    /// The object the event is about.
    pub involved: ObjectRef<'a>,
    /// `Normal` or `Warning`.
    pub event_type: Text<'a>,
    /// Short machine-readable reason.
    pub reason: Text<'a>,
    /// Human-readable message.
    pub message: Text<'a>,
    /// `component/host` of the reporter.
    pub source: Text<'a>,
    /// How many times it occurred.
    pub count: u32,
    /// First occurrence.
    pub first_seen: Timestamp,
    /// Last occurrence.
    pub last_seen: Timestamp,
    /// Deploy region.
    pub region: Text<'a>,
}

/// One normalized object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record<'a> {
    /// A job.
    Job(Job<'a>),
    /// A pod.
    Pod(Pod<'a>),
    /// An event.
    Event(Event<'a>),
}

impl<'a> Record<'a> {
    /// The record's metadata.
    #[must_use]
    pub fn meta(&self) -> &Meta<'a> {
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
pub struct Entry<'a> {
    /// Applied or removed.
    pub change: Change,
    /// The object's state.
    pub record: Record<'a>,
}

impl<'a> Entry<'a> {
    /// A tombstone (the object `uid` of `kind` is gone, its last state
    /// unknown) as this model has it: a removal of a record with only its
    /// uid and version 0. The upsert keeps every stored column of a row
    /// with a higher version and only marks it removed
    /// ([`crate::schema::upsert`]).
    #[must_use]
    pub fn tombstone(kind: crate::HeldKind, uid: impl Into<Text<'a>>, at: Timestamp) -> Self {
        let meta = Meta {
            uid: uid.into(),
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

fn ts(t: kubesink_packed::Timestamp) -> Timestamp {
    Timestamp {
        seconds: t.seconds,
        nanos: t.nanos,
    }
}

fn meta<'a>(m: &kubesink_packed::Meta<'a>) -> Meta<'a> {
    Meta {
        uid: m.uid.into(),
        name: m.name.into(),
        namespace: m.namespace.into(),
        resource_version: m.resource_version.into(),
        resource_version_num: m.resource_version_num,
        labels: Vec::new(), // not stored: KubeDL's tables have no column
        created: ts(m.created),
    }
}

fn record<'a>(r: &kubesink_packed::Record<'a>) -> Record<'a> {
    use kubesink_packed::Record as P;
    match r {
        P::Job(j) => Record::Job(Job {
            meta: meta(&j.meta),
            api_version: j.api_version.into(),
            kind: j.kind.into(),
            status: j.status.into(),
            resources: j.resources.into(),
            tenant: j.tenant.into(),
            owner: j.owner.into(),
            region: j.region.into(),
            modified: ts(j.modified),
            running_at: j.running_at.map(ts),
            finished_at: j.finished_at.map(ts),
            remark: j.remark.into(),
        }),
        P::Pod(p) => Record::Pod(Pod {
            meta: meta(&p.meta),
            job_uid: p.job_uid.into(),
            job_kind: p.job_kind.into(),
            replica_type: p.replica_type.into(),
            status: p.status.into(),
            image: p.image.into(),
            resources: p.resources.into(),
            host_ip: p.host_ip.into(),
            pod_ip: p.pod_ip.into(),
            region: p.region.into(),
            modified: ts(p.modified),
            started_at: p.started_at.map(ts),
            finished_at: p.finished_at.map(ts),
            remark: p.remark.into(),
        }),
        P::Event(e) => Record::Event(Event {
            meta: meta(&e.meta),
            involved: ObjectRef {
                api_version: e.involved.api_version.into(),
                kind: e.involved.kind.into(),
                namespace: e.involved.namespace.into(),
                name: e.involved.name.into(),
                uid: e.involved.uid.into(),
            },
            event_type: e.event_type.into(),
            reason: e.reason.into(),
            message: e.message.into(),
            source: e.source.into(),
            count: e.count,
            first_seen: ts(e.first_seen),
            last_seen: ts(e.last_seen),
            region: e.region.into(),
        }),
    }
}

impl<'a> Entry<'a> {
    /// A change of a batch (`kubesink-packed`'s borrowed WIT types: a
    /// packed batch decoded, or `write`'s batch borrowed) as this model has
    /// it, borrowing its strings; a tombstone as [`Entry::tombstone`].
    #[must_use]
    pub fn from_packed(change: &kubesink_packed::Change<'a>) -> Self {
        use kubesink_packed::Change as P;
        match change {
            P::Applied(r) => Entry {
                change: Change::Applied,
                record: record(r),
            },
            P::Removed(r) => Entry {
                change: Change::Removed(ts(r.at)),
                record: record(&r.record),
            },
            P::Tombstone(t) => {
                let kind = match t.kind {
                    kubesink_packed::RecordKind::Job => crate::HeldKind::Job,
                    kubesink_packed::RecordKind::Pod => crate::HeldKind::Pod,
                    kubesink_packed::RecordKind::Event => crate::HeldKind::Event,
                };
                Entry::tombstone(kind, t.uid, ts(t.at))
            }
        }
    }
}
