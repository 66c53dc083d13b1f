//! Protobuf encoding of SLS's `LogGroup` (proto2), by hand: the messages are
//! four small ones, and knowing each log's exact encoded size lets the
//! batcher split requests precisely at SLS's body limit.
//!
//! ```text
//! Log      { required uint32 Time = 1; repeated Content Contents = 2; optional fixed32 Time_ns = 4; }
//! Content  { required string Key = 1; required string Value = 2; }
//! LogGroup { repeated Log Logs = 1; optional string Topic = 3; optional string Source = 4; }
//! ```

use std::borrow::Cow;

/// One log: a time and key/value contents. The keys are the sink's own
/// constants and the values mostly borrow the batch's records, so mapping
/// an event copies only the values it formats (times, count).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Log<'a> {
    /// Unix seconds.
    pub time: u32,
    /// Nanoseconds part.
    pub time_ns: Option<u32>,
    /// Contents in order.
    pub contents: Vec<(&'static str, Cow<'a, str>)>,
}

fn varint_len(mut n: u64) -> usize {
    let mut len = 1;
    while n >= 0x80 {
        n >>= 7;
        len += 1;
    }
    len
}

fn put_varint(out: &mut Vec<u8>, mut n: u64) {
    while n >= 0x80 {
        out.push((n as u8) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

/// Bytes of a length-delimited field with a one-byte tag.
fn field_len(payload: usize) -> usize {
    1 + varint_len(payload as u64) + payload
}

fn put_bytes(out: &mut Vec<u8>, tag: u8, bytes: &[u8]) {
    out.push(tag);
    put_varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

impl Log<'_> {
    fn content_len(k: &str, v: &str) -> usize {
        field_len(k.len()) + field_len(v.len())
    }

    /// Encoded size of the Log message itself.
    pub fn body_len(&self) -> usize {
        1 + varint_len(u64::from(self.time))
            + self
                .contents
                .iter()
                .map(|(k, v)| field_len(Self::content_len(k, v)))
                .sum::<usize>()
            + if self.time_ns.is_some() { 5 } else { 0 }
    }

    /// Bytes this log adds to a LogGroup (tag, length and message).
    pub fn framed_len(&self) -> usize {
        field_len(self.body_len())
    }

    fn encode_into(&self, out: &mut Vec<u8>) {
        out.push(0x0a);
        put_varint(out, self.body_len() as u64);
        out.push(0x08);
        put_varint(out, u64::from(self.time));
        for (k, v) in &self.contents {
            out.push(0x12);
            put_varint(out, Self::content_len(k, v) as u64);
            put_bytes(out, 0x0a, k.as_bytes());
            put_bytes(out, 0x12, v.as_bytes());
        }
        if let Some(ns) = self.time_ns {
            out.push(0x25);
            out.extend_from_slice(&ns.to_le_bytes());
        }
    }
}

/// Bytes a LogGroup spends on its topic and source.
pub fn group_overhead(topic: &str, source: &str) -> usize {
    field_len(topic.len()) + field_len(source.len())
}

/// Encodes a LogGroup. Topic and source are always written (as the
/// official SDK does), even when empty.
pub fn encode_group(topic: &str, source: &str, logs: &[Log]) -> Vec<u8> {
    let len = group_overhead(topic, source) + logs.iter().map(Log::framed_len).sum::<usize>();
    let mut out = Vec::with_capacity(len);
    for log in logs {
        log.encode_into(&mut out);
    }
    put_bytes(&mut out, 0x1a, topic.as_bytes());
    put_bytes(&mut out, 0x22, source.as_bytes());
    debug_assert_eq!(out.len(), len);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_bytes() {
        let log = Log {
            time: 1,
            time_ns: None,
            contents: vec![("k", "v".into())],
        };
        let bytes = encode_group("t", "s", std::slice::from_ref(&log));
        assert_eq!(
            bytes,
            [
                0x0a, 0x0a, 0x08, 0x01, 0x12, 0x06, 0x0a, 0x01, b'k', 0x12, 0x01, b'v', 0x1a, 0x01,
                b't', 0x22, 0x01, b's'
            ]
        );
    }

    #[test]
    fn official_crate_decodes_it_and_sizes_are_exact() {
        let logs: Vec<Log> = (0..300u32)
            .map(|i| Log {
                time: 1_700_000_000 + i,
                time_ns: (i % 2 == 0).then_some(i * 1000),
                contents: vec![
                    ("Reason", "BackOff".into()),
                    ("Message", "x".repeat(i as usize).into()),
                    ("Unicode", "世界".into()),
                ],
            })
            .collect();
        let raw = encode_group("topic", "kubelet/node-1", &logs);
        let expected: usize = group_overhead("topic", "kubelet/node-1")
            + logs.iter().map(Log::framed_len).sum::<usize>();
        assert_eq!(raw.len(), expected);
        // A LogGroupList with one element is the group framed as field 1.
        let mut list = vec![0x0a];
        put_varint(&mut list, raw.len() as u64);
        list.extend_from_slice(&raw);
        let decoded = aliyun_log_sdk_protobuf::LogGroupList::decode(&list).expect("decodes");
        let group = &decoded.log_groups()[0];
        assert_eq!(group.topic().as_deref(), Some("topic"));
        assert_eq!(group.source().as_deref(), Some("kubelet/node-1"));
        assert_eq!(group.logs().len(), 300);
        let l = &group.logs()[7];
        assert_eq!(*l.time(), 1_700_000_007);
        assert_eq!(*l.time_ns(), None);
        assert_eq!(*group.logs()[8].time_ns(), Some(8000));
        assert_eq!(l.contents()[1].value(), &"x".repeat(7));
        assert_eq!(l.contents()[2].value(), "世界");
    }
}
