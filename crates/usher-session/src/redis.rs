//! [`RedisStore`]: sessions in one Redis server (single node) that every replica shares.

use std::fmt;
use std::time::Duration;

use ::redis::aio::{ConnectionManager, ConnectionManagerConfig};
use ::redis::{Client, RedisError, Script};
use async_trait::async_trait;
use tokio::sync::Mutex;

use crate::data::{FieldOp, SessionData};
use crate::error::{CodecError, StoreError};
use crate::id::SessionKey;
use crate::store::{FieldUpdate, Record, SessionInfo, SessionStore, StoreConfig, Touch};

/// How many times [`SessionStore::update_field`] retries a lost version race before giving up
/// with [`StoreError::Conflict`].
pub const UPDATE_RETRIES: usize = 200;

/// After this many lost races a field update takes the per-session update lock.
const LOCK_AFTER: usize = 2;

/// Lifetime of the per-session update lock (it is released by the holder's write; the expiry
/// only covers a holder that died).
const LOCK_MILLIS: u64 = 2000;

/// Number of local locks field updates to the same key queue on (keys are striped over them).
pub const UPDATE_STRIPES: usize = 64;

/// Largest time value kept exactly by the Lua scripts (2^53 - 1).
const MAX_TIME: u64 = (1 << 53) - 1;

/// The stored numeric columns, in the order the scripts number them (1-based) for `Corrupt`.
const COLUMNS: [&str; 6] = [
    "version",
    "created_at",
    "last_seen_at",
    "idle_expires_at",
    "expires_at",
    "deleted_until",
];

/// Connection settings of a [`RedisStore`].
#[derive(Debug, Clone)]
pub struct RedisOptions {
    /// A Redis URL, e.g. `redis://127.0.0.1:6379/0`.
    pub url: String,
    /// Prefix of every key the store writes; default `usher:`.
    pub prefix: String,
    /// Timeout of one connection attempt; default 1 s.
    pub connection_timeout: Duration,
    /// Timeout of one command's response; default 2 s. An operation that times out is
    /// [`StoreError::Unavailable`].
    pub response_timeout: Duration,
    /// Connection attempts after the first when reconnecting; default 2 (with a short
    /// exponential backoff), so a request fails fast while Redis is down.
    pub reconnect_retries: usize,
}

impl RedisOptions {
    /// Default options for `url`.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            prefix: "usher:".to_owned(),
            connection_timeout: Duration::from_secs(1),
            response_timeout: Duration::from_secs(2),
            reconnect_retries: 2,
        }
    }

    /// The same options with another key prefix.
    pub fn with_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }
}

/// A [`SessionStore`] in one Redis server (single node) that every replica shares.
///
/// # Layout
///
/// Every key starts with a configurable prefix ([`RedisOptions::prefix`], default `usher:`);
/// session keys are the lowercase hex of the [`SessionKey`] (the SHA-256 of the id), so Redis
/// never holds a usable session id.
///
/// * `<prefix>s:<hex>` — a hash: `data` (the encoded [`SessionData`], format byte first),
///   `version`, `user` (absent for anonymous sessions), `created`, `seen`, `idle`, `exp`.
/// * `<prefix>t:<hex>` — a tombstone: a string holding the Unix second it lapses at.
/// * `<prefix>l:<hex>` — the short-lived field-update lock (see below).
/// * `<prefix>u:<user>` — a set of the hex keys of `user`'s sessions, cleaned lazily
///   (`sessions_of` drops members whose hash is gone or belongs to someone else).
///
/// # How the contract is kept
///
/// * **Atomicity.** Every multi-step operation is one Lua script ([`::redis::Script`], EVALSHA
///   with automatic fallback to EVAL), and Redis runs a script with nothing interleaved. The
///   scripts compute user-set and tombstone key names from the prefix, so the store is for a
///   single Redis node (or a primary with replicas), not Redis Cluster.
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
///   per-session update lock (`<prefix>l:<hex>`, `SET NX PX` with a random token, lapsing after
///   2 s if its holder dies); while it is held the write script turns away everyone else's field
///   updates, and the holder's successful write releases it. Whole-record saves ignore the lock
///   (they are version-checked anyway). The `FieldOp` runs in Rust because
///   Redis' `cjson` would re-encode the whole object lossily (integers beyond 2^53, `{}` vs `[]`).
///   `WATCH`/`MULTI` is not used: `WATCH` is per connection and the store multiplexes all tasks
///   onto one connection. Within one store, updates to the same key first take one of
///   [`UPDATE_STRIPES`] local async locks, so concurrent tasks of one process queue instead of
///   retrying against each other; the version check serializes against other processes.
/// * **Tombstones.** Delete removes the hash and writes the tombstone in one script; save,
///   update and touch check it first.
/// * **Failures.** The connection is a [`ConnectionManager`] (multiplexed, reconnects on its own);
///   any Redis error is [`StoreError::Unavailable`] with the source kept. Stored bytes or numbers
///   that do not decode are [`StoreError::Corrupt`].
pub struct RedisStore {
    conn: ConnectionManager,
    config: StoreConfig,
    prefix: String,
    stripes: Vec<Mutex<()>>,
    scripts: Scripts,
}

