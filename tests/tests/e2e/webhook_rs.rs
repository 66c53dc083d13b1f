//! The Rust webhook sink (`sinks/webhook`) through the real host and
//! pipeline into a local receiver that answers like each vendor and checks
//! what each vendor documents (`sinks/webhook/README.md`): Slack's `text`,
//! DingTalk's markdown message and signed URL (HMAC-SHA256 keyed by the
//! secret over `timestamp\nsecret`, base64, URL-encoded, timestamp within
//! an hour), Feishu/Lark's text message and body signature (HMAC-SHA256
//! keyed by `timestamp\nsecret` over nothing), WeChat Work's markdown
//! (content at most 4096 bytes), Teams' Adaptive Card and MessageCard.
//! A request that breaks a rule gets the vendor's error answer, so the
//! sink's delivery fails and the test sees it. Also: a 429 with
//! `Retry-After` lands each record once, the rate limit holds and sums up
//! what it kept back, bad settings fail `init` naming the setting, and
//! events/s into the receiver.

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail, ensure};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use bytes::Bytes;
use hmac::{Hmac, Mac};
use http_body_util::{BodyExt as _, Full};
use hyper_util::rt::TokioIo;
use kubesink::config::Config;
use kubesink::pipeline::{Pipeline, SinkReport};
use kubesink_host::{Host, HostError, HostOptions, Limits, ModuleSource, SinkInstance, SinkSpec};
use kubesink_normalize::record::Entry;
use kubesink_tests::guests::{guest_wasm, target_dir};

use super::webhook::{expected_line, fixture_entries};
use serde_json::Value;
use sha2::Sha256;

const SINK: &str = "webhook-rs";
const PACKAGE: &str = "kubesink-sink-webhook";
const DING_SECRET: &str = "SECkubesink-e2e-dingtalk";
const FEISHU_SECRET: &str = "kubesink-e2e-feishu";

fn wasm() -> Result<PathBuf> {
    guest_wasm(PACKAGE)
}

// ---- the receiver ----

#[derive(Debug, Clone)]
struct Seen {
    path: String,
    headers: BTreeMap<String, String>,
    body: Bytes,
    at: Instant,
    status: u16,
    /// What the vendor check found wrong (the answer was the vendor's error).
    problem: Option<String>,
}

impl Seen {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(String::as_str)
    }

    fn json(&self) -> Result<Value> {
        serde_json::from_slice(&self.body).with_context(|| format!("body of {}", self.path))
    }

    fn route(&self) -> &str {
        self.path
            .trim_start_matches('/')
            .split(['/', '?'])
            .next()
            .unwrap_or("")
    }
}

#[derive(Default)]
struct State {
    seen: Vec<Seen>,
    /// Next answers (status, Retry-After) for a route; then the vendor's OK.
    script: BTreeMap<String, VecDeque<(u16, Option<String>)>>,
}

struct Receiver {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn lock(s: &Mutex<State>) -> MutexGuard<'_, State> {
    s.lock().unwrap_or_else(|e| e.into_inner())
}

