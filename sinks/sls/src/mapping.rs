//! Records become SLS logs.
//!
//! Events follow KubeDL's event log: topic from the `topic` setting (default
//! ""), source = the event's `component/host`, time = last seen, contents
//! `FirstTimestamp`, `LastTimestamp` (RFC 3339), `Count`, `Name`, `Kind`,
//! `ObjUID`, `ObjNamespace`, `ObjName`, `Type`, `Reason`, `Message`, `Region`.
//! A removed event (expired from the cluster) writes nothing: its
//! occurrences were logged already.
//!
//! Jobs and pods are written only when `jobs_topic` / `pods_topic` are set,
//! under those topics with source `kubesink`, time = when the status last
//! changed (or when removed), one log per change, with their record fields
//! as keys (`Name`, `Namespace`, `UID`, `Kind`, `Status`, ..., `Deleted`).
//!
//! Every value is cut to SLS's 1 MiB at a UTF-8 character boundary.

use std::borrow::Cow;

use crate::proto::Log;
use crate::settings::{SLS_MAX_TOPIC, SLS_MAX_VALUE, Settings};
use crate::sign::rfc3339;
use kubesink_packed::{Change, Event, Job, Pod, Record, Removal, Timestamp};

/// A log and the group it belongs to, borrowing the settings and the
/// batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mapped<'a> {
    /// LogGroup topic.
    pub topic: &'a str,
    /// LogGroup source.
    pub source: &'a str,
    /// The log.
    pub log: Log<'a>,
}

/// `s` cut to at most `max` bytes at a character boundary.
pub fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

fn secs_u32(t: &Timestamp) -> u32 {
    t.seconds.clamp(0, i64::from(u32::MAX)) as u32
}

fn ts(t: &Timestamp) -> Cow<'static, str> {
    Cow::Owned(rfc3339(t.seconds))
}

fn opt_ts(t: &Option<Timestamp>) -> Cow<'static, str> {
    t.as_ref().map_or(Cow::Borrowed(""), ts)
}

/// A record's field, borrowed.
fn b(s: &str) -> Cow<'_, str> {
    Cow::Borrowed(s)
}

fn log_at<'a>(time: &Timestamp, mut contents: Vec<(&'static str, Cow<'a, str>)>) -> Log<'a> {
    for (_, v) in &mut contents {
        if v.len() > SLS_MAX_VALUE {
            let cut = truncate(v, SLS_MAX_VALUE).len();
            match v {
                Cow::Borrowed(s) => *s = &s[..cut],
                Cow::Owned(s) => s.truncate(cut),
            }
        }
    }
    Log {
        time: secs_u32(time),
        time_ns: (time.nanos != 0).then_some(time.nanos),
        contents,
    }
}

/// KubeDL's event log.
pub fn event_log<'a>(e: &Event<'a>) -> Log<'a> {
    log_at(
        &e.last_seen,
        vec![
            ("FirstTimestamp", ts(&e.first_seen)),
            ("LastTimestamp", ts(&e.last_seen)),
            ("Count", Cow::Owned(e.count.to_string())),
            ("Name", b(e.meta.name)),
            ("Kind", b(e.involved.kind)),
            ("ObjUID", b(e.involved.uid)),
            ("ObjNamespace", b(e.involved.namespace)),
            ("ObjName", b(e.involved.name)),
            ("Type", b(e.event_type)),
            ("Reason", b(e.reason)),
            ("Message", b(e.message)),
            ("Region", b(e.region)),
        ],
    )
}

/// `Deleted` and when: `removed_at` is the removal time of a removed
/// object, `None` for an applied one.
fn removed(removed_at: Option<&Timestamp>) -> (Cow<'static, str>, Option<&Timestamp>) {
    match removed_at {
        None => (b("false"), None),
        Some(at) => (b("true"), Some(at)),
    }
}

