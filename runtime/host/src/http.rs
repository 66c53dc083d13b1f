//! The `http` capability: `wasi:http/outgoing-handler` for sinks, through
//! wasmtime-wasi-http with our own [`WasiHttpHooks`]: every request is
//! checked against the sink's allow-list before any I/O (a miss gets
//! `HTTP-request-denied` and a log line naming the sink and the host), then
//! sent through one pooled `reqwest::Client` shared by the whole host (rustls
//! with the ring provider; no proxy from the environment; no redirects, which
//! could leave the allow-list), with the sink's timeout and body caps
//! ([`crate::Limits`]: `http_allow`, `http_timeout`, `max_http_request_bytes`,
//! `max_http_response_bytes`).
//!
//! # Allow-list syntax
//!
//! Each entry is `[scheme://]host[:port]`:
//!
//! - scheme: `http`, `https` or `*` (either); absent means `https`;
//! - host: a name or IP (`127.0.0.1`), `*.example.com` (any name ending in
//!   `.example.com`, not `example.com` itself), or `*` (any host);
//! - port: a number, `*` (any), or absent: the scheme's default (80/443;
//!   with scheme `*`, 80 for http and 443 for https).
//!
//! Examples: `https://*.log.aliyuncs.com`, `http://127.0.0.1:9000`,
//! `http://localhost:*`. An empty list denies everything.
//!
//! The guest may set a `host` header (SLS names the project that way on IP
//! endpoints); the connection always goes to the request's authority, and
//! the allow-list is checked against that authority.
//!
//! [`sls_sink_spec`] builds the sls sink's spec from KubeDL's `SLS_*`
//! environment variables.

use std::fmt;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use wasmtime::component::{Linker, ResourceTable};
use wasmtime_wasi_http::{
    Error as HttpError, ForbiddenHeaderFilter, RequestOptions, WasiBody as HyperOutgoingBody,
    WasiHttpCtx, WasiHttpCtxView, WasiHttpHooks, WasiHttpView,
};

use crate::{Limits, ModuleSource, SinkSpec};

