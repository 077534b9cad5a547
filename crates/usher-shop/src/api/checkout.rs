//! Checkout and order history: where session state (the cart) becomes durable data (an order).
//!
//! Checkout reads the cart as this request loaded it, writes the order to the database, then
//! takes the ordered quantities out of the cart ([`super::cart::settle`]). The order is written
//! first: if the database is down nothing changed and the client may retry (503); if the session
//! store fails after the order is written, the order stands and is returned, and the cart keeps
//! its items (logged) — a cart a retry can see is better than an order the client never hears of.
//!
//! The route is built on its own ([`router`]) so that the Idempotency-Key layer wraps exactly it
//! (see [`super::idempotent`]). In jwt mode the cart is rows in the database and checkout is one
//! transaction instead ([`super::rows::checkout`]).

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use serde_json::{Value, json};
use usher_session::Session;

use super::cart;
use crate::db::{Order, OrderLine};
use crate::error::{ApiError, chain};
use crate::state::{AppState, require_user, unix_now};

/// Orders `GET /api/orders` returns at most (newest first).
pub const ORDERS_LIMIT: u32 = 500;

/// The checkout route alone, for a layer (idempotency) to wrap.
pub fn router() -> Router<AppState> {
    Router::new().route("/api/checkout", post(checkout))
}

/// The order history route.
pub fn orders_router() -> Router<AppState> {
    Router::new().route("/api/orders", get(orders))
}

/// Places the order for the cart of the signed-in user. Shared with the pages.
pub async fn place_order(state: &AppState, session: &Session) -> Result<Order, ApiError> {
    let user = require_user(session)?;
    state.checkout_pause().await;
    let lines = cart::lines(session);
    if lines.is_empty() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "cart_empty",
            "the cart is empty",
        ));
    }
    let items = lines
        .iter()
        .map(|(p, qty)| OrderLine {
            sku: p.sku.to_owned(),
            name: p.name.to_owned(),
            qty: *qty,
            price_cents: p.price_cents,
            line_cents: p.price_cents.saturating_mul(*qty),
        })
        .collect();
    let order = state.db.insert_order(&user, items, unix_now()).await?;
    if let Err(e) = cart::settle(session, &lines).await {
        tracing::warn!(order = order.id, error = %chain(&e), "order placed but the cart could not be emptied");
    }
    tracing::debug!(order = order.id, %user, total_cents = order.total_cents, "order placed");
    Ok(order)
}

pub fn order_json(order: &Order) -> Value {
    serde_json::to_value(order).unwrap_or(Value::Null)
}

/// `POST /api/checkout` → 201 `{id, user, items, total_cents, created_at, server}`;
/// 409 `cart_empty`; 401 when not signed in.
pub async fn checkout(
    State(state): State<AppState>,
    session: Session,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let order = place_order(&state, &session).await?;
    let mut body = order_json(&order);
    body["server"] = Value::from(state.id.as_str());
    Ok((StatusCode::CREATED, Json(body)))
}

/// `GET /api/orders` → `{orders: [...], count}`, newest first, at most [`ORDERS_LIMIT`].
pub async fn orders(
    State(state): State<AppState>,
    session: Session,
) -> Result<Json<Value>, ApiError> {
    let user = require_user(&session)?;
    let orders = state.db.orders(&user, ORDERS_LIMIT).await?;
    let list: Vec<Value> = orders.iter().map(order_json).collect();
    Ok(Json(
        json!({ "count": list.len(), "orders": list, "server": state.id }),
    ))
}
