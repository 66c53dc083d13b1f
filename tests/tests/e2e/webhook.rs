//! The Python webhook sink (`sinks/webhook-py`, componentize-py) through the
//! real host and pipeline into a small HTTP receiver started by each test:
//! the KubeDL fixture arrives record by record with every field, a 500 is
//! retried and lands once, a 400 is reported as rejected naming the sink,
//! a URL off the allow-list is refused, and the component's size, compile
//! time, cache and memory needs are measured. Also runs the sink's Python
//! unit tests (`build.sh test`), so they are part of `cargo test`.

use std::collections::{BTreeMap, VecDeque};
use std::io::BufReader;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Instant;

use anyhow::{Context as _, Result, bail, ensure};
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper_util::rt::TokioIo;
use kubesink::config::Config;
use kubesink::pipeline::{Pipeline, SinkReport};
use kubesink::source::{Normalizer, replay};
use kubesink_host::{
    CacheOutcome, CallError, Host, HostError, HostOptions, Limits, ModuleSource, SinkInstance,
    SinkSpec,
};
use kubesink_normalize::record::Entry;
use kubesink_tests::binary::{built_once, run_build_script};
use kubesink_tests::guests::{target_dir, workspace_root};
use serde_json::{Map, Value};

/// The sink's name in every test: errors must name it.
const SINK: &str = "webhook";

// ---- building the component ----

/// Builds the component with `sinks/webhook-py/build.sh` (once per test
/// process; the script itself skips an up-to-date build) and returns its path.
fn webhook_wasm() -> Result<PathBuf> {
    static BUILT: OnceLock<Mutex<Option<PathBuf>>> = OnceLock::new();
    built_once(&BUILT, || {
        // Last field of the size line is the path.
        let line = run_build_script("sinks/webhook-py/build.sh")?;
        let path = line
            .split_whitespace()
            .last()
            .map(PathBuf::from)
            .with_context(|| format!("no size line from build.sh: {line}"))?;
        ensure!(
            path.is_file(),
            "build.sh named {path:?}, which is not a file"
        );
        Ok(path)
    })
}

// ---- the receiver ----

/// One request the receiver saw.
#[derive(Debug, Clone)]
struct Seen {
    path: String,
    headers: BTreeMap<String, String>,
    body: Bytes,
    /// What it answered.
    status: u16,
}

impl Seen {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(String::as_str)
    }

    /// The body's JSON lines.
    fn lines(&self) -> Result<Vec<Value>> {
        let text = std::str::from_utf8(&self.body).context("body is not UTF-8")?;
        ensure!(text.ends_with('\n'), "body does not end with a newline");
        text.lines()
            .map(|l| serde_json::from_str(l).with_context(|| format!("line {l:?}")))
            .collect()
    }
}

#[derive(Default)]
struct ReceiverState {
    seen: Vec<Seen>,
    /// Answers for the next requests (status, body); 200 when empty.
    script: VecDeque<(u16, String)>,
    /// A request whose body contains this text gets 400.
    poison: Option<String>,
}

