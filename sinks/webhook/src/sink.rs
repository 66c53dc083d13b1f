//! The sink's logic, independent of how HTTP is sent: each batch is
//! shared out to the routes whose rules take its records, cut into
//! messages, rate-limited, signed and sent; answers become errors the host
//! understands.
//!
//! - **Batching.** A route's records of one batch become messages of at
//!   most `batch` records and the format's size limit, in batch order.
//! - **Idempotency.** Each message has a key, the SHA-256 of the route's
//!   name and its records' identities (change, kind, uid, resource
//!   version), sent as `Idempotency-Key`; it is the same every time the
//!   same records are sent. Messages a receiver accepted are remembered
//!   (the last 4096 per route) and not sent again when the host retries
//!   the batch.
//! - **Retries.** 408, 429 and 5xx (and a vendor's "too fast" code) are
//!   retried: inside the call when the receiver's `Retry-After` fits in
//!   what is left of `wait_in_call`, else the call returns `retryable` and
//!   the route sends nothing before that time (the host's retries in
//!   between fail at once, without a request).
//! - **Rate limit.** A token bucket per route (`rate_limit`, COUNT/PERIOD):
//!   a message that finds no token is not sent; its records are counted by
//!   kind and reason, and one summary message ("N records not sent ...")
//!   goes out, taking a token itself, at most once per period, before the
//!   route's next message.

use std::collections::{BTreeMap, HashSet, VecDeque};

use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

use crate::bindings::kubesink::sink::types::Change;
use crate::format::{self, Format, Message, Verdict};
use crate::record::{Fields, change_json, change_time_ms, identity, record_of, rfc3339};
use crate::render::Renderer;
use crate::settings::{Config, Route};
pub use crate::transport::{HttpRequest, HttpResponse, Transport, TransportError};

/// A failed write, as the host's `error` variant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SinkError {
    /// Try the same batch again later.
    Retryable(String),
    /// Do not retry.
    Fatal(String),
}

/// A set that forgets its oldest members past a size.
#[derive(Debug, Default)]
struct Memory {
    set: HashSet<String>,
    order: VecDeque<String>,
}

impl Memory {
    fn contains(&self, k: &str) -> bool {
        self.set.contains(k)
    }

    fn insert(&mut self, k: String, cap: usize) -> bool {
        if !self.set.insert(k.clone()) {
            return false;
        }
        self.order.push_back(k);
        if self.order.len() > cap
            && let Some(old) = self.order.pop_front()
        {
            self.set.remove(&old);
        }
        true
    }
}

/// Messages remembered as delivered, per route.
const REMEMBER_MESSAGES: usize = 4096;
/// Records remembered as suppressed, per route.
const REMEMBER_SUPPRESSED: usize = 16_384;
/// Attempts of one message inside one call.
const ATTEMPTS_IN_CALL: usize = 3;

/// What a route remembers between calls. `refilled_ms`, `not_before_ms`
/// and `last_summary_ms` are on the monotonic clock
/// ([`Transport::mono_ms`]); `suppressed_since_ms` and
/// `suppressed_until_ms` on the wall clock (the summary shows them).
#[derive(Debug, Default)]
struct RouteState {
    tokens: f64,
    refilled_ms: u64,
    started: bool,
    not_before_ms: u64,
    delivered: Memory,
    suppressed_ids: Memory,
    /// Suppressed records by summary key, since `suppressed_since_ms`.
    suppressed: BTreeMap<String, u64>,
    suppressed_since_ms: u64,
    suppressed_until_ms: u64,
    last_summary_ms: Option<u64>,
}

/// One planned message.
#[derive(Debug, Clone)]
struct Planned {
    key: String,
    /// Identity and summary key of each record.
    records: Vec<(String, String)>,
    content: Content,
    summary: bool,
}

#[derive(Debug, Clone)]
enum Content {
    Chat(Message),
    /// The whole body, serialized.
    Json(String),
}

/// The sink.
#[derive(Debug)]
pub struct WebhookSink {
    config: Config,
    renderer: Renderer,
    state: Vec<RouteState>,
}

fn hex_sha256(parts: &[&str]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p.as_bytes());
        h.update(b"\n");
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// Cuts `s` to at most `max` bytes on a character boundary, marking the cut.
fn cut(mut s: String, max: usize) -> String {
    if s.len() <= max {
        return s;
    }
    let mut end = max.saturating_sub(3);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s.truncate(end);
    s.push('…');
    s
}

