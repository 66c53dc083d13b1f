//! The `kubesink` binary for tests and the bench that run it as a process:
//! built on demand ([`kubesink_binary`], the one builder), started with a
//! controlled environment and its output captured to a file
//! ([`Kubesink::start`], the one process wrapper), signalled, waited for,
//! killed on drop.
//!
//! Tests assert on what it logs ([`Kubesink::log`], [`Kubesink::wait_for_log`]),
//! on what its operations server answers ([`Kubesink::get`]) and on what it
//! delivers (rows, logs in the SLS emulator). Tests that need kubesink only
//! in-process drive `kubesink::app::Runtime` instead.

use std::fs::File;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

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

/// The variables of this process's environment that locate kubesink's
/// compiled-component cache (`KUBESINK_CACHE_DIR`, `XDG_CACHE_HOME`,
/// `HOME`), for a [`Kubesink::start`] that should share it rather than
/// compile every sink afresh.
pub fn cache_env() -> Vec<(String, String)> {
    ["KUBESINK_CACHE_DIR", "XDG_CACHE_HOME", "HOME"]
        .into_iter()
        .filter_map(|k| std::env::var(k).ok().map(|v| (k.to_owned(), v)))
        .collect()
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

/// A running `kubesink` process, the one process wrapper of the e2e tests
/// and the bench; killed (SIGKILL) when dropped.
#[derive(Debug)]
pub struct Kubesink {
    /// `None` once it has been killed or waited for.
    child: Option<Child>,
    log: PathBuf,
    /// Where this process's part of the log starts (earlier runs may have
    /// written to the same file).
    log_start: usize,
    name: String,
    /// Its operations server, once read from its part of the log.
    addr: Option<SocketAddr>,
}

impl Kubesink {
    /// Starts `binary args` with exactly the environment `env` (plus `PATH`,
    /// `NO_COLOR` and `KUBESINK_LOG` when `env` does not set them), stdin
    /// empty, stdout and stderr appended to the file `log` (whose stem
    /// names the process in messages).
    pub fn start(
        binary: &Path,
        args: &[String],
        env: &[(String, String)],
        log: &Path,
    ) -> anyhow::Result<Self> {
        Self::spawn(binary, args, env, log, Stdio::null(), None)
    }

    /// [`start`](Self::start) in the working directory `dir` (where a
    /// configuration's relative paths, such as the default `./kubesink.db`,
    /// point).
    pub fn start_in(
        dir: &Path,
        binary: &Path,
        args: &[String],
        env: &[(String, String)],
        log: &Path,
    ) -> anyhow::Result<Self> {
        Self::spawn(binary, args, env, log, Stdio::null(), Some(dir))
    }

    /// [`start`](Self::start), with a pipe to its stdin (`kubesink replay -`).
    pub fn start_piped(
        binary: &Path,
        args: &[String],
        env: &[(String, String)],
        log: &Path,
    ) -> anyhow::Result<(Self, ChildStdin)> {
        let mut process = Self::spawn(binary, args, env, log, Stdio::piped(), None)?;
        let stdin = process
            .child
            .as_mut()
            .and_then(|c| c.stdin.take())
            .with_context(|| format!("kubesink {}: no stdin pipe", process.name))?;
        Ok((process, stdin))
    }

    fn spawn(
        binary: &Path,
        args: &[String],
        env: &[(String, String)],
        log: &Path,
        stdin: Stdio,
        dir: Option<&Path>,
    ) -> anyhow::Result<Self> {
        let open = || {
            File::options()
                .create(true)
                .append(true)
                .open(log)
                .with_context(|| format!("opening the kubesink log {}", log.display()))
        };
        let stdout = open()?;
        let log_start = stdout
            .metadata()
            .with_context(|| format!("reading the length of {}", log.display()))?
            .len();
        let mut command = Command::new(binary);
        command
            .args(args)
            .env_clear()
            .stdin(stdin)
            .stdout(stdout)
            .stderr(open()?);
        if let Some(dir) = dir {
            command.current_dir(dir);
        }
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
        let name = log
            .file_stem()
            .map_or_else(|| "kubesink".into(), |s| s.to_string_lossy().into_owned());
        Ok(Self {
            child: Some(child),
            log: log.to_owned(),
            log_start: usize::try_from(log_start).unwrap_or(usize::MAX),
            name,
            addr: None,
        })
    }

    /// Its name in messages: the stem of its log file.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its process id (`None` once killed or waited for).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Everything logged to its log file so far (by every process started
    /// with it). Panics if it holds a test secret
    /// ([`assert_no_test_secret`]): every assertion on the log reads it
    /// through here.
    pub fn log(&self) -> String {
        let text = std::fs::read(&self.log)
            .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
            .unwrap_or_default();
        assert_no_test_secret(&self.log.display().to_string(), &text);
        text
    }

    /// What this process (not an earlier one with the same log file) has
    /// logged so far.
    pub fn own_log(&self) -> String {
        let log = self.log();
        log.get(self.log_start..).unwrap_or_default().to_owned()
    }

    /// The log file.
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// The last `n` lines of its log.
    pub fn tail(&self, n: usize) -> String {
        tail(&self.log(), n)
    }

    /// Its exit status if it has exited (`None` while it runs; an error
    /// once it was killed or waited for).
    pub fn exited(&mut self) -> anyhow::Result<Option<ExitStatus>> {
        let name = &self.name;
        self.child
            .as_mut()
            .with_context(|| format!("kubesink {name} was stopped already"))?
            .try_wait()
            .with_context(|| format!("checking the kubesink process {name}"))
    }

    /// Whether it is still running.
    pub fn running(&mut self) -> bool {
        matches!(self.exited(), Ok(None))
    }

    /// Fails, with the tail of its log, unless it is still running.
    pub fn check_alive(&mut self) -> anyhow::Result<()> {
        match self.exited()? {
            None => Ok(()),
            Some(status) => bail!(
                "kubesink {} exited ({status}); its log:\n{}",
                self.name,
                self.tail(30)
            ),
        }
    }

    /// Waits until a log line satisfies `matches` (returning it), failing
    /// with the log's tail if the process exits or `timeout` passes.
    pub async fn wait_for_log(
        &mut self,
        what: &str,
        timeout: Duration,
        matches: impl Fn(&str) -> bool,
    ) -> anyhow::Result<String> {
        let mut found = None;
        self.wait_until(what, timeout, |ks| {
            found = ks
                .log()
                .lines()
                .find(|line| matches(line))
                .map(str::to_owned);
            found.is_some()
        })
        .await?;
        found.with_context(|| format!("kubesink {}: {what} not found", self.name))
    }

    /// Waits until its log holds `needle` at least `times` times, failing
    /// with the log's tail if the process exits or `timeout` passes.
    pub async fn wait_for_count(
        &mut self,
        needle: &str,
        times: usize,
        timeout: Duration,
    ) -> anyhow::Result<()> {
        let what = format!("`{needle}` {times} times");
        self.wait_until(&what, timeout, |ks| {
            ks.log().matches(needle).count() >= times
        })
        .await
    }

    /// Checks `done` (on its log) every 100 ms until it holds.
    async fn wait_until(
        &mut self,
        what: &str,
        timeout: Duration,
        mut done: impl FnMut(&Self) -> bool,
    ) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if done(self) {
                return Ok(());
            }
            if let Some(status) = self.exited()? {
                bail!(
                    "kubesink {} exited ({status}) before logging {what}; its log:\n{}",
                    self.name,
                    self.tail(60)
                );
            }
            if Instant::now() >= deadline {
                bail!(
                    "kubesink {} did not log {what} within {timeout:?}; its log:\n{}",
                    self.name,
                    self.tail(60)
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The address of its operations server, from the `listening on
    /// http://ADDR` it logs (waiting up to `timeout` for it).
    pub async fn listen_addr(&mut self, timeout: Duration) -> anyhow::Result<SocketAddr> {
        if let Some(addr) = self.addr {
            return Ok(addr);
        }
        let mut found = None;
        self.wait_until("its listen address", timeout, |ks| {
            found = ks
                .own_log()
                .lines()
                .find(|l| l.contains("listening on http://"))
                .map(str::to_owned);
            found.is_some()
        })
        .await?;
        let line = found.context("no listen address")?;
        let addr = line
            .split("listening on http://")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .with_context(|| format!("no address in {line:?}"))?;
        let addr = addr
            .parse()
            .with_context(|| format!("kubesink {}: listen address {addr}", self.name))?;
        self.addr = Some(addr);
        Ok(addr)
    }

    /// `GET path` on its operations server (see [`listen_addr`](Self::listen_addr)):
    /// status code and body.
    pub async fn get(&mut self, path: &str) -> anyhow::Result<(u16, String)> {
        let addr = self.listen_addr(Duration::from_secs(120)).await?;
        http_get(addr, path).await
    }

    /// Its sink and watch metrics (the `kubesink_sink_*` and
    /// `kubesink_watch*` lines of `/metrics`), or why they could not be
    /// read: for the message of a failed wait.
    pub async fn sink_metrics(&mut self) -> String {
        match self.get("/metrics").await {
            Ok((_, text)) => text
                .lines()
                .filter(|l| l.starts_with("kubesink_sink_") || l.starts_with("kubesink_watch"))
                .collect::<Vec<_>>()
                .join("\n"),
            Err(e) => format!("(no metrics: {e:#})"),
        }
    }

    /// Sends `signal` (e.g. `-TERM`) via `kill`, no unsafe code.
    pub fn signal(&self, signal: &str) -> anyhow::Result<()> {
        let pid = self
            .pid()
            .with_context(|| format!("kubesink {} was stopped already", self.name))?
            .to_string();
        let status = Command::new("kill")
            .args([signal, &pid])
            .status()
            .with_context(|| format!("running kill {signal}"))?;
        if !status.success() {
            bail!("kill {signal} {pid} ({}) failed ({status})", self.name);
        }
        Ok(())
    }

    /// SIGSTOP: frozen with its connections open.
    pub fn pause(&self) -> anyhow::Result<()> {
        self.signal("-STOP")
    }

    /// SIGCONT.
    pub fn resume(&self) -> anyhow::Result<()> {
        self.signal("-CONT")
    }

    /// Waits up to `timeout` for it to exit and returns its status; kills
    /// it, failing with its log's tail, if it does not.
    pub async fn wait_exit(&mut self, timeout: Duration) -> anyhow::Result<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.exited()? {
                self.child = None;
                return Ok(status);
            }
            if Instant::now() >= deadline {
                self.kill();
                bail!(
                    "kubesink {} did not exit within {timeout:?}; its log:\n{}",
                    self.name,
                    self.tail(40)
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// SIGTERM, then [`wait_exit`](Self::wait_exit).
    pub async fn terminate(&mut self, timeout: Duration) -> anyhow::Result<ExitStatus> {
        self.signal("-TERM")?;
        self.wait_exit(timeout).await
    }

    /// SIGKILL, as a crash would; waits for it to be gone.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            // Errors mean it has already exited and been reaped.
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Peak resident set size so far (`VmHWM` of /proc/PID/status), bytes.
    pub fn peak_rss(&self) -> anyhow::Result<u64> {
        let pid = self
            .pid()
            .with_context(|| format!("kubesink {} was stopped already", self.name))?;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
            .with_context(|| format!("reading /proc/{pid}/status of kubesink {}", self.name))?;
        let kb: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .with_context(|| format!("no VmHWM in /proc/{pid}/status"))?;
        Ok(kb * 1024)
    }
}

impl Drop for Kubesink {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The last `n` lines of `text`.
pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// A bare HTTP/1.1 `GET path` to `addr`: status code and body.
pub async fn http_get(addr: SocketAddr, path: &str) -> anyhow::Result<(u16, String)> {
    let mut stream = tokio::net::TcpStream::connect(addr)
        .await
        .with_context(|| format!("connecting to {addr}"))?;
    stream
        .write_all(
            format!("GET {path} HTTP/1.1\r\nHost: kubesink\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
        .await?;
    let mut out = String::new();
    stream.read_to_string(&mut out).await?;
    let code = out
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .with_context(|| format!("GET {path} from {addr}: no status line in {out:?}"))?;
    let body = out
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Ok((code, body))
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

    #[tokio::test]
    async fn terminate_returns_the_exit_status_and_counts_log_lines() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = dir.path().join("trap.log");
        // Logs `ready` twice, then exits 7 on SIGTERM.
        let script =
            "trap 'echo bye; exit 7' TERM; echo ready; echo ready; while :; do sleep 0.05; done";
        let mut process =
            Kubesink::start(Path::new("sh"), &["-c".into(), script.into()], &[], &log)
                .expect("start sh");
        assert_eq!(process.name(), "trap");
        process
            .wait_for_count("ready", 2, Duration::from_secs(10))
            .await
            .expect("ready twice");
        let error = process
            .wait_for_count("ready", 3, Duration::from_millis(300))
            .await
            .expect_err("only twice");
        assert!(error.to_string().contains("within"), "{error}");
        assert!(process.running());
        let status = process
            .terminate(Duration::from_secs(10))
            .await
            .expect("exits on SIGTERM");
        assert_eq!(status.code(), Some(7));
        assert!(process.log().ends_with("bye\n"), "{}", process.log());
        assert!(!process.running());
    }

    #[tokio::test]
    async fn a_piped_stdin_reaches_the_process() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = dir.path().join("cat.log");
        let (mut process, mut stdin) =
            Kubesink::start_piped(Path::new("cat"), &[], &[], &log).expect("start cat");
        std::io::Write::write_all(&mut stdin, b"through the pipe\n").expect("write");
        drop(stdin);
        let status = process
            .wait_exit(Duration::from_secs(10))
            .await
            .expect("cat ends at end of input");
        assert!(status.success());
        assert_eq!(process.log(), "through the pipe\n");
    }
}
