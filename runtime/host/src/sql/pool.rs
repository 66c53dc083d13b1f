//! The named pools ([`SqlPools`]), one per sink and connection name:
//! parsing the configured connections, making the pools (session settings,
//! the SQLite guard, the reset of a released connection), and driver
//! errors mapped to [`SqlError`]. Statements on a pooled connection are in
//! `conn.rs`.
//!
//! Each sink gets its own pool per granted connection name (keyed by sink
//! and name), so no session state, lock or pool slot of one sink reaches
//! another; a connection is also reset when it goes back to its pool
//! (rollback, `UNLOCK TABLES`, named locks released, autocommit and the
//! database restored on MySQL/MariaDB; rollback, `RESET ALL`, advisory
//! locks released and temporary tables dropped on PostgreSQL (`postgres.rs`);
//! an open transaction rolled back on SQLite).
//!
//! A statement never outlives its call: SQLite connections run a progress
//! handler that interrupts the statement once the call's deadline passes;
//! MySQL/MariaDB sessions carry a statement time limit (the sink's call
//! timeout: `max_statement_time`, or `max_execution_time` on MySQL), and a
//! statement still running when its call's deadline passes (or whose call
//! was abandoned) is stopped with `KILL QUERY` from a separate connection
//! and its connection closed rather than reused. PostgreSQL sessions carry
//! `statement_timeout`, and `pg_cancel_backend` stops such a statement.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sqlx::AssertSqlSafe;
use sqlx::mysql::{
    MySqlConnectOptions, MySqlConnection, MySqlDatabaseError, MySqlPool, MySqlPoolOptions,
};
use sqlx::postgres::{PgConnectOptions, PgPool};
use sqlx::sqlite::{SqliteConnectOptions, SqlitePool, SqlitePoolOptions};

use super::conn::SqlConn;
use super::redact::{redact_url, scrub, url_secrets};
use super::{ACQUIRE_TIMEOUT, ConnectionConfig, SqlCaps, SqlConfigError, SqlError};
use super::{postgres, sqlite_guard};

/// Rows SQLite's worker thread may read ahead of the host; each is fully
/// materialized by the driver, so few.
const SQLITE_ROW_BUFFER: usize = 2;

/// One configured connection, parsed; pools are made from it per sink.
pub(super) struct ConnSpec {
    pub(super) name: String,
    /// The URL without credentials, for messages.
    pub(super) shown: String,
    /// Strings that must never be shown (user information of the URL).
    pub(super) secrets: Vec<String>,
    pub(super) max_connections: u32,
    pub(super) options: DbOptions,
}

pub(super) enum DbOptions {
    MySql(MySqlConnectOptions),
    Postgres(PgConnectOptions),
    Sqlite(SqliteConnectOptions),
}

pub(super) enum DbPool {
    MySql(MySqlPool),
    Postgres(PgPool),
    Sqlite(SqlitePool),
}

/// One pool: a configured connection as used by one sink (or by the host
/// itself, `owner` empty).
pub(super) struct PoolEntry {
    pub(super) spec: Arc<ConnSpec>,
    pub(super) owner: String,
    /// The caps the pool was tuned to (statement time, cell size).
    pub(super) caps: SqlCaps,
    pub(super) pool: DbPool,
}

impl PoolEntry {
    pub(super) fn scrub(&self, message: &str) -> String {
        scrub(message, &self.spec.secrets)
    }

    /// `sink 'S': sql connection 'N' (URL): what`, scrubbed.
    pub(super) fn message(&self, what: impl fmt::Display) -> String {
        let sink = if self.owner.is_empty() {
            String::new()
        } else {
            format!("sink '{}': ", self.owner)
        };
        self.scrub(&format!(
            "{sink}sql connection '{}' ({}): {what}",
            self.spec.name, self.spec.shown
        ))
    }

    pub(super) fn unavailable(&self, what: impl fmt::Display) -> SqlError {
        SqlError::Unavailable(self.message(what))
    }

    pub(super) fn rejected(&self, what: impl fmt::Display) -> SqlError {
        SqlError::Rejected(self.message(what))
    }

    pub(super) fn too_large(&self, what: impl fmt::Display) -> SqlError {
        SqlError::TooLarge(self.message(what))
    }

    pub(super) fn denied(&self, what: impl fmt::Display) -> SqlError {
        SqlError::Denied(self.message(what))
    }

