//! A real PostgreSQL for tests: one private server per machine, one fresh
//! database per test.
//!
//! The server comes from `KUBESINK_TEST_POSTGRES_URL`
//! (`postgres://user:password@host:port/db`, a role allowed to create and
//! drop databases). When that variable is unset, `tests/scripts/postgres.sh`
//! is run once per process: it installs Debian's `postgresql` if needed,
//! starts a private server on 127.0.0.1:5433 unless one answers already,
//! and prints the URL. If the server cannot be had, every test that asks for
//! it fails with the script's output (none is skipped).
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! let db = kubesink_tests::postgres::fresh_database("sink_sql").await?;
//! let pool = db.connect().await?;
//! sqlx::query("CREATE TABLE t (id INT PRIMARY KEY)").execute(&pool).await?;
//! pool.close().await;
//! db.drop_database().await?;
//! # Ok(()) }
//! ```

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use sqlx::postgres::{PgConnection, PgPool, PgPoolOptions};
use sqlx::{AssertSqlSafe, Connection as _};
use url::Url;

/// The environment variable naming the test server.
pub const URL_ENV: &str = "KUBESINK_TEST_POSTGRES_URL";

/// Longest identifier PostgreSQL keeps (`NAMEDATALEN` - 1).
const MAX_DB_NAME: usize = 63;

/// The privileges on the `public` schema the mysql sink's role needs
/// besides logging in (see `docs/security.md`, "MySQL's and PostgreSQL's
/// bound is the account"): `CREATE` for its tables (which it then owns),
/// `USAGE` to name them. Nothing on other databases, not a superuser, no
/// `CREATEDB` or `CREATEROLE`.
pub const SINK_GRANTS: &str = "USAGE, CREATE";

/// Why the test PostgreSQL or a test database could not be had.
#[derive(Debug, Clone, thiserror::Error)]
pub enum PostgresError {
    /// The start script could not be run, failed, or printed no URL.
    #[error("{script}: {reason}")]
    Script {
        /// Path of `tests/scripts/postgres.sh`.
        script: PathBuf,
        /// What happened, with the script's output.
        reason: String,
    },
    /// The server URL (from the environment or the script) is unusable.
    #[error("{URL_ENV} `{url}` is not a postgres://user:password@host:port/db URL: {reason}")]
    BadUrl {
        /// The URL, password masked.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Connecting or a statement on the admin connection failed.
    #[error("PostgreSQL at {url}: {what}: {reason}")]
    Sql {
        /// The URL, password masked.
        url: String,
        /// The statement, or `connect`.
        what: String,
        /// The driver's error.
        reason: String,
    },
}

/// A uniquely named database on the test server, created empty. Not
/// dropped automatically (a failed test leaves its data for inspection):
/// call [`TestDb::drop_database`] at the end of a test.
#[derive(Debug)]
pub struct TestDb {
    name: String,
    server: Url,
    url: Url,
}

impl TestDb {
    /// The database's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `postgres://user:password@host:port/<name>`: hand this to the code
    /// under test.
    pub fn url(&self) -> &str {
        self.url.as_str()
    }

    /// A small connection pool on this database.
    pub async fn connect(&self) -> Result<PgPool, PostgresError> {
        PgPoolOptions::new()
            .max_connections(4)
            .connect(self.url.as_str())
            .await
            .map_err(|e| sql_error(&self.url, "connect", &e))
    }

    /// Creates a role named like the database whose only privileges are
    /// [`SINK_GRANTS`] (logging in to this database, creating tables in
    /// its `public` schema), and returns
    /// `postgres://role:password@host:port/<name>` for it. Dropped with the
    /// database ([`TestDb::drop_database`]).
    pub async fn sink_account_url(&self) -> Result<String, PostgresError> {
        let password = format!("pw_{}", self.name);
        let role = &self.name;
        let mut admin = admin_connection(&self.server).await?;
        let mut result = Ok(());
        for sql in [
            format!("DROP ROLE IF EXISTS \"{role}\""),
            format!("CREATE ROLE \"{role}\" LOGIN PASSWORD '{password}'"),
            format!("GRANT CONNECT ON DATABASE \"{role}\" TO \"{role}\""),
        ] {
            result = execute(&mut admin, &self.server, sql).await;
            if result.is_err() {
                break;
            }
        }
        let _ = admin.close().await;
        result?;
        // Schema grants are per database: as the admin, on this one.
        let mut on_db = admin_connection(&self.url).await?;
        let granted = execute(
            &mut on_db,
            &self.url,
            format!("GRANT {SINK_GRANTS} ON SCHEMA public TO \"{role}\""),
        )
        .await;
        let _ = on_db.close().await;
        granted?;
        let mut url = self.url.clone();
        let bad = |what: &str| PostgresError::BadUrl {
            url: masked(&self.url),
            reason: format!("cannot set the {what} of the sink account"),
        };
        url.set_username(role).map_err(|()| bad("user"))?;
        url.set_password(Some(&password))
            .map_err(|()| bad("password"))?;
        Ok(url.to_string())
    }

