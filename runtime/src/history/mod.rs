//! `kubesink history`: what happened to the jobs a mysql sink recorded,
//! read back from its tables on SQLite, MySQL/MariaDB or PostgreSQL — the jobs of a
//! namespace or a time range with their status and duration, or one job
//! with its pods and its events aggregated as `kubectl describe` shows
//! them (`x5 over 3h`).

mod db;
pub mod render;

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Serialize;
use thiserror::Error;

use db::{Cells, Db, parse_time};
pub use render::OutputFormat;

/// Errors reading the history.
#[derive(Debug, Error)]
pub enum HistoryError {
    /// The database could not be opened or named.
    #[error("database {db}: {reason}")]
    Target { db: String, reason: String },
    /// The database refused a connection.
    #[error("database {db}: {source}")]
    Db {
        db: String,
        #[source]
        source: sqlx::Error,
    },
    /// A query failed (e.g. a table of that name does not exist).
    #[error("query `{sql}`: {source}")]
    Query {
        sql: String,
        #[source]
        source: sqlx::Error,
    },
    /// A table name given is not a plain SQL identifier.
    #[error("table name {0:?}: only letters, digits and `_` are allowed")]
    TableName(String),
    /// No job has that name or uid.
    #[error("no job named or with uid {0:?}{1}")]
    NoSuchJob(String, String),
    /// The name is taken by jobs in several namespaces.
    #[error("job {name:?} is in several namespaces ({namespaces}): pass --namespace")]
    Ambiguous { name: String, namespaces: String },
    /// Rendering as JSON or YAML failed.
    #[error("rendering: {0}")]
    Render(String),
}

/// `kubesink history`'s arguments.
#[derive(Debug, Clone, clap::Args)]
pub struct HistoryArgs {
    /// One job, by name or uid: its pods and events. Without it, the jobs
    /// the filters select, newest first.
    pub job: Option<String>,
    /// Only this namespace.
    #[arg(short = 'n', long)]
    pub namespace: Option<String>,
    /// Only jobs created at or after this: RFC 3339 (`2026-03-02T08:00:00Z`),
    /// a date (`2026-03-02`, UTC), or a duration ago (`24h`, `7d`).
    #[arg(long, value_parser = parse_point)]
    pub since: Option<DateTime<Utc>>,
    /// Only jobs created before this (as `--since`).
    #[arg(long, value_parser = parse_point)]
    pub until: Option<DateTime<Utc>>,
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value = "table")]
    pub output: OutputFormat,
    /// The jobs table (the mysql sink's `job_table`).
    #[arg(long, default_value = "job_info")]
    pub job_table: String,
    /// The pods table (`pod_table`).
    #[arg(long, default_value = "replica_info")]
    pub pod_table: String,
    /// The events table (`event_table`).
    #[arg(long, default_value = "event_info")]
    pub event_table: String,
}

/// Runs `kubesink history` on the database `db` (a SQLite file, a
/// `mysql://` or a `postgres://` URL) and returns what to print.
pub async fn run(db: &str, args: &HistoryArgs) -> Result<String, HistoryError> {
    let tables = Tables {
        jobs: args.job_table.clone(),
        pods: args.pod_table.clone(),
        events: args.event_table.clone(),
    };
    let mut history = History::open(db, tables).await?;
    let now = Utc::now();
    let out = match &args.job {
        Some(job) => {
            let detail = history.job(job, args.namespace.as_deref()).await;
            detail.and_then(|d| render::job(&d, args.output, now))
        }
        None => {
            let query = JobQuery {
                namespace: args.namespace.clone(),
                since: args.since,
                until: args.until,
            };
            let rows = history.jobs(&query).await;
            rows.and_then(|r| render::jobs(&r, args.output, now))
        }
    };
    history.close().await;
    out
}

/// A point in time: RFC 3339, a date (midnight UTC), or a duration before
/// now (`90m`, `24h`, `7d`).
pub(crate) fn parse_point(text: &str) -> Result<DateTime<Utc>, String> {
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Ok(t.to_utc());
    }
    if let Ok(d) = chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d") {
        return Ok(d.and_time(chrono::NaiveTime::MIN).and_utc());
    }
    let ago = humantime_serde::re::humantime::parse_duration(text).map_err(|_| {
        format!("`{text}`: not a time (RFC 3339 or YYYY-MM-DD) nor a duration ago (e.g. 24h)")
    })?;
    let ago = chrono::TimeDelta::from_std(ago).map_err(|e| format!("`{text}`: {e}"))?;
    Ok(Utc::now() - ago)
}

