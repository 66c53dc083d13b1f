//! Replays the kubedl fixture (`tests/fixtures/kubedl/watch.json`) through
//! `normalize` and compares the final record per uid with
//! `tests/fixtures/kubedl/expected-records.json`.
//!
//! `KUBESINK_BLESS=1 cargo test -p kubesink-normalize --test kubedl_fixture`
//! rewrites the expected file (review the diff before committing it).
//! The fixture's own generator is re-run too: the committed `watch.json` and
//! `list.json` must be exactly what `generate.py` prints (needs `python3`).

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Command;

use kubesink_normalize::record::{Change as WitChange, Record, Removal, Timestamp};
use kubesink_normalize::{Options, entry, normalize};
use serde_json::Value;

/// What happened to an object, as the golden file records it (applied, or
/// removed at a time). The replay has no tombstones.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
enum Change {
    Applied,
    Removed(Timestamp),
}

/// The final change of one object, as the golden file records it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
struct Entry {
    change: Change,
    record: Record,
}

impl From<WitChange> for Entry {
    fn from(c: WitChange) -> Self {
        match c {
            WitChange::Applied(record) => Entry {
                change: Change::Applied,
                record,
            },
            WitChange::Removed(Removal { at, record }) => Entry {
                change: Change::Removed(at),
                record,
            },
            WitChange::Tombstone(t) => panic!("normalize made a tombstone: {t:?}"),
        }
    }
}

fn fixture_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/kubedl")
}

