//! The sink's logic, independent of how HTTP is sent: batches become
//! PutLogs requests (grouped by topic and source, split at the body and
//! count limits, signed, lz4-compressed), responses become errors the host
//! understands.
//!
//! Concurrency: a batch's requests are sent with up to `max_in_flight` of
//! them outstanding at once ([`Transport::send_all`]). After the first
//! failure no further request is started; the ones in flight are waited for,
//! and the batch fails with the first fatal error, or else the first
//! retryable one (in request order).
//!
//! Redelivery: SLS appends, so a batch redelivered after a partial failure
//! would duplicate the requests that had succeeded. The sink remembers the
//! MD5 of the last 4096 bodies SLS accepted (only those: a body whose
//! request failed or was never started is sent again) and skips a request
//! whose body it already delivered, so a batch retried on the same instance
//! lands once. The MD5 is the one `Content-MD5` carries, of the body as
//! sent: lz4 is deterministic and lossless, so the same raw body always
//! compresses to the same bytes and different ones never do, and one MD5
//! per request is computed instead of two.

use std::collections::{HashMap, HashSet, VecDeque};
use std::fmt;

use crate::mapping::{Mapped, map_entry};
use crate::proto::{Log, encode_group, group_overhead};
use crate::settings::{Compression, Scheme, Settings};
use crate::sign::{self, ToSign};
use kubesink_packed::Change;

/// An HTTP request for the transport.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpRequest {
    /// `POST`.
    pub method: &'static str,
    /// Scheme.
    pub scheme: Scheme,
    /// What to connect to: `host[:port]`.
    pub authority: String,
    /// Path and query.
    pub path_with_query: String,
    /// Headers, lowercase names.
    pub headers: Vec<(String, String)>,
    /// Body bytes.
    pub body: Vec<u8>,
}

/// An HTTP response from the transport.
#[derive(Debug, Clone, Default)]
pub struct HttpResponse {
    /// Status code.
    pub status: u16,
    /// Headers, lowercase names.
    pub headers: Vec<(String, String)>,
    /// Body (possibly capped).
    pub body: Vec<u8>,
}

/// Why the transport could not get a response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TransportError {
    /// The host refused the request (not in the sink's allow-list).
    Denied(String),
    /// Connecting, sending or receiving failed, or timed out.
    Network(String),
}

/// What the caller of [`Transport::send_all`] wants after a response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    /// Start more requests.
    Continue,
    /// Start no more requests; wait for the ones in flight.
    Stop,
}

/// The outcome of one request.
pub type Sent = Result<HttpResponse, TransportError>;

/// Sends HTTP requests (wasi:http in the component, fakes in tests).
pub trait Transport {
    /// Sends the requests `requests` yields, in order, with at most
    /// `max_in_flight` (at least 1) outstanding at once, pulling the next
    /// one only when there is room. Each outcome goes to `done` with the
    /// request's index (its position in `requests`), in completion order.
    /// Once `done` returns [`Flow::Stop`] no request is started any more;
    /// returns after every started request has gone to `done`.
    fn send_all(
        &mut self,
        requests: &mut dyn Iterator<Item = HttpRequest>,
        max_in_flight: usize,
        done: &mut dyn FnMut(usize, Sent) -> Flow,
    );
}

/// A failed write, as the host's `error` variant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SinkError {
    /// Try the same batch again later.
    Retryable(String),
    /// Do not retry.
    Fatal(String),
}

impl fmt::Display for SinkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Retryable(m) => write!(f, "retryable: {m}"),
            Self::Fatal(m) => write!(f, "fatal: {m}"),
        }
    }
}

/// One PutLogs to send: a LogGroup's worth of logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group<'a> {
    /// Topic.
    pub topic: &'a str,
    /// Source.
    pub source: &'a str,
    /// Logs, within the count and size limits.
    pub logs: Vec<Log<'a>>,
}

