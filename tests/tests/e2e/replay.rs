//! The KubeDL replay fixture end to end, through the real pipeline and the
//! wasm mysql sink: the rows on SQLite, on a real MariaDB and on a real
//! PostgreSQL match the reviewed expected rows
//! (`tests/fixtures/kubedl/expected-rows.json`; rewrite with
//! `KUBESINK_BLESS=1`), PostgreSQL's equal MariaDB's column by column,
//! replaying again changes nothing, and a sink stopped by its limits does
//! not hold back another sink.

use std::collections::BTreeMap;
use std::io::BufReader;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use kubesink::config::Config;
use kubesink::pipeline::{Pipeline, SinkReport};
use kubesink::source::{Normalizer, replay};
use kubesink_host::Host;
use kubesink_tests::{guests, mariadb, postgres};
use serde_json::{Map, Value};
use sqlx::{AssertSqlSafe, Connection, Row};

const TABLES: [(&str, &str); 3] = [
    ("job_info", "job_id"),
    ("replica_info", "pod_id"),
    ("event_info", "event_id"),
];

pub(crate) fn fixture(name: &str) -> PathBuf {
    guests::workspace_root()
        .join("tests/fixtures/kubedl")
        .join(name)
}

/// Replays the watch fixture through a pipeline built from `config_yaml`
/// (`{module}` is replaced by the mysql sink's path).
pub(crate) async fn replay_fixture(config_yaml: &str) -> Result<Vec<SinkReport>> {
    replay_fixture_with(config_yaml, |_| {}).await
}

/// [`replay_fixture`], with `tamper` changing the fixture's entries first.
async fn replay_fixture_with(
    config_yaml: &str,
    tamper: impl FnOnce(&mut Vec<kubesink_normalize::record::Entry>),
) -> Result<Vec<SinkReport>> {
    let module = guests::guest_wasm("kubesink-sink-mysql")?;
    let yaml = config_yaml.replace("{module}", &module.display().to_string());
    let config = Config::parse(&yaml, "test config")?;
    let plan = config.resolve("test config")?;
    let host = Host::new(plan.host.clone())?;
    let pipeline = Pipeline::start(&host, plan.sinks.clone()).await?;
    let normalizer = Normalizer::with_region(plan.region.clone());
    let file = std::fs::File::open(fixture("watch.json"))?;
    let mut entries = Vec::new();
    let report = replay::replay(BufReader::new(file), "watch.json", &normalizer, |e| {
        entries.push(e);
        true
    });
    anyhow::ensure!(
        report.problems.is_empty(),
        "fixture problems: {:?}",
        report.problems
    );
    tamper(&mut entries);
    for e in entries {
        pipeline.send(e).await;
    }
    Ok(pipeline.finish().await)
}

/// `2026-03-02T08:00:00Z`, `2026-03-02 08:00:00` and
/// `2026-03-02 08:00:00.000000` are the same instant in different dialects.
fn canonical(v: Option<String>) -> Value {
    let Some(v) = v else { return Value::Null };
    let b = v.as_bytes();
    let looks_like_datetime = b.len() >= 19
        && b[4] == b'-'
        && b[7] == b'-'
        && (b[10] == b' ' || b[10] == b'T')
        && b[13] == b':'
        && b[16] == b':';
    if looks_like_datetime {
        let mut s = v.replacen('T', " ", 1);
        if s.ends_with('Z') {
            s.pop();
        }
        if let Some((whole, frac)) = s.split_once('.') {
            let frac = frac.trim_end_matches('0');
            s = if frac.is_empty() {
                whole.to_owned()
            } else {
                format!("{whole}.{frac}")
            };
        }
        return Value::String(s);
    }
    Value::String(v)
}

pub(crate) type Rows = BTreeMap<String, Vec<Map<String, Value>>>;

