//! Operations: what an operator sees of a running kubesink — Prometheus
//! [`metrics`], [`health`] (liveness and readiness) and the HTTP
//! [`server`] that exposes them (`kubesink run --listen`).
//!
//! One [`Ops`] is shared by the pipeline (sink counters, queue depths,
//! faults, readiness of sinks), the live source (watch restarts, first
//! listings) and the server.

pub mod health;
pub mod metrics;
pub mod server;

use std::sync::Arc;

/// The metrics registry and the health state of one runtime.
#[derive(Debug, Default)]
pub struct Ops {
    /// Prometheus metrics.
    pub metrics: metrics::Metrics,
    /// Liveness and readiness.
    pub health: Arc<health::Health>,
}

impl Ops {
    /// Fresh metrics and health state.
    pub fn new() -> Arc<Ops> {
        Arc::new(Ops::default())
    }
}
