//! The SQLite backend: one file shared by every shop on the machine.
//!
//! WAL mode lets readers run beside the one writer, and the busy timeout makes a process wait for
//! another's write lock instead of failing at once. The schema is created inside a
//! `BEGIN IMMEDIATE` transaction with `IF NOT EXISTS`, so shops starting together serialize on the
//! write lock and the later ones find it done. rusqlite is blocking: every call runs on tokio's
//! blocking pool, with one connection per process behind a mutex (the shop's database traffic is
//! sign-ups, sign-ins and checkouts, not the per-request hot path).

use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension as _, TransactionBehavior, params};

mod state;

use super::{DbError, OrderRow};

/// How long a statement waits for another process's write lock.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS shop_users (
    name TEXT PRIMARY KEY NOT NULL,
    password_hash TEXT NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS shop_orders (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    user_name TEXT NOT NULL REFERENCES shop_users(name),
    items TEXT NOT NULL,
    total_cents INTEGER NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS shop_orders_by_user ON shop_orders(user_name, id);
CREATE TABLE IF NOT EXISTS shop_cart_lines (
    user_name TEXT NOT NULL,
    sku TEXT NOT NULL,
    qty INTEGER NOT NULL,
    PRIMARY KEY (user_name, sku)
);
CREATE TABLE IF NOT EXISTS shop_prefs (
    user_name TEXT PRIMARY KEY NOT NULL,
    theme TEXT,
    language TEXT
);
CREATE TABLE IF NOT EXISTS shop_progress (
    user_name TEXT NOT NULL,
    video TEXT NOT NULL,
    seconds DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (user_name, video)
);
";

/// Users and orders in a SQLite file. Cheap to clone.
#[derive(Debug, Clone)]
pub struct SqliteDb {
    conn: Arc<Mutex<Connection>>,
}

fn unavailable(e: rusqlite::Error) -> DbError {
    DbError::unavailable(e)
}

impl SqliteDb {
    /// Opens (creating if needed) the file at `path`, in WAL mode, with the schema.
    pub async fn open(path: PathBuf) -> Result<Self, DbError> {
        let conn = tokio::task::spawn_blocking(move || open_blocking(&path))
            .await
            .map_err(DbError::unavailable)??;
        Ok(Self {
            conn: Arc::new(Mutex::new(conn)),
        })
    }

    async fn run<T, F>(&self, f: F) -> Result<T, DbError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, DbError> + Send + 'static,
    {
        let conn = Arc::clone(&self.conn);
        tokio::task::spawn_blocking(move || {
            // A panic mid-statement leaves nothing half-done in memory: SQLite rolls back.
            let mut guard = conn.lock().unwrap_or_else(PoisonError::into_inner);
            f(&mut guard)
        })
        .await
        .map_err(DbError::unavailable)?
    }

    pub(crate) async fn create_user(
        &self,
        name: &str,
        hash: &str,
        now: i64,
    ) -> Result<(), DbError> {
        let (name, hash) = (name.to_owned(), hash.to_owned());
        self.run(move |conn| {
            let n = conn
                .execute(
                    "INSERT INTO shop_users (name, password_hash, created_at) VALUES (?1, ?2, ?3)
                     ON CONFLICT (name) DO NOTHING",
                    params![name, hash, now],
                )
                .map_err(unavailable)?;
            if n == 0 {
                Err(DbError::UserExists)
            } else {
                Ok(())
            }
        })
        .await
    }

    pub(crate) async fn password_hash(&self, name: &str) -> Result<Option<String>, DbError> {
        let name = name.to_owned();
        self.run(move |conn| {
            conn.prepare_cached("SELECT password_hash FROM shop_users WHERE name = ?1")
                .and_then(|mut s| s.query_row([name], |r| r.get(0)).optional())
                .map_err(unavailable)
        })
        .await
    }

    pub(crate) async fn insert_order(
        &self,
        user: &str,
        items: &str,
        total_cents: i64,
        now: i64,
    ) -> Result<i64, DbError> {
        let (user, items) = (user.to_owned(), items.to_owned());
        self.run(move |conn| {
            conn.execute(
                "INSERT INTO shop_orders (user_name, items, total_cents, created_at)
                 VALUES (?1, ?2, ?3, ?4)",
                params![user, items, total_cents, now],
            )
            .map_err(unavailable)?;
            Ok(conn.last_insert_rowid())
        })
        .await
    }

    pub(crate) async fn orders(&self, user: &str, limit: u32) -> Result<Vec<OrderRow>, DbError> {
        let user = user.to_owned();
        self.run(move |conn| {
            let mut stmt = conn
                .prepare_cached(
                    "SELECT id, items, total_cents, created_at FROM shop_orders
                     WHERE user_name = ?1 ORDER BY id DESC LIMIT ?2",
                )
                .map_err(unavailable)?;
            let rows = stmt
                .query_map(params![user, limit], |r| {
                    Ok(OrderRow {
                        id: r.get(0)?,
                        items: r.get(1)?,
                        total_cents: r.get(2)?,
                        created_at: r.get(3)?,
                    })
                })
                .map_err(unavailable)?;
            rows.collect::<Result<Vec<_>, _>>().map_err(unavailable)
        })
        .await
    }
}

fn open_blocking(path: &std::path::Path) -> Result<Connection, DbError> {
    let mut conn = Connection::open(path).map_err(unavailable)?;
    conn.busy_timeout(BUSY_TIMEOUT).map_err(unavailable)?;
    // Switching a new file to WAL while another process does the same can fail with BUSY at once:
    // SQLite skips the busy handler there (it could deadlock). Retry it within the busy timeout.
    let deadline = std::time::Instant::now() + BUSY_TIMEOUT;
    let mode: String = loop {
        match conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0)) {
            Err(rusqlite::Error::SqliteFailure(e, _))
                if e.code == rusqlite::ErrorCode::DatabaseBusy
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(Duration::from_millis(5));
            }
            other => break other.map_err(unavailable)?,
        }
    };
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(DbError::unavailable(format!(
            "SQLite refused WAL mode for {} (journal_mode is {mode})",
            path.display()
        )));
    }
    conn.pragma_update(None, "synchronous", "NORMAL")
        .map_err(unavailable)?;
    conn.pragma_update(None, "foreign_keys", "ON")
        .map_err(unavailable)?;
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(unavailable)?;
    tx.execute_batch(SCHEMA).map_err(unavailable)?;
    tx.commit().map_err(unavailable)?;
    Ok(conn)
}

