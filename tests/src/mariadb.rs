//! A real MariaDB for tests: one private server per machine, one fresh
//! database per test.
//!
//! The server comes from `KUBESINK_TEST_MYSQL_URL`
//! (`mysql://user:password@host:port`, a user allowed to create and drop
//! databases). When that variable is unset, `tests/scripts/mariadb.sh` is run
//! once per process: it installs MariaDB from Debian's packages if needed,
//! starts a private server on 127.0.0.1:3307 unless one answers already, and
//! prints the URL. So `cargo test` works on its own, and `just test` (which
//! runs the script first and exports the variable) runs it once for all test
//! binaries. If the server cannot be had, every test that asks for it fails
//! with the script's output.
//!
//! A test that needs to stop the database (an outage) starts its own
//! [`PrivateMariaDb`] instead: a separate server on its own port and data
//! directory.
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! let db = kubesink_tests::mariadb::fresh_database("sink_mysql").await?;
//! let pool = db.connect().await?;
//! sqlx::query("CREATE TABLE t (id INT PRIMARY KEY)").execute(&pool).await?;
//! pool.close().await;
//! db.drop_database().await?;
//! # Ok(()) }
//! ```

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use sqlx::mysql::{MySqlConnection, MySqlPool, MySqlPoolOptions};
use sqlx::{AssertSqlSafe, Connection};
use url::Url;

/// The environment variable naming the test server:
/// `mysql://user:password@host:port` (no database).
pub const URL_ENV: &str = "KUBESINK_TEST_MYSQL_URL";

/// Longest database name MariaDB accepts.
const MAX_DB_NAME: usize = 64;

/// The least privileges the mysql sink needs on its database (see
/// `docs/security.md`, "MySQL's bound is the account"): read and write rows
/// (`DELETE` only for collapsing duplicate rows when it adds the unique key
/// to a table KubeDL created), create its tables, add missing columns and
/// the unique key. Nothing on other databases, no `DROP`, no `PROCESS`,
/// `SUPER`, `FILE` or `GRANT OPTION`.
pub const SINK_GRANTS: &str = "SELECT, INSERT, UPDATE, DELETE, CREATE, ALTER, INDEX";

/// Why the test MariaDB or a test database could not be had.
#[derive(Debug, Clone, thiserror::Error)]
pub enum MariaDbError {
    /// The start script could not be executed at all.
    #[error("could not run {script}: {reason}")]
    Spawn {
        /// Path of `tests/scripts/mariadb.sh`.
        script: PathBuf,
        /// The OS error.
        reason: String,
    },
    /// The start script ran and failed.
    #[error("{script} failed ({status}); its output:\n{output}")]
    Script {
        /// Path of `tests/scripts/mariadb.sh`.
        script: PathBuf,
        /// How it exited.
        status: String,
        /// Its stderr and stdout.
        output: String,
    },
    /// The start script succeeded but printed no `KUBESINK_TEST_MYSQL_URL=` line.
    #[error("{script} printed no {URL_ENV}=... line; its output:\n{output}")]
    NoUrl {
        /// Path of `tests/scripts/mariadb.sh`.
        script: PathBuf,
        /// Its stderr and stdout.
        output: String,
    },
    /// The server URL (from the environment or the script) is unusable.
    #[error("{URL_ENV} `{url}` is not a mysql://user:password@host:port URL: {reason}")]
    BadUrl {
        /// The URL, password masked.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Connecting to the server or a test database failed.
    #[error("cannot connect to MariaDB at {url}: {reason}")]
    Connect {
        /// The URL, password masked.
        url: String,
        /// The driver's error.
        reason: String,
    },
    /// A statement on the admin connection failed.
    #[error("`{sql}` failed on MariaDB at {url}: {reason}")]
    Sql {
        /// The statement.
        sql: String,
        /// The URL, password masked.
        url: String,
        /// The driver's error.
        reason: String,
    },
}

/// A uniquely named database on the test server, created empty.
///
/// It is not dropped automatically (a failed test leaves its data for
/// inspection); call [`TestDb::drop_database`] at the end of a test.
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

