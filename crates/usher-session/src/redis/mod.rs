//! [`RedisStore`]: sessions in Redis (or Valkey) that every replica shares — one node, a Redis
//! Cluster, or the master of a Sentinel deployment.

mod conn;
mod keys;
mod options;
mod row;
mod scripts;
mod update;

use std::fmt;

use ::redis::RedisError;
use async_trait::async_trait;
use tokio::sync::Mutex;

use self::conn::Conn;
use self::keys::{Keys, TAIL, hex};
pub use self::options::{InvalidRedisOptions, RedisOptions};
use self::options::{Target, check_prefix};
use self::row::{COLUMNS, InfoRow, corrupt, listable, parse, parse_opt, session_info, time};
use self::scripts::Scripts;
pub use self::update::{UPDATE_RETRIES, UPDATE_STRIPES};
use crate::data::{FieldOp, SessionData};
use crate::error::StoreError;
use crate::id::SessionKey;
use crate::store::{FieldUpdate, Record, SessionInfo, SessionStore, StoreConfig, Touch};

/// A [`SessionStore`] in Redis (or Valkey) shared by every replica: a single node, a Redis
/// Cluster, or a Sentinel-managed master, chosen by the URL (see [`RedisOptions::url`] and
/// [`RedisStore::connect`]).
///
/// # Layout
///
/// Every key starts with a configurable prefix ([`RedisOptions::prefix`], default `usher:`);
/// session keys are the lowercase hex of the [`SessionKey`] (the SHA-256 of the id), so Redis
/// never holds a usable session id. The hex sits in a hash tag, so everything about one session
/// lives in one cluster slot while sessions spread over every master:
///
/// * `<prefix>s:{<hex>}` — a hash: `data` (the encoded [`SessionData`], format byte first),
///   `version`, `user` (absent for anonymous sessions), `created`, `seen`, `idle`, `exp`.
/// * `<prefix>t:{<hex>}` — a tombstone: a string holding the Unix second it lapses at.
/// * `<prefix>l:{<hex>}` — the short-lived field-update lock (see below).
/// * `<prefix>u:<user>` — the user index: a sorted set of the hexes of `user`'s sessions,
///   scored by each session's absolute expiry.
///
/// # How the contract is kept
///
/// * **Atomicity.** Every step on one session is one Lua script ([`::redis::Script`], EVALSHA
///   with automatic fallback to EVAL) over that session's keys only, and Redis runs a script
///   with nothing interleaved. On a cluster all of a script's keys share the hash tag, so the
///   script runs on the one master owning the slot.
/// * **Time.** Expiry, tombstones and touch throttling are decided by the `now` argument, compared
///   in the scripts against the stored times. Redis TTLs are only garbage collection: a session
///   key expires `expires_at - now + tombstone_secs` seconds after a save (at least 1), a
///   tombstone `tombstone_secs` after the delete. Times are compared as Lua numbers (doubles), so
///   they are clamped to 2^53 - 1 (hundreds of millions of years) on the way in.
/// * **CAS.** The save script checks the tombstone, then liveness at `now`, then the stored
///   version, and only then writes; `created` is kept and `seen`/`idle` never move backwards.
/// * **Field updates** are optimistic: read the record (script), decode and apply the
///   [`FieldOp`] in Rust, write back with a script that succeeds only if the version is
///   unchanged (and the session still live and not tombstoned); on a lost race that script
///   returns the current data and version and the update is re-applied, at most
///   [`UPDATE_RETRIES`] times before [`StoreError::Conflict`]. Pure optimism lets a process
///   that writes back to back starve another, so after two lost races an updater takes a
///   per-session update lock (`<prefix>l:{<hex>}`, `SET NX PX` with a random token, lapsing
///   after 2 s if its holder dies); while it is held the write script turns away everyone
///   else's field updates, and the holder's successful write releases it. Whole-record saves
///   ignore the lock (they are version-checked anyway). The `FieldOp` runs in Rust because
///   Redis' `cjson` would re-encode the whole object lossily (integers beyond 2^53, `{}` vs `[]`).
///   `WATCH`/`MULTI` is not used: `WATCH` is per connection and the store multiplexes all tasks
///   onto one connection. Within one store, updates to the same key first take one of
///   [`UPDATE_STRIPES`] local async locks, so concurrent tasks of one process queue instead of
///   retrying against each other; the version check serializes against other processes.
/// * **Tombstones.** Delete removes the hash and writes the tombstone in one script; save,
///   update and touch check it first.
///
/// # The user index, and why it stays correct on a cluster
///
/// A user's sessions hash to many slots, so no script can update a session and its user's
/// index together. The session hash is therefore the authority (its `user` field says whose it
/// is) and the index is only a superset of candidates, re-validated on every read:
///
/// * **`save`** with a user first adds the hex to the index (a script on the index alone, which
///   also drops members whose absolute expiry has passed), *then* writes the session. So every
///   session that exists under a user is already listed; a listed hex whose save failed, or
///   whose session later moved to another user, is a harmless stale member.
/// * **`sessions_of`** lists the index and keeps only sessions whose hash exists, names this
///   user and is live at `now`. Nothing is removed on this path except members past their
///   absolute expiry: a hex whose session is absent may belong to a create that has indexed it
///   but not written yet, and removing it could hide that session from a later logout.
/// * **`delete`** deletes and tombstones the session in one script, then removes the hex from
///   the index (best effort — the tombstone already guarantees the session cannot come back).
/// * **`delete_user_sessions`** deletes and tombstones, one script per listed hex, every session
///   that names the user *or is absent* (tombstoning an absent key is harmless and makes a
///   racing create that had already indexed itself fail with `Deleted` instead of slipping past
///   the logout), skips sessions of other users, then removes the handled hexes. Every session
///   of the user that existed when the call started was indexed before it existed, so it is
///   deleted; per session the outcome is atomic, across sessions it is not (a cluster has no
///   cross-slot transaction).
/// * Stale members disappear when their session's absolute expiry passes, and the index key's
///   TTL follows the longest session in it.
///
/// On a single node (or a Sentinel master) everything is in one keyspace, so `sessions_of` and
/// `delete_user_sessions` stay single scripts that walk the index and its sessions atomically —
/// logout-everywhere is one indivisible step there, as before cluster support.
///
/// # Connections and failures
///
/// The connection is multiplexed and reconnects on its own (per deployment kind, see the `conn`
/// module): a request while Redis is down fails fast with [`StoreError::Unavailable`] (the
/// source kept), and the store recovers once Redis is back, without a new `connect`. Stored
/// bytes or numbers that do not decode are [`StoreError::Corrupt`]. Only commands Valkey also
/// has are used (`EVALSHA`/`EVAL`, hashes, sorted sets, `SET NX PX`, `SCAN`, `CLUSTER NODES`).
pub struct RedisStore {
    conn: Conn,
    config: StoreConfig,
    keys: Keys,
    stripes: Vec<Mutex<()>>,
    scripts: Scripts,
}

