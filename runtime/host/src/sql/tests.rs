//! Unit tests of the `sql` capability: configuration, redaction, the
//! SQLite guard, caps and deadlines.

use std::time::Duration;

use super::*;

#[test]
fn redacts_credentials_and_query() {
    assert_eq!(
        redact_url("mysql://root:s3cret@db.example:3306/kubedl?ssl-mode=disabled"),
        "mysql://db.example:3306/kubedl"
    );
    assert_eq!(redact_url("mysql://db/kubedl"), "mysql://db/kubedl");
    assert_eq!(redact_url("mysql://u:p@h"), "mysql://h");
    assert_eq!(
        redact_url("sqlite://data/kubesink.db?mode=rwc"),
        "sqlite://data/kubesink.db"
    );
    assert_eq!(redact_url("sqlite::memory:"), "sqlite::memory:");
    // An `@` in the password is split at the last one.
    assert_eq!(redact_url("mysql://u:p@ss@h:1/d"), "mysql://h:1/d");
}

#[test]
fn scrubs_every_form_of_the_password() {
    let url = "mysql://kube:p%40ss@h/db?password=other";
    let secrets = url_secrets(url);
    let msg = format!("failed for {url}: user kube:p%40ss, p@ss, other");
    let scrubbed = scrub(&msg, &secrets);
    assert!(!scrubbed.contains("p@ss"), "{scrubbed}");
    assert!(!scrubbed.contains("p%40ss"), "{scrubbed}");
    assert!(!scrubbed.contains("other"), "{scrubbed}");
    assert!(!scrubbed.contains(url), "{scrubbed}");
}

#[test]
fn rejects_duplicate_and_unknown_connections() {
    let dup = SqlPools::new(&[
        ConnectionConfig::new("a", "sqlite::memory:"),
        ConnectionConfig::new("a", "sqlite::memory:"),
    ]);
    assert!(matches!(dup, Err(SqlConfigError::Duplicate { name }) if name == "a"));
    let other = SqlPools::new(&[ConnectionConfig::new("ora", "oracle://u:pw@h/d")]);
    match other {
        Err(e @ SqlConfigError::Unsupported { .. }) => {
            let msg = e.to_string();
            assert!(msg.contains("oracle://h/d"), "{msg}");
            assert!(msg.contains("postgres://"), "{msg}");
            assert!(!msg.contains("pw"), "{msg}");
        }
        other => panic!("expected Unsupported, got {other:?}"),
    }
}

#[test]
fn denies_ungranted_and_unconfigured_names() {
    let pools = SqlPools::new(&[ConnectionConfig::new("main", "sqlite::memory:")]).expect("pools");
    let ctx = SqlCtx::new(
        "s1",
        vec!["main".into(), "ghost".into()],
        pools,
        SqlCaps::default(),
        crate::budget::HostBudget::unlimited("s1"),
    );
    match ctx.open("other") {
        Err(SqlError::Denied(m)) => assert!(m.contains("s1") && m.contains("other"), "{m}"),
        other => panic!("expected denied, got {other:?}"),
    }
    match ctx.open("ghost") {
        Err(SqlError::Denied(m)) => assert!(m.contains("not configured"), "{m}"),
        other => panic!("expected denied, got {other:?}"),
    }
    let conn = ctx.open("main").expect("granted");
    assert_eq!(conn.dialect(), Some(Dialect::Sqlite));
    assert_eq!(conn.engine(), Engine::Sqlite);
}

#[test]
fn timestamps_round_trip_through_sqlite_text() {
    let ts = Timestamp {
        seconds: 1_700_000_000,
        nanos: 123_000_000,
    };
    let text = sqlite_timestamp_text(&ts).expect("in range");
    assert_eq!(text, "2023-11-14T22:13:20.123Z");
    assert_eq!(parse_sqlite_timestamp(&text), Some(Value::Timestamp(ts)));
    assert_eq!(
        parse_sqlite_timestamp("2023-11-14 22:13:20"),
        Some(Value::Timestamp(Timestamp {
            seconds: 1_700_000_000,
            nanos: 0
        }))
    );
    assert_eq!(parse_sqlite_timestamp("yesterday"), None);
}

