//! Sending a sink's request: the [`WasiHttpHooks`] wasmtime-wasi-http
//! calls for every outgoing request. The request is checked against the
//! sink's allow-list (and its `host` header) before any I/O, takes one of
//! the sink's in-flight slots, is sent through the allow-list's client
//! (which follows no redirect), and its request and response bodies are
//! capped and charged to the sink's host memory budget.

use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use wasmtime_wasi_http::{
    Error as HttpError, ForbiddenHeaderFilter, RequestOptions, WasiBody as HyperOutgoingBody,
    WasiHttpHooks,
};

use super::allow::{AllowList, AllowListError, Target, internal_range};
use super::{HttpCaps, SinkSlots, resolve};

/// The hooks of one sink: its allow-list, caps and client.
pub(super) struct SinkHooks {
    pub(super) sink: Arc<str>,
    pub(super) allow: Result<Arc<AllowList>, AllowListError>,
    pub(super) caps: HttpCaps,
    /// The allow-list's client, or why it could not be built.
    pub(super) client: Result<reqwest::Client, String>,
    /// Requests in flight, against the limit.
    pub(super) slots: SinkSlots,
    /// Bodies buffered are reserved from the sink's host memory budget.
    pub(super) budget: crate::budget::HostBudget,
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
                    tracing::warn!(sink = %sink, "HTTP response from {host} refused: body over {} bytes (max_http_response_bytes)", caps.max_response_bytes);
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
