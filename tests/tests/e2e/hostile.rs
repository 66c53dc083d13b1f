//! Hostile sinks (issue 6, item 3): each misbehaviour of the test guests in
//! `tests/guests/` is contained by a limit, a deadline or a denial, reported
//! with the sink's name and the cause, while a well-behaved sink in the same
//! runtime keeps delivering everything; a sink that keeps failing is backed
//! off, not spun.
//!
//! The `hostile` guest (`tests/guests/hostile`, one misbehaviour per `mode`
//! setting) probes the sandbox: files, environment, sockets, HTTP to a
//! denied host, HTTP bodies and SQL statements past the caps, a connection
//! it was not granted. It reports every attempt as `DENIED ...` or
//! `ESCAPED ...` in the fatal error it returns; every line must be
//! `DENIED`, and the local servers it aims at must see nothing. It also
//! blocks forever on host futures (a far-future monotonic-clock pollable,
//! `std::thread::sleep`, an HTTP server that never answers): the call
//! deadline must still fire.
//!
//! `host_*` tests drive one `kubesink_host::SinkInstance` through the host API and check
//! the exact error; `pipeline_*` tests run every hostile sink at once beside
//! the `counter` sink in one `Pipeline` and check the counters and the log
//! the runtime writes (captured with a `tracing` subscriber on the test's
//! single-threaded runtime, so every task's log lands in it).

use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use kubesink::config::Config;
use kubesink::ops::Ops;
use kubesink::ops::metrics::sample;
use kubesink::pipeline::{Pipeline, SinkReport};
use kubesink_host::sql::ConnectionConfig;
use kubesink_host::{
    CallError, FaultCause, Host, HostError, HostOptions, Limits, ModuleSource, SinkSpec,
};
use kubesink_normalize::record::{Entry, Record};
use kubesink_tests::guests::{self, guest_wasm};
use kubesink_tests::records;
use sqlx::Connection;

/// Package of the multi-mode hostile guest.
const HOSTILE: &str = "kubesink-guest-hostile";

fn events(n: usize) -> Vec<Entry> {
    (0..n)
        .map(|i| records::applied(Record::Event(records::event(&format!("ev-{i}"), 1, 1))))
        .collect()
}

/// A TCP server that accepts connections, counts them and never answers
/// (the sockets are held open until the test ends).
struct SilentServer {
    port: u16,
    accepted: Arc<AtomicUsize>,
    _task: tokio::task::JoinHandle<()>,
}

impl SilentServer {
    async fn start() -> anyhow::Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        let task = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((socket, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                held.push(socket);
            }
        });
        Ok(Self {
            port,
            accepted,
            _task: task,
        })
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

/// A host with SQLite connections `main` (granted) and `secret` (not
/// granted to any hostile sink) in `dir`.
fn host_in(dir: &Path) -> anyhow::Result<Host> {
    let url = |f: &str| format!("sqlite://{}?mode=rwc", dir.join(f).display());
    Ok(Host::new(HostOptions {
        cache_dir: Some(dir.join("cache")),
        sql: vec![
            ConnectionConfig::new("main", url("main.db")),
            ConnectionConfig::new("secret", url("secret.db")),
        ],
        kafka: Vec::new(),
    })?)
}

fn hostile_spec(
    name: &str,
    settings: &[(&str, String)],
    limits: Limits,
) -> anyhow::Result<SinkSpec> {
    guest_spec(name, HOSTILE, settings, &["main"], limits)
}

/// A sink of the workspace guest `package` (built on demand) with these
/// settings, SQL grants and limits; the e2e modules' one spec builder.
pub(crate) fn guest_spec(
    name: &str,
    package: &str,
    settings: &[(&str, String)],
    grants: &[&str],
    limits: Limits,
) -> anyhow::Result<SinkSpec> {
    Ok(SinkSpec {
        name: name.into(),
        module: ModuleSource::Path(guest_wasm(package)?),
        settings: settings
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .collect(),
        sql_grants: grants.iter().map(|g| (*g).to_owned()).collect(),
        limits,
    })
}