impl fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStore")
            .field("prefix", &self.keys.prefix())
            .field("cluster", &self.conn.is_cluster())
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

pub(super) fn unavailable(e: RedisError) -> StoreError {
    StoreError::unavailable(e)
}

impl RedisStore {
    /// Connects with default [`RedisOptions`] for `url`: `redis://` / `rediss://` (one node),
    /// `redis+cluster://h1:p1,h2:p2` (cluster seed nodes) or
    /// `redis+sentinel://h1:p1,h2:p2/master-name` (Sentinel); the full forms, with credentials
    /// and database, are documented on [`RedisOptions::url`].
    pub async fn connect(url: &str, config: StoreConfig) -> Result<Self, StoreError> {
        Self::connect_with(RedisOptions::new(url), config).await
    }

    /// Connects with `options`. Fails with [`StoreError::Unavailable`] if the options are
    /// invalid ([`InvalidRedisOptions`] as the source) or Redis cannot be reached now; after
    /// that the connection is re-established on its own.
    pub async fn connect_with(
        options: RedisOptions,
        config: StoreConfig,
    ) -> Result<Self, StoreError> {
        check_prefix(&options.prefix).map_err(StoreError::unavailable)?;
        let target = Target::parse(&options.url).map_err(StoreError::unavailable)?;
        let conn = Conn::connect(&target, &options)
            .await
            .map_err(unavailable)?;
        Ok(Self {
            conn,
            config,
            keys: Keys::new(options.prefix),
            stripes: (0..UPDATE_STRIPES).map(|_| Mutex::new(())).collect(),
            scripts: Scripts::new(),
        })
    }

