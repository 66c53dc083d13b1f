//! Where a record becomes a row: the column values of each table (see
//! [`crate::schema`]), the removal rules (an unfinished job or pod becomes
//! `Stopped` with a finish time), truncation of text to its column, and the
//! in-batch collapse of several entries for the same uid with the same rule
//! the database applies ([`merge`] mirrors [`crate::schema::upsert`]).

use std::collections::BTreeMap;

use crate::db::Value;
use crate::model::{Change, Entry, Event, Job, Meta, Pod, Record, Timestamp};
use crate::schema::{FINISHED_STATUSES, Kind, STOPPED, Table};

/// One row to upsert: the key and the values in the table's column order.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// The object's uid (the key column's value).
    pub uid: String,
    /// One value per column of the table, in order.
    pub values: Vec<Value>,
}

fn text(s: &str) -> Value {
    Value::Text(s.to_owned())
}

/// Text, or NULL when empty: the columns KubeDL's `dmo` models map to a
/// `*string` it leaves nil when there is no value (`deploy_region`,
/// `remark`, `host_ip`, `pod_ip`).
fn opt_text(s: &str) -> Value {
    if s.is_empty() { Value::Null } else { text(s) }
}

fn ts(t: Timestamp) -> Value {
    Value::Timestamp(t)
}

fn opt_ts(t: Option<Timestamp>) -> Value {
    t.map_or(Value::Null, Value::Timestamp)
}

fn version_num(meta: &Meta) -> Value {
    Value::Int(i64::try_from(meta.resource_version_num).unwrap_or(i64::MAX))
}

fn in_etcd(change: Change) -> Value {
    Value::Int(i64::from(change == Change::Applied))
}

/// Whether `status` is final (a removed record keeps it).
#[must_use]
pub fn is_finished(status: &str) -> bool {
    FINISHED_STATUSES.contains(&status)
}

/// Status and finish time as stored for a record with `change`: a removed
/// record that had not finished becomes `Stopped`, finished at its finish
/// time if it had one, else at the removal time.
fn final_state(
    change: Change,
    status: &str,
    finished_at: Option<Timestamp>,
) -> (Value, Option<Timestamp>) {
    match change {
        Change::Removed(at) if !is_finished(status) => {
            (text(STOPPED), Some(finished_at.unwrap_or(at)))
        }
        _ => (text(status), finished_at),
    }
}

/// Values of a `job_info` row (order of [`crate::schema::JOB_COLUMNS`]).
fn job_values(job: &Job, change: Change) -> Vec<Value> {
    let (status, finished) = final_state(change, &job.status, job.finished_at);
    vec![
        text(&job.meta.name),
        text(&job.meta.namespace),
        text(&job.meta.uid),
        text(&job.meta.resource_version),
        status,
        text(&job.kind),
        text(&job.resources),
        opt_text(&job.region),
        // KubeDL writes "" (not NULL) without a tenancy annotation.
        text(&job.tenant),
        text(&job.owner),
        // KubeDL's job controller calls StopJob then DeleteJob (deleted = 1)
        // when a job leaves the cluster.
        Value::Int(i64::from(change != Change::Applied)),
        in_etcd(change),
        opt_text(&job.remark),
        ts(job.meta.created),
        ts(job.modified),
        opt_ts(job.running_at),
        opt_ts(finished),
        version_num(&job.meta),
    ]
}

/// Values of a `replica_info` row (order of [`crate::schema::POD_COLUMNS`]).
fn pod_values(pod: &Pod, change: Change) -> Vec<Value> {
    let (status, finished) = final_state(change, &pod.status, pod.finished_at);
    vec![
        text(&pod.meta.name),
        text(&pod.meta.namespace),
        text(&pod.meta.uid),
        text(&pod.meta.resource_version),
        status,
        text(&pod.image),
        text(&pod.job_uid),
        text(&pod.replica_type),
        text(&pod.resources),
        opt_text(&pod.host_ip),
        opt_text(&pod.pod_ip),
        opt_text(&pod.region),
        Value::Int(0),
        in_etcd(change),
        opt_text(&pod.remark),
        ts(pod.meta.created),
        ts(pod.modified),
        opt_ts(pod.started_at),
        opt_ts(finished),
        version_num(&pod.meta),
    ]
}

/// Values of an `event_info` row (order of [`crate::schema::EVENT_COLUMNS`]).
fn event_values(ev: &Event, change: Change) -> Vec<Value> {
    vec![
        text(&ev.meta.uid),
        text(&ev.meta.name),
        text(&ev.meta.namespace),
        text(&ev.meta.resource_version),
        text(&ev.involved.api_version),
        text(&ev.involved.kind),
        text(&ev.involved.namespace),
        text(&ev.involved.name),
        text(&ev.involved.uid),
        text(&ev.event_type),
        text(&ev.reason),
        text(&ev.message),
        text(&ev.source),
        Value::Int(i64::from(ev.count)),
        ts(ev.first_seen),
        ts(ev.last_seen),
        text(&ev.region),
        in_etcd(change),
        ts(ev.meta.created),
        ts(ev.last_seen),
        version_num(&ev.meta),
    ]
}