    /// `mysql://user:password@host:port/<name>`: hand this to the code under test.
    pub fn url(&self) -> &str {
        self.url.as_str()
    }

    /// The server's URL, without a database.
    pub fn server_url(&self) -> &str {
        self.server.as_str()
    }

    /// KubeDL's connection variables for this database (`MYSQL_HOST`,
    /// `MYSQL_PORT`, `MYSQL_DB_NAME`, `MYSQL_USER`, `MYSQL_PASSWORD`), for
    /// running `kubesink --meta-storage mysql` against it.
    pub fn kubedl_env(&self) -> Vec<(&'static str, String)> {
        let decode = |s: &str| percent_decode(s).unwrap_or_else(|| s.to_owned());
        vec![
            (
                "MYSQL_HOST",
                self.url.host_str().unwrap_or("127.0.0.1").to_owned(),
            ),
            ("MYSQL_PORT", self.url.port().unwrap_or(3306).to_string()),
            ("MYSQL_DB_NAME", self.name.clone()),
            ("MYSQL_USER", decode(self.url.username())),
            ("MYSQL_PASSWORD", decode(self.url.password().unwrap_or(""))),
        ]
    }

    /// A small connection pool on this database.
    pub async fn connect(&self) -> Result<MySqlPool, MariaDbError> {
        MySqlPoolOptions::new()
            .max_connections(4)
            .connect(self.url.as_str())
            .await
            .map_err(|e| MariaDbError::Connect {
                url: masked(&self.url),
                reason: e.to_string(),
            })
    }

    /// Creates an account named like the database whose only privileges
    /// are [`SINK_GRANTS`] on this database, and returns
    /// `mysql://account:password@host:port/<name>` for it. Dropped with the
    /// database ([`TestDb::drop_database`]).
    pub async fn sink_account_url(&self) -> Result<String, MariaDbError> {
        let host = self.server.host_str().unwrap_or("127.0.0.1").to_owned();
        let password = format!("pw_{}", self.name);
        let mut admin = admin_connection(&self.server).await?;
        let mut result = Ok(());
        for sql in [
            format!("DROP USER IF EXISTS '{}'@'{host}'", self.name),
            format!(
                "CREATE USER '{}'@'{host}' IDENTIFIED BY '{password}'",
                self.name
            ),
            format!(
                "GRANT {SINK_GRANTS} ON `{}`.* TO '{}'@'{host}'",
                self.name, self.name
            ),
        ] {
            result = execute(&mut admin, &self.server, sql).await;
            if result.is_err() {
                break;
            }
        }
        let _ = admin.close().await;
        result?;
        let mut url = self.url.clone();
        let bad = |what: &str| MariaDbError::BadUrl {
            url: masked(&self.url),
            reason: format!("cannot set the {what} of the sink account"),
        };
        url.set_username(&self.name).map_err(|()| bad("user"))?;
        url.set_password(Some(&password))
            .map_err(|()| bad("password"))?;
        Ok(url.to_string())
    }

    /// Drops the database (and the account of [`TestDb::sink_account_url`],
    /// if any). Close pools on it first.
    pub async fn drop_database(self) -> Result<(), MariaDbError> {
        let mut admin = admin_connection(&self.server).await?;
        let host = self.server.host_str().unwrap_or("127.0.0.1").to_owned();
        let sql = format!("DROP USER IF EXISTS '{}'@'{host}'", self.name);
        let _ = execute(&mut admin, &self.server, sql).await;
        let sql = format!("DROP DATABASE IF EXISTS `{}`", self.name);
        let result = execute(&mut admin, &self.server, sql).await;
        // Closing is best effort; the drop's own result is what matters.
        let _ = admin.close().await;
        result
    }
}

