//! The PostgreSQL backend: a pooled connection set (deadpool) shared by the shop's requests.
//!
//! `CREATE TABLE IF NOT EXISTS` is not safe against itself in PostgreSQL (two sessions creating
//! the same table at once can fail on the catalog's unique index), so the schema is created
//! inside a transaction holding a transaction-level advisory lock: shops starting together take
//! turns. Pool waits and connection attempts are bounded so a database outage becomes an error
//! (503) rather than a hung request.

use std::str::FromStr as _;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio_postgres::NoTls;

mod state;

use super::{DbError, OrderRow};

/// Connections kept per shop process.
const POOL_SIZE: usize = 16;
/// How long a request waits for a pooled connection or for a new one to be made.
const POOL_TIMEOUT: Duration = Duration::from_secs(5);
/// The advisory lock key shops take while creating the schema (any constant; "usher shop").
const SCHEMA_LOCK: i64 = 0x7573_6865_7273_6870;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS shop_users (
    name TEXT PRIMARY KEY,
    password_hash TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE TABLE IF NOT EXISTS shop_orders (
    id BIGSERIAL PRIMARY KEY,
    user_name TEXT NOT NULL REFERENCES shop_users(name),
    items TEXT NOT NULL,
    total_cents BIGINT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS shop_orders_by_user ON shop_orders(user_name, id);
CREATE TABLE IF NOT EXISTS shop_cart_lines (
    user_name TEXT NOT NULL,
    sku TEXT NOT NULL,
    qty BIGINT NOT NULL,
    PRIMARY KEY (user_name, sku)
);
CREATE TABLE IF NOT EXISTS shop_prefs (
    user_name TEXT PRIMARY KEY,
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

/// Users and orders in PostgreSQL. Cheap to clone.
#[derive(Clone)]
pub struct PgDb {
    pool: Pool,
}

// The pool's Debug would print the connection config, password included.
impl std::fmt::Debug for PgDb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgDb")
            .field("status", &self.pool.status())
            .finish()
    }
}

impl PgDb {
    /// Builds the pool for `url`, connects once and creates the schema if missing.
    pub async fn connect(url: &str) -> Result<Self, DbError> {
        let mut config = tokio_postgres::Config::from_str(url).map_err(DbError::unavailable)?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(POOL_TIMEOUT);
        }
        let manager = Manager::from_config(
            config,
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(POOL_SIZE)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(POOL_TIMEOUT))
            .create_timeout(Some(POOL_TIMEOUT))
            .recycle_timeout(Some(POOL_TIMEOUT))
            .build()
            .map_err(DbError::unavailable)?;
        let db = Self { pool };
        db.create_schema().await?;
        Ok(db)
    }

    async fn client(&self) -> Result<deadpool_postgres::Object, DbError> {
        self.pool.get().await.map_err(DbError::unavailable)
    }

    async fn create_schema(&self) -> Result<(), DbError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(DbError::unavailable)?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&SCHEMA_LOCK])
            .await
            .map_err(DbError::unavailable)?;
        tx.batch_execute(SCHEMA)
            .await
            .map_err(DbError::unavailable)?;
        tx.commit().await.map_err(DbError::unavailable)
    }

    pub(crate) async fn create_user(
        &self,
        name: &str,
        hash: &str,
        now: i64,
    ) -> Result<(), DbError> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(
                "INSERT INTO shop_users (name, password_hash, created_at) VALUES ($1, $2, $3)
                 ON CONFLICT (name) DO NOTHING",
            )
            .await
            .map_err(DbError::unavailable)?;
        let n = client
            .execute(&stmt, &[&name, &hash, &now])
            .await
            .map_err(DbError::unavailable)?;
        if n == 0 {
            Err(DbError::UserExists)
        } else {
            Ok(())
        }
    }

    pub(crate) async fn password_hash(&self, name: &str) -> Result<Option<String>, DbError> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached("SELECT password_hash FROM shop_users WHERE name = $1")
            .await
            .map_err(DbError::unavailable)?;
        let row = client
            .query_opt(&stmt, &[&name])
            .await
            .map_err(DbError::unavailable)?;
        row.map(|r| r.try_get(0))
            .transpose()
            .map_err(DbError::unavailable)
    }

    pub(crate) async fn insert_order(
        &self,
        user: &str,
        items: &str,
        total_cents: i64,
        now: i64,
    ) -> Result<i64, DbError> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(
                "INSERT INTO shop_orders (user_name, items, total_cents, created_at)
                 VALUES ($1, $2, $3, $4) RETURNING id",
            )
            .await
            .map_err(DbError::unavailable)?;
        let row = client
            .query_one(&stmt, &[&user, &items, &total_cents, &now])
            .await
            .map_err(DbError::unavailable)?;
        row.try_get(0).map_err(DbError::unavailable)
    }

    pub(crate) async fn orders(&self, user: &str, limit: u32) -> Result<Vec<OrderRow>, DbError> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(
                "SELECT id, items, total_cents, created_at FROM shop_orders
                 WHERE user_name = $1 ORDER BY id DESC LIMIT $2",
            )
            .await
            .map_err(DbError::unavailable)?;
        let rows = client
            .query(&stmt, &[&user, &i64::from(limit)])
            .await
            .map_err(DbError::unavailable)?;
        rows.iter()
            .map(|r| {
                Ok(OrderRow {
                    id: r.try_get(0)?,
                    items: r.try_get(1)?,
                    total_cents: r.try_get(2)?,
                    created_at: r.try_get(3)?,
                })
            })
            .collect::<Result<Vec<_>, tokio_postgres::Error>>()
            .map_err(DbError::unavailable)
    }
}

