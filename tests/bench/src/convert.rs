//! Moves the host's records (`kubesink_normalize::record`, the WIT types the
//! runtime hands to a wasm sink) into the mysql sink's native model
//! (`kubesink_sink_mysql::model`), field by field: what the wasm adapter
//! of the sink does after the canonical ABI has lifted a batch, done here
//! for the native build of the same logic.

use kubesink_normalize::record as host;
use kubesink_sink_mysql as sink;

fn ts(t: host::Timestamp) -> sink::Timestamp {
    sink::Timestamp {
        seconds: t.seconds,
        nanos: t.nanos,
    }
}

fn meta(m: &host::Meta) -> sink::Meta {
    sink::Meta {
        uid: m.uid.clone(),
        name: m.name.clone(),
        namespace: m.namespace.clone(),
        resource_version: m.resource_version.clone(),
        resource_version_num: m.resource_version_num,
        labels: m.labels.clone(),
        created: ts(m.created),
    }
}

fn job(j: &host::Job) -> sink::Job {
    sink::Job {
        meta: meta(&j.meta),
        api_version: j.api_version.clone(),
        kind: j.kind.clone(),
        status: j.status.clone(),
        resources: j.resources.clone(),
        tenant: j.tenant.clone(),
        owner: j.owner.clone(),
        region: j.region.clone(),
        modified: ts(j.modified),
        running_at: j.running_at.map(ts),
        finished_at: j.finished_at.map(ts),
        remark: j.remark.clone(),
    }
}

fn pod(p: &host::Pod) -> sink::Pod {
    sink::Pod {
        meta: meta(&p.meta),
        job_uid: p.job_uid.clone(),
        job_kind: p.job_kind.clone(),
        replica_type: p.replica_type.clone(),
        status: p.status.clone(),
        image: p.image.clone(),
        resources: p.resources.clone(),
        host_ip: p.host_ip.clone(),
        pod_ip: p.pod_ip.clone(),
        region: p.region.clone(),
        modified: ts(p.modified),
        started_at: p.started_at.map(ts),
        finished_at: p.finished_at.map(ts),
        remark: p.remark.clone(),
    }
}

fn event(e: &host::Event) -> sink::Event {
    sink::Event {
        meta: meta(&e.meta),
        involved: sink::ObjectRef {
            api_version: e.involved.api_version.clone(),
            kind: e.involved.kind.clone(),
            namespace: e.involved.namespace.clone(),
            name: e.involved.name.clone(),
            uid: e.involved.uid.clone(),
        },
        event_type: e.event_type.clone(),
        reason: e.reason.clone(),
        message: e.message.clone(),
        source: e.source.clone(),
        count: e.count,
        first_seen: ts(e.first_seen),
        last_seen: ts(e.last_seen),
        region: e.region.clone(),
    }
}

/// The sink model's copy of a host entry.
#[must_use]
pub fn entry(e: &host::Entry) -> sink::Entry {
    let record = |r: &host::Record| match r {
        host::Record::Job(j) => sink::Record::Job(job(j)),
        host::Record::Pod(p) => sink::Record::Pod(pod(p)),
        host::Record::Event(ev) => sink::Record::Event(event(ev)),
    };
    match e {
        host::Change::Applied(r) => sink::Entry {
            change: sink::Change::Applied,
            record: record(r),
        },
        host::Change::Removed(r) => sink::Entry {
            change: sink::Change::Removed(ts(r.at)),
            record: record(&r.record),
        },
        host::Change::Tombstone(t) => sink::Entry::tombstone(
            match t.kind {
                host::RecordKind::Job => sink::HeldKind::Job,
                host::RecordKind::Pod => sink::HeldKind::Pod,
                host::RecordKind::Event => sink::HeldKind::Event,
            },
            t.uid.clone(),
            ts(t.at),
        ),
    }
}

/// [`entry`] for a whole batch.
#[must_use]
pub fn batch(entries: &[host::Entry]) -> Vec<sink::Entry> {
    entries.iter().map(entry).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host_meta(uid: &str) -> host::Meta {
        host::Meta {
            uid: uid.into(),
            name: "n".into(),
            namespace: "ns".into(),
            resource_version: "42".into(),
            resource_version_num: 42,
            labels: vec![("a".into(), "b".into())],
            created: host::Timestamp {
                seconds: 10,
                nanos: 5,
            },
        }
    }

    #[test]
    fn removed_event_keeps_every_field() {
        let e = host::Change::removed(
            host::Record::Event(host::Event {
                meta: host_meta("e1"),
                involved: host::ObjectRef {
                    api_version: "v1".into(),
                    kind: "Pod".into(),
                    namespace: "ns".into(),
                    name: "p".into(),
                    uid: "pu".into(),
                },
                event_type: "Warning".into(),
                reason: "BackOff".into(),
                message: "m".into(),
                source: "kubelet/node".into(),
                count: 3,
                first_seen: host::Timestamp {
                    seconds: 1,
                    nanos: 0,
                },
                last_seen: host::Timestamp {
                    seconds: 2,
                    nanos: 0,
                },
                region: "r".into(),
            }),
            host::Timestamp {
                seconds: 99,
                nanos: 1,
            },
        );
        let got = entry(&e);
        assert_eq!(
            got.change,
            sink::Change::Removed(sink::Timestamp {
                seconds: 99,
                nanos: 1
            })
        );
        let sink::Record::Event(ev) = got.record else {
            panic!("not an event: {got:?}");
        };
        assert_eq!(ev.meta.uid, "e1");
        assert_eq!(ev.meta.resource_version_num, 42);
        assert_eq!(ev.meta.created.nanos, 5);
        assert_eq!(ev.involved.uid, "pu");
        assert_eq!(ev.count, 3);
        assert_eq!(ev.last_seen.seconds, 2);
        assert_eq!(ev.source, "kubelet/node");
    }
}