/// The lines of a probing mode's fatal error, after the host's prefix
/// `sink 'NAME': write failed (fatal): `; fails unless every line is a
/// denial.
fn denials(name: &str, err: &CallError) -> anyhow::Result<Vec<String>> {
    let CallError::Fatal(message) = err else {
        bail!("sink {name}: expected the guest's fatal report, got {err:?}");
    };
    let prefix = format!("sink '{name}': write failed (fatal): ");
    let Some(report) = message.strip_prefix(&prefix) else {
        bail!("sink {name}: the error does not start with `{prefix}`: {message}");
    };
    // The host escapes the guest's newlines (`\n`): one report, one line.
    ensure!(
        !report.contains('\n'),
        "sink {name}: a raw newline in: {report}"
    );
    let lines: Vec<String> = report.split("\\n").map(str::to_owned).collect();
    ensure!(!lines.is_empty(), "sink {name}: empty report");
    for line in &lines {
        ensure!(
            line.starts_with("DENIED "),
            "sink {name}: the sandbox let an attempt through: {line}"
        );
    }
    Ok(lines)
}

/// One probing mode: (mode, extra settings, HTTP allow-list, what its
/// report must mention).
type ProbeCase = (
    &'static str,
    Vec<(&'static str, String)>,
    Vec<String>,
    Vec<&'static str>,
);

/// Every probe of the sandbox is denied: files, environment, sockets, HTTP
/// to a host off the allow-list, a body past the HTTP cap, a statement and
/// a parameter past the SQL cap, a connection not granted. The servers the
/// guest aims at see no connection and no datagram.
#[tokio::test]
async fn host_sandbox_probes_are_all_denied() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let host = host_in(dir.path())?;
    let target = SilentServer::start().await?;
    let udp = tokio::net::UdpSocket::bind("127.0.0.1:0").await?;
    let udp_port = udp.local_addr()?.port();
    let caps = Limits {
        max_statement_bytes: 64 << 10,
        max_http_request_bytes: 64 << 10,
        ..Limits::default()
    };
    let cases: Vec<ProbeCase> = vec![
        // (mode, settings, http allow-list, needles in the report)
        (
            "files",
            vec![],
            vec![],
            vec!["read /etc/passwd", "read_dir /", "create ./escape"],
        ),
        (
            "env",
            vec![],
            vec![],
            vec!["environment variables", "env var PATH", "arguments"],
        ),
        (
            "sockets",
            vec![
                ("port", target.port.to_string()),
                ("udp_port", udp_port.to_string()),
            ],
            vec![],
            vec!["tcp connect", "tcp listen", "udp send", "dns lookup"],
        ),
        (
            "http-denied",
            vec![("url", format!("{}/steal", target.url()))],
            vec!["https://allowed.example.com".into()],
            vec!["HttpRequestDenied"],
        ),
        (
            "big-body",
            vec![
                ("url", format!("{}/upload", target.url())),
                ("bytes", (1 << 20).to_string()),
            ],
            vec![target.url()],
            vec!["HttpRequestBodySize"],
        ),
        (
            "big-statement",
            vec![("bytes", (1 << 20).to_string())],
            vec![],
            vec![
                "statement of",
                "parameter of",
                "TooLarge",
                "malformed statement",
                "Rejected",
            ],
        ),
        (
            "sql-denied",
            vec![("connection", "secret".into())],
            vec![],
            vec!["open sql connection secret", "not granted"],
        ),
    ];
    for (mode, mut settings, allow, needles) in cases {
        settings.push(("mode", mode.to_owned()));
        let name = format!("probe-{mode}");
        let limits = Limits {
            http_allow: allow,
            ..caps.clone()
        };
        let mut sink = host
            .load(hostile_spec(&name, &settings, limits)?)
            .await
            .with_context(|| format!("loading {name}"))?;
        let started = Instant::now();
        let err = sink
            .write(&events(2))
            .await
            .expect_err("a probing sink reports its attempts as a fatal error");
        let lines = denials(&name, &err)?;
        let report = lines.join("\n");
        eprintln!("{name}:\n{report}\n");
        for needle in needles {
            ensure!(
                report.contains(needle),
                "{name}: `{needle}` not in:\n{report}"
            );
        }
        ensure!(
            started.elapsed() < Duration::from_secs(10),
            "{name}: denials are immediate, took {:?}",
            started.elapsed()
        );
        // A guest error is not a fault: the instance stays live.
        ensure!(
            sink.is_live() && sink.stats().faults == 0,
            "{name}: {:?}",
            sink.stats()
        );
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        target.accepted(),
        0,
        "no connection reached the target server"
    );
    let mut buf = [0u8; 64];
    assert!(
        udp.try_recv(&mut buf).is_err(),
        "no datagram reached the UDP socket"
    );
    assert!(
        !Path::new("escape").exists(),
        "no file created in the host's directory"
    );
    assert!(
        !Path::new("/tmp/kubesink-hostile").exists(),
        "no file created in /tmp"
    );
    Ok(())
}