/// A tiny HTTP/1 receiver on 127.0.0.1 that records every request.
struct Receiver {
    addr: SocketAddr,
    state: Arc<Mutex<ReceiverState>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn answer(
    state: Arc<Mutex<ReceiverState>>,
    req: hyper::Request<hyper::body::Incoming>,
) -> Result<hyper::Response<Full<Bytes>>, hyper::Error> {
    let path = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_default();
    let headers = req
        .headers()
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_owned(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let body = req.into_body().collect().await?.to_bytes();
    let (status, text) = {
        let mut s = lock(&state);
        let poisoned = s
            .poison
            .as_deref()
            .is_some_and(|p| String::from_utf8_lossy(&body).contains(p));
        let (status, text) = if poisoned {
            (400, "bad record: poison".to_owned())
        } else {
            s.script.pop_front().unwrap_or((200, "ok".to_owned()))
        };
        s.seen.push(Seen {
            path,
            headers,
            body,
            status,
        });
        (status, text)
    };
    let mut resp = hyper::Response::new(Full::new(Bytes::from(text)));
    *resp.status_mut() =
        hyper::StatusCode::from_u16(status).unwrap_or(hyper::StatusCode::INTERNAL_SERVER_ERROR);
    Ok(resp)
}

fn lock(state: &Mutex<ReceiverState>) -> MutexGuard<'_, ReceiverState> {
    state.lock().unwrap_or_else(|e| e.into_inner())
}

impl Receiver {
    async fn start() -> Result<Receiver> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let state = Arc::new(Mutex::new(ReceiverState::default()));
        let shared = state.clone();
        let task = tokio::spawn(async move {
            let mut conns = tokio::task::JoinSet::new();
            loop {
                tokio::select! {
                    accepted = listener.accept() => {
                        let Ok((stream, _)) = accepted else { continue };
                        let state = shared.clone();
                        conns.spawn(async move {
                            let svc = hyper::service::service_fn(move |req| answer(state.clone(), req));
                            let _ = hyper::server::conn::http1::Builder::new()
                                .serve_connection(TokioIo::new(stream), svc)
                                .await;
                        });
                    }
                    Some(_) = conns.join_next(), if !conns.is_empty() => {}
                }
            }
        });
        Ok(Receiver { addr, state, task })
    }

    fn url(&self) -> String {
        format!("http://{}/ingest?source=kubesink", self.addr)
    }

