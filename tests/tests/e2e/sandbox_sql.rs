//! The sandbox holds against a hostile sink, SQL part (issue 12): the SQL
//! modes of the `hostile` guest (`tests/guests/hostile/src/sql_probes.rs`)
//! against real SQLite files and the test MariaDB.
//!
//! - SQLite stays inside its file: `ATTACH`, `DETACH`, `VACUUM INTO`,
//!   `load_extension` and PRAGMAs that change files or process-wide state
//!   are refused with `sql-error.denied`, and no file appears.
//! - A statement never outlives its call: an endless recursive CTE
//!   (SQLite) and `SELECT SLEEP(3600)` (MariaDB), four calls in a row,
//!   while a second sink on the same connection name delivers every
//!   record; afterwards nothing runs (`SHOW PROCESSLIST`; SQLite's worker
//!   threads use no CPU).
//! - No session state crosses sinks: `SET autocommit=0`, `USE other_db`,
//!   `LOCK TABLES`, `GET_LOCK` by one sink do not change another's writes.
//! - Host memory a sink causes is bounded: a 400 MB `randomblob` (and 100
//!   rows of 4 MB) fail that call with `too-large` naming the sink, and the
//!   process's peak RSS stays below the caps plus a margin.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use kubesink_host::sql::ConnectionConfig;
use kubesink_host::{CallError, FaultCause, Host, HostOptions, Limits, ModuleSource, SinkSpec};
use kubesink_normalize::record::{Entry, Record};
use kubesink_tests::guests::guest_wasm;
use kubesink_tests::records;
use kubesink_tests::wait::eventually;
use sqlx::Row;

pub(crate) const HOSTILE: &str = "kubesink-guest-hostile";
pub(crate) const COUNTER: &str = "kubesink-guest-counter";

pub(crate) fn events(prefix: &str, n: usize) -> Vec<Entry> {
    (0..n)
        .map(|i| {
            records::applied(Record::Event(records::event(
                &format!("{prefix}-{i}"),
                1,
                1,
            )))
        })
        .collect()
}

pub(crate) fn spec(
    name: &str,
    package: &str,
    settings: &[(&str, String)],
    limits: Limits,
) -> anyhow::Result<SinkSpec> {
    crate::hostile::guest_spec(name, package, settings, &["main"], limits)
}

fn sqlite_host(dir: &Path, max_connections: u32) -> anyhow::Result<Host> {
    let url = format!("sqlite://{}?mode=rwc", dir.join("main.db").display());
    Ok(Host::new(HostOptions {
        cache_dir: Some(dir.join("cache")),
        sql: vec![ConnectionConfig {
            max_connections,
            ..ConnectionConfig::new("main", url)
        }],
        kafka: Vec::new(),
    })?)
}

/// The lines of a probing mode's report; fails unless every one is a
/// denial that contains `needle` (the WIT error case expected).
pub(crate) fn report_lines(
    name: &str,
    err: &CallError,
    needle: &str,
) -> anyhow::Result<Vec<String>> {
    let CallError::Fatal(message) = err else {
        bail!("sink {name}: expected the guest's fatal report, got {err:?}");
    };
    let prefix = format!("sink '{name}': write failed (fatal): ");
    let report = message
        .strip_prefix(&prefix)
        .with_context(|| format!("no `{prefix}` in {message}"))?;
    let lines: Vec<String> = report.lines().map(str::to_owned).collect();
    ensure!(!lines.is_empty(), "sink {name}: empty report");
    for line in &lines {
        ensure!(
            line.starts_with("DENIED ") && line.contains(needle),
            "sink {name}: not refused with {needle}: {line}\nwhole report:\n{report}"
        );
    }
    Ok(lines)
}

