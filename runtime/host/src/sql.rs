//! The `kubesink:sink/sql` capability, backed by sqlx pools the host owns.
//!
//! Two layers:
//!
//! - [`SqlPools`] / [`SqlConn`]: the named pools (MySQL/MariaDB or SQLite),
//!   usable natively (no wasm) with typed parameters ([`Value`]), size caps
//!   ([`SqlCaps`]) and errors already mapped to the WIT [`SqlError`] cases.
//!   Pools are created lazily, so a database that is down at start-up gives
//!   `unavailable` errors (retryable) instead of a failed start.
//! - The capability proper, following wasmtime's View pattern: [`SqlCtx`]
//!   (per store: the sink's name, its grants, the pools, the caps), the
//!   [`SqlView`] trait the store data implements, and [`add_to_linker`].
//!
//! Connection URLs carry credentials: they never appear in errors or logs.
//! Errors show `scheme://host:port/database` only (see [`redact_url`]), and
//! any message coming back from a driver is scrubbed of the URL's user
//! information before it is shown.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, NaiveDate, NaiveDateTime, SecondsFormat, Utc};
use futures_util::TryStreamExt;
use sqlx::mysql::{MySqlConnectOptions, MySqlDatabaseError, MySqlPool, MySqlPoolOptions, MySqlRow};
use sqlx::sqlite::{SqliteConnectOptions, SqlitePool, SqlitePoolOptions, SqliteRow};
use sqlx::{AssertSqlSafe, Column, Row, TypeInfo, ValueRef};
use wasmtime::component::{HasData, Linker, Resource, ResourceTable};

use crate::bindings::kubesink::sink::sql as wit;
pub use crate::bindings::kubesink::sink::sql::{Dialect, SqlError, Statement, Value};
use kubesink_normalize::record::Timestamp;

/// How long a statement waits for a pooled connection (or for a new one to
/// be opened) before the call fails with `unavailable`. Kept well below the
/// default per-call deadline so that a database that is down shows up as a
/// retryable error rather than a timeout fault.
pub const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);

/// One named connection from the runtime configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionConfig {
    /// The name sinks open it by.
    pub name: String,
    /// `mysql://user:pass@host:port/db` or `sqlite://path?mode=rwc`.
    /// Never shown in logs or errors (only scheme, host and database are).
    pub url: String,
    /// Most pooled connections. Default 4.
    pub max_connections: u32,
}

impl ConnectionConfig {
    /// A connection named `name` at `url` with the default pool size (4).
    #[must_use]
    pub fn new(name: impl Into<String>, url: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            url: url.into(),
            max_connections: 4,
        }
    }
}

/// A connection configuration the host cannot use.
#[derive(Debug, thiserror::Error)]
pub enum SqlConfigError {
    /// Two connections share a name.
    #[error("sql connection '{name}' is configured twice")]
    Duplicate {
        /// The repeated name.
        name: String,
    },
    /// The URL's scheme is not one the host supports.
    #[error(
        "sql connection '{name}' ({shown}): unsupported database, expected mysql:// or sqlite://"
    )]
    Unsupported {
        /// The connection's name.
        name: String,
        /// The URL without credentials.
        shown: String,
    },
    /// The driver refused the URL.
    #[error("sql connection '{name}' ({shown}): invalid url: {reason}")]
    InvalidUrl {
        /// The connection's name.
        name: String,
        /// The URL without credentials.
        shown: String,
        /// The driver's reason, scrubbed of credentials.
        reason: String,
    },
}

/// Caps on the sizes a caller (the guest) controls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SqlCaps {
    /// Most bytes of one statement: its text plus its text/bytes parameters.
    pub max_statement_bytes: usize,
    /// Most bytes a query may return (cells' payload sizes, summed).
    pub max_result_bytes: usize,
}