#[cfg(test)]
mod tests {
    use crate::db::{Db, DbError, OrderLine};

    fn line(sku: &str, qty: i64, price: i64) -> OrderLine {
        OrderLine {
            sku: sku.into(),
            name: sku.into(),
            qty,
            price_cents: price,
            line_cents: qty * price,
        }
    }

    #[tokio::test]
    async fn users_and_orders_round_trip_and_are_shared_by_two_handles() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("shop.db");
        let spec = crate::config::DbSpec::Sqlite(path.clone());
        // Two shops opening the same file at once: both must come up with one schema.
        let (a, b) = tokio::join!(Db::open(&spec), Db::open(&spec));
        let (a, b) = (a.unwrap(), b.unwrap());
        a.create_user("ann", "h1", 10).await.unwrap();
        assert!(matches!(
            b.create_user("ann", "h2", 11).await,
            Err(DbError::UserExists)
        ));
        assert_eq!(b.password_hash("ann").await.unwrap().as_deref(), Some("h1"));
        assert_eq!(b.password_hash("bob").await.unwrap(), None);
        let o1 = a
            .insert_order("ann", vec![line("mug", 2, 100)], 20)
            .await
            .unwrap();
        assert_eq!(o1.total_cents, 200);
        let o2 = b
            .insert_order("ann", vec![line("tea", 1, 5), line("mug", 1, 100)], 21)
            .await
            .unwrap();
        assert!(o2.id > o1.id);
        let orders = a.orders("ann", 10).await.unwrap();
        assert_eq!(orders, vec![o2.clone(), o1]);
        assert_eq!(a.orders("ann", 1).await.unwrap(), vec![o2]);
        assert!(a.orders("bob", 10).await.unwrap().is_empty());
        // An order for a user that does not exist violates the foreign key.
        assert!(matches!(
            a.insert_order("ghost", vec![line("mug", 1, 1)], 1).await,
            Err(DbError::Unavailable(_))
        ));
    }

    #[tokio::test]
    async fn an_unopenable_path_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let spec = crate::config::DbSpec::Sqlite(dir.path().join("missing/dir/shop.db"));
        assert!(matches!(
            Db::open(&spec).await,
            Err(DbError::Unavailable(_))
        ));
    }
}