    pub(super) fn deadline_passed(&self) -> SqlError {
        self.unavailable("statement interrupted: the call's deadline passed")
    }

    /// Maps a driver error to the WIT error cases.
    pub(super) fn map_err(&self, err: sqlx::Error) -> SqlError {
        match &err {
            sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::Protocol(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::WorkerCrashed => self.unavailable(&err),
            sqlx::Error::Database(db) => match sqlite_code(db.as_ref()) {
                // Refused by the authorizer (SQLITE_AUTH, or "not authorized
                // to use function") or by SQLITE_LIMIT_ATTACHED (which is
                // what stops VACUUM INTO): see sqlite_guard.
                Some(code) if code == 23 || refused_by_guard(db.message()) => {
                    self.denied(format_args!(
                        "{err}: refused by the host (ATTACH, DETACH, VACUUM INTO, virtual tables, \
                     load_extension and PRAGMAs that change files or settings are not allowed)"
                    ))
                }
                // SQLITE_TOOBIG: a value past SQLITE_LIMIT_LENGTH.
                Some(18) => self.too_large(format_args!(
                    "{err}: a value larger than the result cap of {} bytes (limits.max_result)",
                    self.caps.max_result_bytes
                )),
                // SQLITE_INTERRUPT: the progress handler saw the deadline.
                Some(9) => self.deadline_passed(),
                _ if is_transient_db_error(db.as_ref()) => self.unavailable(&err),
                _ => self.rejected(&err),
            },
            _ => self.rejected(&err),
        }
    }
}

/// True for the messages SQLite gives when `sqlite_guard` refused a
/// statement without `SQLITE_AUTH`.
fn refused_by_guard(message: &str) -> bool {
    message.starts_with("not authorized") || message.starts_with("too many attached databases")
}

/// The primary SQLite result code of a database error, if it is SQLite's.
fn sqlite_code(db: &dyn sqlx::error::DatabaseError) -> Option<i32> {
    db.try_downcast_ref::<sqlx::sqlite::SqliteError>()?;
    db.code()
        .and_then(|c| c.parse::<i32>().ok())
        .map(|c| c & 0xff)
}

/// Deadlocks, lock-wait timeouts and server-side connection trouble are
/// worth retrying; anything else the database says is a rejection.
fn is_transient_db_error(db: &dyn sqlx::error::DatabaseError) -> bool {
    if let Some(transient) = postgres::is_transient(db) {
        return transient;
    }
    if let Some(my) = db.try_downcast_ref::<MySqlDatabaseError>() {
        // 1205 lock wait timeout, 1213 deadlock, 1040 too many connections,
        // 1053 server shutdown, 1927 connection killed, 2006/2013 gone away,
        // 1969/3024 statement time limit reached.
        return matches!(
            my.number(),
            1205 | 1213 | 1040 | 1053 | 1927 | 2006 | 2013 | 1969 | 3024
        );
    }
    // SQLite: primary result codes 5 (BUSY) and 6 (LOCKED) in the low byte of
    // the extended code.
    if let Some(code) = db.code().and_then(|c| c.parse::<i32>().ok()) {
        return matches!(code & 0xff, 5 | 6);
    }
    false
}

type PoolKey = (String, String);

/// The configured connections and the pools made from them, one per sink
/// and connection name (see the module docs). Cheap to clone.
#[derive(Clone, Default)]
pub struct SqlPools {
    specs: Arc<BTreeMap<String, Arc<ConnSpec>>>,
    pools: Arc<Mutex<HashMap<PoolKey, Arc<PoolEntry>>>>,
}

impl fmt::Debug for SqlPools {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let shown: BTreeMap<&str, &str> = self
            .specs
            .iter()
            .map(|(k, v)| (k.as_str(), v.shown.as_str()))
            .collect();
        f.debug_struct("SqlPools")
            .field("connections", &shown)
            .finish()
    }
}

impl SqlPools {
    /// Checks every configuration. No pool and no connection is made here:
    /// pools are made on first use, per sink. Needs a Tokio runtime when
    /// the pools are used (pools have no idle reaper task).
    pub fn new(configs: &[ConnectionConfig]) -> Result<Self, SqlConfigError> {
        let mut specs = BTreeMap::new();
        for config in configs {
            if specs.contains_key(&config.name) {
                return Err(SqlConfigError::Duplicate {
                    name: config.name.clone(),
                });
            }
            specs.insert(config.name.clone(), Arc::new(parse(config)?));
        }
        Ok(Self {
            specs: Arc::new(specs),
            pools: Arc::default(),
        })
    }