impl Default for SqlCaps {
    fn default() -> Self {
        let limits = crate::Limits::default();
        Self {
            max_statement_bytes: limits.max_statement_bytes,
            max_result_bytes: limits.max_result_bytes,
        }
    }
}

enum DbPool {
    MySql(MySqlPool),
    Sqlite(SqlitePool),
}

struct PoolEntry {
    name: String,
    /// The URL without credentials, for messages.
    shown: String,
    /// Strings that must never be shown (user information of the URL).
    secrets: Vec<String>,
    pool: DbPool,
}

impl PoolEntry {
    fn scrub(&self, message: &str) -> String {
        scrub(message, &self.secrets)
    }

    fn unavailable(&self, what: impl fmt::Display) -> SqlError {
        SqlError::Unavailable(self.scrub(&format!(
            "sql connection '{}' ({}): {what}",
            self.name, self.shown
        )))
    }

    fn rejected(&self, what: impl fmt::Display) -> SqlError {
        SqlError::Rejected(self.scrub(&format!(
            "sql connection '{}' ({}): {what}",
            self.name, self.shown
        )))
    }

    fn too_large(&self, what: impl fmt::Display) -> SqlError {
        SqlError::TooLarge(format!(
            "sql connection '{}' ({}): {what}",
            self.name, self.shown
        ))
    }

    /// Maps a driver error to the WIT error cases.
    fn map_err(&self, err: sqlx::Error) -> SqlError {
        match &err {
            sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::Protocol(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::WorkerCrashed => self.unavailable(&err),
            sqlx::Error::Database(db) => {
                if is_transient_db_error(db.as_ref()) {
                    self.unavailable(&err)
                } else {
                    self.rejected(&err)
                }
            }
            _ => self.rejected(&err),
        }
    }
}

/// Deadlocks, lock-wait timeouts and server-side connection trouble are
/// worth retrying; anything else the database says is a rejection.
fn is_transient_db_error(db: &dyn sqlx::error::DatabaseError) -> bool {
    if let Some(my) = db.try_downcast_ref::<MySqlDatabaseError>() {
        // 1205 lock wait timeout, 1213 deadlock, 1040 too many connections,
        // 1053 server shutdown, 1927 connection killed, 2006/2013 gone away.
        return matches!(my.number(), 1205 | 1213 | 1040 | 1053 | 1927 | 2006 | 2013);
    }
    // SQLite: primary result codes 5 (BUSY) and 6 (LOCKED) in the low byte of
    // the extended code.
    if let Some(code) = db.code().and_then(|c| c.parse::<i32>().ok()) {
        return matches!(code & 0xff, 5 | 6);
    }
    false
}

/// The named pools the host owns. Cheap to clone.
#[derive(Clone, Default)]
pub struct SqlPools {
    map: Arc<BTreeMap<String, Arc<PoolEntry>>>,
}

impl fmt::Debug for SqlPools {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let shown: BTreeMap<&str, &str> = self
            .map
            .iter()
            .map(|(k, v)| (k.as_str(), v.shown.as_str()))
            .collect();
        f.debug_struct("SqlPools")
            .field("connections", &shown)
            .finish()
    }
}

impl SqlPools {
    /// Creates one lazy pool per configuration. No connection is opened
    /// here; only the URLs are checked. Needs a Tokio runtime when the
    /// pools are used (not when they are created: pools have no idle
    /// reaper task; a pooled connection is pinged before reuse instead).
    pub fn new(configs: &[ConnectionConfig]) -> Result<Self, SqlConfigError> {
        let mut map = BTreeMap::new();
        for config in configs {
            if map.contains_key(&config.name) {
                return Err(SqlConfigError::Duplicate {
                    name: config.name.clone(),
                });
            }
            let entry = open_lazy(config)?;
            map.insert(config.name.clone(), Arc::new(entry));
        }
        Ok(Self { map: Arc::new(map) })
    }

