//! The wasm export: the `sink` interface of `http-sink-world`, with requests
//! sent through the host's `wasi:http/outgoing-handler`.

use std::cell::RefCell;

use crate::bindings::exports::kubesink::sink::packed::Guest as PackedGuest;
use crate::bindings::exports::kubesink::sink::sink::Guest;
use crate::bindings::kubesink::sink::types::{
    Change, Error, HeldPage, OptionalField, RecordKind, Shape, Wants,
};
use crate::bindings::wasi::http::outgoing_handler;
use crate::bindings::wasi::http::types::FutureIncomingResponse;
use crate::bindings::wasi::http::types::{
    ErrorCode, Fields, Method, OutgoingBody, OutgoingRequest, Scheme as WasiScheme,
};
use crate::bindings::wasi::io::poll::{self, Pollable};
use crate::bindings::wasi::io::streams::StreamError;
use crate::settings::{Scheme, Settings};
use crate::sink::{
    Flow, HttpRequest, HttpResponse, Sent, SinkError, SlsSink, Transport, TransportError,
};

/// Most response body bytes read (SLS answers PutLogs with small JSON).
const MAX_RESPONSE_BODY: usize = 1 << 20;

thread_local! {
    static SINK: RefCell<Option<SlsSink>> = const { RefCell::new(None) };
}

/// `wasi:http/outgoing-handler`, several requests in flight, waited for
/// together with `wasi:io/poll`.
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

/// A started request: the response to come, the pollable that says when
/// it has (subscribed once, not again on every wait), and what went wrong
/// writing the body (reported if no response comes).
struct InFlight {
    /// A child of `future`: declared first, so it is dropped first.
    pollable: Pollable,
    index: usize,
    future: FutureIncomingResponse,
    write_error: Option<String>,
}

/// Starts a request: `handle`, then the whole body written and finished
/// (the host sends it on its own task, so this does not wait for the
/// response).
///
/// Every call into the host costs more than most of the guest's own work
/// per request (the host reads the guest's CPU clock around each), so the
/// headers go in one `fields.from-list` rather than one `append` each.
fn start(index: usize, mut req: HttpRequest) -> Result<InFlight, TransportError> {
    let entries: Vec<(String, Vec<u8>)> = std::mem::take(&mut req.headers)
        .into_iter()
        .map(|(k, v)| (k, v.into_bytes()))
        .collect();
    let headers = Fields::from_list(&entries)
        .map_err(|e| TransportError::Denied(format!("headers: {e:?}")))?;
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
    // Write after `handle`, so the host consumes the body as it comes; in
    // as few writes as the stream permits (one, below its 1 MiB budget).
    let mut write_error = None;
    match body.write() {
        Ok(stream) => {
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
        Err(()) => write_error = Some("the body stream was taken".into()),
    }
    if let Err(e) = OutgoingBody::finish(body, None) {
        write_error.get_or_insert(format!("finishing the body: {e:?}"));
    }
    Ok(InFlight {
        pollable: future.subscribe(),
        index,
        future,
        write_error,
    })
}

/// The response of a request whose future is ready.
fn finish(flight: InFlight) -> Sent {
    let InFlight {
        pollable,
        future,
        write_error,
        ..
    } = flight;
    drop(pollable);
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

impl Transport for WasiHttp {
    fn send_all(
        &mut self,
        requests: &mut dyn Iterator<Item = HttpRequest>,
        max_in_flight: usize,
        done: &mut dyn FnMut(usize, Sent) -> Flow,
    ) {
        let max_in_flight = max_in_flight.max(1);
        let mut in_flight: Vec<InFlight> = Vec::with_capacity(max_in_flight);
        let mut next = 0;
        let mut go = true;
        loop {
            while go && in_flight.len() < max_in_flight {
                let Some(request) = requests.next() else {
                    break;
                };
                let index = next;
                next += 1;
                match start(index, request) {
                    Ok(flight) => in_flight.push(flight),
                    Err(e) => go = done(index, Err(e)) == Flow::Continue,
                }
            }
            if in_flight.is_empty() {
                break;
            }
            let mut ready = {
                let refs: Vec<&Pollable> = in_flight.iter().map(|f| &f.pollable).collect();
                poll::poll(&refs)
            };
            // Highest position first, so `swap_remove` leaves the lower
            // ready positions in place.
            ready.sort_unstable_by(|a, b| b.cmp(a));
            ready.dedup();
            for position in ready {
                let flight = in_flight.swap_remove(position as usize);
                let index = flight.index;
                if done(index, finish(flight)) == Flow::Stop {
                    go = false;
                }
            }
        }
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
    fn init(settings: Vec<(String, String)>) -> Result<Wants, Error> {
        let settings = Settings::parse(&settings).map_err(|e| Error::Fatal(e.to_string()))?;
        let mut kinds = Vec::new();
        if settings.jobs_topic.is_some() {
            kinds.push(RecordKind::Job);
        }
        if settings.pods_topic.is_some() {
            kinds.push(RecordKind::Pod);
        }
        if settings.events {
            kinds.push(RecordKind::Event);
        }
        SINK.with(|s| *s.borrow_mut() = Some(SlsSink::new(settings)));
        Ok(Wants {
            kinds,
            // Every update is a log line.
            shape: Shape::Log,
            // Labels are not logged.
            fields: vec![OptionalField::Resources, OptionalField::Messages],
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
        write_batch(&packed_batch(&batch))
    }
}

impl PackedGuest for Component {
    fn write_packed(batch: Vec<u8>) -> Result<(), Error> {
        let batch =
            kubesink_packed::decode(&batch).map_err(|e| Error::Fatal(format!("sls sink: {e}")))?;
        write_batch(&batch)
    }

    fn write_packed_v2(batch: Vec<u8>) -> Result<(), Error> {
        let batch = kubesink_packed::decode_v2(&batch)
            .map_err(|e| Error::Fatal(format!("sls sink: {e}")))?;
        write_batch(&batch)
    }
}

kubesink_packed::impl_from_wit!(crate::bindings::kubesink::sink::types);

/// Writes `batch` with the sink of this instance.
fn write_batch(batch: &[kubesink_packed::Change<'_>]) -> Result<(), Error> {
    SINK.with(|s| match s.borrow_mut().as_mut() {
        Some(sink) => sink.write(&mut WasiHttp, batch, now_secs()).map_err(to_wit),
        None => Err(Error::Fatal("sls sink: write before init".into())),
    })
}

crate::bindings::export!(Component with_types_in crate::bindings);