/// An in-memory SQLite connection under `caps`, and its pools. An
/// in-memory database lives in one connection: the pool is kept to one.
fn sqlite_memory(caps: SqlCaps) -> (SqlPools, SqlConn) {
    let pools = SqlPools::new(&[ConnectionConfig {
        max_connections: 1,
        ..ConnectionConfig::new("m", "sqlite::memory:")
    }])
    .expect("pools");
    let conn = pools.get("m").expect("configured").with_caps(caps);
    (pools, conn)
}

#[tokio::test]
async fn sqlite_execute_query_batch_and_caps() {
    // Two rows of five cells fit in 1000 bytes at their in-memory size.
    let (_pools, conn) = sqlite_memory(SqlCaps {
        max_statement_bytes: 200,
        max_result_bytes: 1000,
        ..SqlCaps::default()
    });
    conn.execute(
        "CREATE TABLE t (id INTEGER, name TEXT, at DATETIME, b BLOB, f REAL)",
        &[],
    )
    .await
    .expect("create");
    let ts = Timestamp {
        seconds: 1_700_000_000,
        nanos: 0,
    };
    let n = conn
        .execute_batch(&[
            Statement {
                sql: "INSERT INTO t VALUES (?, ?, ?, ?, ?)".into(),
                params: vec![
                    Value::Int(1),
                    Value::Text("a".into()),
                    Value::Timestamp(ts),
                    Value::Bytes(vec![1, 2]),
                    Value::Float(0.5),
                ],
            },
            Statement {
                sql: "INSERT INTO t VALUES (?, ?, ?, ?, ?)".into(),
                params: vec![
                    Value::Uint(2),
                    Value::Null,
                    Value::Null,
                    Value::Null,
                    Value::Null,
                ],
            },
        ])
        .await
        .expect("batch");
    assert_eq!(n, 2);
    let rows = conn
        .query("SELECT id, name, at, b, f FROM t ORDER BY id", &[])
        .await
        .expect("query");
    assert_eq!(
        rows,
        vec![
            vec![
                Value::Int(1),
                Value::Text("a".into()),
                Value::Timestamp(ts),
                Value::Bytes(vec![1, 2]),
                Value::Float(0.5)
            ],
            vec![
                Value::Int(2),
                Value::Null,
                Value::Null,
                Value::Null,
                Value::Null
            ],
        ]
    );
    // A failing statement rolls the whole batch back.
    let err = conn
        .execute_batch(&[
            Statement {
                sql: "INSERT INTO t (id) VALUES (3)".into(),
                params: vec![],
            },
            Statement {
                sql: "INSERT INTO nope VALUES (1)".into(),
                params: vec![],
            },
        ])
        .await
        .expect_err("second statement fails");
    assert!(matches!(err, SqlError::Rejected(_)), "{err:?}");
    let count = conn
        .query("SELECT count(*) FROM t", &[])
        .await
        .expect("count");
    assert_eq!(count, vec![vec![Value::Int(2)]]);
    // Caps.
    let long = "x".repeat(300);
    let err = conn
        .execute("SELECT ?", &[Value::Text(long)])
        .await
        .expect_err("cap");
    assert!(matches!(err, SqlError::TooLarge(_)), "{err:?}");
    let err = conn
        .query("SELECT printf('%.1100c', 'y')", &[])
        .await
        .expect_err("result cap");
    assert!(matches!(err, SqlError::TooLarge(_)), "{err:?}");
}