    /// The host's own pool of the connection `name` (not any sink's), with
    /// default caps: for native use (tools, tests, benchmarks).
    pub fn get(&self, name: &str) -> Option<SqlConn> {
        self.pool_for("", name, SqlCaps::default())
    }

    /// Sink `sink`'s pool of the connection `name`, held to `caps`. The
    /// first call makes the pool; later calls (other instances or workers
    /// of the same sink) share it. A change of caps makes a new pool.
    pub(crate) fn for_sink(&self, sink: &str, name: &str, caps: SqlCaps) -> Option<SqlConn> {
        self.pool_for(sink, name, caps)
    }

    fn pool_for(&self, owner: &str, name: &str, caps: SqlCaps) -> Option<SqlConn> {
        let spec = self.specs.get(name)?;
        let key = (owner.to_owned(), name.to_owned());
        let mut pools = self.pools.lock().unwrap_or_else(|e| e.into_inner());
        let entry = match pools.get(&key) {
            Some(e) if e.caps == caps => e.clone(),
            _ => {
                let e = Arc::new(make_pool(spec.clone(), owner, caps));
                pools.insert(key, e.clone());
                e
            }
        };
        Some(SqlConn {
            entry,
            caps,
            deadline: None,
            budget: None,
        })
    }

    /// Names of the configured connections, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.specs.keys().map(String::as_str)
    }

    /// Closes every pool (waits for checked-out connections to return).
    pub async fn close(&self) {
        let entries: Vec<Arc<PoolEntry>> = self
            .pools
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect();
        for entry in entries {
            match &entry.pool {
                DbPool::MySql(p) => p.close().await,
                DbPool::Postgres(p) => p.close().await,
                DbPool::Sqlite(p) => p.close().await,
            }
        }
    }
}

fn parse(config: &ConnectionConfig) -> Result<ConnSpec, SqlConfigError> {
    let raw = config.url.expose();
    let shown = redact_url(raw);
    let secrets = url_secrets(raw);
    let invalid = |err: sqlx::Error| SqlConfigError::InvalidUrl {
        name: config.name.clone(),
        shown: shown.clone(),
        reason: scrub(&err.to_string(), &secrets),
    };
    let options = if raw.starts_with("mysql:") || raw.starts_with("mariadb:") {
        let url = raw
            .strip_prefix("mariadb:")
            .map_or_else(|| raw.to_owned(), |rest| format!("mysql:{rest}"));
        DbOptions::MySql(MySqlConnectOptions::from_str(&url).map_err(invalid)?)
    } else if raw.starts_with("postgres:") || raw.starts_with("postgresql:") {
        DbOptions::Postgres(PgConnectOptions::from_str(raw).map_err(invalid)?)
    } else if raw.starts_with("sqlite:") {
        DbOptions::Sqlite(
            SqliteConnectOptions::from_str(raw)
                .map_err(invalid)?
                .row_buffer_size(SQLITE_ROW_BUFFER),
        )
    } else {
        return Err(SqlConfigError::Unsupported {
            name: config.name.clone(),
            shown,
        });
    };
    Ok(ConnSpec {
        name: config.name.clone(),
        shown,
        secrets,
        max_connections: config.max_connections.max(1),
        options,
    })
}

/// Which statement time limit the server knows: unknown yet, MariaDB's
/// `max_statement_time` (seconds), MySQL's `max_execution_time` (ms).
const LIMIT_UNKNOWN: u8 = 0;
const LIMIT_MARIADB: u8 = 1;
const LIMIT_MYSQL: u8 = 2;

