//! The mysql sink end to end: the real `.wasm` component (built on demand)
//! in the real host, writing through the `sql` capability into SQLite (a
//! temp file), a real MariaDB and a real PostgreSQL (a fresh database on
//! each test server). Each check runs on all three; test names say which
//! service they need.
//!
//! What is checked: redelivery leaves the same rows; a stale
//! resourceVersion is ignored; removal sets `is_in_etcd = 0`, stops an
//! unfinished job or pod with a finish time and leaves a finished one's
//! status, and a stale replay does not bring it back; the columns of
//! `job_info` / `replica_info` are KubeDL's (names and types); an event's
//! count bump updates its one row; `held` pages through the stored uids;
//! in-batch duplicates collapse; long
//! text is cut to its column; bad settings fail `init` naming the key; a
//! table KubeDL created is completed and upserted into.

use std::path::PathBuf;

use anyhow::{Context, bail};
use kubesink_host::sql::{ConnectionConfig, SqlConn, Value};
use kubesink_host::{CallError, Host, HostError, HostOptions, Limits, ModuleSource, SinkSpec};
use kubesink_normalize::record::{Entry, Record};
use kubesink_tests::guests::guest_wasm;
use kubesink_tests::kubedl;
use kubesink_tests::mariadb::{TestDb, fresh_database};
use kubesink_tests::postgres as pg;
use kubesink_tests::records::{T0, applied, event, job, pod, removed};
use sqlx::AssertSqlSafe;

const SINK: &str = "kubesink-sink-mysql";
const CONN: &str = "default";
/// The database behind one test, kept alive as long as the test runs.
enum Backend {
    Sqlite { _dir: tempfile::TempDir },
    Mariadb(TestDb),
    Postgres(pg::TestDb),
}

impl Backend {
    /// The database's SQL for a test query written with `?` placeholders
    /// (PostgreSQL numbers them).
    fn sql(&self, sql: &str) -> String {
        match self {
            Backend::Postgres(_) => numbered(sql),
            _ => sql.to_owned(),
        }
    }

    async fn drop_database(self) -> anyhow::Result<()> {
        match self {
            Backend::Sqlite { .. } => {}
            Backend::Mariadb(db) => db.drop_database().await?,
            Backend::Postgres(db) => db.drop_database().await?,
        }
        Ok(())
    }
}

/// `?` placeholders as `$1`, `$2`, ... (the tests' own SQL: no `?` in a
/// literal).
pub(crate) fn numbered(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len() + 8);
    let mut n = 0;
    for c in sql.chars() {
        if c == '?' {
            n += 1;
            out.push_str(&format!("${n}"));
        } else {
            out.push(c);
        }
    }
    out
}

/// A host with one connection `default` and the mysql sink loaded on it.
struct Fixture {
    host: Host,
    sink: kubesink_host::SinkInstance,
    backend: Backend,
    _cache: tempfile::TempDir,
}

fn spec(wasm: PathBuf, settings: &[(&str, &str)]) -> SinkSpec {
    SinkSpec {
        name: "mysql".into(),
        module: ModuleSource::Path(wasm),
        settings: settings
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
        sql_grants: vec![CONN.into()],
        limits: Limits::default(),
    }
}

async fn backend(db: crate::Db) -> anyhow::Result<(Backend, String)> {
    match db {
        crate::Db::Mariadb => {
            let db = fresh_database("mysql_sink").await?;
            let url = db.url().to_owned();
            Ok((Backend::Mariadb(db), url))
        }
        crate::Db::Postgres => {
            let db = pg::fresh_database("mysql_sink").await?;
            let url = db.url().to_owned();
            Ok((Backend::Postgres(db), url))
        }
        crate::Db::Sqlite => {
            let dir = tempfile::tempdir()?;
            let url = format!("sqlite://{}?mode=rwc", dir.path().join("sink.db").display());
            Ok((Backend::Sqlite { _dir: dir }, url))
        }
    }
}

fn host_for(url: &str, cache: &tempfile::TempDir) -> anyhow::Result<Host> {
    Ok(Host::new(HostOptions {
        cache_dir: Some(cache.path().to_owned()),
        sql: vec![ConnectionConfig::new(CONN, url)],
        kafka: Vec::new(),
    })?)
}

impl Fixture {
    async fn new(db: crate::Db, settings: &[(&str, &str)]) -> anyhow::Result<Self> {
        let (backend, url) = backend(db).await?;
        Self::on(backend, &url, settings).await
    }

