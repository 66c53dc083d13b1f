//! Packed batches (WIT `kubesink:sink/packed`): a sink that exports
//! `write-packed-v2` (since 0.2.3) gets each batch as one buffer in packed
//! layout 2 (fixed-width integers, the strings in one block of text); one
//! built against 0.2.2 that exports only `write-packed` gets layout 1, the
//! batch's `list<change>` in the postcard wire format. Either instead of
//! `write`: lowering `write`'s batch enters the guest's allocator once per
//! string and list (about 17 wasm calls per record); the buffer is one
//! allocation and one copy. The layouts: `wit/README.md`, "Packed batches";
//! sinks in Rust decode them with `kubesink-packed`.

use kubesink_normalize::record::{Change, Entry, Meta, Record, RecordKind, SinkError, Timestamp};

/// `write-packed`, as the host calls it.
pub(crate) type WritePacked<'a> =
    wasmtime::component::TypedFunc<(&'a [u8],), (Result<(), SinkError>,)>;

/// `write-packed` of an instance, checked to have the type the host calls.
pub(crate) fn write_packed<'a>(
    func: wasmtime::component::Func,
    store: impl wasmtime::AsContext,
) -> wasmtime::Result<WritePacked<'a>> {
    func.typed::<(&[u8],), (Result<(), SinkError>,)>(store)
}

/// Buffers larger than this are not kept for the next batch.
const KEEP_BYTES: usize = 4 << 20;

/// Which layout a sink's packed export takes (`wit/README.md`, "Packed
/// batches").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// `write-packed` (since 0.2.2): postcard's wire format, varints and
    /// length-prefixed strings.
    V1,
    /// `write-packed-v2` (since 0.2.3): fixed-width little-endian
    /// integers, each string as the end of its text in one block of text
    /// after the records, so a sink checks UTF-8 once a batch and reads no
    /// varints.
    V2,
}

/// A batch whose text does not fit layout 2's 32-bit offsets (4 GiB).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the batch's text is {0} bytes, more than packed layout 2 addresses (4 GiB)")]
pub struct TooLarge(pub usize);

/// Encodes batches into buffers reused from call to call (public for
/// the benchmarks, which time it natively).
#[derive(Debug, Default)]
pub struct Packer {
    buf: Vec<u8>,
    text: Vec<u8>,
}

impl Packer {
    /// `batch` packed in layout 1. Hand the buffer back with
    /// [`Packer::recycle`].
    pub fn pack(&mut self, batch: &[Entry]) -> Vec<u8> {
        let mut buf = std::mem::take(&mut self.buf);
        buf.clear();
        let mut w = Writer(V1(buf));
        w.0.count(batch.len());
        for change in batch {
            w.change(change);
        }
        w.0.0
    }

    /// `batch` packed in layout 2: the number of changes and the length of
    /// the records' bytes (`u32` each), the records, then the text block.
    /// Hand the buffer back with [`Packer::recycle`].
    pub fn pack_v2(&mut self, batch: &[Entry]) -> Result<Vec<u8>, TooLarge> {
        let mut body = std::mem::take(&mut self.buf);
        body.clear();
        body.extend_from_slice(&[0; 8]);
        let mut text = std::mem::take(&mut self.text);
        text.clear();
        let mut w = Writer(V2 { body, text });
        for change in batch {
            w.change(change);
        }
        let V2 { mut body, text } = w.0;
        let count = u32::try_from(batch.len());
        let records = u32::try_from(body.len() - 8);
        let outcome = match (count, records, u32::try_from(text.len())) {
            (Ok(count), Ok(records), Ok(_)) => {
                body[..4].copy_from_slice(&count.to_le_bytes());
                body[4..8].copy_from_slice(&records.to_le_bytes());
                body.extend_from_slice(&text);
                Ok(body)
            }
            _ => {
                self.recycle(body);
                Err(TooLarge(text.len()))
            }
        };
        if text.capacity() <= KEEP_BYTES {
            self.text = text;
        }
        outcome
    }