/// CPU seconds used so far by this process's threads whose name starts
/// with `prefix` (from `/proc/self/task/*/stat`, in clock ticks).
fn thread_cpu(prefix: &str) -> anyhow::Result<Duration> {
    let ticks = std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse::<u64>().ok())
        .unwrap_or(100);
    let mut total = 0u64;
    for task in std::fs::read_dir("/proc/self/task")? {
        let dir = task?.path();
        let comm = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
        if !comm.trim().starts_with(prefix) {
            continue;
        }
        let stat = std::fs::read_to_string(dir.join("stat")).unwrap_or_default();
        // Fields after the `(comm)`: state is field 3; utime, stime are 14, 15.
        let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
            continue;
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let num = |i: usize| {
            fields
                .get(i)
                .and_then(|f| f.parse::<u64>().ok())
                .unwrap_or(0)
        };
        total += num(11) + num(12);
    }
    Ok(Duration::from_millis(total * 1000 / ticks))
}

/// CPU used by SQLite's worker threads over `window`.
async fn sqlite_cpu_over(window: Duration) -> anyhow::Result<Duration> {
    let before = thread_cpu("sqlx-sqlite-wor")?;
    tokio::time::sleep(window).await;
    Ok(thread_cpu("sqlx-sqlite-wor")?.saturating_sub(before))
}

/// `ATTACH`, `DETACH`, `VACUUM INTO`, `load_extension` and PRAGMAs that
/// change files or process-wide state are all refused with `denied`; no
/// file appears next to the database; the connection still works for an
/// ordinary sink afterwards.
#[tokio::test]
async fn host_sqlite_stays_inside_its_file() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let host = sqlite_host(dir.path(), 1)?;
    let elsewhere = tempfile::tempdir()?;
    let settings = [
        ("mode", "sql-escape".to_owned()),
        ("path", elsewhere.path().display().to_string()),
    ];
    let mut sink = host
        .load(spec("escape", HOSTILE, &settings, Limits::default())?)
        .await?;
    let err = sink
        .write(&events("ev", 1))
        .await
        .expect_err("probe report");
    let lines = report_lines("escape", &err, "Denied(")?;
    eprintln!("escape:\n{}", lines.join("\n"));
    for needle in [
        "ATTACH DATABASE",
        "DETACH DATABASE",
        "VACUUM INTO",
        "load_extension",
        "journal_mode = OFF",
        "temp_store_directory",
    ] {
        ensure!(
            lines.iter().any(|l| l.contains(needle)),
            "{needle} was not tried"
        );
    }
    let created: Vec<_> = std::fs::read_dir(elsewhere.path())?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<Result<_, _>>()?;
    ensure!(created.is_empty(), "files appeared: {created:?}");
    // The same connection name still serves a well-behaved sink.
    let mut counter = host
        .load(spec("counter", COUNTER, &[], Limits::default())?)
        .await?;
    counter.write(&events("ok", 3)).await?;
    host.sql_pools().close().await;
    Ok(())
}

/// Four calls in a row of a sink whose statement never ends (an endless
/// recursive CTE) each end at the call deadline, while a counter sink on
/// the same connection name delivers every record in between; afterwards
/// SQLite's worker threads are idle (nothing still runs).
#[tokio::test]
async fn host_sqlite_endless_statement_ends_with_its_call() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let host = sqlite_host(dir.path(), 4)?;
    hang_beside_counter(&host, "hang").await?;
    let rows = host
        .sql_pools()
        .get("main")
        .context("main")?
        .query("SELECT count(*) FROM received", &[])
        .await?;
    ensure!(
        rows == vec![vec![kubesink_host::sql::Value::Int(20)]],
        "the counter delivered every record: {rows:?}"
    );
    let busy = sqlite_cpu_over(Duration::from_secs(1)).await?;
    ensure!(
        busy < Duration::from_millis(300),
        "SQLite's worker threads used {busy:?} of CPU in 1 s after the calls: a statement still runs"
    );
    host.sql_pools().close().await;
    Ok(())
}