    /// The connection configured under `name`, with default caps.
    pub fn get(&self, name: &str) -> Option<SqlConn> {
        self.map.get(name).map(|entry| SqlConn {
            entry: entry.clone(),
            caps: SqlCaps::default(),
        })
    }

    /// Names of the configured connections, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.map.keys().map(String::as_str)
    }

    /// Closes every pool (waits for checked-out connections to return).
    pub async fn close(&self) {
        for entry in self.map.values() {
            match &entry.pool {
                DbPool::MySql(p) => p.close().await,
                DbPool::Sqlite(p) => p.close().await,
            }
        }
    }
}

fn open_lazy(config: &ConnectionConfig) -> Result<PoolEntry, SqlConfigError> {
    let shown = redact_url(&config.url);
    let secrets = url_secrets(&config.url);
    let invalid = |err: sqlx::Error| SqlConfigError::InvalidUrl {
        name: config.name.clone(),
        shown: shown.clone(),
        reason: scrub(&err.to_string(), &secrets),
    };
    let max = config.max_connections.max(1);
    let pool = if config.url.starts_with("mysql:") || config.url.starts_with("mariadb:") {
        let url = config
            .url
            .strip_prefix("mariadb:")
            .map_or_else(|| config.url.clone(), |rest| format!("mysql:{rest}"));
        let options = MySqlConnectOptions::from_str(&url).map_err(invalid)?;
        DbPool::MySql(
            MySqlPoolOptions::new()
                .max_connections(max)
                .acquire_timeout(ACQUIRE_TIMEOUT)
                .idle_timeout(None)
                .max_lifetime(None)
                .connect_lazy_with(options),
        )
    } else if config.url.starts_with("sqlite:") {
        let options = SqliteConnectOptions::from_str(&config.url).map_err(invalid)?;
        DbPool::Sqlite(
            SqlitePoolOptions::new()
                .max_connections(max)
                .acquire_timeout(ACQUIRE_TIMEOUT)
                .idle_timeout(None)
                .max_lifetime(None)
                .connect_lazy_with(options),
        )
    } else {
        return Err(SqlConfigError::Unsupported {
            name: config.name.clone(),
            shown,
        });
    };
    Ok(PoolEntry {
        name: config.name.clone(),
        shown,
        secrets,
        pool,
    })
}

/// A handle on one named pool, with the caps its user is held to. Cheap to
/// clone. This is what the guest's `connection` resource wraps, and what
/// native code (benchmarks, tests) uses directly.
#[derive(Clone)]
pub struct SqlConn {
    entry: Arc<PoolEntry>,
    caps: SqlCaps,
}

impl fmt::Debug for SqlConn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqlConn")
            .field("name", &self.entry.name)
            .field("url", &self.entry.shown)
            .field("caps", &self.caps)
            .finish()
    }
}

impl SqlConn {
    /// The same connection held to other caps.
    #[must_use]
    pub fn with_caps(mut self, caps: SqlCaps) -> Self {
        self.caps = caps;
        self
    }

    /// The configured name.
    pub fn name(&self) -> &str {
        &self.entry.name
    }

    /// The URL without credentials.
    pub fn shown_url(&self) -> &str {
        &self.entry.shown
    }

    /// Which database this is.
    pub fn dialect(&self) -> Dialect {
        match self.entry.pool {
            DbPool::MySql(_) => Dialect::Mysql,
            DbPool::Sqlite(_) => Dialect::Sqlite,
        }
    }

    fn check_statement(&self, sql: &str, params: &[Value]) -> Result<(), SqlError> {
        let size = sql.len() + params.iter().map(value_size).sum::<usize>();
        if size > self.caps.max_statement_bytes {
            return Err(self.entry.too_large(format_args!(
                "statement of {size} bytes (text and parameters) exceeds the cap of {} bytes",
                self.caps.max_statement_bytes
            )));
        }
        Ok(())
    }