impl WebhookSink {
    /// A sink for these settings; fails naming a template that does not
    /// compile.
    pub fn new(config: Config) -> Result<WebhookSink, crate::settings::SettingsError> {
        let renderer = Renderer::new(&config.routes)
            .map_err(|(key, reason)| crate::settings::SettingsError { key, reason })?;
        let state = config
            .routes
            .iter()
            .map(|_| RouteState::default())
            .collect();
        Ok(WebhookSink {
            config,
            renderer,
            state,
        })
    }

    /// Its settings.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Writes one batch to every route; fails with the first fatal error of
    /// any route, else the first retryable one, after trying every route.
    pub fn write(&mut self, t: &mut dyn Transport, batch: &[Change]) -> Result<(), SinkError> {
        let items: Vec<(&Change, Value)> = batch
            .iter()
            .filter_map(|c| change_json(c).map(|j| (c, j)))
            .collect();
        let mut budget = self.config.wait_in_call_ms;
        let mut fatal = None;
        let mut retry = None;
        for i in 0..self.config.routes.len() {
            let now = t.now_ms();
            let result = self
                .plan(i, &items, now)
                .and_then(|plan| self.deliver(i, t, plan, &mut budget));
            match result {
                Ok(()) => {}
                Err(SinkError::Fatal(m)) => {
                    fatal.get_or_insert(m);
                }
                Err(SinkError::Retryable(m)) => {
                    retry.get_or_insert(m);
                }
            }
        }
        match (fatal, retry) {
            (Some(m), _) => Err(SinkError::Fatal(m)),
            (None, Some(m)) => Err(SinkError::Retryable(m)),
            (None, None) => Ok(()),
        }
    }

    /// The route's messages for this batch, in order.
    fn plan(
        &self,
        i: usize,
        items: &[(&Change, Value)],
        now_ms: u64,
    ) -> Result<Vec<Planned>, SinkError> {
        let route = &self.config.routes[i];
        let max = route.max_text();
        let mut out = Vec::new();
        let mut records: Vec<(String, String)> = Vec::new();
        let mut texts: Vec<String> = Vec::new();
        let mut values: Vec<String> = Vec::new();
        let mut size = 0;
        for (change, json) in items {
            let Some(record) = record_of(change) else {
                continue;
            };
            if !route.filter.takes(&Fields::of(record), &self.config.drops) {
                continue;
            }
            if let (Some(max), Some(at)) = (route.max_age_ms, change_time_ms(change))
                && (now_ms as i64).saturating_sub(at) > max as i64
            {
                continue;
            }
            let (text, value) = if route.format == Format::Json {
                let v = match &route.template {
                    None => json.to_string(),
                    Some(_) => {
                        let text = self
                            .renderer
                            .render(route, json)
                            .map_err(SinkError::Fatal)?;
                        // Checked and compacted.
                        serde_json::from_str::<Value>(&text)
                            .map_err(|e| {
                                SinkError::Fatal(format!(
                                    "route `{}`: the template's output is not JSON ({e}): {}",
                                    route.name,
                                    format::snippet(text.as_bytes())
                                ))
                            })?
                            .to_string()
                    }
                };
                (String::new(), Some(v))
            } else {
                let text = self
                    .renderer
                    .render(route, json)
                    .map_err(SinkError::Fatal)?;
                (cut(text, max - route.title.len().min(max / 2) - 16), None)
            };
            let len = value.as_ref().map_or(text.len(), String::len) + 1;
            if !records.is_empty() && (records.len() >= route.batch || size + len > max) {
                out.push(self.message(
                    route,
                    std::mem::take(&mut records),
                    std::mem::take(&mut texts),
                    std::mem::take(&mut values),
                ));
                size = 0;
            }
            size += len;
            records.push((identity(change), Fields::summary_key(record)));
            match value {
                Some(v) => values.push(v),
                None => texts.push(text),
            }
        }
        if !records.is_empty() {
            out.push(self.message(route, records, texts, values));
        }
        Ok(out)
    }

    fn message(
        &self,
        route: &Route,
        records: Vec<(String, String)>,
        lines: Vec<String>,
        values: Vec<String>,
    ) -> Planned {
        let mut parts: Vec<&str> = vec![route.name.as_str()];
        parts.extend(records.iter().map(|(id, _)| id.as_str()));
        let content = if route.format == Format::Json {
            // Each record serialized once, joined into `{"records":[...]}`.
            Content::Json(format!("{{\"records\":[{}]}}", values.join(",")))
        } else {
            Content::Chat(Message {
                title: route.title.clone(),
                plain: route.plain,
                lines,
            })
        };
        Planned {
            key: hex_sha256(&parts),
            records,
            content,
            summary: false,
        }
    }