/// `SELECT SLEEP(3600)` in four calls in a row ends with each call, while a
/// counter sink on the same connection name delivers every record;
/// afterwards `SHOW PROCESSLIST` shows no statement of the test's user
/// still running. Needs MariaDB.
#[tokio::test]
async fn mariadb_sleep_ends_with_its_call() -> anyhow::Result<()> {
    let db = kubesink_tests::mariadb::fresh_database("sandbox_sleep").await?;
    let dir = tempfile::tempdir()?;
    let host = Host::new(HostOptions {
        cache_dir: Some(dir.path().join("cache")),
        sql: vec![ConnectionConfig::new("main", db.url())],
        kafka: Vec::new(),
    })?;
    let admin = db.connect().await?;
    let result = async {
        hang_beside_counter(&host, "sleeper").await?;
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM received")
            .fetch_one(&admin)
            .await?;
        ensure!(n == 20, "the counter delivered every record: {n}");
        let db_name = db.name().to_owned();
        let admin2 = admin.clone();
        eventually(Duration::from_secs(5), "no SLEEP left running", move || {
            let admin = admin2.clone();
            let db_name = db_name.clone();
            async move { Ok(sleeping(&admin, &db_name).await?.is_empty()) }
        })
        .await?;
        Ok(())
    }
    .await;
    // Whatever happened, leave no hour-long SLEEP on the shared server.
    let left = sleeping(&admin, db.name()).await.unwrap_or_default();
    for id in &left {
        let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(format!("KILL QUERY {id}")))
            .execute(&admin)
            .await;
    }
    host.sql_pools().close().await;
    admin.close().await;
    if result.is_ok() {
        db.drop_database().await?;
    }
    result.with_context(|| format!("statements still running after the test: {left:?}"))
}

/// Loads sink `name` (the hostile guest in mode `sql-hang`, a call deadline
/// of 1 s) and a counter sink on connection `main`; four calls of `name`
/// in a row each fail at the deadline naming the sink, while the counter
/// delivers 5 records between them (20 in all).
pub(crate) async fn hang_beside_counter(host: &Host, name: &str) -> anyhow::Result<()> {
    let deadline = Duration::from_millis(1000);
    let limits = Limits {
        call_timeout: deadline,
        ..Limits::default()
    };
    let mut hang = host
        .load(spec(
            name,
            HOSTILE,
            &[("mode", "sql-hang".to_owned())],
            limits,
        )?)
        .await?;
    let mut counter = host
        .load(spec("counter", COUNTER, &[], Limits::default())?)
        .await?;
    for call in 0..4 {
        let started = Instant::now();
        let err = hang
            .write(&events("h", 1))
            .await
            .expect_err("never succeeds");
        let took = started.elapsed();
        eprintln!("call {call}: {took:?}: {err}");
        ensure!(
            took < deadline + Duration::from_secs(2),
            "call {call} took {took:?}"
        );
        ensure!(
            err.to_string().contains(&format!("'{name}'")),
            "names the sink: {err}"
        );
        counter
            .write(&events(&format!("c{call}"), 5))
            .await
            .with_context(|| format!("counter beside call {call}"))?;
    }
    Ok(())
}

/// Ids of the sessions on `db_name` running `SLEEP`.
async fn sleeping(admin: &sqlx::MySqlPool, db_name: &str) -> anyhow::Result<Vec<i64>> {
    let rows = sqlx::query(
        "SELECT id FROM information_schema.processlist \
         WHERE db = ? AND info LIKE 'SELECT SLEEP%'",
    )
    .bind(db_name)
    .fetch_all(admin)
    .await?;
    Ok(rows.iter().map(|r| r.get::<i64, _>(0)).collect())
}