    fn allow(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The next answers, in order (then 200 again).
    fn script(&self, answers: &[(u16, &str)]) {
        lock(&self.state)
            .script
            .extend(answers.iter().map(|(s, b)| (*s, (*b).to_owned())));
    }

    fn poison(&self, text: &str) {
        lock(&self.state).poison = Some(text.to_owned());
    }

    fn seen(&self) -> Vec<Seen> {
        lock(&self.state).seen.clone()
    }

    /// Every line of every request answered 2xx, in arrival order.
    fn accepted_lines(&self) -> Result<Vec<Value>> {
        let mut out = Vec::new();
        for s in self.seen() {
            if (200..300).contains(&s.status) {
                out.extend(s.lines()?);
            }
        }
        Ok(out)
    }
}

// ---- what the sink should send ----

fn rfc3339(ts: &Value) -> Result<Value> {
    let secs = ts["seconds"].as_i64().context("timestamp seconds")?;
    let nanos = ts["nanos"].as_u64().context("timestamp nanos")?;
    let dt = chrono::DateTime::from_timestamp(secs, 0).context("timestamp out of range")?;
    let mut s = dt.format("%Y-%m-%dT%H:%M:%S").to_string();
    if nanos != 0 {
        s.push_str(&format!(".{nanos:09}"));
    }
    s.push('Z');
    Ok(Value::String(s))
}

/// Timestamps (objects of exactly `seconds` and `nanos`) become RFC 3339
/// text and `labels` an object, as `sinks/webhook-py/webhook_sink/jsonl.py`
/// documents; everything else stays as serde gives the Rust record.
fn expected_value(key: &str, v: &Value) -> Result<Value> {
    Ok(match v {
        Value::Object(m)
            if m.len() == 2 && m.contains_key("seconds") && m.contains_key("nanos") =>
        {
            rfc3339(v)?
        }
        Value::Object(m) => Value::Object(
            m.iter()
                .map(|(k, v)| Ok((k.clone(), expected_value(k, v)?)))
                .collect::<Result<Map<_, _>>>()?,
        ),
        Value::Array(pairs) if key == "labels" => Value::Object(
            pairs
                .iter()
                .map(|p| {
                    let k = p[0].as_str().context("label key")?.to_owned();
                    Ok((k, p[1].clone()))
                })
                .collect::<Result<Map<_, _>>>()?,
        ),
        other => other.clone(),
    })
}

/// The JSON line the sink must send for `entry`, built from the Rust record
/// (serde's externally tagged form) independently of the Python code.
pub(crate) fn expected_line(entry: &Entry) -> Result<Value> {
    let v = serde_json::to_value(entry)?;
    let (change, removed_at, record) = match &v {
        Value::Object(m) if m.contains_key("Applied") => ("applied", Value::Null, &m["Applied"]),
        Value::Object(m) if m.contains_key("Removed") => (
            "removed",
            rfc3339(&m["Removed"]["at"])?,
            &m["Removed"]["record"],
        ),
        other => bail!("unexpected change {other}"),
    };
    let (kind, record) = record
        .as_object()
        .and_then(|m| m.iter().next())
        .context("record variant")?;
    Ok(serde_json::json!({
        "kind": kind.to_lowercase(),
        "change": change,
        "removed_at": removed_at,
        "record": expected_value("record", record)?,
    }))
}

pub(crate) fn fixture_entries() -> Result<Vec<Entry>> {
    let path = workspace_root().join("tests/fixtures/kubedl/watch.json");
    let file = std::fs::File::open(&path).with_context(|| format!("{}", path.display()))?;
    let mut entries = Vec::new();
    let report = replay::replay(
        BufReader::new(file),
        "watch.json",
        &Normalizer::with_region(None),
        |e| {
            entries.push(e);
            true
        },
    );
    ensure!(
        report.problems.is_empty(),
        "fixture problems: {:?}",
        report.problems
    );
    Ok(entries)
}

// ---- running the sink ----

fn settings(url: &str, extra: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut s = vec![("url".to_owned(), url.to_owned())];
    s.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    s
}

async fn load(
    host: &Host,
    allow: &[String],
    settings: Vec<(String, String)>,
) -> Result<SinkInstance, HostError> {
    host.load(SinkSpec {
        name: SINK.into(),
        module: ModuleSource::Path(webhook_wasm().map_err(|e| HostError::Internal {
            sink: SINK.into(),
            reason: format!("{e:#}"),
        })?),
        settings,
        sql_grants: vec![],
        limits: Limits {
            http_allow: allow.to_vec(),
            ..Limits::default()
        },
    })
    .await
}

/// The compile cache the tests share, under the target directory, so the
/// 18 MiB component is compiled once, not once per test and run. One folder
/// per build of the component (named by build.sh's digest of its inputs);
/// folders of older builds are removed. `webhook_py_size_compile_cache_and_memory`
/// uses a fresh cache of its own.
fn shared_cache() -> Result<PathBuf> {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    if let Some(dir) = DIR.get() {
        return Ok(dir.clone());
    }
    let wasm = webhook_wasm()?;
    let stamp = wasm.with_extension("wasm.sha256-inputs");
    let digest =
        std::fs::read_to_string(&stamp).with_context(|| format!("reading {}", stamp.display()))?;
    let root = target_dir().join("kubesink-e2e-webhook-py-cache");
    let dir = root.join(digest.trim());
    if let Ok(old) = std::fs::read_dir(&root) {
        for e in old.flatten() {
            if e.path() != dir {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(DIR.get_or_init(|| dir).clone())
}

/// A host using the shared compile cache.
fn host() -> Result<Host> {
    Ok(Host::new(HostOptions {
        cache_dir: Some(shared_cache()?),
        ..HostOptions::default()
    })?)
}

/// Replays `entries` through a pipeline built from a config file's text,
/// with the sink pointed at `receiver`.
async fn pipeline_replay(
    receiver: &Receiver,
    entries: &[Entry],
    extra_yaml: &str,
) -> Result<SinkReport> {
    let yaml = format!(
        "cache_dir: '{cache}'\nsinks:\n  - name: {SINK}\n    module: '{module}'\n    allow_hosts: ['{allow}']\n    settings:\n      url: '{url}'\n      header.Authorization: 'Bearer test-token'\n    queue: {{ coalesce: false }}\n    retry: {{ initial: 10ms, max: 100ms }}\n{extra_yaml}",
        cache = shared_cache()?.display(),
        module = webhook_wasm()?.display(),
        allow = receiver.allow(),
        url = receiver.url(),
    );
    let config = Config::parse(&yaml, "test config").map_err(|e| anyhow::anyhow!("{e}\n{yaml}"))?;
    let plan = config.resolve("test config")?;
    let host = Host::new(plan.host.clone())?;
    let pipeline = Pipeline::start(&host, plan.sinks.clone()).await?;
    for e in entries {
        pipeline.send(e.clone()).await;
    }
    let mut reports = pipeline.finish().await;
    ensure!(reports.len() == 1, "{reports:?}");
    Ok(reports.remove(0))
}

// ---- tests ----

/// The sink's pure modules (settings, JSON lines, status handling,
/// redelivery) tested on CPython against the generated bindings.
#[test]
fn webhook_py_unit_tests_pass() -> Result<()> {
    let script = workspace_root().join("sinks/webhook-py/build.sh");
    let out = std::process::Command::new("bash")
        .arg(&script)
        .arg("test")
        .output()
        .with_context(|| format!("running {} test", script.display()))?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    ensure!(
        out.status.success(),
        "python unit tests failed ({}):\n{stderr}",
        out.status
    );
    let ran = stderr
        .lines()
        .find_map(|l| {
            l.strip_prefix("Ran ")?
                .split_whitespace()
                .next()?
                .parse::<u32>()
                .ok()
        })
        .context("no `Ran N tests` line")?;
    ensure!(ran >= 10, "only {ran} python tests ran:\n{stderr}");
    Ok(())
}

/// Every entry of the KubeDL fixture, through the real pipeline, arrives
/// once, in order, with every field; requests carry the content type, the
/// configured header, the record count and an idempotency key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_py_replays_fixture_once_with_every_field() -> Result<()> {
    let receiver = Receiver::start().await?;
    let entries = fixture_entries()?;
    let report = pipeline_replay(&receiver, &entries, "").await?;
    ensure!(
        report.delivered == entries.len() as u64 && report.failed == 0,
        "{report:?}"
    );
    let got = receiver.accepted_lines()?;
    let want = entries
        .iter()
        .map(expected_line)
        .collect::<Result<Vec<_>>>()?;
    ensure!(
        got.len() == want.len(),
        "{} lines received, {} entries sent",
        got.len(),
        want.len()
    );
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        ensure!(g == w, "line {i} differs:\n got  {g}\n want {w}");
    }
    // A few fields checked by hand, so the comparison above cannot agree
    // with the sink on a wrong rule.
    let job = &got[0];
    ensure!(job["kind"] == "job" && job["change"] == "applied", "{job}");
    ensure!(job["record"]["owner"] == "张伟", "{job}");
    ensure!(job["record"]["meta"]["labels"]["team"] == "视觉组", "{job}");
    ensure!(
        job["record"]["meta"]["created"] == "2026-03-02T08:00:00Z",
        "{job}"
    );
    ensure!(
        got.iter().any(|l| l["change"] == "removed"
            && l["removed_at"]
                .as_str()
                .is_some_and(|t| t.starts_with("2026-03-02T"))),
        "no removal in the fixture's lines"
    );
    for kind in ["job", "pod", "event"] {
        ensure!(got.iter().any(|l| l["kind"] == kind), "no {kind} lines");
    }
    let seen = receiver.seen();
    ensure!(seen.iter().all(|s| s.status == 200), "all answered 200");
    let mut keys = std::collections::HashSet::new();
    for s in &seen {
        ensure!(s.path == "/ingest?source=kubesink", "path {}", s.path);
        ensure!(
            s.header("content-type") == Some("application/x-ndjson"),
            "{:?}",
            s.headers
        );
        ensure!(
            s.header("authorization") == Some("Bearer test-token"),
            "{:?}",
            s.headers
        );
        ensure!(
            s.header("x-kubesink-records") == Some(&s.lines()?.len().to_string()),
            "record count header {:?}",
            s.headers
        );
        let key = s.header("idempotency-key").context("idempotency-key")?;
        ensure!(
            key.len() == 64 && key.bytes().all(|b| b.is_ascii_hexdigit()),
            "key {key}"
        );
        ensure!(keys.insert(key.to_owned()), "two bodies with key {key}");
    }
    Ok(())
}

/// Each distinct line must be accepted exactly once, and the accepted lines
/// must be `want` in order.
fn ensure_each_once(got: &[Value], want: &[Value]) -> Result<()> {
    ensure!(
        got.len() == want.len(),
        "{} lines accepted, {} expected",
        got.len(),
        want.len()
    );
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        ensure!(g == w, "line {i} differs:\n got  {g}\n want {w}");
    }
    Ok(())
}

/// Two 500s from the receiver: the pipeline retries with backoff and the
/// fixture lands once, in order. On one instance, a batch split into
/// several requests that fails in the middle is retried without resending
/// the part the receiver already accepted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_py_retries_500_then_lands_once() -> Result<()> {
    let receiver = Receiver::start().await?;
    receiver.script(&[(500, "boom"), (500, "boom again")]);
    let entries = fixture_entries()?;
    let report = pipeline_replay(&receiver, &entries, "").await?;
    ensure!(
        report.delivered == entries.len() as u64 && report.failed == 0 && report.retries >= 2,
        "{report:?}"
    );
    let want = entries
        .iter()
        .map(expected_line)
        .collect::<Result<Vec<_>>>()?;
    ensure_each_once(&receiver.accepted_lines()?, &want)?;
    let answers: Vec<u16> = receiver.seen().iter().map(|s| s.status).collect();
    ensure!(answers[..2] == [500, 500], "answers {answers:?}");

