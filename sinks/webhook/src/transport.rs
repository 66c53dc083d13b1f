//! What the sink needs from the outside: HTTP, the clock and waiting
//! (`wasi:http` and `wasi:clocks` in the component, fakes in tests).

use crate::settings::Scheme;

/// An HTTP request for the transport (always a POST of JSON).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpRequest {
    /// Scheme.
    pub scheme: Scheme,
    /// `host[:port]`.
    pub authority: String,
    /// Path and query.
    pub path_with_query: String,
    /// Headers, lowercase names.
    pub headers: Vec<(String, String)>,
    /// Body.
    pub body: Vec<u8>,
}

/// An HTTP response.
#[derive(Debug, Clone, Default)]
pub struct HttpResponse {
    /// Status code.
    pub status: u16,
    /// Headers, lowercase names.
    pub headers: Vec<(String, String)>,
    /// Body (possibly capped).
    pub body: Vec<u8>,
}

/// Why no response came.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TransportError {
    /// The host refused the request (allow-list).
    Denied(String),
    /// Connecting, sending or receiving failed, or timed out.
    Network(String),
}

/// HTTP, the clock and waiting (wasi in the component, fakes in tests).
pub trait Transport {
    /// Sends one request and waits for its answer.
    fn send(&mut self, req: HttpRequest) -> Result<HttpResponse, TransportError>;
    /// Wall-clock time, milliseconds since the Unix epoch: for what names
    /// a time (signatures, `Retry-After` dates, record ages, summaries).
    fn now_ms(&self) -> u64;
    /// A monotonic clock in milliseconds, from an arbitrary start: for
    /// what measures a wait (the rate limit's tokens, the summary period,
    /// a `Retry-After` hold), which a step of the wall clock must not
    /// lengthen or cut short.
    fn mono_ms(&self) -> u64;
    /// Waits.
    fn sleep_ms(&mut self, ms: u64);
}