    /// Runs one statement with `?` placeholders; returns the rows affected.
    pub async fn execute(&self, sql: &str, params: &[Value]) -> Result<u64, SqlError> {
        self.check_statement(sql, params)?;
        let e = &self.entry;
        match &e.pool {
            DbPool::MySql(pool) => {
                let q = bind_mysql(sqlx::query(AssertSqlSafe(sql)), params, e)?;
                q.execute(pool)
                    .await
                    .map(|r| r.rows_affected())
                    .map_err(|err| e.map_err(err))
            }
            DbPool::Sqlite(pool) => {
                let q = bind_sqlite(sqlx::query(AssertSqlSafe(sql)), params, e)?;
                q.execute(pool)
                    .await
                    .map(|r| r.rows_affected())
                    .map_err(|err| e.map_err(err))
            }
        }
    }

    /// Runs one query; returns its rows, each a list of cells in column
    /// order, converted by column type. Fails with `too-large` as soon as
    /// the rows read exceed the result cap.
    pub async fn query(&self, sql: &str, params: &[Value]) -> Result<Vec<Vec<Value>>, SqlError> {
        self.check_statement(sql, params)?;
        let e = &self.entry;
        let cap = self.caps.max_result_bytes;
        let mut rows = Vec::new();
        let mut total = 0usize;
        let mut push = |row: Vec<Value>| -> Result<(), SqlError> {
            total += row.iter().map(value_size).sum::<usize>() + 8;
            if total > cap {
                return Err(e.too_large(format_args!(
                    "query result exceeds the cap of {cap} bytes after {} rows",
                    rows.len()
                )));
            }
            rows.push(row);
            Ok(())
        };
        match &e.pool {
            DbPool::MySql(pool) => {
                let q = bind_mysql(sqlx::query(AssertSqlSafe(sql)), params, e)?;
                let mut stream = q.fetch(pool);
                while let Some(row) = stream.try_next().await.map_err(|err| e.map_err(err))? {
                    push(mysql_row(&row).map_err(|err| e.map_err(err))?)?;
                }
            }
            DbPool::Sqlite(pool) => {
                let q = bind_sqlite(sqlx::query(AssertSqlSafe(sql)), params, e)?;
                let mut stream = q.fetch(pool);
                while let Some(row) = stream.try_next().await.map_err(|err| e.map_err(err))? {
                    push(sqlite_row(&row).map_err(|err| e.map_err(err))?)?;
                }
            }
        }
        Ok(rows)
    }

    /// Runs several statements in one transaction: all apply or none.
    /// Returns the total rows affected.
    pub async fn execute_batch(&self, statements: &[Statement]) -> Result<u64, SqlError> {
        for s in statements {
            self.check_statement(&s.sql, &s.params)?;
        }
        let e = &self.entry;
        let map = |err| e.map_err(err);
        let mut affected = 0u64;
        match &e.pool {
            DbPool::MySql(pool) => {
                let mut tx = pool.begin().await.map_err(map)?;
                for s in statements {
                    let q = bind_mysql(sqlx::query(AssertSqlSafe(s.sql.as_str())), &s.params, e)?;
                    affected += q.execute(&mut *tx).await.map_err(map)?.rows_affected();
                }
                tx.commit().await.map_err(map)?;
            }
            DbPool::Sqlite(pool) => {
                let mut tx = pool.begin().await.map_err(map)?;
                for s in statements {
                    let q = bind_sqlite(sqlx::query(AssertSqlSafe(s.sql.as_str())), &s.params, e)?;
                    affected += q.execute(&mut *tx).await.map_err(map)?.rows_affected();
                }
                tx.commit().await.map_err(map)?;
            }
        }
        Ok(affected)
    }
}

/// Payload bytes of a value, for the caps.
fn value_size(v: &Value) -> usize {
    match v {
        Value::Null => 1,
        Value::Int(_) | Value::Uint(_) | Value::Float(_) => 8,
        Value::Text(s) => s.len(),
        Value::Bytes(b) => b.len(),
        Value::Timestamp(_) => 12,
    }
}

