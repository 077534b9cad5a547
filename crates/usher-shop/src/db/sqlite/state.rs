//! SQLite statements for per-user state (see `db/state.rs`). Each change is one statement or one
//! `BEGIN IMMEDIATE` transaction (the write lock taken before any read), so shops sharing the
//! file serialize on it and nothing is lost between a read and a write.

use rusqlite::{OptionalExtension as _, TransactionBehavior, params};

use super::{SqliteDb, unavailable};
use crate::db::state::{PrefsRow, Pricer, price_lines};
use crate::db::{DbError, Order};

impl SqliteDb {
    pub(crate) async fn cart_add(
        &self,
        user: &str,
        sku: &str,
        qty: i64,
        max_line: i64,
    ) -> Result<Option<i64>, DbError> {
        let (user, sku) = (user.to_owned(), sku.to_owned());
        self.run(move |conn| {
            // The WHERE refuses an update past the limit: no row is returned, nothing changes.
            conn.prepare_cached(
                "INSERT INTO shop_cart_lines (user_name, sku, qty) VALUES (?1, ?2, ?3)
                 ON CONFLICT (user_name, sku) DO UPDATE SET qty = qty + excluded.qty
                 WHERE qty + excluded.qty <= ?4
                 RETURNING qty",
            )
            .and_then(|mut s| {
                s.query_row(params![user, sku, qty, max_line], |r| r.get(0))
                    .optional()
            })
            .map_err(unavailable)
        })
        .await
    }

    pub(crate) async fn cart_remove(&self, user: &str, sku: &str) -> Result<(), DbError> {
        let (user, sku) = (user.to_owned(), sku.to_owned());
        self.run(move |conn| {
            conn.execute(
                "DELETE FROM shop_cart_lines WHERE user_name = ?1 AND sku = ?2",
                params![user, sku],
            )
            .map(drop)
            .map_err(unavailable)
        })
        .await
    }

    pub(crate) async fn cart(&self, user: &str) -> Result<Vec<(String, i64)>, DbError> {
        let user = user.to_owned();
        self.run(move |conn| cart_lines(conn, &user)).await
    }

    pub(crate) async fn checkout_cart(
        &self,
        user: &str,
        price: Pricer,
        now: i64,
    ) -> Result<Option<Order>, DbError> {
        let user = user.to_owned();
        self.run(move |conn| {
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(unavailable)?;
            let lines = cart_lines(&tx, &user)?;
            let mut order = price_lines(&user, &lines, price, now);
            if order.items.is_empty() {
                return Ok(None);
            }
            let items = serde_json::to_string(&order.items).map_err(DbError::unavailable)?;
            tx.execute(
                "INSERT INTO shop_orders (user_name, items, total_cents, created_at)
                 VALUES (?1, ?2, ?3, ?4)",
                params![user, items, order.total_cents, now],
            )
            .map_err(unavailable)?;
            order.id = tx.last_insert_rowid();
            for (sku, _) in &lines {
                tx.execute(
                    "DELETE FROM shop_cart_lines WHERE user_name = ?1 AND sku = ?2",
                    params![user, sku],
                )
                .map_err(unavailable)?;
            }
            tx.commit().map_err(unavailable)?;
            Ok(Some(order))
        })
        .await
    }

    pub(crate) async fn prefs(&self, user: &str) -> Result<PrefsRow, DbError> {
        let user = user.to_owned();
        self.run(move |conn| {
            conn.prepare_cached("SELECT theme, language FROM shop_prefs WHERE user_name = ?1")
                .and_then(|mut s| {
                    s.query_row([user], |r| {
                        Ok(PrefsRow {
                            theme: r.get(0)?,
                            language: r.get(1)?,
                        })
                    })
                    .optional()
                })
                .map(Option::unwrap_or_default)
                .map_err(unavailable)
        })
        .await
    }

    pub(crate) async fn merge_prefs(&self, user: &str, u: PrefsRow) -> Result<PrefsRow, DbError> {
        let user = user.to_owned();
        self.run(move |conn| {
            conn.prepare_cached(
                "INSERT INTO shop_prefs (user_name, theme, language) VALUES (?1, ?2, ?3)
                 ON CONFLICT (user_name) DO UPDATE SET
                     theme = COALESCE(excluded.theme, theme),
                     language = COALESCE(excluded.language, language)
                 RETURNING theme, language",
            )
            .and_then(|mut s| {
                s.query_row(params![user, u.theme, u.language], |r| {
                    Ok(PrefsRow {
                        theme: r.get(0)?,
                        language: r.get(1)?,
                    })
                })
            })
            .map_err(unavailable)
        })
        .await
    }

    pub(crate) async fn progress(&self, user: &str, video: &str) -> Result<Option<f64>, DbError> {
        let (user, video) = (user.to_owned(), video.to_owned());
        self.run(move |conn| {
            conn.prepare_cached(
                "SELECT seconds FROM shop_progress WHERE user_name = ?1 AND video = ?2",
            )
            .and_then(|mut s| s.query_row([user, video], |r| r.get(0)).optional())
            .map_err(unavailable)
        })
        .await
    }