/// The SQL errors a guest sees (a statement past the cap, a statement the
/// database rejects) name the connection and the database's address, never
/// the user's password from the DSN the host holds. Needs MariaDB.
#[tokio::test]
async fn mariadb_sql_errors_a_guest_sees_carry_no_credentials() -> anyhow::Result<()> {
    let db = kubesink_tests::mariadb::fresh_database("hostile_creds").await?;
    let parsed = url::Url::parse(db.url())?;
    let password = parsed.password().unwrap_or_default().to_owned();
    ensure!(password.len() >= 4, "the test server's DSN has a password");
    let dir = tempfile::tempdir()?;
    let host = Host::new(HostOptions {
        cache_dir: Some(dir.path().join("cache")),
        sql: vec![ConnectionConfig::new("main", db.url())],
        kafka: Vec::new(),
    })?;
    let limits = Limits {
        max_statement_bytes: 64 << 10,
        ..Limits::default()
    };
    let settings = vec![
        ("mode", "big-statement".to_owned()),
        ("bytes", (1 << 20).to_string()),
    ];
    let mut sink = host.load(hostile_spec("creds", &settings, limits)?).await?;
    let err = sink.write(&events(1)).await.expect_err("probe report");
    let report = denials("creds", &err)?.join("\n");
    ensure!(
        report.contains("TooLarge") && report.contains("Rejected"),
        "{report}"
    );
    ensure!(report.contains("sql connection 'main'"), "{report}");
    let decoded = percent_encoding::percent_decode_str(&password)
        .decode_utf8_lossy()
        .into_owned();
    ensure!(
        !report.contains(&password) && !report.contains(&decoded),
        "the password leaked to the guest: {report}"
    );
    host.sql_pools().close().await;
    db.drop_database().await?;
    Ok(())
}

/// A write blocked on a host future (a pollable a century away,
/// `std::thread::sleep` for a day, an HTTP server that never answers) is
/// stopped by the call deadline, reported as a timeout naming the sink, and
/// the next write runs in a rebuilt instance (and is stopped again). The
/// same holds in `init`.
#[tokio::test]
async fn host_write_that_never_returns_hits_the_deadline() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let host = host_in(dir.path())?;
    let silent = SilentServer::start().await?;
    let deadline = Duration::from_millis(800);
    for mode in ["hang-clock", "sleep", "hang-http"] {
        let name = format!("stuck-{mode}");
        let limits = Limits {
            call_timeout: deadline,
            http_allow: vec![silent.url()],
            // Longer than the call deadline: the call deadline must win.
            http_timeout: Duration::from_secs(600),
            ..Limits::default()
        };
        let settings = vec![("mode", mode.to_owned()), ("url", silent.url())];
        let mut sink = host.load(hostile_spec(&name, &settings, limits)?).await?;
        for attempt in 1..=2u64 {
            let started = Instant::now();
            let err = sink.write(&events(1)).await.expect_err("never returns");
            let took = started.elapsed();
            match &err {
                CallError::Fault {
                    cause: FaultCause::Timeout,
                    detail,
                } => ensure!(
                    detail.contains(&format!("sink '{name}'")) && detail.contains("deadline"),
                    "{detail}"
                ),
                other => bail!("{name}: expected a timeout fault, got {other:?}"),
            }
            ensure!(err.is_retryable(), "a timeout is retryable");
            ensure!(
                took >= deadline && took < deadline + Duration::from_secs(2),
                "{name}: stopped after {took:?}, deadline {deadline:?}"
            );
            let stats = sink.stats();
            ensure!(
                stats.faults == attempt && stats.builds == attempt,
                "{name}: rebuilt for each attempt: {stats:?}"
            );
            ensure!(!sink.is_live(), "{name}: the stuck store was discarded");
        }
    }
    ensure!(
        silent.accepted() >= 2,
        "hang-http reached its silent server"
    );

    // Stuck in `init`: loading fails with a retryable timeout naming the sink.
    let limits = Limits {
        call_timeout: deadline,
        ..Limits::default()
    };
    let settings = vec![("mode", "init-hang-clock".to_owned())];
    let started = Instant::now();
    let err = host
        .load(hostile_spec("stuck-init", &settings, limits)?)
        .await
        .expect_err("init never returns");
    match &err {
        HostError::Init {
            sink,
            source:
                CallError::Fault {
                    cause: FaultCause::Timeout,
                    ..
                },
            ..
        } => ensure!(sink == "stuck-init"),
        other => bail!("expected an init timeout, got {other:?}"),
    }
    ensure!(
        err.is_retryable() && err.to_string().contains("stuck-init"),
        "{err}"
    );
    ensure!(started.elapsed() < deadline + Duration::from_secs(5));
    Ok(())
}