/// One sink leaves session state behind (`SET autocommit=0`,
/// `LOCK TABLES`, `USE other_db`, `GET_LOCK`) on a
/// connection name whose pool holds one connection; a second sink on that
/// name then writes, and its rows land committed in its own database,
/// nothing in the other one, and no lock is left held. Needs MariaDB.
#[tokio::test]
async fn mariadb_session_state_does_not_cross_sinks() -> anyhow::Result<()> {
    let db = kubesink_tests::mariadb::fresh_database("sandbox_session").await?;
    let other = kubesink_tests::mariadb::fresh_database("sandbox_other").await?;
    let dir = tempfile::tempdir()?;
    let host = Host::new(HostOptions {
        cache_dir: Some(dir.path().join("cache")),
        sql: vec![ConnectionConfig {
            max_connections: 1,
            ..ConnectionConfig::new("main", db.url())
        }],
        kafka: Vec::new(),
    })?;
    let mut counter = host
        .load(spec("counter", COUNTER, &[], Limits::default())?)
        .await?;
    let statements = format!(
        "SET autocommit = 0;; \
         LOCK TABLES received WRITE;; \
         USE `{}`;; \
         DO GET_LOCK('kubesink-sandbox', 0)",
        other.name()
    );
    let mut meddler = host
        .load(spec(
            "meddler",
            HOSTILE,
            &[("mode", "sql-session".to_owned()), ("sql", statements)],
            Limits::default(),
        )?)
        .await?;
    meddler.write(&events("m", 1)).await?;
    counter
        .write(&events("c", 5))
        .await
        .context("the second sink writes after the first left its session state")?;
    let admin = db.connect().await?;
    let uids: Vec<String> = sqlx::query_scalar("SELECT uid FROM received ORDER BY uid")
        .fetch_all(&admin)
        .await?;
    let other_admin = other.connect().await?;
    let in_other: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM information_schema.tables WHERE table_schema = DATABASE()",
    )
    .fetch_one(&other_admin)
    .await?;
    let free: Option<i64> = sqlx::query_scalar("SELECT IS_FREE_LOCK('kubesink-sandbox')")
        .fetch_one(&admin)
        .await?;
    host.sql_pools().close().await;
    admin.close().await;
    other_admin.close().await;
    ensure!(
        uids == (0..5).map(|i| format!("c-{i}")).collect::<Vec<_>>(),
        "the second sink's rows, committed: {uids:?}"
    );
    ensure!(in_other == 0, "nothing was written into the other database");
    ensure!(free == Some(1), "the named lock is not left held: {free:?}");
    db.drop_database().await?;
    other.drop_database().await?;
    Ok(())
}

/// Peak resident memory of this process (`VmHWM`) and the current one
/// (`VmRSS`), in bytes.
fn rss() -> anyhow::Result<(u64, u64)> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    let field = |name: &str| -> anyhow::Result<u64> {
        let line = status
            .lines()
            .find(|l| l.starts_with(name))
            .with_context(|| format!("{name} in /proc/self/status"))?;
        let kb: u64 = line.split_whitespace().nth(1).context("value")?.parse()?;
        Ok(kb * 1024)
    };
    Ok((field("VmHWM:")?, field("VmRSS:")?))
}

/// A 400 MB `randomblob` and 100 rows of 4 MB each fail their call with
/// `too-large` naming the sink and the cause, and the process's peak RSS
/// grows by less than the caps involved (result cap and guest memory) plus
/// a 64 MiB margin.
#[tokio::test]
async fn host_sqlite_huge_results_are_too_large_and_memory_stays_bounded() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let host = sqlite_host(dir.path(), 1)?;
    let limits = Limits::default();
    let caps = (limits.max_result_bytes + limits.memory_bytes) as u64;
    let margin = 64 << 20;
    let mut sink = host
        .load(spec(
            "glutton",
            HOSTILE,
            &[
                ("mode", "sql-big".to_owned()),
                ("bytes", 400_000_000.to_string()),
            ],
            limits,
        )?)
        .await?;
    // Reset the peak to the current RSS (Linux `clear_refs` 5).
    std::fs::write("/proc/self/clear_refs", "5")?;
    let (_, before) = rss()?;
    let err = sink.write(&events("b", 1)).await.expect_err("probe report");
    let (peak, _) = rss()?;
    let lines = report_lines("glutton", &err, "TooLarge(")?;
    eprintln!(
        "glutton:\n{}\npeak RSS grew by {} MiB (caps {} MiB + margin {} MiB)",
        lines.join("\n"),
        peak.saturating_sub(before) >> 20,
        caps >> 20,
        margin >> 20
    );
    for line in &lines {
        ensure!(line.contains("sink 'glutton'"), "names the sink: {line}");
    }
    ensure!(
        peak.saturating_sub(before) < caps + margin,
        "peak RSS grew by {} MiB, more than the caps ({} MiB) plus {} MiB",
        peak.saturating_sub(before) >> 20,
        caps >> 20,
        margin >> 20
    );
    ensure!(
        sink.is_live(),
        "a too-large result fails the call, not the instance"
    );
    ensure!(
        !matches!(
            err,
            CallError::Fault {
                cause: FaultCause::Memory,
                ..
            }
        ),
        "{err:?}"
    );
    host.sql_pools().close().await;
    Ok(())
}