    /// `batch` packed in `layout`.
    pub fn pack_in(&mut self, layout: Layout, batch: &[Entry]) -> Result<Vec<u8>, TooLarge> {
        match layout {
            Layout::V1 => Ok(self.pack(batch)),
            Layout::V2 => self.pack_v2(batch),
        }
    }

    /// Keeps `buf`'s allocation for the next batch (unless it is large).
    pub fn recycle(&mut self, buf: Vec<u8>) {
        if buf.capacity() <= KEEP_BYTES {
            self.buf = buf;
        }
    }
}

/// How a layout writes the WIT types' primitives.
trait Encoding {
    /// The length of a `list`.
    fn count(&mut self, n: usize);
    fn str(&mut self, s: &str);
    fn u64(&mut self, v: u64);
    fn u32(&mut self, v: u32);
    fn i64(&mut self, v: i64);
    /// A case index (WIT order), or an option's `0` / `1`.
    fn byte(&mut self, b: u8);
}

/// Layout 1: postcard's wire format.
struct V1(Vec<u8>);

impl V1 {
    /// An unsigned LEB128 varint.
    fn varint(&mut self, mut v: u64) {
        while v >= 0x80 {
            self.0.push((v as u8) | 0x80);
            v >>= 7;
        }
        self.0.push(v as u8);
    }
}

impl Encoding for V1 {
    fn count(&mut self, n: usize) {
        self.varint(n as u64);
    }

    fn str(&mut self, s: &str) {
        self.count(s.len());
        self.0.extend_from_slice(s.as_bytes());
    }

    fn u64(&mut self, v: u64) {
        self.varint(v);
    }

    fn u32(&mut self, v: u32) {
        self.varint(v.into());
    }

    fn i64(&mut self, v: i64) {
        // zigzag
        self.varint(((v << 1) ^ (v >> 63)) as u64);
    }

    fn byte(&mut self, b: u8) {
        self.0.push(b);
    }
}

/// Layout 2: fixed-width little-endian integers in `body`; a string's
/// bytes go to `text` and its end offset there (`u32`) to `body`.
struct V2 {
    body: Vec<u8>,
    text: Vec<u8>,
}

impl Encoding for V2 {
    fn count(&mut self, n: usize) {
        // Lists here are labels: far fewer than 2^32 (the batch's size is
        // checked as a whole in `pack_v2`).
        self.u32(u32::try_from(n).unwrap_or(u32::MAX));
    }

    fn str(&mut self, s: &str) {
        self.text.extend_from_slice(s.as_bytes());
        // A text block past 4 GiB is refused in `pack_v2`.
        self.u32(self.text.len() as u32);
    }

    fn u64(&mut self, v: u64) {
        self.body.extend_from_slice(&v.to_le_bytes());
    }

    fn u32(&mut self, v: u32) {
        self.body.extend_from_slice(&v.to_le_bytes());
    }

    fn i64(&mut self, v: i64) {
        self.body.extend_from_slice(&v.to_le_bytes());
    }

    fn byte(&mut self, b: u8) {
        self.body.push(b);
    }
}

/// The WIT types written field by field in WIT order, the same for both
/// layouts; for layout 1 what postcard's serializer gives these types
/// (tested against it), without serde's per-field calls.
struct Writer<E>(E);

impl<E: Encoding> Writer<E> {
    fn timestamp(&mut self, t: &Timestamp) {
        self.0.i64(t.seconds);
        self.0.u32(t.nanos);
    }

    fn option_timestamp(&mut self, t: &Option<Timestamp>) {
        match t {
            None => self.0.byte(0),
            Some(t) => {
                self.0.byte(1);
                self.timestamp(t);
            }
        }
    }

