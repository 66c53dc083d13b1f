//! The sandbox holds against a hostile sink (issue 12): HTTP egress, the
//! host's log, secrets. Each test drives the `hostile` guest's
//! `http-probe-*` modes (`tests/guests/hostile/src/http_probes.rs`).
//!
//! - A name the allow-list grants may not lead to loopback: `localhost`,
//!   `*`, and every spelling of 127.0.0.1 a URL allows are refused unless a
//!   rule names the address; a rule naming it lets the request through.
//! - KubeDL's `--event-storage aliyun-sls` grant is the configured project
//!   only, also against a `host` header naming another project.
//! - Text a sink returns cannot forge a log line, and it is charged to the
//!   sink's output budget, shared by its instances and kept across rebuilds.
//! - A response body over the sink's cap fails that request, naming the
//!   cap; redirects are not followed, inside the allow-list or out of it.
//!
//! Every target is a server of the test on 127.0.0.1.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use kubesink::config::Config;
use kubesink::pipeline::Pipeline;
use kubesink_host::{CallError, Host, HostOptions, Limits, SinkSpec};
use kubesink_normalize::record::{Entry, Record};
use kubesink_tests::guests::guest_wasm;
use kubesink_tests::records;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::hostile::{capture_log, log_events, tagged};

const HOSTILE: &str = "kubesink-guest-hostile";

fn events(n: usize) -> Vec<Entry> {
    (0..n)
        .map(|i| records::applied(Record::Event(records::event(&format!("ev-{i}"), 1, 1))))
        .collect()
}

fn host_in(dir: &std::path::Path) -> anyhow::Result<Host> {
    Ok(Host::new(HostOptions {
        cache_dir: Some(dir.join("cache")),
        ..HostOptions::default()
    })?)
}

fn spec(name: &str, settings: &[(&str, String)], limits: Limits) -> anyhow::Result<SinkSpec> {
    crate::hostile::guest_spec(name, HOSTILE, settings, &[], limits)
}

/// An HTTP/1.1 server on 127.0.0.1 that reads each request (head and
/// `content-length` body), counts it and answers `200` with an empty body
/// ([`Receiver::start`]) or with a response of the test's
/// ([`Receiver::answering`]).
pub(crate) struct Receiver {
    pub(crate) port: u16,
    requests: Arc<AtomicUsize>,
    _task: tokio::task::JoinHandle<()>,
}

impl Receiver {
    pub(crate) async fn start() -> anyhow::Result<Self> {
        Self::answering(
            b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n".to_vec(),
        )
        .await
    }

    /// A server that answers every request with `response` (status line,
    /// headers and body, as sent), then closes the connection.
    pub(crate) async fn answering(response: Vec<u8>) -> anyhow::Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let requests = Arc::new(AtomicUsize::new(0));
        let count = requests.clone();
        let response = Arc::new(response);
        let task = tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                let count = count.clone();
                let response = response.clone();
                tokio::spawn(async move {
                    let mut head = Vec::new();
                    let mut buf = [0u8; 8192];
                    let body_start = loop {
                        let Ok(n) = socket.read(&mut buf).await else {
                            return;
                        };
                        if n == 0 {
                            return;
                        }
                        head.extend_from_slice(&buf[..n]);
                        if let Some(i) = head.windows(4).position(|w| w == b"\r\n\r\n") {
                            break i + 4;
                        }
                    };
                    let text = String::from_utf8_lossy(&head[..body_start]).to_ascii_lowercase();
                    let length: usize = text
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:"))
                        .and_then(|v| v.trim().parse().ok())
                        .unwrap_or(0);
                    let mut left = length.saturating_sub(head.len() - body_start);
                    while left > 0 {
                        match socket.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => left = left.saturating_sub(n),
                        }
                    }
                    count.fetch_add(1, Ordering::SeqCst);
                    let _ = socket.write_all(&response).await;
                });
            }
        });
        Ok(Self {
            port,
            requests,
            _task: task,
        })
    }

    pub(crate) fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}

/// Runs `http-probe-each` over `targets` under `allow` and returns the
/// report's lines (`DENIED ...` / `ESCAPED ...`).
async fn probe_each(
    host: &Host,
    name: &str,
    allow: Vec<String>,
    targets: &[String],
) -> anyhow::Result<Vec<String>> {
    let limits = Limits {
        http_allow: allow,
        ..Limits::default()
    };
    Ok(probe_with(host, name, limits, targets).await?.1)
}