#[cfg(test)]
mod tests {
    use usher_testkit::postgres::PgServer;

    use crate::config::DbSpec;
    use crate::db::{Db, DbError, OrderLine};

    /// Against a private PostgreSQL server (never the shared one on 5432).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn users_and_orders_round_trip_on_a_real_server() {
        let server = tokio::task::spawn_blocking(PgServer::start).await.unwrap();
        let spec = DbSpec::Postgres(server.url());
        // Several shops starting at once: the advisory lock serializes schema creation.
        let (a, b, c) = tokio::join!(Db::open(&spec), Db::open(&spec), Db::open(&spec));
        let (a, b, _c) = (a.unwrap(), b.unwrap(), c.unwrap());
        a.create_user("ann", "h1", 10).await.unwrap();
        assert!(matches!(
            b.create_user("ann", "h2", 11).await,
            Err(DbError::UserExists)
        ));
        assert_eq!(b.password_hash("ann").await.unwrap().as_deref(), Some("h1"));
        assert_eq!(b.password_hash("nobody").await.unwrap(), None);
        let line = OrderLine {
            sku: "mug".into(),
            name: "Mug".into(),
            qty: 3,
            price_cents: 100,
            line_cents: 300,
        };
        let o1 = a.insert_order("ann", vec![line.clone()], 20).await.unwrap();
        let o2 = b.insert_order("ann", vec![line], 21).await.unwrap();
        assert!(o2.id > o1.id);
        assert_eq!(o1.total_cents, 300);
        assert_eq!(a.orders("ann", 10).await.unwrap(), vec![o2, o1]);
        drop(server);
        // The server is gone: an error, not a hang or a panic.
        assert!(matches!(
            a.password_hash("ann").await,
            Err(DbError::Unavailable(_))
        ));
    }

    #[tokio::test]
    async fn a_bad_url_is_an_error() {
        let spec = DbSpec::Postgres("postgres://127.0.0.1:notaport/db".into());
        assert!(matches!(
            Db::open(&spec).await,
            Err(DbError::Unavailable(_))
        ));
    }
}
