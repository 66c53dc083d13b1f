//! # kubesink-packed
//!
//! The records of a packed batch: what a sink that exports the WIT
//! interface `kubesink:sink/packed` receives, in one of two layouts:
//!
//! - **layout 1**, `write-packed(batch: list<u8>)` (since 0.2.2): the
//!   batch's `list<change>` in the [postcard] wire format (version 1), each
//!   WIT type as the types below serialize with serde ([`decode`],
//!   [`changes`]);
//! - **layout 2**, `write-packed-v2(batch: list<u8>)` (since 0.2.3): the
//!   same fields in the same order, with fixed-width little-endian integers
//!   and every string in one block of text after the records, checked to be
//!   UTF-8 once ([`decode_v2`], [`changes_v2`]). Inside a wasm component it
//!   costs about half of layout 1 to read (`docs/benchmarks.md`).
//!
//! Both are spelled out in `wit/README.md` ("Packed batches") for sinks in
//! other languages. A host at 0.2.3 calls `write-packed-v2` when the sink
//! exports it, and `write-packed` for a sink built against 0.2.2.
//!
//! The types mirror `kubesink:sink/types` field for field, in WIT order,
//! and borrow every string from the buffer: decoding allocates one `Vec`
//! for the batch (and one per non-empty `labels`), nothing per string.
//! That is what makes the packed call cheaper than `write`, where the host
//! enters the guest's allocator once per string and list.
//!
//! A sink exporting `packed` still implements `write`; [`impl_from_wit!`]
//! turns the batch `write` receives (wit-bindgen's owned types) into these
//! borrowed ones, so one code path serves both calls.
//!
//! [postcard]: https://postcard.jamesmunns.com/wire-format

use serde::{Deserialize, Serialize};

/// A point in time, UTC (WIT `timestamp`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default, Serialize, Deserialize)]
pub struct Timestamp {
    /// Whole seconds since 1970-01-01T00:00:00Z (negative before it).
    pub seconds: i64,
    /// Nanoseconds past `seconds`, 0..=999_999_999.
    pub nanos: u32,
}

/// WIT `object-ref`: the object an event is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ObjectRef<'a> {
    pub api_version: &'a str,
    pub kind: &'a str,
    pub namespace: &'a str,
    pub name: &'a str,
    pub uid: &'a str,
}

/// WIT `meta`: metadata shared by every record.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Meta<'a> {
    pub uid: &'a str,
    pub name: &'a str,
    pub namespace: &'a str,
    pub resource_version: &'a str,
    pub resource_version_num: u64,
    #[serde(borrow)]
    pub labels: Vec<(&'a str, &'a str)>,
    pub created: Timestamp,
}

/// WIT `job`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Job<'a> {
    #[serde(borrow)]
    pub meta: Meta<'a>,
    pub api_version: &'a str,
    pub kind: &'a str,
    pub status: &'a str,
    pub resources: &'a str,
    pub tenant: &'a str,
    pub owner: &'a str,
    pub region: &'a str,
    pub modified: Timestamp,
    pub running_at: Option<Timestamp>,
    pub finished_at: Option<Timestamp>,
    pub remark: &'a str,
}

/// WIT `pod`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Pod<'a> {
    #[serde(borrow)]
    pub meta: Meta<'a>,
    pub job_uid: &'a str,
    pub job_kind: &'a str,
    pub replica_type: &'a str,
    pub status: &'a str,
    pub image: &'a str,
    pub resources: &'a str,
    pub host_ip: &'a str,
    pub pod_ip: &'a str,
    pub region: &'a str,
    pub modified: Timestamp,
    pub started_at: Option<Timestamp>,
    pub finished_at: Option<Timestamp>,
    pub remark: &'a str,
}

/// WIT `event`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Event<'a> {
    #[serde(borrow)]
    pub meta: Meta<'a>,
    #[serde(borrow)]
    pub involved: ObjectRef<'a>,
    pub event_type: &'a str,
    pub reason: &'a str,
    pub message: &'a str,
    pub source: &'a str,
    pub count: u32,
    pub first_seen: Timestamp,
    pub last_seen: Timestamp,
    pub region: &'a str,
}

/// WIT `record-kind`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum RecordKind {
    Job,
    Pod,
    Event,
}

/// WIT `record`: one normalized object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Record<'a> {
    Job(#[serde(borrow)] Job<'a>),
    Pod(#[serde(borrow)] Pod<'a>),
    Event(#[serde(borrow)] Event<'a>),
}

impl<'a> Record<'a> {
    /// Its kind.
    #[must_use]
    pub fn kind(&self) -> RecordKind {
        match self {
            Record::Job(_) => RecordKind::Job,
            Record::Pod(_) => RecordKind::Pod,
            Record::Event(_) => RecordKind::Event,
        }
    }

    /// Its metadata.
    #[must_use]
    pub fn meta(&self) -> &Meta<'a> {
        match self {
            Record::Job(j) => &j.meta,
            Record::Pod(p) => &p.meta,
            Record::Event(e) => &e.meta,
        }
    }
}

/// WIT `removal`: an object deleted, with its last state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Removal<'a> {
    pub at: Timestamp,
    #[serde(borrow)]
    pub record: Record<'a>,
}