/// On MySQL/MariaDB the database account's privileges are the bound: the
/// mysql sink creates its tables and writes, redelivers and removes
/// records with an account that has exactly `SINK_GRANTS` on its database,
/// and that account can do nothing outside it. Needs MariaDB.
#[tokio::test]
async fn mariadb_mysql_sink_works_with_the_least_grants() -> anyhow::Result<()> {
    use kubesink_tests::mariadb::SINK_GRANTS;
    use sqlx::Connection as _;
    let db = kubesink_tests::mariadb::fresh_database("sandbox_grants").await?;
    let url = db.sink_account_url().await?;
    let dir = tempfile::tempdir()?;
    let host = Host::new(HostOptions {
        cache_dir: Some(dir.path().join("cache")),
        sql: vec![ConnectionConfig::new("default", url.clone())],
        kafka: Vec::new(),
    })?;
    let mut sink = host
        .load(SinkSpec {
            name: "mysql".into(),
            module: ModuleSource::Path(guest_wasm("kubesink-sink-mysql")?),
            settings: vec![],
            sql_grants: vec!["default".into()],
            limits: Limits::default(),
        })
        .await
        .context("loading the mysql sink with the least grants")?;
    let batch = vec![
        records::applied(Record::Job(records::job("job-1", 10, "Running"))),
        records::applied(Record::Pod(records::pod("pod-1", 10, "Running"))),
        records::applied(Record::Event(records::event("ev-1", 10, 1))),
    ];
    sink.write(&batch).await.context("first delivery")?;
    sink.write(&batch).await.context("redelivery")?;
    sink.write(&[records::removed(
        Record::Pod(records::pod("pod-1", 11, "Running")),
        20,
    )])
    .await
    .context("removal")?;
    let admin = db.connect().await?;
    for table in ["job_info", "replica_info", "event_info"] {
        let n: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT count(*) FROM `{table}`"
        )))
        .fetch_one(&admin)
        .await?;
        ensure!(n == 1, "{table} has {n} rows");
    }
    // The account has exactly those grants, and nothing beyond them works.
    let grants: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SHOW GRANTS FOR '{}'@'127.0.0.1'",
        db.name()
    )))
    .fetch_all(&admin)
    .await?;
    let on_db = grants
        .iter()
        .find(|g| g.contains(&format!("`{}`.*", db.name())))
        .with_context(|| format!("no grant on the database: {grants:?}"))?;
    // `GRANT A, B, ... ON ...`: the same privileges, in the server's order.
    let privileges = |list: &str| {
        let mut p: Vec<String> = list.split(',').map(|p| p.trim().to_owned()).collect();
        p.sort();
        p
    };
    let shown = on_db
        .strip_prefix("GRANT ")
        .and_then(|g| g.split(" ON ").next())
        .with_context(|| format!("unexpected grant: {on_db}"))?;
    ensure!(
        privileges(shown) == privileges(SINK_GRANTS),
        "the account has other grants: {on_db}"
    );
    let mut own = sqlx::MySqlConnection::connect(&url).await?;
    for sql in [
        "CREATE DATABASE ks_sandbox_not_allowed",
        "SELECT count(*) FROM mysql.user",
        "DROP TABLE job_info",
    ] {
        let r = sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
            .execute(&mut own)
            .await;
        ensure!(r.is_err(), "the sink's account may run `{sql}`");
    }
    own.close().await?;
    host.sql_pools().close().await;
    admin.close().await;
    db.drop_database().await?;
    Ok(())
}
