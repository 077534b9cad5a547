//! [`SqliteStore`]: one SQLite file that several processes on one machine share.
//!
//! * Opened in **WAL** mode (readers do not block the writer) with `synchronous = NORMAL` and a
//!   `busy_timeout`, so writers from other connections and processes wait for the write lock
//!   instead of failing. The schema is created on open (`PRAGMA user_version` = 1; a newer
//!   version is refused rather than misread).
//! * Each store holds one connection behind a mutex and runs every statement on tokio's blocking
//!   pool (`spawn_blocking`), so the async executor never waits on disk or locks. Open more
//!   stores (or processes) on the same file for more parallelism.
//! * Every write runs in a `BEGIN IMMEDIATE` transaction: the write lock is taken before the row
//!   is read, so read-check-write (CAS, tombstone check, field update) is atomic across
//!   connections and processes. CAS is also in the SQL itself
//!   (`UPDATE … WHERE id_hash = ? AND version = ?`).
//! * A tombstone is the session's row with `deleted_until` set and data/user cleared.
//! * An index on `user` serves `sessions_of` and `delete_user_sessions`.
//! * Only the SHA-256 key of a session id is stored (`id_hash`).

use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

use crate::data::{FieldOp, SessionData};
use crate::error::{CodecError, StoreError};
use crate::id::SessionKey;
use crate::store::{FieldUpdate, Record, SessionInfo, SessionStore, StoreConfig, Touch};

/// The schema version this build writes and reads.
const SCHEMA_VERSION: i64 = 1;

/// How long a connection waits for another writer before an operation fails as unavailable.
pub const DEFAULT_BUSY_TIMEOUT: Duration = Duration::from_secs(5);

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS sessions (
    id_hash         BLOB PRIMARY KEY,
    version         INTEGER NOT NULL,
    user            TEXT,
    data            BLOB NOT NULL,
    created_at      INTEGER NOT NULL,
    last_seen_at    INTEGER NOT NULL,
    idle_expires_at INTEGER NOT NULL,
    expires_at      INTEGER NOT NULL,
    deleted_until   INTEGER
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS sessions_user ON sessions (user) WHERE user IS NOT NULL;
";

/// A [`SessionStore`] in a SQLite file. See the module docs.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    conn: Arc<Mutex<Connection>>,
    config: StoreConfig,
}

/// A row as stored, times already checked to be non-negative.
struct Row {
    version: u64,
    user: Option<String>,
    data: Vec<u8>,
    created_at: u64,
    last_seen_at: u64,
    idle_expires_at: u64,
    expires_at: u64,
    deleted_until: Option<u64>,
}

enum State {
    Absent,
    Tombstone,
    Live(Row),
}

fn unavailable(e: rusqlite::Error) -> StoreError {
    StoreError::unavailable(e)
}

fn to_u64(v: i64, column: &'static str) -> Result<u64, StoreError> {
    u64::try_from(v).map_err(|_| CodecError::Column(column).into())
}

/// Clamps to SQLite's signed 64-bit integers (times far in the future saturate).
fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn fetch(conn: &Connection, key: &SessionKey, now: u64) -> Result<State, StoreError> {
    type Raw = (
        i64,
        Option<String>,
        Vec<u8>,
        i64,
        i64,
        i64,
        i64,
        Option<i64>,
    );
    let raw: Option<Raw> = conn
        .query_row(
            "SELECT version, user, data, created_at, last_seen_at, idle_expires_at, expires_at,
                    deleted_until
             FROM sessions WHERE id_hash = ?1",
            params![key.as_bytes()],
            |r| {
                Ok((
                    r.get(0)?,
                    r.get(1)?,
                    r.get(2)?,
                    r.get(3)?,
                    r.get(4)?,
                    r.get(5)?,
                    r.get(6)?,
                    r.get(7)?,
                ))
            },
        )
        .optional()
        .map_err(unavailable)?;
    let Some((version, user, data, created, seen, idle, expires, deleted)) = raw else {
        return Ok(State::Absent);
    };
    let row = Row {
        version: to_u64(version, "version")?,
        user,
        data,
        created_at: to_u64(created, "created_at")?,
        last_seen_at: to_u64(seen, "last_seen_at")?,
        idle_expires_at: to_u64(idle, "idle_expires_at")?,
        expires_at: to_u64(expires, "expires_at")?,
        deleted_until: deleted.map(|d| to_u64(d, "deleted_until")).transpose()?,
    };
    Ok(match row.deleted_until {
        Some(until) if until > now => State::Tombstone,
        Some(_) => State::Absent,
        None if now < row.idle_expires_at && now < row.expires_at => State::Live(row),
        None => State::Absent,
    })
}