/// WIT `tombstone`: an object deleted while the host was not watching.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tombstone<'a> {
    pub kind: RecordKind,
    pub uid: &'a str,
    pub at: Timestamp,
}

/// WIT `change`: an element of a batch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Change<'a> {
    Applied(#[serde(borrow)] Record<'a>),
    Removed(#[serde(borrow)] Removal<'a>),
    Tombstone(#[serde(borrow)] Tombstone<'a>),
}

/// A buffer that is not a packed batch (cut short, a bad tag, invalid
/// UTF-8, bytes left over).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError {
    /// Where: the byte offset the decoder stopped at, when known.
    pub detail: String,
}

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "not a packed batch: {}", self.detail)
    }
}

impl std::error::Error for DecodeError {}

/// The changes of a packed batch (layout 1, `write-packed`), borrowing
/// their strings from `bytes`. The whole buffer must be one
/// `list<change>`: trailing bytes are an error.
pub fn decode(bytes: &[u8]) -> Result<Vec<Change<'_>>, DecodeError> {
    collect(changes(bytes)?)
}

/// The changes of a batch in packed layout 2 (`write-packed-v2`, since
/// 0.2.3), borrowing their strings from `bytes`; bytes of records or text
/// left after the last change are an error.
pub fn decode_v2(bytes: &[u8]) -> Result<Vec<Change<'_>>, DecodeError> {
    collect(changes_v2(bytes)?)
}

fn collect(changes: Changes<'_>) -> Result<Vec<Change<'_>>, DecodeError> {
    let mut batch = Vec::with_capacity(changes.capacity_hint());
    for change in changes {
        batch.push(change?);
    }
    Ok(batch)
}

/// The changes of a packed batch (layout 1) one at a time, in order,
/// without collecting them first: a sink that moves each into its own
/// model builds one `Vec`, not two. After the last change, bytes left over
/// are an error (the iterator's last item).
pub fn changes(bytes: &[u8]) -> Result<Changes<'_>, DecodeError> {
    let (left, rest) = postcard::take_from_bytes::<u64>(bytes).map_err(|e| DecodeError {
        detail: format!("the count of changes: {e} ({} bytes)", bytes.len()),
    })?;
    Ok(Changes {
        source: Source::V1(rest),
        left,
        total: bytes.len(),
        failed: false,
    })
}

/// [`changes`] for a batch in layout 2 (`write-packed-v2`): the header and
/// the UTF-8 of the whole text block are checked here, each change as the
/// iterator reaches it.
pub fn changes_v2(bytes: &[u8]) -> Result<Changes<'_>, DecodeError> {
    let (reader, left) = v2::Reader::new(bytes, "layout 2")?;
    Ok(Changes {
        source: Source::V2(reader),
        left,
        total: bytes.len(),
        failed: false,
    })
}

/// The iterator [`changes`] and [`changes_v2`] return.
#[derive(Debug, Clone)]
pub struct Changes<'a> {
    source: Source<'a>,
    left: u64,
    total: usize,
    failed: bool,
}

#[derive(Debug, Clone)]
enum Source<'a> {
    /// Layout 1: the bytes not read yet.
    V1(&'a [u8]),
    V2(v2::Reader<'a>),
}

impl Changes<'_> {
    /// How many changes to make room for: the count the buffer declares,
    /// but no more than its bytes could hold, so a buffer declaring a huge
    /// count reserves nothing.
    #[must_use]
    pub fn capacity_hint(&self) -> usize {
        let most = usize::try_from(self.left).unwrap_or(usize::MAX);
        let room = match &self.source {
            // A change takes at least 5 bytes in layout 1.
            Source::V1(rest) => rest.len() / 5,
            Source::V2(reader) => reader.most_changes(),
        };
        most.min(room)
    }

    fn fail(&mut self, detail: String) -> Option<Result<Change<'static>, DecodeError>> {
        self.failed = true;
        Some(Err(DecodeError { detail }))
    }
}

impl<'a> Iterator for Changes<'a> {
    type Item = Result<Change<'a>, DecodeError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        let total = self.total;
        let left = self.left;
        match &mut self.source {
            Source::V1(rest) => {
                let at = total - rest.len();
                if left == 0 {
                    if rest.is_empty() {
                        return None;
                    }
                    let detail = format!(
                        "{} bytes left after the last change (of {total})",
                        rest.len()
                    );
                    return self.fail(detail);
                }
                match postcard::take_from_bytes::<Change<'a>>(rest) {
                    Ok((change, after)) => {
                        *rest = after;
                        self.left -= 1;
                        Some(Ok(change))
                    }
                    Err(e) => self.fail(format!(
                        "{e} in the change starting at byte {at} ({left} changes left, {total} bytes)"
                    )),
                }
            }
            Source::V2(reader) => {
                if left == 0 {
                    let detail = reader.leftover("change")?;
                    return self.fail(format!("layout 2: {detail} ({total} bytes)"));
                }
                let at = reader.at();
                match reader.change() {
                    Ok(change) => {
                        self.left -= 1;
                        Some(Ok(change))
                    }
                    Err(fault) => {
                        let stopped = reader.at();
                        self.fail(format!(
                            "layout 2: {fault}, at byte {stopped} in the change starting at byte \
                             {at} ({left} changes left, {total} bytes)"
                        ))
                    }
                }
            }
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        // Plus one for a trailing error.
        (0, Some(self.capacity_hint().saturating_add(1)))
    }
}