    /// The Redis key of the hash holding `key`'s session (for operators and tests).
    pub fn redis_key(&self, key: &SessionKey) -> String {
        self.keys.session(key)
    }

    /// Whether the store talks to a Redis Cluster.
    pub fn is_cluster(&self) -> bool {
        self.conn.is_cluster()
    }

    fn tombstone_ttl(&self) -> u64 {
        self.config.tombstone_secs.max(1)
    }

    fn tombstone_until(&self, now: u64) -> u64 {
        time(now.saturating_add(self.config.tombstone_secs))
    }

    /// The user's index members (after dropping those past their absolute expiry).
    async fn index(
        &self,
        conn: &mut Conn,
        user: &str,
        now: u64,
    ) -> Result<Vec<String>, StoreError> {
        self.scripts
            .index_list
            .key(self.keys.user(user))
            .arg(now)
            .invoke_async(conn)
            .await
            .map_err(unavailable)
    }

    /// Removes handled members from the user's index (best effort: stale members are harmless).
    async fn unindex(&self, conn: &mut Conn, user: &str, hexes: &[String]) {
        if hexes.is_empty() {
            return;
        }
        let _: Result<i64, _> = ::redis::cmd("ZREM")
            .arg(self.keys.user(user))
            .arg(hexes)
            .query_async(conn)
            .await;
    }

    async fn purge_kind(&self, kind: &str, now: u64) -> Result<usize, StoreError> {
        let mut conn = self.conn.clone();
        let pattern = self.keys.pattern(kind);
        let mut removed = 0usize;
        for node in conn.scan_nodes().await.map_err(unavailable)? {
            let mut cursor: u64 = 0;
            loop {
                let (next, keys) = conn
                    .scan(&node, cursor, &pattern)
                    .await
                    .map_err(unavailable)?;
                // On a cluster every key is its own slot, so one script call per key.
                let batch = if conn.is_cluster() {
                    1
                } else {
                    keys.len().max(1)
                };
                for chunk in keys.chunks(batch) {
                    let mut inv = self.scripts.purge.prepare_invoke();
                    for k in chunk {
                        inv.key(k);
                    }
                    let n: u64 = inv
                        .arg(now)
                        .arg(kind)
                        .invoke_async(&mut conn)
                        .await
                        .map_err(unavailable)?;
                    removed += usize::try_from(n).unwrap_or(usize::MAX);
                }
                if next == 0 {
                    break;
                }
                cursor = next;
            }
        }
        Ok(removed)
    }
}