/// Cut `s` to at most `max` characters, at a character boundary.
pub fn truncate_chars(s: &mut String, max: usize) {
    if let Some((cut, _)) = s.char_indices().nth(max) {
        s.truncate(cut);
    }
}

/// Cut `s` to at most `max` bytes of UTF-8, at a character boundary (so a
/// multi-byte character is dropped whole, never split).
pub fn truncate_bytes(s: &mut String, max: usize) {
    if s.len() <= max {
        return;
    }
    let mut cut = max;
    while !s.is_char_boundary(cut) {
        cut -= 1;
    }
    s.truncate(cut);
}

/// The kind of table `record` goes to.
#[must_use]
pub fn kind_of(record: &Record) -> Kind {
    match record {
        Record::Job(_) => Kind::Job,
        Record::Pod(_) => Kind::Pod,
        Record::Event(_) => Kind::Event,
    }
}

/// The row of `entry` for `table` (which must be the table of its kind),
/// with text cut to the column sizes.
#[must_use]
pub fn row_of(table: &Table, entry: &Entry) -> Row {
    let mut values = match &entry.record {
        Record::Job(j) => job_values(j, entry.change),
        Record::Pod(p) => pod_values(p, entry.change),
        Record::Event(e) => event_values(e, entry.change),
    };
    debug_assert_eq!(values.len(), table.columns.len());
    for (v, c) in values.iter_mut().zip(table.columns) {
        if let Value::Text(s) = v {
            if let Some(max) = c.max_chars {
                truncate_chars(s, max);
            }
            if let Some(max) = c.max_bytes {
                truncate_bytes(s, max);
            }
        }
    }
    Row {
        uid: entry.record.meta().uid.clone(),
        values,
    }
}

fn int(v: &Value, default: i64) -> i64 {
    v.as_i64().unwrap_or(default)
}

/// Fold `new` into `stored` (both rows of `table` for the same uid, `new`
/// the later) by the rule the upsert applies in the database (see
/// [`crate::schema::upsert`]), so collapsing a batch gives the rows that
/// writing its entries one by one would.
pub fn merge(table: &Table, stored: &mut Row, new: Row) {
    let old = &stored.values;
    let old_in = int(&old[table.in_etcd], 1) != 0;
    let new_in = int(&new.values[table.in_etcd], 1) != 0;
    let take =
        (old_in || !new_in) && int(&new.values[table.version], 0) >= int(&old[table.version], 0);
    let unfinished = table
        .status
        .is_some_and(|s| !old[s].as_str().is_some_and(is_finished));
    let stale_removal = !new_in && unfinished;
    let keep_finished = table
        .finished
        .is_some_and(|f| !old_in && old[f] != Value::Null);
    let finished_from_new = table
        .finished
        .is_some_and(|f| !keep_finished && (take || (stale_removal && old[f] == Value::Null)));

    for (i, v) in new.values.into_iter().enumerate() {
        let slot = &mut stored.values[i];
        if i == table.in_etcd {
            *slot = Value::Int(i64::from(old_in && new_in));
        } else if Some(i) == table.deleted {
            // Once 1, stays 1 (see the upsert).
            let was = int(slot, 0) != 0;
            *slot = Value::Int(i64::from(was || int(&v, 0) != 0));
        } else if Some(i) == table.finished {
            if finished_from_new {
                *slot = v;
            }
        } else if Some(i) == table.status {
            if take {
                *slot = v;
            } else if stale_removal {
                *slot = text(STOPPED);
            }
        } else if take {
            *slot = v;
        }
    }
}

/// The rows of one table in a batch, one per uid, in first-seen order.
#[derive(Debug, Clone)]
pub struct TableRows {
    /// The table.
    pub table: Table,
    /// The collapsed rows.
    pub rows: Vec<Row>,
    index: BTreeMap<String, usize>,
}

impl TableRows {
    /// No rows yet for `table`.
    #[must_use]
    pub fn new(table: Table) -> Self {
        Self {
            table,
            rows: Vec::new(),
            index: BTreeMap::new(),
        }
    }

