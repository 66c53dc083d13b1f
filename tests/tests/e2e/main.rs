//! kubesink's end-to-end tests: one test binary, one module per area.
//! Tests that need a service say so in their name and start it (or fail
//! loudly); none skips itself.

/// Runs each named check, an `async fn(mariadb: bool) -> anyhow::Result<()>`
/// in the invoking module, once on SQLite and once on MariaDB, as the tests
/// `<module>::sqlite::<check>` and `<module>::mariadb::<check>`. The
/// modules here use [`on_all!`] (PostgreSQL too); kept for checks written
/// against it.
#[allow(unused_macros)]
macro_rules! on_both {
    ($($check:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test]
                async fn $check() -> anyhow::Result<()> {
                    super::$check(false).await
                }
            )*
        }
        mod mariadb {
            $(
                #[tokio::test]
                async fn $check() -> anyhow::Result<()> {
                    super::$check(true).await
                }
            )*
        }
    };
}

/// The database a check of [`on_all!`] runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Db {
    /// A SQLite file in a temporary directory.
    Sqlite,
    /// A fresh database on the test MariaDB (`tests/scripts/mariadb.sh`).
    Mariadb,
    /// A fresh database on the test PostgreSQL (`tests/scripts/postgres.sh`).
    Postgres,
}

/// Runs each named check, an `async fn(db: crate::Db) -> anyhow::Result<()>`
/// in the invoking module, on SQLite, MariaDB and PostgreSQL, as the tests
/// `<module>::sqlite::<check>`, `<module>::mariadb::<check>` and
/// `<module>::postgres::<check>`.
macro_rules! on_all {
    ($($check:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test]
                async fn $check() -> anyhow::Result<()> {
                    super::$check(crate::Db::Sqlite).await
                }
            )*
        }
        mod mariadb {
            $(
                #[tokio::test]
                async fn $check() -> anyhow::Result<()> {
                    super::$check(crate::Db::Mariadb).await
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test]
                async fn $check() -> anyhow::Result<()> {
                    super::$check(crate::Db::Postgres).await
                }
            )*
        }
    };
}

mod bad_input;
mod checkpoint;
mod cluster;
mod configmap;
mod crash;
mod deploy;
mod ha;
mod helm;
mod history;
mod host;
mod hostile;
mod image;
mod isolation;
mod kafka;
mod kubedl_compat;
mod lagging;
mod live;
mod mariadb;
mod mysql_sink;
mod ops;
mod outage;
mod replay;
mod sandbox_http;
mod sandbox_limits;
mod sandbox_postgres;
mod sandbox_sql;
mod sls;
mod webhook;
mod webhook_rs;