    /// Drops the database, ending the sessions still on it, and the role of
    /// [`TestDb::sink_account_url`], if any. Close pools on it first.
    pub async fn drop_database(self) -> Result<(), PostgresError> {
        let mut admin = admin_connection(&self.server).await?;
        let result = execute(
            &mut admin,
            &self.server,
            format!("DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)", self.name),
        )
        .await;
        let _ = execute(
            &mut admin,
            &self.server,
            format!("DROP ROLE IF EXISTS \"{}\"", self.name),
        )
        .await;
        let _ = admin.close().await;
        result
    }
}

/// Creates an empty, uniquely named database on the test server (starting
/// the server first if needed) whose name begins with `ks_` and a
/// sanitized `prefix`.
pub async fn fresh_database(prefix: &str) -> anyhow::Result<TestDb> {
    let raw = tokio::task::spawn_blocking(server_url).await??;
    let server = Url::parse(&raw).map_err(|e| PostgresError::BadUrl {
        url: mask_raw(&raw),
        reason: e.to_string(),
    })?;
    if !matches!(server.scheme(), "postgres" | "postgresql") || server.username().is_empty() {
        return Err(PostgresError::BadUrl {
            url: masked(&server),
            reason: "the scheme must be postgres:// and a user given".into(),
        }
        .into());
    }
    let name = crate::mariadb::unique_name(prefix, MAX_DB_NAME);
    let mut admin = admin_connection(&server).await?;
    let created = execute(
        &mut admin,
        &server,
        format!("CREATE DATABASE \"{name}\" ENCODING 'UTF8' TEMPLATE template0"),
    )
    .await;
    let _ = admin.close().await;
    created?;
    let mut url = server.clone();
    url.set_path(&name);
    url.set_query(None);
    Ok(TestDb { name, server, url })
}

/// The test server's URL: `KUBESINK_TEST_POSTGRES_URL` if set, else what
/// `tests/scripts/postgres.sh` prints after starting the server. Runs the
/// script at most once per process; a failure is remembered and returned
/// to every caller.
pub fn server_url() -> Result<String, PostgresError> {
    static URL: OnceLock<Result<String, PostgresError>> = OnceLock::new();
    URL.get_or_init(|| match std::env::var(URL_ENV) {
        Ok(url) if !url.trim().is_empty() => Ok(url.trim().to_owned()),
        _ => run_script(&script_path()),
    })
    .clone()
}

/// `tests/scripts/postgres.sh` in this workspace.
pub fn script_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("scripts")
        .join("postgres.sh")
}

fn run_script(script: &Path) -> Result<String, PostgresError> {
    let fail = |reason: String| PostgresError::Script {
        script: script.to_owned(),
        reason,
    };
    let out = Command::new("bash")
        .arg(script)
        .arg("start")
        .env_remove(URL_ENV)
        .output()
        .map_err(|e| fail(format!("could not run it: {e}")))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let output = format!("{}{}", String::from_utf8_lossy(&out.stderr), stdout);
    if !out.status.success() {
        return Err(fail(format!(
            "failed ({}); its output:\n{output}",
            out.status
        )));
    }
    stdout
        .lines()
        .rev()
        .find_map(|l| l.trim().strip_prefix(URL_ENV)?.strip_prefix('='))
        .map(|v| v.trim().to_owned())
        .filter(|v| !v.is_empty())
        .ok_or_else(|| {
            fail(format!(
                "printed no {URL_ENV}=... line; its output:\n{output}"
            ))
        })
}

async fn admin_connection(server: &Url) -> Result<PgConnection, PostgresError> {
    PgConnection::connect(server.as_str())
        .await
        .map_err(|e| sql_error(server, "connect", &e))
}

async fn execute(conn: &mut PgConnection, server: &Url, sql: String) -> Result<(), PostgresError> {
    sqlx::raw_sql(AssertSqlSafe(sql.clone()))
        .execute(conn)
        .await
        .map(drop)
        .map_err(|e| sql_error(server, &sql, &e))
}

fn sql_error(url: &Url, what: &str, e: &sqlx::Error) -> PostgresError {
    PostgresError::Sql {
        url: masked(url),
        what: what.to_owned(),
        reason: e.to_string(),
    }
}

fn masked(url: &Url) -> String {
    let mut url = url.clone();
    if url.password().is_some() {
        let _ = url.set_password(Some("***"));
    }
    url.to_string()
}

fn mask_raw(raw: &str) -> String {
    Url::parse(raw)
        .map(|u| masked(&u))
        .unwrap_or_else(|_| "<unparsable URL>".to_owned())
}
