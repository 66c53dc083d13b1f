//! The emulator's HTTP side: routing, authentication, PutLogs, ListShards,
//! GetCursor and PullLogs, and SLS-shaped errors.

use std::borrow::Cow;
use std::convert::Infallible;
use std::io::Read as _;
use std::sync::Arc;

use base64::Engine as _;
use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;

use super::sign::{self, SignedParts};
use super::{Fault, RequestRecord, State, StoredGroup, StoredLog};

/// Most bytes of raw (uncompressed) PutLogs body SLS accepts.
const MAX_RAW_BODY: usize = 10 << 20;
/// Most bytes of one log value.
const MAX_VALUE: usize = 1 << 20;
/// Most bytes of a topic or source.
const MAX_TOPIC: usize = 128;
/// Most body bytes read from the wire at all.
const MAX_WIRE_BODY: usize = 64 << 20;
/// Most log groups one PullLogs returns.
const MAX_PULL_COUNT: usize = 1000;
/// Allowed clock skew of `Date`.
const MAX_SKEW_SECS: i64 = 15 * 60;

/// Accepts connections until the task is aborted.
pub(super) async fn serve(listener: tokio::net::TcpListener, state: Arc<State>) {
    let mut conns = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let state = state.clone();
                    conns.spawn(async move {
                        let svc = hyper::service::service_fn(move |req| handle(state.clone(), req));
                        if let Err(e) = hyper::server::conn::http1::Builder::new()
                            .serve_connection(TokioIo::new(stream), svc)
                            .await
                        {
                            tracing::debug!("sls emulator: connection ended: {e}");
                        }
                    });
                }
                Err(e) => {
                    tracing::warn!("sls emulator: accept failed: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                }
            },
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
}

/// An SLS error answer.
#[derive(Debug)]
struct SlsError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

fn err(status: u16, code: &'static str, message: impl Into<String>) -> SlsError {
    SlsError {
        status: StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        code,
        message: message.into(),
    }
}

/// A successful answer.
#[derive(Debug, Default)]
struct Reply {
    body: Vec<u8>,
    content_type: &'static str,
    headers: Vec<(&'static str, String)>,
}

impl Reply {
    fn json(value: serde_json::Value) -> Self {
        Self {
            body: value.to_string().into_bytes(),
            content_type: "application/json",
            headers: Vec::new(),
        }
    }
}

/// What a request asks for.
#[derive(Debug)]
enum Route {
    PutLogs {
        logstore: String,
        hash_key: Option<String>,
    },
    ListShards {
        logstore: String,
    },
    GetCursor {
        logstore: String,
        shard: u32,
        from: String,
    },
    PullLogs {
        logstore: String,
        shard: u32,
        cursor: String,
        count: usize,
        end_cursor: Option<String>,
    },
}

/// The request as the handlers see it.
struct Req<'a> {
    method: &'a Method,
    path: &'a str,
    query: Vec<(String, String)>,
    headers: &'a HeaderMap,
    body: &'a [u8],
}