#[async_trait]
impl SessionStore for RedisStore {
    async fn load(&self, key: &SessionKey, now: u64) -> Result<Option<Record>, StoreError> {
        let now = time(now);
        let mut conn = self.conn.clone();
        type Row = (
            Option<Vec<u8>>,
            Option<String>,
            Option<String>,
            Option<String>,
            Option<String>,
            Option<String>,
            Option<String>,
        );
        let (data, version, user, created, seen, idle, exp): Row = ::redis::cmd("HMGET")
            .arg(self.keys.session(key))
            .arg(&["data", "version", "user", "created", "seen", "idle", "exp"])
            .query_async(&mut conn)
            .await
            .map_err(unavailable)?;
        let Some(version) = version else {
            return Ok(None);
        };
        let rec_version = parse(&version, COLUMNS[0])?;
        let idle_expires_at = parse_opt(idle.as_deref(), COLUMNS[3])?;
        let expires_at = parse_opt(exp.as_deref(), COLUMNS[4])?;
        if !(now < idle_expires_at && now < expires_at) {
            return Ok(None);
        }
        Ok(Some(Record {
            data: SessionData::decode(data.as_deref().unwrap_or_default())?,
            version: rec_version,
            user,
            created_at: parse_opt(created.as_deref(), COLUMNS[1])?,
            last_seen_at: parse_opt(seen.as_deref(), COLUMNS[2])?,
            idle_expires_at,
            expires_at,
        }))
    }

    async fn save(
        &self,
        key: &SessionKey,
        record: &Record,
        expected_version: Option<u64>,
        now: u64,
    ) -> Result<u64, StoreError> {
        let now = time(now);
        let bytes = record.data.encode()?;
        let exp = time(record.expires_at);
        let ttl = exp
            .saturating_sub(now)
            .saturating_add(self.config.tombstone_secs)
            .max(1);
        let mut conn = self.conn.clone();
        // Index first, so a session never exists unlisted (see the type's docs): in the same
        // script off a cluster, as a separate step on one (the keys live in different slots).
        let one_script = record.user.is_some() && !conn.is_cluster();
        if let (Some(user), false) = (&record.user, one_script) {
            let _: i64 = self
                .scripts
                .index_add
                .key(self.keys.user(user))
                .arg(now)
                .arg(hex(key))
                .arg(exp)
                .arg(ttl)
                .invoke_async(&mut conn)
                .await
                .map_err(unavailable)?;
        }
        let mut invocation = if one_script {
            self.scripts.index_then_save.prepare_invoke()
        } else {
            self.scripts.save.prepare_invoke()
        };
        invocation
            .key(self.keys.session(key))
            .key(self.keys.tombstone(key))
            .arg(now)
            .arg(expected_version.map(|v| v.to_string()).unwrap_or_default())
            .arg(bytes)
            .arg(record.user.as_deref().unwrap_or(""))
            .arg(if record.user.is_some() { "1" } else { "0" })
            .arg(time(record.created_at))
            .arg(time(record.last_seen_at))
            .arg(time(record.idle_expires_at))
            .arg(exp)
            .arg(ttl);
        if let (Some(user), true) = (&record.user, one_script) {
            invocation.key(self.keys.user(user)).arg(hex(key));
        }
        let (code, n): (i64, i64) = invocation
            .invoke_async(&mut conn)
            .await
            .map_err(unavailable)?;
        match code {
            0 => Ok(n.unsigned_abs()),
            1 => Err(StoreError::Deleted),
            2 => Err(StoreError::NotFound),
            3 => Err(StoreError::Conflict {
                current: n.unsigned_abs(),
            }),
            _ => Err(corrupt(n)),
        }
    }

    async fn update_field(
        &self,
        key: &SessionKey,
        field: &str,
        op: FieldOp,
        now: u64,
    ) -> Result<FieldUpdate, StoreError> {
        self.update(key, field, op, now).await
    }

    async fn delete(&self, key: &SessionKey, now: u64) -> Result<bool, StoreError> {
        let now = time(now);
        let mut conn = self.conn.clone();
        let (live, user): (i64, String) = self
            .scripts
            .delete
            .key(self.keys.session(key))
            .key(self.keys.tombstone(key))
            .arg(now)
            .arg(self.tombstone_until(now))
            .arg(self.tombstone_ttl())
            .arg("0")
            .arg("")
            .invoke_async(&mut conn)
            .await
            .map_err(unavailable)?;
        if !user.is_empty() {
            self.unindex(&mut conn, &user, &[hex(key)]).await;
        }
        Ok(live == 1)
    }

