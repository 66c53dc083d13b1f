//! The `kubesink` binary for tests that run it as a process: built on
//! demand ([`kubesink_binary`]), started with a controlled environment and
//! its stderr captured to a file ([`Kubesink::start`]), killed on drop.
//!
//! Tests assert on what it logs ([`Kubesink::log`], [`Kubesink::wait_for_log`])
//! and on what it delivers (rows, logs in the SLS emulator).

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::guests::{target_dir, workspace_root};

/// Runs `build` once per test process and hands every later caller the
/// same path (a build that failed is tried again by the next caller).
pub fn built_once(
    cell: &'static OnceLock<Mutex<Option<PathBuf>>>,
    build: impl FnOnce() -> anyhow::Result<PathBuf>,
) -> anyhow::Result<PathBuf> {
    // A poisoned lock only means another test panicked.
    let mut built = cell
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    if let Some(path) = built.as_ref() {
        return Ok(path.clone());
    }
    let path = build()?;
    *built = Some(path.clone());
    Ok(path)
}

/// Runs the build script `script` (a path relative to the workspace root)
/// with bash from the workspace root and returns the last line it printed,
/// or an error naming the script with its stderr.
pub fn run_build_script(script: &str) -> anyhow::Result<String> {
    let script = workspace_root().join(script);
    let out = Command::new("bash")
        .arg(&script)
        .current_dir(workspace_root())
        .output()
        .with_context(|| format!("running {}", script.display()))?;
    if !out.status.success() {
        bail!(
            "{} failed ({}):\n{}",
            script.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    stdout
        .lines()
        .last()
        .map(str::to_owned)
        .with_context(|| format!("{} printed nothing", script.display()))
}

/// Builds the `kubesink` binary (debug profile, once per process) and
/// returns its path.
pub fn kubesink_binary() -> anyhow::Result<PathBuf> {
    static BUILT: OnceLock<Mutex<Option<PathBuf>>> = OnceLock::new();
    built_once(&BUILT, build_kubesink)
}

fn build_kubesink() -> anyhow::Result<PathBuf> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let out = Command::new(&cargo)
        .current_dir(workspace_root())
        .env("CARGO_TARGET_DIR", target_dir())
        .args(["build", "-p", "kubesink", "--bin", "kubesink"])
        .output()
        .with_context(|| format!("running `{cargo} build -p kubesink`"))?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let lines: Vec<&str> = stderr.lines().collect();
        bail!(
            "building the kubesink binary failed ({}):\n{}",
            out.status,
            lines[lines.len().saturating_sub(40)..].join("\n")
        );
    }
    let path = target_dir().join("debug").join("kubesink");
    if !path.is_file() {
        bail!(
            "building kubesink succeeded but {} does not exist",
            path.display()
        );
    }
    Ok(path)
}