fn to_naive(ts: &Timestamp) -> Option<NaiveDateTime> {
    DateTime::<Utc>::from_timestamp(ts.seconds, ts.nanos).map(|dt| dt.naive_utc())
}

fn from_naive(dt: NaiveDateTime) -> Value {
    let utc = dt.and_utc();
    Value::Timestamp(Timestamp {
        seconds: utc.timestamp(),
        nanos: utc.timestamp_subsec_nanos(),
    })
}

/// Timestamps go to SQLite as RFC 3339 text in UTC (`...Z`), which sorts
/// chronologically and which SQLite's date functions understand.
fn sqlite_timestamp_text(ts: &Timestamp) -> Option<String> {
    DateTime::<Utc>::from_timestamp(ts.seconds, ts.nanos)
        .map(|dt| dt.to_rfc3339_opts(SecondsFormat::AutoSi, true))
}

fn parse_sqlite_timestamp(text: &str) -> Option<Value> {
    if let Ok(dt) = DateTime::parse_from_rfc3339(text) {
        return Some(from_naive(dt.naive_utc()));
    }
    for format in ["%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S%.f"] {
        if let Ok(dt) = NaiveDateTime::parse_from_str(text, format) {
            return Some(from_naive(dt));
        }
    }
    None
}

type MySqlQuery<'q> = sqlx::query::Query<'q, sqlx::MySql, sqlx::mysql::MySqlArguments>;
type SqliteQuery<'q> = sqlx::query::Query<'q, sqlx::Sqlite, sqlx::sqlite::SqliteArguments>;

/// Binds `params` by reference: the driver encodes each value into its
/// argument buffer right away, so borrowing saves a copy of every text and
/// bytes parameter (see `docs/benchmarks.md`, profile).
fn bind_mysql<'q>(
    mut q: MySqlQuery<'q>,
    params: &'q [Value],
    e: &PoolEntry,
) -> Result<MySqlQuery<'q>, SqlError> {
    for (i, v) in params.iter().enumerate() {
        q = match v {
            Value::Null => q.bind(None::<String>),
            Value::Int(n) => q.bind(*n),
            Value::Uint(n) => q.bind(*n),
            Value::Float(f) => q.bind(*f),
            Value::Text(s) => q.bind(s.as_str()),
            Value::Bytes(b) => q.bind(b.as_slice()),
            Value::Timestamp(ts) => q.bind(to_naive(ts).ok_or_else(|| {
                e.rejected(format_args!(
                    "parameter {}: timestamp {ts:?} out of range",
                    i + 1
                ))
            })?),
        };
    }
    Ok(q)
}

fn bind_sqlite<'q>(
    mut q: SqliteQuery<'q>,
    params: &[Value],
    e: &PoolEntry,
) -> Result<SqliteQuery<'q>, SqlError> {
    for (i, v) in params.iter().enumerate() {
        q = match v {
            Value::Null => q.bind(None::<String>),
            Value::Int(n) => q.bind(*n),
            Value::Uint(n) => q.bind(i64::try_from(*n).map_err(|_| {
                e.rejected(format_args!(
                    "parameter {}: unsigned value {n} exceeds SQLite's integer range",
                    i + 1
                ))
            })?),
            Value::Float(f) => q.bind(*f),
            Value::Text(s) => q.bind(s.clone()),
            Value::Bytes(b) => q.bind(b.clone()),
            Value::Timestamp(ts) => q.bind(sqlite_timestamp_text(ts).ok_or_else(|| {
                e.rejected(format_args!(
                    "parameter {}: timestamp {ts:?} out of range",
                    i + 1
                ))
            })?),
        };
    }
    Ok(q)
}

