//! The `http` capability: `wasi:http/outgoing-handler` for sinks, through
//! wasmtime-wasi-http with our own [`WasiHttpHooks`]: every request is
//! checked against the sink's allow-list before any I/O (a miss gets
//! `HTTP-request-denied` and a log line naming the sink and the host), then
//! sent through the `reqwest::Client` of that allow-list (rustls with the
//! ring provider; no proxy from the environment; no redirects, which could
//! leave the allow-list; a resolver that checks where a name leads, see
//! [`resolve`]), with the sink's timeout and body caps ([`crate::Limits`]:
//! `http_allow`, `http_timeout`, `max_http_request_bytes`,
//! `max_http_response_bytes`). If that client cannot be built, every
//! request of the sink fails; there is no fallback client.
//!
//! # Allow-list syntax
//!
//! Each entry is `[scheme://]host[:port]`:
//!
//! - scheme: `http`, `https` or `*` (either); absent means `https`;
//! - host: a name, `*.example.com` (any name ending in `.example.com`, not
//!   `example.com` itself), `*` (any name or public address), or an IP
//!   address or range named explicitly: `127.0.0.1`, `10.0.0.0/8`, `[::1]`,
//!   `[fd00::/8]`;
//! - port: a number, `*` (any), or absent: the scheme's default (80/443;
//!   with scheme `*`, 80 for http and 443 for https).
//!
//! Examples: `https://*.log.aliyuncs.com`, `http://127.0.0.1:9000`,
//! `http://localhost:*`. An empty list denies everything.
//!
//! # Addresses
//!
//! A rule for a name grants the name, not whatever it resolves to: a
//! connection to a loopback (127.0.0.0/8, ::1), link-local (169.254.0.0/16,
//! fe80::/10), private (10/8, 172.16/12, 192.168/16), unique-local
//! (fc00::/7) or other non-public address ([`internal_range`]) is refused
//! unless a rule names that address or its range. So `http://localhost:8080`
//! alone is refused (localhost is 127.0.0.1); with `http://127.0.0.1:8080`
//! it is not. The same holds for IP literals in the URL (`*` does not grant
//! `http://169.254.169.254`). The URL is read the way the client reads it
//! (`http://2130706433/` is 127.0.0.1).
//!
//! The guest may set a `host` header (SLS names the project that way on IP
//! endpoints); the connection always goes to the request's authority. A
//! `host` header naming another host than the authority is allowed only if
//! the list allows that host too, or if the authority is an address a rule
//! names explicitly (virtual hosts on an IP endpoint).

mod allow;
pub mod resolve;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use wasmtime::component::{Linker, ResourceTable};
use wasmtime_wasi_http::{
    Error as HttpError, ForbiddenHeaderFilter, RequestOptions, WasiBody as HyperOutgoingBody,
    WasiHttpCtx, WasiHttpCtxView, WasiHttpHooks, WasiHttpView,
};

use crate::Limits;
pub use allow::{
    AllowList, AllowListError, HostRule, PortRule, Rule, SchemeRule, Target, internal_range,
};
pub use resolve::AddressRefused;

/// The caps applied to a sink's requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpCaps {
    /// From connecting to the end of the response body.
    pub timeout: Duration,
    /// Largest request body.
    pub max_request_bytes: usize,
    /// Largest response body.
    pub max_response_bytes: usize,
}

/// A sink's HTTP request slots: how many of its requests may be in flight
/// at once ([`Limits::http_max_in_flight`]), shared by all its instances.
#[derive(Debug, Clone)]
pub struct SinkSlots {
    slots: Arc<tokio::sync::Semaphore>,
    limit: usize,
}

impl SinkSlots {
    /// `limit` slots.
    pub fn new(limit: usize) -> Self {
        Self {
            slots: Arc::new(tokio::sync::Semaphore::new(limit)),
            limit,
        }
    }

    /// Requests in flight now.
    pub fn in_flight(&self) -> usize {
        self.limit - self.slots.available_permits()
    }
}

/// The host's [`SinkSlots`], by sink name.
#[derive(Debug, Default)]
pub struct InFlightSlots {
    by_name: std::sync::Mutex<std::collections::HashMap<String, SinkSlots>>,
}

impl InFlightSlots {
    /// The slots of sink `sink` (created with `limit` on first use, or anew
    /// when the limit changed).
    pub fn get(&self, sink: &str, limit: usize) -> SinkSlots {
        let mut map = self.by_name.lock().unwrap_or_else(|e| e.into_inner());
        match map.get(sink) {
            Some(s) if s.limit == limit => s.clone(),
            _ => {
                let s = SinkSlots::new(limit);
                map.insert(sink.to_owned(), s.clone());
                s
            }
        }
    }
}

