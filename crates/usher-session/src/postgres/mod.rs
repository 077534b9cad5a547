//! [`PostgresStore`]: sessions in one PostgreSQL table that every replica shares.

mod options;
mod row;
mod schema;

use std::fmt;
use std::str::FromStr;

use async_trait::async_trait;
use deadpool_postgres::{
    Manager, ManagerConfig, Object, Pool, RecyclingMethod, Runtime, Transaction,
};
use tokio_postgres::NoTls;
use tokio_postgres::types::ToSql;

use self::options::redact;
pub use self::options::{InvalidPostgresOptions, PostgresOptions};
use self::row::{State, session_info, state, to_i64, to_u64};
use self::schema::Sql;
use crate::data::{FieldOp, SessionData};
use crate::error::StoreError;
use crate::id::SessionKey;
use crate::store::{FieldUpdate, Record, SessionInfo, SessionStore, StoreConfig, Touch};

/// How often a save re-reads and retries when the row changed between its write and the read
/// that explains the failure (a create racing a purge, say). Any real contention resolves in one.
const SAVE_ATTEMPTS: usize = 5;

/// A [`SessionStore`] in a PostgreSQL table that every replica shares.
///
/// # Layout
///
/// One table ([`PostgresOptions::table`], default `usher_sessions`, optionally in
/// [`PostgresOptions::schema`]) keyed by `id_hash` (the [`SessionKey`], the SHA-256 of the id —
/// PostgreSQL never holds a usable id), with the version, `user_name`, the encoded data (`bytea`,
/// format byte first) and the times as `bigint` Unix seconds. A tombstone is the row with
/// `deleted_until` set and data and user cleared. A partial index on `user_name` serves
/// [`SessionStore::sessions_of`] and [`SessionStore::delete_user_sessions`]. The table's comment
/// records the layout version; a newer one is refused rather than misread.
///
/// # How the contract is kept
///
/// * **Time.** Every decision compares stored times with the `now` argument, passed as a
///   parameter; the database clock is never read.
/// * **CAS.** A save is one statement. An update is `UPDATE … WHERE id_hash = $1 AND version =
///   $2` plus "live and not tombstoned at `now`", bumping the version and keeping
///   `last_seen_at`/`idle_expires_at` from moving backwards (`GREATEST`). A create is an
///   `INSERT … ON CONFLICT DO UPDATE … WHERE` the existing row is dead (expired or a lapsed
///   tombstone), so it never overwrites a live session or a tombstone. Only when nothing was
///   written does the store read the row to say why (`Conflict`, `Deleted`, `NotFound`,
///   `Corrupt`). The happy path is one round trip.
/// * **Field updates** run in a transaction: `SELECT … FOR UPDATE` locks the row, the
///   [`FieldOp`] is applied in Rust by [`FieldOp::apply`] (the helper every store shares), and
///   the data is written back with the version bumped. Concurrent updaters queue on the row
///   lock, so none is lost, from any number of processes.
/// * **Delete** inserts a tombstone if the key has no row (so unknown keys are tombstoned too);
///   otherwise it locks the row, notes whether it was live, and turns it into a tombstone that
///   never shortens an existing one. "Log out everywhere" and `purge_expired` are one statement
///   each; `touch` is a read and, only when the interval has passed, one conditional `UPDATE`.
/// * **Failures.** Connections come from a [`deadpool_postgres`] pool (checked with `is_closed`
///   on reuse, so after a server restart dead connections are replaced, not reused). Any pool,
///   connection or SQL error is [`StoreError::Unavailable`] with the source kept; stored values
///   that do not decode are [`StoreError::Corrupt`]. A statement timeout
///   ([`PostgresOptions::statement_timeout`]) keeps a stuck lock from hanging a request.
pub struct PostgresStore {
    pool: Pool,
    config: StoreConfig,
    table: String,
    url: String,
    sql: Sql,
}

impl fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresStore")
            .field("url", &self.url)
            .field("table", &self.table)
            .field("config", &self.config)
            .field("pool", &self.pool.status())
            .finish_non_exhaustive()
    }
}