/// `execute-batch-packed`: the statements of one buffer run as one
/// transaction with the parameters they carry, under the same caps; a
/// buffer that is not packed statements is `rejected` naming where, and
/// applies nothing.
#[tokio::test]
async fn sqlite_packed_statements_run_as_one_batch() {
    use kubesink_packed::statements::StatementsWriter;
    let (_pools, conn) = sqlite_memory(SqlCaps {
        max_statement_bytes: 200,
        ..SqlCaps::default()
    });
    conn.execute(
        "CREATE TABLE t (id INTEGER, name TEXT, at DATETIME, b BLOB, f REAL)",
        &[],
    )
    .await
    .expect("create");
    let ts = kubesink_packed::Timestamp {
        seconds: 1_700_000_000,
        nanos: 5,
    };
    let insert = "INSERT INTO t VALUES (?, ?, ?, ?, ?)";
    let mut w = StatementsWriter::default();
    w.statement(
        insert,
        [
            Param::Int(1),
            Param::Text("żółw"),
            Param::Timestamp(ts),
            Param::Bytes(&[1, 2]),
            Param::Float(0.5),
        ],
    );
    w.statement(
        insert,
        [
            Param::Uint(2),
            Param::Null,
            Param::Null,
            Param::Null,
            Param::Null,
        ],
    );
    let packed = w.finish().expect("fits");
    assert_eq!(conn.execute_batch_packed(&packed).await.expect("batch"), 2);
    let rows = conn
        .query("SELECT id, name, at, b, f FROM t ORDER BY id", &[])
        .await
        .expect("query");
    assert_eq!(rows[0][..2], [Value::Int(1), Value::Text("żółw".into())]);
    assert_eq!(rows[0][3..], [Value::Bytes(vec![1, 2]), Value::Float(0.5)]);
    assert!(matches!(rows[0][2], Value::Timestamp(t) if t.seconds == ts.seconds));
    assert_eq!(
        rows[1],
        [
            Value::Int(2),
            Value::Null,
            Value::Null,
            Value::Null,
            Value::Null
        ]
    );

    // Cut short, after a statement that would apply: rejected, naming the
    // byte, nothing applied.
    let mut w = StatementsWriter::default();
    w.statement("INSERT INTO t (id) VALUES (3)", []);
    w.statement("INSERT INTO t (id) VALUES (?)", [Param::Int(4)]);
    let packed = w.finish().expect("fits");
    let err = conn
        .execute_batch_packed(&packed[..packed.len() - 3])
        .await
        .expect_err("cut short");
    let msg = format!("{err:?}");
    assert!(matches!(err, SqlError::Rejected(_)), "{err:?}");
    assert!(
        msg.contains("execute-batch-packed: not packed statements"),
        "{msg}"
    );
    assert!(msg.contains("byte"), "{msg}");
    // The caps count each statement of the buffer.
    let mut w = StatementsWriter::default();
    w.statement("SELECT ?", [Param::Text(&"x".repeat(300))]);
    let err = conn
        .execute_batch_packed(&w.finish().expect("fits"))
        .await
        .expect_err("cap");
    assert!(matches!(err, SqlError::TooLarge(_)), "{err:?}");
    let count = conn
        .query("SELECT count(*) FROM t", &[])
        .await
        .expect("count");
    assert_eq!(count, vec![vec![Value::Int(2)]]);
}

#[tokio::test]
async fn unreachable_mysql_is_unavailable_and_hides_password() {
    // Port 1 on loopback: nothing listens there.
    let pools = SqlPools::new(&[ConnectionConfig::new(
        "down",
        "mysql://kube:hunter2@127.0.0.1:1/kubedl",
    )])
    .expect("lazy pools do not connect");
    let err = pools
        .get("down")
        .expect("configured")
        .execute("SELECT 1", &[])
        .await
        .expect_err("nothing listens");
    match err {
        SqlError::Unavailable(m) => {
            assert!(m.contains("127.0.0.1:1/kubedl"), "{m}");
            assert!(!m.contains("hunter2"), "{m}");
        }
        other => panic!("expected unavailable, got {other:?}"),
    }
}

#[tokio::test]
async fn unreachable_postgres_is_unavailable_and_hides_password() {
    // Port 1 on loopback: nothing listens there.
    for url in [
        "postgres://kube:hunter2@127.0.0.1:1/kubedl",
        "postgresql://kube:hunter2@127.0.0.1:1/kubedl?sslmode=disable",
    ] {
        let pools = SqlPools::new(&[ConnectionConfig::new("down", url)])
            .expect("lazy pools do not connect");
        let conn = pools.get("down").expect("configured");
        assert_eq!(conn.engine(), Engine::Postgres);
        assert_eq!(conn.dialect(), None, "0.2.0's dialect cannot name it");
        let err = conn
            .execute("SELECT 1", &[])
            .await
            .expect_err("nothing listens");
        match err {
            SqlError::Unavailable(m) => {
                assert!(m.contains("127.0.0.1:1/kubedl"), "{m}");
                assert!(!m.contains("hunter2"), "{m}");
            }
            other => panic!("expected unavailable, got {other:?}"),
        }
    }
}