/// Creates an empty, uniquely named database on the test server (starting
/// the server first if needed) whose name begins with `ks_` and a
/// sanitized `prefix`.
pub async fn fresh_database(prefix: &str) -> anyhow::Result<TestDb> {
    let server = tokio::task::spawn_blocking(server_url).await??;
    create_database(server_base(&server)?, prefix).await
}

/// Creates database `ks_<prefix>_...` on `server` (a URL without a database).
async fn create_database(server: Url, prefix: &str) -> anyhow::Result<TestDb> {
    let name = unique_name(prefix, MAX_DB_NAME);
    let mut admin = admin_connection(&server).await?;
    let sql = format!("CREATE DATABASE `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci");
    let created = execute(&mut admin, &server, sql).await;
    let _ = admin.close().await;
    created?;
    let mut url = server.clone();
    url.set_path(&name);
    Ok(TestDb { name, server, url })
}

/// The test server's URL: `KUBESINK_TEST_MYSQL_URL` if set, else what
/// `tests/scripts/mariadb.sh` prints after starting the server. Runs the
/// script at most once per process (blocking, up to about a minute on first
/// start; several minutes if it has to install MariaDB); a failure is
/// remembered and returned to every caller.
pub fn server_url() -> Result<String, MariaDbError> {
    static URL: OnceLock<Result<String, MariaDbError>> = OnceLock::new();
    URL.get_or_init(|| match std::env::var(URL_ENV) {
        Ok(url) if !url.trim().is_empty() => Ok(url.trim().to_owned()),
        _ => run_script(&script_path()),
    })
    .clone()
}

/// `tests/scripts/mariadb.sh` in this workspace.
pub fn script_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("scripts")
        .join("mariadb.sh")
}

fn run_script(script: &Path) -> Result<String, MariaDbError> {
    let out = Command::new("bash")
        .arg(script)
        .arg("start")
        .env_remove(URL_ENV)
        .output()
        .map_err(|e| MariaDbError::Spawn {
            script: script.to_owned(),
            reason: e.to_string(),
        })?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let output = format!("{}{}", String::from_utf8_lossy(&out.stderr), stdout);
    if !out.status.success() {
        return Err(MariaDbError::Script {
            script: script.to_owned(),
            status: out.status.to_string(),
            output,
        });
    }
    url_from_script_output(&stdout).ok_or_else(|| MariaDbError::NoUrl {
        script: script.to_owned(),
        output,
    })
}

/// The value of the last `KUBESINK_TEST_MYSQL_URL=...` line.
fn url_from_script_output(stdout: &str) -> Option<String> {
    stdout
        .lines()
        .rev()
        .find_map(|l| l.trim().strip_prefix(URL_ENV)?.strip_prefix('='))
        .map(|v| v.trim().to_owned())
        .filter(|v| !v.is_empty())
}

/// Parses the server URL and strips any database path or query from it.
fn server_base(raw: &str) -> Result<Url, MariaDbError> {
    let bad = |reason: &str| MariaDbError::BadUrl {
        url: mask_raw(raw),
        reason: reason.to_owned(),
    };
    let mut url = Url::parse(raw).map_err(|e| bad(&e.to_string()))?;
    if url.scheme() != "mysql" && url.scheme() != "mariadb" {
        return Err(bad("the scheme must be mysql://"));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(bad("no host"));
    }
    if url.username().is_empty() {
        return Err(bad("no user"));
    }
    url.set_path("");
    url.set_query(None);
    url.set_fragment(None);
    if url.scheme() == "mariadb" {
        // sqlx speaks mysql://; the two are the same wire protocol.
        let rest = url.as_str().trim_start_matches("mariadb:");
        url = Url::parse(&format!("mysql:{rest}")).map_err(|e| bad(&e.to_string()))?;
    }
    Ok(url)
}