impl PostgresStore {
    /// Connects to `url` with default [`PostgresOptions`] and creates the table if missing.
    pub async fn connect(url: &str, config: StoreConfig) -> Result<Self, StoreError> {
        Self::connect_with(PostgresOptions::new(url), config).await
    }

    /// Connects with `options` and creates the schema, table and index if missing (safe when
    /// several processes start at once). Fails with [`StoreError::Unavailable`] if the options
    /// are invalid ([`InvalidPostgresOptions`] as the source), the server cannot be reached, or the table
    /// was laid out by a newer build.
    pub async fn connect_with(
        options: PostgresOptions,
        config: StoreConfig,
    ) -> Result<Self, StoreError> {
        let layout = options.validate().map_err(StoreError::unavailable)?;
        let mut pg = tokio_postgres::Config::from_str(&options.url)
            .map_err(|e| StoreError::unavailable(InvalidPostgresOptions::Url(e)))?;
        pg.connect_timeout(options.connect_timeout);
        if pg.get_application_name().is_none() {
            pg.application_name("usher-session");
        }
        if let Some(timeout) = options.statement_timeout {
            let setting = format!("-c statement_timeout={}", timeout.as_millis().max(1));
            let merged = match pg.get_options() {
                Some(existing) if !existing.is_empty() => format!("{existing} {setting}"),
                _ => setting,
            };
            pg.options(merged);
        }
        let manager = Manager::from_config(
            pg,
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(options.pool_size)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(options.wait_timeout))
            .create_timeout(Some(options.connect_timeout))
            .recycle_timeout(Some(options.connect_timeout))
            .build()
            .map_err(StoreError::unavailable)?;
        let store = Self {
            pool,
            config,
            table: layout.table.clone(),
            url: redact(&options.url),
            sql: Sql::new(&layout),
        };
        let mut client = store.client().await?;
        schema::ensure(&mut client, &layout).await?;
        Ok(store)
    }

    /// The quoted, schema-qualified name of the table this store uses (for operators and tests).
    pub fn table(&self) -> &str {
        &self.table
    }

    async fn client(&self) -> Result<Object, StoreError> {
        self.pool.get().await.map_err(StoreError::unavailable)
    }

    /// The key's state, read without locking.
    async fn fetch(
        &self,
        client: &Object,
        key: &SessionKey,
        now: u64,
    ) -> Result<State, StoreError> {
        let stmt = client
            .prepare_cached(&self.sql.fetch)
            .await
            .map_err(StoreError::unavailable)?;
        let row = client
            .query_opt(&stmt, &[&key.as_bytes().as_slice()])
            .await
            .map_err(StoreError::unavailable)?;
        state(row.as_ref(), now)
    }

    /// Why a save wrote nothing, or `None` if the row changed since and the save should retry.
    async fn explain_failed_save(
        &self,
        client: &Object,
        key: &SessionKey,
        expected: Option<u64>,
        now: u64,
    ) -> Result<Option<StoreError>, StoreError> {
        Ok(match (self.fetch(client, key, now).await?, expected) {
            (State::Tombstone, _) => Some(StoreError::Deleted),
            (State::Live(row), None) => Some(StoreError::Conflict {
                current: row.version,
            }),
            (State::Live(row), Some(v)) if row.version != v => Some(StoreError::Conflict {
                current: row.version,
            }),
            (State::Absent, Some(_)) => Some(StoreError::NotFound),
            (State::Live(_), Some(_)) | (State::Absent, None) => None,
        })
    }