impl Group<'_> {
    /// Encoded LogGroup (uncompressed).
    pub fn encode(&self) -> Vec<u8> {
        encode_group(self.topic, self.source, &self.logs)
    }
}

/// Cuts every value of `log` so that it fits into `budget` bytes framed.
fn shrink(log: &mut Log<'_>, budget: usize) {
    let n = log.contents.len().max(1);
    let mut per_value = budget / (2 * n);
    while log.framed_len() > budget && per_value > 0 {
        for (_, v) in &mut log.contents {
            let cut = crate::mapping::truncate(v, per_value).len();
            match v {
                std::borrow::Cow::Borrowed(s) => *s = &s[..cut],
                std::borrow::Cow::Owned(s) => s.truncate(cut),
            }
        }
        per_value /= 2;
    }
}

/// Groups mapped logs by (topic, source) in first-seen order, and splits
/// them so that each group's encoded size is at most `max_bytes` and its
/// count at most `max_logs`.
pub fn plan(mapped: Vec<Mapped<'_>>, max_bytes: usize, max_logs: usize) -> Vec<Group<'_>> {
    // (topic, source) → its bucket, found by hash: a batch of events has
    // one source per node (~60 in the bench), and a search through the
    // keys was the sink's largest cost.
    let mut index: HashMap<(&str, &str), usize> = HashMap::new();
    let mut keys: Vec<(&str, &str)> = Vec::new();
    let mut buckets: Vec<Vec<Log<'_>>> = Vec::new();
    for m in mapped {
        let key = (m.topic, m.source);
        let i = *index.entry(key).or_insert_with(|| {
            keys.push(key);
            buckets.push(Vec::new());
            keys.len() - 1
        });
        buckets[i].push(m.log);
    }
    let mut groups = Vec::new();
    for ((topic, source), logs) in keys.into_iter().zip(buckets) {
        let overhead = group_overhead(topic, source);
        let budget = max_bytes.saturating_sub(overhead);
        let mut current: Vec<Log<'_>> = Vec::new();
        let mut size = 0;
        for mut log in logs {
            if log.framed_len() > budget {
                shrink(&mut log, budget);
            }
            let len = log.framed_len();
            if !current.is_empty() && (size + len > budget || current.len() >= max_logs) {
                groups.push(Group {
                    topic,
                    source,
                    logs: std::mem::take(&mut current),
                });
                size = 0;
            }
            size += len;
            current.push(log);
        }
        if !current.is_empty() {
            groups.push(Group {
                topic,
                source,
                logs: current,
            });
        }
    }
    groups
}

/// The body as sent for an encoded LogGroup (lz4-compressed or as is),
/// and the `x-log-compresstype` it needs.
pub fn compress(settings: &Settings, raw: Vec<u8>) -> (Vec<u8>, Option<&'static str>) {
    match settings.compression {
        Compression::Lz4 => (lz4_flex::block::compress(&raw), Some("lz4")),
        Compression::None => (raw, None),
    }
}

/// MD5 of a body as sent.
pub fn body_md5(body: &[u8]) -> [u8; 16] {
    use md5::Digest as _;
    md5::Md5::digest(body).into()
}

/// Builds the signed PutLogs request for an encoded LogGroup.
pub fn put_logs_request(settings: &Settings, raw: &[u8], now_secs: i64) -> HttpRequest {
    let (body, compress) = compress(settings, raw.to_vec());
    let md5 = body_md5(&body);
    signed_request(settings, raw.len(), body, compress, &md5, now_secs)
}

/// The signed PutLogs request for `body` (`raw_len` bytes before
/// compression, MD5 `md5`).
fn signed_request(
    settings: &Settings,
    raw_len: usize,
    body: Vec<u8>,
    compress: Option<&'static str>,
    md5: &[u8; 16],
    now_secs: i64,
) -> HttpRequest {
    let path = format!("/logstores/{}/shards/lb", settings.logstore);
    let md5 = sign::hex_upper(md5);
    let date = sign::rfc1123(now_secs);
    let content_type = "application/x-protobuf";
    let mut headers: Vec<(String, String)> = vec![
        ("x-log-apiversion".into(), "0.6.0".into()),
        ("x-log-signaturemethod".into(), "hmac-sha1".into()),
        ("x-log-bodyrawsize".into(), raw_len.to_string()),
    ];
    if let Some(c) = compress {
        headers.push(("x-log-compresstype".into(), c.into()));
    }
    if let Some(token) = &settings.security_token {
        headers.push(("x-acs-security-token".into(), token.clone()));
    }
    let authorization = sign::authorization(
        &settings.access_key_id,
        &settings.access_key_secret,
        &ToSign {
            method: "POST",
            content_md5: &md5,
            content_type,
            date: &date,
            headers: &headers,
            path: &path,
            query: &[],
        },
    );
    headers.extend([
        ("content-type".into(), content_type.into()),
        ("content-md5".into(), md5),
        ("content-length".into(), body.len().to_string()),
        ("date".into(), date),
        ("authorization".into(), authorization),
        (
            "user-agent".into(),
            concat!("kubesink-sink-sls/", env!("CARGO_PKG_VERSION")).into(),
        ),
    ]);
    if let Some(host) = settings.endpoint.host_header(&settings.project) {
        headers.push(("host".into(), host));
    }
    HttpRequest {
        method: "POST",
        scheme: settings.endpoint.scheme,
        authority: settings.endpoint.authority(&settings.project),
        path_with_query: path,
        headers,
        body,
    }
}

/// The value of a JSON string field, e.g. `errorCode`, from SLS's error body.
fn json_string(body: &str, field: &str) -> Option<String> {
    let key = format!("\"{field}\"");
    let rest = &body[body.find(&key)? + key.len()..];
    let rest = rest
        .trim_start()
        .strip_prefix(':')?
        .trim_start()
        .strip_prefix('"')?;
    let mut out = String::new();
    let mut chars = rest.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => return Some(out),
            '\\' => match chars.next()? {
                'n' => out.push('\n'),
                't' => out.push('\t'),
                'u' => {
                    let hex: String = chars.by_ref().take(4).collect();
                    out.push(
                        u32::from_str_radix(&hex, 16)
                            .ok()
                            .and_then(char::from_u32)
                            .unwrap_or('?'),
                    );
                }
                other => out.push(other),
            },
            c => out.push(c),
        }
    }
    None
}

