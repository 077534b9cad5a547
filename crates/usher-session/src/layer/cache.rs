//! The optional read-only fallback: a bounded, per-process cache of recently loaded sessions that
//! [`crate::OutagePolicy::ReadOnlyCache`] serves from while the store is unreachable.
//!
//! Entries are what this process last read or wrote, so during an outage a client may see its
//! session up to `max_age` old (a change made through another replica is not seen). That is why
//! such sessions are read-only: nothing is written on top of a possibly stale copy.

use std::num::NonZeroUsize;
use std::sync::{Mutex, MutexGuard, PoisonError};

use lru::LruCache;

use crate::id::SessionKey;
use crate::store::Record;

#[derive(Debug)]
pub(crate) struct ReadCache {
    max_age_secs: u64,
    entries: Mutex<LruCache<SessionKey, (Record, u64)>>,
}

impl ReadCache {
    pub(crate) fn new(capacity: NonZeroUsize, max_age_secs: u64) -> Self {
        Self {
            max_age_secs,
            entries: Mutex::new(LruCache::new(capacity)),
        }
    }

    /// Remembers `record` as read or written at `now`.
    pub(crate) fn put(&self, key: SessionKey, record: &Record, now: u64) {
        self.lock().put(key, (record.clone(), now));
    }

    pub(crate) fn forget(&self, key: &SessionKey) {
        self.lock().pop(key);
    }

    /// The cached record, if cached within `max_age` and still alive at `now`.
    pub(crate) fn get(&self, key: &SessionKey, now: u64) -> Option<Record> {
        let mut entries = self.lock();
        let (record, at) = entries.get(key)?;
        if now.saturating_sub(*at) <= self.max_age_secs && record.is_live(now) {
            Some(record.clone())
        } else {
            entries.pop(key);
            None
        }
    }

    fn lock(&self) -> MutexGuard<'_, LruCache<SessionKey, (Record, u64)>> {
        // Every critical section is a single LruCache call; a panic cannot leave it half-updated.
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{SessionData, SessionId};

    #[test]
    fn serves_fresh_live_entries_only() {
        let cache = ReadCache::new(NonZeroUsize::new(2).unwrap(), 30);
        let rec = Record::new(SessionData::new(), None, 1000, 300, 3600);
        let (a, b, c) = (
            SessionId::random().key(),
            SessionId::random().key(),
            SessionId::random().key(),
        );
        cache.put(a, &rec, 1000);
        assert!(cache.get(&a, 1030).is_some());
        assert!(cache.get(&a, 1031).is_none(), "older than max_age");
        cache.put(a, &rec, 1290);
        assert!(cache.get(&a, 1301).is_none(), "idle-expired session");
        cache.put(a, &rec, 1000);
        cache.put(b, &rec, 1000);
        cache.put(c, &rec, 1000);
        assert!(cache.get(&a, 1000).is_none(), "evicted: capacity 2");
        cache.forget(&b);
        assert!(cache.get(&b, 1000).is_none());
        assert!(cache.get(&c, 1000).is_some());
    }
}