/// The hooks of one sink: its allow-list, caps and client.
struct SinkHooks {
    sink: Arc<str>,
    allow: Result<Arc<AllowList>, AllowListError>,
    caps: HttpCaps,
    /// The allow-list's client, or why it could not be built.
    client: Result<reqwest::Client, String>,
    /// Requests in flight, against the limit.
    slots: SinkSlots,
    /// Bodies buffered are reserved from the sink's host memory budget.
    budget: crate::budget::HostBudget,
}

/// A sink's `wasi:http` state, a field of the store's data.
pub struct HttpCtx {
    wasi: WasiHttpCtx,
    hooks: SinkHooks,
    /// The sink's host memory budget (buffered bodies are charged to it).
    budget: crate::budget::HostBudget,
}

impl fmt::Debug for HttpCtx {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpCtx")
            .field("sink", &self.hooks.sink)
            .field("allow", &self.hooks.allow)
            .field("caps", &self.hooks.caps)
            .finish()
    }
}

impl HttpCtx {
    /// The context for sink `sink` with the allow-list and caps of `limits`.
    /// A bad allow-list entry denies every request (and is logged); check
    /// lists up front with [`AllowList::parse`]. Host memory it causes is
    /// reserved from `budget`.
    pub fn new(sink: &str, limits: &Limits, budget: crate::budget::HostBudget) -> Self {
        let allow = AllowList::parse(&limits.http_allow).map(Arc::new);
        if let Err(e) = &allow {
            tracing::error!(sink = %sink, "{e}; every HTTP request of this sink is denied");
        }
        let client = match &allow {
            Ok(list) if !list.is_empty() => resolve::client_for(list),
            _ => Err("no HTTP request is allowed".to_owned()),
        };
        if let (Ok(list), Err(e)) = (&allow, &client)
            && !list.is_empty()
        {
            tracing::error!(sink = %sink, "{e}; every HTTP request of this sink fails");
        }
        Self {
            wasi: WasiHttpCtx::new(),
            hooks: SinkHooks {
                sink: Arc::from(sink),
                allow,
                caps: HttpCaps {
                    timeout: limits.http_timeout,
                    max_request_bytes: limits.max_http_request_bytes,
                    max_response_bytes: limits.max_http_response_bytes,
                },
                client,
                slots: SinkSlots::new(limits.http_max_in_flight),
                budget: budget.clone(),
            },
            budget,
        }
    }

    /// Uses the sink's shared request slots (the host's, so that all its
    /// instances count together) instead of slots of its own.
    #[must_use]
    pub fn with_slots(mut self, slots: SinkSlots) -> Self {
        self.hooks.slots = slots;
        self
    }

    /// The sink's host memory budget.
    pub fn budget(&self) -> &crate::budget::HostBudget {
        &self.budget
    }

    /// The view wasmtime-wasi-http works on.
    pub fn view<'a>(&'a mut self, table: &'a mut ResourceTable) -> WasiHttpCtxView<'a> {
        WasiHttpCtxView {
            ctx: &mut self.wasi,
            table,
            hooks: &mut self.hooks,
        }
    }
}

/// Adds `wasi:http/types` and `wasi:http/outgoing-handler` to the linker
/// (WASI itself is added separately).
pub fn add_to_linker<T: WasiHttpView + 'static>(linker: &mut Linker<T>) -> wasmtime::Result<()> {
    wasmtime_wasi_http::p2::add_only_http_to_linker_async(linker)
}

type SendResult = wasmtime_wasi_http::Result<(
    http::Response<HyperOutgoingBody>,
    Box<dyn Future<Output = Result<(), HttpError>> + Send>,
)>;

fn map_reqwest(sink: &str, e: &reqwest::Error) -> HttpError {
    if let Some(refused) = resolve::address_refused(e) {
        tracing::warn!(sink = %sink, "HTTP request denied: {refused}");
        HttpError::HttpRequestDenied
    } else if e.is_timeout() {
        HttpError::HttpResponseTimeout
    } else if e.is_connect() {
        HttpError::ConnectionRefused
    } else {
        HttpError::InternalError(Some(e.to_string()))
    }
}