impl fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStore")
            .field("prefix", &self.prefix)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

struct Scripts {
    save: Script,
    read: Script,
    write_data: Script,
    unlock: Script,
    delete: Script,
    touch: Script,
    sessions_of: Script,
    delete_user: Script,
    purge: Script,
}

/// Shared by every script. `state` returns one of
/// `'T'` (tombstoned), `'A'` (absent), `'D'` (dead at `now`), `'L'` (live) with the parsed row,
/// or `'C'` with the 1-based index of a corrupt column.
const PRELUDE: &str = r"
local function tombstone(tkey, till, ttl)
  local old = tonumber(redis.call('GET', tkey) or '')
  if not (old and old > tonumber(till)) then
    redis.call('SET', tkey, till, 'EX', ttl)
  end
end
local function state(skey, tkey, now)
  local t = redis.call('GET', tkey)
  if t then
    local u = tonumber(t)
    if u == nil then return 'C', 6 end
    if u > now then return 'T' end
  end
  local h = redis.call('HMGET', skey, 'version', 'created', 'seen', 'idle', 'exp', 'user')
  if not h[1] then return 'A' end
  local names = {'version', 'created', 'seen', 'idle', 'exp'}
  local s = {raw = h, user = h[6]}
  for i = 1, 5 do
    local n = tonumber(h[i] or '')
    if n == nil or n < 0 then return 'C', i end
    s[names[i]] = n
  end
  if now < s.idle and now < s.exp then return 'L', s end
  return 'D', s
end
";

/// KEYS: session, tombstone. ARGV: now, expected ('' = create), data, user, has_user ('1'/'0'),
/// created, seen, idle, exp, ttl, user-set prefix, hex.
/// Returns {0, version} | {1, 0} deleted | {2, 0} not found | {3, current} | {4, column}.
const SAVE: &str = r"
local now = tonumber(ARGV[1])
local code, s = state(KEYS[1], KEYS[2], now)
if code == 'T' then return {1, 0} end
if code == 'C' then return {4, s} end
local expected = ARGV[2]
local created, seen, idle = ARGV[6], ARGV[7], ARGV[8]
local version
if code == 'L' then
  if expected == '' or tonumber(expected) ~= s.version then return {3, s.version} end
  version = s.version + 1
  created = s.raw[2]
  if s.seen > tonumber(seen) then seen = s.raw[3] end
  if s.idle > tonumber(idle) then idle = s.raw[4] end
  if s.user and s.user ~= ARGV[4] then redis.call('SREM', ARGV[11] .. s.user, ARGV[12]) end
else
  if expected ~= '' then return {2, 0} end
  version = 1
  if code == 'D' then
    if s.user then redis.call('SREM', ARGV[11] .. s.user, ARGV[12]) end
    redis.call('DEL', KEYS[1])
  end
end
redis.call('HSET', KEYS[1], 'data', ARGV[3], 'version', string.format('%d', version),
  'created', created, 'seen', seen, 'idle', idle, 'exp', ARGV[9])
if ARGV[5] == '1' then
  redis.call('HSET', KEYS[1], 'user', ARGV[4])
  local ukey = ARGV[11] .. ARGV[4]
  redis.call('SADD', ukey, ARGV[12])
  if redis.call('TTL', ukey) < tonumber(ARGV[10]) then redis.call('EXPIRE', ukey, ARGV[10]) end
else
  redis.call('HDEL', KEYS[1], 'user')
end
redis.call('EXPIRE', KEYS[1], ARGV[10])
return {0, version}
";

/// KEYS: session, tombstone. ARGV: now.
/// Returns {0, version, data} | {1, 0, ''} | {2, 0, ''} | {4, column, ''}.
const READ: &str = r"
local code, s = state(KEYS[1], KEYS[2], tonumber(ARGV[1]))
if code == 'T' then return {1, 0, ''} end
if code == 'C' then return {4, s, ''} end
if code ~= 'L' then return {2, 0, ''} end
return {0, s.version, redis.call('HGET', KEYS[1], 'data') or ''}
";

