//! The handle on one pooled connection ([`SqlConn`]) and its statements:
//! the statement and result caps, the call's deadline, and the MySQL lease
//! that stops a statement outliving its call with `KILL QUERY` (PostgreSQL's,
//! with `pg_cancel_backend`, is in `postgres.rs`).

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::TryStreamExt;
use sqlx::mysql::{MySql, MySqlConnection, MySqlPool};
use sqlx::pool::PoolConnection;
use sqlx::sqlite::{Sqlite, SqlitePool};
use sqlx::{AssertSqlSafe, Connection as _};

use super::codec::{
    Meter, bind_mysql, bind_sqlite, mysql_row, param, param_size, params, sqlite_row,
};
use super::pool::{DbOptions, DbPool, PoolEntry};
use super::postgres::{self, PgLease};
use super::{Dialect, Engine, PackedStatement, Param, SqlCaps, SqlError, Statement, Value};
use crate::budget::HostBudget;

/// How many SQLite virtual-machine steps run between two checks of the
/// deadline (a check is one clock read).
const PROGRESS_STEPS: i32 = 1000;

/// Longest wait for the separate connection that sends `KILL QUERY`.
const KILL_TIMEOUT: Duration = Duration::from_secs(5);

/// A MySQL connection checked out for one operation, with its server-side
/// id. Dropped while armed (the operation did not finish: its deadline
/// passed or its call was abandoned), it closes the connection instead of
/// returning it and stops its statement with `KILL QUERY`.
struct MyLease {
    conn: Option<PoolConnection<MySql>>,
    id: u64,
    entry: Arc<PoolEntry>,
    armed: bool,
}

impl MyLease {
    fn conn(&mut self) -> &mut MySqlConnection {
        // Only `Drop` takes the connection out.
        self.conn.as_deref_mut().expect("leased connection")
    }
}

impl Drop for MyLease {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        if let Some(conn) = self.conn.as_mut() {
            conn.close_on_drop();
        }
        drop(self.conn.take());
        let DbOptions::MySql(options) = &self.entry.spec.options else {
            return;
        };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let options = options.clone();
        let id = self.id;
        let entry = self.entry.clone();
        runtime.spawn(async move {
            let kill = async {
                let mut conn = MySqlConnection::connect_with(&options).await?;
                sqlx::raw_sql(AssertSqlSafe(format!("KILL QUERY {id}")))
                    .execute(&mut conn)
                    .await?;
                conn.close().await
            };
            match tokio::time::timeout(KILL_TIMEOUT, kill).await {
                Ok(Ok(())) => tracing::debug!(target: "kubesink::host", sink = %entry.owner, connection = %entry.spec.name, id, "statement past its call's deadline killed"),
                Ok(Err(e)) => tracing::warn!(target: "kubesink::host", sink = %entry.owner, connection = %entry.spec.name, id, error = %entry.scrub(&e.to_string()), "cannot kill a statement past its call's deadline; the session time limit will end it"),
                Err(_) => tracing::warn!(target: "kubesink::host", sink = %entry.owner, connection = %entry.spec.name, id, "KILL QUERY timed out; the session time limit will end the statement"),
            }
        });
    }
}

/// A handle on one pool, with the caps its user is held to and the
/// deadline of the current call. Cheap to clone. This is what the guest's
/// `connection` resource wraps, and what native code (benchmarks, tests)
/// uses directly.
#[derive(Clone)]
pub struct SqlConn {
    pub(super) entry: Arc<PoolEntry>,
    pub(super) caps: SqlCaps,
    pub(super) deadline: Option<Instant>,
    pub(super) budget: Option<HostBudget>,
}

impl fmt::Debug for SqlConn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqlConn")
            .field("name", &self.entry.spec.name)
            .field("sink", &self.entry.owner)
            .field("url", &self.entry.spec.shown)
            .field("caps", &self.caps)
            .field("deadline", &self.deadline)
            .finish()
    }
}

impl SqlConn {
    /// The same connection held to other size caps (the pool keeps the
    /// statement time and cell size it was made with).
    #[must_use]
    #[cfg(test)]
    pub(crate) fn with_caps(mut self, caps: SqlCaps) -> Self {
        self.caps = caps;
        self
    }

