//! Per-user state for token (JWT) users: cart lines, preferences and watch progress as rows keyed
//! by user, so that no shop process holds anything about a user between requests.
//!
//! Every change is one atomic statement (or one transaction), so parallel requests of one user —
//! two tabs adding to the cart, one changing the theme while another changes the language — all
//! land: a cart add is `INSERT … ON CONFLICT DO UPDATE SET qty = qty + excluded.qty`, never a
//! read-modify-write. Checkout reads the cart, writes the order and removes the ordered lines in
//! one transaction, so an order and its cart can never disagree, whichever shop runs it.

use super::{Db, DbError, Order, OrderLine};

/// Prices a cart line at checkout (`sku`, `qty`) → the frozen order line; `None` drops a line
/// whose product no longer exists.
pub type Pricer = fn(&str, i64) -> Option<OrderLine>;

/// The outcome of adding to a cart line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Added {
    /// The line's new quantity.
    Qty(i64),
    /// The add would take the line past the limit; nothing changed.
    LineFull,
}

/// Stored preferences; `None` where never set.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PrefsRow {
    /// `light` or `dark`.
    pub theme: Option<String>,
    /// `en`, `de` or `fr`.
    pub language: Option<String>,
}

impl Db {
    /// Adds `qty` to `user`'s `sku` line atomically unless that takes it past `max_line`.
    pub async fn cart_add(
        &self,
        user: &str,
        sku: &str,
        qty: i64,
        max_line: i64,
    ) -> Result<Added, DbError> {
        let qty = match self {
            Self::Sqlite(db) => db.cart_add(user, sku, qty, max_line).await?,
            Self::Postgres(db) => db.cart_add(user, sku, qty, max_line).await?,
        };
        Ok(qty.map_or(Added::LineFull, Added::Qty))
    }

    /// Removes `user`'s `sku` line (absent is fine).
    pub async fn cart_remove(&self, user: &str, sku: &str) -> Result<(), DbError> {
        match self {
            Self::Sqlite(db) => db.cart_remove(user, sku).await,
            Self::Postgres(db) => db.cart_remove(user, sku).await,
        }
    }

    /// `user`'s cart lines with a positive quantity, `(sku, qty)`, by sku.
    pub async fn cart(&self, user: &str) -> Result<Vec<(String, i64)>, DbError> {
        match self {
            Self::Sqlite(db) => db.cart(user).await,
            Self::Postgres(db) => db.cart(user).await,
        }
    }

    /// In one transaction: reads `user`'s cart, prices it with `price`, writes the order and
    /// removes the ordered lines. `None` if the cart is empty (nothing written).
    pub async fn checkout_cart(
        &self,
        user: &str,
        price: Pricer,
        now: i64,
    ) -> Result<Option<Order>, DbError> {
        match self {
            Self::Sqlite(db) => db.checkout_cart(user, price, now).await,
            Self::Postgres(db) => db.checkout_cart(user, price, now).await,
        }
    }

    /// `user`'s stored preferences.
    pub async fn prefs(&self, user: &str) -> Result<PrefsRow, DbError> {
        match self {
            Self::Sqlite(db) => db.prefs(user).await,
            Self::Postgres(db) => db.prefs(user).await,
        }
    }

    /// Sets the given preferences (`None` keeps the stored value) in one statement and returns
    /// the result.
    pub async fn merge_prefs(&self, user: &str, update: PrefsRow) -> Result<PrefsRow, DbError> {
        match self {
            Self::Sqlite(db) => db.merge_prefs(user, update).await,
            Self::Postgres(db) => db.merge_prefs(user, update).await,
        }
    }

    /// `user`'s position in `video`, seconds, if recorded.
    pub async fn progress(&self, user: &str, video: &str) -> Result<Option<f64>, DbError> {
        match self {
            Self::Sqlite(db) => db.progress(user, video).await,
            Self::Postgres(db) => db.progress(user, video).await,
        }
    }

    /// Records `user`'s position in `video`. `false` (nothing written) if it is a new video and
    /// the user already has `max_videos`.
    pub async fn put_progress(
        &self,
        user: &str,
        video: &str,
        seconds: f64,
        max_videos: usize,
    ) -> Result<bool, DbError> {
        let max = i64::try_from(max_videos).unwrap_or(i64::MAX);
        match self {
            Self::Sqlite(db) => db.put_progress(user, video, seconds, max).await,
            Self::Postgres(db) => db.put_progress(user, video, seconds, max).await,
        }
    }
}

/// Builds the order from priced lines (shared by both backends).
pub(crate) fn price_lines(user: &str, lines: &[(String, i64)], price: Pricer, now: i64) -> Order {
    let items: Vec<OrderLine> = lines
        .iter()
        .filter_map(|(sku, qty)| price(sku, *qty))
        .collect();
    Order {
        id: 0,
        user: user.to_owned(),
        total_cents: items.iter().map(|l| l.line_cents).sum(),
        items,
        created_at: now,
    }
}
