//! The wasm export: the `sink` interface of `http-sink-world`, requests
//! sent one at a time through the host's `wasi:http/outgoing-handler`.

use std::cell::RefCell;

use crate::bindings::exports::kubesink::sink::sink::Guest;
use crate::bindings::kubesink::sink::types::{
    Change, Error, HeldPage, OptionalField, RecordKind, Shape, Wants,
};
use crate::bindings::wasi::clocks::monotonic_clock;
use crate::bindings::wasi::http::outgoing_handler;
use crate::bindings::wasi::http::types::{
    ErrorCode, Fields, Method, OutgoingBody, OutgoingRequest, Scheme as WasiScheme,
};
use crate::bindings::wasi::io::streams::StreamError;
use crate::settings::{Config, Scheme};
use crate::sink::{HttpRequest, HttpResponse, SinkError, Transport, TransportError, WebhookSink};

/// Most response body bytes read (receivers answer with a few bytes).
const MAX_RESPONSE_BODY: usize = 64 << 10;

thread_local! {
    static SINK: RefCell<Option<WebhookSink>> = const { RefCell::new(None) };
}

fn denied_or_network(code: ErrorCode) -> TransportError {
    match code {
        ErrorCode::HttpRequestDenied
        | ErrorCode::HttpRequestBodySize(_)
        | ErrorCode::HttpRequestHeaderSize(_)
        | ErrorCode::HttpRequestUriInvalid
        | ErrorCode::HttpProtocolError => TransportError::Denied(format!("{code:?}")),
        other => TransportError::Network(format!("{other:?}")),
    }
}

struct WasiHttp;

impl WasiHttp {
    fn send_inner(req: HttpRequest) -> Result<HttpResponse, TransportError> {
        let headers = Fields::new();
        for (k, v) in &req.headers {
            headers
                .append(k, v.as_bytes())
                .map_err(|e| TransportError::Denied(format!("header {k}: {e:?}")))?;
        }
        let out = OutgoingRequest::new(headers);
        let bad = |what: &str| TransportError::Denied(format!("invalid request {what}"));
        out.set_method(&Method::Post).map_err(|()| bad("method"))?;
        out.set_scheme(Some(&match req.scheme {
            Scheme::Http => WasiScheme::Http,
            Scheme::Https => WasiScheme::Https,
        }))
        .map_err(|()| bad("scheme"))?;
        out.set_authority(Some(&req.authority))
            .map_err(|()| bad("authority"))?;
        out.set_path_with_query(Some(&req.path_with_query))
            .map_err(|()| bad("path"))?;
        let body = out.body().map_err(|()| bad("body"))?;
        let future = outgoing_handler::handle(out, None).map_err(denied_or_network)?;
        let mut write_error = None;
        {
            let stream = body.write().map_err(|()| bad("body stream"))?;
            let mut rest: &[u8] = &req.body;
            while !rest.is_empty() {
                match stream.check_write() {
                    Ok(0) => stream.subscribe().block(),
                    Ok(n) => {
                        let n = rest.len().min(usize::try_from(n).unwrap_or(usize::MAX));
                        if let Err(e) = stream.write(&rest[..n]) {
                            write_error = Some(format!("writing the body: {e:?}"));
                            break;
                        }
                        rest = &rest[n..];
                    }
                    Err(e) => {
                        write_error = Some(format!("writing the body: {e:?}"));
                        break;
                    }
                }
            }
        }
        if let Err(e) = OutgoingBody::finish(body, None) {
            write_error.get_or_insert(format!("finishing the body: {e:?}"));
        }
        future.subscribe().block();
        let response = match future.get() {
            Some(Ok(Ok(r))) => r,
            Some(Ok(Err(code))) => return Err(denied_or_network(code)),
            Some(Err(())) | None => {
                return Err(TransportError::Network(
                    write_error.unwrap_or_else(|| "no response".into()),
                ));
            }
        };
        let status = response.status();
        let headers = response
            .headers()
            .entries()
            .into_iter()
            .map(|(k, v)| {
                (
                    k.to_ascii_lowercase(),
                    String::from_utf8_lossy(&v).into_owned(),
                )
            })
            .collect();
        let mut bytes = Vec::new();
        let incoming = response
            .consume()
            .map_err(|()| TransportError::Network("response body taken".into()))?;
        {
            let stream = incoming
                .stream()
                .map_err(|()| TransportError::Network("response stream taken".into()))?;
            loop {
                match stream.blocking_read(16 << 10) {
                    Ok(chunk) => {
                        let room = MAX_RESPONSE_BODY.saturating_sub(bytes.len());
                        bytes.extend_from_slice(&chunk[..chunk.len().min(room)]);
                    }
                    Err(StreamError::Closed) => break,
                    Err(e) => {
                        return Err(TransportError::Network(format!(
                            "reading the response: {e:?}"
                        )));
                    }
                }
            }
        }
        Ok(HttpResponse {
            status,
            headers,
            body: bytes,
        })
    }
}

impl Transport for WasiHttp {
    fn send(&mut self, req: HttpRequest) -> Result<HttpResponse, TransportError> {
        Self::send_inner(req)
    }

    fn now_ms(&self) -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0)
    }

    fn mono_ms(&self) -> u64 {
        monotonic_clock::now() / 1_000_000
    }

    fn sleep_ms(&mut self, ms: u64) {
        monotonic_clock::subscribe_duration(ms.saturating_mul(1_000_000)).block();
    }
}

struct Component;

impl Guest for Component {
    fn init(settings: Vec<(String, String)>) -> Result<Wants, Error> {
        let sink = Config::parse(&settings)
            .and_then(WebhookSink::new)
            .map_err(|e| Error::Fatal(e.to_string()))?;
        SINK.with(|s| *s.borrow_mut() = Some(sink));
        Ok(Wants {
            kinds: Vec::new(),
            // Every update is a message.
            shape: Shape::Log,
            fields: vec![
                OptionalField::Labels,
                OptionalField::Resources,
                OptionalField::Messages,
            ],
        })
    }

    /// Keeps no state the host needs to reconcile: holds nothing.
    fn held(_kind: RecordKind, _cursor: Option<String>, _limit: u32) -> Result<HeldPage, Error> {
        Ok(HeldPage {
            uids: Vec::new(),
            next: None,
        })
    }

    fn write(batch: Vec<Change>) -> Result<(), Error> {
        SINK.with(|s| match s.borrow_mut().as_mut() {
            Some(sink) => sink.write(&mut WasiHttp, &batch).map_err(|e| match e {
                SinkError::Retryable(m) => Error::Retryable(m),
                SinkError::Fatal(m) => Error::Fatal(m),
            }),
            None => Err(Error::Fatal("webhook sink: write before init".into())),
        })
    }
}

crate::bindings::export!(Component with_types_in crate::bindings);
