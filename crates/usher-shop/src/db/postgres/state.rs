//! PostgreSQL statements for per-user state (see `db/state.rs`). Changes are single upserts;
//! checkout locks the user's cart rows (`SELECT … FOR UPDATE`) in the transaction that writes the
//! order, so a parallel checkout waits and then finds the lines gone, and a parallel add to a
//! locked line lands after the checkout instead of being deleted with it.

use super::PgDb;
use crate::db::state::{PrefsRow, Pricer, price_lines};
use crate::db::{DbError, Order};

fn err(e: tokio_postgres::Error) -> DbError {
    DbError::unavailable(e)
}

impl PgDb {
    pub(crate) async fn cart_add(
        &self,
        user: &str,
        sku: &str,
        qty: i64,
        max_line: i64,
    ) -> Result<Option<i64>, DbError> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(
                "INSERT INTO shop_cart_lines (user_name, sku, qty) VALUES ($1, $2, $3)
                 ON CONFLICT (user_name, sku) DO UPDATE
                     SET qty = shop_cart_lines.qty + excluded.qty
                     WHERE shop_cart_lines.qty + excluded.qty <= $4
                 RETURNING qty",
            )
            .await
            .map_err(err)?;
        let row = client
            .query_opt(&stmt, &[&user, &sku, &qty, &max_line])
            .await
            .map_err(err)?;
        row.map(|r| r.try_get(0)).transpose().map_err(err)
    }

    pub(crate) async fn cart_remove(&self, user: &str, sku: &str) -> Result<(), DbError> {
        let client = self.client().await?;
        client
            .execute(
                "DELETE FROM shop_cart_lines WHERE user_name = $1 AND sku = $2",
                &[&user, &sku],
            )
            .await
            .map(drop)
            .map_err(err)
    }

    pub(crate) async fn cart(&self, user: &str) -> Result<Vec<(String, i64)>, DbError> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT sku, qty FROM shop_cart_lines WHERE user_name = $1 AND qty > 0
                 ORDER BY sku",
                &[&user],
            )
            .await
            .map_err(err)?;
        rows.iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
            .collect::<Result<Vec<_>, tokio_postgres::Error>>()
            .map_err(err)
    }

    pub(crate) async fn checkout_cart(
        &self,
        user: &str,
        price: Pricer,
        now: i64,
    ) -> Result<Option<Order>, DbError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(err)?;
        let rows = tx
            .query(
                "SELECT sku, qty FROM shop_cart_lines WHERE user_name = $1 AND qty > 0
                 ORDER BY sku FOR UPDATE",
                &[&user],
            )
            .await
            .map_err(err)?;
        let lines = rows
            .iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
            .collect::<Result<Vec<(String, i64)>, tokio_postgres::Error>>()
            .map_err(err)?;
        let mut order = price_lines(user, &lines, price, now);
        if order.items.is_empty() {
            return Ok(None); // dropping the transaction rolls it back
        }
        let items = serde_json::to_string(&order.items).map_err(DbError::unavailable)?;
        let row = tx
            .query_one(
                "INSERT INTO shop_orders (user_name, items, total_cents, created_at)
                 VALUES ($1, $2, $3, $4) RETURNING id",
                &[&user, &items, &order.total_cents, &now],
            )
            .await
            .map_err(err)?;
        order.id = row.try_get(0).map_err(err)?;
        let skus: Vec<&str> = lines.iter().map(|(s, _)| s.as_str()).collect();
        tx.execute(
            "DELETE FROM shop_cart_lines WHERE user_name = $1 AND sku = ANY($2)",
            &[&user, &skus],
        )
        .await
        .map_err(err)?;
        tx.commit().await.map_err(err)?;
        Ok(Some(order))
    }

    pub(crate) async fn prefs(&self, user: &str) -> Result<PrefsRow, DbError> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                "SELECT theme, language FROM shop_prefs WHERE user_name = $1",
                &[&user],
            )
            .await
            .map_err(err)?;
        let Some(r) = row else {
            return Ok(PrefsRow::default());
        };
        Ok(PrefsRow {
            theme: r.try_get(0).map_err(err)?,
            language: r.try_get(1).map_err(err)?,
        })
    }

    pub(crate) async fn merge_prefs(&self, user: &str, u: PrefsRow) -> Result<PrefsRow, DbError> {
        let client = self.client().await?;
        let r = client
            .query_one(
                "INSERT INTO shop_prefs (user_name, theme, language) VALUES ($1, $2, $3)
                 ON CONFLICT (user_name) DO UPDATE SET
                     theme = COALESCE(excluded.theme, shop_prefs.theme),
                     language = COALESCE(excluded.language, shop_prefs.language)
                 RETURNING theme, language",
                &[&user, &u.theme, &u.language],
            )
            .await
            .map_err(err)?;
        Ok(PrefsRow {
            theme: r.try_get(0).map_err(err)?,
            language: r.try_get(1).map_err(err)?,
        })
    }

    pub(crate) async fn progress(&self, user: &str, video: &str) -> Result<Option<f64>, DbError> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                "SELECT seconds FROM shop_progress WHERE user_name = $1 AND video = $2",
                &[&user, &video],
            )
            .await
            .map_err(err)?;
        row.map(|r| r.try_get(0)).transpose().map_err(err)
    }

    pub(crate) async fn put_progress(
        &self,
        user: &str,
        video: &str,
        seconds: f64,
        max_videos: i64,
    ) -> Result<bool, DbError> {
        let client = self.client().await?;
        let n = client
            .execute(
                "INSERT INTO shop_progress (user_name, video, seconds)
                 SELECT $1::text, $2::text, $3::float8
                 WHERE EXISTS (SELECT 1 FROM shop_progress WHERE user_name = $1 AND video = $2)
                    OR (SELECT count(*) FROM shop_progress WHERE user_name = $1) < $4::bigint
                 ON CONFLICT (user_name, video) DO UPDATE SET seconds = excluded.seconds",
                &[&user, &video, &seconds, &max_videos],
            )
            .await
            .map_err(err)?;
        Ok(n > 0)
    }
}