/// The mysql sink's table names (its `*_table` settings).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tables {
    pub jobs: String,
    pub pods: String,
    pub events: String,
}

impl Default for Tables {
    fn default() -> Self {
        Self {
            jobs: "job_info".into(),
            pods: "replica_info".into(),
            events: "event_info".into(),
        }
    }
}

impl Tables {
    fn checked(&self) -> Result<&Self, HistoryError> {
        for t in [&self.jobs, &self.pods, &self.events] {
            let plain = !t.is_empty()
                && t.len() <= 64
                && t.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !plain {
                return Err(HistoryError::TableName(t.clone()));
            }
        }
        Ok(self)
    }
}

/// Which jobs to list.
#[derive(Debug, Clone, Default)]
pub struct JobQuery {
    /// Only this namespace.
    pub namespace: Option<String>,
    /// Only jobs created at or after this time.
    pub since: Option<DateTime<Utc>>,
    /// Only jobs created before this time.
    pub until: Option<DateTime<Utc>>,
}

/// A job as recorded.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct JobRow {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub kind: String,
    pub status: String,
    pub created: Option<DateTime<Utc>>,
    pub running: Option<DateTime<Utc>>,
    pub finished: Option<DateTime<Utc>>,
    /// From running (else created) to finished, for a finished job.
    pub duration_seconds: Option<i64>,
    /// Whether the job still existed in the cluster at the last update.
    pub in_cluster: bool,
    pub owner: Option<String>,
    pub remark: Option<String>,
}

/// A pod of a job as recorded.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PodRow {
    pub name: String,
    pub uid: String,
    pub replica_type: String,
    pub status: String,
    /// The node's IP (`status.hostIP`), as KubeDL records it.
    pub node: Option<String>,
    pub pod_ip: Option<String>,
    pub image: String,
    pub started: Option<DateTime<Utc>>,
    pub finished: Option<DateTime<Utc>>,
    pub in_cluster: bool,
    pub remark: Option<String>,
}

/// Events of one kind about one object, aggregated: the event rows with the
/// same object, type, reason, source and message, their counts summed.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EventGroup {
    /// `Kind/name` of the object the events are about.
    pub object: String,
    #[serde(rename = "type")]
    pub event_type: String,
    pub reason: String,
    pub source: String,
    pub message: String,
    pub count: u64,
    pub first_seen: Option<DateTime<Utc>>,
    pub last_seen: Option<DateTime<Utc>>,
}

/// One job with its pods and events.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct JobDetail {
    pub job: JobRow,
    pub pods: Vec<PodRow>,
    pub events: Vec<EventGroup>,
}

/// The recorded history in a database.
pub struct History {
    db: Db,
    tables: Tables,
}

const JOB_SELECT: &str = "namespace, name, job_id, kind, status, gmt_created, gmt_job_running, \
    gmt_job_finished, is_in_etcd, owner, remark";

impl History {
    /// Opens the database at `target` (a SQLite file, a `mysql://` or a
    /// `postgres://` URL).
    pub async fn open(target: &str, tables: Tables) -> Result<History, HistoryError> {
        tables.checked()?;
        Ok(History {
            db: Db::open(target).await?,
            tables,
        })
    }

    /// The jobs `query` selects, newest first.
    pub async fn jobs(&mut self, query: &JobQuery) -> Result<Vec<JobRow>, HistoryError> {
        let mut filters = Vec::new();
        let mut args = Vec::new();
        if let Some(ns) = &query.namespace {
            filters.push("namespace = ?".to_owned());
            args.push(ns.clone());
        }
        if let Some(since) = query.since {
            filters.push(self.db.time_filter("gmt_created", ">="));
            args.push(self.db.time_literal(since));
        }
        if let Some(until) = query.until {
            filters.push(self.db.time_filter("gmt_created", "<"));
            args.push(self.db.time_literal(until));
        }
        let filter = if filters.is_empty() {
            String::new()
        } else {
            format!(" WHERE {}", filters.join(" AND "))
        };
        let sql = format!(
            "SELECT {} FROM {}{filter} ORDER BY gmt_created DESC, name",
            as_text(JOB_SELECT),
            self.tables.jobs
        );
        Ok(self
            .db
            .fetch(&sql, &args)
            .await?
            .into_iter()
            .map(job_row)
            .collect())
    }