fn mysql_row(row: &MySqlRow) -> Result<Vec<Value>, sqlx::Error> {
    let mut cells = Vec::with_capacity(row.len());
    for (i, column) in row.columns().iter().enumerate() {
        if row.try_get_raw(i)?.is_null() {
            cells.push(Value::Null);
            continue;
        }
        let ty = column.type_info().name();
        let cell = match ty {
            "BOOLEAN" | "TINYINT" | "SMALLINT" | "INT" | "MEDIUMINT" | "BIGINT" => {
                Value::Int(row.try_get::<i64, _>(i)?)
            }
            "YEAR" => Value::Int(row.try_get_unchecked::<u16, _>(i)?.into()),
            t if t.ends_with("UNSIGNED") => Value::Uint(row.try_get::<u64, _>(i)?),
            "FLOAT" => Value::Float(row.try_get::<f32, _>(i)?.into()),
            "DOUBLE" => Value::Float(row.try_get::<f64, _>(i)?),
            "DATETIME" | "TIMESTAMP" => from_naive(row.try_get::<NaiveDateTime, _>(i)?),
            "DATE" => from_naive(
                row.try_get::<NaiveDate, _>(i)?
                    .and_hms_opt(0, 0, 0)
                    .unwrap_or_default(),
            ),
            "BINARY" | "VARBINARY" | "BLOB" | "TINYBLOB" | "MEDIUMBLOB" | "LONGBLOB" | "BIT"
            | "GEOMETRY" => Value::Bytes(row.try_get_unchecked::<Vec<u8>, _>(i)?),
            "TIME" => Value::Text(row.try_get::<chrono::NaiveTime, _>(i)?.to_string()),
            // CHAR, VARCHAR, TEXT, ENUM, SET, JSON, DECIMAL: sent as text.
            _ => {
                let bytes = row.try_get_unchecked::<Vec<u8>, _>(i)?;
                match String::from_utf8(bytes) {
                    Ok(s) => Value::Text(s),
                    Err(e) => Value::Bytes(e.into_bytes()),
                }
            }
        };
        cells.push(cell);
    }
    Ok(cells)
}

fn sqlite_row(row: &SqliteRow) -> Result<Vec<Value>, sqlx::Error> {
    let mut cells = Vec::with_capacity(row.len());
    for (i, column) in row.columns().iter().enumerate() {
        let declared = column.type_info().name().to_ascii_uppercase();
        let (is_null, storage) = {
            let raw = row.try_get_raw(i)?;
            (raw.is_null(), raw.type_info().name().to_owned())
        };
        let cell = if is_null {
            Value::Null
        } else {
            match storage.as_str() {
                "INTEGER" | "BOOLEAN" => Value::Int(row.try_get_unchecked::<i64, _>(i)?),
                "REAL" => Value::Float(row.try_get_unchecked::<f64, _>(i)?),
                "BLOB" => Value::Bytes(row.try_get_unchecked::<Vec<u8>, _>(i)?),
                _ => {
                    let text = row.try_get_unchecked::<String, _>(i)?;
                    let temporal = matches!(declared.as_str(), "DATETIME" | "TIMESTAMP" | "DATE");
                    match temporal.then(|| parse_sqlite_timestamp(&text)).flatten() {
                        Some(ts) => ts,
                        None => Value::Text(text),
                    }
                }
            }
        };
        cells.push(cell);
    }
    Ok(cells)
}

/// Shows a connection URL without credentials or query:
/// `mysql://user:pw@db:3306/kubedl?ssl-mode=x` → `mysql://db:3306/kubedl`.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        // `sqlite::memory:` and other opaque forms: keep the scheme only
        // unless it is plainly credential-free.
        let base = url.split('?').next().unwrap_or_default();
        return if base.contains('@') {
            base.split(':').next().unwrap_or_default().to_owned() + ":…"
        } else {
            base.to_owned()
        };
    };
    let rest = rest.split(['?', '#']).next().unwrap_or_default();
    let (authority, path) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    format!("{scheme}://{host}{path}")
}