/// Why a request is refused before any I/O, for the log; `None` when it
/// may be sent. `url` is the request's URL as the client reads it.
fn refusal(allow: &AllowList, url: &reqwest::Url, host_header: Option<&str>) -> Option<String> {
    let scheme = url.scheme();
    let port = url.port();
    let target = match url.host() {
        Some(url::Host::Domain(d)) => Target::Name(d),
        Some(url::Host::Ipv4(ip)) => Target::Ip(ip.into()),
        Some(url::Host::Ipv6(ip)) => Target::Ip(ip.into()),
        None => return Some("the URL has no host".to_owned()),
    };
    let shown = match port {
        Some(p) => format!("{scheme}://{}:{p}", url.host_str().unwrap_or("")),
        None => format!("{scheme}://{}", url.host_str().unwrap_or("")),
    };
    if !allow.allows_target(scheme, target, port) {
        return Some(match target {
            Target::Ip(ip) => match internal_range(ip) {
                Some(range) => format!(
                    "{shown}: {ip} is {range}, which no rule of the sink's allow-list names"
                ),
                None => format!("{shown}: not in the sink's allow-list"),
            },
            Target::Name(_) => format!("{shown}: not in the sink's allow-list"),
        });
    }
    if let Some(value) = host_header {
        let name = host_of(value);
        let same = url
            .host_str()
            .is_some_and(|h| h.eq_ignore_ascii_case(&name));
        let ip_endpoint = match target {
            Target::Ip(ip) => allow.names_address(scheme, ip, port),
            Target::Name(_) => false,
        };
        if !same && !ip_endpoint && !allow.allows(scheme, &name, port) {
            return Some(format!(
                "{shown} with `host: {}`: that host is not in the sink's allow-list",
                crate::log::sanitize(value, 256)
            ));
        }
    }
    None
}

/// The host of a `host` header value (`name`, `name:port`, `[v6]:port`),
/// lower case, without a trailing dot.
fn host_of(value: &str) -> String {
    let value = value.trim();
    let host = if value.starts_with('[') {
        value.split_inclusive(']').next().unwrap_or(value)
    } else {
        match value.rsplit_once(':') {
            Some((h, p)) if p.bytes().all(|b| b.is_ascii_digit()) => h,
            _ => value,
        }
    };
    host.trim_end_matches('.').to_ascii_lowercase()
}

impl WasiHttpHooks for SinkHooks {
    fn forbidden_header_filter(&mut self) -> ForbiddenHeaderFilter {
        // `host` is allowed (virtual hosting on an allowed authority).
        Arc::new(|name| {
            *name != http::header::HOST
                && wasmtime_wasi_http::DEFAULT_FORBIDDEN_HEADERS.contains(name)
        })
    }

    fn set_host_header(&mut self) -> bool {
        // The client derives Host from the URL unless the guest set one.
        false
    }