    /// The body of [`SessionStore::update_field`], inside `tx`.
    async fn update_field_in(
        &self,
        tx: &Transaction<'_>,
        key: &SessionKey,
        field: &str,
        op: FieldOp,
        now: u64,
    ) -> Result<FieldUpdate, StoreError> {
        let id = key.as_bytes().as_slice();
        let stmt = tx
            .prepare_cached(&self.sql.fetch_for_update)
            .await
            .map_err(unavailable)?;
        let locked = tx.query_opt(&stmt, &[&id]).await.map_err(unavailable)?;
        let row = match state(locked.as_ref(), now)? {
            State::Live(row) => row,
            State::Tombstone => return Err(StoreError::Deleted),
            State::Absent => return Err(StoreError::NotFound),
        };
        let mut data = SessionData::decode(&row.data)?;
        let value = op.apply(&mut data, field)?;
        let version = row.version.saturating_add(1);
        let stmt = tx
            .prepare_cached(&self.sql.update_data)
            .await
            .map_err(unavailable)?;
        let written = tx
            .execute(
                &stmt,
                &[&id, &data.encode()?, &to_i64(version), &to_i64(row.version)],
            )
            .await
            .map_err(unavailable)?;
        if written != 1 {
            // Cannot happen under the row lock; refuse rather than report a write that did not
            // land.
            return Err(StoreError::unavailable(
                "field update lost its row lock (row changed under FOR UPDATE)",
            ));
        }
        Ok(FieldUpdate { version, value })
    }

    /// The body of [`SessionStore::delete`], inside `tx`.
    async fn delete_in(
        &self,
        tx: &Transaction<'_>,
        key: &SessionKey,
        now: u64,
    ) -> Result<bool, StoreError> {
        let id = key.as_bytes().as_slice();
        let until = to_i64(now.saturating_add(self.config.tombstone_secs));
        let stmt = tx
            .prepare_cached(&self.sql.insert_tombstone)
            .await
            .map_err(unavailable)?;
        let inserted = tx
            .execute(&stmt, &[&id, &to_i64(now), &until])
            .await
            .map_err(unavailable)?;
        if inserted == 1 {
            return Ok(false);
        }
        let stmt = tx
            .prepare_cached(&self.sql.fetch_for_update)
            .await
            .map_err(unavailable)?;
        let locked = tx.query_opt(&stmt, &[&id]).await.map_err(unavailable)?;
        // A row whose numbers do not decode is still removed: logging out must work, and it is
        // the way to get rid of the bad row.
        let existed = match state(locked.as_ref(), now) {
            Ok(state) => matches!(state, State::Live(_)),
            Err(StoreError::Corrupt(_)) => true,
            Err(e) => return Err(e),
        };
        let stmt = tx
            .prepare_cached(&self.sql.make_tombstone)
            .await
            .map_err(unavailable)?;
        tx.execute(&stmt, &[&id, &until])
            .await
            .map_err(unavailable)?;
        Ok(existed)
    }
}

/// Commits `tx` if `out` is a success, else rolls it back right away (rather than leaving the
/// rollback to the transaction's drop, which only queues it): a refused update must not keep
/// its row lock while the connection sits idle in the pool.
async fn finish<T>(tx: Transaction<'_>, out: Result<T, StoreError>) -> Result<T, StoreError> {
    match out {
        Ok(value) => {
            tx.commit().await.map_err(unavailable)?;
            Ok(value)
        }
        Err(e) => {
            // If the rollback fails the connection is broken, and the server rolls back the
            // transaction when it notices; the original error is the one to report.
            let _ = tx.rollback().await;
            Err(e)
        }
    }
}

fn unavailable(e: tokio_postgres::Error) -> StoreError {
    StoreError::unavailable(e)
}

#[async_trait]
impl SessionStore for PostgresStore {
    async fn load(&self, key: &SessionKey, now: u64) -> Result<Option<Record>, StoreError> {
        let client = self.client().await?;
        match self.fetch(&client, key, now).await? {
            State::Live(row) => Ok(Some(row.into_record()?)),
            State::Absent | State::Tombstone => Ok(None),
        }
    }

