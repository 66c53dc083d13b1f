//! The `kubesink:sink/sql` capability, backed by sqlx pools the host owns.
//!
//! Two layers:
//!
//! - [`SqlPools`] / [`SqlConn`]: the named connections (MySQL/MariaDB,
//!   PostgreSQL or SQLite) and their pools, one per sink and name (`pool`), usable
//!   natively (no wasm) with typed parameters ([`Value`]), size caps
//!   ([`SqlCaps`]), the call's deadline, and errors already mapped to the WIT
//!   [`SqlError`] cases. Pools are created lazily, so a database that is
//!   down at start-up gives `unavailable` errors (retryable) instead of a
//!   failed start. SQLite connections are confined to their file
//!   (`sqlite_guard`); values go through `codec`, credentials are kept out
//!   of messages by `redact`.
//! - The capability proper, following wasmtime's View pattern: [`SqlCtx`]
//!   (per store: the sink's name, its grants, the pools, the caps), the
//!   [`SqlView`] trait the store data implements, and [`add_to_linker`].
//!
//! Connection URLs carry credentials: they never appear in errors or logs.
//! Errors show `scheme://host:port/database` only (see [`redact_url`](redact::redact_url)), and
//! any message coming back from a driver is scrubbed of the URL's user
//! information before it is shown.
//!
//! Files: `config.rs` (connections as configured, caps), `pool.rs` (the
//! pools, one per sink and name), `conn.rs` (statements on a pooled
//! connection: caps, deadline, leases), `codec.rs` (values to and from the
//! drivers, result sizes), `redact.rs` (credentials out of messages),
//! `postgres.rs` (PostgreSQL's pool, lease and values),
//! `sqlite_guard.rs` (SQLite confined to its file), `view.rs` (the
//! capability for a store).

pub use crate::bindings::kubesink::sink::sql::{Dialect, Engine, SqlError, Statement, Value};
/// Parameters and statements borrowed from their caller (or from a buffer
/// of packed statements, `execute-batch-packed`).
pub use kubesink_packed::statements::{PackedStatement, Param};

mod codec;
mod config;
mod conn;
mod pool;
mod postgres;
mod redact;
mod sqlite_guard;
mod view;

#[cfg(test)]
use codec::{parse_sqlite_timestamp, sqlite_timestamp_text};
pub(crate) use config::{ACQUIRE_TIMEOUT, SqlCaps};
pub use config::{ConnectionConfig, SqlConfigError};
pub use conn::SqlConn;
#[cfg(test)]
use kubesink_normalize::record::Timestamp;
pub use pool::SqlPools;
#[cfg(test)]
use redact::{redact_url, scrub, url_secrets};
pub use view::Connection;
pub(crate) use view::{SqlCtx, SqlCtxView, SqlView, add_to_linker};

#[cfg(test)]
mod tests;
