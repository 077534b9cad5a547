//! Usher's demo web shop: the application every architecture in Usher's lab runs.
//!
//! A small but real web app — accounts, a catalogue, a cart, checkout, order history,
//! preferences and video watch progress — whose *durable* data (users, orders) lives in a
//! database (`--db`) and whose per-user state lives either in the session tier (`--sessions`,
//! [`usher_session`]; `--auth session`, the default) or, with `--auth jwt`, in database rows keyed
//! by the user named in a signed token. Which store holds that state is what makes a web tier
//! stateful or stateless: with `memory` sessions, each shop process has its own and a user routed
//! to another shop is visibly signed out (401 from `/api/me`, an empty cart); with a shared store,
//! or with tokens, any shop serves any user.
//!
//! # HTTP contract (the lab and its virtual users depend on it)
//!
//! Every response, errors included, carries `X-Served-By: <id>`. Errors are JSON
//! `{"error": "<code>", "message": "…", …}` with a 4xx status for bad input and 503 with
//! `Retry-After` when the session store or database is down.
//!
//! | route | answer |
//! |---|---|
//! | `GET /healthz` | `{status: "ok", server}` (no session, no database) |
//! | `POST /api/signup {user, password}` | 201 `{user, server}`; 409 `user_exists`; does not sign in |
//! | `POST /api/login {user, password}` | `{user, server, store, auth}` (jwt: plus `access_token, refresh_token, expires_in, token_type`); 401 `bad_credentials` |
//! | `POST /api/token/refresh {refresh_token}` | jwt only: a new pair, the old refresh token spent (body optional: else the `usher_rt` cookie); 401 `invalid_token` / `no_refresh_token` |
//! | `POST /api/logout` | `{signed_out: true, server}` (jwt: revokes the token's refresh family) |
//! | `POST /api/logout-everywhere` | `{sessions_ended, server}` (jwt: every family of the user); 401 if not signed in |
//! | `GET /api/me` | `{user, server, store, auth}` (jwt: plus `revocation`); 401 `not_signed_in` / `invalid_token` |
//! | `GET /api/cart` | `{items: [{sku, name, qty, price_cents, line_cents}], count, total_cents, server}` |
//! | `POST /api/cart/items {sku, qty}` | `{sku, qty, server}` (the line's new quantity); 401; 422 `unknown_sku` / `invalid_qty` (1..=100) / `cart_line_full` (1000) |
//! | `DELETE /api/cart/items/{sku}` | `{sku, qty: 0, server}`; 401; 404 `unknown_sku` |
//! | `GET`, `PUT /api/prefs {theme?, language?}` | `{theme: light\|dark, language: en\|de\|fr}` |
//! | `PUT /api/progress/{video} {seconds}` | `{video, seconds, server}` (`GET` reads it back) |
//! | `POST /api/checkout` + `Idempotency-Key` | 201 `{id, user, items, total_cents, created_at, server}`; 409 `cart_empty`; 401; see below |
//! | `GET /api/orders` | `{orders: [order…], count, server}`, newest first; 401 |
//! | `GET /.well-known/jwks.json` | jwt only: the public verification keys (JWKS) |
//!
//! Bodies: `Content-Type: application/json` (else 415), at most 16 KiB (else 413), UTF-8 (else
//! 400 `not_utf8`), valid JSON (else 400 `bad_json`), no unknown or missing fields and in-range
//! numbers (else 422 `invalid_body`). Unknown routes are 404 and wrong methods 405, both JSON.
//!
//! **Checkout is idempotent** ([`api::idempotent`]): `Idempotency-Key` is required (400 without
//! it) and scoped to the signed-in user; the same key while the first request runs → 409 with
//! `Retry-After`; with another body → 422; after completion → the first answer byte for byte
//! with `Idempotent-Replayed: true`. Keys are kept 24 h (`Idempotency-Key-Window: 86400`). The
//! layer's own answers are `application/problem+json`. Records live in the `--sessions` store:
//! shared stores protect retries that land on another shop, **`memory` only retries to the same
//! shop**. A shop that dies mid-checkout holds the key until `--idempotency-lease` (60 s) ends.
//!
//! `store` in `/api/me` is the session store's kind: `memory`, `sqlite`, `redis`,
//! `redis-cluster`, `redis-sentinel` or `postgres`; `auth` is `session` or `jwt`. The session
//! cookie is `usher_sid` (HttpOnly, SameSite=Lax); the load balancer's affinity cookie is a
//! different one.
//!
//! **jwt mode** ([`auth`], [`api::token`], [`api::rows`]): requests authenticate with
//! `Authorization: Bearer <access token>` or the `usher_at` cookie (HttpOnly, `Path=/`); the
//! refresh token also travels as `usher_rt` (HttpOnly, `Path=/api/token`). Access tokens last 5
//! minutes (`--jwt-access-ttl`); refresh tokens rotate on every use and a reused one revokes its
//! family. Keys come from `--jwt-keys FILE` (created if missing, safely when several shops start
//! together; `usher shop keygen` makes and rotates it). The cart, preferences and progress are
//! database rows; without a valid token they read as empty/default and cannot be changed.
//!
//! `GET /` is the same shop as server-rendered HTML with forms posting to `/login`, `/signup`,
//! `/logout`, `/cart/add`, `/cart/remove`, `/checkout` and `/prefs`. The pages use cookie
//! sessions in both auth modes.
//!
//! The library never binds: [`run`] (or [`Shop::open`] then [`Shop::serve`]) takes a bound
//! listener, so tests and the CLI choose ports.
//!
//! **Serving** is HTTP/1.1 on hyper's connection builder (not `axum::serve`, which cannot set
//! it) with a header-read timeout ([`ShopConfig::header_read_timeout`], 60 s): a connection whose
//! request head is not complete in time is closed, so a client sending its head one byte a
//! minute (slowloris) cannot hold a connection forever. hyper starts that clock whenever it waits
//! for a head, so a keep-alive connection idle that long is closed too. Shutdown is what
//! `axum::serve` does: stop accepting, let each connection finish the request it is serving
//! (idle ones close at once), wait for all of them. Upgrades (`101`) stay possible.

