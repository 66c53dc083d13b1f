//! PostgreSQL: the pool (session settings, the reset of a released
//! connection), the lease that cancels a statement outliving its call, and
//! values to and from the driver.
//!
//! Every session starts with `statement_timeout` = the sink's call timeout,
//! `TimeZone` UTC and `client_min_messages` `error`, given as startup
//! options: they are the session's defaults, which `RESET ALL` returns to.
//! A connection going back to its pool is reset to them: rollback, cursors
//! closed, `SET SESSION AUTHORIZATION DEFAULT`, `RESET ALL`, `UNLISTEN *`,
//! advisory locks released, temporary tables and sequences dropped (what
//! `DISCARD ALL` does except deallocating the driver's prepared
//! statements). A statement still running when its call's deadline passes
//! (or whose call was abandoned) is cancelled with `pg_cancel_backend` from
//! a separate connection, and its connection closed rather than reused.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};
use futures_util::TryStreamExt as _;
use sqlx::encode::IsNull;
use sqlx::pool::PoolConnection;
use sqlx::postgres::{
    PgArgumentBuffer, PgConnectOptions, PgConnection, PgDatabaseError, PgPool, PgPoolOptions,
    PgRow, PgTypeInfo, Postgres,
};
use sqlx::{Column, Connection as _, Row, TypeInfo, ValueRef};

use super::codec::{Meter, from_naive, param_ts, to_naive};
use super::pool::{DbOptions, PoolEntry};
use super::{ACQUIRE_TIMEOUT, Param, SqlCaps, SqlError, Value};

/// Longest wait for the separate connection that sends `pg_cancel_backend`.
const CANCEL_TIMEOUT: Duration = Duration::from_secs(5);

/// What a released connection is reset to (see the module docs).
const RESET: &str = "ROLLBACK; CLOSE ALL; SET SESSION AUTHORIZATION DEFAULT; RESET ALL; \
     UNLISTEN *; SELECT pg_advisory_unlock_all(); DISCARD TEMP; DISCARD SEQUENCES";

/// The options of a sink's sessions: the configured ones plus the startup
/// settings of the module docs.
fn session_options(options: &PgConnectOptions, caps: SqlCaps) -> PgConnectOptions {
    let ms = caps.statement_time.as_millis().max(1);
    options.clone().options([
        ("statement_timeout", format!("{ms}")),
        ("TimeZone", "UTC".to_owned()),
        ("client_min_messages", "error".to_owned()),
    ])
}

/// A sink's pool (connections made lazily).
pub(super) fn make_pool(options: &PgConnectOptions, max: u32, caps: SqlCaps) -> PgPool {
    PgPoolOptions::new()
        .max_connections(max)
        .acquire_timeout(ACQUIRE_TIMEOUT)
        .idle_timeout(None)
        .max_lifetime(None)
        // Each use asks for the backend's pid, which tests it.
        .test_before_acquire(false)
        .after_release(|conn, _| {
            Box::pin(async move {
                sqlx::raw_sql(RESET).execute(&mut *conn).await?;
                Ok(true)
            })
        })
        .connect_lazy_with(session_options(options, caps))
}

/// Serious trouble on the server or a statement cancelled (by
/// `statement_timeout` or by the host at the deadline) is worth retrying;
/// anything else PostgreSQL says is a rejection.
pub(super) fn is_transient(db: &dyn sqlx::error::DatabaseError) -> Option<bool> {
    let pg = db.try_downcast_ref::<PgDatabaseError>()?;
    let code = pg.code();
    // 08: connection exception; 40001 serialization failure, 40P01 deadlock;
    // 53: insufficient resources (too many connections, out of memory);
    // 55P03 lock not available; 57014 query cancelled, 57P01-57P05 shutdown,
    // crash, cannot connect now, idle session timeout.
    Some(
        code.starts_with("08")
            || code.starts_with("53")
            || code.starts_with("57")
            || matches!(code, "40001" | "40P01" | "55P03"),
    )
}