impl Req<'_> {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
    fn param(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Counts a request in flight while alive (also when the connection drops
/// the handler mid-way).
struct InFlight<'a>(&'a State);

impl<'a> InFlight<'a> {
    fn enter(state: &'a State) -> Self {
        let mut data = state.data();
        data.in_flight += 1;
        data.most_in_flight = data.most_in_flight.max(data.in_flight);
        Self(state)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        let mut data = self.0.data();
        data.in_flight = data.in_flight.saturating_sub(1);
    }
}

async fn handle(
    state: Arc<State>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let _in_flight = InFlight::enter(&state);
    let (parts, body) = req.into_parts();
    let path = parts.uri.path().to_string();
    let raw_query = parts.uri.query().unwrap_or("").to_string();
    let body = Limited::new(body, MAX_WIRE_BODY).collect().await;
    let request_id = {
        let mut data = state.data();
        data.next_request_id += 1;
        format!("{:024X}", 0x5E5_0000_0000_u64 + data.next_request_id)
    };
    let (result, body_len) = match body {
        Ok(collected) => {
            let bytes = collected.to_bytes();
            let incoming = Req {
                method: &parts.method,
                path: &path,
                query: form_urlencoded::parse(raw_query.as_bytes())
                    .map(|(k, v)| (k.into_owned(), v.into_owned()))
                    .collect(),
                headers: &parts.headers,
                body: &bytes,
            };
            (process(&state, &incoming).await, bytes.len())
        }
        Err(e) => (
            Err(err(
                413,
                "PostBodyTooLarge",
                format!("cannot read body: {e}"),
            )),
            0,
        ),
    };
    let (status, error_code, mut builder, body) = match result {
        Ok(reply) => {
            let mut b = Response::builder().status(StatusCode::OK);
            if !reply.content_type.is_empty() {
                b = b.header("content-type", reply.content_type);
            }
            for (k, v) in reply.headers {
                b = b.header(k, v);
            }
            (200, None, b, reply.body)
        }
        Err(e) => {
            let body = serde_json::json!({"errorCode": e.code, "errorMessage": e.message});
            (
                e.status.as_u16(),
                Some(e.code.to_string()),
                Response::builder()
                    .status(e.status)
                    .header("content-type", "application/json"),
                body.to_string().into_bytes(),
            )
        }
    };
    builder = builder
        .header("x-log-requestid", &request_id)
        .header("server", "kubesink-sls-emulator");
    state.data().requests.push(RequestRecord {
        method: parts.method.to_string(),
        path,
        query: raw_query,
        headers: parts
            .headers
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_string(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect(),
        status,
        error_code,
        body_len,
    });
    let response = builder
        .body(Full::new(Bytes::from(body)))
        .unwrap_or_else(|e| {
            let mut r = Response::new(Full::new(Bytes::from(format!("emulator bug: {e}"))));
            *r.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
            r
        });
    Ok(response)
}

async fn process(state: &State, req: &Req<'_>) -> Result<Reply, SlsError> {
    let route = route(req)?;
    authenticate(state, req)?;
    let project = project_from_host(req)?;
    let logstore = match &route {
        Route::PutLogs { logstore, .. }
        | Route::ListShards { logstore }
        | Route::GetCursor { logstore, .. }
        | Route::PullLogs { logstore, .. } => logstore.clone(),
    };
    if !state.config.projects.contains_key(&project) {
        return Err(err(
            404,
            "ProjectNotExist",
            format!("Project {project} does not exist"),
        ));
    }
    let key = (project.clone(), logstore.clone());
    if !state.data().stores.contains_key(&key) {
        return Err(err(
            404,
            "LogStoreNotExist",
            format!("logstore {logstore} does not exist"),
        ));
    }
    match route {
        Route::PutLogs { hash_key, .. } => put_logs(state, req, &key, hash_key.as_deref()).await,
        Route::ListShards { .. } => Ok(list_shards(state)),
        Route::GetCursor { shard, from, .. } => get_cursor(state, &key, shard, &from),
        Route::PullLogs {
            shard,
            cursor,
            count,
            end_cursor,
            ..
        } => pull_logs(
            state,
            req,
            &key,
            shard,
            &cursor,
            count,
            end_cursor.as_deref(),
        ),
    }
}

fn route(req: &Req<'_>) -> Result<Route, SlsError> {
    let segments: Vec<&str> = req.path.trim_start_matches('/').split('/').collect();
    let bad = || {
        err(
            400,
            "ParameterInvalid",
            format!(
                "{} {} is not an API this emulator serves",
                req.method, req.path
            ),
        )
    };
    match (req.method, segments.as_slice()) {
        (&Method::POST, ["logstores", ls]) | (&Method::POST, ["logstores", ls, "shards", "lb"]) => {
            Ok(Route::PutLogs {
                logstore: (*ls).to_string(),
                hash_key: None,
            })
        }
        (&Method::POST, ["logstores", ls, "shards", "route"]) => Ok(Route::PutLogs {
            logstore: (*ls).to_string(),
            hash_key: Some(
                req.param("key")
                    .ok_or_else(|| err(400, "ParameterInvalid", "route needs ?key=<hash>"))?
                    .to_string(),
            ),
        }),
        (&Method::GET, ["logstores", ls, "shards"]) => Ok(Route::ListShards {
            logstore: (*ls).to_string(),
        }),
        (&Method::GET, ["logstores", ls, "shards", shard]) => {
            let shard: u32 = shard
                .parse()
                .map_err(|_| err(400, "ParameterInvalid", format!("invalid shard id {shard}")))?;
            match req.param("type") {
                Some("cursor") => Ok(Route::GetCursor {
                    logstore: (*ls).to_string(),
                    shard,
                    from: req
                        .param("from")
                        .ok_or_else(|| err(400, "ParameterInvalid", "GetCursor needs from="))?
                        .to_string(),
                }),
                Some("log") => {
                    let count = match req.param("count") {
                        None => MAX_PULL_COUNT,
                        Some(c) => c.parse::<usize>().map_err(|_| {
                            err(400, "ParameterInvalid", format!("invalid count {c}"))
                        })?,
                    };
                    Ok(Route::PullLogs {
                        logstore: (*ls).to_string(),
                        shard,
                        cursor: req
                            .param("cursor")
                            .ok_or_else(|| err(400, "ParameterInvalid", "PullLogs needs cursor="))?
                            .to_string(),
                        count: count.clamp(1, MAX_PULL_COUNT),
                        end_cursor: req.param("end_cursor").map(str::to_string),
                    })
                }
                _ => Err(bad()),
            }
        }
        _ => Err(bad()),
    }
}

/// Project from `Host: <project>.<anything>[:port]`.
fn project_from_host(req: &Req<'_>) -> Result<String, SlsError> {
    let host = req.header("host").unwrap_or("");
    let host = match host.rsplit_once(':') {
        Some((h, port)) if port.chars().all(|c| c.is_ascii_digit()) => h,
        _ => host,
    };
    match host.split_once('.') {
        Some((project, rest))
            if !project.is_empty()
                && !rest.is_empty()
                && !project.chars().all(|c| c.is_ascii_digit()) =>
        {
            Ok(project.to_string())
        }
        _ => Err(err(
            404,
            "ProjectNotExist",
            format!("no project in Host header {host:?}; expected <project>.<endpoint>"),
        )),
    }
}

fn authenticate(state: &State, req: &Req<'_>) -> Result<(), SlsError> {
    let auth = req
        .header("authorization")
        .ok_or_else(|| err(401, "Unauthorized", "missing Authorization header"))?;
    let (key_id, given) = auth
        .strip_prefix("LOG ")
        .and_then(|rest| rest.rsplit_once(':'))
        .ok_or_else(|| {
            err(
                401,
                "Unauthorized",
                "Authorization header is not `LOG <AccessKeyId>:<signature>`",
            )
        })?;
    let key = state
        .config
        .keys
        .iter()
        .find(|k| k.id == key_id)
        .ok_or_else(|| {
            err(
                401,
                "InvalidAccessKeyId",
                format!("AccessKeyId {key_id} is not found"),
            )
        })?;
    let token = req.header("x-acs-security-token");
    match (&key.security_token, token) {
        (Some(want), Some(got)) if want == got => {}
        (Some(_), Some(_)) => return Err(err(401, "Unauthorized", "security token is invalid")),
        (Some(_), None) => {
            return Err(err(
                401,
                "Unauthorized",
                format!("AccessKeyId {key_id} is an STS key: x-acs-security-token is required"),
            ));
        }
        (None, Some(_)) => {
            return Err(err(
                401,
                "Unauthorized",
                format!("AccessKeyId {key_id} takes no security token"),
            ));
        }
        (None, None) => {}
    }
    let date = req
        .header("date")
        .or_else(|| req.header("x-log-date"))
        .ok_or_else(|| err(400, "InvalidDate", "missing Date header"))?;
    if state.config.check_date {
        let when = chrono::DateTime::parse_from_rfc2822(date)
            .map_err(|e| err(400, "InvalidDate", format!("invalid Date {date:?}: {e}")))?;
        let skew = (chrono::Utc::now().timestamp() - when.timestamp()).abs();
        if skew > MAX_SKEW_SECS {
            return Err(err(
                400,
                "RequestTimeExpired",
                format!("Date {date} is {skew} s away from the server time"),
            ));
        }
    }
    let headers: Vec<(&str, &str)> = req
        .headers
        .iter()
        .filter_map(|(k, v)| v.to_str().ok().map(|v| (k.as_str(), v)))
        .collect();
    let parts = SignedParts {
        method: req.method.as_str(),
        content_md5: req.header("content-md5").unwrap_or(""),
        content_type: req.header("content-type").unwrap_or(""),
        date,
        headers,
        path: req.path,
        query: req
            .query
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect(),
    };
    let want = sign::signature(&key.secret, &sign::string_to_sign(&parts));
    if want != given {
        return Err(err(
            401,
            "SignatureNotMatch",
            format!("signature {given} does not match the request"),
        ));
    }
    if !req.body.is_empty() {
        let md5 = sign::content_md5(req.body);
        match req.header("content-md5") {
            Some(sent) if sent == md5 => {}
            Some(sent) => {
                return Err(err(
                    400,
                    "InvalidContentMD5",
                    format!("Content-MD5 {sent} does not match the body (uppercase hex MD5 {md5})"),
                ));
            }
            None => return Err(err(400, "InvalidContentMD5", "missing Content-MD5 header")),
        }
    }
    Ok(())
}

async fn put_logs(
    state: &State,
    req: &Req<'_>,
    key: &(String, String),
    hash_key: Option<&str>,
) -> Result<Reply, SlsError> {
    let fault = state.data().faults.pop_front();
    match fault {
        Some(Fault::WriteQuotaExceeded) => {
            return Err(err(
                403,
                "WriteQuotaExceed",
                "Project write quota exceed (injected)",
            ));
        }
        Some(Fault::InternalError) => {
            return Err(err(
                500,
                "InternalServerError",
                "internal server error (injected)",
            ));
        }
        Some(Fault::ServerBusy) => return Err(err(503, "ServerBusy", "server busy (injected)")),
        Some(Fault::Delay(d)) => tokio::time::sleep(d).await,
        Some(Fault::Pass) | None => {}
    }
    match req.header("content-type") {
        Some("application/x-protobuf") => {}
        other => {
            return Err(err(
                400,
                "PostBodyInvalid",
                format!("Content-Type {other:?} is not application/x-protobuf"),
            ));
        }
    }
    let compress = req
        .header("x-log-compresstype")
        .unwrap_or("")
        .to_ascii_lowercase();
    let raw_size = match req.header("x-log-bodyrawsize") {
        Some(s) => s.parse::<usize>().map_err(|_| {
            err(
                400,
                "PostBodyInvalid",
                format!("invalid x-log-bodyrawsize {s:?}"),
            )
        })?,
        None if compress.is_empty() => req.body.len(),
        None => {
            return Err(err(
                400,
                "PostBodyInvalid",
                "x-log-bodyrawsize is required with x-log-compresstype",
            ));
        }
    };
    if raw_size > MAX_RAW_BODY {
        return Err(err(
            413,
            "PostBodyTooLarge",
            format!("raw body size {raw_size} exceeds {MAX_RAW_BODY}"),
        ));
    }
    let raw = decompress(&compress, req.body, raw_size)?;
    if raw.len() != raw_size {
        return Err(err(
            400,
            "PostBodyInvalid",
            format!(
                "body is {} bytes raw, x-log-bodyrawsize says {raw_size}",
                raw.len()
            ),
        ));
    }
    let shards = state.config.shards.max(1);
    let shard = match hash_key {
        Some(k) => shard_for_hash(k, shards)?,
        None => {
            let mut data = state.data();
            data.round_robin += 1;
            (data.round_robin % u64::from(shards)) as u32
        }
    };
    decode_group(&raw)?;
    let group = StoredGroup {
        raw: raw.into_owned(),
        shard,
        received: chrono::Utc::now().timestamp(),
    };
    let mut data = state.data();
    let slot = data
        .stores
        .get_mut(key)
        .and_then(|s| s.get_mut(shard as usize))
        .ok_or_else(|| err(500, "InternalServerError", "shard vanished"))?;
    slot.push(group);
    Ok(Reply::default())
}

fn decompress<'a>(
    compress: &str,
    body: &'a [u8],
    raw_size: usize,
) -> Result<Cow<'a, [u8]>, SlsError> {
    let bad = |e: String| {
        err(
            400,
            "PostBodyInvalid",
            format!("cannot decompress {compress} body: {e}"),
        )
    };
    match compress {
        "" => Ok(Cow::Borrowed(body)),
        "lz4" => lz4_flex::block::decompress(body, raw_size)
            .map(Cow::Owned)
            .map_err(|e| bad(e.to_string())),
        "deflate" => {
            let mut out = Vec::with_capacity(raw_size);
            flate2::read::ZlibDecoder::new(body)
                .take(MAX_RAW_BODY as u64 + 1)
                .read_to_end(&mut out)
                .map_err(|e| bad(e.to_string()))?;
            Ok(Cow::Owned(out))
        }
        "zstd" => {
            let mut out = Vec::with_capacity(raw_size);
            let decoder =
                ruzstd::decoding::StreamingDecoder::new(body).map_err(|e| bad(e.to_string()))?;
            decoder
                .take(MAX_RAW_BODY as u64 + 1)
                .read_to_end(&mut out)
                .map_err(|e| bad(e.to_string()))?;
            Ok(Cow::Owned(out))
        }
        other => Err(err(
            400,
            "InvalidCompressType",
            format!("x-log-compresstype {other:?} is not lz4, deflate or zstd"),
        )),
    }
}