/// Runs `http-probe-each` over `targets` under `limits` and returns the
/// error the call failed with (as the host words it, naming the sink) and
/// the report's lines.
async fn probe_with(
    host: &Host,
    name: &str,
    limits: Limits,
    targets: &[String],
) -> anyhow::Result<(String, Vec<String>)> {
    let settings = vec![
        ("mode", "http-probe-each".to_owned()),
        ("url", targets.join(" ")),
    ];
    let mut sink = host
        .load(spec(name, &settings, limits)?)
        .await
        .with_context(|| format!("loading {name}"))?;
    let err = sink.write(&events(1)).await.expect_err("a probe report");
    let CallError::Fatal(message) = &err else {
        bail!("{name}: expected the probe report, got {err:?}");
    };
    let report = message
        .split_once("(fatal): ")
        .map(|(_, r)| r)
        .unwrap_or(message);
    let lines = report.split("\\n").map(str::to_owned).collect();
    Ok((message.clone(), lines))
}

/// A rule naming a host (`localhost`) or any host (`*`) does not grant the
/// loopback address behind it, whatever way the URL spells it (a name, a
/// decimal or short IPv4 form, IPv4-mapped IPv6, `::1`, `0.0.0.0`): each
/// request is `HTTP-request-denied` and the server on 127.0.0.1 sees none.
/// A rule naming 127.0.0.1 (or 127.0.0.0/8) lets `localhost` through.
#[tokio::test]
async fn host_http_names_leading_to_loopback_are_refused() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let host = host_in(dir.path())?;
    let server = Receiver::start().await?;
    let p = server.port;

    let by_name = probe_each(
        &host,
        "egress-name",
        vec![format!("http://localhost:{p}")],
        &[format!("http://localhost:{p}/steal")],
    )
    .await?;
    let spellings: Vec<String> = [
        "localhost",
        "127.0.0.1",
        "2130706433",
        "127.1",
        "0x7f.0.0.1",
        "[::ffff:127.0.0.1]",
        "[::1]",
        "0.0.0.0",
    ]
    .iter()
    .map(|h| format!("http://{h}:{p}/steal"))
    .collect();
    let by_wildcard = probe_each(
        &host,
        "egress-wildcard",
        vec![format!("http://*:{p}")],
        &spellings,
    )
    .await?;
    eprintln!("name rule:\n{}\n", by_name.join("\n"));
    eprintln!("wildcard rule:\n{}\n", by_wildcard.join("\n"));
    ensure!(by_wildcard.len() == spellings.len(), "{by_wildcard:?}");
    for line in by_name.iter().chain(&by_wildcard) {
        ensure!(
            line.starts_with("DENIED ") && line.contains("HttpRequestDenied"),
            "a request reached loopback through a rule that does not name it: {line}"
        );
    }
    ensure!(
        server.requests() == 0,
        "the server on 127.0.0.1 got {} requests",
        server.requests()
    );

    // Naming the address (or its range) explicitly lets it through.
    let named = probe_each(
        &host,
        "egress-named",
        vec![
            format!("http://localhost:{p}"),
            format!("http://127.0.0.1:{p}"),
        ],
        &[format!("http://localhost:{p}/ok")],
    )
    .await?;
    let range = probe_each(
        &host,
        "egress-range",
        vec![format!("http://127.0.0.0/8:{p}")],
        &[format!("http://127.0.0.1:{p}/ok")],
    )
    .await?;
    eprintln!("named:\n{}\n{}\n", named.join("\n"), range.join("\n"));
    for line in named.iter().chain(&range) {
        ensure!(
            line.starts_with("ESCAPED ") && line.ends_with(": 200"),
            "an explicitly named address is reachable: {line}"
        );
    }
    ensure!(server.requests() == 2, "{} requests", server.requests());
    Ok(())
}

/// KubeDL's `--event-storage aliyun-sls` grants the configured project's
/// host only: another project under the same endpoint is denied, by URL or
/// by a `host` header on the granted connection, before any I/O.
#[tokio::test]
async fn host_sls_grant_is_the_configured_project_only() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let host = host_in(dir.path())?;
    let server = Receiver::start().await?;
    let p = server.port;
    let endpoint = format!("http://localhost:{p}");
    let var = |k: &str| -> Option<String> {
        Some(match k {
            "SLS_ENDPOINT" => endpoint.clone(),
            "SLS_KEY_ID" => "id".into(),
            "SLS_KEY_SECRET" => "kubesink-test-secret".into(),
            "SLS_PROJECT" => "kubedl-proj".into(),
            "SLS_LOG_STORE" => "events".into(),
            _ => return None,
        })
    };
    let sls = kubesink::config::sls_sink_config("aliyun-sls", var)?;
    ensure!(
        sls.allow_hosts == [format!("http://kubedl-proj.localhost:{p}")],
        "the grant names the project: {:?}",
        sls.allow_hosts
    );
    let lines = probe_each(
        &host,
        "sls-grant",
        sls.allow_hosts.clone(),
        &[
            format!("http://other-proj.localhost:{p}/logstores/events/shards/lb"),
            format!("http://kubedl-proj.localhost:{p}/logstores|host=other-proj.localhost"),
            format!("http://localhost:{p}/logstores"),
        ],
    )
    .await?;
    eprintln!("sls grant:\n{}\n", lines.join("\n"));
    ensure!(lines.len() == 3, "{lines:?}");
    for line in &lines {
        ensure!(
            line.starts_with("DENIED ") && line.contains("HttpRequestDenied"),
            "outside the configured project: {line}"
        );
    }
    ensure!(server.requests() == 0, "{} requests", server.requests());
    Ok(())
}

