//! The operations HTTP server (hyper, HTTP/1.1): `GET /metrics`
//! (OpenMetrics text), `GET /healthz` and `GET /readyz` (200 with `ok` /
//! `ready: ...`, or 503 with a body saying what is wrong). Anything else is
//! 404.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use thiserror::Error;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use super::Ops;

/// Errors starting the server.
#[derive(Debug, Error)]
pub enum ServerError {
    /// The listen address could not be bound.
    #[error("cannot listen on {addr} (--listen / KUBESINK_LISTEN): {source}")]
    Bind {
        /// The address asked for.
        addr: String,
        /// The OS error.
        source: std::io::Error,
    },
}

/// A running server.
#[derive(Debug)]
pub struct Server {
    /// The bound address (with the actual port when 0 was asked for).
    pub addr: SocketAddr,
    task: JoinHandle<()>,
}

impl Server {
    /// Stops accepting connections.
    pub fn stop(self) {
        self.task.abort();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
const TEXT: &str = "text/plain; charset=utf-8";

/// Binds `addr` and serves the operations endpoints from `ops` until the
/// returned [`Server`] is stopped or dropped. Logs `listening on
/// http://ADDR` with the bound address.
pub async fn serve(addr: &str, ops: Arc<Ops>) -> Result<Server, ServerError> {
    let bind_err = |source| ServerError::Bind {
        addr: addr.to_owned(),
        source,
    };
    let listener = TcpListener::bind(addr).await.map_err(bind_err)?;
    let bound = listener.local_addr().map_err(bind_err)?;
    tracing::info!("listening on http://{bound}");
    let task = tokio::spawn(async move {
        loop {
            let (stream, peer) = match listener.accept().await {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "operations server: accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            };
            let ops = ops.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req| {
                    let ops = ops.clone();
                    async move { Ok::<_, Infallible>(route(&ops, &req)) }
                });
                if let Err(e) = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await
                {
                    tracing::debug!(%peer, error = %e, "operations server: connection ended with an error");
                }
            });
        }
    });
    Ok(Server { addr: bound, task })
}

fn respond(status: StatusCode, content_type: &str, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    if let Ok(v) = header::HeaderValue::from_str(content_type) {
        response.headers_mut().insert(header::CONTENT_TYPE, v);
    }
    response
}

fn route(ops: &Ops, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return respond(
            StatusCode::METHOD_NOT_ALLOWED,
            TEXT,
            "only GET is served\n".into(),
        );
    }
    let health = |r: Result<String, String>| match r {
        Ok(body) => respond(StatusCode::OK, TEXT, body),
        Err(body) => respond(StatusCode::SERVICE_UNAVAILABLE, TEXT, body),
    };
    match req.uri().path() {
        "/metrics" => respond(StatusCode::OK, OPENMETRICS, ops.metrics.encode()),
        "/healthz" | "/livez" => health(ops.health.liveness()),
        "/readyz" => health(ops.health.readiness()),
        other => respond(
            StatusCode::NOT_FOUND,
            TEXT,
            format!("no endpoint {other}: try /metrics, /healthz or /readyz\n"),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A bare HTTP/1.1 GET: the status code and the body.
    async fn get(addr: SocketAddr, path: &str) -> (u16, String) {
        let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
        s.write_all(
            format!("GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .expect("send");
        let mut out = String::new();
        s.read_to_string(&mut out).await.expect("read");
        let code = out
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .expect("status line");
        let body = out
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_owned())
            .unwrap_or_default();
        (code, body)
    }

    #[tokio::test]
    async fn serves_metrics_health_and_readiness() {
        let ops = Ops::new();
        ops.health.beat();
        let server = serve("127.0.0.1:0", ops.clone()).await.expect("bind");
        let sink = ops.metrics.sink("mysql");
        sink.delivered.inc_by(7);

        let (code, body) = get(server.addr, "/metrics").await;
        assert_eq!(code, 200);
        assert!(
            body.contains("kubesink_sink_records_delivered_total{sink=\"mysql\"} 7"),
            "{body}"
        );
        assert_eq!(get(server.addr, "/healthz").await.0, 200);

        let (code, body) = get(server.addr, "/readyz").await;
        assert_eq!(code, 503);
        assert!(body.contains("no watch started yet"), "{body}");
        ops.health.sink_ready("mysql");
        ops.health.watcher_synced("pods (v1)");
        let (code, body) = get(server.addr, "/readyz").await;
        assert_eq!((code, body.starts_with("ready")), (200, true), "{body}");

        assert_eq!(get(server.addr, "/nope").await.0, 404);
        server.stop();
    }

    #[tokio::test]
    async fn a_taken_address_is_an_error_naming_it() {
        let ops = Ops::new();
        let first = serve("127.0.0.1:0", ops.clone()).await.expect("bind");
        let addr = first.addr.to_string();
        let err = serve(&addr, ops).await.expect_err("taken");
        assert!(err.to_string().contains(&addr), "{err}");
    }
}