/// Shard owning an MD5-style hex hash key (ranges split the 128-bit space
/// evenly).
fn shard_for_hash(key: &str, shards: u32) -> Result<u32, SlsError> {
    let head = key.get(..8).unwrap_or(key);
    let v = u32::from_str_radix(head, 16).map_err(|_| {
        err(
            400,
            "ParameterInvalid",
            format!("hash key {key:?} is not hex"),
        )
    })?;
    let v = if head.len() < 8 {
        v << (4 * (8 - head.len()))
    } else {
        v
    };
    Ok(((u64::from(v) * u64::from(shards)) >> 32) as u32)
}

/// Frames one LogGroup as a one-element LogGroupList (field 1, length-delimited).
fn frame_group(raw: &[u8], out: &mut Vec<u8>) {
    out.push(0x0a);
    let mut n = raw.len() as u64;
    while n >= 0x80 {
        out.push((n as u8) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
    out.extend_from_slice(raw);
}

/// Decodes one LogGroup with the official SDK's protobuf code
/// (`aliyun_log_sdk_protobuf::internal`, what its public `decode` runs
/// before copying every string), borrowing the strings from `raw`, and
/// checks SLS's limits. A PutLogs is checked by this when it arrives; what
/// the tests read is made from it on demand ([`StoredGroup::logs`]), so
/// the emulator's work per request is one decode without a copy per
/// string.
fn decode_group(raw: &[u8]) -> Result<aliyun_log_sdk_protobuf::internal::LogGroup<'_>, SlsError> {
    use quick_protobuf::MessageRead as _;
    let mut reader = quick_protobuf::BytesReader::from_bytes(raw);
    let group = aliyun_log_sdk_protobuf::internal::LogGroup::from_reader(&mut reader, raw)
        .map_err(|e| {
            err(
                400,
                "PostBodyInvalid",
                format!("body is not a LogGroup: {e}"),
            )
        })?;
    let topic = group.topic.as_deref().unwrap_or_default();
    let source = group.source.as_deref().unwrap_or_default();
    if topic.len() > MAX_TOPIC || source.len() > MAX_TOPIC {
        return Err(err(
            400,
            "PostBodyInvalid",
            format!("topic or source longer than {MAX_TOPIC} bytes"),
        ));
    }
    for c in group.logs.iter().flat_map(|log| &log.contents) {
        if c.value.len() > MAX_VALUE {
            return Err(err(
                400,
                "PostBodyInvalid",
                format!(
                    "value of key {} is {} bytes, over {MAX_VALUE}",
                    c.key,
                    c.value.len()
                ),
            ));
        }
    }
    Ok(group)
}

impl StoredGroup {
    /// Its logs, decoded from the bytes stored (checked when received).
    pub(super) fn logs(&self) -> impl Iterator<Item = StoredLog> + '_ {
        let group = decode_group(&self.raw)
            .unwrap_or_else(|e| panic!("a stored log group no longer decodes: {}", e.message));
        let topic = group.topic.unwrap_or_default().into_owned();
        let source = group.source.unwrap_or_default().into_owned();
        let shard = self.shard;
        group.logs.into_iter().map(move |log| StoredLog {
            shard,
            topic: topic.clone(),
            source: source.clone(),
            time: log.time,
            time_ns: log.time_ns,
            contents: log
                .contents
                .into_iter()
                .map(|c| (c.key.into_owned(), c.value.into_owned()))
                .collect(),
        })
    }
}

