//! Packed batches (WIT `kubesink:sink/packed`, since 0.2.2): a sink that
//! exports `write-packed` gets each batch as one buffer, the batch's
//! `list<change>` in the postcard wire format, instead of through `write`.
//! Lowering `write`'s batch enters the guest's allocator once per string
//! and list (about 17 wasm calls per record); the buffer is one allocation
//! and one copy. The layout: `wit/README.md`, "Packed batches"; sinks in
//! Rust decode it with `kubesink-packed`.

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

/// Encodes batches into a buffer reused from call to call (public for
/// the benchmarks, which time it natively).
#[derive(Debug, Default)]
pub struct Packer {
    buf: Vec<u8>,
}

impl Packer {
    /// `batch` packed. Hand the buffer back with [`Packer::recycle`].
    pub fn pack(&mut self, batch: &[Entry]) -> Vec<u8> {
        let mut buf = std::mem::take(&mut self.buf);
        buf.clear();
        let mut w = Writer(buf);
        w.len(batch.len());
        for change in batch {
            w.change(change);
        }
        w.0
    }

    /// Keeps `buf`'s allocation for the next batch (unless it is large).
    pub fn recycle(&mut self, buf: Vec<u8>) {
        if buf.capacity() <= KEEP_BYTES {
            self.buf = buf;
        }
    }
}

/// The layout of `wit/README.md` ("Packed batches"), written field by
/// field in WIT order: what postcard's serializer gives these types
/// (tested against it), without serde's per-field calls.
struct Writer(Vec<u8>);

impl Writer {
    /// An unsigned LEB128 varint.
    fn varint(&mut self, mut v: u64) {
        while v >= 0x80 {
            self.0.push((v as u8) | 0x80);
            v >>= 7;
        }
        self.0.push(v as u8);
    }

    fn len(&mut self, n: usize) {
        self.varint(n as u64);
    }

    fn str(&mut self, s: &str) {
        self.len(s.len());
        self.0.extend_from_slice(s.as_bytes());
    }

    /// A case index (WIT order).
    fn case(&mut self, case: u8) {
        self.0.push(case);
    }

    fn timestamp(&mut self, t: &Timestamp) {
        // zigzag
        self.varint(((t.seconds << 1) ^ (t.seconds >> 63)) as u64);
        self.varint(t.nanos.into());
    }

    fn option_timestamp(&mut self, t: &Option<Timestamp>) {
        match t {
            None => self.0.push(0),
            Some(t) => {
                self.0.push(1);
                self.timestamp(t);
            }
        }
    }

    fn meta(&mut self, m: &Meta) {
        self.str(&m.uid);
        self.str(&m.name);
        self.str(&m.namespace);
        self.str(&m.resource_version);
        self.varint(m.resource_version_num);
        self.len(m.labels.len());
        for (k, v) in &m.labels {
            self.str(k);
            self.str(v);
        }
        self.timestamp(&m.created);
    }

    fn record(&mut self, r: &Record) {
        match r {
            Record::Job(j) => {
                self.case(0);
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
                    self.str(s);
                }
                self.timestamp(&j.modified);
                self.option_timestamp(&j.running_at);
                self.option_timestamp(&j.finished_at);
                self.str(&j.remark);
            }
            Record::Pod(p) => {
                self.case(1);
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
                    self.str(s);
                }
                self.timestamp(&p.modified);
                self.option_timestamp(&p.started_at);
                self.option_timestamp(&p.finished_at);
                self.str(&p.remark);
            }
            Record::Event(e) => {
                self.case(2);
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
                    self.str(s);
                }
                self.varint(e.count.into());
                self.timestamp(&e.first_seen);
                self.timestamp(&e.last_seen);
                self.str(&e.region);
            }
        }
    }

    fn change(&mut self, c: &Entry) {
        match c {
            Change::Applied(r) => {
                self.case(0);
                self.record(r);
            }
            Change::Removed(r) => {
                self.case(1);
                self.timestamp(&r.at);
                self.record(&r.record);
            }
            Change::Tombstone(t) => {
                self.case(2);
                self.case(match t.kind {
                    RecordKind::Job => 0,
                    RecordKind::Pod => 1,
                    RecordKind::Event => 2,
                });
                self.str(&t.uid);
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
}
