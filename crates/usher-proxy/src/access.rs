//! The access log: one structured line per request (target `usher::access`), off by default.
//!
//! The request path records what it decided in a response extension ([`Served`]); the line is
//! written once the response head is ready, with the time to that point. The format (text or JSON)
//! is the subscriber's, so `usher --log-format json lb --access-log` gives JSON lines.

use std::time::Duration;

use http::{Method, StatusCode};
use usher_balancer::BackendId;

use crate::stats::Outcome;

/// What the proxy decided for a request, carried to the access log in the response extensions.
#[derive(Debug, Clone)]
pub struct Served {
    /// The backend that answered, if any.
    pub backend: Option<BackendId>,
    /// The affinity outcome.
    pub outcome: Outcome,
    /// Time the backend took to send its response head (when one answered).
    pub upstream: Option<Duration>,
}

/// Writes one access-log line.
pub fn log(
    method: &Method,
    path: &str,
    status: StatusCode,
    served: Option<&Served>,
    total: Duration,
    request_id: Option<&str>,
) {
    let backend = served
        .and_then(|s| s.backend.as_ref())
        .map_or("-", BackendId::as_str);
    let outcome = served.map_or("-", |s| s.outcome.as_str());
    let upstream_ms = served
        .and_then(|s| s.upstream)
        .map(|d| d.as_secs_f64() * 1e3);
    tracing::info!(
        target: "usher::access",
        method = %method,
        path,
        status = status.as_u16(),
        backend,
        affinity = outcome,
        total_ms = total.as_secs_f64() * 1e3,
        upstream_ms,
        request_id,
        "request"
    );
}