fn list_shards(state: &State) -> Reply {
    let n = u128::from(state.config.shards.max(1));
    let bound = |i: u128| -> String {
        if i >= n {
            "ffffffffffffffffffffffffffffffff".to_string()
        } else {
            // i * 2^128 / n without overflow.
            format!("{:032x}", (u128::MAX / n) * i + i * (u128::MAX % n + 1) / n)
        }
    };
    let shards: Vec<serde_json::Value> = (0..n)
        .map(|i| {
            serde_json::json!({
                "shardID": i as u64,
                "status": "readwrite",
                "inclusiveBeginKey": bound(i),
                "exclusiveEndKey": bound(i + 1),
                "createTime": 1_700_000_000u64,
            })
        })
        .collect();
    Reply::json(serde_json::Value::Array(shards))
}

fn encode_cursor(index: usize) -> String {
    base64::engine::general_purpose::STANDARD.encode(index.to_string())
}

fn decode_cursor(cursor: &str) -> Result<usize, SlsError> {
    base64::engine::general_purpose::STANDARD
        .decode(cursor)
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| err(400, "InvalidCursor", format!("cursor {cursor} is invalid")))
}

fn shard_groups<'a>(
    data: &'a super::Data,
    key: &(String, String),
    shard: u32,
) -> Result<&'a Vec<StoredGroup>, SlsError> {
    data.stores
        .get(key)
        .and_then(|s| s.get(shard as usize))
        .ok_or_else(|| {
            err(
                404,
                "ShardNotExist",
                format!("shard {shard} does not exist"),
            )
        })
}

