//! The sandbox holds against a hostile sink on PostgreSQL (the SQL modes of
//! the `hostile` guest against the test PostgreSQL; the SQLite and MariaDB
//! halves are in `sandbox_sql.rs`):
//!
//! - A statement never outlives its call: `SELECT pg_sleep(3600)` after
//!   `SET statement_timeout = 0`, four calls in a row, each ends at the
//!   call's deadline while a second sink on the same connection name
//!   delivers every record; afterwards `pg_stat_activity` shows nothing
//!   left running.
//! - No session state crosses sinks: a temporary table shadowing the other
//!   sink's table, `search_path`, an advisory lock, an open transaction.
//! - Results past the cap are `too-large`, naming the sink.
//! - The sink works with a role of the least grants, which can do nothing
//!   outside them.
//! - A sink built against WIT 0.2.0 that asks `connection.dialect` traps
//!   on PostgreSQL with a message saying what to do (and works on SQLite).

use std::time::Duration;

use anyhow::{Context, ensure};
use kubesink_host::sql::ConnectionConfig;
use kubesink_host::{Host, HostOptions, Limits};
use kubesink_tests::postgres::fresh_database;
use kubesink_tests::wait::eventually;

use crate::sandbox_sql::{COUNTER, HOSTILE, events, hang_beside_counter, report_lines, spec};

/// Pids of the sessions on `db_name` running `pg_sleep`.
async fn sleeping(admin: &sqlx::PgPool, db_name: &str) -> anyhow::Result<Vec<i32>> {
    Ok(sqlx::query_scalar(
        "SELECT pid FROM pg_stat_activity \
         WHERE datname = $1 AND state = 'active' AND query LIKE 'SELECT pg_sleep%'",
    )
    .bind(db_name)
    .fetch_all(admin)
    .await?)
}

/// `SELECT pg_sleep(3600)` (with the session's `statement_timeout` turned
/// off first) in four calls in a row ends with each call, while a counter
/// sink on the same connection name delivers every record; afterwards
/// `pg_stat_activity` shows no `pg_sleep` still running. Needs PostgreSQL.
#[tokio::test]
async fn postgres_sleep_ends_with_its_call() -> anyhow::Result<()> {
    let db = fresh_database("sandbox_sleep").await?;
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
        eventually(
            Duration::from_secs(5),
            "no pg_sleep left running",
            move || {
                let admin = admin2.clone();
                let db_name = db_name.clone();
                async move { Ok(sleeping(&admin, &db_name).await?.is_empty()) }
            },
        )
        .await?;
        Ok(())
    }
    .await;
    // Whatever happened, leave no hour-long pg_sleep on the shared server.
    let left = sleeping(&admin, db.name()).await.unwrap_or_default();
    for pid in &left {
        let _ = sqlx::query("SELECT pg_terminate_backend($1)")
            .bind(pid)
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

/// One sink leaves session state behind on a connection name whose pool
/// holds one connection: a temporary table named like the other sink's
/// table (which would take its writes), `search_path` pointing at another
/// schema, an advisory lock, an open transaction. The second sink then
/// writes: its rows land committed in its own table, nothing in the
/// meddler's schema or temporary table, and no lock or transaction is left
/// behind. Needs PostgreSQL.
#[tokio::test]
async fn postgres_session_state_does_not_cross_sinks() -> anyhow::Result<()> {
    let db = fresh_database("sandbox_session").await?;
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
    let statements = "CREATE TEMPORARY TABLE received (uid text PRIMARY KEY, kind text NOT NULL, \
         change_kind text NOT NULL, batches integer NOT NULL);; \
         CREATE SCHEMA IF NOT EXISTS meddle;; \
         CREATE TABLE IF NOT EXISTS meddle.received (uid text PRIMARY KEY, kind text NOT NULL, \
         change_kind text NOT NULL, batches integer NOT NULL);; \
         SET search_path TO meddle, public;; \
         SELECT pg_advisory_lock(4242);; \
         BEGIN;; \
         SET statement_timeout = 1";
    let mut meddler = host
        .load(spec(
            "meddler",
            HOSTILE,
            &[
                ("mode", "sql-session".to_owned()),
                ("sql", statements.to_owned()),
            ],
            Limits::default(),
        )?)
        .await?;
    meddler.write(&events("m", 1)).await?;
    // And the meddler itself starts clean on its next call: its temporary
    // table is gone, so this CREATE succeeds again.
    meddler.write(&events("m", 1)).await?;
    counter
        .write(&events("c", 5))
        .await
        .context("the second sink writes after the first left its session state")?;
    let admin = db.connect().await?;
    let uids: Vec<String> = sqlx::query_scalar("SELECT uid FROM public.received ORDER BY uid")
        .fetch_all(&admin)
        .await?;
    let in_meddle: i64 = sqlx::query_scalar("SELECT count(*) FROM meddle.received")
        .fetch_one(&admin)
        .await?;
    let locks: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objid = 4242",
    )
    .fetch_one(&admin)
    .await?;
    let in_transaction: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_stat_activity \
         WHERE datname = current_database() AND state LIKE 'idle in transaction%'",
    )
    .fetch_one(&admin)
    .await?;
    host.sql_pools().close().await;
    admin.close().await;
    ensure!(
        uids == (0..5).map(|i| format!("c-{i}")).collect::<Vec<_>>(),
        "the second sink's rows, committed, in its own table: {uids:?}"
    );
    ensure!(
        in_meddle == 0,
        "nothing was written into the meddler's schema"
    );
    ensure!(locks == 0, "the advisory lock is not left held");
    ensure!(in_transaction == 0, "no session is left in a transaction");
    db.drop_database().await?;
    Ok(())
}

