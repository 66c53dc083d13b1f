//! kubesink's end-to-end tests: one test binary, one module per area.
//! Tests that need a service say so in their name and start it (or fail
//! loudly); none skips itself.

/// Runs each named check, an `async fn(mariadb: bool) -> anyhow::Result<()>`
/// in the invoking module, once on SQLite and once on MariaDB, as the tests
/// `<module>::sqlite::<check>` and `<module>::mariadb::<check>`.
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
mod sandbox_sql;
mod sls;
mod webhook;
mod webhook_rs;