fn get_cursor(
    state: &State,
    key: &(String, String),
    shard: u32,
    from: &str,
) -> Result<Reply, SlsError> {
    let data = state.data();
    let groups = shard_groups(&data, key, shard)?;
    let index = match from {
        "begin" => 0,
        "end" => groups.len(),
        t => {
            let t: i64 = t.parse().map_err(|_| {
                err(
                    400,
                    "ParameterInvalid",
                    format!("from={t} is not begin, end or a Unix time"),
                )
            })?;
            groups
                .iter()
                .position(|g| g.received >= t)
                .unwrap_or(groups.len())
        }
    };
    Ok(Reply::json(
        serde_json::json!({ "cursor": encode_cursor(index) }),
    ))
}

fn pull_logs(
    state: &State,
    req: &Req<'_>,
    key: &(String, String),
    shard: u32,
    cursor: &str,
    count: usize,
    end_cursor: Option<&str>,
) -> Result<Reply, SlsError> {
    let start = decode_cursor(cursor)?;
    let end_limit = end_cursor.map(decode_cursor).transpose()?;
    let data = state.data();
    let groups = shard_groups(&data, key, shard)?;
    if start > groups.len() {
        return Err(err(
            400,
            "InvalidCursor",
            format!("cursor {cursor} is past the end"),
        ));
    }
    let end = (start + count)
        .min(groups.len())
        .min(end_limit.unwrap_or(usize::MAX))
        .max(start);
    let mut raw = Vec::new();
    for g in &groups[start..end] {
        frame_group(&g.raw, &mut raw);
    }
    drop(data);
    let accept = req.header("accept-encoding").unwrap_or("");
    let wanted = accept
        .split(',')
        .map(|t| {
            t.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        })
        .find(|t| matches!(t.as_str(), "lz4" | "zstd" | "deflate"));
    let raw_len = raw.len();
    let (body, compress) = match wanted.as_deref() {
        _ if raw.is_empty() => (raw, None),
        Some("lz4") => (lz4_flex::block::compress(&raw), Some("lz4")),
        Some("zstd") => (
            ruzstd::encoding::compress_to_vec(
                &raw[..],
                ruzstd::encoding::CompressionLevel::Fastest,
            ),
            Some("zstd"),
        ),
        Some("deflate") => {
            use std::io::Write as _;
            let mut enc = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::fast());
            enc.write_all(&raw)
                .and_then(|()| enc.finish())
                .map(|b| (b, Some("deflate")))
                .map_err(|e| err(500, "InternalServerError", format!("deflate failed: {e}")))?
        }
        _ => (raw, None),
    };
    let mut headers = vec![
        ("x-log-cursor", encode_cursor(end)),
        ("x-log-count", (end - start).to_string()),
        ("x-log-bodyrawsize", raw_len.to_string()),
    ];
    if let Some(c) = compress {
        headers.push(("x-log-compresstype", c.to_string()));
    }
    Ok(Reply {
        body,
        content_type: "application/x-protobuf",
        headers,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_keys_map_to_even_ranges() {
        assert_eq!(
            shard_for_hash("00000000000000000000000000000000", 2).ok(),
            Some(0)
        );
        assert_eq!(
            shard_for_hash("7fffffffffffffffffffffffffffffff", 2).ok(),
            Some(0)
        );
        assert_eq!(
            shard_for_hash("80000000000000000000000000000000", 2).ok(),
            Some(1)
        );
        assert_eq!(
            shard_for_hash("ffffffffffffffffffffffffffffffff", 4).ok(),
            Some(3)
        );
        assert!(shard_for_hash("zz", 2).is_err());
    }

    #[test]
    fn cursors_round_trip_and_reject_garbage() {
        assert_eq!(decode_cursor(&encode_cursor(42)).ok(), Some(42));
        assert!(decode_cursor("not base64!").is_err());
    }

    #[test]
    fn frames_long_groups_with_multi_byte_lengths() {
        let raw = vec![7u8; 300];
        let mut out = Vec::new();
        frame_group(&raw, &mut out);
        assert_eq!(&out[..3], &[0x0a, 0xac, 0x02]);
        assert_eq!(out.len(), 303);
    }
}
