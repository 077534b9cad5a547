//! The admin API: runtime membership, draining, cookie explanation, health and metrics, on its
//! own listener (axum).
//!
//! It refuses to bind a non-loopback address without a bearer token; when a token is set every
//! request must carry `Authorization: Bearer <token>` (compared in constant time). Bodies are
//! parsed by hand from JSON so that every 400 names the field at fault.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use serde::Deserialize;
use serde_json::json;
use subtle::ConstantTimeEq;
use usher_balancer::{BackendId, OpenError};

use crate::Lb;
use crate::affinity::unix_now;
use crate::config::{BackendAddr, BackendConfig};
use crate::pool::PoolError;

/// The admin listener cannot be started as configured.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// Non-loopback address without a token.
    #[error(
        "admin.listen {0} is not a loopback address: set an admin token (admin.token_file or \
         USHER_ADMIN_TOKEN) to expose the admin API"
    )]
    Exposed(SocketAddr),
}

/// Checks that an admin listener on `addr` is allowed with `token`.
pub fn check_admin_bind(addr: SocketAddr, token: Option<&str>) -> Result<(), AdminError> {
    if addr.ip().is_loopback() || token.is_some_and(|t| !t.is_empty()) {
        Ok(())
    } else {
        Err(AdminError::Exposed(addr))
    }
}

#[derive(Clone)]
struct AdminState {
    lb: Arc<Lb>,
    token: Option<Arc<str>>,
}

/// Serves the admin API on an already-bound listener until `shutdown` resolves.
pub async fn serve_admin(
    listener: tokio::net::TcpListener,
    lb: Arc<Lb>,
    token: Option<String>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, admin_router(lb, token, Router::new()))
        .with_graceful_shutdown(shutdown)
        .await
}

/// The admin API as a router, for a process that serves more on the same listener (`usher up`
/// adds its dashboard). `extra`'s routes are merged in *before* the bearer-token check is
/// layered on, so a token, when set, guards them as well; `extra` must not set a fallback (the
/// admin API's JSON 404 is the fallback) and must not reuse an admin path.
pub fn admin_router(lb: Arc<Lb>, token: Option<String>, extra: Router) -> Router {
    let state = AdminState {
        lb,
        token: token.filter(|t| !t.is_empty()).map(Arc::from),
    };
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/metrics", get(metrics))
        .route("/backends", get(list_backends))
        .route("/backends/{id}", put(upsert_backend).delete(delete_backend))
        .route("/backends/{id}/drain", post(drain_backend))
        .route("/backends/{id}/activate", post(activate_backend))
        .route("/affinity/explain", post(explain))
        .route("/reload", post(reload))
        .with_state(state.clone())
        .merge(extra)
        .fallback(|| async { error(StatusCode::NOT_FOUND, "no such admin endpoint") })
        .layer(middleware::from_fn_with_state(state, authorize))
}

async fn authorize(State(s): State<AdminState>, req: Request, next: Next) -> Response {
    if let Some(token) = &s.token {
        let given = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        if !bool::from(given.as_bytes().ct_eq(token.as_bytes())) {
            let mut res = error(StatusCode::UNAUTHORIZED, "missing or wrong bearer token");
            res.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer"),
            );
            return res;
        }
    }
    next.run(req).await
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    ApiError(status, message.into()).into_response()
}

/// A failed admin request: status and a message naming what is wrong.
struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, axum::Json(json!({ "error": self.1 }))).into_response()
    }
}

impl From<PoolError> for ApiError {
    fn from(e: PoolError) -> Self {
        match e {
            PoolError::Unknown(id) => Self(StatusCode::NOT_FOUND, format!("no backend {id}")),
            PoolError::Addr(e) => Self(StatusCode::BAD_REQUEST, format!("addr: {e}")),
        }
    }
}

type ApiResult = Result<Response, ApiError>;

fn parse_id(id: &str) -> Result<BackendId, ApiError> {
    id.parse()
        .map_err(|e| ApiError(StatusCode::BAD_REQUEST, format!("id: {e}")))
}