    async fn on(backend: Backend, url: &str, settings: &[(&str, &str)]) -> anyhow::Result<Self> {
        let cache = tempfile::tempdir()?;
        let host = host_for(url, &cache)?;
        let wasm = guest_wasm(SINK)?;
        let sink = host
            .load(spec(wasm, settings))
            .await
            .context("loading the mysql sink")?;
        Ok(Self {
            host,
            sink,
            backend,
            _cache: cache,
        })
    }

    fn conn(&self) -> anyhow::Result<SqlConn> {
        self.host
            .sql_pools()
            .get(CONN)
            .context("connection `default`")
    }

    async fn write(&mut self, batch: &[Entry]) -> anyhow::Result<()> {
        self.sink.write(batch).await.context("sink write")
    }

    async fn rows(&self, sql: &str) -> anyhow::Result<Vec<Vec<Cell>>> {
        Ok(cells(self.conn()?.query(sql, &[]).await?))
    }

    /// `?` placeholders, numbered on PostgreSQL.
    async fn query(&self, sql: &str, params: &[&str]) -> anyhow::Result<Vec<Vec<Cell>>> {
        let params: Vec<Value> = params
            .iter()
            .map(|p| Value::Text((*p).to_owned()))
            .collect();
        let sql = self.backend.sql(sql);
        Ok(cells(self.conn()?.query(&sql, &params).await?))
    }

    /// One row as (column name, value) pairs, found by `key = uid`.
    async fn row(&self, table: &str, key: &str, uid: &str) -> anyhow::Result<Row> {
        let names = self.column_names(table).await?;
        let rows = self
            .query(&format!("SELECT * FROM {table} WHERE {key} = ?"), &[uid])
            .await?;
        match rows.as_slice() {
            [one] => Ok(Row(names.into_iter().zip(one.iter().cloned()).collect())),
            other => bail!("{table}: {} rows for {key} = {uid}", other.len()),
        }
    }

    async fn column_names(&self, table: &str) -> anyhow::Result<Vec<String>> {
        Ok(self
            .columns(table)
            .await?
            .into_iter()
            .map(|(n, _)| n)
            .collect())
    }

    /// (name, type) of every column, in table order, as the database
    /// reports them (`information_schema.columns` / `pragma table_info`).
    async fn columns(&self, table: &str) -> anyhow::Result<Vec<(String, String)>> {
        let sql = match self.backend {
            Backend::Mariadb(_) => {
                "SELECT column_name, column_type FROM information_schema.columns \
                 WHERE table_schema = DATABASE() AND table_name = ? ORDER BY ordinal_position"
            }
            // table_xinfo: generated columns too (job_info.gmt_finished).
            Backend::Sqlite { .. } => "SELECT name, type FROM pragma_table_xinfo(?) ORDER BY cid",
            Backend::Postgres(_) => {
                "SELECT a.attname::text, format_type(a.atttypid, a.atttypmod) \
                 FROM pg_attribute AS a JOIN pg_class AS c ON c.oid = a.attrelid \
                 WHERE c.relname = ? AND c.relnamespace = current_schema()::regnamespace \
                 AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum"
            }
        };
        let rows = self.query(sql, &[table]).await?;
        rows.into_iter()
            .map(|r| match r.as_slice() {
                [Cell::Text(n), Cell::Text(t)] => Ok((n.clone(), t.to_lowercase())),
                other => bail!("unexpected column row {other:?}"),
            })
            .collect()
    }

    async fn count(&self, table: &str) -> anyhow::Result<i64> {
        let rows = self.rows(&format!("SELECT COUNT(*) FROM {table}")).await?;
        rows.first()
            .and_then(|r| r.first())
            .map(int)
            .context("count")
    }

    async fn close(self) -> anyhow::Result<()> {
        drop(self.sink);
        self.host.sql_pools().close().await;
        self.backend.drop_database().await
    }
}

/// A result cell in comparable form (integers of either signedness as
/// `Int`, timestamps as `Time`).
#[derive(Debug, Clone, PartialEq)]
enum Cell {
    Null,
    Int(i64),
    Float(f64),
    Text(String),
    Bytes(Vec<u8>),
    Time(i64, u32),
}