/// One pooled SQLite connection on a file in a new temporary directory.
fn sqlite_file(dir: &std::path::Path) -> SqlConn {
    let url = format!("sqlite://{}?mode=rwc", dir.join("own.db").display());
    SqlPools::new(&[ConnectionConfig {
        max_connections: 1,
        ..ConnectionConfig::new("own", url)
    }])
    .expect("pools")
    .get("own")
    .expect("configured")
}

#[tokio::test]
async fn sqlite_stays_inside_its_file() {
    let dir = tempfile_dir();
    let conn = sqlite_file(&dir);
    let other = dir.join("other.db");
    conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT)", &[])
        .await
        .expect("create");
    for sql in [
        format!("ATTACH DATABASE '{}' AS o", other.display()),
        "DETACH DATABASE main".to_owned(),
        format!("VACUUM INTO '{}'", other.display()),
        "SELECT load_extension('nowhere')".to_owned(),
        "PRAGMA journal_mode = OFF".to_owned(),
        "PRAGMA writable_schema = ON".to_owned(),
        "PRAGMA database_list".to_owned(),
        "CREATE VIRTUAL TABLE v USING fts5(x)".to_owned(),
    ] {
        let err = conn.query(&sql, &[]).await.expect_err(&sql);
        assert!(matches!(err, SqlError::Denied(_)), "{sql}: {err:?}");
    }
    assert!(!other.exists(), "no other file was created");
    // What a sink needs still works: schema PRAGMAs (as statements and
    // as table-valued functions), reads, writes, recursion.
    let cols = conn
        .query(
            "SELECT name FROM pragma_table_xinfo(?)",
            &[Value::Text("t".into())],
        )
        .await
        .expect("pragma_table_xinfo");
    assert_eq!(cols.len(), 2);
    conn.query("PRAGMA table_info(t)", &[])
        .await
        .expect("table_info");
    conn.query("PRAGMA index_list(t)", &[])
        .await
        .expect("index_list");
    conn.query("PRAGMA user_version", &[])
        .await
        .expect("user_version");
    conn.query(
        "WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < 10) SELECT sum(i) FROM c",
        &[],
    )
    .await
    .expect("recursive");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn sqlite_statement_stops_at_the_deadline_and_the_connection_is_reused() {
    let dir = tempfile_dir();
    let conn = sqlite_file(&dir);
    let started = std::time::Instant::now();
    let err = conn
        .clone()
        .with_deadline(Some(started + Duration::from_millis(300)))
        .query(
            "WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c) SELECT count(*) FROM c",
            &[],
        )
        .await
        .expect_err("endless");
    assert!(
        matches!(&err, SqlError::Unavailable(m) if m.contains("deadline")),
        "{err:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    // The single pooled connection is back, without the old deadline.
    let rows = conn.query("SELECT 1", &[]).await.expect("reused");
    assert_eq!(rows, vec![vec![Value::Int(1)]]);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn sqlite_cell_past_the_result_cap_is_too_large() {
    let dir = tempfile_dir();
    let conn = sqlite_file(&dir).with_caps(SqlCaps {
        max_result_bytes: 1 << 20,
        ..SqlCaps::default()
    });
    // The pool was made with the default cap: SQLite refuses a value
    // past it (SQLITE_LIMIT_LENGTH) before materializing it.
    let err = conn
        .query("SELECT randomblob(400000000)", &[])
        .await
        .expect_err("too big");
    assert!(
        matches!(&err, SqlError::TooLarge(m) if m.contains("result cap")),
        "{err:?}"
    );
    // Below SQLite's limit, the result cap stops it after sizing.
    let err = conn
        .query("SELECT randomblob(2000000)", &[])
        .await
        .expect_err("past the cap");
    assert!(matches!(&err, SqlError::TooLarge(_)), "{err:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A fresh directory under the system's temporary directory.
fn tempfile_dir() -> std::path::PathBuf {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    let dir = std::env::temp_dir().join(format!(
        "kubesink-sql-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}
