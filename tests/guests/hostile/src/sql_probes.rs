//! SQL modes of the hostile guest (issue 12): what a sink with a granted
//! connection may try against the database and the host behind it.
//!
//! - `sql-escape` (probe, SQLite): reach files other than its own —
//!   `ATTACH` a file under the `path` setting (a directory), write into it,
//!   `DETACH` it, `VACUUM INTO` a copy there, `load_extension`, and PRAGMAs
//!   that change files or process-wide state.
//! - `sql-big` (probe): results bigger than the host holds for it — one
//!   cell of `bytes` bytes (`randomblob` on SQLite, `REPEAT` on MySQL and
//!   PostgreSQL), and
//!   100 rows of `bytes / 100` bytes each.
//! - `sql-hang` (misbehaves): a statement that never ends — an endless
//!   recursive CTE on SQLite, `SELECT SLEEP(3600)` on MySQL/MariaDB,
//!   `SELECT pg_sleep(3600)` after `SET LOCAL statement_timeout = 0` in one
//!   `execute-batch` on PostgreSQL; the write then fails with what the
//!   statement returned.
//! - `sql-session` (misbehaves): runs the statements of the `sql` setting
//!   (separated by `;;`) one by one, ignoring errors, and succeeds — to
//!   leave session state (`SET autocommit=0`, `USE other_db`, `LOCK
//!   TABLES`, `GET_LOCK`) behind in the host's pooled connection.

use super::Probe;
use super::Settings;
use super::bindings::kubesink::sink::sql::{Connection, Engine, Statement, Value};
use super::bindings::kubesink::sink::types::Error;

fn open(s: &Settings) -> Result<Connection, Error> {
    Connection::open(&s.connection)
        .map_err(|e| Error::Fatal(format!("open sql connection {}: {e:?}", s.connection)))
}

/// The modes [`run`] handles.
pub(super) const MODES: &[&str] = &["sql-escape", "sql-big", "sql-hang", "sql-session"];

/// Runs one of [`MODES`].
pub(super) fn run(s: &Settings) -> Result<(), Error> {
    match s.mode.as_str() {
        "sql-escape" => escape(s),
        "sql-big" => big(s),
        "sql-hang" => hang(s),
        "sql-session" => session(s),
        other => Err(Error::Fatal(format!("not a sql mode: {other}"))),
    }
}

fn escape(s: &Settings) -> Result<(), Error> {
    let conn = open(s)?;
    let mut p = Probe::default();
    let dir = s.path.trim_end_matches('/');
    let exec = |sql: &str| conn.execute(sql, &[]);
    p.check(
        "ATTACH DATABASE",
        exec(&format!("ATTACH DATABASE '{dir}/attached.db' AS other")),
    );
    p.check(
        "CREATE TABLE in the attached file",
        exec("CREATE TABLE other.stolen (x)"),
    );
    p.check("DETACH DATABASE", exec("DETACH DATABASE other"));
    p.check("VACUUM INTO", exec(&format!("VACUUM INTO '{dir}/copy.db'")));
    p.check(
        "load_extension",
        conn.query(&format!("SELECT load_extension('{dir}/evil')"), &[]),
    );
    for pragma in [
        "PRAGMA journal_mode = OFF",
        "PRAGMA locking_mode = EXCLUSIVE",
        "PRAGMA writable_schema = ON",
        &format!("PRAGMA temp_store_directory = '{dir}'"),
        "PRAGMA soft_heap_limit = 1048576",
        "PRAGMA mmap_size = 1073741824",
        "PRAGMA database_list",
    ] {
        p.check(pragma, conn.query(pragma, &[]).map(|rows| rows.len()));
    }
    p.finish()
}

fn big(s: &Settings) -> Result<(), Error> {
    let conn = open(s)?;
    let mut p = Probe::default();
    let n = i64::try_from(s.bytes).unwrap_or(i64::MAX);
    let (one, rows) = match conn.engine() {
        Engine::Postgres => (
            "SELECT repeat('x', $1::int)",
            "SELECT repeat('x', $1::int) FROM generate_series(1, 100)",
        ),
        Engine::Mysql => (
            "SELECT REPEAT('x', ?)",
            "WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < 100) \
             SELECT REPEAT('x', ?) FROM c",
        ),
        _ => (
            "SELECT randomblob(?)",
            "WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < 100) \
             SELECT randomblob(?) FROM c",
        ),
    };
    // Only sizes are reported: the cells themselves are never printed.
    let sizes = |r: Vec<Vec<Value>>| r.len();
    p.check(
        &format!("one cell of {} bytes", s.bytes),
        conn.query(one, &[Value::Int(n)]).map(sizes),
    );
    p.check(
        &format!("100 rows of {} bytes", s.bytes / 100),
        conn.query(rows, &[Value::Int(n / 100)]).map(sizes),
    );
    p.finish()
}

fn hang(s: &Settings) -> Result<(), Error> {
    let conn = open(s)?;
    let statement = match conn.engine() {
        Engine::Mysql => "SELECT SLEEP(3600)",
        Engine::Postgres => {
            // The session's limit turned off first, in the same transaction
            // (one connection): only the host's deadline can stop the sleep.
            let plain = |sql: &str| Statement {
                sql: sql.to_owned(),
                params: Vec::new(),
            };
            let r = conn.execute_batch(&[
                plain("SET LOCAL statement_timeout = 0"),
                plain("SELECT pg_sleep(3600)"),
            ]);
            return Err(Error::Fatal(format!(
                "sql-hang: the endless statement returned: {r:?}"
            )));
        }
        _ => {
            "WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c) \
             SELECT count(*) FROM c"
        }
    };
    let r = conn.query(statement, &[]);
    Err(Error::Fatal(format!(
        "sql-hang: the endless statement returned: {r:?}"
    )))
}

fn session(s: &Settings) -> Result<(), Error> {
    let conn = open(s)?;
    for statement in s.sql.split(";;").map(str::trim).filter(|t| !t.is_empty()) {
        let r = conn.execute(statement, &[]);
        println!("sql-session: {statement}: {r:?}");
    }
    Ok(())
}