fn cell(v: &Value) -> Cell {
    match v {
        Value::Null => Cell::Null,
        Value::Int(i) => Cell::Int(*i),
        Value::Uint(u) => Cell::Int(i64::try_from(*u).unwrap_or(i64::MAX)),
        Value::Float(f) => Cell::Float(*f),
        Value::Text(s) => Cell::Text(s.clone()),
        Value::Bytes(b) => Cell::Bytes(b.clone()),
        Value::Timestamp(t) => Cell::Time(t.seconds, t.nanos),
    }
}

fn cells(rows: Vec<Vec<Value>>) -> Vec<Vec<Cell>> {
    rows.iter().map(|r| r.iter().map(cell).collect()).collect()
}

fn text_cell(s: &str) -> Cell {
    Cell::Text(s.to_owned())
}

/// A row by column name.
#[derive(Debug)]
struct Row(Vec<(String, Cell)>);

impl Row {
    fn get(&self, column: &str) -> &Cell {
        self.0
            .iter()
            .find(|(n, _)| n == column)
            .map(|(_, v)| v)
            .unwrap_or_else(|| panic!("no column {column} in {self:?}"))
    }
    fn int(&self, column: &str) -> i64 {
        int(self.get(column))
    }
    fn text(&self, column: &str) -> &str {
        match self.get(column) {
            Cell::Text(s) => s,
            other => panic!("{column} is not text: {other:?}"),
        }
    }
}

fn int(v: &Cell) -> i64 {
    match v {
        Cell::Int(i) => *i,
        other => panic!("not an integer: {other:?}"),
    }
}

fn time(offset: i64) -> Cell {
    Cell::Time(T0 + offset, 0)
}

/// Everything of every table, for before/after comparisons.
async fn snapshot(f: &Fixture) -> anyhow::Result<Vec<Vec<Vec<Cell>>>> {
    let mut out = Vec::new();
    for t in ["job_info", "replica_info", "event_info"] {
        out.push(f.rows(&format!("SELECT * FROM {t} ORDER BY id")).await?);
    }
    Ok(out)
}

fn mixed_batch() -> Vec<Entry> {
    vec![
        applied(Record::Job(job("job-1", 100, "Running"))),
        applied(Record::Job(job("job-2", 101, "Succeeded"))),
        applied(Record::Pod(pod("pod-1", 102, "Running"))),
        removed(Record::Pod(pod("pod-2", 103, "Running")), 60),
        applied(Record::Event(event("ev-1", 104, 1))),
    ]
}