/// A PostgreSQL connection checked out for one operation, with its
/// backend's pid. Dropped while armed (the operation did not finish: its
/// deadline passed or its call was abandoned), it closes the connection
/// instead of returning it and cancels its statement with
/// `pg_cancel_backend`.
pub(super) struct PgLease {
    conn: Option<PoolConnection<Postgres>>,
    pid: i32,
    entry: Arc<PoolEntry>,
    pub(super) armed: bool,
}

impl PgLease {
    /// A connection of `pool` and its pid, armed. A pooled connection the
    /// server has closed fails its first statement: it is discarded and a
    /// fresh one tried, once.
    pub(super) async fn acquire(entry: &Arc<PoolEntry>, pool: &PgPool) -> Result<Self, SqlError> {
        let mut last = None;
        for _ in 0..2 {
            let mut conn = pool.acquire().await.map_err(|err| entry.map_err(err))?;
            match sqlx::query_scalar::<_, i32>("SELECT pg_backend_pid()")
                .fetch_one(&mut *conn)
                .await
            {
                Ok(pid) => {
                    return Ok(Self {
                        conn: Some(conn),
                        pid,
                        entry: entry.clone(),
                        armed: true,
                    });
                }
                Err(err) => {
                    conn.close_on_drop();
                    last = Some(err);
                }
            }
        }
        Err(entry.map_err(last.unwrap_or(sqlx::Error::PoolClosed)))
    }

    pub(super) fn conn(&mut self) -> &mut PgConnection {
        // Only `Drop` takes the connection out.
        self.conn.as_deref_mut().expect("leased connection")
    }
}

impl Drop for PgLease {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        if let Some(conn) = self.conn.as_mut() {
            conn.close_on_drop();
        }
        drop(self.conn.take());
        let DbOptions::Postgres(options) = &self.entry.spec.options else {
            return;
        };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let options = session_options(options, self.entry.caps);
        let pid = self.pid;
        let entry = self.entry.clone();
        runtime.spawn(async move {
            let cancel = async {
                let mut conn = PgConnection::connect_with(&options).await?;
                sqlx::query("SELECT pg_cancel_backend($1)")
                    .bind(pid)
                    .execute(&mut conn)
                    .await?;
                conn.close().await
            };
            match tokio::time::timeout(CANCEL_TIMEOUT, cancel).await {
                Ok(Ok(())) => tracing::debug!(target: "kubesink::host", sink = %entry.owner, connection = %entry.spec.name, pid, "statement past its call's deadline cancelled"),
                Ok(Err(e)) => tracing::warn!(target: "kubesink::host", sink = %entry.owner, connection = %entry.spec.name, pid, error = %entry.scrub(&e.to_string()), "cannot cancel a statement past its call's deadline; statement_timeout will end it"),
                Err(_) => tracing::warn!(target: "kubesink::host", sink = %entry.owner, connection = %entry.spec.name, pid, "pg_cancel_backend timed out; statement_timeout will end the statement"),
            }
        });
    }
}

/// A NULL parameter of no declared type: PostgreSQL infers it from where it
/// stands (a `text` NULL would not go into a `smallint` column).
struct UntypedNull;

impl sqlx::Type<Postgres> for UntypedNull {
    fn type_info() -> PgTypeInfo {
        PgTypeInfo::with_oid(sqlx::postgres::types::Oid(0))
    }
}

impl sqlx::Encode<'_, Postgres> for UntypedNull {
    fn encode_by_ref(&self, _: &mut PgArgumentBuffer) -> Result<IsNull, sqlx::error::BoxDynError> {
        Ok(IsNull::Yes)
    }
}

type PgQuery<'q> = sqlx::query::Query<'q, Postgres, sqlx::postgres::PgArguments>;

