//! The `http-probe-*` modes of the hostile guest: text that tries to forge
//! the host's log, HTTP requests aimed at addresses a name leads to, and a
//! flood of concurrent large requests.
//!
//! - `http-probe-forge`: every call returns `error.fatal` with a message
//!   holding a newline followed by a fake log line, ANSI colour codes, a
//!   carriage return and a bidirectional override ([`FORGED`]).
//! - `http-probe-each`: the `url` setting is a space-separated list of
//!   targets, each `URL` or `URL|host=NAME` (a `host` header); each gets a
//!   small POST. The report has one line per target: `DENIED <target>:
//!   <error code>` or `ESCAPED <target>: <status>`.
//! - `http-probe-flood`: starts `n` POSTs of `bytes` bytes each to `url`
//!   (`?n=N` in the URL, default 100) all at once, writing their bodies in
//!   turns of 4 KiB so they are all in flight together, then waits for
//!   them all. The report counts the outcomes by kind (`ok`,
//!   `HttpRequestDenied`, `HttpRequestBodySize`, ...).

use std::collections::BTreeMap;

use crate::bindings::wasi::http::outgoing_handler;
use crate::bindings::wasi::http::types::{Fields, FutureIncomingResponse, OutgoingBody};
use crate::bindings::wasi::io::streams::OutputStream;
use crate::{Error, Probe, Settings, post_request};

/// The text `http-probe-forge` returns: a forged log line after a newline,
/// ANSI colour, a carriage return, a bidirectional override.
pub const FORGED: &str = "guest failure\n2026-12-01T06:00:00.000000Z ERROR kubesink::host: forged line: all sinks healthy\r\x1b[2K\x1b[32mOK\x1b[0m \u{202e}desrever";

/// A request started: its response future, and its body while it is
/// still being written.
struct InFlight {
    future: FutureIncomingResponse,
    body: Option<(OutgoingBody, OutputStream)>,
    written: usize,
    error: Option<String>,
}

/// Starts a POST to `url` (with a `host` header if given); the body is
/// written by the caller.
fn start(url: &str, host: Option<&str>) -> Result<Result<InFlight, String>, Error> {
    let headers = Fields::new();
    if let Some(h) = host
        && let Err(e) = headers.append("host", h.as_bytes())
    {
        return Ok(Err(format!("host header: {e:?}")));
    }
    let (req, body) = post_request(url, headers)?;
    let stream = body
        .write()
        .map_err(|()| Error::Fatal("cannot set the request's body stream".into()))?;
    let future = match outgoing_handler::handle(req, None) {
        Ok(f) => f,
        Err(code) => return Ok(Err(format!("{code:?}"))),
    };
    Ok(Ok(InFlight {
        future,
        body: Some((body, stream)),
        written: 0,
        error: None,
    }))
}

impl InFlight {
    /// Writes up to `chunk` more bytes of a `total`-byte body; finishes the
    /// body when all is written (or the host refused it). True when done.
    fn write_some(&mut self, total: usize, chunk: &[u8]) -> bool {
        let Some((_, stream)) = &self.body else {
            return true;
        };
        let n = chunk.len().min(total - self.written);
        if n > 0 {
            match stream.blocking_write_and_flush(&chunk[..n]) {
                Ok(()) => self.written += n,
                Err(e) => self.error = Some(format!("body write: {e:?}")),
            }
        }
        if self.written >= total || self.error.is_some() {
            if let Some((body, stream)) = self.body.take() {
                drop(stream);
                if let Err(e) = OutgoingBody::finish(body, None) {
                    self.error.get_or_insert(format!("body finish: {e:?}"));
                }
            }
            return true;
        }
        false
    }

    /// Waits for the response: its status, or the error code.
    fn outcome(self) -> Result<u16, String> {
        self.future.subscribe().block();
        match self.future.get() {
            Some(Ok(Ok(response))) => Ok(response.status()),
            Some(Ok(Err(code))) => Err(format!("{code:?}")),
            Some(Err(())) | None => Err(self.error.unwrap_or_else(|| "no response".into())),
        }
    }
}

/// One small POST, to its end.
fn post_once(url: &str, host: Option<&str>) -> Result<Result<u16, String>, Error> {
    let mut req = match start(url, host)? {
        Ok(r) => r,
        Err(e) => return Ok(Err(e)),
    };
    let body = b"{\"probe\":true}";
    while !req.write_some(body.len(), body) {}
    Ok(req.outcome())
}

fn each(p: &mut Probe, targets: &str) -> Result<(), Error> {
    for target in targets.split_whitespace() {
        let (url, host) = match target.split_once("|host=") {
            Some((u, h)) => (u, Some(h)),
            None => (target, None),
        };
        let r = post_once(url, host)?;
        p.check(target, r);
    }
    Ok(())
}

fn flood(p: &mut Probe, url: &str, bytes: usize) -> Result<(), Error> {
    let n = url
        .split_once("?n=")
        .and_then(|(_, n)| n.parse::<usize>().ok())
        .unwrap_or(100);
    let chunk = vec![b'f'; 4096];
    let mut outcomes: BTreeMap<String, usize> = BTreeMap::new();
    let mut running = Vec::with_capacity(n);
    for _ in 0..n {
        match start(url, None)? {
            Ok(r) => running.push(r),
            Err(code) => *outcomes.entry(code).or_default() += 1,
        }
    }
    // Bodies in turns, so that every request is in flight at once.
    let mut writing: Vec<usize> = (0..running.len()).collect();
    while !writing.is_empty() {
        writing.retain(|&i| !running[i].write_some(bytes, &chunk));
    }
    for r in running {
        let key = match r.outcome() {
            Ok(status) => format!("status {status}"),
            Err(code) => code,
        };
        *outcomes.entry(key).or_default() += 1;
    }
    let summary: Vec<String> = outcomes.iter().map(|(k, v)| format!("{k}={v}")).collect();
    p.0.push(format!("FLOOD {n} x {bytes} bytes: {}", summary.join(" ")));
    Ok(())
}

/// Runs mode `mode` (one of the `http-probe-*` modes).
pub fn run(mode: &str, s: &Settings) -> Result<(), Error> {
    let mut p = Probe::default();
    match mode {
        "http-probe-forge" => Err(Error::Fatal(FORGED.to_owned())),
        "http-probe-each" => {
            each(&mut p, &s.url)?;
            p.finish()
        }
        "http-probe-flood" => {
            flood(&mut p, &s.url, s.bytes)?;
            p.finish()
        }
        other => Err(Error::Fatal(format!("unknown mode {other}"))),
    }
}