fn tombstone(conn: &Connection, key: &SessionKey, now: u64, until: u64) -> Result<(), StoreError> {
    conn.execute(
        "INSERT INTO sessions (id_hash, version, user, data, created_at, last_seen_at,
                               idle_expires_at, expires_at, deleted_until)
         VALUES (?1, 0, NULL, x'', ?2, ?2, 0, 0, ?3)
         ON CONFLICT (id_hash) DO UPDATE SET
             user = NULL, data = x'',
             deleted_until = max(coalesce(deleted_until, 0), excluded.deleted_until)",
        params![key.as_bytes(), to_i64(now), to_i64(until)],
    )
    .map_err(unavailable)?;
    Ok(())
}

impl SqliteStore {
    /// Opens (creating if needed) the store at `path` with [`DEFAULT_BUSY_TIMEOUT`].
    /// Blocking: call at startup or from a blocking context.
    pub fn open(path: impl AsRef<Path>, config: StoreConfig) -> Result<Self, StoreError> {
        Self::open_with_busy_timeout(path, config, DEFAULT_BUSY_TIMEOUT)
    }

    /// Opens the store with an explicit busy timeout. Blocking.
    pub fn open_with_busy_timeout(
        path: impl AsRef<Path>,
        config: StoreConfig,
        busy_timeout: Duration,
    ) -> Result<Self, StoreError> {
        let conn = Connection::open(path).map_err(unavailable)?;
        conn.busy_timeout(busy_timeout).map_err(unavailable)?;
        // Switching a new file to WAL while another process does the same can fail with BUSY at
        // once: SQLite skips the busy handler there (it could deadlock). Retry within the timeout.
        let deadline = std::time::Instant::now() + busy_timeout;
        let mode: String = loop {
            match conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0)) {
                Err(rusqlite::Error::SqliteFailure(e, _))
                    if e.code == rusqlite::ErrorCode::DatabaseBusy
                        && std::time::Instant::now() < deadline =>
                {
                    std::thread::sleep(std::time::Duration::from_millis(5));
                }
                other => break other.map_err(unavailable)?,
            }
        };
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StoreError::unavailable(format!(
                "SQLite refused WAL mode (journal_mode is {mode})"
            )));
        }
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(unavailable)?;
        let version: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(unavailable)?;
        if version > SCHEMA_VERSION {
            return Err(StoreError::unavailable(format!(
                "session database has schema version {version}, this build knows {SCHEMA_VERSION}"
            )));
        }
        conn.execute_batch(&format!(
            "BEGIN IMMEDIATE; {SCHEMA} PRAGMA user_version = {SCHEMA_VERSION}; COMMIT;"
        ))
        .map_err(unavailable)?;
        Ok(Self {
            conn: Arc::new(Mutex::new(conn)),
            config,
        })
    }

    /// Runs `f` with the connection on the blocking pool.
    async fn run<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection, StoreConfig) -> Result<T, StoreError> + Send + 'static,
    {
        let conn = Arc::clone(&self.conn);
        let config = self.config;
        tokio::task::spawn_blocking(move || {
            let mut guard = conn.lock().unwrap_or_else(PoisonError::into_inner);
            f(&mut guard, config)
        })
        .await
        .map_err(StoreError::unavailable)?
    }

    /// Runs `f` inside a `BEGIN IMMEDIATE` transaction, committing on success.
    async fn write<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection, StoreConfig) -> Result<T, StoreError> + Send + 'static,
    {
        self.run(move |conn, config| {
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(unavailable)?;
            let out = f(&tx, config)?;
            tx.commit().map_err(unavailable)?;
            Ok(out)
        })
        .await
    }
}

