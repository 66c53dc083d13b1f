use super::*;
use crate::model::{Job, Pod};
use crate::settings::Ident;

fn t(s: i64) -> Timestamp {
    Timestamp {
        seconds: s,
        nanos: 0,
    }
}

fn job<'a>(uid: &'a str, rv: u64, status: &'a str) -> Job<'a> {
    Job {
        meta: Meta {
            uid: uid.into(),
            name: format!("job-{uid}").into(),
            namespace: "ns".into(),
            resource_version: rv.to_string().into(),
            resource_version_num: rv,
            labels: vec![],
            created: t(100),
        },
        kind: "TFJob".into(),
        status: status.into(),
        modified: t(100 + i64::try_from(rv).unwrap_or(0)),
        ..Job::default()
    }
}

fn applied(j: Job) -> Entry {
    Entry {
        change: Change::Applied,
        record: Record::Job(j),
    }
}

fn removed(j: Job, at: i64) -> Entry {
    Entry {
        change: Change::Removed(t(at)),
        record: Record::Job(j),
    }
}

fn jobs() -> Table {
    Table::new(Kind::Job, Ident::new("job_info").expect("valid"))
}

fn col<'a>(table: &Table, row: &Row<'a>, name: &str) -> Value<'a> {
    let i = table
        .columns
        .iter()
        .position(|c| c.name == name)
        .expect("column exists");
    row.values[i].clone()
}

