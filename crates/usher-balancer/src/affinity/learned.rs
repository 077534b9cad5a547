//! Learned app-cookie routes, behind `app-cookie:NAME` affinity.
//!
//! When a backend's response sets the application's session cookie (say `JSESSIONID`), the
//! proxy [`learn`](LearnedRoutes::learn)s "this value came from that backend"; later requests
//! carrying the cookie are routed back with [`lookup`](LearnedRoutes::lookup).
//!
//! * **No secrets kept**: session cookie values are credentials, so only their 64-bit
//!   [`hash_key`] is stored. A memory dump reveals which backends hold sessions, not the sessions.
//! * **Bounded**: at most `capacity` routes; the least recently used is evicted first.
//! * **Sliding TTL**: a route is forgotten `ttl` after its last learn or lookup hit.
//! * **Concurrent**: 16 independently locked LRU shards chosen by the hash, so tasks rarely
//!   contend; locks are held only for a hash-map operation, never across I/O. A poisoned shard
//!   lock (a panic elsewhere while it was held) is recovered rather than propagated.
//!
//! Time is passed in as [`Instant`]s, so tests drive the clock.

use std::num::NonZeroUsize;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use lru::LruCache;

use crate::backend::BackendId;
use crate::hash::hash_key;

/// Number of shards (fewer when the capacity is smaller, so the bound stays exact).
const SHARDS: usize = 16;

/// One learned route.
#[derive(Debug)]
struct Entry {
    backend: BackendId,
    last_used: Instant,
}

type Shard = LruCache<u64, Entry>;

/// A bounded table with sliding TTL from an application's session-cookie value to the backend that
/// issued it. Stores only a 64-bit hash of each value, never the value itself.
pub struct LearnedRoutes {
    /// Shard `i` holds the hashes with `hash % shards.len() == i`; capacities sum to `capacity`.
    shards: Box<[Mutex<Shard>]>,
    capacity: usize,
    ttl: Duration,
}

impl std::fmt::Debug for LearnedRoutes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LearnedRoutes")
            .field("capacity", &self.capacity)
            .field("ttl", &self.ttl)
            .field("shards", &self.shards.len())
            .field("len", &self.len())
            .finish()
    }
}

impl LearnedRoutes {
    /// A table holding at most `capacity` routes (at least 1), each forgotten `ttl` after its
    /// last use.
    pub fn new(capacity: usize, ttl: Duration) -> Self {
        let capacity = capacity.max(1);
        let n = SHARDS.min(capacity);
        let shards = (0..n)
            .map(|i| {
                // Split evenly; the first `capacity % n` shards take one extra. Each gets >= 1.
                let cap = capacity / n + usize::from(i < capacity % n);
                Mutex::new(LruCache::new(
                    NonZeroUsize::new(cap).unwrap_or(NonZeroUsize::MIN),
                ))
            })
            .collect();
        Self {
            shards,
            capacity,
            ttl,
        }
    }

    /// The most routes the table holds.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// How long a route lives after its last use.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Records that `backend` issued the cookie value `value` (replacing any earlier backend:
    /// a re-login elsewhere re-learns). May evict the shard's least recently used route.
    pub fn learn(&self, value: &[u8], backend: &BackendId, now: Instant) {
        let hash = hash_key(value);
        let entry = Entry {
            backend: backend.clone(),
            last_used: now,
        };
        // Drop whatever was evicted or replaced only after unlocking.
        let _old = self.shard(hash).push(hash, entry);
    }

    /// The backend that issued `value`, if known and not expired; a hit refreshes the TTL.
    ///
    /// A route is expired once `now >= last use + ttl`; looking one up removes it.
    pub fn lookup(&self, value: &[u8], now: Instant) -> Option<BackendId> {
        let hash = hash_key(value);
        let mut shard = self.shard(hash);
        let entry = shard.get_mut(&hash)?;
        if now.saturating_duration_since(entry.last_used) < self.ttl {
            // Tasks may pass slightly stale `now`s; never move a route's clock backwards.
            entry.last_used = entry.last_used.max(now);
            return Some(entry.backend.clone());
        }
        let expired = shard.pop(&hash);
        drop(shard);
        drop(expired);
        None
    }

    /// Forgets the route for `value`, if any (e.g. when the application clears its cookie).
    pub fn forget(&self, value: &[u8]) {
        let hash = hash_key(value);
        let _old = self.shard(hash).pop(&hash);
    }

    /// Number of live routes (may include not-yet-evicted expired ones).
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| lock(s).len()).sum()
    }

    /// Whether the table is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The locked shard for `hash`.
    fn shard(&self, hash: u64) -> MutexGuard<'_, Shard> {
        // `shards.len()` is 1..=16, so the remainder always fits in `usize` and indexes in range.
        let i = (hash % self.shards.len() as u64) as usize;
        lock(&self.shards[i])
    }
}