    fn send_request(
        &mut self,
        request: http::Request<HyperOutgoingBody>,
        _options: Option<RequestOptions>,
        _fut: Box<dyn Future<Output = Result<(), HttpError>> + Send>,
    ) -> Box<dyn Future<Output = SendResult> + Send> {
        let sink = self.sink.clone();
        // The URL as the client will read it (so `http://2130706433/` is
        // checked as 127.0.0.1, the address it connects to).
        let url = reqwest::Url::parse(&request.uri().to_string());
        let host_header = request
            .headers()
            .get(http::header::HOST)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
        let denied = match (&self.allow, &url) {
            (Err(_), _) => Some("the sink's allow-list is invalid".to_owned()),
            (_, Err(e)) => Some(format!(
                "the URL `{}` is invalid: {e}",
                crate::log::sanitize(&request.uri().to_string(), 256)
            )),
            (Ok(list), Ok(url)) => refusal(list, url, host_header.as_deref()),
        };
        if let Some(why) = denied {
            tracing::warn!(sink = %sink, "HTTP request denied: {why}");
            return Box::new(async { Err(HttpError::HttpRequestDenied) });
        }
        let Ok(url) = url else {
            return Box::new(async { Err(HttpError::HttpRequestDenied) });
        };
        let client = match &self.client {
            Ok(c) => c.clone(),
            Err(e) => {
                tracing::error!(sink = %sink, "HTTP request not sent: {e}");
                let e = e.clone();
                return Box::new(async move { Err(HttpError::InternalError(Some(e))) });
            }
        };
        let Ok(permit) = self.slots.slots.clone().try_acquire_owned() else {
            tracing::warn!(
                sink = %sink,
                "HTTP request refused: {} requests of this sink already in flight (limits.http_max_in_flight)",
                self.slots.limit
            );
            return Box::new(async { Err(HttpError::ConnectionLimitReached) });
        };
        let caps = self.caps;
        let budget = self.budget.clone();
        let host = url.host_str().unwrap_or("").to_owned();
        Box::new(async move {
            let over_budget = |e: crate::budget::BudgetExceeded| {
                tracing::warn!(sink = %sink, "HTTP request to {host} failed: {e}");
                HttpError::InternalError(Some(e.to_string()))
            };
            // Bodies buffered for this request, counted against the sink's
            // host memory budget until the guest drops the response.
            let mut held = budget
                .try_reserve_for("http bodies", 0)
                .map_err(&over_budget)?;
            let (parts, mut body) = request.into_parts();
            let mut sent = Vec::new();
            while let Some(frame) = body.frame().await {
                let frame = frame?;
                if let Ok(data) = frame.into_data() {
                    if sent.len() + data.len() > caps.max_request_bytes {
                        tracing::warn!(sink = %sink, "HTTP request to {host} refused: body over {} bytes", caps.max_request_bytes);
                        return Err(HttpError::HttpRequestBodySize(Some(
                            caps.max_request_bytes as u64,
                        )));
                    }
                    held.grow(data.len()).map_err(&over_budget)?;
                    sent.extend_from_slice(&data);
                }
            }
            let sent_len = sent.len();
            let mut headers = parts.headers;
            // The client sets Content-Length from the body.
            headers.remove(http::header::CONTENT_LENGTH);
            let response = client
                .request(parts.method, url)
                .headers(headers)
                .body(sent)
                .timeout(caps.timeout)
                .send()
                .await
                .map_err(|e| {
                    tracing::debug!(sink = %sink, "HTTP request to {host} failed: {e}");
                    map_reqwest(&sink, &e)
                })?;
            // The request body is gone with the request.
            held.shrink(sent_len);
            let status = response.status();
            let headers = response.headers().clone();
            let mut response = response;
            let mut received = Vec::new();
            while let Some(chunk) = response.chunk().await.map_err(|e| map_reqwest(&sink, &e))? {
                if received.len() + chunk.len() > caps.max_response_bytes {
                    tracing::warn!(sink = %sink, "HTTP response from {host} cut: body over {} bytes", caps.max_response_bytes);
                    return Err(HttpError::HttpResponseBodySize(Some(
                        caps.max_response_bytes as u64,
                    )));
                }
                held.grow(chunk.len()).map_err(&over_budget)?;
                received.extend_from_slice(&chunk);
            }
            // The slot and the reservation go with the response body: a
            // guest holding responses holds its slots and budget.
            let mut keep = Some((permit, held));
            let mut out = http::Response::new(
                Full::new(Bytes::from(received))
                    .map_err(|never| match never {})
                    .map_frame(move |frame| {
                        let _ = &mut keep;
                        frame
                    })
                    .boxed_unsync(),
            );
            *out.status_mut() = status;
            *out.headers_mut() = headers;
            let io: Box<dyn Future<Output = Result<(), HttpError>> + Send> =
                Box::new(async { Ok(()) });
            Ok((out, io))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(allow: &[&str], url: &str, host: Option<&str>) -> Option<String> {
        let list = AllowList::parse(allow).expect("valid");
        refusal(&list, &reqwest::Url::parse(url).expect(url), host)
    }

    #[test]
    fn urls_are_checked_as_the_client_reads_them() {
        // Decimal, hex and short IPv4 forms are 127.0.0.1 to the client.
        for url in [
            "http://2130706433:8080/",
            "http://0x7f.1:8080/",
            "http://127.1:8080/",
            "http://[::ffff:7f00:1]:8080/",
        ] {
            let why = refused(&["http://*:*"], url, None).expect(url);
            assert!(why.contains("loopback"), "{url}: {why}");
            assert_eq!(
                refused(&["http://127.0.0.1:8080"], url, None),
                None,
                "{url}"
            );
        }
        let why = refused(&["*://*:*"], "http://169.254.169.254/latest", None).expect("metadata");
        assert!(why.contains("link-local"), "{why}");
        // A name is checked by name here, and by address when connecting.
        assert_eq!(
            refused(&["http://localhost:9000"], "http://localhost:9000/", None),
            None
        );
    }

    #[test]
    fn a_host_header_naming_another_host_needs_a_rule() {
        let name = ["https://proj.log.example.com"];
        let url = "https://proj.log.example.com/logstores";
        assert_eq!(refused(&name, url, Some("proj.log.example.com")), None);
        assert_eq!(refused(&name, url, Some("PROJ.log.example.com:443")), None);
        let why = refused(&name, url, Some("other.log.example.com")).expect("other project");
        assert!(why.contains("other.log.example.com"), "{why}");
        // On an IP endpoint named explicitly the header names the project.
        let ip = ["http://127.0.0.1:9000"];
        assert_eq!(
            refused(&ip, "http://127.0.0.1:9000/", Some("proj.127.0.0.1")),
            None
        );
        assert_eq!(host_of("[::1]:80"), "[::1]");
        assert_eq!(host_of("Name.Example.:8080"), "name.example");
    }
}