/// `ks_<prefix>_<time>_<pid>_<n>`, at most `max` characters of `[a-z0-9_]`:
/// a database name no other test (or test process) uses.
pub(crate) fn unique_name(prefix: &str, max: usize) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let suffix = format!("_{secs:x}_{:x}_{n}", std::process::id());
    let mut clean: String = prefix
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect();
    clean.truncate(max.saturating_sub("ks_".len() + suffix.len()));
    format!("ks_{clean}{suffix}")
}

async fn admin_connection(server: &Url) -> Result<MySqlConnection, MariaDbError> {
    MySqlConnection::connect(server.as_str())
        .await
        .map_err(|e| MariaDbError::Connect {
            url: masked(server),
            reason: e.to_string(),
        })
}

async fn execute(
    conn: &mut MySqlConnection,
    server: &Url,
    sql: String,
) -> Result<(), MariaDbError> {
    sqlx::query(AssertSqlSafe(sql.clone()))
        .execute(conn)
        .await
        .map(drop)
        .map_err(|e| MariaDbError::Sql {
            sql,
            url: masked(server),
            reason: e.to_string(),
        })
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

fn percent_decode(s: &str) -> Option<String> {
    percent_encoding::percent_decode_str(s)
        .decode_utf8()
        .ok()
        .map(|v| v.into_owned())
}

/// A separate MariaDB server that one test owns: its own data directory (a
/// temporary directory), socket and free port, so the test may stop and
/// start it (a database outage) without disturbing the shared server that
/// [`fresh_database`] uses. The binaries are Debian's (`mariadbd`,
/// `mariadb-install-db`, `mariadb-admin`, `mariadb`), installed by
/// `tests/scripts/mariadb.sh` if missing. Dropping it kills the server and
/// removes the directory.
#[derive(Debug)]
pub struct PrivateMariaDb {
    dir: tempfile::TempDir,
    port: u16,
    child: Option<std::process::Child>,
    bins: MariaDbBins,
}

/// Paths of the MariaDB programs.
#[derive(Debug, Clone)]
struct MariaDbBins {
    server: PathBuf,
    install_db: PathBuf,
    admin: PathBuf,
    client: PathBuf,
}

/// The user the private server's tests log in as (all privileges).
const PRIVATE_USER: &str = "kubesink";
const PRIVATE_PASSWORD: &str = "kubesink";

fn find_program(names: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let dirs = std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/sbin")])
        .collect::<Vec<_>>();
    names
        .iter()
        .flat_map(|n| dirs.iter().map(move |d| d.join(n)))
        .find(|p| p.is_file())
}

fn mariadb_bins() -> anyhow::Result<MariaDbBins> {
    let find = || -> Option<MariaDbBins> {
        Some(MariaDbBins {
            server: find_program(&["mariadbd", "mysqld"])?,
            install_db: find_program(&["mariadb-install-db", "mysql_install_db"])?,
            admin: find_program(&["mariadb-admin", "mysqladmin"])?,
            client: find_program(&["mariadb", "mysql"])?,
        })
    };
    if let Some(b) = find() {
        return Ok(b);
    }
    // The start script installs the packages when they are missing.
    server_url()?;
    find().ok_or_else(|| {
        anyhow::anyhow!(
            "MariaDB programs (mariadbd, mariadb-install-db, mariadb-admin, mariadb) not found on PATH or in /usr/sbin"
        )
    })
}

fn os_user() -> String {
    let out = Command::new("id").arg("-un").output();
    match out {
        Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout).trim().to_owned(),
        _ => std::env::var("USER").unwrap_or_else(|_| "root".into()),
    }
}