/// The forged text of `http-probe-forge` (a newline and a fake log line,
/// ANSI colour, a carriage return, a bidirectional override).
const FORGED_LINE: &str =
    "2026-12-01T06:00:00.000000Z ERROR kubesink::host: forged line: all sinks healthy";

/// A sink's error text reaches the log escaped on the sink's own line: no
/// forged line, no raw control character; the fatal error the host API
/// returns carries it escaped too.
#[tokio::test]
async fn pipeline_sink_text_cannot_forge_the_log() -> anyhow::Result<()> {
    let log = capture_log();
    let dir = tempfile::tempdir()?;
    let yaml = format!(
        "cache_dir: '{}'\nsinks:\n  - name: forger\n    module: '{}'\n    settings: {{ mode: http-probe-forge }}\n    records: [events]\n    batch: {{ max_records: 1, max_delay: 0s }}\n    retry: {{ initial: 10ms, max: 50ms }}\n",
        dir.path().join("cache").display(),
        guest_wasm(HOSTILE)?.display()
    );
    let plan = Config::parse(&yaml, "forge test config")?.resolve("forge test config")?;
    let host = Host::new(plan.host.clone())?;
    let pipeline = Pipeline::start(&host, plan.sinks.clone()).await?;
    for e in events(2) {
        pipeline.send(e).await;
    }
    let reports = tokio::time::timeout(Duration::from_secs(60), pipeline.finish())
        .await
        .context("the pipeline drains")?;
    let forger = reports
        .iter()
        .find(|r| r.name == "forger")
        .context("report")?;
    ensure!(forger.failed == 2, "{forger:?}");

    let text = log.text();
    for line in text.lines() {
        ensure!(
            !line.starts_with(FORGED_LINE) && !line.contains("\u{1b}") && !line.contains('\r'),
            "a forged or raw line in the log: {line:?}"
        );
        ensure!(
            !line.contains('\u{202e}'),
            "a raw bidirectional override: {line:?}"
        );
    }
    let events = log_events(&text);
    let mine: Vec<&String> = events.iter().filter(|e| tagged(e, "forger")).collect();
    let escaped = format!("guest failure\\n{FORGED_LINE}\\r\\u{{1b}}[2K\\u{{1b}}[32mOK");
    ensure!(
        mine.iter()
            .any(|e| e.contains(&escaped) && e.contains("\\u{202e}desrever") && !e.contains('\n')),
        "the sink's error is logged escaped on one line; its events:\n{}",
        mine.iter()
            .map(|e| e.as_str())
            .collect::<Vec<_>>()
            .join("\n")
    );
    Ok(())
}

