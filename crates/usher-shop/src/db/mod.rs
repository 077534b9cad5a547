//! Durable data — users and orders — in SQLite or PostgreSQL (`--db`).
//!
//! This is what a real web tier keeps in its database even when sessions live in process memory,
//! so every architecture the lab runs shares it. With session auth, carts, sign-in state and
//! preferences are session state (see [`crate::api`]); with JWT auth there is no session, and
//! the cart, preferences and watch progress are rows here keyed by user (see `state.rs`).
//!
//! [`Db`] is an enum over the two backends rather than a trait object: there are exactly two, the
//! calls are few, and an enum keeps the async methods plain. Both backends create their schema
//! when it is missing, safely when several shops start at once, and name their tables `shop_*`
//! so they can share a database (or a SQLite file) with the session store.

mod postgres;
mod sqlite;
mod state;

use std::error::Error as StdError;

use serde::{Deserialize, Serialize};

use crate::config::DbSpec;

pub use postgres::PgDb;
pub use sqlite::SqliteDb;
pub use state::{Added, PrefsRow, Pricer};

/// One line of an order, frozen at checkout (later price changes do not alter old orders).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderLine {
    /// Product id.
    pub sku: String,
    /// Product name at checkout.
    pub name: String,
    /// Quantity.
    pub qty: i64,
    /// Unit price at checkout, cents.
    pub price_cents: i64,
    /// `qty * price_cents`.
    pub line_cents: i64,
}

/// A placed order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Order {
    /// Database id, increasing.
    pub id: i64,
    /// Who placed it.
    pub user: String,
    /// What was bought.
    pub items: Vec<OrderLine>,
    /// Sum of the lines, cents.
    pub total_cents: i64,
    /// When (Unix seconds).
    pub created_at: i64,
}

/// A database failure.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// Signing up a name that is taken.
    #[error("user already exists")]
    UserExists,
    /// The database could not be reached or refused the statement.
    #[error("database unavailable")]
    Unavailable(#[source] Box<dyn StdError + Send + Sync + 'static>),
    /// A stored order's items do not decode (written by a newer build, or damaged).
    #[error("stored order {id} is corrupt")]
    Corrupt {
        /// The order.
        id: i64,
        /// Why it did not decode.
        #[source]
        source: serde_json::Error,
    },
}

impl DbError {
    pub(crate) fn unavailable(e: impl Into<Box<dyn StdError + Send + Sync + 'static>>) -> Self {
        Self::Unavailable(e.into())
    }
}

/// The shop's database. Cheap to clone.
#[derive(Debug, Clone)]
pub enum Db {
    /// A SQLite file.
    Sqlite(SqliteDb),
    /// A PostgreSQL database.
    Postgres(PgDb),
}

impl Db {
    /// Connects (or opens the file) and creates the schema if missing.
    pub async fn open(spec: &DbSpec) -> Result<Self, DbError> {
        Ok(match spec {
            DbSpec::Sqlite(path) => Self::Sqlite(SqliteDb::open(path.clone()).await?),
            DbSpec::Postgres(url) => Self::Postgres(PgDb::connect(url).await?),
        })
    }

    /// Adds a user; [`DbError::UserExists`] if the name is taken.
    pub async fn create_user(&self, name: &str, hash: &str, now: i64) -> Result<(), DbError> {
        match self {
            Self::Sqlite(db) => db.create_user(name, hash, now).await,
            Self::Postgres(db) => db.create_user(name, hash, now).await,
        }
    }

    /// The stored password hash of `name`, if the user exists.
    pub async fn password_hash(&self, name: &str) -> Result<Option<String>, DbError> {
        match self {
            Self::Sqlite(db) => db.password_hash(name).await,
            Self::Postgres(db) => db.password_hash(name).await,
        }
    }

    /// Records an order and returns it with its id.
    pub async fn insert_order(
        &self,
        user: &str,
        items: Vec<OrderLine>,
        now: i64,
    ) -> Result<Order, DbError> {
        let total_cents = items.iter().map(|l| l.line_cents).sum();
        let json = serde_json::to_string(&items).map_err(DbError::unavailable)?;
        let id = match self {
            Self::Sqlite(db) => db.insert_order(user, &json, total_cents, now).await?,
            Self::Postgres(db) => db.insert_order(user, &json, total_cents, now).await?,
        };
        Ok(Order {
            id,
            user: user.to_owned(),
            items,
            total_cents,
            created_at: now,
        })
    }

    /// The newest `limit` orders of `user`, newest first.
    pub async fn orders(&self, user: &str, limit: u32) -> Result<Vec<Order>, DbError> {
        let rows = match self {
            Self::Sqlite(db) => db.orders(user, limit).await?,
            Self::Postgres(db) => db.orders(user, limit).await?,
        };
        rows.into_iter()
            .map(|row| {
                let items = serde_json::from_str(&row.items)
                    .map_err(|source| DbError::Corrupt { id: row.id, source })?;
                Ok(Order {
                    id: row.id,
                    user: user.to_owned(),
                    items,
                    total_cents: row.total_cents,
                    created_at: row.created_at,
                })
            })
            .collect()
    }
}

/// An order as stored: items still JSON text.
#[derive(Debug)]
pub(crate) struct OrderRow {
    pub(crate) id: i64,
    pub(crate) items: String,
    pub(crate) total_cents: i64,
    pub(crate) created_at: i64,
}
