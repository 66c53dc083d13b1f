//! The named connections as configured ([`ConnectionConfig`]), why one is
//! unusable ([`SqlConfigError`]), and the caps on what a caller sends and
//! receives ([`SqlCaps`]).

use std::time::Duration;

/// default per-call deadline so that a database that is down shows up as a
/// retryable error rather than a timeout fault.
pub(crate) const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);

/// One named connection from the runtime configuration. `Debug` shows
/// the URL as `[REDACTED]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionConfig {
    /// The name sinks open it by.
    pub name: String,
    /// `mysql://user:pass@host:port/db`, `postgres://user:pass@host:port/db`
    /// or `sqlite://path?mode=rwc`.
    /// Never shown in logs or errors (only scheme, host and database are);
    /// read it with [`Secret::expose`](crate::secret::Secret::expose).
    pub url: crate::secret::Secret,
    /// Most pooled connections of each sink's pool (one pool per sink).
    /// Default 4.
    pub max_connections: u32,
}

impl ConnectionConfig {
    /// A connection named `name` at `url` with the default pool size (4).
    #[must_use]
    pub fn new(name: impl Into<String>, url: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            url: crate::secret::Secret::from(url.into()),
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
        "sql connection '{name}' ({shown}): unsupported database, expected mysql://, postgres:// or sqlite://"
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
pub(crate) struct SqlCaps {
    /// Most bytes of one statement: its text plus its text/bytes parameters.
    pub max_statement_bytes: usize,
    /// Most bytes a query may return: every cell at its in-memory size plus
    /// its text/bytes payload, summed over the rows. On SQLite also the
    /// largest value a connection may produce (`SQLITE_LIMIT_LENGTH`).
    pub max_result_bytes: usize,
    /// Longest a statement may run on the server (MySQL/MariaDB and
    /// PostgreSQL session limit; the sink's call timeout). Statements also stop at the
    /// deadline of the call that started them.
    pub statement_time: Duration,
}

impl Default for SqlCaps {
    fn default() -> Self {
        let limits = crate::Limits::default();
        Self {
            max_statement_bytes: limits.max_statement_bytes,
            max_result_bytes: limits.max_result_bytes,
            statement_time: limits.call_timeout,
        }
    }
}