/// Error text counts against the sink's output budget (`log_rate`), one
/// budget per sink: two instances of the sink (as two workers have) and a
/// rebuilt instance draw on it together. Over it, the text is replaced by
/// a note of its size.
#[tokio::test]
async fn host_sink_output_budget_is_shared_by_instances_and_rebuilds() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let host = host_in(dir.path())?;
    let rate = 2048;
    let limits = Limits {
        log_bytes_per_sec: rate,
        ..Limits::default()
    };
    let settings = vec![("mode", "http-probe-forge".to_owned())];
    let mut a = host
        .load(spec("budgeted", &settings, limits.clone())?)
        .await?;
    let mut b = host
        .load(spec("budgeted", &settings, limits.clone())?)
        .await?;
    let started = Instant::now();
    let mut kept = 0usize;
    let mut cut = 0usize;
    let mut size = 0usize;
    for i in 0..60 {
        let sink = if i % 2 == 0 { &mut a } else { &mut b };
        if i % 10 == 9 {
            sink.rebuild().await?;
        }
        let err = sink.write(&events(1)).await.expect_err("always fatal");
        let text = err.to_string();
        if text.contains("output budget") {
            cut += 1;
        } else {
            ensure!(text.contains("forged line"), "{text}");
            size = text.len();
            kept += 1;
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    // Burst (one second's worth) plus what refilled meanwhile; the escaped
    // guest text is a little shorter than the whole message.
    let allowed = ((rate as f64 * (1.0 + elapsed)) / (size as f64 - 60.0)).ceil() as usize;
    eprintln!(
        "kept {kept}, cut {cut} in {elapsed:.2}s (message {size} bytes, budget allows {allowed})"
    );
    ensure!(
        kept <= allowed && cut > 0,
        "kept {kept} messages of {size} bytes in {elapsed:.2}s with a budget of {rate} B/s for both instances (allows {allowed})"
    );
    Ok(())
}

/// Resident memory of this process, in bytes (`VmRSS`).
fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

/// Two hundred concurrent POSTs of 16 MiB from one sink: no more than
/// `http_max_in_flight` (16) are taken, the others fail at once with
/// `connection-limit-reached`, and the bodies buffered stay within the
/// sink's host memory budget (64 MiB; going past it fails the request
/// naming the budget). The process's resident memory grows by less than
/// the budget plus 128 MiB (sampled every 5 ms during the flood); without
/// the limits the host would buffer 200 × 16 MiB = 3.2 GiB.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_http_flood_is_bounded_by_in_flight_and_host_memory() -> anyhow::Result<()> {
    const N: usize = 200;
    const BODY: usize = 16 << 20;
    const BUDGET: usize = 64 << 20;
    const MARGIN: u64 = 128 << 20;
    let dir = tempfile::tempdir()?;
    let host = host_in(dir.path())?;
    let server = Receiver::start().await?;
    let url = format!("http://127.0.0.1:{}/flood?n={N}", server.port);
    let limits = Limits {
        http_allow: vec![format!("http://127.0.0.1:{}", server.port)],
        max_http_request_bytes: BODY,
        host_memory_bytes: BUDGET,
        http_max_in_flight: 16,
        call_timeout: Duration::from_secs(300),
        ..Limits::default()
    };
    let settings = vec![
        ("mode", "http-probe-flood".to_owned()),
        ("url", url),
        ("bytes", BODY.to_string()),
    ];
    let mut sink = host.load(spec("flood", &settings, limits)?).await?;
    let baseline = rss_bytes();
    let peak = Arc::new(std::sync::atomic::AtomicU64::new(baseline));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampler = {
        let (peak, stop) = (peak.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                peak.fetch_max(rss_bytes(), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(5));
            }
        })
    };
    let started = Instant::now();
    let err = sink.write(&events(1)).await.expect_err("a flood report");
    stop.store(true, Ordering::Relaxed);
    let _ = sampler.join();
    let grew = peak.load(Ordering::Relaxed).saturating_sub(baseline);
    let report = err.to_string();
    let budget_peak = sink.budget().peak();
    eprintln!(
        "{report}\nin {:?}: RSS grew by {} MiB at most; budget peak {} MiB of {} MiB; server got {} requests",
        started.elapsed(),
        grew >> 20,
        budget_peak >> 20,
        BUDGET >> 20,
        server.requests()
    );
    ensure!(
        report.contains(&format!("FLOOD {N} x {BODY} bytes")),
        "{report}"
    );
    ensure!(
        report.contains("ConnectionLimitReached="),
        "requests past the in-flight limit fail: {report}"
    );
    ensure!(budget_peak <= BUDGET, "budget peak {budget_peak}");
    ensure!(
        grew < BUDGET as u64 + MARGIN,
        "resident memory grew by {} MiB, over the budget of {} MiB plus {} MiB",
        grew >> 20,
        BUDGET >> 20,
        MARGIN >> 20
    );
    ensure!(
        server.requests() <= 16,
        "at most the in-flight limit reached the server: {}",
        server.requests()
    );
    Ok(())
}

/// Response cap of [`host_http_response_over_the_cap_fails_naming_the_sink_and_the_cap`].
const RESPONSE_CAP: usize = 64 << 10;