    /// The same connection, its statements stopped at `deadline`.
    #[must_use]
    pub(crate) fn with_deadline(mut self, deadline: Option<Instant>) -> Self {
        self.deadline = deadline;
        self
    }

    /// The same connection, result rows charged to `budget`.
    #[must_use]
    pub(crate) fn with_budget(mut self, budget: HostBudget) -> Self {
        self.budget = Some(budget);
        self
    }

    /// The configured name.
    pub fn name(&self) -> &str {
        &self.entry.spec.name
    }

    /// The URL without credentials.
    pub(crate) fn shown_url(&self) -> &str {
        &self.entry.spec.shown
    }

    /// Which database this is.
    pub fn engine(&self) -> Engine {
        match self.entry.pool {
            DbPool::MySql(_) => Engine::Mysql,
            DbPool::Postgres(_) => Engine::Postgres,
            DbPool::Sqlite(_) => Engine::Sqlite,
        }
    }

    /// Which database this is, as WIT 0.2.0's `dialect` names it: `None`
    /// for PostgreSQL, which it cannot name.
    pub fn dialect(&self) -> Option<Dialect> {
        match self.engine() {
            Engine::Mysql => Some(Dialect::Mysql),
            Engine::Sqlite => Some(Dialect::Sqlite),
            Engine::Postgres => None,
        }
    }

    /// A PostgreSQL connection and its backend pid, armed (see [`PgLease`]).
    async fn pg_lease(&self, pool: &sqlx::postgres::PgPool) -> Result<PgLease, SqlError> {
        if self.deadline.is_some_and(|d| Instant::now() >= d) {
            return Err(self.entry.deadline_passed());
        }
        PgLease::acquire(&self.entry, pool).await
    }

    /// Whether an operation that ended with `r` must leave its lease armed:
    /// it failed at or past the deadline.
    fn past_deadline<T>(&self, r: &Result<T, SqlError>) -> bool {
        r.is_err() && self.deadline.is_some_and(|d| Instant::now() >= d)
    }

    fn check_statement(&self, sql: &str, params: &[Param]) -> Result<(), SqlError> {
        let size = sql.len() + params.iter().map(param_size).sum::<usize>();
        if size > self.caps.max_statement_bytes {
            return Err(self.entry.too_large(format_args!(
                "statement of {size} bytes (text and parameters) exceeds the cap of {} bytes",
                self.caps.max_statement_bytes
            )));
        }
        Ok(())
    }

    /// A MySQL connection and its id, armed (see [`MyLease`]).
    async fn mysql_lease(&self, pool: &MySqlPool) -> Result<MyLease, SqlError> {
        let e = &self.entry;
        if self.deadline.is_some_and(|d| Instant::now() >= d) {
            return Err(e.deadline_passed());
        }
        let mut last = None;
        // A pooled connection the server has closed fails its first
        // statement: discard it and try a fresh one, once.
        for _ in 0..2 {
            let mut conn = pool.acquire().await.map_err(|err| e.map_err(err))?;
            match sqlx::query_scalar::<_, u64>("SELECT CONNECTION_ID()")
                .fetch_one(&mut *conn)
                .await
            {
                Ok(id) => {
                    return Ok(MyLease {
                        conn: Some(conn),
                        id,
                        entry: e.clone(),
                        armed: true,
                    });
                }
                Err(err) => {
                    conn.close_on_drop();
                    last = Some(err);
                }
            }
        }
        Err(e.map_err(last.unwrap_or(sqlx::Error::PoolClosed)))
    }

    /// A SQLite connection whose statements stop at the deadline.
    async fn sqlite_conn(&self, pool: &SqlitePool) -> Result<PoolConnection<Sqlite>, SqlError> {
        let e = &self.entry;
        if self.deadline.is_some_and(|d| Instant::now() >= d) {
            return Err(e.deadline_passed());
        }
        let mut conn = pool.acquire().await.map_err(|err| e.map_err(err))?;
        {
            let mut handle = conn.lock_handle().await.map_err(|err| e.map_err(err))?;
            match self.deadline {
                Some(deadline) => {
                    handle.set_progress_handler(PROGRESS_STEPS, move || Instant::now() < deadline);
                }
                None => handle.remove_progress_handler(),
            }
        }
        Ok(conn)
    }

