//! The decoder: the layout of `wit/README.md` ("Packed batches") read
//! field by field from a cursor, without serde's visitors. Each WIT type
//! has one function here, in WIT field order; the types' serde derives
//! (used by [`crate::encode`]) write the same layout, which the tests
//! check both ways.

use crate::{
    Change, Event, Job, Meta, ObjectRef, Pod, Record, RecordKind, Removal, Timestamp, Tombstone,
};

/// What went wrong, before the caller adds where.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fault {
    /// The buffer ends inside a value.
    CutShort,
    /// A varint longer than its type allows, or past its type's range.
    BadVarint,
    /// A case index past the type's cases (or an option tag not 0 or 1).
    BadCase(&'static str, u32),
    /// A string's bytes are not UTF-8.
    NotUtf8,
}

impl std::fmt::Display for Fault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Fault::CutShort => f.write_str("the buffer ends inside a value"),
            Fault::BadVarint => f.write_str("a varint too long for its type"),
            Fault::BadCase(ty, case) => write!(f, "case {case} of `{ty}`, which has no such case"),
            Fault::NotUtf8 => f.write_str("a string that is not UTF-8"),
        }
    }
}

/// A cursor over a packed buffer.
#[derive(Debug, Clone)]
pub(crate) struct Reader<'a> {
    pub(crate) rest: &'a [u8],
}

type Res<T> = Result<T, Fault>;

impl<'a> Reader<'a> {
    #[inline]
    fn byte(&mut self) -> Res<u8> {
        let (&b, rest) = self.rest.split_first().ok_or(Fault::CutShort)?;
        self.rest = rest;
        Ok(b)
    }

    /// An unsigned LEB128 varint of at most `BITS` bits (postcard's rule:
    /// at most `ceil(BITS / 7)` bytes, and the last byte's bits past
    /// `BITS` clear).
    #[inline]
    fn varint<const BITS: u32>(&mut self) -> Res<u64> {
        let first = self.byte()?;
        if first & 0x80 == 0 {
            return Ok(u64::from(first));
        }
        let mut out = u64::from(first & 0x7f);
        let max_bytes = BITS.div_ceil(7);
        for i in 1..max_bytes {
            let b = self.byte()?;
            let shift = 7 * i;
            if i == max_bytes - 1 && u32::from(b) >> (BITS - shift) != 0 {
                return Err(Fault::BadVarint);
            }
            out |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(out);
            }
        }
        Err(Fault::BadVarint)
    }

    #[inline]
    pub(crate) fn u64(&mut self) -> Res<u64> {
        self.varint::<64>()
    }

    #[inline]
    fn u32(&mut self) -> Res<u32> {
        // In range: the varint has at most 32 bits.
        self.varint::<32>().map(|v| v as u32)
    }

    #[inline]
    fn s64(&mut self) -> Res<i64> {
        let z = self.u64()?;
        Ok(((z >> 1) as i64) ^ -((z & 1) as i64))
    }

    #[inline]
    fn len(&mut self) -> Res<usize> {
        usize::try_from(self.varint::<{ usize::BITS }>()?).map_err(|_| Fault::BadVarint)
    }

    #[inline]
    fn str(&mut self) -> Res<&'a str> {
        let n = self.len()?;
        if n > self.rest.len() {
            return Err(Fault::CutShort);
        }
        let (bytes, rest) = self.rest.split_at(n);
        let s = std::str::from_utf8(bytes).map_err(|_| Fault::NotUtf8)?;
        self.rest = rest;
        Ok(s)
    }

    #[inline]
    fn case(&mut self, ty: &'static str, cases: u32) -> Res<u32> {
        let case = self.u32()?;
        if case < cases {
            Ok(case)
        } else {
            Err(Fault::BadCase(ty, case))
        }
    }

    #[inline]
    fn timestamp(&mut self) -> Res<Timestamp> {
        Ok(Timestamp {
            seconds: self.s64()?,
            nanos: self.u32()?,
        })
    }

    #[inline]
    fn option_timestamp(&mut self) -> Res<Option<Timestamp>> {
        match self.byte()? {
            0 => Ok(None),
            1 => self.timestamp().map(Some),
            b => Err(Fault::BadCase("option", u32::from(b))),
        }
    }

    fn meta(&mut self) -> Res<Meta<'a>> {
        let uid = self.str()?;
        let name = self.str()?;
        let namespace = self.str()?;
        let resource_version = self.str()?;
        let resource_version_num = self.u64()?;
        let n = self.len()?;
        // Two bytes at least per label: reserve no more than could follow.
        let mut labels = Vec::with_capacity(n.min(self.rest.len() / 2));
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

    fn job(&mut self) -> Res<Job<'a>> {
        Ok(Job {
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
        })
    }

    fn pod(&mut self) -> Res<Pod<'a>> {
        Ok(Pod {
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
        })
    }

    fn event(&mut self) -> Res<Event<'a>> {
        Ok(Event {
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
        })
    }

    fn record_kind(&mut self) -> Res<RecordKind> {
        Ok(match self.case("record-kind", 3)? {
            0 => RecordKind::Job,
            1 => RecordKind::Pod,
            _ => RecordKind::Event,
        })
    }

    fn record(&mut self) -> Res<Record<'a>> {
        Ok(match self.case("record", 3)? {
            0 => Record::Job(self.job()?),
            1 => Record::Pod(self.pod()?),
            _ => Record::Event(self.event()?),
        })
    }

    /// One `change`.
    pub(crate) fn change(&mut self) -> Res<Change<'a>> {
        Ok(match self.case("change", 3)? {
            0 => Change::Applied(self.record()?),
            1 => Change::Removed(Removal {
                at: self.timestamp()?,
                record: self.record()?,
            }),
            _ => Change::Tombstone(Tombstone {
                kind: self.record_kind()?,
                uid: self.str()?,
                at: self.timestamp()?,
            }),
        })
    }
}
