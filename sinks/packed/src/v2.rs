//! Packed layout 2 (`write-packed-v2`, since 0.2.3): a header of two
//! `u32`s (the number of changes, the length of the records' bytes), the
//! records, then one block of text. Integers are little-endian of fixed
//! width; a string is the `u32` end of its bytes in the text block, its
//! start the previous string's end. The block is checked to be UTF-8 once,
//! and each string is a slice of it: no varint and no UTF-8 check per
//! field, which is what the guest's time went to in layout 1.

use crate::{
    Change, DecodeError, Event, Job, Meta, ObjectRef, Pod, Record, RecordKind, Removal, Timestamp,
    Tombstone,
};

/// The fewest bytes of the records a change takes (a tombstone: two case
/// bytes, a string's end, a timestamp).
const SMALLEST_CHANGE: usize = 2 + 4 + 12;

/// A cursor over a layout-2 batch.
#[derive(Debug, Clone)]
pub(crate) struct Reader<'a> {
    /// The records not read yet.
    body: &'a [u8],
    /// The length of all the records' bytes, to say where an error is.
    body_len: usize,
    /// The text block.
    text: &'a str,
    /// Where the next string starts in `text`.
    text_at: usize,
}

/// Why a read failed (turned into a [`DecodeError`] with the place).
#[derive(Debug, Clone, Copy)]
pub(crate) enum Fault {
    Short,
    Case(&'static str, u8),
    Text(u32),
}

impl std::fmt::Display for Fault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Fault::Short => f.write_str("the records end in the middle of a value"),
            Fault::Case(what, n) => write!(f, "case {n} is not a {what}"),
            Fault::Text(end) => write!(
                f,
                "a string ending at {end} does not follow the previous one in the text block, \
                 or ends outside it or inside a character"
            ),
        }
    }
}

impl<'a> Reader<'a> {
    /// The header checked, the text block checked to be UTF-8; and the
    /// number of items (changes, or statements) the header gives. `what`
    /// starts the messages of errors (`layout 2`).
    pub(crate) fn new(bytes: &'a [u8], what: &str) -> Result<(Self, u64), DecodeError> {
        let err = |detail: String| DecodeError {
            detail: format!("{what}: {detail} ({} bytes)", bytes.len()),
        };
        let Some((header, rest)) = bytes.split_first_chunk::<8>() else {
            return Err(err("shorter than its 8-byte header".to_owned()));
        };
        let count = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
        let body_len = u32::from_le_bytes([header[4], header[5], header[6], header[7]]) as usize;
        if body_len > rest.len() {
            return Err(err(format!(
                "the header gives {body_len} bytes of records, {} follow it",
                rest.len()
            )));
        }
        let (body, text) = rest.split_at(body_len);
        let text = std::str::from_utf8(text).map_err(|e| {
            err(format!(
                "the text block (from byte {}) is not UTF-8: {e}",
                8 + body_len
            ))
        })?;
        Ok((
            Reader {
                body,
                body_len,
                text,
                text_at: 0,
            },
            count.into(),
        ))
    }

    /// How many changes the records could hold at most.
    pub(crate) fn most_changes(&self) -> usize {
        self.body.len() / SMALLEST_CHANGE
    }

    /// Where the cursor is, counted from the start of the buffer.
    pub(crate) fn at(&self) -> usize {
        8 + self.body_len - self.body.len()
    }

    /// What is left after the last item (`what`: change, statement):
    /// `None` when nothing is.
    pub(crate) fn leftover(&self, what: &str) -> Option<String> {
        let text_left = self.text.len() - self.text_at;
        (!self.body.is_empty() || text_left > 0).then(|| {
            format!(
                "{} bytes of records and {text_left} of text left after the last {what}",
                self.body.len()
            )
        })
    }

    /// The records not read yet.
    pub(crate) fn rest(&self) -> usize {
        self.body.len()
    }

    #[inline]
    pub(crate) fn take<const N: usize>(&mut self) -> Result<[u8; N], Fault> {
        let (head, rest) = self.body.split_first_chunk::<N>().ok_or(Fault::Short)?;
        self.body = rest;
        Ok(*head)
    }