    /// Runs `op` on a leased MySQL connection until the deadline; past it,
    /// the lease is dropped armed (its statement killed).
    async fn until_deadline<T>(
        &self,
        op: impl Future<Output = Result<T, SqlError>>,
    ) -> Result<T, SqlError> {
        match self.deadline {
            Some(deadline) => tokio::time::timeout_at(deadline.into(), op)
                .await
                .unwrap_or_else(|_| Err(self.entry.deadline_passed())),
            None => op.await,
        }
    }

    /// Runs one statement with `?` placeholders; returns the rows affected.
    pub async fn execute(&self, sql: &str, values: &[Value]) -> Result<u64, SqlError> {
        let params = &params(values);
        self.check_statement(sql, params)?;
        let e = &self.entry;
        match &e.pool {
            DbPool::MySql(pool) => {
                let q = bind_mysql(sqlx::query(AssertSqlSafe(sql)), params, e)?;
                let mut lease = self.mysql_lease(pool).await?;
                let r = self
                    .until_deadline(async {
                        q.execute(lease.conn())
                            .await
                            .map(|r| r.rows_affected())
                            .map_err(|err| e.map_err(err))
                    })
                    .await;
                lease.armed = self.past_deadline(&r);
                r
            }
            DbPool::Postgres(pool) => {
                let q = postgres::bind(sqlx::query(AssertSqlSafe(sql)), params, e)?;
                let mut lease = self.pg_lease(pool).await?;
                let r = self
                    .until_deadline(async {
                        q.execute(lease.conn())
                            .await
                            .map(|r| r.rows_affected())
                            .map_err(|err| e.map_err(err))
                    })
                    .await;
                lease.armed = self.past_deadline(&r);
                r
            }
            DbPool::Sqlite(pool) => {
                let q = bind_sqlite(sqlx::query(AssertSqlSafe(sql)), params, e)?;
                let mut conn = self.sqlite_conn(pool).await?;
                q.execute(&mut *conn)
                    .await
                    .map(|r| r.rows_affected())
                    .map_err(|err| e.map_err(err))
            }
        }
    }

    /// Runs one query; returns its rows, each a list of cells in column
    /// order, converted by column type. Fails with `too-large` as soon as
    /// the rows read exceed the result cap (or the sink's host memory
    /// budget): each cell is sized before its payload is copied.
    pub async fn query(&self, sql: &str, values: &[Value]) -> Result<Vec<Vec<Value>>, SqlError> {
        let params = &params(values);
        self.check_statement(sql, params)?;
        let e = &self.entry;
        let mut meter = Meter::new(self.caps.max_result_bytes, self.budget.clone());
        let mut rows = Vec::new();
        let over = |meter: &Meter, rows: &Vec<Vec<Value>>| {
            e.too_large(format_args!(
                "{} (after {} rows, {} bytes)",
                meter.refused.as_deref().unwrap_or("query result too large"),
                rows.len(),
                meter.used()
            ))
        };
        match &e.pool {
            DbPool::MySql(pool) => {
                let q = bind_mysql(sqlx::query(AssertSqlSafe(sql)), params, e)?;
                let mut lease = self.mysql_lease(pool).await?;
                let r = self
                    .until_deadline(async {
                        let mut stream = q.fetch(lease.conn());
                        while let Some(row) =
                            stream.try_next().await.map_err(|err| e.map_err(err))?
                        {
                            match mysql_row(&row, &mut meter).map_err(|err| e.map_err(err))? {
                                Some(cells) => rows.push(cells),
                                None => return Err(over(&meter, &rows)),
                            }
                        }
                        Ok(())
                    })
                    .await;
                // A result abandoned half-read leaves the connection busy:
                // close it (and kill what still runs) rather than reuse it.
                lease.armed = matches!(r, Err(SqlError::TooLarge(_))) || self.past_deadline(&r);
                r?;
            }
            DbPool::Postgres(pool) => {
                let q = postgres::bind(sqlx::query(AssertSqlSafe(sql)), params, e)?;
                let mut lease = self.pg_lease(pool).await?;
                let r = self
                    .until_deadline(async {
                        match postgres::fetch_rows(q, lease.conn(), &mut meter, &mut rows).await {
                            Ok(true) => Ok(()),
                            Ok(false) => Err(over(&meter, &rows)),
                            Err(err) => Err(e.map_err(err)),
                        }
                    })
                    .await;
                lease.armed = matches!(r, Err(SqlError::TooLarge(_))) || self.past_deadline(&r);
                r?;
            }
            DbPool::Sqlite(pool) => {
                let q = bind_sqlite(sqlx::query(AssertSqlSafe(sql)), params, e)?;
                let mut conn = self.sqlite_conn(pool).await?;
                let mut stream = q.fetch(&mut *conn);
                while let Some(row) = stream.try_next().await.map_err(|err| e.map_err(err))? {
                    match sqlite_row(&row, &mut meter).map_err(|err| e.map_err(err))? {
                        Some(cells) => rows.push(cells),
                        None => return Err(over(&meter, &rows)),
                    }
                }
            }
        }
        Ok(rows)
    }