    /// The summary of what the rate limit kept back, if any is due.
    fn summary(&self, i: usize, now_ms: u64) -> Option<Planned> {
        let route = &self.config.routes[i];
        let st = &self.state[i];
        let rate = route.rate?;
        let total: u64 = st.suppressed.values().sum();
        if total == 0
            || st
                .last_summary_ms
                .is_some_and(|t| now_ms < t + rate.period_ms)
        {
            return None;
        }
        let mut by: Vec<(&String, &u64)> = st.suppressed.iter().collect();
        by.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
        let since = rfc3339((st.suppressed_since_ms / 1000) as i64, 0);
        let until = rfc3339((st.suppressed_until_ms / 1000) as i64, 0);
        let top: Vec<String> = by
            .iter()
            .take(5)
            .map(|(k, n)| format!("{n}× {k}"))
            .collect();
        let more = by.len().saturating_sub(5);
        let text = format!(
            "kubesink rate limit ({} messages per {}): {total} records not sent between {since} and {until}: {}{}",
            rate.count,
            if rate.period_ms % 1000 == 0 {
                format!("{}s", rate.period_ms / 1000)
            } else {
                format!("{}ms", rate.period_ms)
            },
            top.join(", "),
            if more > 0 {
                format!(", and {more} more kinds")
            } else {
                String::new()
            }
        );
        let content = if route.format == Format::Json {
            let by_map: serde_json::Map<String, Value> =
                by.iter().map(|(k, n)| ((*k).clone(), json!(n))).collect();
            Content::Json(
                json!({
                    "records": [],
                    "suppressed": { "count": total, "since": since, "until": until, "by": by_map, "text": text },
                })
                .to_string(),
            )
        } else {
            Content::Chat(Message {
                title: route.title.clone(),
                plain: route.plain,
                lines: vec![text],
            })
        };
        let key = hex_sha256(&[&route.name, "summary", &since, &until, &total.to_string()]);
        Some(Planned {
            key,
            records: Vec::new(),
            content,
            summary: true,
        })
    }