/// The packed form of `batch` (what the host sends; for tests and native
/// callers).
#[must_use]
pub fn encode(batch: &[Change<'_>]) -> Vec<u8> {
    // Serializing these types into a Vec cannot fail (no maps of unknown
    // length, no I/O).
    postcard::to_allocvec(batch).unwrap_or_default()
}

/// Defines `fn packed_batch(batch: &[wit::Change]) -> Vec<kubesink_packed::Change<'_>>`
/// for the wit-bindgen types of `kubesink:sink/types` at the given path
/// (e.g. `impl_from_wit!(kubesink::sink::types)`): the batch a sink's
/// `write` receives, borrowed as the packed types, so that `write` and
/// `write-packed` share one code path.
#[macro_export]
macro_rules! impl_from_wit {
    ($($wit:ident)::+) => {
        /// The batch `write` received, borrowed as packed records.
        fn packed_batch(batch: &[$($wit)::+::Change]) -> ::std::vec::Vec<$crate::Change<'_>> {
            use $($wit)::+ as w;
            fn ts(t: &w::Timestamp) -> $crate::Timestamp {
                $crate::Timestamp { seconds: t.seconds, nanos: t.nanos }
            }
            fn kind(k: &w::RecordKind) -> $crate::RecordKind {
                match k {
                    w::RecordKind::Job => $crate::RecordKind::Job,
                    w::RecordKind::Pod => $crate::RecordKind::Pod,
                    w::RecordKind::Event => $crate::RecordKind::Event,
                }
            }
            fn meta(m: &w::Meta) -> $crate::Meta<'_> {
                $crate::Meta {
                    uid: &m.uid,
                    name: &m.name,
                    namespace: &m.namespace,
                    resource_version: &m.resource_version,
                    resource_version_num: m.resource_version_num,
                    labels: m.labels.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect(),
                    created: ts(&m.created),
                }
            }
            fn record(r: &w::Record) -> $crate::Record<'_> {
                match r {
                    w::Record::Job(j) => $crate::Record::Job($crate::Job {
                        meta: meta(&j.meta),
                        api_version: &j.api_version,
                        kind: &j.kind,
                        status: &j.status,
                        resources: &j.resources,
                        tenant: &j.tenant,
                        owner: &j.owner,
                        region: &j.region,
                        modified: ts(&j.modified),
                        running_at: j.running_at.as_ref().map(ts),
                        finished_at: j.finished_at.as_ref().map(ts),
                        remark: &j.remark,
                    }),
                    w::Record::Pod(p) => $crate::Record::Pod($crate::Pod {
                        meta: meta(&p.meta),
                        job_uid: &p.job_uid,
                        job_kind: &p.job_kind,
                        replica_type: &p.replica_type,
                        status: &p.status,
                        image: &p.image,
                        resources: &p.resources,
                        host_ip: &p.host_ip,
                        pod_ip: &p.pod_ip,
                        region: &p.region,
                        modified: ts(&p.modified),
                        started_at: p.started_at.as_ref().map(ts),
                        finished_at: p.finished_at.as_ref().map(ts),
                        remark: &p.remark,
                    }),
                    w::Record::Event(e) => $crate::Record::Event($crate::Event {
                        meta: meta(&e.meta),
                        involved: $crate::ObjectRef {
                            api_version: &e.involved.api_version,
                            kind: &e.involved.kind,
                            namespace: &e.involved.namespace,
                            name: &e.involved.name,
                            uid: &e.involved.uid,
                        },
                        event_type: &e.event_type,
                        reason: &e.reason,
                        message: &e.message,
                        source: &e.source,
                        count: e.count,
                        first_seen: ts(&e.first_seen),
                        last_seen: ts(&e.last_seen),
                        region: &e.region,
                    }),
                }
            }
            batch
                .iter()
                .map(|c| match c {
                    w::Change::Applied(r) => $crate::Change::Applied(record(r)),
                    w::Change::Removed(r) => $crate::Change::Removed($crate::Removal {
                        at: ts(&r.at),
                        record: record(&r.record),
                    }),
                    w::Change::Tombstone(t) => $crate::Change::Tombstone($crate::Tombstone {
                        kind: kind(&t.kind),
                        uid: &t.uid,
                        at: ts(&t.at),
                    }),
                })
                .collect()
        }
    };
}

pub mod statements;
mod v2;

#[cfg(test)]
mod tests;
