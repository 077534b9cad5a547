//! `POST /api/checkout` behind the Idempotency-Key layer ([`usher_session::idempotency`]), in
//! both auth modes.
//!
//! * The key is required (400 without it) and scoped to the signed-in user: the session's user
//!   in session mode, the access token's subject in jwt mode. A request without a user is
//!   refused here with the shop's own 401 (`not_signed_in`, or `invalid_token` for a bad token)
//!   before the layer runs, so no record is ever kept for anonymous callers.
//! * Records live in the shop's session store (`--sessions`). With a shared store (SQLite,
//!   Redis, PostgreSQL) a retry that lands on another shop is recognised: 409 while the first
//!   runs, the stored answer replayed byte for byte (`Idempotent-Replayed: true`) once it is
//!   done, 422 if the key comes back with another body. **With `--sessions memory` the records
//!   are per process**, so only retries to the same shop are protected — a retry the balancer
//!   sends elsewhere runs again and can order twice. That contrast is what the lab measures.
//! * The lease (`--idempotency-lease`, default 60 s) is how long a running checkout owns its
//!   key. A shop that dies mid-checkout leaves the key `running`; once the lease ends a retry
//!   takes it over and runs. It must outlast the slowest checkout, or a slow one could be run a
//!   second time by an impatient retry.
//! * Keys are remembered for 24 h (`Idempotency-Key-Window: 86400` on every checkout answer).
//!   The layer's own answers (400, 409, 422, 503) are `application/problem+json`.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::Request;
use axum::http::request::Parts;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use usher_session::idempotency::{Anonymous, IdempotencyLayer};
use usher_session::{Session, SessionStore};

use super::body::MAX_BODY;
use crate::auth::{Caller, invalid_token};
use crate::error::ApiError;
use crate::state::AppState;

/// How long a key is remembered.
pub const WINDOW: Duration = Duration::from_secs(86_400);

/// Finds the user a key is scoped to.
pub type Principal = fn(&Parts) -> Option<String>;

/// The session's user (session mode; the session layer runs first).
pub fn session_user(parts: &Parts) -> Option<String> {
    parts.extensions.get::<Session>().and_then(Session::user)
}

/// The access token's subject (jwt mode; `authenticate` runs first).
pub fn token_user(parts: &Parts) -> Option<String> {
    parts
        .extensions
        .get::<Caller>()
        .and_then(|c| c.user().map(str::to_owned))
}

/// Wraps every route of `router` (checkout) in the idempotency layer over `store`, behind a
/// check that the caller is signed in. Also returns the layer, whose outcome writes the server
/// awaits on shutdown ([`IdempotencyLayer::flushed`]).
pub fn wrap(
    router: Router<AppState>,
    store: Arc<dyn SessionStore>,
    lease: Duration,
    principal: Principal,
) -> (Router<AppState>, IdempotencyLayer) {
    let layer = IdempotencyLayer::new(store)
        .with_principal(principal)
        .with_anonymous(Anonymous::Reject)
        .with_window(WINDOW)
        .with_lease(lease)
        .with_max_body(MAX_BODY);
    let signed_in = move |req: Request, next: Next| async move {
        let (parts, body) = req.into_parts();
        if principal(&parts).is_none() {
            let err = match parts.extensions.get::<Caller>() {
                Some(Caller::Rejected) => invalid_token(),
                _ => ApiError::not_signed_in(),
            };
            return err.into_response();
        }
        let res: Response = next.run(Request::from_parts(parts, body)).await;
        res
    };
    let handle = layer.clone();
    (
        router.layer(layer).layer(middleware::from_fn(signed_in)),
        handle,
    )
}