    fn meta(&mut self, m: &Meta) {
        self.0.str(&m.uid);
        self.0.str(&m.name);
        self.0.str(&m.namespace);
        self.0.str(&m.resource_version);
        self.0.u64(m.resource_version_num);
        self.0.count(m.labels.len());
        for (k, v) in &m.labels {
            self.0.str(k);
            self.0.str(v);
        }
        self.timestamp(&m.created);
    }

    fn record(&mut self, r: &Record) {
        match r {
            Record::Job(j) => {
                self.0.byte(0);
                self.meta(&j.meta);
                for s in [
                    &j.api_version,
                    &j.kind,
                    &j.status,
                    &j.resources,
                    &j.tenant,
                    &j.owner,
                    &j.region,
                ] {
                    self.0.str(s);
                }
                self.timestamp(&j.modified);
                self.option_timestamp(&j.running_at);
                self.option_timestamp(&j.finished_at);
                self.0.str(&j.remark);
            }
            Record::Pod(p) => {
                self.0.byte(1);
                self.meta(&p.meta);
                for s in [
                    &p.job_uid,
                    &p.job_kind,
                    &p.replica_type,
                    &p.status,
                    &p.image,
                    &p.resources,
                    &p.host_ip,
                    &p.pod_ip,
                    &p.region,
                ] {
                    self.0.str(s);
                }
                self.timestamp(&p.modified);
                self.option_timestamp(&p.started_at);
                self.option_timestamp(&p.finished_at);
                self.0.str(&p.remark);
            }
            Record::Event(e) => {
                self.0.byte(2);
                self.meta(&e.meta);
                let o = &e.involved;
                for s in [
                    &o.api_version,
                    &o.kind,
                    &o.namespace,
                    &o.name,
                    &o.uid,
                    &e.event_type,
                    &e.reason,
                    &e.message,
                    &e.source,
                ] {
                    self.0.str(s);
                }
                self.0.u32(e.count);
                self.timestamp(&e.first_seen);
                self.timestamp(&e.last_seen);
                self.0.str(&e.region);
            }
        }
    }