impl PrivateMariaDb {
    /// Initializes a data directory and starts the server on a free port.
    pub async fn start() -> anyhow::Result<PrivateMariaDb> {
        let bins = tokio::task::spawn_blocking(mariadb_bins).await??;
        let dir = tempfile::Builder::new().prefix("ks-mariadb-").tempdir()?;
        let data = dir.path().join("data");
        let out = Command::new(&bins.install_db)
            .arg("--no-defaults")
            .arg(format!("--datadir={}", data.display()))
            .arg(format!("--user={}", os_user()))
            .args(["--auth-root-authentication-method=socket", "--skip-test-db"])
            .output()?;
        anyhow::ensure!(
            out.status.success(),
            "{} failed for {}: {}{}",
            bins.install_db.display(),
            data.display(),
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let mut db = PrivateMariaDb {
            dir,
            port,
            child: None,
            bins,
        };
        db.start_server().await?;
        let me = os_user();
        let sql = format!(
            "CREATE USER IF NOT EXISTS '{PRIVATE_USER}'@'127.0.0.1' IDENTIFIED BY '{PRIVATE_PASSWORD}';
             GRANT ALL PRIVILEGES ON *.* TO '{PRIVATE_USER}'@'127.0.0.1' WITH GRANT OPTION;"
        );
        let out = Command::new(&db.bins.client)
            .arg("--no-defaults")
            .arg(format!("--socket={}", db.socket().display()))
            .arg(format!("--user={me}"))
            .args(["-e", &sql])
            .output()?;
        anyhow::ensure!(
            out.status.success(),
            "creating user {PRIVATE_USER} on the private MariaDB at {}: {}",
            db.socket().display(),
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(db)
    }

    fn socket(&self) -> PathBuf {
        self.dir.path().join("mysqld.sock")
    }

    /// The server log (for failure messages).
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("mysqld.log")
    }

    /// The TCP port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `mysql://kubesink:kubesink@127.0.0.1:PORT` (no database).
    pub fn server_url(&self) -> String {
        format!(
            "mysql://{PRIVATE_USER}:{PRIVATE_PASSWORD}@127.0.0.1:{}",
            self.port
        )
    }

    /// True while the server process runs.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    async fn start_server(&mut self) -> anyhow::Result<()> {
        anyhow::ensure!(!self.is_running(), "the private MariaDB already runs");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())?;
        let child = Command::new(&self.bins.server)
            .arg("--no-defaults")
            .arg(format!(
                "--datadir={}",
                self.dir.path().join("data").display()
            ))
            .arg(format!("--user={}", os_user()))
            .args(["--bind-address=127.0.0.1", "--skip-name-resolve"])
            .arg(format!("--port={}", self.port))
            .arg(format!("--socket={}", self.socket().display()))
            .arg(format!(
                "--pid-file={}",
                self.dir.path().join("mysqld.pid").display()
            ))
            .arg(format!("--log-error={}", self.log_path().display()))
            .args(["--innodb-buffer-pool-size=64M", "--max-connections=200"])
            .stdin(std::process::Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()?;
        self.child = Some(child);
        let addr = format!("127.0.0.1:{}", self.port);
        for _ in 0..240 {
            if !self.is_running() {
                anyhow::bail!(
                    "the private MariaDB on port {} exited during startup; see {}:\n{}",
                    self.port,
                    self.log_path().display(),
                    std::fs::read_to_string(self.log_path()).unwrap_or_default()
                );
            }
            if tokio::net::TcpStream::connect(&addr).await.is_ok() && self.socket().exists() {
                return Ok(());
            }
            tokio::time::sleep(std::time::Duration::from_millis(250)).await;
        }
        anyhow::bail!(
            "the private MariaDB did not answer on {addr} within 60 s; see {}",
            self.log_path().display()
        )
    }

    /// Shuts the server down cleanly (`mariadb-admin shutdown`) and waits
    /// for the process to exit; connections to it then fail.
    pub async fn stop(&mut self) -> anyhow::Result<()> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        let out = Command::new(&self.bins.admin)
            .arg("--no-defaults")
            .arg(format!("--socket={}", self.socket().display()))
            .arg(format!("--user={}", os_user()))
            .arg("shutdown")
            .output();
        if !out.as_ref().is_ok_and(|o| o.status.success()) {
            let _ = child.kill();
        }
        tokio::task::spawn_blocking(move || child.wait()).await??;
        Ok(())
    }

    /// Starts the server again on the same port and data directory.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.start_server().await
    }

    /// Creates an empty database on this server (`ks_<prefix>_...`).
    pub async fn fresh_database(&self, prefix: &str) -> anyhow::Result<TestDb> {
        create_database(server_base(&self.server_url())?, prefix).await
    }
}

