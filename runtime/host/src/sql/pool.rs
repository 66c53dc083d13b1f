//! The named pools ([`SqlPools`]) and the handle on one ([`SqlConn`]):
//! acquiring connections, caps, and driver errors mapped to [`SqlError`].

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use futures_util::TryStreamExt;
use sqlx::AssertSqlSafe;
use sqlx::mysql::{MySqlConnectOptions, MySqlDatabaseError, MySqlPool, MySqlPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqlitePool, SqlitePoolOptions};

use super::codec::{bind_mysql, bind_sqlite, mysql_row, sqlite_row, value_size};
use super::redact::{redact_url, scrub, url_secrets};
use super::{
    ACQUIRE_TIMEOUT, ConnectionConfig, Dialect, SqlCaps, SqlConfigError, SqlError, Statement, Value,
};

enum DbPool {
    MySql(MySqlPool),
    Sqlite(SqlitePool),
}

pub(super) struct PoolEntry {
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

    pub(super) fn rejected(&self, what: impl fmt::Display) -> SqlError {
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
