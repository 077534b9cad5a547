//! The Lua scripts, one per atomic step. Each declares every key it touches in `KEYS`, and all of
//! a script's keys share one hash tag (the session's hex, or the user index alone), so every
//! script is legal in Redis Cluster. The two `*_ATOMIC` scripts are the exception: they reach
//! sessions from the user index and are therefore only used on a single node (or a Sentinel
//! master), where they make listing and logout-everywhere one atomic step.

use ::redis::Script;

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
local function live(idle, exp, now)
  idle, exp = tonumber(idle or ''), tonumber(exp or '')
  return idle ~= nil and exp ~= nil and now < idle and now < exp
end
";

/// KEYS: session, tombstone. ARGV: now, expected ('' = create), data, user, has_user ('1'/'0'),
/// created, seen, idle, exp, ttl.
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
else
  if expected ~= '' then return {2, 0} end
  version = 1
  if code == 'D' then redis.call('DEL', KEYS[1]) end
end
redis.call('HSET', KEYS[1], 'data', ARGV[3], 'version', string.format('%d', version),
  'created', created, 'seen', seen, 'idle', idle, 'exp', ARGV[9])
if ARGV[5] == '1' then
  redis.call('HSET', KEYS[1], 'user', ARGV[4])
else
  redis.call('HDEL', KEYS[1], 'user')
end
redis.call('EXPIRE', KEYS[1], ARGV[10])
return {0, version}
";

/// Single node and Sentinel only (the keys are in different cluster slots): INDEX_ADD then SAVE
/// in one script, so a signed-in save costs one round trip instead of two. KEYS: session,
/// tombstone, user index. ARGV: SAVE's ten, then the session's hex (the index member).
const INDEX_THEN_SAVE: &str = r"
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', ARGV[1])
local old = tonumber(redis.call('ZSCORE', KEYS[3], ARGV[11]) or '')
if not (old and old >= tonumber(ARGV[9])) then redis.call('ZADD', KEYS[3], ARGV[9], ARGV[11]) end
if redis.call('TTL', KEYS[3]) < tonumber(ARGV[10]) then redis.call('EXPIRE', KEYS[3], ARGV[10]) end
";

/// KEYS: user index (a sorted set: member = session hex, score = its absolute expiry).
/// ARGV: now, hex, expires_at, ttl. Drops members whose session is certainly dead, adds (or
/// raises) `hex`, and keeps the index alive at least `ttl` seconds. Returns 0.
const INDEX_ADD: &str = r"
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
local old = tonumber(redis.call('ZSCORE', KEYS[1], ARGV[2]) or '')
if not (old and old >= tonumber(ARGV[3])) then redis.call('ZADD', KEYS[1], ARGV[3], ARGV[2]) end
if redis.call('TTL', KEYS[1]) < tonumber(ARGV[4]) then redis.call('EXPIRE', KEYS[1], ARGV[4]) end
return 0
";

/// KEYS: user index. ARGV: now. Drops members whose session is certainly dead; returns the rest.
const INDEX_LIST: &str = r"
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
return redis.call('ZRANGE', KEYS[1], 0, -1)
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

/// KEYS: session, tombstone. ARGV: now, tombstone until, tombstone ttl, only ('1'/'0'), user.
/// Deletes and tombstones the session, unless `only` is '1' and the session exists under
/// another user than `user` (or none). Returns {1, user} if a live session was deleted, {0, user} if
/// a dead or absent one was (user '' if none), {-1, ''} if it was left alone.
const DELETE: &str = r"
local now = tonumber(ARGV[1])
local h = redis.call('HMGET', KEYS[1], 'version', 'idle', 'exp', 'user')
local user = h[4] or ''
if ARGV[4] == '1' and h[1] and h[4] ~= ARGV[5] then return {-1, ''} end
local n = 0
if h[1] then
  if live(h[2], h[3], now) then n = 1 end
  redis.call('DEL', KEYS[1])
end
tombstone(KEYS[2], ARGV[2], ARGV[3])
return {n, user}
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

/// Single node only. KEYS: user index. ARGV: now, session-key head, tombstone-key head, key
/// tail, user. Returns {{hex, created, seen, idle, exp}, ...} of the user's live sessions.
const SESSIONS_OF_ATOMIC: &str = r"
local now = tonumber(ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local out = {}
for _, hex in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  local h = redis.call('HMGET', ARGV[2] .. hex .. ARGV[4], 'user', 'created', 'seen', 'idle', 'exp')
  local idle, exp = tonumber(h[4] or ''), tonumber(h[5] or '')
  if h[1] == ARGV[5] and (idle == nil or exp == nil or (now < idle and now < exp)) then
    table.insert(out, {hex, h[2] or '', h[3] or '', h[4] or '', h[5] or ''})
  end
end
return out
";

/// Single node only. KEYS: user index. ARGV: now, session-key head, tombstone-key head, key
/// tail, user, tombstone until, tombstone ttl. Deletes and tombstones every listed session that
/// is the user's or absent (a create whose index entry is already written); returns how many
/// were live.
const DELETE_USER_ATOMIC: &str = r"
local now = tonumber(ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local n = 0
for _, hex in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  local skey = ARGV[2] .. hex .. ARGV[4]
  local h = redis.call('HMGET', skey, 'version', 'idle', 'exp', 'user')
  if not h[1] or h[4] == ARGV[5] then
    if h[1] and live(h[2], h[3], now) then n = n + 1 end
    redis.call('DEL', skey)
    tombstone(ARGV[3] .. hex .. ARGV[4], ARGV[6], ARGV[7])
  end
end
redis.call('DEL', KEYS[1])
return n
";

/// KEYS: session or tombstone keys found by SCAN (all in one slot on a cluster). ARGV: now,
/// 's' or 't'. Deletes dead sessions / lapsed tombstones; returns how many.
const PURGE: &str = r"
local now = tonumber(ARGV[1])
local n = 0
for _, k in ipairs(KEYS) do
  if ARGV[2] == 't' then
    local u = tonumber(redis.call('GET', k) or '')
    if u and u <= now then redis.call('DEL', k); n = n + 1 end
  else
    local h = redis.call('HMGET', k, 'idle', 'exp')
    local idle, exp = tonumber(h[1] or ''), tonumber(h[2] or '')
    if idle and exp and not (now < idle and now < exp) then
      redis.call('DEL', k)
      n = n + 1
    end
  end
end
return n
";

/// The compiled scripts of one store (EVALSHA with automatic fallback to EVAL).
pub(super) struct Scripts {
    pub save: Script,
    pub index_then_save: Script,
    pub index_add: Script,
    pub index_list: Script,
    pub read: Script,
    pub write_data: Script,
    pub unlock: Script,
    pub delete: Script,
    pub touch: Script,
    pub sessions_of_atomic: Script,
    pub delete_user_atomic: Script,
    pub purge: Script,
}

fn script(body: &str) -> Script {
    Script::new(&format!("{PRELUDE}{body}"))
}

impl Scripts {
    pub(super) fn new() -> Self {
        Self {
            save: script(SAVE),
            index_then_save: script(&format!("{INDEX_THEN_SAVE}{SAVE}")),
            index_add: script(INDEX_ADD),
            index_list: script(INDEX_LIST),
            read: script(READ),
            write_data: script(WRITE_DATA),
            unlock: script(UNLOCK),
            delete: script(DELETE),
            touch: script(TOUCH),
            sessions_of_atomic: script(SESSIONS_OF_ATOMIC),
            delete_user_atomic: script(DELETE_USER_ATOMIC),
            purge: script(PURGE),
        }
    }
}