/// Locks a shard, recovering from poisoning: every update is a single map operation, so a
/// panic elsewhere cannot leave a half-written route behind.
fn lock(shard: &Mutex<Shard>) -> MutexGuard<'_, Shard> {
    shard.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TTL: Duration = Duration::from_secs(60);

    fn id(s: &str) -> BackendId {
        BackendId::new(s).expect("valid id")
    }

    #[test]
    fn learn_then_lookup() {
        let t = LearnedRoutes::new(100, TTL);
        let now = Instant::now();
        assert!(t.is_empty());
        assert_eq!(t.lookup(b"abc", now), None);
        t.learn(b"abc", &id("shop-1"), now);
        t.learn(b"def", &id("shop-2"), now);
        assert_eq!(t.lookup(b"abc", now), Some(id("shop-1")));
        assert_eq!(t.lookup(b"def", now), Some(id("shop-2")));
        assert_eq!(t.lookup(b"abcd", now), None);
        assert_eq!(t.len(), 2);
        t.forget(b"abc");
        assert_eq!((t.lookup(b"abc", now), t.len()), (None, 1));
    }

    #[test]
    fn expires_after_ttl_and_lookup_removes_it() {
        let t = LearnedRoutes::new(100, TTL);
        let t0 = Instant::now();
        t.learn(b"s", &id("shop-1"), t0);
        assert_eq!(
            t.lookup(b"s", t0 + TTL - Duration::from_millis(1)),
            Some(id("shop-1"))
        );
        let t1 = t0 + TTL - Duration::from_millis(1);
        // Boundary: expired at exactly last use + ttl.
        assert_eq!(t.lookup(b"s", t1 + TTL), None);
        assert_eq!(t.len(), 0);
        assert_eq!(t.lookup(b"s", t1), None, "removed, not merely hidden");
    }

    #[test]
    fn hits_slide_the_ttl() {
        let t = LearnedRoutes::new(100, TTL);
        let mut now = Instant::now();
        t.learn(b"s", &id("shop-1"), now);
        for _ in 0..10 {
            now += TTL / 2;
            assert_eq!(t.lookup(b"s", now), Some(id("shop-1")));
        }
        // An earlier `now` (a task with a stale clock) neither expires nor rewinds the route.
        assert_eq!(t.lookup(b"s", now - TTL * 3), Some(id("shop-1")));
        assert_eq!(
            t.lookup(b"s", now + TTL - Duration::from_millis(1)),
            Some(id("shop-1"))
        );
        now += TTL - Duration::from_millis(1);
        assert_eq!(t.lookup(b"s", now + TTL), None);
    }

    #[test]
    fn relearning_overwrites() {
        let t = LearnedRoutes::new(100, TTL);
        let now = Instant::now();
        t.learn(b"s", &id("shop-1"), now);
        t.learn(b"s", &id("shop-2"), now + Duration::from_secs(1));
        assert_eq!(t.len(), 1);
        // The second learn also restarted the TTL.
        assert_eq!(
            t.lookup(b"s", now + TTL + Duration::from_millis(500)),
            Some(id("shop-2"))
        );
    }

    #[test]
    fn capacity_is_a_hard_bound() {
        let now = Instant::now();
        for cap in [0, 1, 5, 15, 16, 17, 100, 1000] {
            let t = LearnedRoutes::new(cap, TTL);
            for i in 0..cap.max(1) * 10 {
                t.learn(format!("session-{i}").as_bytes(), &id("shop-1"), now);
                assert!(t.len() <= cap.max(1), "cap {cap} after {i}");
            }
            assert_eq!(t.capacity(), cap.max(1));
            // The newest route survives.
            let last = format!("session-{}", cap.max(1) * 10 - 1);
            assert_eq!(t.lookup(last.as_bytes(), now), Some(id("shop-1")));
        }
        // Evenly filled large tables get close to the bound.
        let t = LearnedRoutes::new(1000, TTL);
        (0..20_000).for_each(|i| t.learn(&u64::to_le_bytes(i), &id("a"), now));
        assert!((900..=1000).contains(&t.len()), "{}", t.len());
    }

    #[test]
    fn survives_a_poisoned_shard() {
        let t = std::sync::Arc::new(LearnedRoutes::new(16, TTL));
        let now = Instant::now();
        t.learn(b"s", &id("shop-1"), now);
        let t2 = std::sync::Arc::clone(&t);
        let poisoner = std::thread::spawn(move || {
            let _guard = t2.shard(hash_key(b"s"));
            panic!("poison the shard");
        });
        assert!(poisoner.join().is_err());
        assert_eq!(t.lookup(b"s", now), Some(id("shop-1")));
        t.learn(b"s", &id("shop-2"), now);
        assert_eq!((t.lookup(b"s", now), t.len()), (Some(id("shop-2")), 1));
    }

    #[test]
    fn concurrent_use() {
        let t = LearnedRoutes::new(10_000, TTL);
        let now = Instant::now();
        std::thread::scope(|s| {
            for w in 0..4u8 {
                let t = &t;
                s.spawn(move || {
                    let b = id(&format!("shop-{w}"));
                    for i in 0..1000u32 {
                        let key = [&[w][..], &i.to_le_bytes()].concat();
                        t.learn(&key, &b, now);
                        assert_eq!(t.lookup(&key, now).as_ref(), Some(&b));
                    }
                });
            }
        });
        assert_eq!(t.len(), 4000);
    }

    #[test]
    fn debug_shows_no_keys() {
        let t = LearnedRoutes::new(10, TTL);
        t.learn(b"secret-session", &id("shop-1"), Instant::now());
        let d = format!("{t:?}");
        assert!(
            d.contains("len: 1") && !d.contains("secret") && !d.contains("shop"),
            "{d}"
        );
    }
}