    // Several requests per batch, the second one fails.
    let receiver = Receiver::start().await?;
    let host = host()?;
    let mut sink = load(
        &host,
        &[receiver.allow()],
        settings(&receiver.url(), &[("max_bytes", "4096")]),
    )
    .await?;
    let batch = &entries[..40];
    receiver.script(&[(200, "ok"), (503, "try later")]);
    match sink.write(batch).await {
        Err(CallError::Retryable(m)) => ensure!(
            m.contains(&format!("sink '{SINK}'"))
                && m.contains("HTTP 503 Service Unavailable: try later")
                && m.contains("request 2 of"),
            "{m}"
        ),
        other => bail!("503: want retryable, got {other:?}"),
    }
    let first = receiver.seen()[0].body.clone();
    sink.write(batch).await?;
    let seen = receiver.seen();
    ensure!(seen.len() > 3, "{} requests for 40 entries", seen.len());
    ensure!(
        seen.iter().filter(|s| s.body == first).count() == 1,
        "the accepted first body was sent again"
    );
    ensure_each_once(&receiver.accepted_lines()?, &want[..40])?;
    Ok(())
}

/// A 400 is `fatal`, named with the sink, the receiver and its answer; in
/// the pipeline, batch bisection isolates the entries the receiver rejects
/// and everything else lands once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_py_400_is_rejected_naming_the_sink() -> Result<()> {
    let entries = fixture_entries()?;
    let receiver = Receiver::start().await?;
    let host = host()?;
    let mut sink = load(&host, &[receiver.allow()], settings(&receiver.url(), &[])).await?;
    receiver.script(&[(400, "bad record: field `kind` missing")]);
    match sink.write(&entries[..5]).await {
        Err(CallError::Fatal(m)) => {
            for words in [
                &format!("sink '{SINK}'"),
                "rejected the batch",
                "HTTP 400 Bad Request",
                "bad record: field `kind` missing",
                &receiver.allow(),
            ] {
                ensure!(m.contains(words), "{words:?} not in {m}");
            }
            ensure!(
                !m.contains("source=kubesink"),
                "the URL's query leaked: {m}"
            );
        }
        other => bail!("400: want fatal, got {other:?}"),
    }

    // One event's updates are poison.
    let want = entries
        .iter()
        .map(expected_line)
        .collect::<Result<Vec<_>>>()?;
    let poison = want
        .iter()
        .find(|l| l["kind"] == "event")
        .and_then(|l| l["record"]["meta"]["uid"].as_str())
        .context("an event")?
        .to_owned();
    let is_poison = |l: &Value| l.to_string().contains(&poison);
    let bad = want.iter().filter(|l| is_poison(l)).count();
    ensure!(bad >= 1, "poison {poison} matches nothing");
    let receiver = Receiver::start().await?;
    receiver.poison(&poison);
    let report = pipeline_replay(&receiver, &entries, "    batch: { max_records: 32 }\n").await?;
    ensure!(
        report.failed == bad as u64 && report.delivered == (entries.len() - bad) as u64,
        "{bad} poison entries; {report:?}"
    );
    let good: Vec<Value> = want.into_iter().filter(|l| !is_poison(l)).collect();
    ensure_each_once(&receiver.accepted_lines()?, &good)?;
    Ok(())
}