/// Maps an SLS response to the sink's result. 403 quota errors, 429 and
/// 5xx are retryable; everything else that is not 200 is fatal.
pub fn check_response(target: &str, response: &HttpResponse) -> Result<(), SinkError> {
    if response.status == 200 {
        return Ok(());
    }
    let body = String::from_utf8_lossy(&response.body);
    let code = json_string(&body, "errorCode").unwrap_or_default();
    let message = json_string(&body, "errorMessage")
        .unwrap_or_else(|| crate::mapping::truncate(&body, 200).to_string());
    let request_id = response
        .headers
        .iter()
        .find(|(k, _)| k == "x-log-requestid")
        .map(|(_, v)| v.as_str())
        .unwrap_or("-");
    let text = format!(
        "sls sink: PutLogs to {target}: HTTP {} {code}: {message} (request id {request_id})",
        response.status
    );
    let retry = matches!(response.status, 429 | 500..=599)
        || (response.status == 403 && code.contains("QuotaExceed"));
    Err(if retry {
        SinkError::Retryable(text)
    } else {
        SinkError::Fatal(text)
    })
}

/// The sink: settings plus the memory of delivered bodies.
#[derive(Debug)]
pub struct SlsSink {
    settings: Settings,
    delivered: HashSet<[u8; 16]>,
    delivered_order: VecDeque<[u8; 16]>,
}

/// How many delivered bodies are remembered.
const REMEMBER: usize = 4096;

impl SlsSink {
    /// A sink for these settings.
    pub fn new(settings: Settings) -> Self {
        Self {
            settings,
            delivered: HashSet::new(),
            delivered_order: VecDeque::new(),
        }
    }

