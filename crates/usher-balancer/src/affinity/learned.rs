//! Learned app-cookie routes. SKELETON: public API fixed, bodies being written.

use std::time::{Duration, Instant};

use crate::backend::BackendId;

/// A bounded table with sliding TTL from an application's session-cookie value to the backend that
/// issued it. Stores only a 64-bit hash of each value, never the value itself.
#[derive(Debug)]
pub struct LearnedRoutes {
    _todo: (),
}

impl LearnedRoutes {
    /// A table holding at most `capacity` routes, each forgotten `ttl` after its last use.
    pub fn new(capacity: usize, ttl: Duration) -> Self {
        let _ = (capacity, ttl);
        todo!()
    }
    /// Records that `backend` issued the cookie value `value`.
    pub fn learn(&self, value: &[u8], backend: &BackendId, now: Instant) {
        let _ = (value, backend, now);
        todo!()
    }
    /// The backend that issued `value`, if known and not expired; a hit refreshes the TTL.
    pub fn lookup(&self, value: &[u8], now: Instant) -> Option<BackendId> {
        let _ = (value, now);
        todo!()
    }
    /// Number of live routes (may include not-yet-evicted expired ones).
    pub fn len(&self) -> usize {
        todo!()
    }
    /// Whether the table is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