/// KEYS: session, tombstone, update lock. ARGV: now, expected version, data, lock token
/// ('' = none held). Returns {0, version, ''} | {1, 0, ''} | {2, 0, ''} | {4, column, ''}, or
/// {3, current, current data} if the version moved or another writer holds the update lock, so
/// the caller can retry without another read. A successful write by the holder releases the lock.
const WRITE_DATA: &str = r"
local code, s = state(KEYS[1], KEYS[2], tonumber(ARGV[1]))
if code == 'T' then return {1, 0, ''} end
if code == 'C' then return {4, s, ''} end
if code ~= 'L' then return {2, 0, ''} end
local holder = redis.call('GET', KEYS[3])
if s.version ~= tonumber(ARGV[2]) or (holder and holder ~= ARGV[4]) then
  return {3, s.version, redis.call('HGET', KEYS[1], 'data') or ''}
end
local version = s.version + 1
redis.call('HSET', KEYS[1], 'data', ARGV[3], 'version', string.format('%d', version))
if holder then redis.call('DEL', KEYS[3]) end
return {0, version, ''}
";

/// KEYS: update lock. ARGV: token. Releases the lock if `token` holds it.
const UNLOCK: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
return 0
";

/// KEYS: session, tombstone. ARGV: now, tombstone until, tombstone ttl, user-set prefix, hex.
/// Returns 1 if a live session was deleted, else 0.
const DELETE: &str = r"
local now = tonumber(ARGV[1])
local live = 0
if redis.call('EXISTS', KEYS[1]) == 1 then
  local h = redis.call('HMGET', KEYS[1], 'idle', 'exp', 'user')
  local idle, exp = tonumber(h[1] or ''), tonumber(h[2] or '')
  if idle and exp and now < idle and now < exp then live = 1 end
  if h[3] then redis.call('SREM', ARGV[4] .. h[3], ARGV[5]) end
  redis.call('DEL', KEYS[1])
end
tombstone(KEYS[2], ARGV[2], ARGV[3])
return live
";

/// KEYS: session, tombstone. ARGV: now, touch interval, now + idle timeout.
/// Returns {0, 0} written | {1, 0} skipped | {2, 0} missing | {4, column}.
const TOUCH: &str = r"
local now = tonumber(ARGV[1])
local code, s = state(KEYS[1], KEYS[2], now)
if code == 'C' then return {4, s} end
if code ~= 'L' then return {2, 0} end
if now - s.seen < tonumber(ARGV[2]) then return {1, 0} end
redis.call('HSET', KEYS[1], 'seen', ARGV[1])
local idle, idle_raw = tonumber(ARGV[3]), ARGV[3]
if s.exp < idle then idle, idle_raw = s.exp, s.raw[5] end
if idle > s.idle then redis.call('HSET', KEYS[1], 'idle', idle_raw) end
return {0, 0}
";

/// KEYS: user set. ARGV: now, session-key prefix, user.
/// Returns {{hex, created, seen, idle, exp}, ...} of the live sessions; drops stale members.
const SESSIONS_OF: &str = r"
local now = tonumber(ARGV[1])
local out = {}
for _, hex in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local h = redis.call('HMGET', ARGV[2] .. hex, 'user', 'created', 'seen', 'idle', 'exp')
  if h[1] ~= ARGV[3] then
    redis.call('SREM', KEYS[1], hex)
  else
    local idle, exp = tonumber(h[4] or ''), tonumber(h[5] or '')
    if idle == nil or exp == nil or (now < idle and now < exp) then
      table.insert(out, {hex, h[2] or '', h[3] or '', h[4] or '', h[5] or ''})
    end
  end
end
return out
";

/// KEYS: user set. ARGV: now, session-key prefix, tombstone prefix, user, tombstone until, ttl.
/// Deletes and tombstones every session of the user; returns how many were live.
const DELETE_USER: &str = r"
local now = tonumber(ARGV[1])
local n = 0
for _, hex in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local skey = ARGV[2] .. hex
  local h = redis.call('HMGET', skey, 'user', 'idle', 'exp')
  if h[1] == ARGV[4] then
    local idle, exp = tonumber(h[2] or ''), tonumber(h[3] or '')
    if idle and exp and now < idle and now < exp then n = n + 1 end
    redis.call('DEL', skey)
    tombstone(ARGV[3] .. hex, ARGV[5], ARGV[6])
  end
