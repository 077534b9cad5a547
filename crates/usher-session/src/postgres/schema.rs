//! The table a [`super::PostgresStore`] keeps sessions in, its creation, and every statement the
//! store runs against it (built once per store from the validated, quoted names).

use sha2::{Digest, Sha256};
use tokio_postgres::Client;

use super::options::Layout;
use crate::error::StoreError;

/// The layout version this build writes and reads, recorded in the table's comment.
pub(super) const SCHEMA_VERSION: u32 = 1;

/// The table comment's prefix; the version follows it.
const COMMENT_PREFIX: &str = "usher-session sessions, schema ";

/// Columns of a full row, in the order [`super::row`] reads them.
pub(super) const COLUMNS: &str = "version, user_name, data, created_at, last_seen_at, \
                                  idle_expires_at, expires_at, deleted_until";

/// When a row becomes purgeable: its tombstone's end, else the earlier of its two expiries. The
/// purge compares exactly this expression, so it can range-scan the index on it
/// ([`super::options::Layout::purge_index`]) instead of reading the whole table.
const DEAD_AT: &str = "COALESCE(deleted_until, LEAST(idle_expires_at, expires_at))";

/// Whether the stored row is dead at `$n` (expired or a lapsed tombstone): a create may replace
/// it. `s` is the table's alias.
fn dead_at(n: u8) -> String {
    format!(
        "(s.deleted_until <= ${n} OR (s.deleted_until IS NULL \
          AND (s.idle_expires_at <= ${n} OR s.expires_at <= ${n})))"
    )
}

/// Every statement the store runs, with the table name filled in.
#[derive(Debug, Clone)]
pub(super) struct Sql {
    /// `$1` key → a full row.
    pub fetch: String,
    /// The same, locking the row until the transaction ends.
    pub fetch_for_update: String,
    /// Create: `$1` key, `$2` user, `$3` data, `$4..$7` created/seen/idle/expires, `$8` now.
    /// Inserts, or replaces a dead row; affects nothing if a live row or tombstone is there.
    pub create: String,
    /// CAS update: `$1` key, `$2` expected version, `$3` user, `$4` data, `$5` seen, `$6` idle,
    /// `$7` expires, `$8` now. Affects nothing unless live, untombstoned and at that version.
    pub update: String,
    /// `$1` key, `$2` data, `$3` new version, `$4` old version.
    pub update_data: String,
    /// `$1` key, `$2` now, `$3` tombstone until: inserts a tombstone if no row exists.
    pub insert_tombstone: String,
    /// `$1` key, `$2` tombstone until: turns an existing row into a tombstone (never shortening
    /// one already there).
    pub make_tombstone: String,
    /// `$1` key, `$2` now, `$3` new idle expiry, `$4` latest last-seen that may be touched.
    pub touch: String,
    /// `$1` user, `$2` now → key and times of the live sessions.
    pub sessions_of: String,
    /// `$1` user, `$2` now, `$3` tombstone until → count of live sessions tombstoned.
    pub delete_user: String,
    /// `$1` now: removes expired rows and lapsed tombstones.
    pub purge: String,
}

impl Sql {
    pub(super) fn new(layout: &Layout) -> Self {
        let t = &layout.table;
        Self {
            fetch: format!("SELECT {COLUMNS} FROM {t} WHERE id_hash = $1"),
            fetch_for_update: format!("SELECT {COLUMNS} FROM {t} WHERE id_hash = $1 FOR UPDATE"),
            create: format!(
                "INSERT INTO {t} AS s (id_hash, version, user_name, data, created_at,
                     last_seen_at, idle_expires_at, expires_at, deleted_until)
                 VALUES ($1, 1, $2, $3, $4, $5, $6, $7, NULL)
                 ON CONFLICT (id_hash) DO UPDATE SET
                     version = 1, user_name = EXCLUDED.user_name, data = EXCLUDED.data,
                     created_at = EXCLUDED.created_at, last_seen_at = EXCLUDED.last_seen_at,
                     idle_expires_at = EXCLUDED.idle_expires_at,
                     expires_at = EXCLUDED.expires_at, deleted_until = NULL
                 WHERE {}",
                dead_at(8)
            ),
            update: format!(
                "UPDATE {t} SET version = version + 1, user_name = $3, data = $4,
                     last_seen_at = GREATEST(last_seen_at, $5),
                     idle_expires_at = GREATEST(idle_expires_at, $6), expires_at = $7
                 WHERE id_hash = $1 AND version = $2 AND deleted_until IS NULL
                   AND idle_expires_at > $8 AND expires_at > $8
                   AND created_at >= 0 AND last_seen_at >= 0"
            ),
            update_data: format!(
                "UPDATE {t} SET data = $2, version = $3 WHERE id_hash = $1 AND version = $4"
            ),
            insert_tombstone: format!(
                "INSERT INTO {t} (id_hash, version, user_name, data, created_at, last_seen_at,
                     idle_expires_at, expires_at, deleted_until)
                 VALUES ($1, 0, NULL, '\\x', $2, $2, 0, 0, $3)
                 ON CONFLICT (id_hash) DO NOTHING"
            ),
            make_tombstone: format!(
                "UPDATE {t} SET user_name = NULL, data = '\\x',
                     deleted_until = GREATEST(COALESCE(deleted_until, 0), $2)
                 WHERE id_hash = $1"
            ),
            touch: format!(
                "UPDATE {t} SET last_seen_at = GREATEST(last_seen_at, $2),
                     idle_expires_at = GREATEST(idle_expires_at, $3)
                 WHERE id_hash = $1 AND deleted_until IS NULL AND last_seen_at <= $4
                   AND idle_expires_at > $2 AND expires_at > $2"
            ),
            sessions_of: format!(
                "SELECT id_hash, created_at, last_seen_at, idle_expires_at, expires_at
                 FROM {t}
                 WHERE user_name = $1 AND deleted_until IS NULL
                   AND idle_expires_at > $2 AND expires_at > $2"
            ),
            delete_user: format!(
                "WITH gone AS (
                     UPDATE {t} SET user_name = NULL, data = '\\x', deleted_until = $3
                     WHERE user_name = $1 AND deleted_until IS NULL
                     RETURNING idle_expires_at, expires_at)
                 SELECT count(*) FROM gone WHERE idle_expires_at > $2 AND expires_at > $2"
            ),
            // The same rows as `(deleted_until IS NULL AND (idle_expires_at <= $1 OR
            // expires_at <= $1)) OR deleted_until <= $1`, written as one indexed expression.
            purge: format!("DELETE FROM {t} WHERE {DEAD_AT} <= $1"),
        }
    }
}