fn job_log<'a>(j: &Job<'a>, removed_at: Option<&Timestamp>) -> Log<'a> {
    let (deleted, at) = removed(removed_at);
    log_at(
        at.unwrap_or(&j.modified),
        vec![
            ("Name", b(j.meta.name)),
            ("Namespace", b(j.meta.namespace)),
            ("UID", b(j.meta.uid)),
            ("ResourceVersion", b(j.meta.resource_version)),
            ("ApiVersion", b(j.api_version)),
            ("Kind", b(j.kind)),
            ("Status", b(j.status)),
            ("Resources", b(j.resources)),
            ("Tenant", b(j.tenant)),
            ("Owner", b(j.owner)),
            ("Region", b(j.region)),
            ("Created", ts(&j.meta.created)),
            ("Modified", ts(&j.modified)),
            ("RunningAt", opt_ts(&j.running_at)),
            ("FinishedAt", opt_ts(&j.finished_at)),
            ("Remark", b(j.remark)),
            ("Deleted", deleted),
            ("DeletedAt", at.map_or(b(""), ts)),
        ],
    )
}

fn pod_log<'a>(p: &Pod<'a>, removed_at: Option<&Timestamp>) -> Log<'a> {
    let (deleted, at) = removed(removed_at);
    log_at(
        at.unwrap_or(&p.modified),
        vec![
            ("Name", b(p.meta.name)),
            ("Namespace", b(p.meta.namespace)),
            ("UID", b(p.meta.uid)),
            ("ResourceVersion", b(p.meta.resource_version)),
            ("JobUID", b(p.job_uid)),
            ("JobKind", b(p.job_kind)),
            ("ReplicaType", b(p.replica_type)),
            ("Status", b(p.status)),
            ("Image", b(p.image)),
            ("Resources", b(p.resources)),
            ("HostIP", b(p.host_ip)),
            ("PodIP", b(p.pod_ip)),
            ("Region", b(p.region)),
            ("Created", ts(&p.meta.created)),
            ("Modified", ts(&p.modified)),
            ("StartedAt", opt_ts(&p.started_at)),
            ("FinishedAt", opt_ts(&p.finished_at)),
            ("Remark", b(p.remark)),
            ("Deleted", deleted),
            ("DeletedAt", at.map_or(b(""), ts)),
        ],
    )
}