    /// The next `n` bytes of the records, as they are.
    #[inline]
    pub(crate) fn slice(&mut self, n: usize) -> Result<&'a [u8], Fault> {
        if n > self.body.len() {
            return Err(Fault::Short);
        }
        let (head, rest) = self.body.split_at(n);
        self.body = rest;
        Ok(head)
    }

    #[inline]
    pub(crate) fn byte(&mut self) -> Result<u8, Fault> {
        let (b, rest) = self.body.split_first().ok_or(Fault::Short)?;
        self.body = rest;
        Ok(*b)
    }

    #[inline]
    pub(crate) fn u32(&mut self) -> Result<u32, Fault> {
        self.take::<4>().map(u32::from_le_bytes)
    }

    #[inline]
    pub(crate) fn u64(&mut self) -> Result<u64, Fault> {
        self.take::<8>().map(u64::from_le_bytes)
    }

    #[inline]
    pub(crate) fn str(&mut self) -> Result<&'a str, Fault> {
        let end = self.u32()?;
        let s = self
            .text
            .get(self.text_at..end as usize)
            .ok_or(Fault::Text(end))?;
        self.text_at = end as usize;
        Ok(s)
    }

    #[inline]
    pub(crate) fn timestamp(&mut self) -> Result<Timestamp, Fault> {
        let [s0, s1, s2, s3, s4, s5, s6, s7, n0, n1, n2, n3] = self.take::<12>()?;
        Ok(Timestamp {
            seconds: i64::from_le_bytes([s0, s1, s2, s3, s4, s5, s6, s7]),
            nanos: u32::from_le_bytes([n0, n1, n2, n3]),
        })
    }

    fn option_timestamp(&mut self) -> Result<Option<Timestamp>, Fault> {
        match self.byte()? {
            0 => Ok(None),
            1 => self.timestamp().map(Some),
            n => Err(Fault::Case("option", n)),
        }
    }

    fn meta(&mut self) -> Result<Meta<'a>, Fault> {
        let uid = self.str()?;
        let name = self.str()?;
        let namespace = self.str()?;
        let resource_version = self.str()?;
        let resource_version_num = self.u64()?;
        let n = self.u32()? as usize;
        // Each label takes 8 bytes of records: a count larger than what
        // is left reserves nothing.
        let mut labels = Vec::with_capacity(n.min(self.body.len() / 8));
        for _ in 0..n {
            labels.push((self.str()?, self.str()?));
        }
        Ok(Meta {
            uid,
            name,
            namespace,
            resource_version,
            resource_version_num,
            labels,
            created: self.timestamp()?,
        })
    }

    fn record(&mut self) -> Result<Record<'a>, Fault> {
        Ok(match self.byte()? {
            0 => Record::Job(Job {
                meta: self.meta()?,
                api_version: self.str()?,
                kind: self.str()?,
                status: self.str()?,
                resources: self.str()?,
                tenant: self.str()?,
                owner: self.str()?,
                region: self.str()?,
                modified: self.timestamp()?,
                running_at: self.option_timestamp()?,
                finished_at: self.option_timestamp()?,
                remark: self.str()?,
            }),
            1 => Record::Pod(Pod {
                meta: self.meta()?,
                job_uid: self.str()?,
                job_kind: self.str()?,
                replica_type: self.str()?,
                status: self.str()?,
                image: self.str()?,
                resources: self.str()?,
                host_ip: self.str()?,
                pod_ip: self.str()?,
                region: self.str()?,
                modified: self.timestamp()?,
                started_at: self.option_timestamp()?,
                finished_at: self.option_timestamp()?,
                remark: self.str()?,
            }),
            2 => Record::Event(Event {
                meta: self.meta()?,
                involved: ObjectRef {
                    api_version: self.str()?,
                    kind: self.str()?,
                    namespace: self.str()?,
                    name: self.str()?,
                    uid: self.str()?,
                },
                event_type: self.str()?,
                reason: self.str()?,
                message: self.str()?,
                source: self.str()?,
                count: self.u32()?,
                first_seen: self.timestamp()?,
                last_seen: self.timestamp()?,
                region: self.str()?,
            }),
            n => return Err(Fault::Case("record", n)),
        })
    }

    /// The next change.
    pub(crate) fn change(&mut self) -> Result<Change<'a>, Fault> {
        Ok(match self.byte()? {
            0 => Change::Applied(self.record()?),
            1 => Change::Removed(Removal {
                at: self.timestamp()?,
                record: self.record()?,
            }),
            2 => Change::Tombstone(Tombstone {
                kind: match self.byte()? {
                    0 => RecordKind::Job,
                    1 => RecordKind::Pod,
                    2 => RecordKind::Event,
                    n => return Err(Fault::Case("record-kind", n)),
                },
                uid: self.str()?,
                at: self.timestamp()?,
            }),
            n => return Err(Fault::Case("change", n)),
        })
    }
}