fn read(name: &str) -> String {
    let path = fixture_dir().join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// The watch documents, in order.
fn watch_docs() -> Vec<Value> {
    let text = read("watch.json");
    serde_json::Deserializer::from_str(&text)
        .into_iter::<Value>()
        .enumerate()
        .map(|(i, d)| d.unwrap_or_else(|e| panic!("watch.json document {i}: {e}")))
        .collect()
}

/// Used for a removal without `deletionTimestamp` (the fixture has none).
const NOTICED: Timestamp = Timestamp {
    seconds: 0,
    nanos: 0,
};

fn uid(r: &Record) -> &str {
    match r {
        Record::Job(j) => &j.meta.uid,
        Record::Pod(p) => &p.meta.uid,
        Record::Event(e) => &e.meta.uid,
    }
}

fn rank(r: &Record) -> u8 {
    match r {
        Record::Job(_) => 0,
        Record::Pod(_) => 1,
        Record::Event(_) => 2,
    }
}

/// Applies the stream: the last entry per uid, ordered jobs, pods, events,
/// each by first appearance.
fn replay() -> Vec<Entry> {
    let opts = Options::default();
    let mut first_seen: HashMap<String, usize> = HashMap::new();
    let mut last: HashMap<String, Entry> = HashMap::new();
    let mut previous_rv = 0u64;
    for (i, doc) in watch_docs().into_iter().enumerate() {
        let kind = doc["type"]
            .as_str()
            .unwrap_or_else(|| panic!("document {i}: no type"));
        assert!(
            matches!(kind, "ADDED" | "MODIFIED" | "DELETED"),
            "document {i}: type {kind}"
        );
        let obj = &doc["object"];
        let e: Entry = entry(obj, &opts, kind == "DELETED", NOTICED)
            .unwrap_or_else(|err| panic!("document {i}: {err}"))
            .unwrap_or_else(|| panic!("document {i}: not a recorded kind"))
            .into();
        let (u, rv) = match &e.record {
            Record::Job(j) => (j.meta.uid.clone(), j.meta.resource_version_num),
            Record::Pod(p) => (p.meta.uid.clone(), p.meta.resource_version_num),
            Record::Event(ev) => (ev.meta.uid.clone(), ev.meta.resource_version_num),
        };
        assert!(
            rv > previous_rv,
            "document {i}: resourceVersion {rv} not increasing"
        );
        previous_rv = rv;
        if kind == "DELETED" {
            assert!(
                matches!(e.change, Change::Removed(t) if t != NOTICED),
                "document {i}: a DELETED object without deletionTimestamp"
            );
        }
        first_seen.entry(u.clone()).or_insert(i);
        last.insert(u, e);
    }
    let mut out: Vec<Entry> = last.into_values().collect();
    out.sort_by_key(|e| (rank(&e.record), first_seen[uid(&e.record)]));
    out
}

#[test]
fn replay_matches_expected_records() {
    let entries = replay();
    let actual = serde_json::to_string_pretty(&entries).expect("serialize") + "\n";
    let path = fixture_dir().join("expected-records.json");
    if std::env::var_os("KUBESINK_BLESS").is_some_and(|v| v == "1") {
        std::fs::write(&path, &actual)
            .unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
    }
    let expected = read("expected-records.json");
    assert!(
        expected == actual,
        "records differ from {}; rerun with KUBESINK_BLESS=1 and review the diff",
        path.display()
    );
}

/// The story told in README.md, checked field by field (independent of the
/// golden file).
#[test]
fn replay_tells_the_readme_story() {
    let entries = replay();
    let jobs: Vec<_> = entries
        .iter()
        .filter_map(|e| match &e.record {
            Record::Job(j) => Some((e, j)),
            _ => None,
        })
        .collect();
    let pods: Vec<_> = entries
        .iter()
        .filter_map(|e| match &e.record {
            Record::Pod(p) => Some((e, p)),
            _ => None,
        })
        .collect();
    let events: Vec<_> = entries
        .iter()
        .filter_map(|e| match &e.record {
            Record::Event(ev) => Some((e, ev)),
            _ => None,
        })
        .collect();
    assert_eq!((jobs.len(), pods.len(), events.len()), (2, 5, 62));

    let (mnist_e, mnist) = jobs[0];
    assert_eq!(
        (mnist.kind.as_str(), mnist.meta.name.as_str()),
        ("TFJob", "mnist")
    );
    assert_eq!(mnist.status, "Succeeded");
    assert_eq!(mnist_e.change, Change::Applied);
    assert_eq!(
        (
            mnist.tenant.as_str(),
            mnist.owner.as_str(),
            mnist.region.as_str()
        ),
        ("ai-lab", "张伟", "cn-hangzhou")
    );
    assert!(mnist.running_at.is_some() && mnist.finished_at.is_some());
    let res: Value = serde_json::from_str(&mnist.resources).expect("resources JSON");
    assert_eq!(res["Worker"]["replicas"], 2);
    assert_eq!(res["PS"]["replicas"], 1);
    // Worker: init container (500m, 8Gi) vs sidecar + tensorflow (2100m, 4224Mi).
    assert_eq!(res["Worker"]["resources"]["requests"]["cpu"], "2100m");
    assert_eq!(res["Worker"]["resources"]["requests"]["memory"], "8Gi");

    let (pi_e, pi) = jobs[1];
    assert_eq!((pi.kind.as_str(), pi.status.as_str()), ("Job", "Succeeded"));
    assert!(matches!(pi_e.change, Change::Removed(_)));

    let by_name =
        |name: &str| -> Vec<_> { pods.iter().filter(|(_, p)| p.meta.name == name).collect() };
    let ps = by_name("mnist-ps-0");
    assert_eq!(ps.len(), 1);
    assert_eq!(ps[0].1.status, "Running");
    assert!(
        matches!(ps[0].0.change, Change::Removed(_)),
        "PS removed while running"
    );
    let w1 = by_name("mnist-worker-1");
    assert_eq!(w1.len(), 2, "worker-1 recreated with a new uid");
    assert_eq!(w1[0].1.status, "Failed");
    assert_eq!(
        w1[0].1.remark,
        "Reason: OOMKilled\nExitCode: 137\nMessage: step 4200: loss=0.0713; allocating batch tensors"
    );
    assert!(matches!(w1[0].0.change, Change::Removed(_)));
    assert_eq!(w1[1].1.status, "Succeeded");
    assert_eq!(w1[1].0.change, Change::Applied);
    for (_, p) in &pods {
        if p.job_kind == "TFJob" {
            assert_eq!(
                p.image, "kubedl/tf-mnist-with-summaries:1.0",
                "{}",
                p.meta.name
            );
            assert_eq!(p.job_uid, mnist.meta.uid);
        } else {
            assert_eq!(
                (p.job_kind.as_str(), p.replica_type.as_str()),
                ("Job", "worker")
            );
            assert_eq!(p.job_uid, pi.meta.uid);
        }
    }

    let count = |reason: &str| -> Vec<u32> {
        events
            .iter()
            .filter(|(_, e)| e.reason == reason)
            .map(|(_, e)| e.count)
            .filter(|c| *c > 1)
            .collect()
    };
    assert_eq!(count("FailedScheduling"), [3]);
    assert_eq!(count("BackOff"), [3]);
    assert_eq!(count("Pulling"), [2]);
    assert_eq!(count("TFJobRunning"), [2]);
    assert!(events.iter().all(|(e, _)| e.change == Change::Applied));
    let new_api = events
        .iter()
        .filter(|(_, e)| e.source.starts_with("default-scheduler/"))
        .count();
    assert_eq!(new_api, 6, "events.k8s.io/v1 scheduler events");
}

/// list.json holds the final state of every object not deleted: its
/// records are the replay's applied ones.
#[test]
fn list_matches_the_replays_live_objects() {
    let list: Value = serde_json::from_str(&read("list.json")).expect("list.json");
    assert_eq!(list["kind"], "List");
    let items = list["items"].as_array().expect("items");
    let live: HashMap<String, Record> = replay()
        .into_iter()
        .filter(|e| e.change == Change::Applied)
        .map(|e| (uid(&e.record).to_string(), e.record))
        .collect();
    assert_eq!(items.len(), live.len());
    for item in items {
        let r = normalize(item, &Options::default())
            .expect("normalize")
            .expect("recorded kind");
        assert_eq!(Some(&r), live.get(uid(&r)), "{}", uid(&r));
    }
}

/// The committed fixture is what its generator prints.
#[test]
fn fixture_is_what_generate_py_prints() {
    for (arg, file) in [("watch", "watch.json"), ("list", "list.json")] {
        let out = Command::new("python3")
            .arg(fixture_dir().join("generate.py"))
            .arg(arg)
            .output()
            .unwrap_or_else(|e| panic!("running python3 generate.py (python3 is required): {e}"));
        assert!(
            out.status.success(),
            "generate.py {arg}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            out.stdout == read(file).into_bytes(),
            "{file} differs from `python3 generate.py {arg}`; regenerate it"
        );
    }
}