/// Creates the schema (if configured), table, user index and purge index if missing, and refuses
/// a table whose comment says a newer build laid it out.
///
/// The purge index (on [`DEAD_AT`]) is created on existing tables too, by the first store of this
/// build to start: a plain `CREATE INDEX`, which blocks writes to the table while it is built
/// (one pass over the table; seconds for millions of rows). It costs every write that moves an
/// expiry (saves, touches) an index update, and such updates are no longer HOT; in exchange a
/// purge reads only the rows it removes instead of the whole table.
///
/// Several processes may start at once against an empty database, and `CREATE … IF NOT EXISTS`
/// is not safe against itself (two creators can both pass the existence check, and one fails on
/// a catalog unique index). So the whole creation runs in one transaction holding a
/// transaction-scoped advisory lock derived from the table's name: creators queue, and each
/// finds the work done by the one before.
pub(super) async fn ensure(client: &mut Client, layout: &Layout) -> Result<(), StoreError> {
    let t = &layout.table;
    let tx = client
        .transaction()
        .await
        .map_err(StoreError::unavailable)?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&lock_key(t)])
        .await
        .map_err(StoreError::unavailable)?;
    if let Some(schema) = &layout.schema {
        tx.batch_execute(&format!("CREATE SCHEMA IF NOT EXISTS {schema}"))
            .await
            .map_err(StoreError::unavailable)?;
    }
    tx.batch_execute(&format!(
        "CREATE TABLE IF NOT EXISTS {t} (
             id_hash         bytea PRIMARY KEY,
             version         bigint NOT NULL,
             user_name       text,
             data            bytea NOT NULL,
             created_at      bigint NOT NULL,
             last_seen_at    bigint NOT NULL,
             idle_expires_at bigint NOT NULL,
             expires_at      bigint NOT NULL,
             deleted_until   bigint
         );
         CREATE INDEX IF NOT EXISTS {index} ON {t} (user_name) WHERE user_name IS NOT NULL;
         CREATE INDEX IF NOT EXISTS {purge_index} ON {t} (({DEAD_AT}));",
        index = layout.index,
        purge_index = layout.purge_index,
    ))
    .await
    .map_err(StoreError::unavailable)?;
    let comment: Option<String> = tx
        .query_one(
            "SELECT obj_description($1::text::regclass, 'pg_class')",
            &[t],
        )
        .await
        .map_err(StoreError::unavailable)?
        .try_get(0)
        .map_err(StoreError::unavailable)?;
    match comment
        .as_deref()
        .and_then(|c| c.strip_prefix(COMMENT_PREFIX))
    {
        Some(version) => match version.trim().parse::<u32>() {
            Ok(v) if v <= SCHEMA_VERSION => {}
            _ => {
                return Err(StoreError::unavailable(format!(
                    "session table {t} has schema version {version:?}, this build knows \
                     {SCHEMA_VERSION}"
                )));
            }
        },
        // New (or commented by someone else, then left alone).
        None if comment.is_none() => {
            tx.batch_execute(&format!(
                "COMMENT ON TABLE {t} IS '{COMMENT_PREFIX}{SCHEMA_VERSION}'"
            ))
            .await
            .map_err(StoreError::unavailable)?;
        }
        None => {}
    }
    tx.commit().await.map_err(StoreError::unavailable)
}

/// The advisory lock key of a table: 64 bits of the SHA-256 of a fixed label and its name, so
/// stores of different tables do not queue on each other (and unrelated users of advisory locks
/// are unlikely to collide).
fn lock_key(table: &str) -> i64 {
    let digest = Sha256::digest(format!("usher-session schema lock {table}"));
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&digest[..8]);
    i64::from_be_bytes(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_keys_differ_per_table_and_are_stable() {
        assert_eq!(lock_key("\"a\""), lock_key("\"a\""));
        assert_ne!(lock_key("\"a\""), lock_key("\"b\""));
        assert_ne!(lock_key("\"s\".\"a\""), lock_key("\"a\""));
    }

    #[test]
    fn statements_name_the_table() {
        let layout = Layout {
            schema: None,
            table: "\"t\"".to_owned(),
            index: "\"t_user\"".to_owned(),
            purge_index: "\"t_dead\"".to_owned(),
        };
        let sql = Sql::new(&layout);
        for s in [&sql.fetch, &sql.create, &sql.update, &sql.touch, &sql.purge] {
            assert!(s.contains("\"t\""), "{s}");
        }
        assert!(sql.create.contains("s.deleted_until <= $8"));
        assert!(
            sql.purge.contains(&format!("{DEAD_AT} <= $1")),
            "{}",
            sql.purge
        );
    }
}
