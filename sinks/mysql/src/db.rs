//! The database the sink logic talks to: a [`Db`] trait mirroring the WIT
//! `kubesink:sink/sql` connection (dialect, execute, query, execute-batch),
//! implemented by the wasm adapter over the host capability, and by native
//! callers (tests, benchmarks) over whatever they like.

use std::borrow::Cow;

use crate::model::Timestamp;

/// Which SQL the database speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// MySQL or MariaDB.
    Mysql,
    /// SQLite.
    Sqlite,
    /// PostgreSQL: `$1`, `$2`, ... placeholders instead of `?`.
    Postgres,
}

impl Dialect {
    /// Lower-case name for messages.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Dialect::Mysql => "mysql",
            Dialect::Sqlite => "sqlite",
            Dialect::Postgres => "postgres",
        }
    }

    /// The placeholder of parameter `n` (1-based): `?`, or `$n` on
    /// PostgreSQL.
    #[must_use]
    pub fn placeholder(self, n: usize) -> String {
        match self {
            Dialect::Postgres => format!("${n}"),
            _ => "?".to_owned(),
        }
    }
}

/// A statement parameter or a result cell. Text parameters borrow from
/// the batch being written (no copy per value); result cells own theirs
/// (`Value<'static>`).
#[derive(Debug, Clone, PartialEq)]
pub enum Value<'a> {
    /// SQL NULL.
    Null,
    /// Signed integer.
    Int(i64),
    /// Unsigned integer.
    Uint(u64),
    /// Floating point.
    Float(f64),
    /// Text.
    Text(Cow<'a, str>),
    /// Bytes.
    Bytes(Vec<u8>),
    /// A UTC date and time.
    Timestamp(Timestamp),
}

impl Value<'_> {
    /// Rough number of bytes this value adds to a statement on the wire,
    /// used to bound statement sizes.
    #[must_use]
    pub fn wire_size(&self) -> usize {
        match self {
            Value::Text(s) => s.len() + 9,
            Value::Bytes(b) => b.len() + 9,
            _ => 9,
        }
    }

    /// The value as an integer, if it is one (text holding a number too:
    /// SQLite and MySQL may return either).
    #[must_use]
    pub fn as_i64(&self) -> Option<i64> {
        match self {
            Value::Int(i) => Some(*i),
            Value::Uint(u) => i64::try_from(*u).ok(),
            Value::Text(s) => s.trim().parse().ok(),
            _ => None,
        }
    }

    /// The value as a parameter of packed statements
    /// (`execute-batch-packed`), borrowing its text and bytes.
    #[must_use]
    pub fn as_param(&self) -> kubesink_packed::statements::Param<'_> {
        use kubesink_packed::statements::Param;
        match self {
            Value::Null => Param::Null,
            Value::Int(i) => Param::Int(*i),
            Value::Uint(u) => Param::Uint(*u),
            Value::Float(f) => Param::Float(*f),
            Value::Text(s) => Param::Text(s),
            Value::Bytes(b) => Param::Bytes(b),
            Value::Timestamp(t) => Param::Timestamp(kubesink_packed::Timestamp {
                seconds: t.seconds,
                nanos: t.nanos,
            }),
        }
    }

    /// The value as text, if it is text.
    #[must_use]
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Text(s) => Some(s),
            _ => None,
        }
    }
}

/// A statement with placeholders (`?`, `$1`... on PostgreSQL) and its
/// parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct Statement<'a> {
    /// SQL text.
    pub sql: String,
    /// One value per placeholder.
    pub params: Vec<Value<'a>>,
}

impl Statement<'_> {
    /// A statement without parameters.
    #[must_use]
    pub fn plain(sql: impl Into<String>) -> Self {
        Self {
            sql: sql.into(),
            params: Vec::new(),
        }
    }
}

/// Why a database call failed (the WIT `sql-error`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SqlError {
    /// The connection is not granted or not configured.
    #[error("connection denied: {0}")]
    Denied(String),
    /// The database rejected the statement.
    #[error("statement rejected: {0}")]
    Rejected(String),
    /// The database could not be reached or timed out.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// A size the host caps was exceeded.
    #[error("too large: {0}")]
    TooLarge(String),
}

impl SqlError {
    /// Whether retrying the same call later may succeed.
    #[must_use]
    pub fn is_retryable(&self) -> bool {
        matches!(self, SqlError::Unavailable(_))
    }
}

/// An open database connection.
pub trait Db {
    /// Which SQL to emit.
    fn dialect(&self) -> Dialect;
    /// Run one statement; returns the rows affected.
    fn execute(&mut self, statement: Statement<'_>) -> Result<u64, SqlError>;
    /// Run one query; returns its rows.
    fn query(&mut self, statement: Statement<'_>) -> Result<Vec<Vec<Value<'static>>>, SqlError>;
    /// Run statements in one transaction; returns the total rows affected.
    fn execute_batch(&mut self, statements: Vec<Statement<'_>>) -> Result<u64, SqlError>;
}