pub mod api;
pub mod auth;
pub mod catalogue;
pub mod config;
pub mod db;
pub mod error;
pub mod pages;
pub mod password;
pub mod sessions;
pub mod state;

use std::future::Future;
use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderName, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::json;
use usher_session::SessionStore;

pub use config::{AuthMode, DbSpec, JwtSettings, SessionsSpec, ShopConfig};
pub use error::{ApiError, ShopError};
pub use password::PasswordCost;
pub use usher_session::jwt::{Algorithm as JwtAlgorithm, RevocationCheck};

use crate::db::Db;
use crate::password::Hasher;
use crate::state::AppState;

/// The header naming the shop that served a response.
pub const SERVED_BY: HeaderName = HeaderName::from_static("x-served-by");

/// A shop with its stores open, ready to serve.
#[derive(Debug)]
pub struct Shop {
    router: Router,
    store: Arc<dyn SessionStore>,
    purge: bool,
    /// The checkout's idempotency layer: its outcome writes finish after the responses.
    idempotency: usher_session::idempotency::IdempotencyLayer,
    /// Longest wait for a whole request head.
    header_read_timeout: std::time::Duration,
}

/// How long shutdown waits for idempotency outcomes still being written.
const FLUSH_LIMIT: std::time::Duration = std::time::Duration::from_secs(5);

impl Shop {
    /// Opens the database and the session store and builds the routes. Fails (without serving)
    /// if a flag is invalid or a store cannot be reached.
    pub async fn open(config: ShopConfig) -> Result<Self, ShopError> {
        config.check()?;
        let served_by = config.served_by()?;
        let cost = config.password_cost;
        let hasher = tokio::task::spawn_blocking(move || Hasher::new(cost))
            .await
            .map_err(password::PasswordError::Task)??;
        let db = Db::open(&config.db).await.map_err(|source| ShopError::Db {
            spec: config.db.to_string(),
            source,
        })?;
        let store = sessions::open_store(&config).await?;
        let jwt = match config.auth {
            AuthMode::Session => None,
            AuthMode::Jwt => Some(Arc::new(auth::JwtAuth::open(
                &config.jwt,
                Arc::clone(&store),
                config.secure_cookie,
            )?)),
        };
        let state = AppState::new(state::Inner {
            id: config.id.clone(),
            store_kind: config.sessions.kind(),
            db,
            hasher,
            auth: config.auth,
            jwt: jwt.clone(),
            checkout_delay: config.test_checkout_delay,
        });
        let session_layer = sessions::layer(Arc::clone(&store), &config);
        let lease = config.idempotency_lease;
        let (app, idempotency) = match jwt {
            None => {
                let (checkout, idempotency) = api::idempotent::wrap(
                    api::checkout::router(),
                    Arc::clone(&store),
                    lease,
                    api::idempotent::session_user,
                );
                let app = api::router()
                    .merge(checkout)
                    .merge(pages::router())
                    .layer(session_layer);
                (app, idempotency)
            }
            Some(jwt) => {
                let (checkout, idempotency) = api::idempotent::wrap(
                    api::jwt_checkout_router(),
                    Arc::clone(&store),
                    lease,
                    api::idempotent::token_user,
                );
                let api = api::jwt_router()
                    .merge(checkout)
                    .layer(axum::middleware::from_fn(move |req, next| {
                        auth::authenticate(Arc::clone(&jwt), req, next)
                    }));
                // The HTML pages keep cookie sessions (in the shared store) in both modes.
                let app = api
                    .merge(pages::router().layer(session_layer))
                    .route("/.well-known/jwks.json", get(api::token::jwks));
                (app, idempotency)
            }
        };
        let router = Router::new()
            .route("/healthz", get(healthz))
            .merge(app)
            .fallback(|| async { ApiError::not_found() })
            .method_not_allowed_fallback(|| async { ApiError::method_not_allowed() })
            // Forms are read by axum's extractor; JSON bodies by `ApiJson`, which has its own cap.
            .layer(DefaultBodyLimit::max(api::body::MAX_BODY))
            .layer(axum::middleware::map_response(move |res: Response| {
                let v = served_by.clone();
                async move { stamp(res, v) }
            }))
            .with_state(state);
        Ok(Self {
            router,
            store,
            purge: sessions::needs_purge(&config.sessions),
            idempotency,
            header_read_timeout: config.header_read_timeout,
        })
    }