    /// Add `entry`'s row, folding it into an earlier row for the same uid.
    pub fn push(&mut self, entry: &Entry) {
        let row = row_of(&self.table, entry);
        match self.index.get(&row.uid) {
            Some(&i) => merge(&self.table, &mut self.rows[i], row),
            None => {
                self.index.insert(row.uid.clone(), self.rows.len());
                self.rows.push(row);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Job, Pod};
    use crate::settings::Ident;

    fn t(s: i64) -> Timestamp {
        Timestamp {
            seconds: s,
            nanos: 0,
        }
    }

    fn job(uid: &str, rv: u64, status: &str) -> Job {
        Job {
            meta: Meta {
                uid: uid.into(),
                name: format!("job-{uid}"),
                namespace: "ns".into(),
                resource_version: rv.to_string(),
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

    fn col(table: &Table, row: &Row, name: &str) -> Value {
        let i = table
            .columns
            .iter()
            .position(|c| c.name == name)
            .expect("column exists");
        row.values[i].clone()
    }

    fn fold(entries: &[Entry]) -> Row {
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
        let row = row_of(&table, &applied(j));
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
        let bare = row_of(&table, &applied(job("u2", 1, "Created")));
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
            resources: "é".repeat(1500),
            started_at: Some(t(5)),
            ..Pod::default()
        };
        let row = row_of(
            &pods,
            &Entry {
                change: Change::Removed(t(9)),
                record: Record::Pod(pod),
            },
        );
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
        let row = row_of(
            &events,
            &Entry {
                change: Change::Applied,
                record: Record::Event(ev),
            },
        );
        assert_eq!(row.values.len(), events.columns.len());
        assert_eq!(col(&events, &row, "event_id"), text("e1"));
        assert_eq!(col(&events, &row, "count"), Value::Int(7));
        assert_eq!(col(&events, &row, "gmt_modified"), Value::Timestamp(t(77)));
    }

    #[test]
    fn truncate_respects_char_boundaries() {
        let mut s = "aé€😀b".to_owned();
        truncate_chars(&mut s, 4);
        assert_eq!(s, "aé€😀");
        truncate_chars(&mut s, 2);
        assert_eq!(s, "aé");
        let mut short = "ab".to_owned();
        truncate_chars(&mut short, 5);
        assert_eq!(short, "ab");
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
            let mut s = "a😀éz".to_owned();
            truncate_bytes(&mut s, max);
            assert_eq!(s, want, "max {max}");
            assert!(s.len() <= max);
        }
        let mut short = "é".to_owned();
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
            message: message.clone(),
            reason: "R".repeat(500),
            ..Event::default()
        };
        let row = row_of(
            &events,
            &Entry {
                change: Change::Applied,
                record: Record::Event(ev),
            },
        );
        let Value::Text(stored) = col(&events, &row, "message") else {
            panic!("message is text");
        };
        assert!(stored.len() <= TEXT_MAX_BYTES, "{}", stored.len());
        assert!(
            stored.len() > TEXT_MAX_BYTES - 4,
            "cut at most one character short"
        );
        assert!(message.starts_with(&stored), "a prefix of the message");
        assert_eq!(col(&events, &row, "reason"), text(&"R".repeat(128)));
    }

    #[test]
    fn later_newer_entry_wins() {
        let table = jobs();
        let row = fold(&[
            applied(job("u", 5, "Created")),
            applied(job("u", 6, "Running")),
        ]);
        assert_eq!(col(&table, &row, "status"), text("Running"));
        assert_eq!(col(&table, &row, "version_num"), Value::Int(6));
    }

    #[test]
    fn later_stale_entry_is_ignored() {
        let table = jobs();
        let row = fold(&[
            applied(job("u", 6, "Running")),
            applied(job("u", 5, "Created")),
        ]);
        assert_eq!(col(&table, &row, "status"), text("Running"));
        assert_eq!(col(&table, &row, "version"), text("6"));
    }

    #[test]
    fn removal_of_unfinished_job_stops_it_and_is_final() {
        let table = jobs();
        let row = fold(&[
            applied(job("u", 6, "Running")),
            removed(job("u", 6, "Running"), 500),
            // A replay of the last applied state (same version) and of an
            // older one: neither resurrects the job.
            applied(job("u", 6, "Running")),
            applied(job("u", 4, "Created")),
        ]);
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
        let row = fold(&[applied(done.clone()), removed(done, 900)]);
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
        let row = fold(&[
            applied(job("u", 9, "Running")),
            removed(job("u", 3, "Created"), 700),
        ]);
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
        let row = fold(&[
            removed(job("u", 6, "Running"), 500),
            removed(job("u", 6, "Running"), 650),
        ]);
        assert_eq!(
            col(&table, &row, "gmt_job_finished"),
            Value::Timestamp(t(500))
        );
        assert_eq!(col(&table, &row, "status"), text("Stopped"));
    }

    #[test]
    fn distinct_uids_keep_first_seen_order() {
        let mut rows = TableRows::new(jobs());
        for uid in ["b", "a", "b", "c"] {
            rows.push(&applied(job(uid, 1, "Created")));
        }
        let uids: Vec<_> = rows.rows.iter().map(|r| r.uid.as_str()).collect();
        assert_eq!(uids, ["b", "a", "c"]);
    }
}
