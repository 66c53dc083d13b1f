//! Values between the WIT [`Value`] and the drivers: parameter binding,
//! row decoding by column type, timestamps, and the sizes the caps count.

use chrono::{DateTime, NaiveDate, NaiveDateTime, SecondsFormat, Utc};
use kubesink_normalize::record::Timestamp;
use sqlx::mysql::MySqlRow;
use sqlx::sqlite::SqliteRow;
use sqlx::{Column, Row, TypeInfo, ValueRef};

use super::pool::PoolEntry;
use super::{Param, SqlError, Value};
use crate::budget::{HostBudget, Reservation};

/// Payload bytes of a parameter, for the caps.
pub(super) fn param_size(v: &Param) -> usize {
    match v {
        Param::Null => 1,
        Param::Int(_) | Param::Uint(_) | Param::Float(_) => 8,
        Param::Text(s) => s.len(),
        Param::Bytes(b) => b.len(),
        Param::Timestamp(_) => 12,
    }
}

/// `v` as a parameter, borrowing its text and bytes.
pub(super) fn param(v: &Value) -> Param<'_> {
    match v {
        Value::Null => Param::Null,
        Value::Int(n) => Param::Int(*n),
        Value::Uint(n) => Param::Uint(*n),
        Value::Float(f) => Param::Float(*f),
        Value::Text(s) => Param::Text(s),
        Value::Bytes(b) => Param::Bytes(b),
        Value::Timestamp(ts) => Param::Timestamp(kubesink_packed::Timestamp {
            seconds: ts.seconds,
            nanos: ts.nanos,
        }),
    }
}

/// The parameters of `values`, borrowing their text and bytes.
pub(super) fn params(values: &[Value]) -> Vec<Param<'_>> {
    values.iter().map(param).collect()
}

/// A parameter's timestamp as the record type the conversions take.
pub(super) fn param_ts(ts: kubesink_packed::Timestamp) -> Timestamp {
    Timestamp {
        seconds: ts.seconds,
        nanos: ts.nanos,
    }
}

pub(super) fn to_naive(ts: &Timestamp) -> Option<NaiveDateTime> {
    DateTime::<Utc>::from_timestamp(ts.seconds, ts.nanos).map(|dt| dt.naive_utc())
}

pub(super) fn from_naive(dt: NaiveDateTime) -> Value {
    let utc = dt.and_utc();
    Value::Timestamp(Timestamp {
        seconds: utc.timestamp(),
        nanos: utc.timestamp_subsec_nanos(),
    })
}

/// Timestamps go to SQLite as RFC 3339 text in UTC (`...Z`), which sorts
/// chronologically and which SQLite's date functions understand.
pub(super) fn sqlite_timestamp_text(ts: &Timestamp) -> Option<String> {
    DateTime::<Utc>::from_timestamp(ts.seconds, ts.nanos)
        .map(|dt| dt.to_rfc3339_opts(SecondsFormat::AutoSi, true))
}