    async fn touch(&self, key: &SessionKey, now: u64) -> Result<Touch, StoreError> {
        let now = time(now);
        let mut conn = self.conn.clone();
        let (code, n): (i64, i64) = self
            .scripts
            .touch
            .key(self.keys.session(key))
            .key(self.keys.tombstone(key))
            .arg(now)
            .arg(self.config.touch_interval_secs)
            .arg(time(now.saturating_add(self.config.idle_timeout_secs)))
            .invoke_async(&mut conn)
            .await
            .map_err(unavailable)?;
        match code {
            0 => Ok(Touch::Written),
            1 => Ok(Touch::Skipped),
            2 => Ok(Touch::Missing),
            _ => Err(corrupt(n)),
        }
    }

    async fn sessions_of(&self, user: &str, now: u64) -> Result<Vec<SessionInfo>, StoreError> {
        let now = time(now);
        let mut conn = self.conn.clone();
        if !conn.is_cluster() {
            let rows: Vec<InfoRow> = self
                .scripts
                .sessions_of_atomic
                .key(self.keys.user(user))
                .arg(now)
                .arg(self.keys.session_head())
                .arg(self.keys.tombstone_head())
                .arg(TAIL)
                .arg(user)
                .invoke_async(&mut conn)
                .await
                .map_err(unavailable)?;
            return rows.into_iter().map(session_info).collect();
        }
        let mut out = Vec::new();
        for h in self.index(&mut conn, user, now).await? {
            type Fields = (
                Option<String>,
                Option<String>,
                Option<String>,
                Option<String>,
                Option<String>,
            );
            let (owner, created, seen, idle, exp): Fields = ::redis::cmd("HMGET")
                .arg(self.keys.session_of_hex(&h))
                .arg(&["user", "created", "seen", "idle", "exp"])
                .query_async(&mut conn)
                .await
                .map_err(unavailable)?;
            if owner.as_deref() == Some(user) && listable(idle.as_deref(), exp.as_deref(), now) {
                out.push(session_info((
                    h,
                    created.unwrap_or_default(),
                    seen.unwrap_or_default(),
                    idle.unwrap_or_default(),
                    exp.unwrap_or_default(),
                ))?);
            }
        }
        Ok(out)
    }

    async fn delete_user_sessions(&self, user: &str, now: u64) -> Result<usize, StoreError> {
        let now = time(now);
        let mut conn = self.conn.clone();
        if !conn.is_cluster() {
            let n: u64 = self
                .scripts
                .delete_user_atomic
                .key(self.keys.user(user))
                .arg(now)
                .arg(self.keys.session_head())
                .arg(self.keys.tombstone_head())
                .arg(TAIL)
                .arg(user)
                .arg(self.tombstone_until(now))
                .arg(self.tombstone_ttl())
                .invoke_async(&mut conn)
                .await
                .map_err(unavailable)?;
            return Ok(usize::try_from(n).unwrap_or(usize::MAX));
        }
        let mut live = 0usize;
        let mut handled = Vec::new();
        for h in self.index(&mut conn, user, now).await? {
            let (n, _owner): (i64, String) = self
                .scripts
                .delete
                .key(self.keys.session_of_hex(&h))
                .key(self.keys.tombstone_of_hex(&h))
                .arg(now)
                .arg(self.tombstone_until(now))
                .arg(self.tombstone_ttl())
                .arg("1")
                .arg(user)
                .invoke_async(&mut conn)
                .await
                .map_err(unavailable)?;
            if n >= 0 {
                live += usize::from(n == 1);
                handled.push(h);
            }
        }
        self.unindex(&mut conn, user, &handled).await;
        Ok(live)
    }

    async fn purge_expired(&self, now: u64) -> Result<usize, StoreError> {
        let now = time(now);
        let sessions = self.purge_kind("s", now).await?;
        let tombstones = self.purge_kind("t", now).await?;
        Ok(sessions + tombstones)
    }
}
