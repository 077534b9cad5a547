//! The cart: session state, one session field per product line.
//!
//! Each line is its own field, `cart:<sku>`, holding an integer quantity, so "add to cart" is one
//! atomic [`FieldOp::Increment`] in the store: two tabs adding at the same moment both land,
//! whichever store is behind the session. (A single `cart` object would need an increment of a
//! key *inside* a field, which `FieldOp` cannot express — `Merge` replaces values — and a
//! read-modify-write would lose one of two parallel adds.)
//!
//! Quantities only ever change by increments, which commute, so no interleaving loses an add.
//! Checkout subtracts what it ordered rather than clearing the cart (see [`settle`]), so an item
//! added while a checkout runs stays in the cart. A line at 0 or below is shown as absent.
//!
//! Reading the cart is anonymous (a stranger's cart is simply empty — which is what a user whose
//! session this shop does not know sees); changing it requires signing in.

use axum::Json;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};
use usher_session::{FieldOp, Session, SessionError};

use super::body::ApiJson;
use crate::catalogue::{self, PRODUCTS, Product};
use crate::error::ApiError;
use crate::state::{AppState, require_user};

/// Session field prefix of cart lines.
pub const FIELD_PREFIX: &str = "cart:";
/// Most units one request may add.
pub const MAX_ADD: i64 = 100;
/// Most units of one product in a cart.
pub const MAX_LINE: i64 = 1000;

/// The session field of `sku`'s line.
pub fn field(sku: &str) -> String {
    format!("{FIELD_PREFIX}{sku}")
}

/// The cart's lines (quantity > 0), in catalogue order, as this request sees the session.
pub fn lines(session: &Session) -> Vec<(&'static Product, i64)> {
    let data = session.snapshot();
    PRODUCTS
        .iter()
        .filter_map(|p| {
            let qty = data.get(&field(p.sku)).and_then(Value::as_i64)?;
            (qty > 0).then_some((p, qty))
        })
        .collect()
}

/// `{items: [{sku, name, qty, price_cents, line_cents}], count, total_cents}`.
pub fn cart_json(lines: &[(&'static Product, i64)]) -> Value {
    let items: Vec<Value> = lines
        .iter()
        .map(|(p, qty)| {
            json!({
                "sku": p.sku,
                "name": p.name,
                "qty": qty,
                "price_cents": p.price_cents,
                "line_cents": p.price_cents.saturating_mul(*qty),
            })
        })
        .collect();
    let count: i64 = lines.iter().map(|(_, q)| q).sum();
    let total: i64 = lines
        .iter()
        .map(|(p, q)| p.price_cents.saturating_mul(*q))
        .sum();
    json!({ "items": items, "count": count, "total_cents": total })
}

/// `GET /api/cart`.
pub async fn get_cart(State(state): State<AppState>, session: Session) -> Json<Value> {
    let mut body = cart_json(&lines(&session));
    body["server"] = Value::from(state.id.as_str());
    Json(body)
}

/// `{sku, qty}` for adding.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddItem {
    /// Product id.
    pub sku: String,
    /// Units to add: 1 to [`MAX_ADD`].
    pub qty: i64,
}

/// Adds `qty` of `sku` atomically; returns the line's new quantity. Shared with the pages.
pub async fn add(session: &Session, sku: &str, qty: i64) -> Result<i64, ApiError> {
    require_user(session)?;
    let product = check_add(sku, qty)?;
    let field = field(product.sku);
    let now = increment(session, &field, qty).await?;
    if now > MAX_LINE {
        // Undo our own increment; concurrent adds are unaffected since increments commute.
        increment(session, &field, -qty).await?;
        return Err(line_full());
    }
    Ok(now)
}

/// The product to add `qty` of, or 422 `unknown_sku` / `invalid_qty`. Shared with jwt mode.
pub fn check_add(sku: &str, qty: i64) -> Result<&'static Product, ApiError> {
    let product =
        catalogue::find(sku).ok_or_else(|| unknown_sku(sku, StatusCode::UNPROCESSABLE_ENTITY))?;
    if !(1..=MAX_ADD).contains(&qty) {
        return Err(ApiError::invalid(
            "invalid_qty",
            format!("qty must be an integer from 1 to {MAX_ADD}"),
        )
        .with("qty", qty));
    }
    Ok(product)
}

/// 422 `cart_line_full`.
pub fn line_full() -> ApiError {
    ApiError::invalid(
        "cart_line_full",
        format!("at most {MAX_LINE} of one product per cart"),
    )
}

async fn increment(session: &Session, field: &str, by: i64) -> Result<i64, ApiError> {
    let v = session.update(field, FieldOp::Increment(by)).await?;
    v.as_i64().ok_or_else(|| {
        ApiError::from(SessionError::Decode {
            field: field.to_owned(),
            source: serde::de::Error::custom("cart quantity is not an integer"),
        })
    })
}

pub(crate) fn unknown_sku(sku: &str, status: StatusCode) -> ApiError {
    ApiError::new(status, "unknown_sku", "no product with that sku").with("sku", sku)
}

/// `POST /api/cart/items {sku, qty}` → `{sku, qty}` (the line's new quantity).
pub async fn add_item(
    State(state): State<AppState>,
    session: Session,
    ApiJson(item): ApiJson<AddItem>,
) -> Result<Json<Value>, ApiError> {
    let qty = add(&session, &item.sku, item.qty).await?;
    Ok(Json(
        json!({ "sku": item.sku, "qty": qty, "server": state.id }),
    ))
}

/// Removes `sku`'s line. Shared with the pages.
pub async fn remove(session: &Session, sku: &str) -> Result<(), ApiError> {
    require_user(session)?;
    let product = catalogue::find(sku).ok_or_else(|| unknown_sku(sku, StatusCode::NOT_FOUND))?;
    session.update(&field(product.sku), FieldOp::Remove).await?;
    Ok(())
}

/// `DELETE /api/cart/items/{sku}` → `{sku, qty: 0}`; 404 `unknown_sku`.
pub async fn remove_item(
    State(state): State<AppState>,
    session: Session,
    sku: Result<Path<String>, PathRejection>,
) -> Result<Json<Value>, ApiError> {
    let Path(sku) = sku.map_err(|e| ApiError::bad_request("bad_path", e.body_text()))?;
    remove(&session, &sku).await?;
    Ok(Json(json!({ "sku": sku, "qty": 0, "server": state.id })))
}

/// Takes ordered `lines` out of the cart after checkout: subtracts each line's quantity, and if
/// that went below zero (another checkout of the same cart ran at the same time) adds the excess
/// back. Every step is an increment, so items added meanwhile are never lost.
pub async fn settle(
    session: &Session,
    lines: &[(&'static Product, i64)],
) -> Result<(), SessionError> {
    for (p, qty) in lines {
        let f = field(p.sku);
        let left = session.update(&f, FieldOp::Increment(-qty)).await?;
        if let Some(left) = left.as_i64().filter(|l| *l < 0) {
            session
                .update(&f, FieldOp::Increment(left.saturating_neg().min(*qty)))
                .await?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cart_json_sums_lines() {
        let mug = catalogue::find("mug").unwrap();
        let tea = catalogue::find("tea-green").unwrap();
        let v = cart_json(&[(tea, 2), (mug, 1)]);
        assert_eq!(v["count"], 3);
        assert_eq!(v["total_cents"], 2 * tea.price_cents + mug.price_cents);
        assert_eq!(v["items"][0]["sku"], "tea-green");
        assert_eq!(v["items"][0]["line_cents"], 2 * tea.price_cents);
        assert_eq!(cart_json(&[])["items"], json!([]));
    }
}