    /// The job named `job` (or with that uid), with its pods and events.
    /// Of several jobs of that name in a namespace (re-created), the newest.
    pub async fn job(
        &mut self,
        job: &str,
        namespace: Option<&str>,
    ) -> Result<JobDetail, HistoryError> {
        let mut sql = format!(
            "SELECT {} FROM {} WHERE (job_id = ? OR name = ?)",
            as_text(JOB_SELECT),
            self.tables.jobs
        );
        let mut args = vec![job.to_owned(), job.to_owned()];
        if let Some(ns) = namespace {
            sql.push_str(" AND namespace = ?");
            args.push(ns.to_owned());
        }
        sql.push_str(" ORDER BY gmt_created DESC");
        let jobs: Vec<JobRow> = self
            .db
            .fetch(&sql, &args)
            .await?
            .into_iter()
            .map(job_row)
            .collect();
        let Some(found) = jobs.iter().find(|j| j.uid == job).or(jobs.first()).cloned() else {
            let scope = namespace
                .map(|n| format!(" in namespace {n:?}"))
                .unwrap_or_default();
            return Err(HistoryError::NoSuchJob(job.to_owned(), scope));
        };
        let namespaces: std::collections::BTreeSet<&str> =
            jobs.iter().map(|j| j.namespace.as_str()).collect();
        if found.uid != job && namespaces.len() > 1 {
            return Err(HistoryError::Ambiguous {
                name: job.to_owned(),
                namespaces: namespaces.into_iter().collect::<Vec<_>>().join(", "),
            });
        }
        let pods = self.pods(&found.uid).await?;
        let events = self.events(&found, &pods).await?;
        Ok(JobDetail {
            job: found,
            pods,
            events,
        })
    }

    async fn pods(&mut self, job_uid: &str) -> Result<Vec<PodRow>, HistoryError> {
        let sql = format!(
            "SELECT {} FROM {} WHERE job_id = ? ORDER BY replica_type, name",
            as_text(
                "name, pod_id, replica_type, status, host_ip, pod_ip, image, gmt_started, \
                 gmt_finished, is_in_etcd, remark"
            ),
            self.tables.pods
        );
        let rows = self.db.fetch(&sql, &[job_uid.to_owned()]).await?;
        Ok(rows
            .into_iter()
            .map(|c| {
                let mut c = Fields(c.into_iter());
                PodRow {
                    name: c.text(),
                    uid: c.text(),
                    replica_type: c.text(),
                    status: c.text(),
                    node: c.opt(),
                    pod_ip: c.opt(),
                    image: c.text(),
                    started: c.time(),
                    finished: c.time(),
                    in_cluster: c.flag(),
                    remark: c.opt(),
                }
            })
            .collect())
    }

    /// Events about the job and its pods: by uid where the event names one,
    /// else by kind and name in the job's namespace.
    async fn events(
        &mut self,
        job: &JobRow,
        pods: &[PodRow],
    ) -> Result<Vec<EventGroup>, HistoryError> {
        let mut names = vec![job.name.clone()];
        names.extend(pods.iter().map(|p| p.name.clone()));
        let marks = vec!["?"; names.len()].join(", ");
        let sql = format!(
            "SELECT {} FROM {} WHERE obj_namespace = ? AND obj_name IN ({marks}) \
             ORDER BY first_timestamp, last_timestamp",
            as_text(
                "obj_kind, obj_name, obj_uid, type, reason, source, message, count, \
                 first_timestamp, last_timestamp"
            ),
            self.tables.events
        );
        let mut args = vec![job.namespace.clone()];
        args.extend(names);
        let rows = self.db.fetch(&sql, &args).await?;
        let ours = |kind: &str, name: &str, uid: &str| {
            if !uid.is_empty() {
                return uid == job.uid || pods.iter().any(|p| p.uid == uid);
            }
            (kind == job.kind && name == job.name)
                || (kind == "Pod" && pods.iter().any(|p| p.name == name))
        };
        let mut groups: BTreeMap<(String, String, String, String, String), EventGroup> =
            BTreeMap::new();
        let mut order = Vec::new();
        for c in rows {
            let mut c = Fields(c.into_iter());
            let (kind, name, uid) = (c.text(), c.text(), c.text());
            if !ours(&kind, &name, &uid) {
                continue;
            }
            let object = format!("{kind}/{name}");
            let (event_type, reason, source, message) = (c.text(), c.text(), c.text(), c.text());
            let count = c.text().parse::<u64>().unwrap_or(1).max(1);
            let (first, last) = (c.time(), c.time());
            let key = (
                object.clone(),
                event_type.clone(),
                reason.clone(),
                source.clone(),
                message.clone(),
            );
            let group = groups.entry(key.clone()).or_insert_with(|| {
                order.push(key);
                EventGroup {
                    object,
                    event_type,
                    reason,
                    source,
                    message,
                    count: 0,
                    first_seen: first,
                    last_seen: last,
                }
            });
            group.count += count;
            group.first_seen = earliest(group.first_seen, first);
            group.last_seen = latest(group.last_seen, last.or(first));
        }
        let mut events: Vec<EventGroup> = order
            .into_iter()
            .filter_map(|k| groups.remove(&k))
            .collect();
        events.sort_by_key(|g| g.last_seen);
        Ok(events)
    }