    async fn save(
        &self,
        key: &SessionKey,
        record: &Record,
        expected_version: Option<u64>,
        now: u64,
    ) -> Result<u64, StoreError> {
        let bytes = record.data.encode()?;
        let id = key.as_bytes().as_slice();
        let client = self.client().await?;
        let (sql, new_version) = match expected_version {
            None => (&self.sql.create, 1),
            Some(v) => (&self.sql.update, v.saturating_add(1)),
        };
        let stmt = client.prepare_cached(sql).await.map_err(unavailable)?;
        let (created, seen) = (to_i64(record.created_at), to_i64(record.last_seen_at));
        let (idle, expires) = (to_i64(record.idle_expires_at), to_i64(record.expires_at));
        let (now_i, expected) = (to_i64(now), expected_version.map(to_i64));
        let params: [&(dyn ToSql + Sync); 8] = match &expected {
            None => [
                &id,
                &record.user,
                &bytes,
                &created,
                &seen,
                &idle,
                &expires,
                &now_i,
            ],
            Some(v) => [&id, v, &record.user, &bytes, &seen, &idle, &expires, &now_i],
        };
        for _ in 0..SAVE_ATTEMPTS {
            let written = client.execute(&stmt, &params).await.map_err(unavailable)?;
            if written == 1 {
                return Ok(new_version);
            }
            if let Some(err) = self
                .explain_failed_save(&client, key, expected_version, now)
                .await?
            {
                return Err(err);
            }
        }
        Err(StoreError::unavailable(format!(
            "save kept racing other writers ({SAVE_ATTEMPTS} attempts)"
        )))
    }

    async fn update_field(
        &self,
        key: &SessionKey,
        field: &str,
        op: FieldOp,
        now: u64,
    ) -> Result<FieldUpdate, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(unavailable)?;
        let out = self.update_field_in(&tx, key, field, op, now).await;
        finish(tx, out).await
    }

    async fn delete(&self, key: &SessionKey, now: u64) -> Result<bool, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(unavailable)?;
        let out = self.delete_in(&tx, key, now).await;
        finish(tx, out).await
    }

    async fn touch(&self, key: &SessionKey, now: u64) -> Result<Touch, StoreError> {
        let client = self.client().await?;
        // Decide on a plain read first: a skipped touch writes nothing and takes no lock.
        let row = match self.fetch(&client, key, now).await? {
            State::Live(row) => row,
            State::Absent | State::Tombstone => return Ok(Touch::Missing),
        };
        let every = self.config.touch_interval_secs;
        if now.saturating_sub(row.last_seen_at) < every {
            return Ok(Touch::Skipped);
        }
        let idle = now
            .saturating_add(self.config.idle_timeout_secs)
            .min(row.expires_at);
        let stmt = client
            .prepare_cached(&self.sql.touch)
            .await
            .map_err(unavailable)?;
        let written = client
            .execute(
                &stmt,
                &[
                    &key.as_bytes().as_slice(),
                    &to_i64(now),
                    &to_i64(idle),
                    &to_i64(now.saturating_sub(every)),
                ],
            )
            .await
            .map_err(unavailable)?;
        if written == 1 {
            return Ok(Touch::Written);
        }
        // Someone else touched, deleted or expired it in between.
        Ok(match self.fetch(&client, key, now).await? {
            State::Live(_) => Touch::Skipped,
            State::Absent | State::Tombstone => Touch::Missing,
        })
    }

    async fn sessions_of(&self, user: &str, now: u64) -> Result<Vec<SessionInfo>, StoreError> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(&self.sql.sessions_of)
            .await
            .map_err(unavailable)?;
        let rows = client
            .query(&stmt, &[&user, &to_i64(now)])
            .await
            .map_err(unavailable)?;
        rows.iter().map(session_info).collect()
    }

    async fn delete_user_sessions(&self, user: &str, now: u64) -> Result<usize, StoreError> {
        let until = to_i64(now.saturating_add(self.config.tombstone_secs));
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(&self.sql.delete_user)
            .await
            .map_err(unavailable)?;
        let live: i64 = client
            .query_one(&stmt, &[&user, &to_i64(now), &until])
            .await
            .map_err(unavailable)?
            .try_get(0)
            .map_err(unavailable)?;
        Ok(usize::try_from(to_u64(live, "count")?).unwrap_or(usize::MAX))
    }

    async fn purge_expired(&self, now: u64) -> Result<usize, StoreError> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(&self.sql.purge)
            .await
            .map_err(unavailable)?;
        let removed = client
            .execute(&stmt, &[&to_i64(now)])
            .await
            .map_err(unavailable)?;
        Ok(usize::try_from(removed).unwrap_or(usize::MAX))
    }
}