/// Collects what the runtime logs, for assertions.
#[derive(Clone, Default)]
pub(crate) struct LogBuf(Arc<Mutex<Vec<u8>>>);

impl Write for LogBuf {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl LogBuf {
    /// The log so far; panics if it holds a test secret.
    pub(crate) fn text(&self) -> String {
        let text =
            String::from_utf8_lossy(&self.0.lock().unwrap_or_else(|e| e.into_inner())).into_owned();
        kubesink_tests::binary::assert_no_test_secret("of the e2e subscriber", &text);
        text
    }
}

/// The process-wide subscriber writing to one [`LogBuf`], installed on
/// first use. (A thread-scoped `set_default` misses events when other
/// tests' threads registered the same callsites first.) Tests share it:
/// each reads only the events of its own, uniquely named sinks.
pub(crate) fn capture_log() -> LogBuf {
    static LOG: std::sync::OnceLock<LogBuf> = std::sync::OnceLock::new();
    LOG.get_or_init(|| {
        let buf = LogBuf::default();
        let writer = buf.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .with_max_level(tracing::Level::INFO)
            .finish();
        tracing::subscriber::set_global_default(subscriber)
            .expect("no other global tracing subscriber in the e2e binary");
        buf
    })
    .clone()
}

/// Splits a captured log into events (a multi-line message stays with its
/// event's timestamp line).
pub(crate) fn log_events(text: &str) -> Vec<String> {
    let mut events: Vec<String> = Vec::new();
    for line in text.lines() {
        let starts_event = line.len() > 4 && line[..4].bytes().all(|b| b.is_ascii_digit());
        match events.last_mut() {
            Some(last) if !starts_event => {
                last.push('\n');
                last.push_str(line);
            }
            _ => events.push(line.to_owned()),
        }
    }
    events
}

/// True when `event` carries the field `sink=NAME`.
pub(crate) fn tagged(event: &str, name: &str) -> bool {
    let field = format!("sink={name}");
    event.split_whitespace().any(|w| w == field)
}

/// `GET /metrics` from the operations server at `addr` (HTTP/1.0, read to
/// the end).
pub(crate) async fn get_metrics(addr: std::net::SocketAddr) -> anyhow::Result<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    stream
        .write_all(b"GET /metrics HTTP/1.0\r\nHost: kubesink\r\n\r\n")
        .await?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await?;
    let (head, body) = response
        .split_once("\r\n\r\n")
        .context("an HTTP response")?;
    ensure!(
        head.starts_with("HTTP/1.0 200") || head.starts_with("HTTP/1.1 200"),
        "{head}"
    );
    Ok(body.to_owned())
}