/// Queries whose results pass the result cap (one 20 MB cell; 100 rows of
/// 200 KB each against a 1 MiB cap) fail that call with `too-large` naming
/// the sink and the connection; the instance keeps working. Needs
/// PostgreSQL.
#[tokio::test]
async fn postgres_results_past_the_cap_are_too_large() -> anyhow::Result<()> {
    let db = fresh_database("sandbox_big").await?;
    let dir = tempfile::tempdir()?;
    let host = Host::new(HostOptions {
        cache_dir: Some(dir.path().join("cache")),
        sql: vec![ConnectionConfig::new("main", db.url())],
        kafka: Vec::new(),
    })?;
    let limits = Limits {
        max_result_bytes: 1 << 20,
        ..Limits::default()
    };
    let mut big = host
        .load(spec(
            "big",
            HOSTILE,
            &[
                ("mode", "sql-big".to_owned()),
                ("bytes", "20000000".to_owned()),
            ],
            limits,
        )?)
        .await?;
    let err = big.write(&events("b", 1)).await.expect_err("over the cap");
    // The host's log escaping may join the report's lines.
    let report = report_lines("big", &err, "TooLarge(")?.join("\n");
    for probe in ["one cell of 20000000 bytes", "100 rows of 200000 bytes"] {
        ensure!(
            report.contains(&format!("DENIED {probe}")),
            "{probe}: {report}"
        );
    }
    ensure!(!report.contains("ESCAPED"), "{report}");
    ensure!(
        report
            .matches("TooLarge(\"sink 'big': sql connection 'main'")
            .count()
            == 2,
        "each names the sink and connection: {report}"
    );
    // The instance is kept: the same probes answer the same way again.
    let again = big.write(&events("b", 1)).await.expect_err("over the cap");
    report_lines("big", &again, "TooLarge(")?;
    host.sql_pools().close().await;
    db.drop_database().await?;
    Ok(())
}