    fn change(&mut self, c: &Entry) {
        match c {
            Change::Applied(r) => {
                self.0.byte(0);
                self.record(r);
            }
            Change::Removed(r) => {
                self.0.byte(1);
                self.timestamp(&r.at);
                self.record(&r.record);
            }
            Change::Tombstone(t) => {
                self.0.byte(2);
                self.0.byte(match t.kind {
                    RecordKind::Job => 0,
                    RecordKind::Pod => 1,
                    RecordKind::Event => 2,
                });
                self.0.str(&t.uid);
                self.timestamp(&t.at);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kubesink_normalize::record::{
        Change, Event, Job, Meta, ObjectRef, Pod, Record, RecordKind, Removal, Timestamp, Tombstone,
    };

    kubesink_packed::impl_from_wit!(kubesink_normalize::record::kubesink::sink::types);

    fn ts(seconds: i64, nanos: u32) -> Timestamp {
        Timestamp { seconds, nanos }
    }

    fn meta(uid: &str) -> Meta {
        Meta {
            uid: uid.into(),
            name: format!("{uid}-name"),
            namespace: "team-a".into(),
            resource_version: "1042".into(),
            resource_version_num: 1042,
            labels: vec![
                ("app".into(), "mnist".into()),
                ("tier".into(), String::new()),
            ],
            created: ts(-5, 999_999_999),
        }
    }

    fn batch() -> Vec<Entry> {
        let job = Job {
            meta: meta("j1"),
            api_version: "training.kubedl.io/v1alpha1".into(),
            kind: "TFJob".into(),
            status: "Running".into(),
            resources: r#"{"Worker":{"replicas":2}}"#.into(),
            tenant: "t".into(),
            owner: "o".into(),
            region: "cn-hangzhou".into(),
            modified: ts(100, 1),
            running_at: Some(ts(101, 2)),
            finished_at: None,
            remark: "ünïcode".into(),
        };
        let pod = Pod {
            meta: meta("p1"),
            job_uid: "j1".into(),
            job_kind: "TFJob".into(),
            replica_type: "Worker".into(),
            status: "Failed".into(),
            image: "registry/img:v1".into(),
            resources: "{}".into(),
            host_ip: "10.0.0.1".into(),
            pod_ip: "10.1.0.1".into(),
            region: String::new(),
            modified: ts(7, 0),
            started_at: None,
            finished_at: Some(ts(u32::MAX.into(), 999_999_999)),
            remark: "Reason: OOMKilled\nExitCode: 137\nMessage: ".into(),
        };
        let event = Event {
            meta: meta("e1"),
            involved: ObjectRef {
                api_version: "v1".into(),
                kind: "Pod".into(),
                namespace: "team-a".into(),
                name: "p1-name".into(),
                uid: "p1".into(),
            },
            event_type: "Warning".into(),
            reason: "BackOff".into(),
            // Longer than 127 bytes: a length of two varint bytes.
            message: "Back-off restarting failed container. ".repeat(8),
            source: "kubelet/node-1".into(),
            count: u32::MAX,
            first_seen: ts(i64::MIN, 0),
            last_seen: ts(i64::MAX, 1),
            region: "r".into(),
        };
        vec![
            Change::Applied(Record::Job(job)),
            Change::Removed(Removal {
                at: ts(9, 9),
                record: Record::Pod(pod),
            }),
            Change::Applied(Record::Event(event)),
            Change::Tombstone(Tombstone {
                kind: RecordKind::Pod,
                uid: "gone".into(),
                at: ts(0, 0),
            }),
        ]
    }

    /// What the host sends decodes, with the sinks' decoder, to the same
    /// batch field for field: the host's record types serialize in WIT
    /// order with WIT's case indexes.
    #[test]
    fn the_host_encoding_is_what_sinks_decode() {
        let batch = batch();
        let mut packer = Packer::default();
        let bytes = packer.pack(&batch);
        // Byte for byte what postcard's serializer makes of the same
        // types (their serde derives): the layout the sinks' decoder reads.
        assert_eq!(bytes, postcard::to_allocvec(&batch).unwrap());
        let decoded = kubesink_packed::decode(&bytes).unwrap();
        assert_eq!(decoded, packed_batch(&batch));
        assert_eq!(kubesink_packed::encode(&decoded), bytes);
        // The buffer is reused, and holds only the next batch.
        packer.recycle(bytes);
        let bytes = packer.pack(&batch[3..]);
        assert_eq!(
            kubesink_packed::decode(&bytes).unwrap(),
            packed_batch(&batch[3..])
        );
        packer.recycle(bytes);
        assert_eq!(packer.pack(&[]), [0]);
    }

    /// Layout 2 decodes, with the sinks' decoder, to the same batch; its
    /// text is one block after the records.
    #[test]
    fn the_host_encoding_in_layout_2_is_what_sinks_decode() {
        let batch = batch();
        let mut packer = Packer::default();
        let bytes = packer.pack_v2(&batch).unwrap();
        assert_eq!(
            kubesink_packed::decode_v2(&bytes).unwrap(),
            packed_batch(&batch)
        );
        let count = u32::from_le_bytes(bytes[..4].try_into().unwrap());
        let records = u32::from_le_bytes(bytes[4..8].try_into().unwrap()) as usize;
        assert_eq!(count, 4);
        assert!(
            std::str::from_utf8(&bytes[8 + records..])
                .unwrap()
                .ends_with("gone")
        );
        // Both buffers are reused, and hold only the next batch.
        packer.recycle(bytes);
        let bytes = packer.pack_in(Layout::V2, &batch[3..]).unwrap();
        assert_eq!(
            kubesink_packed::decode_v2(&bytes).unwrap(),
            packed_batch(&batch[3..])
        );
        packer.recycle(bytes);
        assert_eq!(packer.pack_v2(&[]).unwrap(), [0; 8]);
        assert_eq!(packer.pack_in(Layout::V1, &[]).unwrap(), [0]);
    }
}