end
redis.call('DEL', KEYS[1])
return n
";

/// KEYS: session or tombstone keys found by SCAN. ARGV: now, 's' or 't', user-set prefix,
/// length of the key prefix before the hex. Deletes dead sessions / lapsed tombstones; returns
/// how many.
const PURGE: &str = r"
local now = tonumber(ARGV[1])
local n = 0
for _, k in ipairs(KEYS) do
  if ARGV[2] == 't' then
    local u = tonumber(redis.call('GET', k) or '')
    if u and u <= now then redis.call('DEL', k); n = n + 1 end
  else
    local h = redis.call('HMGET', k, 'idle', 'exp', 'user')
    local idle, exp = tonumber(h[1] or ''), tonumber(h[2] or '')
    if idle and exp and not (now < idle and now < exp) then
      if h[3] then redis.call('SREM', ARGV[3] .. h[3], string.sub(k, tonumber(ARGV[4]) + 1)) end
      redis.call('DEL', k)
      n = n + 1
    end
  end
end
return n
";

fn script(body: &str) -> Script {
    Script::new(&format!("{PRELUDE}{body}"))
}

fn unavailable(e: RedisError) -> StoreError {
    StoreError::unavailable(e)
}

fn hex(key: &SessionKey) -> String {
    use fmt::Write as _;
    let mut s = String::with_capacity(SessionKey::LEN * 2);
    for b in key.as_bytes() {
        let _ = write!(s, "{b:02x}");
    }
    s
}

fn time(t: u64) -> u64 {
    t.min(MAX_TIME)
}

/// Escapes glob characters for `SCAN MATCH`.
fn glob_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

fn corrupt(column: i64) -> StoreError {
    let name = usize::try_from(column - 1)
        .ok()
        .and_then(|i| COLUMNS.get(i))
        .copied()
        .unwrap_or("unknown");
    StoreError::Corrupt(CodecError::Column(name))
}

fn parse(v: &str, column: &'static str) -> Result<u64, StoreError> {
    v.parse()
        .map_err(|_| StoreError::Corrupt(CodecError::Column(column)))
}

fn parse_opt(v: Option<&str>, column: &'static str) -> Result<u64, StoreError> {
    parse(v.unwrap_or(""), column)
}

impl RedisStore {
    /// Connects with default [`RedisOptions`] for `url`.
    pub async fn connect(url: &str, config: StoreConfig) -> Result<Self, StoreError> {
        Self::connect_with(RedisOptions::new(url), config).await
    }