/// Reads how many distinct uids the `counter` sink stored.
async fn counter_rows(db: &Path) -> anyhow::Result<i64> {
    let mut conn = sqlx::SqliteConnection::connect(&format!("sqlite://{}", db.display())).await?;
    let (n,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM received")
        .fetch_one(&mut conn)
        .await?;
    Ok(n)
}

fn report<'a>(reports: &'a [SinkReport], name: &str) -> anyhow::Result<&'a SinkReport> {
    reports
        .iter()
        .find(|r| r.name == name)
        .with_context(|| format!("no report for sink {name}"))
}

/// Every hostile sink at once, beside `counter`, in one pipeline: the good
/// sink gets every record, each hostile sink fails every record (or, for
/// `noisy`, delivers them with its output rate-limited), and the log names
/// each sink with its cause.
#[tokio::test]
async fn pipeline_hostile_sinks_beside_a_good_one_are_contained_and_reported() -> anyhow::Result<()>
{
    let log = capture_log();
    let dir = tempfile::tempdir()?;
    let db = dir.path().join("counter.db");
    let secret = dir.path().join("secret.db");
    let target = SilentServer::start().await?;
    let silent = SilentServer::start().await?;
    let udp = tokio::net::UdpSocket::bind("127.0.0.1:0").await?;
    let udp_port = udp.local_addr()?.port();
    let hostile = guest_wasm(HOSTILE)?;
    let common = "records: [events]\n    batch: { max_records: 4, max_delay: 0s }\n    retry: { initial: 10ms, max: 50ms }";
    let sink = |name: &str, module: &Path, extra: &str| {
        format!(
            "  - name: h-{name}\n    module: '{}'\n    {common}\n{extra}",
            module.display()
        )
    };
    let probe = |name: &str, settings: &str, extra: &str| {
        sink(
            name,
            &hostile,
            &format!("    settings: {{ mode: {name}{settings} }}\n{extra}"),
        )
    };
    let stuck = "    limits: { call_timeout: 400ms }\n";
    let mut sinks = vec![
        sink(
            "counter",
            &guest_wasm(guests::COUNTER)?,
            "    connections: [main]\n",
        ),
        sink("spin", &guest_wasm(guests::SPIN)?, stuck),
        sink(
            "balloon",
            &guest_wasm(guests::BALLOON)?,
            "    limits: { memory: 16Mi }\n",
        ),
        sink("crash", &guest_wasm(guests::CRASH)?, ""),
        sink(
            "noisy",
            &guest_wasm(guests::NOISY)?,
            "    settings: { lines: '20000' }\n    limits: { log_rate: 8Ki }\n",
        ),
        probe("files", "", ""),
        probe("env", "", ""),
        probe(
            "sockets",
            &format!(", port: '{}', udp_port: '{udp_port}'", target.port),
            "",
        ),
        probe(
            "http-denied",
            &format!(", url: '{}/steal'", target.url()),
            "    allow_hosts: ['https://allowed.example.com']\n",
        ),
        probe(
            "big-body",
            &format!(", url: '{}/upload', bytes: '1048576'", target.url()),
            &format!("    allow_hosts: ['{}']\n", target.url()),
        ),
        probe(
            "big-statement",
            ", bytes: '1048576'",
            "    connections: [main]\n    limits: { max_statement: 64Ki }\n",
        ),
        probe(
            "sql-denied",
            ", connection: secret",
            "    connections: [main]\n",
        ),
        probe("fatal", "", ""),
        probe("sleep", "", stuck),
        probe("hang-clock", "", stuck),
        probe(
            "hang-http",
            &format!(", url: '{}'", silent.url()),
            &format!("{stuck}    allow_hosts: ['{}']\n", silent.url()),
        ),
    ];
    let yaml = format!(
        "connections:\n  main: {{ driver: sqlite, path: '{}' }}\n  secret: {{ driver: sqlite, path: '{}' }}\nsinks:\n{}",
        db.display(),
        secret.display(),
        sinks.join("")
    );
    sinks.clear();
    let mut plan = Config::parse(&yaml, "hostile test config")?.resolve("hostile test config")?;
    for s in &mut plan.sinks {
        // The HTTP body cap is not a config key; the host API sets it.
        s.spec.limits.max_http_request_bytes = 64 << 10;
    }
    let host = Host::new(plan.host.clone())?;
    let ops = Ops::new();
    let server = kubesink::ops::server::serve("127.0.0.1:0", ops.clone()).await?;
    let pipeline = Pipeline::start_with_ops(&host, plan.sinks.clone(), ops.clone()).await?;
    const N: usize = 12;
    let started = Instant::now();
    for e in events(N) {
        pipeline.send(e).await;
    }
    let reports = tokio::time::timeout(Duration::from_secs(240), pipeline.finish())
        .await
        .context("the pipeline drains although most sinks never succeed")?;
    let elapsed = started.elapsed();

    let counter = report(&reports, "h-counter")?;
    assert_eq!(
        (counter.delivered, counter.failed),
        (N as u64, 0),
        "{counter:?}"
    );
    assert_eq!(
        counter_rows(&db).await?,
        N as i64,
        "the counter sink stored every uid"
    );
    let noisy = report(&reports, "h-noisy")?;
    assert_eq!((noisy.delivered, noisy.failed), (N as u64, 0), "{noisy:?}");

    let text = log.text();
    let events = log_events(&text);
    if std::env::var_os("KUBESINK_TEST_DUMP_LOG").is_some() {
        eprintln!("captured log ({} bytes):\n{text}", text.len());
    }
    assert!(
        !text.contains("ESCAPED"),
        "a probe escaped the sandbox:\n{text}"
    );
    // (sink, what its log lines must say)
    let expected: &[(&str, &str)] = &[
        ("spin", "cause=timeout"),
        ("balloon", "cause=memory"),
        ("crash", "cause=trap"),
        ("sleep", "cause=timeout"),
        ("hang-clock", "cause=timeout"),
        ("hang-http", "cause=timeout"),
        ("files", "DENIED read /etc/passwd"),
        ("env", "DENIED env var PATH"),
        ("sockets", "DENIED tcp connect"),
        ("http-denied", "HttpRequestDenied"),
        ("big-body", "HttpRequestBodySize"),
        ("big-statement", "TooLarge"),
        ("sql-denied", "not granted"),
        ("fatal", "always fatal"),
    ];
    for (mode, cause) in expected {
        let name = format!("h-{mode}");
        let r = report(&reports, &name)?;
        assert_eq!((r.delivered, r.failed), (0, N as u64), "{r:?}");
        assert!(r.faults > 0, "{r:?}");
        // A failure's log event names the sink (the `sink=NAME` field and
        // `sink 'NAME'` in the message) and the cause.
        let named = format!("sink '{name}'");
        let found = events
            .iter()
            .any(|e| tagged(e, &name) && e.contains(&named) && e.contains(*cause));
        assert!(
            found,
            "no log event names sink {name} with `{cause}`; its events:\n{}",
            events
                .iter()
                .filter(|e| tagged(e, &name))
                .take(5)
                .cloned()
                .collect::<Vec<_>>()
                .join("\n")
        );
    }

    // noisy's 2 × 20,000 lines of ~100 bytes were cut to about 8 KiB/s.
    let noisy_lines = events
        .iter()
        .filter(|e| tagged(e, "h-noisy") && e.contains("noisy line"))
        .count();
    let budget = (8192.0 * (elapsed.as_secs_f64() + 2.0) / 100.0) as usize;
    assert!(
        noisy_lines > 0 && noisy_lines <= budget,
        "{noisy_lines} noisy lines logged in {elapsed:?} (budget {budget})"
    );
    assert!(
        events.iter().any(|e| tagged(e, "h-noisy")
            && e.contains("sink output over the log rate limit was dropped")),
        "the drop is reported"
    );

    // `/metrics` counts the faults by sink and cause.
    let metrics = get_metrics(server.addr).await?;
    for (name, cause) in [
        ("spin", "timeout"),
        ("balloon", "memory"),
        ("crash", "trap"),
        ("hang-clock", "timeout"),
        ("hang-http", "timeout"),
        ("files", "fatal"),
    ] {
        let labels = format!("sink=\"h-{name}\",cause=\"{cause}\"");
        let faults = sample(&metrics, "kubesink_sink_faults_total", &labels);
        assert!(
            faults.is_some_and(|n| n >= 1.0),
            "kubesink_sink_faults_total{{{labels}}} = {faults:?} in:\n{metrics}"
        );
    }
    assert_eq!(
        sample(
            &metrics,
            "kubesink_sink_records_delivered_total",
            "sink=\"h-counter\""
        ),
        Some(N as f64),
        "{metrics}"
    );

    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(target.accepted(), 0, "nothing reached the forbidden server");
    let mut buf = [0u8; 64];
    assert!(udp.try_recv(&mut buf).is_err(), "no datagram was sent");
    assert!(
        silent.accepted() > 0,
        "hang-http did reach its (allowed) server"
    );
    Ok(())
}

