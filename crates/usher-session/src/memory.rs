//! [`MemoryStore`]: a bounded, per-process store.
//!
//! One `std::sync::Mutex` guards everything, and no `.await` happens under it, so every operation
//! (including [`SessionStore::update_field`]) is atomic. Data is kept encoded, like in any other
//! store, so the codec is exercised and sizes are realistic.
//!
//! Bounds and eviction: at most `max_sessions` live sessions and at most as many tombstones. When
//! inserting into a full table, expired sessions (or lapsed tombstones) are purged first; if still
//! full, the **least recently used** session is evicted (load, save, touch and field updates
//! count as use) — or, for tombstones, the one lapsing soonest. Evicting a tombstone early weakens
//! the late-write guarantee only under that pressure, and only for an id nobody can recreate
//! (`save(.., None)` needs the unguessable id). Expired entries are also dropped lazily when met.

use std::collections::HashMap;
use std::num::NonZeroUsize;
use std::sync::{Mutex, MutexGuard, PoisonError};

use async_trait::async_trait;
use lru::LruCache;

use crate::data::{FieldOp, SessionData};
use crate::error::StoreError;
use crate::id::SessionKey;
use crate::store::{FieldUpdate, Record, SessionInfo, SessionStore, StoreConfig, Touch};

/// A bounded in-process [`SessionStore`]. See the module docs.
#[derive(Debug)]
pub struct MemoryStore {
    config: StoreConfig,
    max: usize,
    inner: Mutex<Inner>,
}

#[derive(Debug)]
struct Inner {
    live: LruCache<SessionKey, Entry>,
    tombstones: HashMap<SessionKey, u64>,
}

#[derive(Debug)]
struct Entry {
    data: Vec<u8>,
    version: u64,
    user: Option<String>,
    created_at: u64,
    last_seen_at: u64,
    idle_expires_at: u64,
    expires_at: u64,
}

impl Entry {
    fn is_live(&self, now: u64) -> bool {
        now < self.idle_expires_at && now < self.expires_at
    }

    fn info(&self, key: SessionKey) -> SessionInfo {
        SessionInfo {
            key,
            created_at: self.created_at,
            last_seen_at: self.last_seen_at,
            idle_expires_at: self.idle_expires_at,
            expires_at: self.expires_at,
        }
    }
}

impl Inner {
    /// Whether `key` is tombstoned at `now`; drops a lapsed tombstone.
    fn tombstoned(&mut self, key: &SessionKey, now: u64) -> bool {
        match self.tombstones.get(key) {
            Some(&until) if until > now => true,
            Some(_) => {
                self.tombstones.remove(key);
                false
            }
            None => false,
        }
    }

    /// The live entry under `key`, promoting it in the LRU order; drops an expired one.
    fn live_mut(&mut self, key: &SessionKey, now: u64) -> Option<&mut Entry> {
        if self.live.peek(key).is_some_and(|e| !e.is_live(now)) {
            self.live.pop(key);
        }
        self.live.get_mut(key)
    }

    fn purge(&mut self, now: u64) -> usize {
        let dead: Vec<SessionKey> = self
            .live
            .iter()
            .filter(|(_, e)| !e.is_live(now))
            .map(|(k, _)| *k)
            .collect();
        for k in &dead {
            self.live.pop(k);
        }
        let before = self.tombstones.len();
        self.tombstones.retain(|_, until| *until > now);
        dead.len() + before - self.tombstones.len()
    }

    fn tombstone(&mut self, key: SessionKey, until: u64, max: usize, now: u64) {
        if !self.tombstones.contains_key(&key) && self.tombstones.len() >= max {
            self.tombstones.retain(|_, u| *u > now);
            if self.tombstones.len() >= max {
                let soonest = self
                    .tombstones
                    .iter()
                    .min_by_key(|(_, u)| **u)
                    .map(|(k, _)| *k);
                if let Some(k) = soonest {
                    self.tombstones.remove(&k);
                }
            }
        }
        let slot = self.tombstones.entry(key).or_insert(until);
        *slot = (*slot).max(until);
    }
}

