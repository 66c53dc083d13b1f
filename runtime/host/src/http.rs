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
//! (fc00::/7) or other non-public address ([`internal_range`](allow::internal_range)) is refused
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
//!
//! # Files
//!
//! This file: the per-store context ([`HttpCtx`]) and the linker.
//! `allow.rs`: the allow-list. `resolve.rs`: the client of an allow-list
//! and the resolver that checks where a name leads. `send.rs`: checking
//! and sending one request, with its caps. `slots.rs`: the per-sink
//! in-flight limit.

mod allow;
pub mod resolve;
mod send;
mod slots;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use wasmtime::component::{Linker, ResourceTable};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

use crate::Limits;
pub use allow::{AllowList, AllowListError, HostRule, PortRule, Rule, SchemeRule};
use send::SinkHooks;
pub(crate) use slots::{InFlightSlots, SinkSlots};

/// The caps applied to a sink's requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct HttpCaps {
    /// From connecting to the end of the response body.
    pub timeout: Duration,
    /// Largest request body.
    pub max_request_bytes: usize,
    /// Largest response body.
    pub max_response_bytes: usize,
}

/// A sink's `wasi:http` state, a field of the store's data.
pub(crate) struct HttpCtx {
    wasi: WasiHttpCtx,
    hooks: SinkHooks,
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
                budget,
            },
        }
    }

    /// Uses the sink's shared request slots (the host's, so that all its
    /// instances count together) instead of slots of its own.
    #[must_use]
    pub(crate) fn with_slots(mut self, slots: SinkSlots) -> Self {
        self.hooks.slots = slots;
        self
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
pub(crate) fn add_to_linker<T: WasiHttpView + 'static>(
    linker: &mut Linker<T>,
) -> wasmtime::Result<()> {
    wasmtime_wasi_http::p2::add_only_http_to_linker_async(linker)
}