/// A sink that fails every call, with a retryable error or a trap, is
/// backed off: over a 3 s window with `retry: {initial: 20ms, max: 200ms}`
/// it is called a few dozen times (delays are at least 10 % of the bound,
/// on average about half the 200 ms cap), not thousands, while the good
/// sink beside it delivers everything at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipeline_failing_sinks_are_backed_off_not_spun() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let db = dir.path().join("counter.db");
    let hostile = guest_wasm(HOSTILE)?;
    let retry = "records: [events]\n    batch: { max_records: 10, max_delay: 0s }\n    retry: { initial: 20ms, max: 200ms }";
    let yaml = format!(
        "connections:\n  main: {{ driver: sqlite, path: '{}' }}\nsinks:\n\
         \x20 - name: counter\n    module: '{}'\n    connections: [main]\n    {retry}\n\
         \x20 - name: retryable\n    module: '{}'\n    settings: {{ mode: retryable }}\n    {retry}\n\
         \x20 - name: crash\n    module: '{}'\n    {retry}\n",
        db.display(),
        guest_wasm(guests::COUNTER)?.display(),
        hostile.display(),
        guest_wasm(guests::CRASH)?.display(),
    );
    let plan = Config::parse(&yaml, "backoff test config")?.resolve("backoff test config")?;
    let host = Host::new(plan.host.clone())?;
    let pipeline = Pipeline::start(&host, plan.sinks.clone()).await?;
    const N: usize = 200;
    for e in events(N) {
        pipeline.send(e).await;
    }
    let window = Duration::from_secs(3);
    let half = pipeline.reports();
    tokio::time::sleep(window).await;
    let reports = pipeline.reports();

    let counter = report(&reports, "counter")?;
    assert_eq!(counter.delivered, N as u64, "{counter:?}");
    let calls = |name: &str| -> anyhow::Result<u64> {
        let before = report(&half, name)?.batches;
        Ok(report(&reports, name)?.batches - before)
    };
    // Without backoff a failing call costs well under a millisecond (a
    // trap plus a rebuild: a few ms): thousands of calls in 3 s. The floor
    // of 20 ms per delay at the cap allows at most 150; the mean (~110 ms)
    // gives about 30.
    let retryable = report(&reports, "retryable")?;
    let r_calls = calls("retryable")?;
    assert!(
        (8..=100).contains(&r_calls),
        "retryable: {r_calls} calls in {window:?}: {retryable:?}"
    );
    assert_eq!(retryable.delivered + retryable.failed, 0, "{retryable:?}");
    assert!(retryable.retries >= r_calls - 1, "{retryable:?}");
    let crash = report(&reports, "crash")?;
    let c_calls = calls("crash")?;
    eprintln!("calls in {window:?}: retryable {r_calls}, crash {c_calls}");
    assert!(
        (8..=100).contains(&c_calls),
        "crash: {c_calls} calls in {window:?}: {crash:?}"
    );
    assert!(crash.failed > 0 && crash.delivered == 0, "{crash:?}");
    assert!(crash.faults >= c_calls, "every call faulted: {crash:?}");
    // The queue is still there: nothing was dropped to make room.
    let depth = pipeline
        .depths()
        .into_iter()
        .find(|(n, _)| n == "retryable")
        .map(|(_, d)| d)
        .context("depth of retryable")?;
    assert!(
        depth + 10 >= N,
        "the retryable sink's records wait, queued: {depth}"
    );
    Ok(())
}