impl MemoryStore {
    /// An empty store holding at most `max_sessions` live sessions (and as many tombstones).
    pub fn new(config: StoreConfig, max_sessions: NonZeroUsize) -> Self {
        Self {
            config,
            max: max_sessions.get(),
            inner: Mutex::new(Inner {
                live: LruCache::unbounded(),
                tombstones: HashMap::new(),
            }),
        }
    }

    /// The number of live (unexpired as of the last purge) sessions held, for metrics and tests.
    pub fn len(&self) -> usize {
        self.lock().live.len()
    }

    /// Whether the store holds no session.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Test hook for the conformance suite: overwrites the stored bytes of a session's data.
    #[cfg(feature = "conformance")]
    #[doc(hidden)]
    pub fn overwrite_raw_data(&self, key: &SessionKey, bytes: Vec<u8>) -> bool {
        match self.lock().live.peek_mut(key) {
            Some(e) => {
                e.data = bytes;
                true
            }
            None => false,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // No code panics while holding the lock mid-update, so the data is consistent.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[async_trait]
impl SessionStore for MemoryStore {
    async fn load(&self, key: &SessionKey, now: u64) -> Result<Option<Record>, StoreError> {
        let mut inner = self.lock();
        let Some(e) = inner.live_mut(key, now) else {
            return Ok(None);
        };
        Ok(Some(Record {
            data: SessionData::decode(&e.data)?,
            version: e.version,
            user: e.user.clone(),
            created_at: e.created_at,
            last_seen_at: e.last_seen_at,
            idle_expires_at: e.idle_expires_at,
            expires_at: e.expires_at,
        }))
    }

    async fn save(
        &self,
        key: &SessionKey,
        record: &Record,
        expected_version: Option<u64>,
        now: u64,
    ) -> Result<u64, StoreError> {
        let bytes = record.data.encode()?;
        let mut inner = self.lock();
        if inner.tombstoned(key, now) {
            return Err(StoreError::Deleted);
        }
        match (inner.live_mut(key, now), expected_version) {
            (Some(e), None) => Err(StoreError::Conflict { current: e.version }),
            (None, Some(_)) => Err(StoreError::NotFound),
            (Some(e), Some(v)) if e.version != v => {
                Err(StoreError::Conflict { current: e.version })
            }
            (Some(e), Some(v)) => {
                e.data = bytes;
                e.version = v + 1;
                e.user.clone_from(&record.user);
                e.last_seen_at = e.last_seen_at.max(record.last_seen_at);
                e.idle_expires_at = e.idle_expires_at.max(record.idle_expires_at);
                e.expires_at = record.expires_at;
                Ok(e.version)
            }
            (None, None) => {
                if inner.live.len() >= self.max {
                    inner.purge(now);
                    if inner.live.len() >= self.max {
                        inner.live.pop_lru();
                    }
                }
                inner.live.put(
                    *key,
                    Entry {
                        data: bytes,
                        version: 1,
                        user: record.user.clone(),
                        created_at: record.created_at,
                        last_seen_at: record.last_seen_at,
                        idle_expires_at: record.idle_expires_at,
                        expires_at: record.expires_at,
                    },
                );
                Ok(1)
            }
        }
    }

    async fn update_field(
        &self,
        key: &SessionKey,
        field: &str,
        op: FieldOp,
        now: u64,
    ) -> Result<FieldUpdate, StoreError> {
        let mut inner = self.lock();
        if inner.tombstoned(key, now) {
            return Err(StoreError::Deleted);
        }
        let e = inner.live_mut(key, now).ok_or(StoreError::NotFound)?;
        let mut data = SessionData::decode(&e.data)?;
        let value = op.apply(&mut data, field)?;
        e.data = data.encode()?;
        e.version += 1;
        Ok(FieldUpdate {
            version: e.version,
            value,
        })
    }

    async fn delete(&self, key: &SessionKey, now: u64) -> Result<bool, StoreError> {
        let mut inner = self.lock();
        let existed = inner.live.pop(key).is_some_and(|e| e.is_live(now));
        let until = now.saturating_add(self.config.tombstone_secs);
        inner.tombstone(*key, until, self.max, now);
        Ok(existed)
    }

    async fn touch(&self, key: &SessionKey, now: u64) -> Result<Touch, StoreError> {
        let mut inner = self.lock();
        if inner.tombstoned(key, now) {
            return Ok(Touch::Missing);
        }
        let Some(e) = inner.live_mut(key, now) else {
            return Ok(Touch::Missing);
        };
        if now.saturating_sub(e.last_seen_at) < self.config.touch_interval_secs {
            return Ok(Touch::Skipped);
        }
        e.last_seen_at = e.last_seen_at.max(now);
        let idle = now
            .saturating_add(self.config.idle_timeout_secs)
            .min(e.expires_at);
        e.idle_expires_at = e.idle_expires_at.max(idle);
        Ok(Touch::Written)
    }

    async fn sessions_of(&self, user: &str, now: u64) -> Result<Vec<SessionInfo>, StoreError> {
        // A scan: the store is bounded and per process, so no secondary index is kept.
        let inner = self.lock();
        Ok(inner
            .live
            .iter()
            .filter(|(_, e)| e.user.as_deref() == Some(user) && e.is_live(now))
            .map(|(k, e)| e.info(*k))
            .collect())
    }

    async fn delete_user_sessions(&self, user: &str, now: u64) -> Result<usize, StoreError> {
        let mut inner = self.lock();
        let keys: Vec<(SessionKey, bool)> = inner
            .live
            .iter()
            .filter(|(_, e)| e.user.as_deref() == Some(user))
            .map(|(k, e)| (*k, e.is_live(now)))
            .collect();
        let until = now.saturating_add(self.config.tombstone_secs);
        let mut deleted = 0;
        for (k, live) in keys {
            inner.live.pop(&k);
            inner.tombstone(k, until, self.max, now);
            deleted += usize::from(live);
        }
        Ok(deleted)
    }

    async fn purge_expired(&self, now: u64) -> Result<usize, StoreError> {
        Ok(self.lock().purge(now))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::SessionId;

    fn rec(now: u64) -> Record {
        Record::new(SessionData::new(), None, now, 100, 1000)
    }

    #[tokio::test]
    async fn evicts_expired_first_then_lru() {
        let store = MemoryStore::new(StoreConfig::default(), NonZeroUsize::new(2).unwrap());
        let a = SessionId::random().key();
        let b = SessionId::random().key();
        let c = SessionId::random().key();
        let d = SessionId::random().key();
        store.save(&a, &rec(0), None, 0).await.unwrap();
        store.save(&b, &rec(50), None, 50).await.unwrap();
        // At 120, `a` has idled out; inserting `c` purges it instead of evicting `b`.
        store.save(&c, &rec(120), None, 120).await.unwrap();
        assert_eq!(store.len(), 2);
        assert!(store.load(&b, 120).await.unwrap().is_some());
        // Now `c` is least recently used (`b` was just loaded), so `d` evicts `c`.
        store.save(&d, &rec(121), None, 121).await.unwrap();
        assert!(store.load(&c, 121).await.unwrap().is_none());
        assert!(store.load(&b, 121).await.unwrap().is_some());
        assert!(store.load(&d, 121).await.unwrap().is_some());
    }

    #[tokio::test]
    async fn tombstones_are_bounded() {
        let cfg = StoreConfig {
            tombstone_secs: 10,
            ..StoreConfig::default()
        };
        let store = MemoryStore::new(cfg, NonZeroUsize::new(2).unwrap());
        for i in 0..5 {
            store.delete(&SessionId::random().key(), i).await.unwrap();
        }
        assert!(store.lock().tombstones.len() <= 2);
    }
}