    /// Closes the connection.
    pub async fn close(self) {
        self.db.close().await;
    }
}

fn earliest(a: Option<DateTime<Utc>>, b: Option<DateTime<Utc>>) -> Option<DateTime<Utc>> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

fn latest(a: Option<DateTime<Utc>>, b: Option<DateTime<Utc>>) -> Option<DateTime<Utc>> {
    a.max(b)
}

/// `a, b` -> `CAST(a AS CHAR) AS a, CAST(b AS CHAR) AS b`: every value read
/// as text, on SQLite and MySQL alike.
fn as_text(columns: &str) -> String {
    columns
        .split(',')
        .map(str::trim)
        .map(|c| format!("CAST({c} AS CHAR) AS {c}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Reads the cells of a row in order.
struct Fields(std::vec::IntoIter<Option<String>>);

impl Fields {
    fn opt(&mut self) -> Option<String> {
        self.0.next().flatten().filter(|s| !s.is_empty())
    }
    fn text(&mut self) -> String {
        self.0.next().flatten().unwrap_or_default()
    }
    fn time(&mut self) -> Option<DateTime<Utc>> {
        self.0.next().flatten().as_deref().and_then(parse_time)
    }
    fn flag(&mut self) -> bool {
        self.0.next().flatten().is_some_and(|v| v.trim() == "1")
    }
}

fn job_row(cells: Cells) -> JobRow {
    let mut c = Fields(cells.into_iter());
    let mut job = JobRow {
        namespace: c.text(),
        name: c.text(),
        uid: c.text(),
        kind: c.text(),
        status: c.text(),
        created: c.time(),
        running: c.time(),
        finished: c.time(),
        duration_seconds: None,
        in_cluster: c.flag(),
        owner: c.opt(),
        remark: c.opt(),
    };
    job.duration_seconds = job
        .finished
        .zip(job.running.or(job.created))
        .map(|(end, start)| (end - start).num_seconds().max(0));
    job
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_are_read_as_text_under_their_own_names() {
        assert_eq!(
            as_text("a, gmt_b"),
            "CAST(a AS CHAR) AS a, CAST(gmt_b AS CHAR) AS gmt_b"
        );
    }

    #[test]
    fn a_finished_job_lasts_from_running_else_created() {
        let cells = |running: Option<&str>| -> Cells {
            [
                Some("ns"),
                Some("j"),
                Some("uid"),
                Some("TFJob"),
                Some("Succeeded"),
                Some("2026-03-02T08:00:00Z"),
                running,
                Some("2026-03-02 09:30:00"),
                Some("0"),
                None,
                Some(""),
            ]
            .into_iter()
            .map(|v| v.map(str::to_owned))
            .collect()
        };
        let j = job_row(cells(Some("2026-03-02T08:30:00Z")));
        assert_eq!(j.duration_seconds, Some(3600));
        assert!(!j.in_cluster);
        assert_eq!(j.remark, None);
        assert_eq!(job_row(cells(None)).duration_seconds, Some(5400));
    }

    #[test]
    fn points_in_time_are_instants_dates_or_durations_ago() {
        let at = parse_point("2026-03-02T08:00:00+01:00").unwrap();
        assert_eq!(at.to_rfc3339(), "2026-03-02T07:00:00+00:00");
        assert_eq!(
            parse_point("2026-03-02").unwrap().to_rfc3339(),
            "2026-03-02T00:00:00+00:00"
        );
        let ago = Utc::now() - parse_point("2h").unwrap();
        assert!((7199..=7201).contains(&ago.num_seconds()), "{ago}");
        let err = parse_point("last tuesday").unwrap_err();
        assert!(err.contains("`last tuesday`"), "{err}");
    }

    #[test]
    fn table_names_must_be_plain() {
        let bad = Tables {
            jobs: "job_info; DROP TABLE x".into(),
            ..Tables::default()
        };
        assert!(matches!(bad.checked(), Err(HistoryError::TableName(_))));
        assert!(Tables::default().checked().is_ok());
    }
}