    /// The routes, e.g. to serve them with another server.
    pub fn router(&self) -> Router {
        self.router.clone()
    }

    /// Serves on `listener` until `shutdown` resolves, then finishes in-flight requests.
    pub async fn serve(
        self,
        listener: tokio::net::TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), ShopError> {
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let purge = self
            .purge
            .then(|| tokio::spawn(sessions::purge_loop(Arc::clone(&self.store), stop_rx)));
        let result = serve_http1(listener, self.router, self.header_read_timeout, shutdown)
            .await
            .map_err(ShopError::Serve);
        // Answered checkouts whose outcome is still being stored: finish them, so their keys do
        // not stay `running` until the lease ends.
        if tokio::time::timeout(FLUSH_LIMIT, self.idempotency.flushed())
            .await
            .is_err()
        {
            tracing::warn!("shutdown: idempotency outcomes still being written after 5 s");
        }
        let _ = stop_tx.send(true);
        if let Some(task) = purge {
            let _ = task.await;
        }
        result
    }
}

/// Opens the shop and serves on `listener` until `shutdown` resolves.
pub async fn run(
    listener: tokio::net::TcpListener,
    config: ShopConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ShopError> {
    Shop::open(config).await?.serve(listener, shutdown).await
}

/// Serves `router` on `listener` until `shutdown` resolves, then stops accepting, asks every
/// connection to close after the request it is serving (an idle one closes at once) and waits
/// for all of them. Each connection closes if a request head is not complete within
/// `header_read_timeout`. Never fails: accept errors are logged and retried, as `axum::serve`
/// does (after a pause unless the peer merely went away, e.g. when out of file descriptors).
async fn serve_http1(
    listener: tokio::net::TcpListener,
    router: Router,
    header_read_timeout: std::time::Duration,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use hyper_util::rt::{TokioIo, TokioTimer};
    use hyper_util::service::TowerToHyperService;

    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(header_read_timeout);
    // `true` once shutdown began; connections hold a receiver each, so `closed()` on the sender
    // resolves when the last one has ended.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) if is_connection_error(&e) => continue,
                Err(e) => {
                    tracing::error!(error = %e, "accept failed; retrying in 1 s");
                    tokio::select! {
                        () = &mut shutdown => break,
                        () = tokio::time::sleep(ACCEPT_BACKOFF) => continue,
                    }
                }
            },
        };
        let conn = builder
            .serve_connection(
                TokioIo::new(stream),
                TowerToHyperService::new(router.clone()),
            )
            .with_upgrades();
        let mut stop = stop_rx.clone();
        tokio::spawn(async move {
            let mut conn = std::pin::pin!(conn);
            let mut stopping = false;
            loop {
                tokio::select! {
                    result = conn.as_mut() => {
                        if let Err(e) = result {
                            // Header-read timeouts, resets, bad requests: the client's doing.
                            tracing::debug!(error = %e, "connection ended with an error");
                        }
                        break;
                    }
                    // Either shutdown began or the server is gone: finish and close.
                    _ = stop.wait_for(|s| *s), if !stopping => {
                        stopping = true;
                        conn.as_mut().graceful_shutdown();
                    }
                }
            }
            drop(stop);
        });
    }
    drop(listener);
    drop(stop_rx);
    let _ = stop_tx.send(true);
    stop_tx.closed().await;
    Ok(())
}

/// Pause after an accept error that is not the peer's (e.g. out of file descriptors).
const ACCEPT_BACKOFF: std::time::Duration = std::time::Duration::from_secs(1);

/// Accept errors about one connection only, retried at once.
fn is_connection_error(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::ConnectionRefused
            | std::io::ErrorKind::ConnectionAborted
            | std::io::ErrorKind::ConnectionReset
    )
}

fn stamp(mut res: Response, served_by: HeaderValue) -> Response {
    res.headers_mut().insert(SERVED_BY, served_by);
    res
}

async fn healthz(State(state): State<AppState>) -> impl IntoResponse {
    axum::Json(json!({ "status": "ok", "server": state.id }))
}