pub(crate) async fn sqlite_rows(path: &Path) -> Result<Rows> {
    let mut conn = sqlx::SqliteConnection::connect(&format!("sqlite://{}", path.display())).await?;
    let mut out = Rows::new();
    for (table, key) in TABLES {
        // table_xinfo: generated columns too (job_info.gmt_finished).
        let cols: Vec<String> = sqlx::query(AssertSqlSafe(format!("PRAGMA table_xinfo({table})")))
            .fetch_all(&mut conn)
            .await?
            .iter()
            .map(|r| r.get::<String, _>("name"))
            .filter(|c| c != "id")
            .collect();
        let select: Vec<String> = cols.iter().map(|c| format!("CAST({c} AS TEXT)")).collect();
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT {} FROM {table} ORDER BY {key}",
            select.join(", ")
        )))
        .fetch_all(&mut conn)
        .await?;
        out.insert(table.into(), to_maps(&cols, &rows));
    }
    Ok(out)
}

async fn mariadb_rows(url: &str) -> Result<Rows> {
    let mut conn = sqlx::MySqlConnection::connect(url).await?;
    let mut out = Rows::new();
    for (table, key) in TABLES {
        let cols: Vec<String> = sqlx::query(
            "SELECT CAST(column_name AS CHAR) FROM information_schema.columns \
             WHERE table_schema = DATABASE() AND table_name = ? ORDER BY ordinal_position",
        )
        .bind(table)
        .fetch_all(&mut conn)
        .await?
        .iter()
        .map(|r| r.get::<String, _>(0))
        .filter(|c| c != "id")
        .collect();
        let select: Vec<String> = cols.iter().map(|c| format!("CAST({c} AS CHAR)")).collect();
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT {} FROM {table} ORDER BY {key}",
            select.join(", ")
        )))
        .fetch_all(&mut conn)
        .await?;
        out.insert(table.into(), to_maps(&cols, &rows));
    }
    Ok(out)
}

async fn postgres_rows(url: &str) -> Result<Rows> {
    let mut conn = sqlx::PgConnection::connect(url).await?;
    let mut out = Rows::new();
    for (table, key) in TABLES {
        let cols: Vec<String> = sqlx::query(
            "SELECT column_name::text FROM information_schema.columns \
             WHERE table_schema = current_schema() AND table_name = $1 ORDER BY ordinal_position",
        )
        .bind(table)
        .fetch_all(&mut conn)
        .await?
        .iter()
        .map(|r| r.get::<String, _>(0))
        .filter(|c| c != "id")
        .collect();
        let select: Vec<String> = cols.iter().map(|c| format!("CAST({c} AS TEXT)")).collect();
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT {} FROM {table} ORDER BY {key}",
            select.join(", ")
        )))
        .fetch_all(&mut conn)
        .await?;
        out.insert(table.into(), to_maps(&cols, &rows));
    }
    conn.close().await?;
    Ok(out)
}

fn to_maps<R: Row>(cols: &[String], rows: &[R]) -> Vec<Map<String, Value>>
where
    usize: sqlx::ColumnIndex<R>,
    for<'r> Option<String>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    rows.iter()
        .map(|r| {
            cols.iter()
                .enumerate()
                .map(|(i, c)| (c.clone(), canonical(r.get::<Option<String>, _>(i))))
                .collect()
        })
        .collect()
}

/// Compares with the expected rows (or rewrites them under KUBESINK_BLESS).
pub(crate) fn check_expected(rows: &Rows, bless: bool) -> Result<()> {
    let path = fixture("expected-rows.json");
    if bless && std::env::var_os("KUBESINK_BLESS").is_some() {
        std::fs::write(&path, serde_json::to_string_pretty(rows)? + "\n")?;
    }
    let expected: Rows = serde_json::from_str(
        &std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?,
    )?;
    for (table, exp) in &expected {
        let got = rows
            .get(table)
            .with_context(|| format!("table {table} missing"))?;
        assert_eq!(got.len(), exp.len(), "{table}: row count");
        for (g, e) in got.iter().zip(exp) {
            assert_eq!(g, e, "{table}: row differs");
        }
    }
    Ok(())
}