/// An allow-list entry that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("HTTP allow-list entry `{entry}`: {reason}")]
pub struct AllowListError {
    /// The entry as written.
    pub entry: String,
    /// What is wrong with it.
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum SchemeRule {
    Http,
    Https,
    Any,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum HostRule {
    Exact(String),
    Suffix(String),
    Any,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum PortRule {
    Exact(u16),
    Default,
    Any,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Rule {
    scheme: SchemeRule,
    host: HostRule,
    port: PortRule,
}

/// A parsed allow-list (see the module docs for the syntax).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AllowList {
    rules: Vec<Rule>,
}

fn default_port(scheme: &str) -> Option<u16> {
    match scheme {
        "http" => Some(80),
        "https" => Some(443),
        _ => None,
    }
}

impl AllowList {
    /// Parses entries; the first bad one is an error naming it.
    pub fn parse<S: AsRef<str>>(entries: &[S]) -> Result<Self, AllowListError> {
        let mut rules = Vec::with_capacity(entries.len());
        for entry in entries {
            let entry = entry.as_ref();
            let bad = |reason: &str| AllowListError {
                entry: entry.to_string(),
                reason: reason.to_string(),
            };
            let trimmed = entry.trim();
            let (scheme, rest) = match trimmed.split_once("://") {
                Some((s, rest)) => (s.to_ascii_lowercase(), rest),
                None => ("https".to_string(), trimmed),
            };
            let scheme = match scheme.as_str() {
                "http" => SchemeRule::Http,
                "https" => SchemeRule::Https,
                "*" => SchemeRule::Any,
                _ => return Err(bad("the scheme must be http, https or *")),
            };
            let rest = rest.strip_suffix('/').unwrap_or(rest);
            if rest.is_empty() || rest.contains(['/', '?', '@', '#']) {
                return Err(bad("expected [scheme://]host[:port], without a path"));
            }
            let (host, port) = match rest.rsplit_once(':') {
                Some((h, "*")) => (h, PortRule::Any),
                Some((h, p)) => match p.parse::<u16>() {
                    Ok(p) if p != 0 => (h, PortRule::Exact(p)),
                    _ => return Err(bad("the port must be 1..=65535 or *")),
                },
                None => (rest, PortRule::Default),
            };
            let host = host.to_ascii_lowercase();
            let valid_name = |h: &str| {
                !h.is_empty()
                    && h.split('.').all(|l| {
                        !l.is_empty() && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                    })
            };
            let host = if host == "*" {
                HostRule::Any
            } else if let Some(suffix) = host.strip_prefix("*.") {
                if !valid_name(suffix) {
                    return Err(bad("the host after `*.` is not a DNS name"));
                }
                HostRule::Suffix(format!(".{suffix}"))
            } else if valid_name(&host) {
                HostRule::Exact(host)
            } else {
                return Err(bad(
                    "the host must be a name, an IPv4 address, *.domain or *",
                ));
            };
            rules.push(Rule { scheme, host, port });
        }
        Ok(Self { rules })
    }

    /// Whether a request to `scheme://host:port` is allowed (`port` `None`:
    /// the scheme's default).
    pub fn allows(&self, scheme: &str, host: &str, port: Option<u16>) -> bool {
        let scheme = scheme.to_ascii_lowercase();
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        let Some(port) = port.or_else(|| default_port(&scheme)) else {
            return false;
        };
        self.rules.iter().any(|r| {
            let scheme_ok = match r.scheme {
                SchemeRule::Http => scheme == "http",
                SchemeRule::Https => scheme == "https",
                SchemeRule::Any => scheme == "http" || scheme == "https",
            };
            let host_ok = match &r.host {
                HostRule::Exact(h) => *h == host,
                HostRule::Suffix(s) => host.len() > s.len() && host.ends_with(s.as_str()),
                HostRule::Any => true,
            };
            let port_ok = match r.port {
                PortRule::Exact(p) => p == port,
                PortRule::Default => Some(port) == default_port(&scheme),
                PortRule::Any => true,
            };
            scheme_ok && host_ok && port_ok
        })
    }

    /// True when nothing is allowed.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }
}

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

/// The client every sink's requests go through (connections are pooled
/// per host across sinks).
pub fn shared_client() -> reqwest::Client {
    static CLIENT: OnceLock<reqwest::Client> = OnceLock::new();
    CLIENT
        .get_or_init(|| {
            let _ = rustls::crypto::ring::default_provider().install_default();
            reqwest::Client::builder()
                .no_proxy()
                .redirect(reqwest::redirect::Policy::none())
                .connect_timeout(Duration::from_secs(10))
                .pool_idle_timeout(Duration::from_secs(60))
                .build()
                .unwrap_or_else(|e| {
                    tracing::error!("http: cannot build the HTTP client ({e}); using defaults");
                    reqwest::Client::new()
                })
        })
        .clone()
}

/// The hooks of one sink: its allow-list, caps and the shared client.
struct SinkHooks {
    sink: Arc<str>,
    allow: Result<AllowList, AllowListError>,
    caps: HttpCaps,
    client: reqwest::Client,
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
        let allow = AllowList::parse(&limits.http_allow);
        if let Err(e) = &allow {
            tracing::error!(sink, "{e}; every HTTP request of this sink is denied");
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
                client: shared_client(),
            },
            budget,
        }
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

fn map_reqwest(e: &reqwest::Error) -> HttpError {
    if e.is_timeout() {
        HttpError::HttpResponseTimeout
    } else if e.is_connect() {
        HttpError::ConnectionRefused
    } else {
        HttpError::InternalError(Some(e.to_string()))
    }
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
        let uri = request.uri().clone();
        let scheme = uri.scheme_str().unwrap_or("").to_string();
        let host = uri.host().unwrap_or("").to_string();
        let port = uri.port_u16();
        let allowed = match &self.allow {
            Ok(list) => list.allows(&scheme, &host, port),
            Err(_) => false,
        };
        let sink = self.sink.clone();
        if !allowed {
            let shown = match port {
                Some(p) => format!("{scheme}://{host}:{p}"),
                None => format!("{scheme}://{host}"),
            };
            tracing::warn!(sink = %sink, "HTTP request to {shown} denied: not in the sink's allow-list");
            return Box::new(async { Err(HttpError::HttpRequestDenied) });
        }
        let caps = self.caps;
        let client = self.client.clone();
        Box::new(async move {
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
                    sent.extend_from_slice(&data);
                }
            }
            let mut headers = parts.headers;
            // The client sets Content-Length from the body.
            headers.remove(http::header::CONTENT_LENGTH);
            let response = client
                .request(parts.method, uri.to_string())
                .headers(headers)
                .body(sent)
                .timeout(caps.timeout)
                .send()
                .await
                .map_err(|e| {
                    tracing::debug!(sink = %sink, "HTTP request to {host} failed: {e}");
                    map_reqwest(&e)
                })?;
            let status = response.status();
            let headers = response.headers().clone();
            let mut response = response;
            let mut received = Vec::new();
            while let Some(chunk) = response.chunk().await.map_err(|e| map_reqwest(&e))? {
                if received.len() + chunk.len() > caps.max_response_bytes {
                    tracing::warn!(sink = %sink, "HTTP response from {host} cut: body over {} bytes", caps.max_response_bytes);
                    return Err(HttpError::HttpResponseBodySize(Some(
                        caps.max_response_bytes as u64,
                    )));
                }
                received.extend_from_slice(&chunk);
            }
            let mut out = http::Response::new(
                Full::new(Bytes::from(received))
                    .map_err(|never| match never {})
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

/// A missing or invalid `SLS_*` variable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SlsEnvError {
    /// A required variable is unset or empty.
    #[error("environment variable {0} is required for --event-storage aliyun-sls")]
    Missing(&'static str),
    /// `SLS_ENDPOINT` is not a host or `scheme://host[:port]`.
    #[error(
        "SLS_ENDPOINT `{value}` is invalid: {reason} (expected a host like cn-hangzhou.log.aliyuncs.com or a URL like http://127.0.0.1:9000)"
    )]
    Endpoint {
        /// The value.
        value: String,
        /// Why.
        reason: String,
    },
}

/// Parses an SLS endpoint (`host` → https, or `scheme://host[:port]`) into
/// (scheme, host, port).
pub fn parse_sls_endpoint(value: &str) -> Result<(String, String, Option<u16>), SlsEnvError> {
    let bad = |reason: &str| SlsEnvError::Endpoint {
        value: value.to_string(),
        reason: reason.to_string(),
    };
    let v = value.trim();
    let (scheme, rest) = match v.split_once("://") {
        Some((s, r)) => (s.to_ascii_lowercase(), r),
        None => ("https".to_string(), v),
    };
    if scheme != "http" && scheme != "https" {
        return Err(bad("the scheme must be http or https"));
    }
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    if rest.contains(['/', '?', '@', '#']) {
        return Err(bad("it must not have a path, query or user"));
    }
    let (host, port) = match rest.rsplit_once(':') {
        Some((h, p)) => match p.parse::<u16>() {
            Ok(p) if p != 0 => (h, Some(p)),
            _ => return Err(bad("the port must be a number in 1..=65535")),
        },
        None => (rest, None),
    };
    let valid = !host.is_empty()
        && host
            .split('.')
            .all(|l| !l.is_empty() && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'));
    if !valid {
        return Err(bad("the host must be a DNS name or an IPv4 address"));
    }
    Ok((scheme, host.to_ascii_lowercase(), port))
}

/// The sls sink's spec from KubeDL's variables, read through `var`
/// (`std::env::var(..).ok()` in the runtime): `SLS_ENDPOINT`, `SLS_KEY_ID`,
/// `SLS_KEY_SECRET`, `SLS_PROJECT`, `SLS_LOG_STORE` (all required), and
/// optional `SLS_SECURITY_TOKEN`. The allow-list holds just the endpoint:
/// `scheme://*.<host>:port` for a name (the project is a subdomain),
/// `scheme://<ip>:port` for an IPv4 address. Errors name the variable and
/// never contain the secret.
pub fn sls_sink_spec(
    name: &str,
    module: ModuleSource,
    var: impl Fn(&str) -> Option<String>,
    mut limits: Limits,
) -> Result<SinkSpec, SlsEnvError> {
    let need = |key: &'static str| {
        var(key)
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
            .ok_or(SlsEnvError::Missing(key))
    };
    let endpoint = need("SLS_ENDPOINT")?;
    let key_id = need("SLS_KEY_ID")?;
    let secret = need("SLS_KEY_SECRET")?;
    let project = need("SLS_PROJECT")?;
    let logstore = need("SLS_LOG_STORE")?;
    let (scheme, host, port) = parse_sls_endpoint(&endpoint)?;
    let port = port.or_else(|| default_port(&scheme)).unwrap_or(443);
    let is_ip = host.parse::<std::net::Ipv4Addr>().is_ok();
    let allow = if is_ip {
        format!("{scheme}://{host}:{port}")
    } else {
        format!("{scheme}://*.{host}:{port}")
    };
    let mut settings = vec![
        ("endpoint".to_string(), format!("{scheme}://{host}:{port}")),
        ("project".to_string(), project),
        ("logstore".to_string(), logstore),
        ("access_key_id".to_string(), key_id),
        ("access_key_secret".to_string(), secret),
    ];
    if let Some(token) = var("SLS_SECURITY_TOKEN").filter(|t| !t.is_empty()) {
        settings.push(("security_token".to_string(), token));
    }
    limits.http_allow = vec![allow];
    Ok(SinkSpec {
        name: name.to_string(),
        module,
        settings,
        sql_grants: Vec::new(),
        limits,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allow_list_matches_scheme_host_and_port() {
        let list = AllowList::parse(&[
            "https://*.log.aliyuncs.com",
            "http://127.0.0.1:9000",
            "*://localhost:*",
        ])
        .expect("valid");
        assert!(list.allows("https", "proj.cn-hangzhou.log.aliyuncs.com", None));
        assert!(list.allows("https", "proj.cn-hangzhou.log.aliyuncs.com", Some(443)));
        assert!(
            !list.allows("https", "log.aliyuncs.com", None),
            "bare suffix"
        );
        assert!(
            !list.allows("http", "proj.cn-hangzhou.log.aliyuncs.com", None),
            "scheme"
        );
        assert!(
            !list.allows("https", "proj.log.aliyuncs.com", Some(8443)),
            "port"
        );
        assert!(!list.allows("https", "evil-log.aliyuncs.com.attacker.io", None));
        assert!(list.allows("http", "127.0.0.1", Some(9000)));
        assert!(!list.allows("http", "127.0.0.1", Some(9001)));
        assert!(!list.allows("https", "127.0.0.1", Some(9000)));
        assert!(list.allows("http", "LOCALHOST", Some(1234)));
        assert!(!list.allows("ftp", "localhost", Some(21)));
        assert!(!AllowList::default().allows("https", "example.com", None));
    }

    #[test]
    fn bad_entries_are_named() {
        for bad in [
            "ftp://x",
            "http://h:0",
            "http://h/path",
            "*.",
            "http://a..b",
            "",
        ] {
            let err = AllowList::parse(&[bad]).expect_err(bad);
            assert_eq!(err.entry, bad);
        }
        assert!(AllowList::parse(&["*"]).is_ok());
    }

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: std::collections::HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| map.get(k).cloned()
    }

    const FULL: [(&str, &str); 5] = [
        ("SLS_ENDPOINT", "cn-hangzhou.log.aliyuncs.com"),
        ("SLS_KEY_ID", "id"),
        ("SLS_KEY_SECRET", "very-secret"),
        ("SLS_PROJECT", "kubedl-project"),
        ("SLS_LOG_STORE", "kubedl"),
    ];

    #[test]
    fn sls_spec_from_env() {
        let module = ModuleSource::Path("sls.wasm".into());
        let spec =
            sls_sink_spec("sls", module.clone(), env(&FULL), Limits::default()).expect("valid");
        assert_eq!(
            spec.limits.http_allow,
            ["https://*.cn-hangzhou.log.aliyuncs.com:443"]
        );
        let allow = AllowList::parse(&spec.limits.http_allow).expect("parses");
        assert!(allow.allows("https", "kubedl-project.cn-hangzhou.log.aliyuncs.com", None));
        assert!(spec.settings.contains(&(
            "endpoint".into(),
            "https://cn-hangzhou.log.aliyuncs.com:443".into()
        )));
        assert!(
            spec.settings
                .contains(&("logstore".into(), "kubedl".into()))
        );

        let mut local = FULL.to_vec();
        local[0] = ("SLS_ENDPOINT", "http://127.0.0.1:9000");
        let spec =
            sls_sink_spec("sls", module.clone(), env(&local), Limits::default()).expect("valid");
        assert_eq!(spec.limits.http_allow, ["http://127.0.0.1:9000"]);

        for missing in [
            "SLS_ENDPOINT",
            "SLS_KEY_ID",
            "SLS_KEY_SECRET",
            "SLS_PROJECT",
            "SLS_LOG_STORE",
        ] {
            let partial: Vec<_> = FULL
                .iter()
                .copied()
                .filter(|(k, _)| *k != missing)
                .collect();
            let err = sls_sink_spec("sls", module.clone(), env(&partial), Limits::default())
                .expect_err(missing);
            assert_eq!(err, SlsEnvError::Missing(missing));
            assert!(err.to_string().contains(missing));
        }
        for bad in ["ftp://x", "http://h:99999", "http://h/p", "a..b"] {
            let mut v = FULL.to_vec();
            v[0] = ("SLS_ENDPOINT", bad);
            let err =
                sls_sink_spec("sls", module.clone(), env(&v), Limits::default()).expect_err(bad);
            assert!(matches!(err, SlsEnvError::Endpoint { .. }), "{bad}: {err}");
            assert!(!err.to_string().contains("very-secret"));
        }
    }
}