/// The log for one change, or `None` when the settings do not write it. A
/// tombstone has no record to log (and this sink, holding nothing, is sent
/// none): `None`.
pub fn map_entry<'a>(settings: &'a Settings, change: &Change<'a>) -> Option<Mapped<'a>> {
    let (record, removed_at) = match change {
        Change::Applied(r) => (r, None),
        Change::Removed(Removal { at, record }) => (record, Some(at)),
        Change::Tombstone(_) => return None,
    };
    match record {
        Record::Event(e) if settings.events && removed_at.is_none() => Some(Mapped {
            topic: &settings.topic,
            source: truncate(e.source, SLS_MAX_TOPIC),
            log: event_log(e),
        }),
        Record::Job(j) => settings.jobs_topic.as_ref().map(|topic| Mapped {
            topic,
            source: "kubesink",
            log: job_log(j, removed_at),
        }),
        Record::Pod(p) => settings.pods_topic.as_ref().map(|topic| Mapped {
            topic,
            source: "kubesink",
            log: pod_log(p, removed_at),
        }),
        Record::Event(_) => None,
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use kubesink_packed::{Meta, ObjectRef, RecordKind, Tombstone};

    /// `s` for as long as the test runs.
    fn keep(s: &str) -> &'static str {
        s.to_owned().leak()
    }

    pub(crate) fn meta(uid: &str, name: &str) -> Meta<'static> {
        Meta {
            uid: keep(uid),
            name: keep(name),
            namespace: "default",
            resource_version: "7",
            resource_version_num: 7,
            labels: vec![],
            created: Timestamp {
                seconds: 1_714_557_000,
                nanos: 0,
            },
        }
    }

    pub(crate) fn event(uid: &str, count: u32, message: &str) -> Event<'static> {
        Event {
            meta: meta(uid, &format!("pod-a.{uid}")),
            involved: ObjectRef {
                api_version: "v1",
                kind: "Pod",
                namespace: "default",
                name: "pod-a",
                uid: "pod-uid",
            },
            event_type: "Warning",
            reason: "BackOff",
            message: keep(message),
            source: "kubelet/node-1",
            count,
            first_seen: Timestamp {
                seconds: 1_714_557_600,
                nanos: 0,
            },
            last_seen: Timestamp {
                seconds: 1_714_557_660,
                nanos: 5,
            },
            region: "cn-hangzhou",
        }
    }

    pub(crate) fn settings(extra: &[(&str, &str)]) -> Settings {
        let mut pairs: Vec<(String, String)> = [
            ("endpoint", "http://127.0.0.1:9000"),
            ("project", "proj"),
            ("logstore", "events"),
            ("access_key_id", "id"),
            ("access_key_secret", "secret"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        pairs.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        Settings::parse(&pairs).expect("test settings are valid")
    }

    #[test]
    fn event_has_kubedl_keys_and_last_seen_time() {
        let s = settings(&[]);
        let e = event("u1", 3, "Back-off restarting failed container");
        let change = Change::Applied(Record::Event(e));
        let m = map_entry(&s, &change).expect("mapped");
        assert_eq!(m.topic, "");
        assert_eq!(m.source, "kubelet/node-1");
        assert_eq!(m.log.time, 1_714_557_660);
        assert_eq!(m.log.time_ns, Some(5));
        let get = |k: &str| {
            m.log
                .contents
                .iter()
                .find(|(key, _)| *key == k)
                .map(|(_, v)| v.as_ref())
        };
        assert_eq!(get("FirstTimestamp"), Some("2024-05-01T10:00:00Z"));
        assert_eq!(get("LastTimestamp"), Some("2024-05-01T10:01:00Z"));
        assert_eq!(get("Count"), Some("3"));
        assert_eq!(get("Name"), Some("pod-a.u1"));
        assert_eq!(get("Kind"), Some("Pod"));
        assert_eq!(get("ObjUID"), Some("pod-uid"));
        assert_eq!(get("ObjNamespace"), Some("default"));
        assert_eq!(get("ObjName"), Some("pod-a"));
        assert_eq!(get("Type"), Some("Warning"));
        assert_eq!(get("Reason"), Some("BackOff"));
        assert_eq!(get("Message"), Some("Back-off restarting failed container"));
        assert_eq!(get("Region"), Some("cn-hangzhou"));
        assert_eq!(m.log.contents.len(), 12);
    }

    #[test]
    fn removed_events_and_unconfigured_jobs_are_skipped() {
        let s = settings(&[]);
        let at = Timestamp {
            seconds: 1,
            nanos: 0,
        };
        let removed = Change::Removed(Removal {
            at,
            record: Record::Event(event("u", 1, "m")),
        });
        assert_eq!(map_entry(&s, &removed), None);
        let jobs = settings(&[("jobs_topic", "jobs")]);
        let tombstone = Change::Tombstone(Tombstone {
            kind: RecordKind::Job,
            uid: "u",
            at,
        });
        assert_eq!(map_entry(&jobs, &tombstone), None);
        let off = settings(&[("events", "false")]);
        let applied = Change::Applied(Record::Event(event("u", 1, "m")));
        assert_eq!(map_entry(&off, &applied), None);
    }

    #[test]
    fn huge_values_are_cut_at_a_char_boundary() {
        let s = settings(&[]);
        let msg = "é".repeat(SLS_MAX_VALUE); // 2 bytes each
        let change = Change::Applied(Record::Event(event("u", 1, &msg)));
        let m = map_entry(&s, &change).expect("mapped");
        let v = &m
            .log
            .contents
            .iter()
            .find(|(k, _)| *k == "Message")
            .expect("message")
            .1;
        assert_eq!(v.len(), SLS_MAX_VALUE);
        assert!(v.chars().all(|c| c == 'é'));
        assert_eq!(truncate("aé", 2), "a");
    }
}