pub(crate) fn sqlite_config(db: &Path) -> String {
    format!(
        "connections:\n  db: {{ driver: sqlite, path: '{}' }}\nsinks:\n  - name: mysql\n    module: '{{module}}'\n    connections: [db]\n    settings: {{ connection: db }}\n",
        db.display()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_replay_fixture_gives_expected_rows_and_is_idempotent() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let db = dir.path().join("k.db");
    let cfg = sqlite_config(&db);
    let reports = replay_fixture(&cfg).await?;
    assert_eq!(reports[0].failed, 0, "{reports:?}");
    let first = sqlite_rows(&db).await?;
    check_expected(&first, true)?;
    // Redelivering everything leaves the same rows.
    replay_fixture(&cfg).await?;
    assert_eq!(sqlite_rows(&db).await?, first);
    Ok(())
}

/// The mysql sink on `db`, with `extra` YAML lines for the sink.
pub(crate) fn mariadb_config(db: &mariadb::TestDb, extra: &str) -> String {
    let env: BTreeMap<&str, String> = db.kubedl_env().into_iter().collect();
    format!(
        "connections:\n  db: {{ driver: mysql, host: '{}', port: {}, database: '{}', user: '{}', password: '{}' }}\nsinks:\n  - name: mysql\n    module: '{{module}}'\n    connections: [db]\n    settings: {{ connection: db }}\n{extra}",
        env["MYSQL_HOST"],
        env["MYSQL_PORT"],
        env["MYSQL_DB_NAME"],
        env["MYSQL_USER"],
        env.get("MYSQL_PASSWORD").cloned().unwrap_or_default()
    )
}

/// The mysql sink on the PostgreSQL database `db`, with `extra` YAML lines
/// for the sink.
pub(crate) fn postgres_config(db: &postgres::TestDb, extra: &str) -> String {
    let url = url::Url::parse(db.url()).expect("the test database's URL parses");
    let decode = |s: &str| {
        percent_encoding::percent_decode_str(s)
            .decode_utf8_lossy()
            .into_owned()
    };
    format!(
        "connections:\n  db: {{ driver: postgres, host: '{}', port: {}, database: '{}', user: '{}', password: '{}' }}\nsinks:\n  - name: mysql\n    module: '{{module}}'\n    connections: [db]\n    settings: {{ connection: db }}\n{extra}",
        url.host_str().unwrap_or("127.0.0.1"),
        url.port().unwrap_or(5432),
        db.name(),
        decode(url.username()),
        decode(url.password().unwrap_or_default())
    )
}

/// The fixture replayed into PostgreSQL gives the rows it gives in
/// MariaDB, column by column (and so the reviewed expected rows), and
/// replaying again changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_replay_fixture_gives_the_rows_mariadb_gives_and_is_idempotent() -> Result<()> {
    let pg = postgres::fresh_database("replay").await?;
    let my = mariadb::fresh_database("replay_vs_pg").await?;
    let cfg = postgres_config(&pg, "");
    let reports = replay_fixture(&cfg).await?;
    assert_eq!(reports[0].failed, 0, "{reports:?}");
    let reports = replay_fixture(&mariadb_config(&my, "")).await?;
    assert_eq!(reports[0].failed, 0, "{reports:?}");
    let first = postgres_rows(pg.url()).await?;
    let mariadb = mariadb_rows(my.url()).await?;
    for (table, rows) in &mariadb {
        let got = &first[table];
        assert_eq!(got.len(), rows.len(), "{table}: row count");
        for (p, m) in got.iter().zip(rows) {
            let columns: Vec<&String> = m.keys().collect();
            assert_eq!(p.keys().collect::<Vec<_>>(), columns, "{table}: columns");
            for c in columns {
                assert_eq!(p[c], m[c], "{table}.{c}: PostgreSQL {p:?}, MariaDB {m:?}");
            }
        }
    }
    check_expected(&first, false)?;
    replay_fixture(&cfg).await?;
    assert_eq!(postgres_rows(pg.url()).await?, first);
    my.drop_database().await?;
    pg.drop_database().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_replay_fixture_gives_expected_rows_and_is_idempotent() -> Result<()> {
    let db = mariadb::fresh_database("replay").await?;
    let cfg = mariadb_config(&db, "");
    let reports = replay_fixture(&cfg).await?;
    assert_eq!(reports[0].failed, 0, "{reports:?}");
    let first = mariadb_rows(db.url()).await?;
    check_expected(&first, false)?;
    replay_fixture(&cfg).await?;
    assert_eq!(mariadb_rows(db.url()).await?, first);
    db.drop_database().await?;
    Ok(())
}

/// Four workers writing batches of 3 at once (so the objects' updates are
/// spread over many concurrent transactions) give exactly the rows one
/// worker gives: each object's updates stay in order on its own worker.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_replay_with_parallel_workers_gives_the_same_rows() -> Result<()> {
    let db = mariadb::fresh_database("replay_workers").await?;
    let cfg = mariadb_config(
        &db,
        "    workers: 4\n    batch: { max_records: 3, max_delay: 1ms }\n",
    );
    let reports = replay_fixture(&cfg).await?;
    assert_eq!(reports[0].failed, 0, "{reports:?}");
    assert!(
        reports[0].batches >= 8,
        "expected many small batches over the workers: {reports:?}"
    );
    check_expected(&mariadb_rows(db.url()).await?, false)?;
    db.drop_database().await?;
    Ok(())
}