/// Sets the session's statement time limit to `limit` (rounded up to a
/// millisecond), learning once per pool which variable the server has.
async fn set_statement_time(
    conn: &mut MySqlConnection,
    limit: Duration,
    kind: &AtomicU8,
) -> Result<(), sqlx::Error> {
    let ms = limit.as_millis().max(1);
    let mariadb = format!("SET SESSION max_statement_time = {:.3}", ms as f64 / 1000.0);
    let mysql = format!("SET SESSION max_execution_time = {ms}");
    if kind.load(Ordering::Relaxed) != LIMIT_MYSQL {
        match sqlx::raw_sql(AssertSqlSafe(mariadb))
            .execute(&mut *conn)
            .await
        {
            Ok(_) => {
                kind.store(LIMIT_MARIADB, Ordering::Relaxed);
                return Ok(());
            }
            Err(e) if kind.load(Ordering::Relaxed) == LIMIT_MARIADB => return Err(e),
            Err(_) => {}
        }
    }
    sqlx::raw_sql(AssertSqlSafe(mysql))
        .execute(&mut *conn)
        .await?;
    kind.store(LIMIT_MYSQL, Ordering::Relaxed);
    Ok(())
}

fn make_pool(spec: Arc<ConnSpec>, owner: &str, caps: SqlCaps) -> PoolEntry {
    let max = spec.max_connections;
    let pool = match &spec.options {
        DbOptions::MySql(options) => {
            let limit = caps.statement_time;
            let kind = Arc::new(AtomicU8::new(LIMIT_UNKNOWN));
            let on_connect = kind.clone();
            // What a released connection is reset to: no transaction, no
            // table or named locks, autocommit, the configured database.
            let mut reset =
                String::from("ROLLBACK; UNLOCK TABLES; DO RELEASE_ALL_LOCKS(); SET autocommit = 1");
            if let Some(db) = options.get_database() {
                reset.push_str(&format!("; USE `{}`", db.replace('`', "``")));
            }
            DbPool::MySql(
                MySqlPoolOptions::new()
                    .max_connections(max)
                    .acquire_timeout(ACQUIRE_TIMEOUT)
                    .idle_timeout(None)
                    .max_lifetime(None)
                    // Each use asks for the connection id, which tests it.
                    .test_before_acquire(false)
                    .after_connect(move |conn, _| {
                        let kind = on_connect.clone();
                        Box::pin(async move { set_statement_time(conn, limit, &kind).await })
                    })
                    .after_release(move |conn, _| {
                        let kind = kind.clone();
                        let reset = reset.clone();
                        Box::pin(async move {
                            // One round trip once the server's kind is known.
                            let ms = limit.as_millis().max(1);
                            let sql = match kind.load(Ordering::Relaxed) {
                                LIMIT_MARIADB => format!(
                                    "{reset}; SET SESSION max_statement_time = {:.3}",
                                    ms as f64 / 1000.0
                                ),
                                LIMIT_MYSQL => {
                                    format!("{reset}; SET SESSION max_execution_time = {ms}")
                                }
                                _ => reset,
                            };
                            sqlx::raw_sql(AssertSqlSafe(sql))
                                .execute(&mut *conn)
                                .await?;
                            if kind.load(Ordering::Relaxed) == LIMIT_UNKNOWN {
                                set_statement_time(conn, limit, &kind).await?;
                            }
                            Ok(true)
                        })
                    })
                    .connect_lazy_with(options.clone()),
            )
        }
        DbOptions::Postgres(options) => DbPool::Postgres(postgres::make_pool(options, max, caps)),
        DbOptions::Sqlite(options) => {
            let max_length = caps.max_result_bytes;
            DbPool::Sqlite(
                SqlitePoolOptions::new()
                    .max_connections(max)
                    .acquire_timeout(ACQUIRE_TIMEOUT)
                    .idle_timeout(None)
                    .max_lifetime(None)
                    .after_connect(move |conn, _| {
                        Box::pin(async move {
                            let mut handle = conn.lock_handle().await?;
                            sqlite_guard::install(handle.as_raw_handle(), max_length)
                                .map_err(|e| sqlx::Error::Configuration(e.into()))
                        })
                    })
                    .after_release(|conn, _| {
                        Box::pin(async move {
                            let open = {
                                let mut handle = conn.lock_handle().await?;
                                handle.remove_progress_handler();
                                sqlite_guard::in_transaction(handle.as_raw_handle())
                            };
                            if open {
                                sqlx::raw_sql("ROLLBACK").execute(&mut *conn).await?;
                            }
                            Ok(true)
                        })
                    })
                    .connect_lazy_with(options.clone()),
            )
        }
    };
    PoolEntry {
        spec,
        owner: owner.to_owned(),
        caps,
        pool,
    }
}