    pub(crate) async fn put_progress(
        &self,
        user: &str,
        video: &str,
        seconds: f64,
        max_videos: i64,
    ) -> Result<bool, DbError> {
        let (user, video) = (user.to_owned(), video.to_owned());
        self.run(move |conn| {
            // A new video is only inserted while the user has fewer than `max_videos`.
            let n = conn
                .execute(
                    "INSERT INTO shop_progress (user_name, video, seconds)
                     SELECT ?1, ?2, ?3
                     WHERE EXISTS (SELECT 1 FROM shop_progress WHERE user_name = ?1 AND video = ?2)
                        OR (SELECT count(*) FROM shop_progress WHERE user_name = ?1) < ?4
                     ON CONFLICT (user_name, video) DO UPDATE SET seconds = excluded.seconds",
                    params![user, video, seconds, max_videos],
                )
                .map_err(unavailable)?;
            Ok(n > 0)
        })
        .await
    }
}

fn cart_lines(conn: &rusqlite::Connection, user: &str) -> Result<Vec<(String, i64)>, DbError> {
    let mut stmt = conn
        .prepare_cached(
            "SELECT sku, qty FROM shop_cart_lines WHERE user_name = ?1 AND qty > 0 ORDER BY sku",
        )
        .map_err(unavailable)?;
    let rows = stmt
        .query_map([user], |r| Ok((r.get(0)?, r.get(1)?)))
        .map_err(unavailable)?;
    rows.collect::<Result<Vec<_>, _>>().map_err(unavailable)
}

#[cfg(test)]
mod tests {
    use crate::db::{Added, Db, OrderLine, PrefsRow};

    fn price(sku: &str, qty: i64) -> Option<OrderLine> {
        (sku != "gone").then(|| OrderLine {
            sku: sku.to_owned(),
            name: sku.to_owned(),
            qty,
            price_cents: 10,
            line_cents: qty * 10,
        })
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn parallel_adds_from_two_handles_lose_nothing_and_checkout_is_one_transaction() {
        let dir = tempfile::tempdir().unwrap();
        let spec = crate::config::DbSpec::Sqlite(dir.path().join("shop.db"));
        let (a, b) = (
            Db::open(&spec).await.unwrap(),
            Db::open(&spec).await.unwrap(),
        );
        a.create_user("ann", "h", 1).await.unwrap();
        let mut tasks = Vec::new();
        for i in 0..40 {
            let db = if i % 2 == 0 { a.clone() } else { b.clone() };
            tasks.push(tokio::spawn(async move {
                db.cart_add("ann", "mug", 2, 1000).await.unwrap()
            }));
        }
        for t in tasks {
            assert!(matches!(t.await.unwrap(), Added::Qty(_)));
        }
        assert_eq!(a.cart("ann").await.unwrap(), vec![("mug".to_owned(), 80)]);
        assert_eq!(
            a.cart_add("ann", "mug", 921, 1000).await.unwrap(),
            Added::LineFull
        );
        assert_eq!(
            a.cart_add("ann", "gone", 1, 1000).await.unwrap(),
            Added::Qty(1)
        );

        let order = b.checkout_cart("ann", price, 5).await.unwrap().unwrap();
        assert_eq!(order.items.len(), 1, "unpriceable lines are dropped");
        assert_eq!(order.total_cents, 800);
        assert_eq!(a.orders("ann", 10).await.unwrap(), vec![order]);
        assert!(a.cart("ann").await.unwrap().is_empty());
        assert!(a.checkout_cart("ann", price, 6).await.unwrap().is_none());

        let p = a
            .merge_prefs(
                "ann",
                PrefsRow {
                    theme: Some("dark".into()),
                    language: None,
                },
            )
            .await
            .unwrap();
        assert_eq!(p.theme.as_deref(), Some("dark"));
        let p = b
            .merge_prefs(
                "ann",
                PrefsRow {
                    theme: None,
                    language: Some("de".into()),
                },
            )
            .await
            .unwrap();
        assert_eq!(
            (p.theme.as_deref(), p.language.as_deref()),
            (Some("dark"), Some("de"))
        );
        assert_eq!(a.prefs("bob").await.unwrap(), PrefsRow::default());

        assert!(a.put_progress("ann", "v1", 1.5, 2).await.unwrap());
        assert!(a.put_progress("ann", "v2", 2.0, 2).await.unwrap());
        assert!(!a.put_progress("ann", "v3", 2.0, 2).await.unwrap(), "limit");
        assert!(
            a.put_progress("ann", "v1", 9.0, 2).await.unwrap(),
            "update is fine"
        );
        assert_eq!(b.progress("ann", "v1").await.unwrap(), Some(9.0));
        assert_eq!(b.progress("ann", "v3").await.unwrap(), None);
    }
}
