//! The cart, preferences, watch progress, checkout and orders of token (`--auth jwt`) users: the
//! same routes, bodies and answers as in session mode, but the state is database rows keyed by
//! user ([`crate::db::state`](crate::db)) instead of session fields, so any shop serves any
//! request and none keeps anything between requests.
//!
//! Differences from session mode, both because a token user has no session to hold anonymous
//! state: reading the cart, preferences or progress without a valid token gives the empty or
//! default value (as a stranger's session would), and *changing* preferences or progress needs a
//! token (401), where a cookie session lets anonymous visitors keep them.

use axum::Json;
use axum::extract::rejection::PathRejection;
use axum::extract::{Extension, Path, State};
use axum::http::StatusCode;
use serde_json::{Map, Value, json};

use super::body::ApiJson;
use super::cart::{AddItem, cart_json, check_add, line_full, unknown_sku};
use super::checkout::{ORDERS_LIMIT, order_json};
use super::prefs::{
    MAX_VIDEOS, Prefs, PrefsUpdate, Progress, check_seconds, too_many_videos, video_id,
};
use crate::auth::Caller;
use crate::catalogue::{self, PRODUCTS, Product};
use crate::db::{Added, Order, OrderLine, PrefsRow};
use crate::error::ApiError;
use crate::state::{AppState, unix_now};

/// Prices a cart line from the catalogue at checkout.
fn price(sku: &str, qty: i64) -> Option<OrderLine> {
    let p = catalogue::find(sku)?;
    Some(OrderLine {
        sku: p.sku.to_owned(),
        name: p.name.to_owned(),
        qty,
        price_cents: p.price_cents,
        line_cents: p.price_cents.saturating_mul(qty),
    })
}

/// `(sku, qty)` rows as catalogue lines, in catalogue order (as session mode shows them).
fn lines(rows: &[(String, i64)]) -> Vec<(&'static Product, i64)> {
    PRODUCTS
        .iter()
        .filter_map(|p| {
            let qty = rows.iter().find(|(s, _)| s == p.sku).map(|(_, q)| *q)?;
            (qty > 0).then_some((p, qty))
        })
        .collect()
}

/// `GET /api/cart`: the user's cart, or an empty one without a valid token.
pub async fn get_cart(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
) -> Result<Json<Value>, ApiError> {
    let rows = match caller.user() {
        Some(user) => state.db.cart(user).await?,
        None => Vec::new(),
    };
    let mut body = cart_json(&lines(&rows));
    body["server"] = Value::from(state.id.as_str());
    Ok(Json(body))
}

/// `POST /api/cart/items {sku, qty}` → `{sku, qty}` (the line's new quantity), one atomic
/// upsert.
pub async fn add_item(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiJson(item): ApiJson<AddItem>,
) -> Result<Json<Value>, ApiError> {
    let user = caller.require()?;
    let product = check_add(&item.sku, item.qty)?;
    match state
        .db
        .cart_add(&user, product.sku, item.qty, super::cart::MAX_LINE)
        .await?
    {
        Added::Qty(qty) => Ok(Json(
            json!({ "sku": item.sku, "qty": qty, "server": state.id }),
        )),
        Added::LineFull => Err(line_full()),
    }
}

/// `DELETE /api/cart/items/{sku}` → `{sku, qty: 0}`; 404 `unknown_sku`.
pub async fn remove_item(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    sku: Result<Path<String>, PathRejection>,
) -> Result<Json<Value>, ApiError> {
    let Path(sku) = sku.map_err(|e| ApiError::bad_request("bad_path", e.body_text()))?;
    let user = caller.require()?;
    let product = catalogue::find(&sku).ok_or_else(|| unknown_sku(&sku, StatusCode::NOT_FOUND))?;
    state.db.cart_remove(&user, product.sku).await?;
    Ok(Json(json!({ "sku": sku, "qty": 0, "server": state.id })))
}