pub(super) fn parse_sqlite_timestamp(text: &str) -> Option<Value> {
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
pub(super) fn bind_mysql<'q>(
    mut q: MySqlQuery<'q>,
    params: &[Param<'q>],
    e: &PoolEntry,
) -> Result<MySqlQuery<'q>, SqlError> {
    for (i, v) in params.iter().enumerate() {
        q = match *v {
            Param::Null => q.bind(None::<String>),
            Param::Int(n) => q.bind(n),
            Param::Uint(n) => q.bind(n),
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

pub(super) fn bind_sqlite<'q>(
    mut q: SqliteQuery<'q>,
    params: &[Param<'_>],
    e: &PoolEntry,
) -> Result<SqliteQuery<'q>, SqlError> {
    for (i, v) in params.iter().enumerate() {
        q = match *v {
            Param::Null => q.bind(None::<String>),
            Param::Int(n) => q.bind(n),
            Param::Uint(n) => q.bind(i64::try_from(n).map_err(|_| {
                e.rejected(format_args!(
                    "parameter {}: unsigned value {n} exceeds SQLite's integer range",
                    i + 1
                ))
            })?),
            Param::Float(f) => q.bind(f),
            Param::Text(s) => q.bind(s.to_owned()),
            Param::Bytes(b) => q.bind(b.to_vec()),
            Param::Timestamp(ts) => {
                q.bind(sqlite_timestamp_text(&param_ts(ts)).ok_or_else(|| {
                    e.rejected(format_args!(
                        "parameter {}: timestamp {ts:?} out of range",
                        i + 1
                    ))
                })?)
            }
        };
    }
    Ok(q)
}

/// Host memory one cell takes before its payload: the [`Value`] itself.
const CELL_BYTES: usize = std::mem::size_of::<Value>();

/// Host memory one row takes besides its cells: the `Vec` holding them.
const ROW_BYTES: usize = std::mem::size_of::<Vec<Value>>();

/// Counts the host memory a query's rows take: every cell at its in-memory
/// size (a NULL or a number as one [`Value`]), text and bytes at their
/// payload length too, checked before the payload is copied out of the
/// driver's row. Charged against the result cap and, when there is one,
/// the sink's host memory budget.
pub(super) struct Meter {
    cap: usize,
    used: usize,
    budget: Option<HostBudget>,
    reservation: Option<Reservation>,
    /// Why the last charge was refused.
    pub(super) refused: Option<String>,
}

impl Meter {
    /// A meter for one query, held to `cap` bytes and to `budget`.
    pub(super) fn new(cap: usize, budget: Option<HostBudget>) -> Self {
        Self {
            cap,
            used: 0,
            budget,
            reservation: None,
            refused: None,
        }
    }

    /// Bytes counted so far.
    pub(super) fn used(&self) -> usize {
        self.used
    }

    /// Counts a row of `cells` cells (before their payloads); `false` as
    /// [`Meter::charge`].
    pub(super) fn charge_row(&mut self, cells: usize) -> bool {
        self.charge(ROW_BYTES + cells * CELL_BYTES)
    }

    /// Counts `bytes` more; `false` (and [`Meter::refused`] says why) when
    /// that would pass the cap or the budget.
    pub(super) fn charge(&mut self, bytes: usize) -> bool {
        let total = self.used.saturating_add(bytes);
        if total > self.cap {
            self.refused = Some(format!(
                "query result exceeds the cap of {} bytes: {bytes} more bytes after {} (limits.max_result)",
                self.cap, self.used
            ));
            return false;
        }
        if let Some(budget) = &self.budget {
            let reserved = match &mut self.reservation {
                Some(r) => r.grow(bytes),
                None => budget
                    .try_reserve_for("sql result", bytes)
                    .map(|r| self.reservation = Some(r)),
            };
            if let Err(e) = reserved {
                self.refused = Some(e.to_string());
                return false;
            }
        }
        self.used = total;
        true
    }
}

/// Decodes one MySQL row; `None` when the meter refused a cell.
pub(super) fn mysql_row(
    row: &MySqlRow,
    meter: &mut Meter,
) -> Result<Option<Vec<Value>>, sqlx::Error> {
    if !meter.charge_row(row.len()) {
        return Ok(None);
    }
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
            "TIME" => Value::Text(row.try_get::<chrono::NaiveTime, _>(i)?.to_string()),
            // BINARY, BLOB, BIT, GEOMETRY as bytes; CHAR, VARCHAR, TEXT,
            // ENUM, SET, JSON, DECIMAL as text. Sized before copying.
            _ => {
                let bytes = row.try_get_unchecked::<&[u8], _>(i)?;
                if !meter.charge(bytes.len()) {
                    return Ok(None);
                }
                let binary = matches!(
                    ty,
                    "BINARY"
                        | "VARBINARY"
                        | "BLOB"
                        | "TINYBLOB"
                        | "MEDIUMBLOB"
                        | "LONGBLOB"
                        | "BIT"
                        | "GEOMETRY"
                );
                if binary {
                    Value::Bytes(bytes.to_vec())
                } else {
                    match String::from_utf8(bytes.to_vec()) {
                        Ok(s) => Value::Text(s),
                        Err(e) => Value::Bytes(e.into_bytes()),
                    }
                }
            }
        };
        cells.push(cell);
    }
    Ok(Some(cells))
}

/// Decodes one SQLite row; `None` when the meter refused a cell.
pub(super) fn sqlite_row(
    row: &SqliteRow,
    meter: &mut Meter,
) -> Result<Option<Vec<Value>>, sqlx::Error> {
    if !meter.charge_row(row.len()) {
        return Ok(None);
    }
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
                "BLOB" => {
                    let bytes = row.try_get_unchecked::<&[u8], _>(i)?;
                    if !meter.charge(bytes.len()) {
                        return Ok(None);
                    }
                    Value::Bytes(bytes.to_vec())
                }
                _ => {
                    let text = row.try_get_unchecked::<&str, _>(i)?;
                    if !meter.charge(text.len()) {
                        return Ok(None);
                    }
                    let temporal = matches!(declared.as_str(), "DATETIME" | "TIMESTAMP" | "DATE");
                    match temporal.then(|| parse_sqlite_timestamp(text)).flatten() {
                        Some(ts) => ts,
                        None => Value::Text(text.to_owned()),
                    }
                }
            }
        };
        cells.push(cell);
    }
    Ok(Some(cells))
}