impl Drop for PrivateMariaDb {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn script_output_url_is_the_last_url_line() {
        let out = "noise\nKUBESINK_TEST_MYSQL_URL=mysql://a:b@h:1\nKUBESINK_TEST_MYSQL_URL=mysql://k:k@127.0.0.1:3307 \n";
        assert_eq!(
            url_from_script_output(out).as_deref(),
            Some("mysql://k:k@127.0.0.1:3307")
        );
        assert_eq!(url_from_script_output("ready\n"), None);
        assert_eq!(url_from_script_output("KUBESINK_TEST_MYSQL_URL=\n"), None);
        assert_eq!(
            url_from_script_output("KUBESINK_TEST_MYSQL_URLX=mysql://x\n"),
            None
        );
    }

    #[test]
    fn server_base_strips_database_and_query() {
        let u = server_base("mysql://kubesink:kubesink@127.0.0.1:3307/other?ssl-mode=disabled")
            .unwrap();
        assert_eq!(u.as_str(), "mysql://kubesink:kubesink@127.0.0.1:3307");
        let u = server_base("mariadb://u:p@db.example:3306/").unwrap();
        assert_eq!(u.as_str(), "mysql://u:p@db.example:3306");
    }

    #[test]
    fn server_base_rejects_other_urls_without_leaking_the_password() {
        let e = server_base("postgres://u:secret@h:5432").unwrap_err();
        assert!(matches!(e, MariaDbError::BadUrl { .. }), "{e}");
        assert!(!e.to_string().contains("secret"), "{e}");
        assert!(server_base("mysql://127.0.0.1:3307").is_err(), "no user");
        assert!(server_base("not a url").is_err());
    }

    #[test]
    fn unique_names_are_valid_distinct_and_bounded() {
        let a = unique_name("Sink MySQL/e2e", MAX_DB_NAME);
        let b = unique_name("Sink MySQL/e2e", MAX_DB_NAME);
        assert_ne!(a, b);
        assert!(a.starts_with("ks_sink_mysql_e2e_"), "{a}");
        let long = unique_name(&"x".repeat(200), MAX_DB_NAME);
        assert!(long.len() <= MAX_DB_NAME, "{} chars: {long}", long.len());
        for name in [&a, &b, &long] {
            assert!(
                name.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'),
                "{name}"
            );
        }
    }

    #[test]
    fn kubedl_env_splits_the_database_url() {
        let server = server_base("mysql://kube%40sink:p%2Fw+@127.0.0.1:3307").unwrap();
        let mut url = server.clone();
        url.set_path("ks_x");
        let db = TestDb {
            name: "ks_x".into(),
            server,
            url,
        };
        assert_eq!(db.url(), "mysql://kube%40sink:p%2Fw+@127.0.0.1:3307/ks_x");
        let env = db.kubedl_env();
        let get = |k: &str| env.iter().find(|(n, _)| *n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("MYSQL_HOST"), Some("127.0.0.1"));
        assert_eq!(get("MYSQL_PORT"), Some("3307"));
        assert_eq!(get("MYSQL_DB_NAME"), Some("ks_x"));
        assert_eq!(get("MYSQL_USER"), Some("kube@sink"));
        assert_eq!(get("MYSQL_PASSWORD"), Some("p/w+"));
    }

    #[test]
    fn masked_hides_the_password() {
        let u = Url::parse("mysql://u:secret@h:1").unwrap();
        assert_eq!(masked(&u), "mysql://u:***@h:1");
    }
}
