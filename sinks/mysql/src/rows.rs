//! Where a record becomes a row: the column values of each table (see
//! [`crate::schema`]), the removal rules (an unfinished job or pod becomes
//! `Stopped` with a finish time), truncation of text to its column, and the
//! in-batch collapse of several entries for the same uid with the same rule
//! the database applies ([`merge`] mirrors [`crate::schema::upsert`]).

use std::borrow::Cow;
use std::collections::BTreeMap;

use crate::db::Value;
use crate::model::{Change, Entry, Event, Job, Meta, Pod, Record, Timestamp};
use crate::schema::{FINISHED_STATUSES, Kind, STOPPED, Table};

/// One row to upsert: the key and the values in the table's column order,
/// borrowing their text from the entry they were made from.
#[derive(Debug, Clone, PartialEq)]
pub struct Row<'a> {
    /// The object's uid (the key column's value).
    pub uid: &'a str,
    /// One value per column of the table, in order.
    pub values: Vec<Value<'a>>,
}

fn text(s: &str) -> Value<'_> {
    Value::Text(Cow::Borrowed(s))
}

/// Text, or NULL when empty: the columns KubeDL's `dmo` models map to a
/// `*string` it leaves nil when there is no value (`deploy_region`,
/// `remark`, `host_ip`, `pod_ip`).
fn opt_text(s: &str) -> Value<'_> {
    if s.is_empty() { Value::Null } else { text(s) }
}

fn ts(t: Timestamp) -> Value<'static> {
    Value::Timestamp(t)
}

fn opt_ts(t: Option<Timestamp>) -> Value<'static> {
    t.map_or(Value::Null, Value::Timestamp)
}

fn version_num(meta: &Meta) -> Value<'static> {
    Value::Int(i64::try_from(meta.resource_version_num).unwrap_or(i64::MAX))
}

fn in_etcd(change: Change) -> Value<'static> {
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
) -> (Value<'_>, Option<Timestamp>) {
    match change {
        Change::Removed(at) if !is_finished(status) => {
            (text(STOPPED), Some(finished_at.unwrap_or(at)))
        }
        _ => (text(status), finished_at),
    }
}

/// Values of a `job_info` row (order of [`crate::schema::JOB_COLUMNS`]).
fn job_values<'a>(job: &'a Job<'_>, change: Change) -> Vec<Value<'a>> {
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
fn pod_values<'a>(pod: &'a Pod<'_>, change: Change) -> Vec<Value<'a>> {
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
fn event_values<'a>(ev: &'a Event<'_>, change: Change) -> Vec<Value<'a>> {
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
pub fn truncate_chars(s: &mut Cow<'_, str>, max: usize) {
    // A string has no more characters than bytes: most are short enough
    // without counting them.
    if s.len() <= max {
        return;
    }
    if let Some((cut, _)) = s.char_indices().nth(max) {
        cut_at(s, cut);
    }
}

/// Cut `s` to at most `max` bytes of UTF-8, at a character boundary (so a
/// multi-byte character is dropped whole, never split).
pub fn truncate_bytes(s: &mut Cow<'_, str>, max: usize) {
    if s.len() <= max {
        return;
    }
    let mut cut = max;
    while !s.is_char_boundary(cut) {
        cut -= 1;
    }
    cut_at(s, cut);
}

/// Keeps the first `cut` bytes of `s` (a character boundary), without
/// copying a borrowed string.
fn cut_at(s: &mut Cow<'_, str>, cut: usize) {
    match s {
        Cow::Borrowed(b) => *b = &b[..cut],
        Cow::Owned(o) => o.truncate(cut),
    }
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
pub fn row_of<'a>(table: &Table, entry: &'a Entry<'_>) -> Row<'a> {
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
        uid: &entry.record.meta().uid,
        values,
    }
}

fn int(v: &Value<'_>, default: i64) -> i64 {
    v.as_i64().unwrap_or(default)
}

/// Fold `new` into `stored` (both rows of `table` for the same uid, `new`
/// the later) by the rule the upsert applies in the database (see
/// [`crate::schema::upsert`]), so collapsing a batch gives the rows that
/// writing its entries one by one would.
pub fn merge<'a>(table: &Table, stored: &mut Row<'a>, new: Row<'a>) {
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
pub struct TableRows<'a> {
    /// The table.
    pub table: Table,
    /// The collapsed rows.
    pub rows: Vec<Row<'a>>,
    index: BTreeMap<&'a str, usize>,
}

impl<'a> TableRows<'a> {
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
    pub fn push(&mut self, entry: &'a Entry<'_>) {
        let row = row_of(&self.table, entry);
        match self.index.get(row.uid) {
            Some(&i) => merge(&self.table, &mut self.rows[i], row),
            None => {
                self.index.insert(row.uid, self.rows.len());
                self.rows.push(row);
            }
        }
    }
}

#[cfg(test)]
mod tests;
