//! The MariaDB throughput scenarios over one in-memory data set (the same
//! batches for each, each into its own fresh database):
//!
//! - [`wasm`]: the mysql sink component in the host (`SinkInstance::write`),
//!   the path `kubesink` runs;
//! - [`native`]: the same sink logic compiled natively over the host's SQL
//!   implementation ([`crate::native::NativeDb`]);
//! - [`ceiling`]: plain batched sqlx upserts of the same rows
//!   ([`crate::ceiling::Ceiling`]).
//!
//! Each times only the writes (the data is normalized beforehand) and
//! returns the records written per second of write time.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use kubesink_host::sql::ConnectionConfig;
use kubesink_host::{Host, HostOptions, Limits, ModuleSource, SinkSpec};
use kubesink_normalize::record::Entry;
use kubesink_sink_mysql::MysqlSink;
use kubesink_tests::mariadb::TestDb;

use crate::ceiling::Ceiling;
use crate::native::NativeDb;

/// Name of the connection the sinks open.
pub const CONNECTION: &str = "bench";

/// What one run measured.
#[derive(Debug, Clone, Copy)]
pub struct Throughput {
    /// Entries written.
    pub records: u64,
    /// Time spent in writes.
    pub elapsed: Duration,
}

impl Throughput {
    /// Records per second.
    #[must_use]
    pub fn per_sec(&self) -> f64 {
        self.records as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

fn progress(label: &str, done: usize, total: usize, started: Instant) {
    if total >= 20 && done.is_multiple_of((total / 10).max(1)) {
        eprintln!(
            "  {label}: {done}/{total} batches, {:.1} s",
            started.elapsed().as_secs_f64()
        );
    }
}

fn settings() -> Vec<(String, String)> {
    vec![("connection".into(), CONNECTION.into())]
}

/// The host for `db`, with the component cache in `cache`.
pub fn host_for(db: &TestDb, cache: &std::path::Path) -> anyhow::Result<Host> {
    Ok(Host::new(HostOptions {
        cache_dir: Some(cache.to_path_buf()),
        sql: vec![ConnectionConfig::new(CONNECTION, db.url())],
        kafka: Vec::new(),
    })?)
}

/// Writes `batches` through the mysql sink component `wasm` into `db`.
pub async fn wasm(
    db: &TestDb,
    wasm: &std::path::Path,
    cache: &std::path::Path,
    batches: &[Vec<Entry>],
) -> anyhow::Result<Throughput> {
    let host = host_for(db, cache)?;
    let mut sink = host
        .load(SinkSpec {
            name: "mysql-wasm".into(),
            module: ModuleSource::Path(wasm.to_path_buf()),
            settings: settings(),
            sql_grants: vec![CONNECTION.into()],
            limits: Limits::default(),
        })
        .await
        .context("loading the mysql sink component")?;
    let mut records = 0u64;
    let mut elapsed = Duration::ZERO;
    let started = Instant::now();
    for (i, batch) in batches.iter().enumerate() {
        let t = Instant::now();
        sink.write(batch)
            .await
            .with_context(|| format!("wasm sink, batch {i}"))?;
        elapsed += t.elapsed();
        records += batch.len() as u64;
        progress("wasm", i + 1, batches.len(), started);
    }
    host.sql_pools().close().await;
    Ok(Throughput { records, elapsed })
}

/// Sends the entries of `batches` through kubesink's own pipeline — the
/// sink's queue(s), batching (500 records, 200 ms), and `workers`
/// instances of the mysql component, as `kubesink` runs it — into `db`,
/// without coalescing (so every entry is written, as in [`wasm`]). Timed
/// from the first entry sent to the last one delivered.
pub async fn pipeline(
    db: &TestDb,
    wasm: &std::path::Path,
    cache: &std::path::Path,
    batches: &[Vec<Entry>],
    workers: usize,
) -> anyhow::Result<Throughput> {
    use kubesink::config::Config;
    use kubesink::pipeline::Pipeline;
    let env: std::collections::BTreeMap<&str, String> = db.kubedl_env().into_iter().collect();
    let yaml = format!(
        "cache_dir: '{cache}'\nconnections:\n  {CONNECTION}: {{ driver: mysql, host: '{host}', port: {port}, database: '{name}', user: '{user}', password: '{password}' }}\nsinks:\n  - name: mysql\n    module: '{module}'\n    connections: [{CONNECTION}]\n    settings: {{ connection: {CONNECTION} }}\n    queue: {{ coalesce: false }}\n    workers: {workers}\n",
        cache = cache.display(),
        host = env["MYSQL_HOST"],
        port = env["MYSQL_PORT"],
        name = env["MYSQL_DB_NAME"],
        user = env["MYSQL_USER"],
        password = env.get("MYSQL_PASSWORD").cloned().unwrap_or_default(),
        module = wasm.display(),
    );
    let plan = Config::parse(&yaml, "bench config")?.resolve("bench config")?;
    let host = Host::new(plan.host.clone())?;
    let pipeline = Pipeline::start(&host, plan.sinks.clone())
        .await
        .context("starting the pipeline")?;
    let entries: Vec<Entry> = batches.iter().flatten().cloned().collect();
    let records = entries.len() as u64;
    let started = Instant::now();
    for entry in entries {
        pipeline.send(entry).await;
    }
    let reports = pipeline.finish().await;
    let elapsed = started.elapsed();
    host.sql_pools().close().await;
    let report = reports.first().context("no sink report")?;
    anyhow::ensure!(
        report.delivered == records && report.failed == 0,
        "pipeline with {workers} workers delivered {} of {records} records ({} failed)",
        report.delivered,
        report.failed
    );
    Ok(Throughput { records, elapsed })
}

/// Writes `batches` through the natively compiled sink logic into `db`
/// (on a blocking thread: the sink is synchronous).
pub async fn native(db: &TestDb, batches: &[Vec<Entry>]) -> anyhow::Result<Throughput> {
    let dir = tempfile::tempdir()?;
    let host = host_for(db, dir.path())?;
    let conn = host
        .sql_pools()
        .get(CONNECTION)
        .context("connection missing from the host")?;
    let handle = tokio::runtime::Handle::current();
    let result = tokio::task::block_in_place(|| -> anyhow::Result<Throughput> {
        let mut sink = MysqlSink::init(&settings(), |_| Ok(NativeDb::new(conn, handle)))
            .map_err(|e| anyhow::anyhow!("native mysql sink init: {e}"))?;
        let mut records = 0u64;
        let mut elapsed = Duration::ZERO;
        let started = Instant::now();
        for (i, batch) in batches.iter().enumerate() {
            let t = Instant::now();
            // The wasm adapter's work: move the records into the sink's model.
            let converted = crate::convert::batch(batch);
            sink.write(&converted)
                .map_err(|e| anyhow::anyhow!("native sink, batch {i}: {e}"))?;
            elapsed += t.elapsed();
            records += batch.len() as u64;
            progress("native", i + 1, batches.len(), started);
        }
        Ok(Throughput { records, elapsed })
    });
    host.sql_pools().close().await;
    result
}

/// Writes the same rows with plain batched sqlx upserts into `db`.
pub async fn ceiling(db: &TestDb, batches: &[Vec<Entry>]) -> anyhow::Result<Throughput> {
    let pool = db.connect().await?;
    let writer = Ceiling::new(pool.clone()).await?;
    let converted: Vec<Vec<kubesink_sink_mysql::Entry>> =
        batches.iter().map(|b| crate::convert::batch(b)).collect();
    let mut records = 0u64;
    let mut elapsed = Duration::ZERO;
    let started = Instant::now();
    for (i, batch) in converted.iter().enumerate() {
        let t = Instant::now();
        writer
            .write(batch)
            .await
            .with_context(|| format!("ceiling, batch {i}"))?;
        elapsed += t.elapsed();
        records += batch.len() as u64;
        progress("ceiling", i + 1, converted.len(), started);
    }
    pool.close().await;
    Ok(Throughput { records, elapsed })
}

/// Rows in each of the sink's tables of `db` (jobs, pods, events).
pub async fn row_counts(db: &TestDb) -> anyhow::Result<[i64; 3]> {
    let pool = db.connect().await?;
    let mut out = [0i64; 3];
    for (slot, table) in out
        .iter_mut()
        .zip(["job_info", "replica_info", "event_info"])
    {
        let sql = format!("SELECT COUNT(*) FROM {table}");
        *slot = sqlx::query_scalar::<_, i64>(sqlx::AssertSqlSafe(sql))
            .fetch_one(&pool)
            .await
            .with_context(|| format!("counting rows of {table} in {}", db.name()))?;
    }
    pool.close().await;
    Ok(out)
}

/// The server's global counters of prepared statements: (`Com_stmt_prepare`,
/// `Com_stmt_execute`). Their growth over a run shows how often the driver
/// had to prepare a statement text it had not cached.
pub async fn statement_counters(db: &TestDb) -> anyhow::Result<(u64, u64)> {
    let pool = db.connect().await?;
    let rows: Vec<(String, String)> = sqlx::query_as(
        "SHOW GLOBAL STATUS WHERE Variable_name IN ('Com_stmt_prepare', 'Com_stmt_execute')",
    )
    .fetch_all(&pool)
    .await
    .context("reading MariaDB's statement counters")?;
    pool.close().await;
    let get = |name: &str| {
        rows.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .and_then(|(_, v)| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    Ok((get("Com_stmt_prepare"), get("Com_stmt_execute")))
}
