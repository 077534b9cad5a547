//! The JSON API under `/api`: what the lab's virtual users drive. The routes, bodies and statuses
//! are a contract (see the crate docs); handlers keep the HTTP details and share the actual work
//! with the HTML pages through the plain functions in each module.
//!
//! Two sets of handlers serve the same routes: session mode ([`auth`], [`cart`], [`prefs`],
//! [`checkout`]; state in the session) and jwt mode ([`token`], [`rows`]; state in database
//! rows). Checkout is built apart in both so [`idempotent`] can wrap exactly it.

pub mod auth;
pub mod body;
pub mod cart;
pub mod checkout;
pub mod idempotent;
pub mod prefs;
pub mod rows;
pub mod token;

use axum::Router;
use axum::routing::{delete, get, post, put};

use crate::state::AppState;

/// Every session-mode `/api` route except checkout (all need the session layer).
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/signup", post(auth::signup))
        .route("/api/login", post(auth::login))
        .route("/api/logout", post(auth::logout))
        .route("/api/logout-everywhere", post(auth::logout_everywhere))
        .route("/api/me", get(auth::me))
        .route("/api/cart", get(cart::get_cart))
        .route("/api/cart/items", post(cart::add_item))
        .route("/api/cart/items/{sku}", delete(cart::remove_item))
        .route("/api/prefs", get(prefs::get_prefs).put(prefs::put_prefs))
        .route(
            "/api/progress/{video}",
            put(prefs::put_progress).get(prefs::get_progress),
        )
        .merge(checkout::orders_router())
}

/// Every jwt-mode `/api` route except checkout (all need [`crate::auth::authenticate`]).
pub fn jwt_router() -> Router<AppState> {
    Router::new()
        .route("/api/signup", post(auth::signup))
        .route("/api/login", post(token::login))
        .route("/api/token/refresh", post(token::refresh))
        .route("/api/logout", post(token::logout))
        .route("/api/logout-everywhere", post(token::logout_everywhere))
        .route("/api/me", get(token::me))
        .route("/api/cart", get(rows::get_cart))
        .route("/api/cart/items", post(rows::add_item))
        .route("/api/cart/items/{sku}", delete(rows::remove_item))
        .route("/api/prefs", get(rows::get_prefs).put(rows::put_prefs))
        .route(
            "/api/progress/{video}",
            put(rows::put_progress).get(rows::get_progress),
        )
        .route("/api/orders", get(rows::orders))
}

/// The jwt-mode checkout route alone, for the idempotency layer to wrap.
pub fn jwt_checkout_router() -> Router<AppState> {
    Router::new().route("/api/checkout", post(rows::checkout))
}