fn hmac_b64(key: &[u8], msg: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("any key length");
    mac.update(msg);
    B64.encode(mac.finalize().into_bytes())
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn text_of(v: &Value, what: &str) -> Result<String> {
    v.as_str()
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .with_context(|| format!("{what} is not a non-empty string"))
}

/// Checks one request against its vendor's documented rules.
fn vendor_check(
    route: &str,
    query: &str,
    headers: &BTreeMap<String, String>,
    body: &[u8],
) -> Result<()> {
    let ct = headers
        .get("content-type")
        .map(String::as_str)
        .unwrap_or("");
    ensure!(ct.starts_with("application/json"), "content-type {ct:?}");
    let v: Value = serde_json::from_slice(body).context("body is not JSON")?;
    let within_hour = |ts_ms: u64| now_ms().abs_diff(ts_ms) < 3_600_000;
    match route {
        "slack" => {
            text_of(&v["text"], "text")?;
        }
        "dingtalk" => {
            let q: BTreeMap<String, String> = form_urlencoded::parse(query.as_bytes())
                .into_owned()
                .collect();
            ensure!(
                q.get("access_token").map(String::as_str) == Some("dt-token"),
                "access_token {q:?}"
            );
            let ts = q.get("timestamp").context("no timestamp")?;
            let ts_ms: u64 = ts.parse().context("timestamp is not milliseconds")?;
            ensure!(within_hour(ts_ms), "timestamp {ts} more than an hour off");
            let want = hmac_b64(
                DING_SECRET.as_bytes(),
                format!("{ts}\n{DING_SECRET}").as_bytes(),
            );
            ensure!(
                q.get("sign") == Some(&want),
                "sign {:?}, want {want}",
                q.get("sign")
            );
            match v["msgtype"].as_str() {
                Some("markdown") => {
                    text_of(&v["markdown"]["title"], "markdown.title")?;
                    text_of(&v["markdown"]["text"], "markdown.text")?;
                }
                Some("text") => {
                    text_of(&v["text"]["content"], "text.content")?;
                }
                _ => bail!("msgtype {}", v["msgtype"]),
            }
            ensure!(body.len() <= 20_000, "{} bytes", body.len());
        }
        "feishu" => {
            let ts = text_of(&v["timestamp"], "timestamp")?;
            let secs: u64 = ts.parse().context("timestamp is not seconds")?;
            ensure!(
                within_hour(secs * 1000),
                "timestamp {ts} more than an hour off"
            );
            let want = hmac_b64(format!("{ts}\n{FEISHU_SECRET}").as_bytes(), b"");
            ensure!(
                v["sign"] == want.as_str(),
                "sign {}, want {want}",
                v["sign"]
            );
            ensure!(v["msg_type"] == "text", "msg_type {}", v["msg_type"]);
            text_of(&v["content"]["text"], "content.text")?;
            ensure!(body.len() <= 20 << 10, "{} bytes", body.len());
        }
        "wechat" | "wechattext" => {
            ensure!(query == "key=wx-key", "query {query}");
            match v["msgtype"].as_str() {
                Some("markdown") => {
                    let c = text_of(&v["markdown"]["content"], "markdown.content")?;
                    ensure!(c.len() <= 4096, "markdown.content {} bytes", c.len());
                }
                Some("text") => {
                    let c = text_of(&v["text"]["content"], "text.content")?;
                    ensure!(c.len() <= 2048, "text.content {} bytes", c.len());
                }
                _ => bail!("msgtype {}", v["msgtype"]),
            }
        }
        "teams" => {
            ensure!(v["type"] == "message", "type {}", v["type"]);
            let a = &v["attachments"][0];
            ensure!(
                a["contentType"] == "application/vnd.microsoft.card.adaptive",
                "{a}"
            );
            let card = &a["content"];
            ensure!(card["type"] == "AdaptiveCard", "{card}");
            text_of(&card["version"], "version")?;
            let blocks = card["body"].as_array().context("body")?;
            ensure!(!blocks.is_empty(), "empty card");
            for b in blocks {
                ensure!(b["type"] == "TextBlock", "{b}");
                text_of(&b["text"], "TextBlock.text")?;
            }
        }
        "teamscard" => {
            ensure!(v["@type"] == "MessageCard", "@type {}", v["@type"]);
            ensure!(v["@context"] == "https://schema.org/extensions", "@context");
            // "Summary or Text is required."
            text_of(&v["summary"], "summary")?;
        }
        "json" => {
            v["records"].as_array().context("records")?;
        }
        other => bail!("unknown route {other}"),
    }
    Ok(())
}

/// The vendor's answer: success, or its error for a broken rule.
fn vendor_answer(route: &str, problem: Option<&str>) -> (u16, String) {
    match (route, problem) {
        ("dingtalk", None) | ("wechat" | "wechattext", None) => {
            (200, r#"{"errcode":0,"errmsg":"ok"}"#.into())
        }
        ("dingtalk", Some(p)) => (
            200,
            format!(r#"{{"errcode":310000,"errmsg":{}}}"#, Value::from(p)),
        ),
        ("wechat" | "wechattext", Some(p)) => (
            200,
            format!(r#"{{"errcode":40008,"errmsg":{}}}"#, Value::from(p)),
        ),
        ("feishu", None) => (200, r#"{"code":0,"msg":"success","data":{}}"#.into()),
        ("feishu", Some(p)) => (200, format!(r#"{{"code":19021,"msg":{}}}"#, Value::from(p))),
        ("teams", None) => (202, String::new()),
        (_, None) => (200, "ok".into()),
        (_, Some(p)) => (400, format!("invalid_payload: {p}")),
    }
}

async fn answer(
    state: Arc<Mutex<State>>,
    req: hyper::Request<hyper::body::Incoming>,
) -> Result<hyper::Response<Full<Bytes>>, hyper::Error> {
    let at = Instant::now();
    let path = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_default();
    let query = req.uri().query().unwrap_or("").to_owned();
    let headers: BTreeMap<String, String> = req
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
    let route = path
        .trim_start_matches('/')
        .split(['/', '?'])
        .next()
        .unwrap_or("")
        .to_owned();
    let problem = vendor_check(&route, &query, &headers, &body)
        .err()
        .map(|e| format!("{e:#}"));
    let mut s = lock(&state);
    let scripted = s.script.get_mut(&route).and_then(VecDeque::pop_front);
    let (status, text, retry_after) = match scripted {
        Some((status, retry_after)) => (status, "slow down".to_owned(), retry_after),
        None => {
            let (status, text) = vendor_answer(&route, problem.as_deref());
            (status, text, None)
        }
    };
    s.seen.push(Seen {
        path,
        headers,
        body,
        at,
        status,
        problem,
    });
    drop(s);
    let mut resp = hyper::Response::new(Full::new(Bytes::from(text)));
    *resp.status_mut() =
        hyper::StatusCode::from_u16(status).unwrap_or(hyper::StatusCode::INTERNAL_SERVER_ERROR);
    if let Some(v) = retry_after {
        resp.headers_mut()
            .insert("retry-after", v.parse().expect("header value"));
    }
    Ok(resp)
}

impl Receiver {
    async fn start() -> Result<Receiver> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let state = Arc::new(Mutex::new(State::default()));
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

    fn base(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn script(&self, route: &str, answers: &[(u16, Option<&str>)]) {
        lock(&self.state)
            .script
            .entry(route.to_owned())
            .or_default()
            .extend(answers.iter().map(|(s, r)| (*s, r.map(str::to_owned))));
    }

    fn seen(&self, route: &str) -> Vec<Seen> {
        lock(&self.state)
            .seen
            .iter()
            .filter(|s| s.route() == route)
            .cloned()
            .collect()
    }

    fn problems(&self) -> Vec<String> {
        lock(&self.state)
            .seen
            .iter()
            .filter_map(|s| s.problem.as_ref().map(|p| format!("{}: {p}", s.route())))
            .collect()
    }
}

// ---- running the sink ----

fn cache_dir() -> PathBuf {
    target_dir().join("kubesink-e2e-webhook-rs-cache")
}

/// Replays `entries` through a pipeline built from a config file's text
/// with these settings.
async fn pipeline_replay(
    receiver: &Receiver,
    entries: &[Entry],
    settings: &[(String, String)],
    extra_yaml: &str,
) -> Result<SinkReport> {
    let mut yaml = format!(
        "cache_dir: '{cache}'\nsinks:\n  - name: {SINK}\n    module: '{module}'\n    allow_hosts: ['{allow}']\n    queue: {{ coalesce: false }}\n    retry: {{ initial: 10ms, max: 100ms }}\n{extra_yaml}    settings:\n",
        cache = cache_dir().display(),
        module = wasm()?.display(),
        allow = receiver.base(),
    );
    for (k, v) in settings {
        // JSON strings are YAML double-quoted scalars.
        yaml.push_str(&format!(
            "      {}: {}\n",
            Value::from(k.as_str()),
            Value::from(v.as_str())
        ));
    }
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

async fn load(
    receiver: &Receiver,
    settings: Vec<(String, String)>,
) -> Result<SinkInstance, HostError> {
    let module = wasm().map_err(|e| HostError::Internal {
        sink: SINK.into(),
        reason: format!("{e:#}"),
    })?;
    Host::new(HostOptions {
        cache_dir: Some(cache_dir()),
        ..HostOptions::default()
    })
    .map_err(|e| HostError::Internal {
        sink: SINK.into(),
        reason: format!("{e:#}"),
    })?
    .load(SinkSpec {
        name: SINK.into(),
        module: ModuleSource::Path(module),
        settings,
        sql_grants: vec![],
        limits: Limits {
            http_allow: vec![receiver.base()],
            ..Limits::default()
        },
    })
    .await
}

fn pairs(p: &[(&str, String)]) -> Vec<(String, String)> {
    p.iter().map(|(k, v)| (k.to_string(), v.clone())).collect()
}

/// Each accepted request of `route` once (distinct idempotency keys) and
/// the records they announce add up to `n`.
fn ensure_once(receiver: &Receiver, route: &str, n: usize) -> Result<Vec<Seen>> {
    let ok: Vec<Seen> = receiver
        .seen(route)
        .into_iter()
        .filter(|s| (200..300).contains(&s.status))
        .collect();
    let mut keys = HashSet::new();
    let mut total = 0;
    for s in &ok {
        let key = s.header("idempotency-key").context("idempotency-key")?;
        ensure!(
            key.len() == 64 && key.bytes().all(|b| b.is_ascii_hexdigit()),
            "{route}: key {key}"
        );
        ensure!(
            keys.insert(key.to_owned()),
            "{route}: key {key} accepted twice"
        );
        total += s
            .header("x-kubesink-records")
            .context("x-kubesink-records")?
            .parse::<usize>()?;
    }
    ensure!(total == n, "{route}: {total} records accepted, want {n}");
    Ok(ok)
}

// ---- tests ----

/// The KubeDL fixture through one route per format: each receiver's
/// documented payload and signature hold for every request, each record
/// arrives once, and the JSON route carries every field of every record
/// in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_rs_delivers_the_fixture_in_each_vendor_format() -> Result<()> {
    let receiver = Receiver::start().await?;
    let entries = fixture_entries()?;
    let b = receiver.base();
    let settings = vec![
        ("route.slack.url", format!("{b}/slack/services/T0/B0/X")),
        ("route.slack.format", "slack".into()),
        (
            "route.dingtalk.url",
            format!("{b}/dingtalk/robot/send?access_token=dt-token"),
        ),
        ("route.dingtalk.format", "dingtalk".into()),
        ("route.dingtalk.secret", DING_SECRET.into()),
        (
            "route.feishu.url",
            format!("{b}/feishu/open-apis/bot/v2/hook/h0"),
        ),
        ("route.feishu.format", "feishu".into()),
        ("route.feishu.secret", FEISHU_SECRET.into()),
        ("route.wechat.url", format!("{b}/wechat?key=wx-key")),
        ("route.wechat.format", "wechat".into()),
        (
            "route.wechat.template",
            "{{ record.meta.uid }}@{{ record.meta.resource_version }}/{{ change }}".into(),
        ),
        ("route.wechattext.url", format!("{b}/wechattext?key=wx-key")),
        ("route.wechattext.format", "wechat".into()),
        ("route.wechattext.msgtype", "text".into()),
        ("route.teams.url", format!("{b}/teams/workflows/t0")),
        ("route.teams.format", "teams".into()),
        ("route.teamscard.url", format!("{b}/teamscard/webhookb2/t0")),
        ("route.teamscard.format", "teams-messagecard".into()),
        ("route.json.url", format!("{b}/json/ingest")),
        ("route.json.header.Authorization", "Bearer e2e-token".into()),
    ];
    // Every record through every route: no rate limit here.
    let mut settings = pairs(&settings);
    for r in [
        "slack",
        "dingtalk",
        "feishu",
        "wechat",
        "wechattext",
        "teams",
        "teamscard",
    ] {
        settings.push((format!("route.{r}.rate_limit"), "none".into()));
    }
    let report = pipeline_replay(&receiver, &entries, &settings, "").await?;
    let problems = receiver.problems();
    ensure!(
        problems.is_empty(),
        "requests broke vendor rules: {problems:#?}"
    );
    ensure!(
        report.delivered == entries.len() as u64 && report.failed == 0,
        "{report:?}"
    );
    for r in [
        "slack",
        "dingtalk",
        "feishu",
        "wechat",
        "wechattext",
        "teams",
        "teamscard",
        "json",
    ] {
        ensure_once(&receiver, r, entries.len())?;
    }
    // Every record's JSON, in order.
    let mut got = Vec::new();
    for s in receiver.seen("json") {
        ensure!(
            s.header("authorization") == Some("Bearer e2e-token"),
            "{:?}",
            s.headers
        );
        got.extend(s.json()?["records"].as_array().context("records")?.clone());
    }
    let want = entries
        .iter()
        .map(expected_line)
        .collect::<Result<Vec<_>>>()?;
    ensure!(
        got.len() == want.len(),
        "{} records, want {}",
        got.len(),
        want.len()
    );
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        ensure!(g == w, "record {i} differs:\n got  {g}\n want {w}");
    }
    ensure!(got[0]["record"]["owner"] == "张伟", "{}", got[0]);
    // The templated route: one line per record, in order.
    let mut lines = Vec::new();
    for s in receiver.seen("wechat") {
        let c = s.json()?["markdown"]["content"]
            .as_str()
            .context("content")?
            .to_owned();
        lines.extend(c.lines().skip(1).map(str::to_owned));
    }
    let want_lines: Vec<String> = want
        .iter()
        .map(|w| {
            format!(
                "{}@{}/{}",
                w["record"]["meta"]["uid"].as_str().unwrap_or(""),
                w["record"]["meta"]["resource_version"]
                    .as_str()
                    .unwrap_or(""),
                w["change"].as_str().unwrap_or("")
            )
        })
        .collect();
    ensure!(
        lines == want_lines,
        "wechat lines:\n{lines:#?}\nwant\n{want_lines:#?}"
    );
    // The default text names an event's type, object and reason.
    let event = want
        .iter()
        .find(|w| w["kind"] == "event")
        .context("an event")?;
    let r = &event["record"];
    let line = format!(
        "[{}] {} {}/{}: {}",
        r["event_type"].as_str().unwrap_or(""),
        r["involved"]["kind"].as_str().unwrap_or(""),
        r["meta"]["namespace"].as_str().unwrap_or(""),
        r["involved"]["name"].as_str().unwrap_or(""),
        r["reason"].as_str().unwrap_or("")
    );
    let slack_text: String = receiver
        .seen("slack")
        .iter()
        .filter_map(|s| s.json().ok()?["text"].as_str().map(str::to_owned))
        .collect();
    ensure!(
        slack_text.contains(&line),
        "{line:?} not in the Slack messages"
    );
    Ok(())
}

/// A wrong DingTalk secret: the receiver answers DingTalk's signature error
/// (HTTP 200, errcode 310000), which the sink reports as fatal naming the
/// route and the code.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_rs_a_bad_signature_is_rejected_naming_the_route() -> Result<()> {
    let receiver = Receiver::start().await?;
    let entries = fixture_entries()?;
    let b = receiver.base();
    let mut sink = load(
        &receiver,
        pairs(&[
            (
                "route.dingtalk.url",
                format!("{b}/dingtalk/robot/send?access_token=dt-token"),
            ),
            ("route.dingtalk.format", "dingtalk".into()),
            ("route.dingtalk.secret", "SECnot-the-robots-secret".into()),
        ]),
    )
    .await?;
    match sink.write(&entries[..3]).await {
        Err(kubesink_host::CallError::Fatal(m)) => {
            for words in [SINK, "route `dingtalk`", "dingtalk code 310000", &b] {
                ensure!(m.contains(words), "{words:?} not in {m}");
            }
            ensure!(!m.contains("dt-token"), "the access token leaked: {m}");
        }
        other => bail!("want fatal, got {other:?}"),
    }
    Ok(())
}

/// A 429 with `Retry-After: 1` is waited for inside the call; one with
/// `Retry-After: 3` beyond `wait_in_call` goes back to the host, and the
/// sink sends nothing before the time is up. Each record lands once, and
/// the retried request carries the same idempotency key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_rs_429_with_retry_after_then_success_lands_each_record_once() -> Result<()> {
    let entries = fixture_entries()?;
    for (retry_after, wait_in_call) in [(1u64, "5s"), (3, "1s")] {
        let receiver = Receiver::start().await?;
        receiver.script("json", &[(429, Some(&retry_after.to_string()))]);
        let b = receiver.base();
        let settings = pairs(&[
            ("route.json.url", format!("{b}/json/in")),
            ("route.json.batch", "25".into()),
            ("wait_in_call", wait_in_call.into()),
        ]);
        let report = pipeline_replay(&receiver, &entries, &settings, "").await?;
        ensure!(
            report.delivered == entries.len() as u64 && report.failed == 0,
            "{report:?}"
        );
        if retry_after > 1 {
            ensure!(
                report.retries >= 1,
                "Retry-After {retry_after}s: the host should retry: {report:?}"
            );
        } else {
            ensure!(
                report.retries == 0,
                "Retry-After 1s is waited for in the call: {report:?}"
            );
        }
        let seen = receiver.seen("json");
        ensure!(
            seen[0].status == 429 && seen[1].status == 200,
            "{:?}",
            seen.iter().map(|s| s.status).collect::<Vec<_>>()
        );
        ensure!(
            seen[0].header("idempotency-key") == seen[1].header("idempotency-key"),
            "key changed on retry"
        );
        let gap = seen[1].at - seen[0].at;
        ensure!(
            gap >= Duration::from_secs(retry_after),
            "retried after {gap:?}, Retry-After was {retry_after}s"
        );
        ensure_once(&receiver, "json", entries.len())?;
        let mut uids = Vec::new();
        for s in seen.iter().filter(|s| s.status == 200) {
            for r in s.json()?["records"].as_array().context("records")? {
                uids.push(format!(
                    "{}@{}",
                    r["record"]["meta"]["uid"], r["record"]["meta"]["resource_version"]
                ));
            }
        }
        let distinct: HashSet<&String> = uids.iter().collect();
        ensure!(
            distinct.len() == uids.len() && uids.len() == entries.len(),
            "{} records, {} distinct",
            uids.len(),
            distinct.len()
        );
    }
    Ok(())
}

/// A route limited to 5 messages per hour sends 5 during the whole fixture
/// (the unlimited route beside it gets everything); with a 2-second window,
/// the first message after the window is the summary of what was kept
/// back, counted by type and reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_rs_the_rate_limit_holds_and_summarizes_what_it_kept_back() -> Result<()> {
    let entries = fixture_entries()?;
    let receiver = Receiver::start().await?;
    let b = receiver.base();
    let settings = pairs(&[
        ("route.slack.url", format!("{b}/slack/services/x")),
        ("route.slack.format", "slack".into()),
        ("route.slack.batch", "1".into()),
        ("route.slack.rate_limit", "5/1h".into()),
        ("route.json.url", format!("{b}/json/all")),
    ]);
    let report = pipeline_replay(
        &receiver,
        &entries,
        &settings,
        "    batch: { max_records: 16 }\n",
    )
    .await?;
    ensure!(
        report.delivered == entries.len() as u64 && report.failed == 0,
        "{report:?}"
    );
    ensure!(
        receiver.seen("slack").len() == 5,
        "{} Slack messages",
        receiver.seen("slack").len()
    );
    ensure_once(&receiver, "json", entries.len())?;

    // The summary, on one instance.
    let receiver = Receiver::start().await?;
    let b = receiver.base();
    let mut sink = load(
        &receiver,
        pairs(&[
            ("route.slack.url", format!("{b}/slack/services/x")),
            ("route.slack.format", "slack".into()),
            ("route.slack.batch", "1".into()),
            ("route.slack.rate_limit", "2/2s".into()),
        ]),
    )
    .await?;
    let events: Vec<Entry> = entries
        .iter()
        .filter(|e| {
            serde_json::to_value(e)
                .map(|v| v.to_string().contains("\"Event\""))
                .unwrap_or(false)
        })
        .cloned()
        .collect();
    ensure!(events.len() >= 5, "{} events in the fixture", events.len());
    sink.write(&events).await?;
    ensure!(
        receiver.seen("slack").len() == 2,
        "{} messages in the first window",
        receiver.seen("slack").len()
    );
    // The limit is a rate in time: the test waits out its window (the
    // behaviour under test, not a synchronization).
    tokio::time::sleep(Duration::from_millis(2100)).await;
    sink.write(&events[..1]).await?;
    let seen = receiver.seen("slack");
    ensure!(seen.len() == 3, "{} messages after the window", seen.len());
    let text = seen[2].json()?["text"].as_str().context("text")?.to_owned();
    let kept = events.len() - 2;
    ensure!(text.contains(&format!("{kept} records not sent")), "{text}");
    ensure!(
        text.contains("2 messages per 2s") && text.contains("×"),
        "{text}"
    );
    Ok(())
}

/// Bad settings fail `init`, naming the setting and the sink.
#[tokio::test]
async fn webhook_rs_bad_settings_fail_init_naming_the_setting() -> Result<()> {
    let receiver = Receiver::start().await?;
    let url = format!("{}/json", receiver.base());
    for (settings, key) in [
        (pairs(&[("url", url.clone())]), "url"),
        (pairs(&[("route.a.format", "slack".into())]), "route.a.url"),
        (
            pairs(&[
                ("route.a.url", url.clone()),
                ("route.a.format", "discord".into()),
            ]),
            "route.a.format",
        ),
        (
            pairs(&[
                ("route.a.url", url.clone()),
                ("route.a.match.message", "([".into()),
            ]),
            "route.a.match.message",
        ),
        (
            pairs(&[
                ("route.a.url", url.clone()),
                ("route.a.template", "{% if %}".into()),
            ]),
            "route.a.template",
        ),
        (
            pairs(&[("route.a.url", url.clone()), ("route.a.secret", "s".into())]),
            "route.a.secret",
        ),
        (
            pairs(&[
                ("route.a.url", url.clone()),
                ("route.a.rate_limit", "lots".into()),
            ]),
            "route.a.rate_limit",
        ),
    ] {
        match load(&receiver, settings).await {
            Err(e) => {
                let text = format!("{e:#}");
                ensure!(
                    text.contains(&format!("setting `{key}`"))
                        && text.contains(SINK)
                        && !e.is_retryable(),
                    "{key}: {text}"
                );
            }
            Ok(_) => bail!("init accepted a bad `{key}`"),
        }
    }
    Ok(())
}

/// 10k events in batches of 500 into the receiver, JSON (batch 500) and
/// Slack (10 records a message, no rate limit): prints events/s and the
/// component's sizes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_rs_throughput_10k_events() -> Result<()> {
    use kubesink_tests::records;
    const N: usize = 10_000;
    let wasm = wasm()?;
    let raw = std::fs::read(&wasm)?;
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    std::io::Write::write_all(&mut gz, &raw)?;
    let gz = gz.finish()?;
    ensure!(
        gz.len() < 500 << 10,
        "{} bytes gzipped: too big for a ConfigMap with room to spare",
        gz.len()
    );
    println!(
        "webhook (Rust): component {} bytes, {} gzipped (-9)",
        raw.len(),
        gz.len()
    );
    let events: Vec<Entry> = (0..N)
        .map(|i| {
            records::applied(kubesink_normalize::record::Record::Event(records::event(
                &format!("u{i}"),
                i as u64 + 1,
                1,
            )))
        })
        .collect();
    for (format, batch) in [("json", "500"), ("slack", "10")] {
        let receiver = Receiver::start().await?;
        let mut sink = load(
            &receiver,
            pairs(&[
                ("route.r.url", format!("{}/{format}/in", receiver.base())),
                ("route.r.format", format.into()),
                ("route.r.batch", batch.into()),
                ("route.r.rate_limit", "none".into()),
            ]),
        )
        .await?;
        let started = Instant::now();
        for b in events.chunks(500) {
            sink.write(b).await?;
        }
        let elapsed = started.elapsed().as_secs_f64();
        let seen = receiver.seen(format);
        let records: usize = seen
            .iter()
            .filter_map(|s| s.header("x-kubesink-records")?.parse::<usize>().ok())
            .sum();
        ensure!(records == N, "{format}: {records} of {N} arrived");
        ensure!(receiver.problems().is_empty(), "{:?}", receiver.problems());
        println!(
            "webhook (Rust) {format} throughput: {N} events in {elapsed:.2} s = {:.0} events/s in {} requests",
            N as f64 / elapsed,
            seen.len()
        );
    }
    Ok(())
}