/// `200` with `body` and its `content-length`.
fn response_with_length(body: &[u8]) -> Vec<u8> {
    let mut r = format!(
        "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    r.extend_from_slice(body);
    r
}

/// `200` with `body` in chunks of `chunk` bytes and no length announced.
fn chunked_response(body: &[u8], chunk: usize) -> Vec<u8> {
    let mut r =
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n".to_vec();
    for part in body.chunks(chunk) {
        r.extend_from_slice(format!("{:x}\r\n", part.len()).as_bytes());
        r.extend_from_slice(part);
        r.extend_from_slice(b"\r\n");
    }
    r.extend_from_slice(b"0\r\n\r\n");
    r
}

/// A response body over the sink's cap (`max_http_response_bytes`) fails
/// that request with `HTTP-response-body-size` carrying the cap, whether
/// the server announces the length or sends it in chunks; the call fails
/// with an error naming the sink, and the host's log names the sink and
/// the cap. A body of exactly the cap is handed over.
#[tokio::test]
async fn host_http_response_over_the_cap_fails_naming_the_sink_and_the_cap() -> anyhow::Result<()> {
    let log = capture_log();
    let dir = tempfile::tempdir()?;
    let host = host_in(dir.path())?;
    let servers = [
        Receiver::answering(response_with_length(&vec![b'r'; RESPONSE_CAP])).await?,
        Receiver::answering(response_with_length(&vec![b'r'; RESPONSE_CAP + 1])).await?,
        Receiver::answering(chunked_response(&vec![b'r'; 4 * RESPONSE_CAP], 16 << 10)).await?,
    ];
    let targets: Vec<String> = servers
        .iter()
        .map(|s| format!("http://127.0.0.1:{}/logs", s.port))
        .collect();
    let limits = Limits {
        http_allow: servers
            .iter()
            .map(|s| format!("http://127.0.0.1:{}", s.port))
            .collect(),
        max_http_response_bytes: RESPONSE_CAP,
        ..Limits::default()
    };
    let (error, lines) = probe_with(&host, "big-response", limits, &targets).await?;
    eprintln!("{}", lines.join("\n"));
    ensure!(
        error.starts_with("sink 'big-response': write failed"),
        "{error}"
    );
    let over = format!("\"ErrorCode::HttpResponseBodySize(Some({RESPONSE_CAP}))\"");
    ensure!(
        lines
            == [
                format!("ESCAPED {}: 200", targets[0]),
                format!("DENIED {}: {over}", targets[1]),
                format!("DENIED {}: {over}", targets[2]),
            ],
        "at the cap handed over, past it refused with the cap: {lines:?}"
    );
    for s in &servers {
        ensure!(s.requests() == 1, "each request was sent once");
    }
    let logged = log_events(&log.text())
        .into_iter()
        .filter(|e| {
            tagged(e, "big-response") && e.contains(&format!("body over {RESPONSE_CAP} bytes"))
        })
        .count();
    ensure!(logged == 2, "{logged} log events name the sink and the cap");
    Ok(())
}

/// `status` redirecting to `location`, without a body.
fn redirect(status: &str, location: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 {status}\r\nlocation: {location}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
    )
    .into_bytes()
}

/// The host follows no redirect: a `302` to a server outside the
/// allow-list and a `307` to one inside it both reach the guest as they
/// are, and neither target sees a request; the guest following the first
/// itself is denied like any request outside its list.
#[tokio::test]
async fn host_http_redirects_are_not_followed() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let host = host_in(dir.path())?;
    let outside = Receiver::start().await?;
    let inside = Receiver::start().await?;
    let steal = format!("http://127.0.0.1:{}/steal", outside.port);
    let to_outside = Receiver::answering(redirect("302 Found", &steal)).await?;
    let to_inside = Receiver::answering(redirect(
        "307 Temporary Redirect",
        &format!("http://127.0.0.1:{}/ok", inside.port),
    ))
    .await?;
    let allow = [&to_outside, &to_inside, &inside]
        .iter()
        .map(|s| format!("http://127.0.0.1:{}", s.port))
        .collect();
    let targets = [
        format!("http://127.0.0.1:{}/logs", to_outside.port),
        format!("http://127.0.0.1:{}/logs", to_inside.port),
        steal.clone(),
    ];
    let lines = probe_each(&host, "redirected", allow, &targets).await?;
    eprintln!("{}", lines.join("\n"));
    ensure!(
        lines
            == [
                format!("ESCAPED {}: 302", targets[0]),
                format!("ESCAPED {}: 307", targets[1]),
                format!("DENIED {steal}: \"ErrorCode::HttpRequestDenied\""),
            ],
        "{lines:?}"
    );
    ensure!(
        (to_outside.requests(), to_inside.requests()) == (1, 1),
        "each redirecting server was asked once"
    );
    ensure!(
        (outside.requests(), inside.requests()) == (0, 0),
        "a redirect target got a request: outside {}, inside {}",
        outside.requests(),
        inside.requests()
    );
    Ok(())
}