/// A URL whose host:port is not in the sink's allow-list is refused by the
/// host before any I/O, and the sink reports it as fatal naming both.
#[tokio::test]
async fn webhook_py_outside_its_allow_list_is_denied() -> Result<()> {
    let receiver = Receiver::start().await?;
    let entries = fixture_entries()?;
    let other_port = format!(
        "http://127.0.0.1:{}",
        receiver.addr.port().wrapping_add(1).max(1)
    );
    for allow in [
        vec![other_port],
        vec![],
        vec!["https://127.0.0.1:*".to_owned()],
    ] {
        let host = host()?;
        let mut sink = load(&host, &allow, settings(&receiver.url(), &[])).await?;
        // Twice on the same instance: a denial leaves it usable.
        for _ in 0..2 {
            match sink.write(&entries[..3]).await {
                Err(CallError::Fatal(m)) => ensure!(
                    m.contains(&format!("sink '{SINK}'"))
                        && m.contains("denied")
                        && m.contains("allow-list")
                        && m.contains(&receiver.allow()),
                    "allow {allow:?}: {m}"
                ),
                other => bail!("allow {allow:?}: want a fatal denial, got {other:?}"),
            }
        }
    }
    ensure!(
        receiver.seen().is_empty(),
        "{} requests got through",
        receiver.seen().len()
    );
    Ok(())
}