/// Parses a JSON body; the error names the field at fault (`deadline: invalid value …`).
fn parse_body<T: for<'de> Deserialize<'de>>(body: &Bytes) -> Result<T, ApiError> {
    let de = &mut serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let msg = if path == "." {
            format!("invalid body: {}", e.inner())
        } else {
            format!("invalid body: {path}: {}", e.inner())
        };
        ApiError(StatusCode::BAD_REQUEST, msg)
    })
}

async fn list_backends(State(s): State<AdminState>) -> Response {
    let now = s.lb.pool.now_ms();
    let window = millis(s.lb.config().cookie.idle_timeout);
    let list: Vec<_> =
        s.lb.pool
            .snapshot()
            .slots
            .iter()
            .map(|b| {
                json!({
                    "id": b.id.as_str(),
                    "addr": b.addr.to_string(),
                    "state": b.state(now).as_str(),
                    "weight": b.weight(),
                    "healthy": b.healthy(now),
                    "inflight": b.inflight(),
                    "requests": b.requests(),
                    "pinned_clients": b.pinned_clients(now, window),
                "open_tunnels": b.open_tunnels(),
                })
            })
            .collect();
    axum::Json(list).into_response()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UpsertBody {
    addr: String,
    #[serde(default = "one")]
    weight: u32,
}

fn one() -> u32 {
    1
}

async fn upsert_backend(
    State(s): State<AdminState>,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult {
    let id = parse_id(&id)?;
    let body: UpsertBody = parse_body(&body)?;
    let bad = |m: String| ApiError(StatusCode::BAD_REQUEST, m);
    let addr = body
        .addr
        .parse::<BackendAddr>()
        .map_err(|e| bad(format!("addr: {e}")))?
        .0;
    if !(1..=1000).contains(&body.weight) {
        return Err(bad(format!("weight: must be 1-1000, got {}", body.weight)));
    }
    let existed = s.lb.pool.snapshot().index_of(&id).is_some();
    let weight = body.weight;
    s.lb.pool.upsert(&BackendConfig {
        id: id.clone(),
        addr,
        weight,
    })?;
    let (status, verb) = if existed {
        (StatusCode::OK, "updated")
    } else {
        (StatusCode::CREATED, "added")
    };
    tracing::info!(backend = %id, %addr, weight, "backend {verb}");
    let out = json!({ "id": id.as_str(), "addr": addr.to_string(), "weight": weight });
    Ok((status, axum::Json(out)).into_response())
}

async fn delete_backend(State(s): State<AdminState>, Path(id): Path<String>) -> ApiResult {
    let id = parse_id(&id)?;
    s.lb.pool.remove(&id)?;
    tracing::info!(backend = %id, "backend removed");
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DrainBody {
    #[serde(default, with = "humantime_serde")]
    deadline: Option<Duration>,
}

async fn drain_backend(
    State(s): State<AdminState>,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult {
    let id = parse_id(&id)?;
    let body: DrainBody = if body.iter().all(u8::is_ascii_whitespace) {
        DrainBody { deadline: None }
    } else {
        parse_body(&body)?
    };
    let deadline = body.deadline.unwrap_or(Duration::from_secs(30));
    s.lb.pool.drain(&id, deadline)?;
    let deadline = humantime::format_duration(deadline).to_string();
    let out = json!({ "id": id.as_str(), "state": "draining", "deadline": deadline });
    Ok(axum::Json(out).into_response())
}

async fn activate_backend(State(s): State<AdminState>, Path(id): Path<String>) -> ApiResult {
    let id = parse_id(&id)?;
    s.lb.pool.activate(&id)?;
    Ok(axum::Json(json!({ "id": id.as_str(), "state": "active" })).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ExplainBody {
    cookie: String,
}

async fn explain(State(s): State<AdminState>, body: Bytes) -> ApiResult {
    let body: ExplainBody = parse_body(&body)?;
    // Accept the bare token or a `name=token` pair as copied from a browser.
    let token = body.cookie.trim();
    let token = token
        .split_once('=')
        .map_or(token, |(_, v)| v)
        .trim_matches('"');
    let view = |c: &usher_balancer::Claims| {
        json!({
            "backend": c.backend.as_str(),
            "issued_at": c.issued_at,
            "idle_expires_at": c.idle_expires_at,
            "expires_at": c.expires_at,
        })
    };
    let out = match s.lb.live().affinity.explain(token, unix_now()) {
        Ok((claims, key_id)) => {
            let mut v = view(&claims);
            v["valid"] = json!(true);
            v["key_id"] = json!(key_id);
            v
        }
        Err(OpenError::Expired { at, claims }) => {
            let mut v = view(&claims);
            v["valid"] = json!(false);
            v["reason"] = json!(format!("expired at {at}"));
            v
        }
        Err(e) => json!({ "valid": false, "reason": e.to_string() }),
    };
    Ok(axum::Json(out).into_response())
}

async fn reload(State(s): State<AdminState>) -> ApiResult {
    // Reading files is blocking work: keep it off the async workers.
    let lb = Arc::clone(&s.lb);
    let result = tokio::task::spawn_blocking(move || lb.reload_from_source())
        .await
        .map_err(|e| {
            ApiError(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("reload task: {e}"),
            )
        })?;
    match result {
        Ok(warnings) => {
            Ok(axum::Json(json!({ "reloaded": true, "warnings": warnings })).into_response())
        }
        Err(e) => {
            tracing::error!(error = %e, "reload failed; the previous configuration stays in force");
            Err(ApiError(StatusCode::BAD_REQUEST, e))
        }
    }
}

async fn metrics(State(s): State<AdminState>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        crate::metrics::render(&s.lb),
    )
        .into_response()
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX / 4)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    fn test_lb() -> Arc<Lb> {
        let backend = crate::BackendSection {
            id: "b0".parse().unwrap(),
            addr: "127.0.0.1:9".parse().unwrap(),
            weight: None,
        };
        let raw = crate::FileConfig {
            backends: vec![toml::Spanned::new(0..0, backend)],
            ..crate::FileConfig::default()
        };
        let config = crate::LbConfig::from_raw(raw, None).unwrap();
        let keys = crate::load_keys(None, false).unwrap();
        Lb::new(config, keys).unwrap()
    }

    /// Status code of `GET path` on a fresh connection, with `auth` as the Authorization value.
    async fn status(addr: SocketAddr, path: &str, auth: Option<&str>) -> u16 {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        let auth = auth.map_or(String::new(), |a| format!("Authorization: {a}\r\n"));
        let req = format!("GET {path} HTTP/1.1\r\nHost: x\r\n{auth}Connection: close\r\n\r\n");
        s.write_all(req.as_bytes()).await.unwrap();
        let mut out = Vec::new();
        tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out))
            .await
            .unwrap()
            .unwrap();
        let text = String::from_utf8_lossy(&out);
        text.split_whitespace().nth(1).unwrap().parse().unwrap()
    }

    #[tokio::test]
    async fn the_token_guards_merged_routes_too() {
        let extra = Router::new().route("/extra", get(|| async { "extra" }));
        let app = admin_router(test_lb(), Some("s3cret".to_owned()), extra);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move { axum::serve(listener, app).await });
        assert_eq!(status(addr, "/extra", None).await, 401);
        assert_eq!(status(addr, "/extra", Some("Bearer nope")).await, 401);
        assert_eq!(status(addr, "/extra", Some("Bearer s3cret")).await, 200);
        assert_eq!(status(addr, "/healthz", Some("Bearer s3cret")).await, 200);
        // The admin API's JSON 404 stays the fallback, behind the token as well.
        assert_eq!(status(addr, "/nope", None).await, 401);
        assert_eq!(status(addr, "/nope", Some("Bearer s3cret")).await, 404);
        server.abort();
    }
}
