//! The wasm export: the `sink` interface of `http-sink-world`, with requests
//! sent through the host's `wasi:http/outgoing-handler`.

use std::cell::RefCell;

use crate::bindings::exports::kubesink::sink::sink::Guest;
use crate::bindings::kubesink::sink::types::{Entry, Error, RecordKind};
use crate::bindings::wasi::http::outgoing_handler;
use crate::bindings::wasi::http::types::{
    ErrorCode, Fields, Method, OutgoingBody, OutgoingRequest, Scheme as WasiScheme,
};
use crate::bindings::wasi::io::streams::StreamError;
use crate::settings::{Scheme, Settings};
use crate::sink::{HttpRequest, HttpResponse, SinkError, SlsSink, Transport, TransportError};

/// Most response body bytes read (SLS answers PutLogs with small JSON).
const MAX_RESPONSE_BODY: usize = 1 << 20;

thread_local! {
    static SINK: RefCell<Option<SlsSink>> = const { RefCell::new(None) };
}

/// `wasi:http/outgoing-handler`, blocking.
struct WasiHttp;

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

impl Transport for WasiHttp {
    fn send(&mut self, req: HttpRequest) -> Result<HttpResponse, TransportError> {
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
        // Stream the body after `handle`, so the host consumes it as we write.
        let mut write_error = None;
        match body.write() {
            Ok(stream) => {
                for chunk in req.body.chunks(4096) {
                    if let Err(e) = stream.blocking_write_and_flush(chunk) {
                        write_error = Some(format!("writing the body: {e:?}"));
                        break;
                    }
                }
            }
            Err(()) => write_error = Some("the body stream was taken".into()),
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
                match stream.blocking_read(64 << 10) {
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

fn to_wit(e: SinkError) -> Error {
    match e {
        SinkError::Retryable(m) => Error::Retryable(m),
        SinkError::Fatal(m) => Error::Fatal(m),
    }
}

fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

struct Component;

impl Guest for Component {
    fn init(settings: Vec<(String, String)>) -> Result<(), Error> {
        let settings = Settings::parse(&settings).map_err(|e| Error::Fatal(e.to_string()))?;
        SINK.with(|s| *s.borrow_mut() = Some(SlsSink::new(settings)));
        Ok(())
    }

    /// Keeps no state the host needs to reconcile: holds nothing.
    fn held(_kind: RecordKind) -> Result<Vec<String>, Error> {
        Ok(Vec::new())
    }

    fn write(batch: Vec<Entry>) -> Result<(), Error> {
        SINK.with(|s| match s.borrow_mut().as_mut() {
            Some(sink) => sink
                .write(&mut WasiHttp, &batch, now_secs())
                .map_err(to_wit),
            None => Err(Error::Fatal("sls sink: write before init".into())),
        })
    }
}

crate::bindings::export!(Component with_types_in crate::bindings);