    /// Connects with `options`. Fails with [`StoreError::Unavailable`] if Redis cannot be
    /// reached now; after that the connection is re-established on its own.
    pub async fn connect_with(
        options: RedisOptions,
        config: StoreConfig,
    ) -> Result<Self, StoreError> {
        let client = Client::open(options.url.as_str()).map_err(unavailable)?;
        let manager_config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(options.connection_timeout))
            .set_response_timeout(Some(options.response_timeout))
            .set_number_of_retries(options.reconnect_retries)
            .set_min_delay(Duration::from_millis(20))
            .set_max_delay(Duration::from_millis(250));
        let conn = ConnectionManager::new_with_config(client, manager_config)
            .await
            .map_err(unavailable)?;
        Ok(Self {
            conn,
            config,
            prefix: options.prefix,
            stripes: (0..UPDATE_STRIPES).map(|_| Mutex::new(())).collect(),
            scripts: Scripts {
                save: script(SAVE),
                read: script(READ),
                write_data: script(WRITE_DATA),
                unlock: script(UNLOCK),
                delete: script(DELETE),
                touch: script(TOUCH),
                sessions_of: script(SESSIONS_OF),
                delete_user: script(DELETE_USER),
                purge: script(PURGE),
            },
        })
    }

    /// The Redis key of the hash holding `key`'s session (for operators and tests).
    pub fn redis_key(&self, key: &SessionKey) -> String {
        format!("{}s:{}", self.prefix, hex(key))
    }

    fn tombstone_key(&self, key: &SessionKey) -> String {
        format!("{}t:{}", self.prefix, hex(key))
    }

    fn user_key(&self, user: &str) -> String {
        format!("{}u:{user}", self.prefix)
    }

    fn user_prefix(&self) -> String {
        format!("{}u:", self.prefix)
    }

    fn tombstone_ttl(&self) -> u64 {
        self.config.tombstone_secs.max(1)
    }

    async fn purge_kind(&self, kind: &str, now: u64) -> Result<usize, StoreError> {
        let mut conn = self.conn.clone();
        let pattern = format!("{}{kind}:*", glob_escape(&self.prefix));
        let hex_offset = self.prefix.len() + 2;
        let mut cursor: u64 = 0;
        let mut removed = 0usize;
        loop {
            let (next, keys): (u64, Vec<String>) = ::redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(500)
                .query_async(&mut conn)
                .await
                .map_err(unavailable)?;
            if !keys.is_empty() {
                let mut inv = self.scripts.purge.prepare_invoke();
                for k in &keys {
                    inv.key(k);
                }
                let n: u64 = inv
                    .arg(now)
                    .arg(kind)
                    .arg(self.user_prefix())
                    .arg(hex_offset)
                    .invoke_async(&mut conn)
                    .await
                    .map_err(unavailable)?;
                removed += usize::try_from(n).unwrap_or(usize::MAX);
            }
            if next == 0 {
                return Ok(removed);
            }
            cursor = next;
        }
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
            .arg(self.redis_key(key))
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
        let (code, n): (i64, i64) = self
            .scripts
            .save
            .key(self.redis_key(key))
            .key(self.tombstone_key(key))
            .arg(now)
            .arg(expected_version.map(|v| v.to_string()).unwrap_or_default())
            .arg(bytes)
            .arg(record.user.as_deref().unwrap_or(""))
            .arg(if record.user.is_some() { "1" } else { "0" })
            .arg(time(record.created_at))
            .arg(time(record.last_seen_at))
            .arg(time(record.idle_expires_at))
            .arg(exp)
            .arg(ttl)
            .arg(self.user_prefix())
            .arg(hex(key))
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
        let now = time(now);
        let stripe = usize::from(key.as_bytes()[0]) % self.stripes.len();
        let _queue = self.stripes[stripe].lock().await;
        let (skey, tkey) = (self.redis_key(key), self.tombstone_key(key));
        let mut conn = self.conn.clone();
        let (code, n, bytes): (i64, i64, Vec<u8>) = self
            .scripts
            .read
            .key(&skey)
            .key(&tkey)
            .arg(now)
            .invoke_async(&mut conn)
            .await
            .map_err(unavailable)?;
        match code {
            0 => {}
            1 => return Err(StoreError::Deleted),
            2 => return Err(StoreError::NotFound),
            _ => return Err(corrupt(n)),
        }
        let (mut version, mut bytes) = (n, bytes);
        let lkey = format!("{}l:{}", self.prefix, hex(key));
        let mut token = String::new();
        let mut result = Err(StoreError::Conflict {
            current: version.unsigned_abs(),
        });
        for attempt in 0..UPDATE_RETRIES {
            if attempt >= LOCK_AFTER && token.is_empty() {
                // Lost the race several times: take the update lock, so writers that keep
                // winning cannot starve this one. Wait a random little while if it is taken.
                let candidate = format!("{:016x}", rand::random::<u64>());
                let acquired: Option<String> = ::redis::cmd("SET")
                    .arg(&lkey)
                    .arg(&candidate)
                    .arg("NX")
                    .arg("PX")
                    .arg(LOCK_MILLIS)
                    .query_async(&mut conn)
                    .await
                    .map_err(unavailable)?;
                if acquired.is_some() {
                    token = candidate;
                } else {
                    let pause = rand::random_range(50..=500);
                    tokio::time::sleep(Duration::from_micros(pause)).await;
                }
            }
            let mut data = match SessionData::decode(&bytes) {
                Ok(d) => d,
                Err(e) => {
                    result = Err(e.into());
                    break;
                }
            };
            let value = match op.clone().apply(&mut data, field) {
                Ok(v) => v,
                Err(e) => {
                    result = Err(e);
                    break;
                }
            };
            let encoded = match data.encode() {
                Ok(b) => b,
                Err(e) => {
                    result = Err(e.into());
                    break;
                }
            };
            let reply: Result<(i64, i64, Vec<u8>), _> = self
                .scripts
                .write_data
                .key(&skey)
                .key(&tkey)
                .key(&lkey)
                .arg(now)
                .arg(version)
                .arg(encoded)
                .arg(&token)
                .invoke_async(&mut conn)
                .await;
            let (code, n, current) = match reply {
                Ok(r) => r,
                Err(e) => {
                    result = Err(unavailable(e));
                    break;
                }
            };
            result = match code {
                0 => {
                    // The script released the lock with the write.
                    return Ok(FieldUpdate {
                        version: n.unsigned_abs(),
                        value,
                    });
                }
                1 => Err(StoreError::Deleted),
                2 => Err(StoreError::NotFound),
                3 => {
                    (version, bytes) = (n, current);
                    Err(StoreError::Conflict {
                        current: n.unsigned_abs(),
                    })
                }
                _ => Err(corrupt(n)),
            };
            if code != 3 {
                break;
            }
        }
        if !token.is_empty() {
            // Best effort: the lock also lapses on its own after LOCK_MILLIS.
            let _: Result<i64, _> = self
                .scripts
                .unlock
                .key(&lkey)
                .arg(&token)
                .invoke_async(&mut conn)
                .await;
        }
        result
    }

    async fn delete(&self, key: &SessionKey, now: u64) -> Result<bool, StoreError> {
        let now = time(now);
        let till = time(now.saturating_add(self.config.tombstone_secs));
        let mut conn = self.conn.clone();
        let live: i64 = self
            .scripts
            .delete
            .key(self.redis_key(key))
            .key(self.tombstone_key(key))
            .arg(now)
            .arg(till)
            .arg(self.tombstone_ttl())
            .arg(self.user_prefix())
            .arg(hex(key))
            .invoke_async(&mut conn)
            .await
            .map_err(unavailable)?;
        Ok(live == 1)
    }

    async fn touch(&self, key: &SessionKey, now: u64) -> Result<Touch, StoreError> {
        let now = time(now);
        let mut conn = self.conn.clone();
        let (code, n): (i64, i64) = self
            .scripts
            .touch
            .key(self.redis_key(key))
            .key(self.tombstone_key(key))
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
        let rows: Vec<(String, String, String, String, String)> = self
            .scripts
            .sessions_of
            .key(self.user_key(user))
            .arg(now)
            .arg(format!("{}s:", self.prefix))
            .arg(user)
            .invoke_async(&mut conn)
            .await
            .map_err(unavailable)?;
        rows.into_iter()
            .map(|(h, created, seen, idle, exp)| {
                Ok(SessionInfo {
                    key: parse_hex(&h).ok_or(StoreError::Corrupt(CodecError::Column("key")))?,
                    created_at: parse(&created, COLUMNS[1])?,
                    last_seen_at: parse(&seen, COLUMNS[2])?,
                    idle_expires_at: parse(&idle, COLUMNS[3])?,
                    expires_at: parse(&exp, COLUMNS[4])?,
                })
            })
            .collect()
    }

    async fn delete_user_sessions(&self, user: &str, now: u64) -> Result<usize, StoreError> {
        let now = time(now);
        let mut conn = self.conn.clone();
        let n: u64 = self
            .scripts
            .delete_user
            .key(self.user_key(user))
            .arg(now)
            .arg(format!("{}s:", self.prefix))
            .arg(format!("{}t:", self.prefix))
            .arg(user)
            .arg(time(now.saturating_add(self.config.tombstone_secs)))
            .arg(self.tombstone_ttl())
            .invoke_async(&mut conn)
            .await
            .map_err(unavailable)?;
        Ok(usize::try_from(n).unwrap_or(usize::MAX))
    }

    async fn purge_expired(&self, now: u64) -> Result<usize, StoreError> {
        let now = time(now);
        let sessions = self.purge_kind("s", now).await?;
        let tombstones = self.purge_kind("t", now).await?;
        Ok(sessions + tombstones)
    }
}

fn parse_hex(s: &str) -> Option<SessionKey> {
    let bytes = s.as_bytes();
    if bytes.len() != SessionKey::LEN * 2 {
        return None;
    }
    let mut out = [0u8; SessionKey::LEN];
    for (i, pair) in bytes.chunks_exact(2).enumerate() {
        let hi = char::from(pair[0]).to_digit(16)?;
        let lo = char::from(pair[1]).to_digit(16)?;
        out[i] = u8::try_from(hi * 16 + lo).ok()?;
    }
    Some(SessionKey::from_bytes(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::SessionId;

    #[test]
    fn hex_round_trip() {
        let key = SessionId::random().key();
        let h = hex(&key);
        assert_eq!(h.len(), 64);
        assert_eq!(parse_hex(&h), Some(key));
        assert_eq!(parse_hex("zz"), None);
    }

    #[test]
    fn glob_is_escaped() {
        assert_eq!(glob_escape("a*b?[c]\\"), "a\\*b\\?\\[c\\]\\\\");
    }
}