/// On PostgreSQL the role's privileges are the bound: the mysql sink
/// creates its tables and writes, redelivers and removes records with a
/// role that may only log in to its database and use and create in its
/// `public` schema, and that role can do nothing outside: no database, no
/// role, no schema, no catalog of passwords, no server files. (A session
/// cannot leave its database: PostgreSQL has no `USE` and no queries
/// across databases.) Needs PostgreSQL.
#[tokio::test]
async fn postgres_mysql_sink_works_with_the_least_grants() -> anyhow::Result<()> {
    use kubesink_host::{ModuleSource, SinkSpec};
    use kubesink_normalize::record::Record;
    use kubesink_tests::records;
    use sqlx::Connection as _;
    let db = fresh_database("sandbox_grants").await?;
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
            module: ModuleSource::Path(kubesink_tests::guests::guest_wasm("kubesink-sink-mysql")?),
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
            "SELECT count(*) FROM \"{table}\""
        )))
        .fetch_one(&admin)
        .await?;
        ensure!(n == 1, "{table} has {n} rows");
    }
    let mut own = sqlx::PgConnection::connect(&url).await?;
    for sql in [
        "CREATE DATABASE ks_sandbox_not_allowed".to_owned(),
        "CREATE ROLE ks_sandbox_not_allowed".to_owned(),
        "SELECT count(*) FROM pg_authid".to_owned(),
        "SELECT pg_read_file('/etc/passwd')".to_owned(),
        "CREATE SCHEMA ks_sandbox_not_allowed".to_owned(),
    ] {
        let r = sqlx::raw_sql(sqlx::AssertSqlSafe(sql.clone()))
            .execute(&mut own)
            .await;
        ensure!(r.is_err(), "the sink's role may run `{sql}`");
    }
    own.close().await?;
    host.sql_pools().close().await;
    admin.close().await;
    db.drop_database().await?;
    Ok(())
}

/// A component built against kubesink:sink@0.2.0 (`tests/guests/v0.2.0/wit`)
/// whose `init` opens connection `main` and asks `connection.dialect()`,
/// then returns an empty `wants`.
fn v020_sink_asking_dialect() -> anyhow::Result<Vec<u8>> {
    use wasm_encoder::{
        CodeSection, ConstExpr, DataSection, EntityType, ExportKind, ExportSection, Function,
        FunctionSection, ImportSection, Instruction as I, MemArg, MemorySection, MemoryType,
        Module, TypeSection, ValType,
    };
    let wit = kubesink_tests::guests::workspace_root().join("tests/guests/v0.2.0/wit");
    let mut resolve = wit_parser::Resolve::default();
    let (pkg, _) = resolve.push_dir(&wit)?;
    let world = resolve.select_world(&[pkg], Some("sink-world"))?;
    let i32s = |n: usize| vec![ValType::I32; n];
    let mut types = TypeSection::new();
    types.ty().function(i32s(2), i32s(1)); // 0: init, write
    types.ty().function(i32s(5), i32s(1)); // 1: held
    types.ty().function(i32s(4), i32s(1)); // 2: cabi_realloc
    types.ty().function(i32s(3), []); // 3: connection.open(name, retptr)
    types.ty().function(i32s(1), i32s(1)); // 4: connection.dialect
    let mut imports = ImportSection::new();
    let sql = "kubesink:sink/sql@0.2.0";
    imports.import(sql, "[static]connection.open", EntityType::Function(3));
    imports.import(sql, "[method]connection.dialect", EntityType::Function(4));
    let mut funcs = FunctionSection::new();
    let mut exports = ExportSection::new();
    for (i, (name, ty)) in [("init", 0), ("write", 0), ("held", 1)]
        .into_iter()
        .enumerate()
    {
        funcs.function(ty);
        let export = format!("kubesink:sink/sink@0.2.0#{name}");
        exports.export(&export, ExportKind::Func, 2 + i as u32);
    }
    funcs.function(2);
    exports.export("cabi_realloc", ExportKind::Func, 5);
    exports.export("memory", ExportKind::Memory, 0);
    let at = |offset: u64| MemArg {
        offset,
        align: 0,
        memory_index: 0,
    };
    let mut code = CodeSection::new();
    // init: open("main") into 200 (discriminant) / 204 (handle); trap
    // unless ok; ask the dialect; return 16 (zeros: ok, empty wants).
    let mut init = Function::new([]);
    for i in [
        I::I32Const(100),
        I::I32Const(4),
        I::I32Const(200),
        I::Call(0),
        I::I32Const(200),
        I::I32Load8U(at(0)),
        I::If(wasm_encoder::BlockType::Empty),
        // Out of bounds: "open failed", told apart from other traps.
        I::I32Const(-1),
        I::I32Load(at(0)),
        I::Drop,
        I::End,
        I::I32Const(200),
        I::I32Load(at(4)),
        I::Call(1),
        I::Drop,
        I::I32Const(16),
        I::End,
    ] {
        init.instruction(&i);
    }
    code.function(&init);
    for _ in 0..2 {
        let mut f = Function::new([]);
        f.instruction(&I::Unreachable).instruction(&I::End);
        code.function(&f);
    }
    // cabi_realloc: everything at 1024 (the host lowers init's settings
    // through it, even none).
    let mut realloc = Function::new([]);
    realloc.instruction(&I::I32Const(1024)).instruction(&I::End);
    code.function(&realloc);
    let mut memories = MemorySection::new();
    memories.memory(MemoryType {
        minimum: 1,
        maximum: None,
        memory64: false,
        shared: false,
        page_size_log2: None,
    });
    let mut data = DataSection::new();
    data.active(0, &ConstExpr::i32_const(100), b"main".iter().copied());
    let mut module = Module::new();
    module
        .section(&types)
        .section(&imports)
        .section(&funcs)
        .section(&memories)
        .section(&exports)
        .section(&code)
        .section(&data);
    crate::host::sink_component(module.finish(), &resolve, world)
}