    /// Runs several statements in one transaction: all apply or none.
    /// Returns the total rows affected.
    pub async fn execute_batch(&self, statements: &[Statement]) -> Result<u64, SqlError> {
        let statements: Vec<PackedStatement> = statements
            .iter()
            .map(|s| PackedStatement {
                sql: &s.sql,
                params: s.params.iter().map(param).collect(),
            })
            .collect();
        self.execute_batch_borrowed(&statements).await
    }

    /// [`SqlConn::execute_batch`] for packed statements
    /// (`execute-batch-packed`): the buffer is read once, each text and
    /// bytes parameter bound as a slice of it. A buffer that is not packed
    /// statements is `rejected`, naming where reading stopped.
    pub async fn execute_batch_packed(&self, packed: &[u8]) -> Result<u64, SqlError> {
        let statements = kubesink_packed::statements::decode_statements(packed).map_err(|err| {
            self.entry
                .rejected(format_args!("execute-batch-packed: {err}"))
        })?;
        self.execute_batch_borrowed(&statements).await
    }

    /// [`SqlConn::execute_batch`] for statements whose parameters borrow
    /// their text and bytes from the caller.
    pub async fn execute_batch_borrowed(
        &self,
        statements: &[PackedStatement<'_>],
    ) -> Result<u64, SqlError> {
        for s in statements {
            self.check_statement(s.sql, &s.params)?;
        }
        let e = &self.entry;
        let map = |err| e.map_err(err);
        let mut affected = 0u64;
        match &e.pool {
            DbPool::MySql(pool) => {
                let mut lease = self.mysql_lease(pool).await?;
                let r = self
                    .until_deadline(async {
                        let mut tx = lease.conn().begin().await.map_err(map)?;
                        for s in statements {
                            let q = bind_mysql(sqlx::query(AssertSqlSafe(s.sql)), &s.params, e)?;
                            affected += q.execute(&mut *tx).await.map_err(map)?.rows_affected();
                        }
                        tx.commit().await.map_err(map)
                    })
                    .await;
                lease.armed = self.past_deadline(&r);
                r?;
            }
            DbPool::Postgres(pool) => {
                let mut lease = self.pg_lease(pool).await?;
                let r = self
                    .until_deadline(async {
                        let mut tx = lease.conn().begin().await.map_err(map)?;
                        for s in statements {
                            let q =
                                postgres::bind(sqlx::query(AssertSqlSafe(s.sql)), &s.params, e)?;
                            affected += q.execute(&mut *tx).await.map_err(map)?.rows_affected();
                        }
                        tx.commit().await.map_err(map)
                    })
                    .await;
                lease.armed = self.past_deadline(&r);
                r?;
            }
            DbPool::Sqlite(pool) => {
                let mut conn = self.sqlite_conn(pool).await?;
                let mut tx = conn.begin().await.map_err(map)?;
                for s in statements {
                    let q = bind_sqlite(sqlx::query(AssertSqlSafe(s.sql)), &s.params, e)?;
                    affected += q.execute(&mut *tx).await.map_err(map)?.rows_affected();
                }
                tx.commit().await.map_err(map)?;
            }
        }
        Ok(affected)
    }
}