/// Binds `params` (`$1`, `$2`, ... in the statement) by reference.
pub(super) fn bind<'q>(
    mut q: PgQuery<'q>,
    params: &[Param<'q>],
    e: &PoolEntry,
) -> Result<PgQuery<'q>, SqlError> {
    for (i, v) in params.iter().enumerate() {
        q = match *v {
            Param::Null => q.bind(UntypedNull),
            Param::Int(n) => q.bind(n),
            Param::Uint(n) => q.bind(i64::try_from(n).map_err(|_| {
                e.rejected(format_args!(
                    "parameter {}: unsigned value {n} exceeds PostgreSQL's bigint range",
                    i + 1
                ))
            })?),
            Param::Float(f) => q.bind(f),
            Param::Text(s) => q.bind(s),
            Param::Bytes(b) => q.bind(b),
            Param::Timestamp(ts) => q.bind(to_naive(&param_ts(ts)).ok_or_else(|| {
                e.rejected(format_args!(
                    "parameter {}: timestamp {ts:?} out of range",
                    i + 1
                ))
            })?),
        };
    }
    Ok(q)
}

/// Decodes one row; `None` when the meter refused a cell.
pub(super) fn row(row: &PgRow, meter: &mut Meter) -> Result<Option<Vec<Value>>, sqlx::Error> {
    if !meter.charge_row(row.len()) {
        return Ok(None);
    }
    let mut cells = Vec::with_capacity(row.len());
    for (i, column) in row.columns().iter().enumerate() {
        if row.try_get_raw(i)?.is_null() {
            cells.push(Value::Null);
            continue;
        }
        let cell = match column.type_info().name() {
            "BOOL" => Value::Int(row.try_get::<bool, _>(i)?.into()),
            "INT2" => Value::Int(row.try_get::<i16, _>(i)?.into()),
            "INT4" => Value::Int(row.try_get::<i32, _>(i)?.into()),
            "INT8" => Value::Int(row.try_get::<i64, _>(i)?),
            "OID" => Value::Uint(row.try_get::<sqlx::postgres::types::Oid, _>(i)?.0.into()),
            "FLOAT4" => Value::Float(row.try_get::<f32, _>(i)?.into()),
            "FLOAT8" => Value::Float(row.try_get::<f64, _>(i)?),
            "TIMESTAMP" => from_naive(row.try_get::<NaiveDateTime, _>(i)?),
            "TIMESTAMPTZ" => from_naive(row.try_get::<DateTime<Utc>, _>(i)?.naive_utc()),
            "DATE" => from_naive(
                row.try_get::<NaiveDate, _>(i)?
                    .and_hms_opt(0, 0, 0)
                    .unwrap_or_default(),
            ),
            "BYTEA" => {
                let bytes = row.try_get_unchecked::<&[u8], _>(i)?;
                if !meter.charge(bytes.len()) {
                    return Ok(None);
                }
                Value::Bytes(bytes.to_vec())
            }
            "TEXT" | "VARCHAR" | "BPCHAR" | "NAME" | "CHAR" | "UNKNOWN" | "CITEXT" => {
                let text = row.try_get_unchecked::<&str, _>(i)?;
                if !meter.charge(text.len()) {
                    return Ok(None);
                }
                Value::Text(text.to_owned())
            }
            other => {
                return Err(sqlx::Error::ColumnDecode {
                    index: format!("{} (`{}`)", i + 1, column.name()),
                    source: format!(
                        "PostgreSQL type {other} is not one the host converts: cast the column \
                         (e.g. `::text`, `::bigint`, `::float8`)"
                    )
                    .into(),
                });
            }
        };
        cells.push(cell);
    }
    Ok(Some(cells))
}

/// Reads every row of `q` on `conn`, sized by `meter` as they come;
/// `Ok(false)` when the meter refused one (the rows so far are in `rows`).
pub(super) async fn fetch_rows(
    q: PgQuery<'_>,
    conn: &mut PgConnection,
    meter: &mut Meter,
    rows: &mut Vec<Vec<Value>>,
) -> Result<bool, sqlx::Error> {
    let mut stream = q.fetch(conn);
    while let Some(r) = stream.try_next().await? {
        match row(&r, meter)? {
            Some(cells) => rows.push(cells),
            None => return Ok(false),
        }
    }
    Ok(true)
}