    /// Its settings.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// `project/logstore` at the endpoint, for messages (no credentials).
    fn target(&self) -> String {
        format!(
            "{}/{} at {}",
            self.settings.project,
            self.settings.logstore,
            self.settings.endpoint.authority(&self.settings.project)
        )
    }

    /// Writes one batch: maps, plans, and sends each group not delivered
    /// yet, `max_in_flight` at a time.
    pub fn write(
        &mut self,
        transport: &mut dyn Transport,
        batch: &[Change],
        now_secs: i64,
    ) -> Result<(), SinkError> {
        let mapped: Vec<Mapped> = batch
            .iter()
            .filter_map(|e| map_entry(&self.settings, e))
            .collect();
        let groups = plan(
            mapped,
            self.settings.max_body_bytes,
            self.settings.max_logs_per_request,
        );
        let target = self.target();
        let settings = &self.settings;
        let delivered = &self.delivered;
        // Digest of request i; bodies already delivered (before or earlier
        // in this batch) are not sent.
        let mut digests: Vec<[u8; 16]> = Vec::new();
        let mut in_batch: HashSet<[u8; 16]> = HashSet::new();
        let mut requests = groups.into_iter().filter_map(|group| {
            let raw = group.encode();
            let raw_len = raw.len();
            let (body, compression) = compress(settings, raw);
            let digest = body_md5(&body);
            if delivered.contains(&digest) || !in_batch.insert(digest) {
                return None;
            }
            digests.push(digest);
            Some(signed_request(
                settings,
                raw_len,
                body,
                compression,
                &digest,
                now_secs,
            ))
        });
        let mut accepted: Vec<usize> = Vec::new();
        // (request index, error) of failed requests.
        let mut failed: Vec<(usize, SinkError)> = Vec::new();
        transport.send_all(
            &mut requests,
            settings.max_in_flight,
            &mut |i, sent| {
                let result = match sent {
                    Ok(response) => check_response(&target, &response),
                    Err(TransportError::Denied(m)) => Err(SinkError::Fatal(format!(
                        "sls sink: PutLogs to {target}: the host denied the request (is the endpoint in the sink's allow-list?): {m}"
                    ))),
                    Err(TransportError::Network(m)) => Err(SinkError::Retryable(format!(
                        "sls sink: PutLogs to {target}: {m}"
                    ))),
                };
                match result {
                    Ok(()) => {
                        accepted.push(i);
                        Flow::Continue
                    }
                    Err(e) => {
                        failed.push((i, e));
                        Flow::Stop
                    }
                }
            },
        );
        drop(requests);
        for i in accepted {
            // A transport that reports an index it never pulled is a bug;
            // remembering nothing for it is the safe side (resend).
            if let Some(digest) = digests.get(i) {
                self.remember(*digest);
            }
        }
        failed.sort_by_key(|(i, e)| (matches!(e, SinkError::Retryable(_)), *i));
        let more = failed.len().saturating_sub(1);
        match failed.into_iter().next() {
            None => Ok(()),
            Some((_, e)) if more == 0 => Err(e),
            Some((_, SinkError::Fatal(m))) => Err(SinkError::Fatal(format!(
                "{m} (and {more} more failed requests in this batch)"
            ))),
            Some((_, SinkError::Retryable(m))) => Err(SinkError::Retryable(format!(
                "{m} (and {more} more failed requests in this batch)"
            ))),
        }
    }

    /// Remembers a body SLS accepted, forgetting the oldest past [`REMEMBER`].
    fn remember(&mut self, digest: [u8; 16]) {
        if !self.delivered.insert(digest) {
            return;
        }
        self.delivered_order.push_back(digest);
        if self.delivered_order.len() > REMEMBER
            && let Some(old) = self.delivered_order.pop_front()
        {
            self.delivered.remove(&old);
        }
    }
}

#[cfg(test)]
mod tests;