#[async_trait]
impl SessionStore for SqliteStore {
    async fn load(&self, key: &SessionKey, now: u64) -> Result<Option<Record>, StoreError> {
        let key = *key;
        self.run(move |conn, _| match fetch(conn, &key, now)? {
            State::Live(row) => Ok(Some(Record {
                data: SessionData::decode(&row.data)?,
                version: row.version,
                user: row.user,
                created_at: row.created_at,
                last_seen_at: row.last_seen_at,
                idle_expires_at: row.idle_expires_at,
                expires_at: row.expires_at,
            })),
            State::Absent | State::Tombstone => Ok(None),
        })
        .await
    }

    async fn save(
        &self,
        key: &SessionKey,
        record: &Record,
        expected_version: Option<u64>,
        now: u64,
    ) -> Result<u64, StoreError> {
        let key = *key;
        let bytes = record.data.encode()?;
        let record = Record {
            data: SessionData::new(),
            user: record.user.clone(),
            ..*record
        };
        self.write(
            move |conn, _| match (fetch(conn, &key, now)?, expected_version) {
                (State::Tombstone, _) => Err(StoreError::Deleted),
                (State::Live(row), None) => Err(StoreError::Conflict {
                    current: row.version,
                }),
                (State::Absent, Some(_)) => Err(StoreError::NotFound),
                (State::Live(row), Some(v)) if row.version != v => Err(StoreError::Conflict {
                    current: row.version,
                }),
                (State::Live(row), Some(v)) => {
                    let changed = conn
                    .execute(
                        "UPDATE sessions SET version = ?2, user = ?3, data = ?4, last_seen_at = ?5,
                                idle_expires_at = ?6, expires_at = ?7
                         WHERE id_hash = ?1 AND version = ?8 AND deleted_until IS NULL",
                        params![
                            key.as_bytes(),
                            to_i64(v + 1),
                            record.user,
                            bytes,
                            to_i64(row.last_seen_at.max(record.last_seen_at)),
                            to_i64(row.idle_expires_at.max(record.idle_expires_at)),
                            to_i64(record.expires_at),
                            to_i64(v),
                        ],
                    )
                    .map_err(unavailable)?;
                    if changed == 1 {
                        Ok(v + 1)
                    } else {
                        Err(StoreError::Conflict {
                            current: row.version,
                        })
                    }
                }
                (State::Absent, None) => {
                    conn.execute(
                        "INSERT OR REPLACE INTO sessions (id_hash, version, user, data, created_at,
                            last_seen_at, idle_expires_at, expires_at, deleted_until)
                     VALUES (?1, 1, ?2, ?3, ?4, ?5, ?6, ?7, NULL)",
                        params![
                            key.as_bytes(),
                            record.user,
                            bytes,
                            to_i64(record.created_at),
                            to_i64(record.last_seen_at),
                            to_i64(record.idle_expires_at),
                            to_i64(record.expires_at),
                        ],
                    )
                    .map_err(unavailable)?;
                    Ok(1)
                }
            },
        )
        .await
    }

    async fn update_field(
        &self,
        key: &SessionKey,
        field: &str,
        op: FieldOp,
        now: u64,
    ) -> Result<FieldUpdate, StoreError> {
        let key = *key;
        let field = field.to_owned();
        self.write(move |conn, _| {
            let row = match fetch(conn, &key, now)? {
                State::Live(row) => row,
                State::Tombstone => return Err(StoreError::Deleted),
                State::Absent => return Err(StoreError::NotFound),
            };
            let mut data = SessionData::decode(&row.data)?;
            let value = op.apply(&mut data, &field)?;
            let version = row.version + 1;
            conn.execute(
                "UPDATE sessions SET data = ?2, version = ?3 WHERE id_hash = ?1 AND version = ?4",
                params![
                    key.as_bytes(),
                    data.encode()?,
                    to_i64(version),
                    to_i64(row.version)
                ],
            )
            .map_err(unavailable)?;
            Ok(FieldUpdate { version, value })
        })
        .await
    }

    async fn delete(&self, key: &SessionKey, now: u64) -> Result<bool, StoreError> {
        let key = *key;
        self.write(move |conn, config| {
            let existed = matches!(fetch(conn, &key, now)?, State::Live(_));
            tombstone(conn, &key, now, now.saturating_add(config.tombstone_secs))?;
            Ok(existed)
        })
        .await
    }

    async fn touch(&self, key: &SessionKey, now: u64) -> Result<Touch, StoreError> {
        let key = *key;
        self.run(move |conn, config| {
            // Decide on a plain read first: a skipped touch takes no write lock at all.
            let row = match fetch(conn, &key, now)? {
                State::Live(row) => row,
                State::Absent | State::Tombstone => return Ok(Touch::Missing),
            };
            if now.saturating_sub(row.last_seen_at) < config.touch_interval_secs {
                return Ok(Touch::Skipped);
            }
            let idle = now
                .saturating_add(config.idle_timeout_secs)
                .min(row.expires_at);
            let changed = conn
                .execute(
                    "UPDATE sessions SET last_seen_at = max(last_seen_at, ?2),
                            idle_expires_at = max(idle_expires_at, ?3)
                     WHERE id_hash = ?1 AND deleted_until IS NULL AND last_seen_at <= ?4
                       AND idle_expires_at > ?2 AND expires_at > ?2",
                    params![
                        key.as_bytes(),
                        to_i64(now),
                        to_i64(idle),
                        to_i64(now.saturating_sub(config.touch_interval_secs)),
                    ],
                )
                .map_err(unavailable)?;
            if changed == 1 {
                return Ok(Touch::Written);
            }
            // Someone else touched, deleted or expired it in between.
            Ok(match fetch(conn, &key, now)? {
                State::Live(_) => Touch::Skipped,
                State::Absent | State::Tombstone => Touch::Missing,
            })
        })
        .await
    }

    async fn sessions_of(&self, user: &str, now: u64) -> Result<Vec<SessionInfo>, StoreError> {
        let user = user.to_owned();
        self.run(move |conn, _| {
            let mut stmt = conn
                .prepare_cached(
                    "SELECT id_hash, created_at, last_seen_at, idle_expires_at, expires_at
                     FROM sessions
                     WHERE user = ?1 AND deleted_until IS NULL
                       AND idle_expires_at > ?2 AND expires_at > ?2",
                )
                .map_err(unavailable)?;
            let rows = stmt
                .query_map(params![user, to_i64(now)], |r| {
                    Ok((
                        r.get::<_, Vec<u8>>(0)?,
                        r.get::<_, i64>(1)?,
                        r.get::<_, i64>(2)?,
                        r.get::<_, i64>(3)?,
                        r.get::<_, i64>(4)?,
                    ))
                })
                .map_err(unavailable)?;
            let mut out = Vec::new();
            for row in rows {
                let (hash, created, seen, idle, expires) = row.map_err(unavailable)?;
                let key: [u8; SessionKey::LEN] = hash
                    .try_into()
                    .map_err(|_| StoreError::from(CodecError::Column("id_hash")))?;
                out.push(SessionInfo {
                    key: SessionKey::from_bytes(key),
                    created_at: to_u64(created, "created_at")?,
                    last_seen_at: to_u64(seen, "last_seen_at")?,
                    idle_expires_at: to_u64(idle, "idle_expires_at")?,
                    expires_at: to_u64(expires, "expires_at")?,
                });
            }
            Ok(out)
        })
        .await
    }

    async fn delete_user_sessions(&self, user: &str, now: u64) -> Result<usize, StoreError> {
        let user = user.to_owned();
        self.write(move |conn, config| {
            let live: i64 = conn
                .query_row(
                    "SELECT count(*) FROM sessions
                     WHERE user = ?1 AND deleted_until IS NULL
                       AND idle_expires_at > ?2 AND expires_at > ?2",
                    params![user, to_i64(now)],
                    |r| r.get(0),
                )
                .map_err(unavailable)?;
            conn.execute(
                "UPDATE sessions SET user = NULL, data = x'', deleted_until = ?2
                 WHERE user = ?1 AND deleted_until IS NULL",
                params![user, to_i64(now.saturating_add(config.tombstone_secs))],
            )
            .map_err(unavailable)?;
            Ok(usize::try_from(live).unwrap_or(0))
        })
        .await
    }

    async fn purge_expired(&self, now: u64) -> Result<usize, StoreError> {
        self.write(move |conn, _| {
            conn.execute(
                "DELETE FROM sessions
                 WHERE (deleted_until IS NULL AND (idle_expires_at <= ?1 OR expires_at <= ?1))
                    OR deleted_until <= ?1",
                params![to_i64(now)],
            )
            .map_err(unavailable)
        })
        .await
    }
}