/// Bad settings fail `init`, naming the key and the sink.
#[tokio::test]
async fn webhook_py_bad_settings_fail_init_naming_the_key() -> Result<()> {
    let host = host()?;
    for (pairs, words) in [
        (
            settings("http://127.0.0.1:9/", &[("max_byte", "1")]),
            "unknown setting `max_byte`",
        ),
        (vec![], "`url` is required"),
        (settings("ftp://127.0.0.1/", &[]), "scheme `ftp`"),
    ] {
        match load(&host, &[], pairs).await {
            Err(e) => {
                let text = format!("{e:#}");
                ensure!(
                    text.contains(words) && text.contains(SINK) && !e.is_retryable(),
                    "{text}"
                );
            }
            Ok(_) => bail!("init accepted settings that should fail with {words}"),
        }
    }
    Ok(())
}

/// The Python component through the host's limits and compile cache:
/// prints its size, the first compile time, the cached load time and the
/// smallest memory cap (in 4 MiB steps) it runs a fixture batch under;
/// checks the cache is hit the second time and that a cap below its need is
/// reported as a memory fault naming the sink.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_py_size_compile_cache_and_memory() -> Result<()> {
    let wasm = webhook_wasm()?;
    let size = std::fs::metadata(&wasm)?.len();
    ensure!(
        size < 40 << 20,
        "{size} bytes: more than the interpreter and the standard library (was site-packages bundled?)"
    );
    let receiver = Receiver::start().await?;
    let entries = fixture_entries()?;
    let cache = tempfile::tempdir()?;
    let spec = |memory: usize| SinkSpec {
        name: SINK.into(),
        module: ModuleSource::Path(wasm.clone()),
        settings: settings(&receiver.url(), &[]),
        sql_grants: vec![],
        limits: Limits {
            memory_bytes: memory,
            http_allow: vec![receiver.allow()],
            ..Limits::default()
        },
    };
    let options = HostOptions {
        cache_dir: Some(cache.path().to_path_buf()),
        ..HostOptions::default()
    };
    let started = Instant::now();
    let (mut sink, outcome) = Host::new(options.clone())?
        .load_with_outcome(spec(Limits::default().memory_bytes))
        .await?;
    let first = started.elapsed();
    ensure!(
        matches!(outcome, CacheOutcome::Stored(_)),
        "first load: {outcome:?}"
    );
    sink.write(&entries).await?;

    let started = Instant::now();
    let (_again, outcome) = Host::new(options.clone())?
        .load_with_outcome(spec(Limits::default().memory_bytes))
        .await?;
    let cached = started.elapsed();
    ensure!(
        matches!(outcome, CacheOutcome::Hit(_)),
        "second load: {outcome:?}"
    );
    ensure!(
        cached < first,
        "cached load {cached:?} not faster than {first:?}"
    );

    // The smallest cap that loads and writes the whole fixture in one batch.
    let host = Host::new(options)?;
    let mut need = None;
    for mib in (4..=64).step_by(4) {
        let ok = match host.load(spec(mib << 20)).await {
            Ok(mut sink) => sink.write(&entries).await.is_ok(),
            Err(_) => false,
        };
        if ok {
            need = Some(mib);
            break;
        }
    }
    let need = need.context("the sink did not run under 64 MiB")?;
    ensure!(need > 4, "runs under 4 MiB: the probe below proves nothing");
    match host.load(spec(4 << 20)).await {
        Err(e) => {
            let text = format!("{e:#}");
            ensure!(
                text.contains(SINK) && text.contains("memory"),
                "4 MiB cap: {text}"
            );
        }
        Ok(_) => bail!("loaded under a 4 MiB cap"),
    }
    println!(
        "webhook-py: component {size} bytes ({:.1} MiB); first load with compile {:.2} s; cached load {:.3} s; runs the fixture ({} entries) with a {need} MiB memory cap",
        size as f64 / (1 << 20) as f64,
        first.as_secs_f64(),
        cached.as_secs_f64(),
        entries.len()
    );

    // For comparison: the Rust sls sink (same world) on a fresh cache.
    let sls = kubesink_tests::guests::guest_wasm("kubesink-sink-sls")?;
    let fresh = tempfile::tempdir()?;
    let started = Instant::now();
    let (_sls, outcome) = Host::new(HostOptions {
        cache_dir: Some(fresh.path().to_path_buf()),
        ..HostOptions::default()
    })?
    .load_with_outcome(SinkSpec {
        name: "sls".into(),
        module: ModuleSource::Path(sls.clone()),
        settings: vec![
            ("endpoint".into(), "http://127.0.0.1:9".into()),
            ("project".into(), "p".into()),
            ("logstore".into(), "l".into()),
            ("access_key_id".into(), "id".into()),
            ("access_key_secret".into(), "secret".into()),
        ],
        sql_grants: vec![],
        limits: Limits::default(),
    })
    .await?;
    ensure!(
        matches!(outcome, CacheOutcome::Stored(_)),
        "sls: {outcome:?}"
    );
    println!(
        "for comparison, the Rust sls sink: {} bytes; first load with compile {:.2} s",
        std::fs::metadata(&sls)?.len(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// 10k events in batches of 500 through the Python sink into the receiver:
/// prints events/s (interpreted Python encoding JSON inside wasm).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_py_throughput_10k_events() -> Result<()> {
    use kubesink_tests::records;
    const N: usize = 10_000;
    let receiver = Receiver::start().await?;
    let host = host()?;
    let mut sink = load(&host, &[receiver.allow()], settings(&receiver.url(), &[])).await?;
    let events: Vec<Entry> = (0..N)
        .map(|i| {
            records::applied(kubesink_normalize::record::Record::Event(records::event(
                &format!("u{i}"),
                i as u64 + 1,
                1,
            )))
        })
        .collect();
    let started = Instant::now();
    for batch in events.chunks(500) {
        sink.write(batch).await?;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let lines = receiver.accepted_lines()?;
    ensure!(lines.len() == N, "{} of {N} arrived", lines.len());
    let bytes: usize = receiver.seen().iter().map(|s| s.body.len()).sum();
    println!(
        "webhook-py throughput: {N} events in {elapsed:.2} s = {:.0} events/s, {:.1} MB of JSON lines in {} requests",
        N as f64 / elapsed,
        bytes as f64 / 1e6,
        receiver.seen().len()
    );
    Ok(())
}