/// Whether `kubesink <subcommand> --help` lists `flag` (e.g. `--listen`).
pub fn supports_flag(binary: &Path, subcommand: &str, flag: &str) -> anyhow::Result<bool> {
    let out = Command::new(binary)
        .args([subcommand, "--help"])
        .env_clear()
        .output()
        .with_context(|| format!("running {} {subcommand} --help", binary.display()))?;
    if !out.status.success() {
        bail!(
            "{} {subcommand} --help failed ({}): {}",
            binary.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let help = String::from_utf8_lossy(&out.stdout);
    Ok(help
        .split(|c: char| c.is_whitespace() || c == ',' || c == '=' || c == '[')
        .any(|word| word == flag))
}

/// The SLS emulator's default access key secret (`crate::sls`), which the
/// SLS tests hand kubesink.
pub const SLS_TEST_SECRET: &str = "kubesink-test-secret";

/// What must never appear in a log kubesink writes during the tests: the
/// SLS test key secret, and the test MariaDB's password as it sits in a
/// DSN (`:PASSWORD@`, raw and percent-decoded) and, when it is distinctive
/// (8 characters or more, not the user name), on its own.
pub fn test_secrets() -> Vec<String> {
    let mut secrets = vec![SLS_TEST_SECRET.to_owned()];
    if let Some(url) = std::env::var(crate::mariadb::URL_ENV)
        .ok()
        .and_then(|u| url::Url::parse(&u).ok())
        && let Some(password) = url.password().filter(|p| !p.is_empty())
    {
        let decoded = percent_encoding::percent_decode_str(password)
            .decode_utf8_lossy()
            .into_owned();
        for p in [password.to_owned(), decoded] {
            secrets.push(format!(":{p}@"));
            if p.len() >= 8 && p != url.username() {
                secrets.push(p);
            }
        }
    }
    secrets.sort();
    secrets.dedup();
    secrets
}

/// Panics, naming `origin` and the line (with the secret masked), if
/// `text` (a captured log) holds any of [`test_secrets`].
pub fn assert_no_test_secret(origin: &str, text: &str) {
    static SECRETS: OnceLock<Vec<String>> = OnceLock::new();
    for secret in SECRETS.get_or_init(test_secrets) {
        if let Some(line) = text.lines().find(|l| l.contains(secret.as_str())) {
            panic!(
                "a test secret leaked into the log {origin}: {}",
                line.replace(secret.as_str(), "<SECRET>")
            );
        }
    }
}

/// A running `kubesink` process; killed (SIGKILL) when dropped.
#[derive(Debug)]
pub struct Kubesink {
    child: Child,
    log: PathBuf,
}

impl Kubesink {
    /// Starts `binary args` with exactly the environment `env` (plus `PATH`,
    /// `NO_COLOR` and `KUBESINK_LOG` when `env` does not set them), stdout and stderr
    /// appended to the file `log`.
    pub fn start(
        binary: &Path,
        args: &[String],
        env: &[(String, String)],
        log: &Path,
    ) -> anyhow::Result<Self> {
        let open = || {
            File::options()
                .create(true)
                .append(true)
                .open(log)
                .with_context(|| format!("opening the kubesink log {}", log.display()))
        };
        let mut command = Command::new(binary);
        command
            .args(args)
            .env_clear()
            .stdin(Stdio::null())
            .stdout(open()?)
            .stderr(open()?);
        if let Some(path) = std::env::var_os("PATH") {
            command.env("PATH", path);
        }
        command.env("KUBESINK_LOG", "warn,kubesink=info,kubesink_host=info");
        // Plain text in the log file (tracing-subscriber honours NO_COLOR).
        command.env("NO_COLOR", "1");
        for (key, value) in env {
            command.env(key, value);
        }
        let child = command
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        Ok(Self {
            child,
            log: log.to_owned(),
        })
    }

    /// Everything it has logged so far. Panics if it holds a test secret
    /// ([`assert_no_test_secret`]): every assertion on the log reads it
    /// through here.
    pub fn log(&self) -> String {
        let text = std::fs::read(&self.log)
            .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
            .unwrap_or_default();
        assert_no_test_secret(&self.log.display().to_string(), &text);
        text
    }

    /// The log file.
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// Its exit status if it has exited.
    pub fn exited(&mut self) -> anyhow::Result<Option<ExitStatus>> {
        self.child
            .try_wait()
            .context("checking the kubesink process")
    }

    /// Waits until a log line satisfies `matches` (returning it), failing
    /// with the log's tail if the process exits or `timeout` passes.
    pub async fn wait_for_log(
        &mut self,
        what: &str,
        timeout: Duration,
        matches: impl Fn(&str) -> bool,
    ) -> anyhow::Result<String> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(line) = self.log().lines().find(|line| matches(line)) {
                return Ok(line.to_owned());
            }
            if let Some(status) = self.exited()? {
                bail!(
                    "kubesink exited ({status}) before logging {what}; its log:\n{}",
                    self.tail(60)
                );
            }
            if Instant::now() >= deadline {
                bail!(
                    "kubesink did not log {what} within {timeout:?}; its log:\n{}",
                    self.tail(60)
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The last `n` lines of its log.
    pub fn tail(&self, n: usize) -> String {
        let log = self.log();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// Sends SIGTERM (via `kill`, no unsafe code) and waits up to `timeout`
    /// for it to exit; kills it if it does not.
    pub async fn terminate(mut self, timeout: Duration) -> anyhow::Result<ExitStatus> {
        let pid = self.child.id().to_string();
        let status = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .context("running kill -TERM")?;
        if !status.success() {
            bail!("kill -TERM {pid} failed ({status})");
        }
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.exited()? {
                return Ok(status);
            }
            if Instant::now() >= deadline {
                bail!(
                    "kubesink did not exit within {timeout:?} of SIGTERM; its log:\n{}",
                    self.tail(40)
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Kubesink {
    fn drop(&mut self) {
        // Errors mean it has already exited and been reaped.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[should_panic(expected = "a test secret leaked into the log t: key=<SECRET>")]
    fn a_secret_in_a_log_fails() {
        assert_no_test_secret("t", &format!("fine\nkey={SLS_TEST_SECRET}\n"));
    }

    #[test]
    fn a_log_without_secrets_passes() {
        assert_no_test_secret("t", "access_key_secret=[REDACTED]\n");
    }

    #[tokio::test]
    async fn wait_for_log_reports_an_exit_with_the_log() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = dir.path().join("log");
        let mut process = Kubesink::start(
            Path::new("sh"),
            &["-c".into(), "echo hello; echo bye >&2; exit 3".into()],
            &[],
            &log,
        )
        .expect("start sh");
        let line = process
            .wait_for_log("hello", Duration::from_secs(10), |l| l.contains("hello"))
            .await
            .expect("hello logged");
        assert_eq!(line, "hello");
        let error = process
            .wait_for_log("never", Duration::from_secs(10), |l| l.contains("never"))
            .await
            .expect_err("the process exits");
        let text = error.to_string();
        assert!(text.contains("exited") && text.contains("bye"), "{text}");
    }
}