fn fold<'a>(entries: &'a [Entry<'_>]) -> Row<'a> {
    let mut rows = TableRows::new(jobs());
    for e in entries {
        rows.push(e);
    }
    assert_eq!(rows.rows.len(), 1, "one uid, one row");
    rows.rows.remove(0)
}

#[test]
fn job_row_maps_every_column() {
    let table = jobs();
    let mut j = job("u1", 42, "Running");
    j.resources = "{}".into();
    j.tenant = "t".into();
    j.owner = "o".into();
    j.region = "r".into();
    j.remark = "m".into();
    j.running_at = Some(t(120));
    let entry = applied(j);
    let row = row_of(&table, &entry);
    assert_eq!(row.values.len(), table.columns.len());
    assert_eq!(row.uid, "u1");
    assert_eq!(col(&table, &row, "job_id"), text("u1"));
    assert_eq!(col(&table, &row, "name"), text("job-u1"));
    assert_eq!(col(&table, &row, "version"), text("42"));
    assert_eq!(col(&table, &row, "version_num"), Value::Int(42));
    assert_eq!(col(&table, &row, "status"), text("Running"));
    assert_eq!(col(&table, &row, "kind"), text("TFJob"));
    assert_eq!(col(&table, &row, "deploy_region"), text("r"));
    assert_eq!(col(&table, &row, "tenant"), text("t"));
    assert_eq!(col(&table, &row, "owner"), text("o"));
    assert_eq!(col(&table, &row, "remark"), text("m"));
    assert_eq!(col(&table, &row, "deleted"), Value::Int(0));
    assert_eq!(col(&table, &row, "is_in_etcd"), Value::Int(1));
    assert_eq!(col(&table, &row, "gmt_created"), Value::Timestamp(t(100)));
    assert_eq!(col(&table, &row, "gmt_modified"), Value::Timestamp(t(142)));
    assert_eq!(
        col(&table, &row, "gmt_job_running"),
        Value::Timestamp(t(120))
    );
    assert_eq!(col(&table, &row, "gmt_job_finished"), Value::Null);
    let entry = applied(job("u2", 1, "Created"));
    let bare = row_of(&table, &entry);
    assert_eq!(col(&table, &bare, "remark"), Value::Null);
    assert_eq!(col(&table, &bare, "deploy_region"), Value::Null);
    assert_eq!(col(&table, &bare, "tenant"), text(""));
}

#[test]
fn pod_and_event_rows_match_their_columns() {
    let pods = Table::new(Kind::Pod, Ident::new("replica_info").expect("valid"));
    let pod = Pod {
        meta: Meta {
            uid: "p1".into(),
            ..Meta::default()
        },
        job_uid: "j1".into(),
        status: "Running".into(),
        image: "img".into(),
        resources: "é".repeat(1500).into(),
        started_at: Some(t(5)),
        ..Pod::default()
    };
    let entry = Entry {
        change: Change::Removed(t(9)),
        record: Record::Pod(pod),
    };
    let row = row_of(&pods, &entry);
    assert_eq!(row.values.len(), pods.columns.len());
    assert_eq!(col(&pods, &row, "pod_id"), text("p1"));
    assert_eq!(col(&pods, &row, "job_id"), text("j1"));
    assert_eq!(col(&pods, &row, "status"), text("Stopped"));
    assert_eq!(col(&pods, &row, "gmt_started"), Value::Timestamp(t(5)));
    assert_eq!(col(&pods, &row, "gmt_finished"), Value::Timestamp(t(9)));
    assert_eq!(col(&pods, &row, "is_in_etcd"), Value::Int(0));
    // Empty optional text is NULL, as KubeDL leaves it.
    for c in ["host_ip", "pod_ip", "deploy_region", "remark"] {
        assert_eq!(col(&pods, &row, c), Value::Null, "{c}");
    }
    // varchar(1024): cut at 1024 characters, not bytes.
    assert_eq!(col(&pods, &row, "resources"), text(&"é".repeat(1024)));

    let events = Table::new(Kind::Event, Ident::new("event_info").expect("valid"));
    let ev = Event {
        meta: Meta {
            uid: "e1".into(),
            ..Meta::default()
        },
        count: 7,
        last_seen: t(77),
        ..Event::default()
    };
    let entry = Entry {
        change: Change::Applied,
        record: Record::Event(ev),
    };
    let row = row_of(&events, &entry);
    assert_eq!(row.values.len(), events.columns.len());
    assert_eq!(col(&events, &row, "event_id"), text("e1"));
    assert_eq!(col(&events, &row, "count"), Value::Int(7));
    assert_eq!(col(&events, &row, "gmt_modified"), Value::Timestamp(t(77)));
}

#[test]
fn truncate_respects_char_boundaries() {
    let mut s: Cow<str> = "aé€😀b".into();
    truncate_chars(&mut s, 4);
    assert_eq!(s, "aé€😀");
    truncate_chars(&mut s, 2);
    assert_eq!(s, "aé");
    let mut short: Cow<str> = "ab".into();
    truncate_chars(&mut short, 5);
    assert_eq!(short, "ab");
    // More bytes than the limit, but not more characters: kept whole.
    // Owned text is cut in place.
    let mut wide: Cow<str> = "éé€".to_owned().into();
    truncate_chars(&mut wide, 3);
    assert_eq!(wide, "éé€");
    truncate_chars(&mut wide, 2);
    assert_eq!(wide, "éé");
}

#[test]
fn truncate_bytes_never_splits_a_character() {
    // "😀" is 4 bytes: a cut inside it drops it whole.
    for (max, want) in [
        (0, ""),
        (1, "a"),
        (2, "a"),
        (4, "a"),
        (5, "a😀"),
        (6, "a😀"),
        (7, "a😀é"),
    ] {
        let mut s: Cow<str> = "a😀éz".into();
        truncate_bytes(&mut s, max);
        assert_eq!(s, want, "max {max}");
        assert!(s.len() <= max);
    }
    let mut short: Cow<str> = "é".to_owned().into();
    truncate_bytes(&mut short, 10);
    assert_eq!(short, "é");
}

#[test]
fn text_columns_are_cut_to_what_mysql_text_holds() {
    use crate::schema::TEXT_MAX_BYTES;
    let events = Table::new(Kind::Event, Ident::new("event_info").expect("valid"));
    // 3-byte characters: 65,535 is a multiple of 3, so make the cut
    // land inside one by starting with a 1-byte prefix.
    let message = format!("x{}", "€".repeat(30_000));
    let ev = Event {
        meta: Meta {
            uid: "e1".into(),
            ..Meta::default()
        },
        message: message.clone().into(),
        reason: "R".repeat(500).into(),
        ..Event::default()
    };
    let entry = Entry {
        change: Change::Applied,
        record: Record::Event(ev),
    };
    let row = row_of(&events, &entry);
    let Value::Text(stored) = col(&events, &row, "message") else {
        panic!("message is text");
    };
    assert!(stored.len() <= TEXT_MAX_BYTES, "{}", stored.len());
    assert!(
        stored.len() > TEXT_MAX_BYTES - 4,
        "cut at most one character short"
    );
    assert!(message.starts_with(&*stored), "a prefix of the message");
    assert_eq!(col(&events, &row, "reason"), text(&"R".repeat(128)));
}

#[test]
fn later_newer_entry_wins() {
    let table = jobs();
    let entries = [
        applied(job("u", 5, "Created")),
        applied(job("u", 6, "Running")),
    ];
    let row = fold(&entries);
    assert_eq!(col(&table, &row, "status"), text("Running"));
    assert_eq!(col(&table, &row, "version_num"), Value::Int(6));
}

#[test]
fn later_stale_entry_is_ignored() {
    let table = jobs();
    let entries = [
        applied(job("u", 6, "Running")),
        applied(job("u", 5, "Created")),
    ];
    let row = fold(&entries);
    assert_eq!(col(&table, &row, "status"), text("Running"));
    assert_eq!(col(&table, &row, "version"), text("6"));
}

#[test]
fn removal_of_unfinished_job_stops_it_and_is_final() {
    let table = jobs();
    let entries = [
        applied(job("u", 6, "Running")),
        removed(job("u", 6, "Running"), 500),
        // A replay of the last applied state (same version) and of an
        // older one: neither resurrects the job.
        applied(job("u", 6, "Running")),
        applied(job("u", 4, "Created")),
    ];
    let row = fold(&entries);
    assert_eq!(col(&table, &row, "status"), text("Stopped"));
    assert_eq!(
        col(&table, &row, "gmt_job_finished"),
        Value::Timestamp(t(500))
    );
    assert_eq!(col(&table, &row, "is_in_etcd"), Value::Int(0));
    assert_eq!(col(&table, &row, "version_num"), Value::Int(6));
    // KubeDL's DeleteJob on removal; a later replay does not undo it.
    assert_eq!(col(&table, &row, "deleted"), Value::Int(1));
}

#[test]
fn removal_of_finished_job_keeps_status_and_finish_time() {
    let table = jobs();
    let mut done = job("u", 8, "Succeeded");
    done.finished_at = Some(t(300));
    let entries = [applied(done.clone()), removed(done, 900)];
    let row = fold(&entries);
    assert_eq!(col(&table, &row, "status"), text("Succeeded"));
    assert_eq!(
        col(&table, &row, "gmt_job_finished"),
        Value::Timestamp(t(300))
    );
    assert_eq!(col(&table, &row, "is_in_etcd"), Value::Int(0));
}

#[test]
fn stale_removal_marks_newer_unfinished_state_stopped() {
    let table = jobs();
    let entries = [
        applied(job("u", 9, "Running")),
        removed(job("u", 3, "Created"), 700),
    ];
    let row = fold(&entries);
    // The data stays at version 9; the removal still applies.
    assert_eq!(col(&table, &row, "version_num"), Value::Int(9));
    assert_eq!(col(&table, &row, "gmt_modified"), Value::Timestamp(t(109)));
    assert_eq!(col(&table, &row, "status"), text("Stopped"));
    assert_eq!(
        col(&table, &row, "gmt_job_finished"),
        Value::Timestamp(t(700))
    );
    assert_eq!(col(&table, &row, "is_in_etcd"), Value::Int(0));
}

#[test]
fn redelivered_removal_keeps_first_finish_time() {
    let table = jobs();
    let entries = [
        removed(job("u", 6, "Running"), 500),
        removed(job("u", 6, "Running"), 650),
    ];
    let row = fold(&entries);
    assert_eq!(
        col(&table, &row, "gmt_job_finished"),
        Value::Timestamp(t(500))
    );
    assert_eq!(col(&table, &row, "status"), text("Stopped"));
}

#[test]
fn distinct_uids_keep_first_seen_order() {
    let entries: Vec<Entry> = ["b", "a", "b", "c"]
        .into_iter()
        .map(|uid| applied(job(uid, 1, "Created")))
        .collect();
    let mut rows = TableRows::new(jobs());
    for e in &entries {
        rows.push(e);
    }
    let uids: Vec<_> = rows.rows.iter().map(|r| r.uid).collect();
    assert_eq!(uids, ["b", "a", "c"]);
}