    /// Takes a token if the route has one (no limit: always).
    fn take_token(&mut self, i: usize, now_ms: u64) -> bool {
        let Some(rate) = self.config.routes[i].rate else {
            return true;
        };
        let st = &mut self.state[i];
        let cap = f64::from(rate.count);
        if !st.started {
            st.started = true;
            st.tokens = cap;
            st.refilled_ms = now_ms;
        }
        let elapsed = now_ms.saturating_sub(st.refilled_ms) as f64;
        st.tokens = (st.tokens + elapsed * cap / rate.period_ms as f64).min(cap);
        st.refilled_ms = now_ms;
        if st.tokens >= 1.0 {
            st.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    fn give_back_token(&mut self, i: usize) {
        if let Some(rate) = self.config.routes[i].rate {
            let st = &mut self.state[i];
            st.tokens = (st.tokens + 1.0).min(f64::from(rate.count));
        }
    }

    /// Counts a message's records as suppressed (each once, even when the
    /// host redelivers the batch).
    fn suppress(&mut self, i: usize, m: &Planned, now_ms: u64) {
        let st = &mut self.state[i];
        for (id, key) in &m.records {
            if st.suppressed_ids.insert(id.clone(), REMEMBER_SUPPRESSED) {
                if st.suppressed.is_empty() {
                    st.suppressed_since_ms = now_ms;
                }
                st.suppressed_until_ms = now_ms;
                *st.suppressed.entry(key.clone()).or_default() += 1;
            }
        }
    }

    fn deliver(
        &mut self,
        i: usize,
        t: &mut dyn Transport,
        plan: Vec<Planned>,
        budget: &mut u64,
    ) -> Result<(), SinkError> {
        let pending: Vec<Planned> = {
            let st = &self.state[i];
            plan.into_iter()
                .filter(|m| {
                    !st.delivered.contains(&m.key)
                        && !m
                            .records
                            .iter()
                            .all(|(id, _)| st.suppressed_ids.contains(id))
                })
                .collect()
        };
        let mono = t.mono_ms();
        let summary = self.summary(i, mono);
        if pending.is_empty() && summary.is_none() {
            return Ok(());
        }
        let name = self.config.routes[i].name.clone();
        let not_before = self.state[i].not_before_ms;
        if mono < not_before {
            if pending.is_empty() {
                // Only a summary is due: it waits for the next write.
                return Ok(());
            }
            return Err(SinkError::Retryable(format!(
                "route `{name}`: the receiver asked to wait {} ms more (Retry-After); {} messages wait",
                not_before - mono,
                pending.len()
            )));
        }
        for m in summary.into_iter().chain(pending) {
            let mono = t.mono_ms();
            if !self.take_token(i, mono) {
                if !m.summary {
                    self.suppress(i, &m, t.now_ms());
                }
                continue;
            }
            if let Err(e) = self.send(i, t, &m, budget) {
                self.give_back_token(i);
                return Err(e);
            }
            let st = &mut self.state[i];
            st.delivered.insert(m.key.clone(), REMEMBER_MESSAGES);
            if m.summary {
                st.suppressed.clear();
                st.last_summary_ms = Some(mono);
            }
        }
        Ok(())
    }

    /// Builds and sends one message, retrying inside the call while the
    /// receiver's `Retry-After` fits the budget.
    fn send(
        &mut self,
        i: usize,
        t: &mut dyn Transport,
        m: &Planned,
        budget: &mut u64,
    ) -> Result<(), SinkError> {
        let route = &self.config.routes[i];
        let target = format!("route `{}` ({})", route.name, route.url.origin());
        for attempt in 1..=ATTEMPTS_IN_CALL {
            let now = t.now_ms();
            let req = request(route, m, now);
            let answer = match t.send(req) {
                Ok(a) => a,
                Err(TransportError::Denied(e)) => {
                    return Err(SinkError::Fatal(format!(
                        "{target}: the host denied the request (is it in the sink's allow_hosts?): {e}"
                    )));
                }
                Err(TransportError::Network(e)) => {
                    return Err(SinkError::Retryable(format!("{target}: {e}")));
                }
            };
            // A wait the receiver asks for counts from its answer, not from
            // before the request (setting up a connection in between would
            // bring the retry early).
            let answered = t.now_ms();
            let answered_mono = t.mono_ms();
            let retry_after = answer
                .headers
                .iter()
                .find(|(k, _)| k == "retry-after")
                .map(|(_, v)| v.as_str());
            match format::verdict(
                route.format,
                answer.status,
                retry_after,
                &answer.body,
                answered,
            ) {
                Verdict::Ok => return Ok(()),
                Verdict::Reject(why) => {
                    return Err(SinkError::Fatal(format!("{target}: {why}")));
                }
                Verdict::Retry { why, after_ms } => {
                    let fits = after_ms.is_some_and(|ms| ms <= *budget);
                    if fits && attempt < ATTEMPTS_IN_CALL {
                        let ms = after_ms.unwrap_or(0);
                        *budget -= ms;
                        t.sleep_ms(ms);
                        continue;
                    }
                    if let Some(ms) = after_ms {
                        // The clock reads whole milliseconds: one more keeps
                        // the retry at or after the time asked for.
                        self.state[i].not_before_ms = answered_mono + ms + 1;
                    }
                    return Err(SinkError::Retryable(format!("{target}: {why}")));
                }
            }
        }
        unreachable!("the last attempt returns")
    }
}

/// The HTTP request of a message at `now_ms` (signatures take the time).
fn request(route: &Route, m: &Planned, now_ms: u64) -> HttpRequest {
    let mut path = route.url.path_with_query.clone();
    let mut feishu = None;
    if let Some(secret) = &route.secret {
        match route.format {
            Format::DingTalk => {
                let sign = format::dingtalk_sign(now_ms, secret);
                path.push(if path.contains('?') { '&' } else { '?' });
                path.push_str(&format!(
                    "timestamp={now_ms}&sign={}",
                    format::url_encode(&sign)
                ));
            }
            Format::Feishu => {
                let ts = now_ms / 1000;
                feishu = Some((ts, format::feishu_sign(ts, secret)));
            }
            _ => {}
        }
    }
    let body = match &m.content {
        Content::Json(body) => body.clone(),
        Content::Chat(msg) => format::chat_body(route.format, msg, feishu).to_string(),
    };
    let mut headers = vec![
        (
            "content-type".to_owned(),
            "application/json; charset=utf-8".to_owned(),
        ),
        ("idempotency-key".to_owned(), m.key.clone()),
        ("x-kubesink-records".to_owned(), m.records.len().to_string()),
        (
            "user-agent".to_owned(),
            concat!("kubesink-sink-webhook/", env!("CARGO_PKG_VERSION")).to_owned(),
        ),
    ];
    headers.extend(route.headers.iter().cloned());
    HttpRequest {
        scheme: route.url.scheme,
        authority: route.url.authority.clone(),
        path_with_query: path,
        headers,
        body: body.into_bytes(),
    }
}

#[cfg(test)]
mod tests;