/// A sink built against 0.2.0 that asks `connection.dialect()` still works
/// on SQLite; on a PostgreSQL connection, which 0.2.0's `dialect` cannot
/// name, the call traps with a message naming the sink, the connection and
/// what to do (`wit/README.md`, "0.2.0 → 0.2.1"). Needs PostgreSQL.
#[tokio::test]
async fn postgres_a_0_2_0_sink_asking_dialect_traps_naming_engine() -> anyhow::Result<()> {
    use kubesink_host::{CallError, FaultCause, HostError, ModuleSource, SinkSpec};
    let bytes = std::sync::Arc::new(v020_sink_asking_dialect()?);
    let spec = |name: &str| SinkSpec {
        name: name.into(),
        module: ModuleSource::Bytes {
            origin: format!("{name}.wasm"),
            bytes: bytes.clone(),
        },
        settings: vec![],
        sql_grants: vec!["main".into()],
        limits: Limits::default(),
    };
    let dir = tempfile::tempdir()?;
    let sqlite = Host::new(HostOptions {
        cache_dir: Some(dir.path().join("cache")),
        sql: vec![ConnectionConfig::new(
            "main",
            format!("sqlite://{}?mode=rwc", dir.path().join("s.db").display()),
        )],
        kafka: Vec::new(),
    })?;
    sqlite
        .load(spec("old-on-sqlite"))
        .await
        .context("a 0.2.0 sink asking the dialect of a SQLite connection")?;

    let db = fresh_database("sandbox_dialect").await?;
    let pg = Host::new(HostOptions {
        cache_dir: Some(dir.path().join("cache")),
        sql: vec![ConnectionConfig::new("main", db.url())],
        kafka: Vec::new(),
    })?;
    let err = pg
        .load(spec("old-on-pg"))
        .await
        .expect_err("dialect cannot name PostgreSQL");
    let HostError::Init {
        source:
            CallError::Fault {
                cause: FaultCause::Trap,
                detail,
            },
        ..
    } = &err
    else {
        anyhow::bail!("expected a trap in init, got {err:?}");
    };
    for part in [
        "sink 'old-on-pg'",
        "sql connection 'main'",
        "is PostgreSQL",
        "kubesink:sink@0.2.1",
        "connection.engine",
    ] {
        ensure!(detail.contains(part), "{part:?} missing from: {detail}");
    }
    ensure!(!detail.contains("kubesink@"), "no credentials: {detail}");
    pg.sql_pools().close().await;
    sqlite.sql_pools().close().await;
    db.drop_database().await?;
    Ok(())
}
