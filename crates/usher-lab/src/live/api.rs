//! The dashboard's routes, merged into the admin listener (under its bearer-token check when one
//! is set): the page and its script, compiled into the binary so `usher up` needs no files and no
//! build step, the state it polls, and the control endpoints its buttons call.
//!
//! Every error is JSON (`{"error": "…"}`) with a 4xx for bad requests — an unknown or malformed
//! shop id, a shop that is not running, a store that has no server — and a 5xx only when a
//! process did not start or the pool refused.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::json;

use super::{ControlError, DEFAULT_DRAIN, Live};

/// Where the dashboard lives on the admin listener.
pub const PREFIX: &str = "/_usher";
/// Longest drain a request may ask for.
const MAX_DRAIN: Duration = Duration::from_secs(3600);

const PAGE: &str = include_str!("assets/index.html");
const SCRIPT: &str = include_str!("assets/dashboard.js");

/// The dashboard's routes (no fallback: the admin API's JSON 404 covers unknown paths).
pub fn router(live: Arc<Live>) -> Router {
    Router::new()
        .route("/_usher", get(|| async { Redirect::permanent("/_usher/") }))
        .route("/_usher/", get(page))
        .route("/_usher/dashboard.js", get(script))
        .route("/_usher/api/state", get(state))
        .route("/_usher/api/shops", post(add))
        .route("/_usher/api/shops/{id}/kill", post(kill))
        .route("/_usher/api/shops/{id}/drain", post(drain))
        .route("/_usher/api/store/restart", post(restart_store))
        .with_state(live)
}

/// Serves the balancer's admin API and the dashboard on one listener until `shutdown`
/// resolves. `token`, when set, is required on every request, dashboard included.
pub async fn serve(
    listener: tokio::net::TcpListener,
    live: Arc<Live>,
    token: Option<String>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = usher_proxy::admin_router(Arc::clone(live.lb()), token, router(live));
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}

async fn page() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        PAGE,
    )
        .into_response()
}

async fn script() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        SCRIPT,
    )
        .into_response()
}

async fn state(State(live): State<Arc<Live>>) -> Response {
    let view = live.state().await;
    ([(header::CACHE_CONTROL, "no-store")], axum::Json(view)).into_response()
}

/// A failed dashboard request.
struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, axum::Json(json!({ "error": self.1 }))).into_response()
    }
}

impl From<ControlError> for ApiError {
    fn from(e: ControlError) -> Self {
        let status = match &e {
            ControlError::BadId(_) => StatusCode::BAD_REQUEST,
            ControlError::UnknownShop(_) => StatusCode::NOT_FOUND,
            ControlError::NotRunning { .. }
            | ControlError::TooMany(_)
            | ControlError::NotRestartable(_) => StatusCode::CONFLICT,
            ControlError::Start { .. } | ControlError::StoreRestart(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ControlError::Pool { .. } => StatusCode::INTERNAL_SERVER_ERROR,
        };
        Self(status, with_sources(&e))
    }
}

impl From<PathRejection> for ApiError {
    fn from(e: PathRejection) -> Self {
        Self(StatusCode::BAD_REQUEST, format!("bad path: {e}"))
    }
}

/// `e: its source: its source's source…` — the whole story in one line.
fn with_sources(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut next = e.source();
    while let Some(s) = next {
        out.push_str(": ");
        out.push_str(&s.to_string());
        next = s.source();
    }
    out
}

type ApiResult = Result<Response, ApiError>;

async fn add(State(live): State<Arc<Live>>) -> ApiResult {
    let (id, addr) = live.add().await?;
    let body = json!({ "id": id, "addr": addr.to_string(), "state": "active" });
    Ok((StatusCode::CREATED, axum::Json(body)).into_response())
}

async fn kill(State(live): State<Arc<Live>>, id: Result<Path<String>, PathRejection>) -> ApiResult {
    let Path(id) = id?;
    live.kill(&id).await?;
    Ok(axum::Json(json!({ "id": id, "state": "killed" })).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DrainBody {
    /// e.g. `"10s"`; default [`DEFAULT_DRAIN`].
    deadline: Option<String>,
}

async fn drain(
    State(live): State<Arc<Live>>,
    id: Result<Path<String>, PathRejection>,
    body: Bytes,
) -> ApiResult {
    let Path(id) = id?;
    let deadline = drain_deadline(&body)?;
    live.drain(&id, deadline).await?;
    let deadline = humantime::format_duration(deadline).to_string();
    Ok(axum::Json(json!({ "id": id, "state": "draining", "deadline": deadline })).into_response())
}

/// The deadline of a drain request: an empty body means [`DEFAULT_DRAIN`].
fn drain_deadline(body: &[u8]) -> Result<Duration, ApiError> {
    let bad = |m: String| ApiError(StatusCode::BAD_REQUEST, m);
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(DEFAULT_DRAIN);
    }
    let parsed: DrainBody =
        serde_json::from_slice(body).map_err(|e| bad(format!("invalid body: {e}")))?;
    let Some(text) = parsed.deadline else {
        return Ok(DEFAULT_DRAIN);
    };
    let d = humantime::parse_duration(&text)
        .map_err(|e| bad(format!("deadline: {e} (write it like 10s or 500ms)")))?;
    if d > MAX_DRAIN {
        return Err(bad(format!("deadline: at most 1h, got {text}")));
    }
    Ok(d)
}

async fn restart_store(State(live): State<Arc<Live>>) -> ApiResult {
    let took = live.restart_store().await?;
    let took_ms = u64::try_from(took.as_millis()).unwrap_or(u64::MAX);
    Ok(axum::Json(json!({ "restarted": true, "took_ms": took_ms })).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drain_deadlines() {
        assert_eq!(drain_deadline(b"").ok(), Some(DEFAULT_DRAIN));
        assert_eq!(drain_deadline(b" \n").ok(), Some(DEFAULT_DRAIN));
        assert_eq!(drain_deadline(b"{}").ok(), Some(DEFAULT_DRAIN));
        assert_eq!(
            drain_deadline(br#"{"deadline":"2s"}"#).ok(),
            Some(Duration::from_secs(2))
        );
        for (body, needle) in [
            (&br#"{"deadline":"soon"}"#[..], "deadline"),
            (br#"{"deadline":"2h"}"#, "at most 1h"),
            (br#"{"dead":"2s"}"#, "unknown field"),
            (b"not json", "invalid body"),
        ] {
            let e = drain_deadline(body).err().unwrap();
            assert_eq!(e.0, StatusCode::BAD_REQUEST);
            assert!(e.1.contains(needle), "{}", e.1);
        }
    }

    #[test]
    fn errors_map_to_statuses_and_keep_their_sources() {
        let e = ApiError::from(ControlError::BadId("x".into()));
        assert_eq!(e.0, StatusCode::BAD_REQUEST);
        let e = ApiError::from(ControlError::UnknownShop("shop-9".into()));
        assert_eq!(e.0, StatusCode::NOT_FOUND);
        let source = std::io::Error::other("port taken");
        let e = ApiError::from(ControlError::Start {
            n: 4,
            source: Box::new(source),
        });
        assert_eq!(e.0, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(e.1, "shop-4 did not start: port taken");
    }
}