/// The parts of a URL that must never be shown: its user information
/// (raw and percent-decoded) and any `password=` query value.
fn url_secrets(url: &str) -> Vec<String> {
    let mut secrets = Vec::new();
    if let Some((_, rest)) = url.split_once("://") {
        let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
        if let Some((userinfo, _)) = authority.rsplit_once('@') {
            if let Some((_, password)) = userinfo.split_once(':') {
                secrets.push(password.to_owned());
                secrets.push(percent_decode(password));
            }
            secrets.push(userinfo.to_owned());
        }
    }
    if let Some((_, query)) = url.split_once('?') {
        for pair in query.split('&') {
            if let Some((k, v)) = pair.split_once('=')
                && k.to_ascii_lowercase().contains("password")
            {
                secrets.push(v.to_owned());
                secrets.push(percent_decode(v));
            }
        }
    }
    secrets.push(url.to_owned());
    secrets.retain(|s| !s.is_empty());
    // Longest first, so that a secret containing another is masked whole.
    secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
    secrets.dedup();
    secrets
}

fn percent_decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s)
        .decode_utf8_lossy()
        .into_owned()
}

fn scrub(message: &str, secrets: &[String]) -> String {
    let mut out = message.to_owned();
    for secret in secrets {
        if out.contains(secret.as_str()) {
            out = out.replace(secret.as_str(), "***");
        }
    }
    out
}

// ---------------------------------------------------------------------------
// The capability (View pattern).

/// Per-store state of the `sql` capability for one sink.
#[derive(Debug, Clone)]
pub struct SqlCtx {
    sink: String,
    grants: Vec<String>,
    pools: SqlPools,
    caps: SqlCaps,
}

impl SqlCtx {
    /// The capability for sink `sink`, which may open the connections named
    /// in `grants` (and only those that are also configured in `pools`).
    pub fn new(
        sink: impl Into<String>,
        grants: Vec<String>,
        pools: SqlPools,
        caps: SqlCaps,
    ) -> Self {
        Self {
            sink: sink.into(),
            grants,
            pools,
            caps,
        }
    }

    /// Opens `name` if this sink is granted it and it is configured.
    pub fn open(&self, name: &str) -> Result<SqlConn, SqlError> {
        if !self.grants.iter().any(|g| g == name) {
            return Err(SqlError::Denied(format!(
                "sink '{}' is not granted sql connection '{name}'",
                self.sink
            )));
        }
        self.pools
            .get(name)
            .map(|c| c.with_caps(self.caps))
            .ok_or_else(|| {
                SqlError::Denied(format!(
                    "sink '{}': sql connection '{name}' is not configured on this host",
                    self.sink
                ))
            })
    }
}

/// Host side of the WIT `connection` resource.
#[derive(Debug)]
pub struct Connection {
    conn: SqlConn,
}

/// What the host functions of the capability borrow from the store.
pub struct SqlCtxView<'a> {
    /// The sink's grants and pools.
    pub ctx: &'a mut SqlCtx,
    /// The store's resource table (holds [`Connection`]s).
    pub table: &'a mut ResourceTable,
}

/// Implemented by store data that offers the `sql` capability.
pub trait SqlView: Send {
    /// Borrow the capability's state.
    fn sql(&mut self) -> SqlCtxView<'_>;
}

struct HasSql;

impl HasData for HasSql {
    type Data<'a> = SqlCtxView<'a>;
}

/// Adds `kubesink:sink/sql` to `linker`.
pub fn add_to_linker<T: SqlView + 'static>(linker: &mut Linker<T>) -> wasmtime::Result<()> {
    wit::add_to_linker::<T, HasSql>(linker, T::sql)
}

impl SqlCtxView<'_> {
    fn conn(&self, handle: &Resource<Connection>) -> wasmtime::Result<SqlConn> {
        Ok(self.table.get(handle)?.conn.clone())
    }
}