fn prefs_of(row: PrefsRow) -> Prefs {
    let mut m = Map::new();
    if let Some(t) = row.theme {
        m.insert("theme".into(), Value::from(t));
    }
    if let Some(l) = row.language {
        m.insert("language".into(), Value::from(l));
    }
    // A value this build does not know counts as the default, as in session mode.
    serde_json::from_value(Value::Object(m)).unwrap_or_default()
}

fn as_text<T: serde::Serialize>(v: Option<T>) -> Option<String> {
    v.and_then(|v| serde_json::to_value(v).ok())
        .and_then(|v| v.as_str().map(str::to_owned))
}

/// `GET /api/prefs` → `{theme, language}` (defaults without a valid token).
pub async fn get_prefs(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
) -> Result<Json<Prefs>, ApiError> {
    let row = match caller.user() {
        Some(user) => state.db.prefs(user).await?,
        None => PrefsRow::default(),
    };
    Ok(Json(prefs_of(row)))
}

/// `PUT /api/prefs {theme?, language?}` → `{theme, language}`; one upsert.
pub async fn put_prefs(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiJson(update): ApiJson<PrefsUpdate>,
) -> Result<Json<Prefs>, ApiError> {
    let user = caller.require()?;
    if update.theme.is_none() && update.language.is_none() {
        return Err(ApiError::invalid(
            "invalid_body",
            "give at least one of theme, language",
        ));
    }
    let row = PrefsRow {
        theme: as_text(update.theme),
        language: as_text(update.language),
    };
    Ok(Json(prefs_of(state.db.merge_prefs(&user, row).await?)))
}

/// `PUT /api/progress/{video} {seconds}` → `{video, seconds}`.
pub async fn put_progress(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    video: Result<Path<String>, PathRejection>,
    ApiJson(p): ApiJson<Progress>,
) -> Result<Json<Value>, ApiError> {
    let video = video_id(video)?;
    let user = caller.require()?;
    check_seconds(p.seconds)?;
    if !state
        .db
        .put_progress(&user, &video, p.seconds, MAX_VIDEOS)
        .await?
    {
        return Err(too_many_videos());
    }
    Ok(Json(
        json!({ "video": video, "seconds": p.seconds, "server": state.id }),
    ))
}

/// `GET /api/progress/{video}` → `{video, seconds}` (0 if never watched).
pub async fn get_progress(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    video: Result<Path<String>, PathRejection>,
) -> Result<Json<Value>, ApiError> {
    let video = video_id(video)?;
    let seconds = match caller.user() {
        Some(user) => state.db.progress(user, &video).await?.unwrap_or(0.0),
        None => 0.0,
    };
    Ok(Json(json!({ "video": video, "seconds": seconds })))
}

/// Places the order in one database transaction (cart read, order written, lines removed).
pub async fn place_order(state: &AppState, user: &str) -> Result<Order, ApiError> {
    state.checkout_pause().await;
    let order = state
        .db
        .checkout_cart(user, price, unix_now())
        .await?
        .ok_or_else(|| ApiError::new(StatusCode::CONFLICT, "cart_empty", "the cart is empty"))?;
    tracing::debug!(order = order.id, %user, total_cents = order.total_cents, "order placed");
    Ok(order)
}

/// `POST /api/checkout` → 201 `{id, user, items, total_cents, created_at, server}`; 409
/// `cart_empty`; 401.
pub async fn checkout(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let user = caller.require()?;
    let order = place_order(&state, &user).await?;
    let mut body = order_json(&order);
    body["server"] = Value::from(state.id.as_str());
    Ok((StatusCode::CREATED, Json(body)))
}

/// `GET /api/orders` → `{orders, count}`, newest first.
pub async fn orders(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
) -> Result<Json<Value>, ApiError> {
    let user = caller.require()?;
    let orders = state.db.orders(&user, ORDERS_LIMIT).await?;
    let list: Vec<Value> = orders.iter().map(order_json).collect();
    Ok(Json(
        json!({ "count": list.len(), "orders": list, "server": state.id }),
    ))
}