/// Out-of-order updates: every job's first update arrives again after all
/// the others (as a watch delivering a stale version late would), while the
/// job's final update still waits in the queue (one batch: the queue is
/// drained only when the replay ends). The higher resource version wins in
/// the queue, so the rows are exactly the expected ones: a finished job
/// stays `Succeeded` instead of going back to its first status.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_replay_with_stale_updates_arriving_last_keeps_the_newest_versions() -> Result<()> {
    use kubesink_normalize::record::{Change, Record};
    let db = mariadb::fresh_database("replay_stale").await?;
    let cfg = mariadb_config(
        &db,
        "    queue: { capacity: 100000 }\n    batch: { max_records: 100000, max_delay: 1h }\n    workers: 1\n",
    );
    let mut stale = Vec::new();
    let reports = replay_fixture_with(&cfg, |entries| {
        let mut seen = std::collections::HashSet::new();
        let late: Vec<_> = entries
            .iter()
            .filter(|e| match e {
                Change::Applied(Record::Job(j)) => seen.insert(j.meta.uid.clone()),
                _ => false,
            })
            .cloned()
            .collect();
        for e in &late {
            if let Some(Record::Job(j)) = e.record() {
                stale.push((j.meta.name.clone(), j.status.clone()));
            }
        }
        entries.extend(late);
    })
    .await?;
    assert_eq!(stale.len(), 2, "the fixture has two jobs: {stale:?}");
    assert_eq!(reports[0].failed, 0, "{reports:?}");
    assert_eq!(reports[0].batches, 1, "one batch: {reports:?}");
    let rows = mariadb_rows(db.url()).await?;
    for (name, first_status) in &stale {
        assert_ne!(first_status, "Succeeded", "{stale:?}");
        let job = rows["job_info"]
            .iter()
            .find(|r| r["name"] == name.as_str())
            .with_context(|| format!("row of job {name}"))?;
        assert_eq!(job["status"], "Succeeded", "job {name}: {job:?}");
    }
    check_expected(&rows, false)?;
    db.drop_database().await?;
    Ok(())
}