impl wit::Host for SqlCtxView<'_> {}

impl wit::HostConnection for SqlCtxView<'_> {
    async fn open(
        &mut self,
        name: String,
    ) -> wasmtime::Result<Result<Resource<Connection>, SqlError>> {
        match self.ctx.open(&name) {
            Ok(conn) => {
                tracing::debug!(target: "kubesink::sink", sink = %self.ctx.sink, connection = %name, url = %conn.shown_url(), "sql connection opened");
                Ok(Ok(self.table.push(Connection { conn })?))
            }
            Err(err) => {
                tracing::warn!(target: "kubesink::sink", sink = %self.ctx.sink, connection = %name, error = ?err, "sql connection denied");
                Ok(Err(err))
            }
        }
    }

    async fn dialect(&mut self, this: Resource<Connection>) -> wasmtime::Result<Dialect> {
        Ok(self.conn(&this)?.dialect())
    }

    async fn execute(
        &mut self,
        this: Resource<Connection>,
        statement: String,
        params: Vec<Value>,
    ) -> wasmtime::Result<Result<u64, SqlError>> {
        let conn = self.conn(&this)?;
        Ok(conn.execute(&statement, &params).await)
    }

    async fn query(
        &mut self,
        this: Resource<Connection>,
        statement: String,
        params: Vec<Value>,
    ) -> wasmtime::Result<Result<Vec<Vec<Value>>, SqlError>> {
        let conn = self.conn(&this)?;
        Ok(conn.query(&statement, &params).await)
    }

    async fn execute_batch(
        &mut self,
        this: Resource<Connection>,
        statements: Vec<Statement>,
    ) -> wasmtime::Result<Result<u64, SqlError>> {
        let conn = self.conn(&this)?;
        Ok(conn.execute_batch(&statements).await)
    }

    async fn drop(&mut self, this: Resource<Connection>) -> wasmtime::Result<()> {
        self.table.delete(this)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
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
        let pg = SqlPools::new(&[ConnectionConfig::new("pg", "postgres://u:pw@h/d")]);
        match pg {
            Err(e @ SqlConfigError::Unsupported { .. }) => {
                let msg = e.to_string();
                assert!(msg.contains("postgres://h/d"), "{msg}");
                assert!(!msg.contains("pw"), "{msg}");
            }
            other => panic!("expected Unsupported, got {other:?}"),
        }
    }

    #[test]
    fn denies_ungranted_and_unconfigured_names() {
        let pools =
            SqlPools::new(&[ConnectionConfig::new("main", "sqlite::memory:")]).expect("pools");
        let ctx = SqlCtx::new(
            "s1",
            vec!["main".into(), "ghost".into()],
            pools,
            SqlCaps::default(),
        );
        match ctx.open("other") {
            Err(SqlError::Denied(m)) => assert!(m.contains("s1") && m.contains("other"), "{m}"),
            other => panic!("expected denied, got {other:?}"),
        }
        match ctx.open("ghost") {
            Err(SqlError::Denied(m)) => assert!(m.contains("not configured"), "{m}"),
            other => panic!("expected denied, got {other:?}"),
        }
        assert_eq!(
            ctx.open("main").expect("granted").dialect(),
            Dialect::Sqlite
        );
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

    #[tokio::test]
    async fn sqlite_execute_query_batch_and_caps() {
        // An in-memory database lives in one connection: keep the pool to one.
        let pools = SqlPools::new(&[ConnectionConfig {
            max_connections: 1,
            ..ConnectionConfig::new("m", "sqlite::memory:")
        }])
        .expect("pools");
        let conn = pools.get("m").expect("configured").with_caps(SqlCaps {
            max_statement_bytes: 200,
            max_result_bytes: 100,
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
            .query("SELECT printf('%.200c', 'y')", &[])
            .await
            .expect_err("result cap");
        assert!(matches!(err, SqlError::TooLarge(_)), "{err:?}");
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
}