async fn redelivery_leaves_the_same_rows(db: crate::Db) -> anyhow::Result<()> {
    let mut f = Fixture::new(db, &[]).await?;
    f.write(&mixed_batch()).await?;
    let first = snapshot(&f).await?;
    assert_eq!(
        first.iter().map(Vec::len).collect::<Vec<_>>(),
        [2, 2, 1],
        "{first:?}"
    );
    f.write(&mixed_batch()).await?;
    f.write(&mixed_batch()).await?;
    assert_eq!(snapshot(&f).await?, first, "redelivery changed rows");

    // The values as KubeDL's columns hold them.
    let j = f.row("job_info", "job_id", "job-1").await?;
    assert_eq!(j.text("name"), "name-job-1");
    assert_eq!(j.text("namespace"), "kubedl");
    assert_eq!(j.text("version"), "100");
    assert_eq!(j.text("status"), "Running");
    assert_eq!(j.text("kind"), "TFJob");
    assert_eq!(j.text("resources"), r#"{"Worker":{"replicas":2}}"#);
    assert_eq!(j.text("deploy_region"), "cn-hangzhou");
    assert_eq!(j.text("tenant"), "team-a");
    assert_eq!(j.text("owner"), "alice");
    assert_eq!(j.int("deleted"), 0);
    assert_eq!(j.int("is_in_etcd"), 1);
    assert_eq!(j.get("gmt_created"), &time(0));
    assert_eq!(j.get("gmt_modified"), &time(100));
    assert_eq!(j.get("gmt_job_running"), &time(5));
    assert_eq!(j.get("gmt_finished"), &Cell::Null);
    let p = f.row("replica_info", "pod_id", "pod-1").await?;
    assert_eq!(p.text("job_id"), "job-1");
    assert_eq!(p.text("replica_type"), "worker");
    assert_eq!(p.text("image"), "tensorflow:2.15");
    assert_eq!(p.text("host_ip"), "10.0.0.1");
    assert_eq!(p.text("pod_ip"), "10.1.0.7");
    assert_eq!(p.get("gmt_started"), &time(6));
    let e = f.row("event_info", "event_id", "ev-1").await?;
    assert_eq!(e.text("obj_kind"), "Pod");
    assert_eq!(e.text("obj_uid"), "pod-1");
    assert_eq!(e.text("type"), "Warning");
    assert_eq!(e.text("reason"), "BackOff");
    assert_eq!(e.text("source"), "kubelet/node-1");
    assert_eq!(e.int("count"), 1);
    f.close().await
}

async fn stale_resource_version_is_ignored(db: crate::Db) -> anyhow::Result<()> {
    let mut f = Fixture::new(db, &[]).await?;
    f.write(&[
        applied(Record::Job(job("job-1", 200, "Running"))),
        applied(Record::Pod(pod("pod-1", 201, "Running"))),
    ])
    .await?;
    // Older versions, in a later batch.
    f.write(&[
        applied(Record::Job(job("job-1", 150, "Created"))),
        applied(Record::Pod(pod("pod-1", 120, "Pending"))),
    ])
    .await?;
    let j = f.row("job_info", "job_id", "job-1").await?;
    assert_eq!((j.text("status"), j.text("version")), ("Running", "200"));
    assert_eq!(j.get("gmt_modified"), &time(200));
    let p = f.row("replica_info", "pod_id", "pod-1").await?;
    assert_eq!((p.text("status"), p.text("version")), ("Running", "201"));
    // Newer ones still apply; numerically (1000 > 999, unlike as text).
    f.write(&[applied(Record::Job(job("job-1", 999, "Running")))])
        .await?;
    f.write(&[applied(Record::Job(job("job-1", 1000, "Succeeded")))])
        .await?;
    let j = f.row("job_info", "job_id", "job-1").await?;
    assert_eq!((j.text("status"), j.text("version")), ("Succeeded", "1000"));
    assert_eq!(j.get("gmt_finished"), &time(50));
    // Within one batch, a newer entry followed by an older one: the newer wins.
    f.write(&[
        applied(Record::Pod(pod("pod-1", 300, "Succeeded"))),
        applied(Record::Pod(pod("pod-1", 250, "Running"))),
    ])
    .await?;
    let p = f.row("replica_info", "pod_id", "pod-1").await?;
    assert_eq!((p.text("status"), p.text("version")), ("Succeeded", "300"));
    assert_eq!(f.count("replica_info").await?, 1);
    f.close().await
}

/// The state after the removals of `removal_marks_rows_and_is_final`.
async fn check_removed(f: &Fixture) -> anyhow::Result<()> {
    let j = f.row("job_info", "job_id", "job-run").await?;
    assert_eq!(j.int("is_in_etcd"), 0);
    assert_eq!(j.text("status"), "Stopped");
    assert_eq!(j.get("gmt_finished"), &time(500));
    let j = f.row("job_info", "job_id", "job-done").await?;
    assert_eq!(j.int("is_in_etcd"), 0);
    assert_eq!(j.text("status"), "Succeeded");
    assert_eq!(j.get("gmt_finished"), &time(50));
    let p = f.row("replica_info", "pod_id", "pod-run").await?;
    assert_eq!(p.int("is_in_etcd"), 0);
    assert_eq!(p.text("status"), "Stopped");
    assert_eq!(p.get("gmt_finished"), &time(501));
    let p = f.row("replica_info", "pod_id", "pod-done").await?;
    assert_eq!(p.int("is_in_etcd"), 0);
    assert_eq!(p.text("status"), "Failed");
    assert_eq!(p.get("gmt_finished"), &time(40));
    Ok(())
}

async fn removal_marks_rows_and_is_final(db: crate::Db) -> anyhow::Result<()> {
    let mut f = Fixture::new(db, &[]).await?;
    let running_job = job("job-run", 300, "Running");
    let done_job = job("job-done", 301, "Succeeded");
    let running_pod = pod("pod-run", 302, "Running");
    let done_pod = pod("pod-done", 303, "Failed");
    f.write(&[
        applied(Record::Job(running_job.clone())),
        applied(Record::Job(done_job.clone())),
        applied(Record::Pod(running_pod.clone())),
        applied(Record::Pod(done_pod.clone())),
    ])
    .await?;
    // The removals carry the same resourceVersion as the last applied state.
    let removals = [
        removed(Record::Job(running_job.clone()), 500),
        removed(Record::Job(done_job.clone()), 500),
        removed(Record::Pod(running_pod.clone()), 501),
        removed(Record::Pod(done_pod.clone()), 501),
    ];
    f.write(&removals).await?;
    check_removed(&f).await?;
    let after_removal = snapshot(&f).await?;
    // A stale replay of the applied states (equal and older versions) does
    // not resurrect anything; a redelivered removal changes nothing.
    f.write(&[
        applied(Record::Job(running_job.clone())),
        applied(Record::Pod(running_pod.clone())),
        applied(Record::Job(job("job-run", 299, "Running"))),
    ])
    .await?;
    f.write(&removals).await?;
    check_removed(&f).await?;
    assert_eq!(snapshot(&f).await?, after_removal);
    // A removal of something never seen stores its last state as removed.
    f.write(&[removed(Record::Job(job("job-new", 400, "Queuing")), 700)])
        .await?;
    let j = f.row("job_info", "job_id", "job-new").await?;
    assert_eq!((j.int("is_in_etcd"), j.text("status")), (0, "Stopped"));
    assert_eq!(j.get("gmt_finished"), &time(700));
    // A removal carrying an older state than the stored one (its last
    // known snapshot): the newer data stays, the removal still applies.
    f.write(&[
        applied(Record::Job(job("job-late", 900, "Running"))),
        applied(Record::Pod(pod("pod-late", 901, "Succeeded"))),
    ])
    .await?;
    f.write(&[
        removed(Record::Job(job("job-late", 800, "Created")), 950),
        removed(Record::Pod(pod("pod-late", 850, "Running")), 951),
    ])
    .await?;
    let j = f.row("job_info", "job_id", "job-late").await?;
    assert_eq!((j.text("version"), j.text("status")), ("900", "Stopped"));
    assert_eq!(
        (j.int("is_in_etcd"), j.get("gmt_finished")),
        (0, &time(950))
    );
    assert_eq!(j.get("gmt_modified"), &time(900));
    let p = f.row("replica_info", "pod_id", "pod-late").await?;
    assert_eq!((p.text("version"), p.text("status")), ("901", "Succeeded"));
    assert_eq!((p.int("is_in_etcd"), p.get("gmt_finished")), (0, &time(40)));
    f.close().await
}

/// A tombstone (deleted while not watched: kind, uid and time only) marks
/// the stored row removed, keeps its data, stops an unfinished job and is
/// final; one for a uid never stored writes nothing a later applied state
/// of a newer version could not replace.
async fn tombstone_marks_the_row_removed(db: crate::Db) -> anyhow::Result<()> {
    use kubesink_normalize::record::{Change, RecordKind, Timestamp};
    let mut f = Fixture::new(db, &[]).await?;
    f.write(&[
        applied(Record::Job(job("job-t", 300, "Running"))),
        applied(Record::Pod(pod("pod-t", 301, "Succeeded"))),
        applied(Record::Event(event("ev-t", 302, 4))),
    ])
    .await?;
    let at = |offset: i64| Timestamp {
        seconds: T0 + offset,
        nanos: 0,
    };
    let tombstones = [
        Change::tombstone(RecordKind::Job, "job-t".into(), at(600)),
        Change::tombstone(RecordKind::Pod, "pod-t".into(), at(601)),
        Change::tombstone(RecordKind::Event, "ev-t".into(), at(602)),
    ];
    f.write(&tombstones).await?;
    let j = f.row("job_info", "job_id", "job-t").await?;
    assert_eq!((j.int("is_in_etcd"), j.text("status")), (0, "Stopped"));
    assert_eq!((j.text("name"), j.text("version")), ("name-job-t", "300"));
    assert_eq!(j.get("gmt_finished"), &time(600));
    let p = f.row("replica_info", "pod_id", "pod-t").await?;
    assert_eq!((p.int("is_in_etcd"), p.text("status")), (0, "Succeeded"));
    assert_eq!(p.get("gmt_finished"), &time(40));
    let e = f.row("event_info", "event_id", "ev-t").await?;
    assert_eq!((e.int("is_in_etcd"), e.int("count")), (0, 4));
    // Final: the applied state delivered again does not bring it back.
    f.write(&[applied(Record::Job(job("job-t", 300, "Running")))])
        .await?;
    let j = f.row("job_info", "job_id", "job-t").await?;
    assert_eq!((j.int("is_in_etcd"), j.text("status")), (0, "Stopped"));
    assert_eq!(f.count("job_info").await?, 1);
    f.close().await
}

/// `held` pages through the uids stored as still in the cluster, in uid
/// order (keyset paging with the dialect's placeholder), without the
/// removed ones.
async fn held_pages_through_the_stored_uids(db: crate::Db) -> anyhow::Result<()> {
    use kubesink_host::HeldCap;
    use kubesink_normalize::record::RecordKind;
    let mut f = Fixture::new(db, &[]).await?;
    let mut batch: Vec<Entry> = (0..11)
        .map(|i| applied(Record::Pod(pod(&format!("p{i:02}"), 5, "Running"))))
        .collect();
    batch.push(removed(Record::Pod(pod("p03", 6, "Running")), 60));
    f.write(&batch).await?;
    f.sink.set_held_cap(HeldCap {
        page_uids: 4,
        ..HeldCap::default()
    });
    let held = f.sink.held(RecordKind::Pod).await?;
    let want: Vec<String> = (0..11)
        .filter(|i| *i != 3)
        .map(|i| format!("p{i:02}"))
        .collect();
    assert_eq!(held, want, "every page, in order, without the removed pod");
    assert!(f.sink.held(RecordKind::Job).await?.is_empty());
    f.close().await
}

/// KubeDL's columns (the shared fixture) plus the seed document's
/// `gmt_finished`, generated from `gmt_job_finished` on `job_info`.
fn expected_columns(table: &str) -> Vec<(&'static str, &'static str)> {
    match table {
        "job_info" => {
            let mut columns = kubedl::KUBEDL_JOB.to_vec();
            columns.push(("gmt_finished", "datetime"));
            columns
        }
        _ => kubedl::KUBEDL_POD.to_vec(),
    }
}

/// A MySQL column type of [`expected_columns`] as PostgreSQL's
/// `format_type` shows the type the sink maps it to.
fn postgres_type(mysql: &str) -> String {
    if let Some(n) = mysql.strip_prefix("varchar") {
        return format!("character varying{n}");
    }
    match mysql {
        "text" => "text",
        "datetime" => "timestamp without time zone",
        t if t.starts_with("tinyint") => "smallint",
        t if t.ends_with("unsigned") => "bigint",
        other => other,
    }
    .to_owned()
}

async fn schema_matches_kubedl(db: crate::Db) -> anyhow::Result<()> {
    let f = Fixture::new(db, &[]).await?;
    for (table, key, expected) in [
        ("job_info", "job_id", expected_columns("job_info")),
        ("replica_info", "pod_id", expected_columns("replica_info")),
    ] {
        let actual = f.columns(table).await?;
        for (name, ty) in &expected {
            let found = actual.iter().find(|(n, _)| n == name);
            let ty = match db {
                crate::Db::Postgres => postgres_type(ty),
                _ => (*ty).to_owned(),
            };
            assert_eq!(
                found.map(|(_, t)| t.as_str()),
                Some(ty.as_str()),
                "{table}.{name}: {actual:?}"
            );
        }
        // An integer auto-increment primary key `id`.
        let id = actual.iter().find(|(n, _)| n == "id").map(|(_, t)| t);
        match f.backend {
            Backend::Mariadb(_) => {
                assert_eq!(id.map(String::as_str), Some("bigint(20) unsigned"));
                let extra = f
                    .query(
                        "SELECT extra, column_key FROM information_schema.columns \
                         WHERE table_schema = DATABASE() AND table_name = ? AND column_name = 'id'",
                        &[table],
                    )
                    .await?;
                assert_eq!(
                    extra,
                    vec![vec![text_cell("auto_increment"), text_cell("PRI")]]
                );
                let unique = f
                    .query(
                        "SELECT index_name FROM information_schema.statistics \
                         WHERE table_schema = DATABASE() AND table_name = ? \
                         AND column_name = ? AND non_unique = 0",
                        &[table, key],
                    )
                    .await?;
                assert_eq!(unique.len(), 1, "{table}: unique key on {key}");
            }
            Backend::Sqlite { .. } => {
                assert_eq!(id.map(String::as_str), Some("integer"));
                let unique = f
                    .query(
                        "SELECT il.name FROM pragma_index_list(?) AS il \
                         JOIN pragma_index_info(il.name) AS ii \
                         WHERE il.\"unique\" = 1 AND ii.name = ?",
                        &[table, key],
                    )
                    .await?;
                assert_eq!(unique.len(), 1, "{table}: unique key on {key}");
            }
            Backend::Postgres(_) => {
                assert_eq!(id.map(String::as_str), Some("bigint"));
                let identity = f
                    .query(
                        "SELECT is_identity::text FROM information_schema.columns \
                         WHERE table_schema = current_schema() AND table_name = ? \
                         AND column_name = 'id'",
                        &[table],
                    )
                    .await?;
                assert_eq!(identity, vec![vec![text_cell("YES")]]);
                let unique = f
                    .query(
                        "SELECT i.indexrelid::regclass::text FROM pg_index AS i \
                         JOIN pg_attribute AS a ON a.attrelid = i.indrelid \
                         AND a.attnum = i.indkey[0] \
                         WHERE i.indrelid = ?::regclass AND i.indisunique \
                         AND i.indnatts = 1 AND a.attname = ?",
                        &[table, key],
                    )
                    .await?;
                assert_eq!(unique.len(), 1, "{table}: unique key on {key}");
                // The seed document's name is a stored generated column.
                if table == "job_info" {
                    let generated = f
                        .query(
                            "SELECT is_generated::text, generation_expression::text \
                             FROM information_schema.columns WHERE table_schema = current_schema() \
                             AND table_name = ? AND column_name = 'gmt_finished'",
                            &[table],
                        )
                        .await?;
                    assert_eq!(
                        generated,
                        vec![vec![text_cell("ALWAYS"), text_cell("gmt_job_finished")]]
                    );
                }
            }
        }
    }
    f.close().await
}

async fn event_count_bump_updates_the_same_row(db: crate::Db) -> anyhow::Result<()> {
    let mut f = Fixture::new(db, &[]).await?;
    f.write(&[applied(Record::Event(event("ev-1", 10, 1)))])
        .await?;
    let id = f.row("event_info", "event_id", "ev-1").await?.int("id");
    // Two bumps in one batch, then a stale one.
    f.write(&[
        applied(Record::Event(event("ev-1", 11, 2))),
        applied(Record::Event(event("ev-1", 15, 5))),
    ])
    .await?;
    f.write(&[applied(Record::Event(event("ev-1", 13, 3)))])
        .await?;
    assert_eq!(f.count("event_info").await?, 1);
    let e = f.row("event_info", "event_id", "ev-1").await?;
    assert_eq!(e.int("id"), id, "same row");
    assert_eq!(e.int("count"), 5);
    assert_eq!(e.text("version"), "15");
    assert_eq!(e.get("first_timestamp"), &time(10));
    assert_eq!(e.get("last_timestamp"), &time(15));
    assert_eq!(e.get("gmt_modified"), &time(15));
    assert_eq!(e.int("is_in_etcd"), 1);
    // Expired from the cluster.
    f.write(&[removed(Record::Event(event("ev-1", 15, 5)), 3600)])
        .await?;
    let e = f.row("event_info", "event_id", "ev-1").await?;
    assert_eq!((e.int("is_in_etcd"), e.int("count")), (0, 5));
    f.close().await
}

async fn long_text_is_cut_and_many_rows_are_batched(db: crate::Db) -> anyhow::Result<()> {
    let mut f = Fixture::new(db, &[("max_rows_per_statement", "100")]).await?;
    let mut long = pod("pod-long", 1, "Running");
    long.resources = "é".repeat(2000);
    long.image = "i".repeat(300);
    let mut batch = vec![applied(Record::Pod(long))];
    batch.extend((0..1050).map(|i| applied(Record::Event(event(&format!("ev-{i}"), 5, 1)))));
    f.write(&batch).await?;
    let p = f.row("replica_info", "pod_id", "pod-long").await?;
    assert_eq!(p.text("resources"), "é".repeat(1024));
    assert_eq!(p.text("image"), "i".repeat(255));
    assert_eq!(f.count("event_info").await?, 1050);
    f.close().await
}

async fn bad_settings_fail_init_naming_the_key(db: crate::Db) -> anyhow::Result<()> {
    let (backend, url) = backend(db).await?;
    let cache = tempfile::tempdir()?;
    let host = host_for(&url, &cache)?;
    let wasm = guest_wasm(SINK)?;
    for (settings, needle) in [
        (vec![("colour", "blue")], "`colour`"),
        (vec![("jobs", "perhaps")], "`jobs`"),
        (vec![("job_table", "job_info; DROP")], "`job_table`"),
        (vec![("connection", "other")], "`other`"),
    ] {
        let err = host
            .load(spec(wasm.clone(), &settings))
            .await
            .expect_err("init must fail");
        match &err {
            HostError::Init {
                source: CallError::Fatal(msg),
                ..
            } => assert!(msg.contains(needle), "{msg}"),
            other => bail!("expected a fatal init error naming {needle}, got {other:?}"),
        }
    }
    host.sql_pools().close().await;
    backend.drop_database().await
}

/// Custom table names and a sink writing only events.
async fn settings_choose_tables(db: crate::Db) -> anyhow::Result<()> {
    let mut f = Fixture::new(
        db,
        &[
            ("jobs", "false"),
            ("pods", "false"),
            ("event_table", "k8s_events"),
        ],
    )
    .await?;
    f.write(&mixed_batch()).await?;
    assert_eq!(f.count("k8s_events").await?, 1);
    let tables = match f.backend {
        Backend::Mariadb(_) => {
            f.rows(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = DATABASE()",
            )
            .await?
        }
        Backend::Sqlite { .. } => {
            f.rows(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'",
            )
            .await?
        }
        Backend::Postgres(_) => {
            f.rows(
                "SELECT table_name::text FROM information_schema.tables \
                 WHERE table_schema = current_schema()",
            )
            .await?
        }
    };
    assert_eq!(tables, vec![vec![text_cell("k8s_events")]]);
    f.close().await
}

// Test names: `mysql_sink::{sqlite,mariadb,postgres}::<check>`.
on_all!(
    redelivery_leaves_the_same_rows,
    stale_resource_version_is_ignored,
    removal_marks_rows_and_is_final,
    tombstone_marks_the_row_removed,
    held_pages_through_the_stored_uids,
    schema_matches_kubedl,
    event_count_bump_updates_the_same_row,
    long_text_is_cut_and_many_rows_are_batched,
    bad_settings_fail_init_naming_the_key,
    settings_choose_tables,
);

/// A `job_info` as KubeDL's gorm creates it (no unique key, no
/// `version_num`), with a stored `gmt_finished` as the seed document had it,
/// and a row in it: the sink adds what it needs, moves the stored finish
/// time into `gmt_job_finished`, and upserts into the existing row.
#[tokio::test]
async fn mariadb_mysql_sink_completes_a_kubedl_created_table() -> anyhow::Result<()> {
    let db = fresh_database("mysql_sink_kubedl").await?;
    let url = db.url().to_owned();
    {
        let pool = db.connect().await?;
        sqlx::query(AssertSqlSafe(kubedl::create_table(
            "job_info",
            &[kubedl::KUBEDL_JOB, &[("gmt_finished", "datetime")]].concat(),
        )))
        .execute(&pool)
        .await?;
        sqlx::query(
            "INSERT INTO job_info (name, namespace, job_id, version, status, kind, is_in_etcd, deleted, gmt_finished) \
             VALUES ('old', 'kubedl', 'job-1', '90', 'Running', 'TFJob', 1, 0, '2026-01-02 03:04:05')",
        )
        .execute(&pool)
        .await?;
        pool.close().await;
    }
    let mut f = Fixture::on(
        Backend::Mariadb(db),
        &url,
        &[("pods", "false"), ("events", "false")],
    )
    .await?;
    let names = f.column_names("job_info").await?;
    assert!(names.iter().any(|n| n == "version_num"), "{names:?}");
    let moved = f
        .query(
            "SELECT DATE_FORMAT(gmt_job_finished, '%Y-%m-%d %H:%i:%s') FROM job_info",
            &[],
        )
        .await?;
    assert_eq!(moved, vec![vec![text_cell("2026-01-02 03:04:05")]]);
    f.write(&[applied(Record::Job(job("job-1", 100, "Succeeded")))])
        .await?;
    assert_eq!(f.count("job_info").await?, 1);
    let j = f.row("job_info", "job_id", "job-1").await?;
    assert_eq!(
        (j.int("id"), j.text("status"), j.text("version")),
        (1, "Succeeded", "100")
    );
    f.close().await
}
