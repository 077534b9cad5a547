//! [`Recent`]: the small in-process cache of outcomes this process has just produced, so a retry
//! that lands on the same process right after the response is answered without waiting for the
//! background write (see "The outcome write" in the module docs).
//!
//! Bounded three ways: at most [`CAPACITY`] entries (least recently used evicted), at most
//! [`MAX_BYTES`] of stored responses in all (responses above [`MAX_ENTRY_BYTES`] are not kept),
//! and each entry lives at most [`MAX_AGE`] — by then its store write has long finished and the
//! store answers as well. An entry also dies with its record (the layer's clock reaching the
//! record's expiry), so the window is the same from the cache as from the store.

use std::num::NonZeroUsize;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use lru::LruCache;
use tokio::sync::watch;

use super::record::Stored;
use crate::id::SessionKey;

/// Most entries kept.
pub(crate) const CAPACITY: NonZeroUsize = NonZeroUsize::new(1024).expect("non-zero");
/// Longest an entry is served.
pub(crate) const MAX_AGE: Duration = Duration::from_secs(5);
/// Largest response kept (status, headers and body); larger ones are answered from the store.
pub(crate) const MAX_ENTRY_BYTES: usize = 64 << 10;
/// Most response bytes kept in all.
pub(crate) const MAX_BYTES: usize = 8 << 20;

/// One just-completed outcome.
struct Entry {
    fingerprint: String,
    /// `Some` for `done`, `None` for `released`.
    outcome: Option<Stored>,
    /// The record's expiry (layer clock, Unix seconds).
    expires_at: u64,
    at: Instant,
    /// Turns `true` once the store write has been attempted.
    written: watch::Receiver<bool>,
    bytes: usize,
}

/// What the cache says about a request.
pub(crate) enum Hit {
    /// This process just completed the same request: replay this.
    Replay(Stored),
    /// This process just released the key and the store write is still under way: wait on the
    /// receiver (it turns `true`, or its sender is dropped), then ask the store.
    Releasing(watch::Receiver<bool>),
    /// Ask the store.
    Miss,
}

struct Inner {
    entries: LruCache<SessionKey, Entry>,
    bytes: usize,
}

/// The cache; one per [`super::IdempotencyLayer`] (shared by its clones).
pub(crate) struct Recent {
    inner: Mutex<Inner>,
}

impl Recent {
    pub(crate) fn new() -> Self {
        Self {
            inner: Mutex::new(Inner {
                entries: LruCache::new(CAPACITY),
                bytes: 0,
            }),
        }
    }

    /// Remembers an outcome whose store write is about to start; the returned sender is to be set
    /// to `true` (or dropped) when the write is done. A response too large to keep is not
    /// remembered (the sender then has no receiver, which is fine).
    pub(crate) fn remember(
        &self,
        key: SessionKey,
        fingerprint: &str,
        outcome: Option<&Stored>,
        expires_at: u64,
    ) -> watch::Sender<bool> {
        let (tx, rx) = watch::channel(false);
        let bytes = fingerprint.len() + outcome.map_or(0, size_of_stored);
        if bytes > MAX_ENTRY_BYTES {
            let mut inner = self.lock();
            inner.remove(&key); // an older outcome of this key must not be served instead
            return tx;
        }
        let entry = Entry {
            fingerprint: fingerprint.to_owned(),
            outcome: outcome.cloned(),
            expires_at,
            at: Instant::now(),
            written: rx,
            bytes,
        };
        let mut inner = self.lock();
        inner.remove(&key);
        inner.bytes += bytes;
        if let Some((_, evicted)) = inner.entries.push(key, entry) {
            inner.bytes -= evicted.bytes;
        }
        while inner.bytes > MAX_BYTES {
            match inner.entries.pop_lru() {
                Some((_, evicted)) => inner.bytes -= evicted.bytes,
                None => break,
            }
        }
        tx
    }

    /// What to do with a request for `key` with fingerprint `fp` at `now` (layer clock).
    pub(crate) fn lookup(&self, key: &SessionKey, fp: &str, now: u64) -> Hit {
        let mut inner = self.lock();
        let Some(entry) = inner.entries.get(key) else {
            return Hit::Miss;
        };
        if entry.at.elapsed() >= MAX_AGE || now >= entry.expires_at {
            inner.remove(key);
            return Hit::Miss;
        }
        if entry.fingerprint != fp {
            return Hit::Miss; // the store answers 422 (or 409 while our write is pending)
        }
        match &entry.outcome {
            Some(stored) => Hit::Replay(stored.clone()),
            None if !*entry.written.borrow() => Hit::Releasing(entry.written.clone()),
            None => {
                inner.remove(key);
                Hit::Miss
            }
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Every critical section leaves `bytes` consistent before anything that could panic.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Inner {
    fn remove(&mut self, key: &SessionKey) {
        if let Some(old) = self.entries.pop(key) {
            self.bytes -= old.bytes;
        }
    }
}

fn size_of_stored(s: &Stored) -> usize {
    s.body.len()
        + s.headers
            .iter()
            .map(|(n, v)| n.as_str().len() + v.len())
            .sum::<usize>()
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use http::{HeaderMap, StatusCode};

    use super::*;
    use crate::SessionId;

    fn stored(len: usize) -> Stored {
        Stored {
            status: StatusCode::CREATED,
            headers: HeaderMap::new(),
            body: Bytes::from(vec![b'x'; len]),
        }
    }

    #[test]
    fn replays_done_only_for_the_same_fingerprint_until_expiry() {
        let recent = Recent::new();
        let key = SessionId::random().key();
        let _tx = recent.remember(key, "fp", Some(&stored(3)), 100);
        assert!(matches!(recent.lookup(&key, "fp", 99), Hit::Replay(s) if s == stored(3)));
        assert!(matches!(recent.lookup(&key, "other", 99), Hit::Miss));
        assert!(matches!(recent.lookup(&key, "fp", 100), Hit::Miss));
        assert!(matches!(recent.lookup(&key, "fp", 0), Hit::Miss), "dropped");
    }

    #[test]
    fn released_is_waited_for_only_while_written_is_false() {
        let recent = Recent::new();
        let key = SessionId::random().key();
        let tx = recent.remember(key, "fp", None, 100);
        let Hit::Releasing(rx) = recent.lookup(&key, "fp", 1) else {
            panic!("expected Releasing");
        };
        tx.send_replace(true);
        assert!(*rx.borrow());
        assert!(matches!(recent.lookup(&key, "fp", 1), Hit::Miss));
    }

    #[test]
    fn large_responses_are_not_kept_and_bytes_are_bounded() {
        let recent = Recent::new();
        let key = SessionId::random().key();
        let _tx = recent.remember(key, "fp", Some(&stored(1)), 100);
        let _tx = recent.remember(key, "fp", Some(&stored(MAX_ENTRY_BYTES + 1)), 100);
        assert!(
            matches!(recent.lookup(&key, "fp", 1), Hit::Miss),
            "old one gone"
        );
        for _ in 0..(MAX_BYTES / (MAX_ENTRY_BYTES - 64) + 8) {
            let _tx = recent.remember(
                SessionId::random().key(),
                "fp",
                Some(&stored(MAX_ENTRY_BYTES - 64)),
                100,
            );
        }
        let inner = recent.lock();
        assert!(inner.bytes <= MAX_BYTES);
        assert_eq!(
            inner.bytes,
            inner.entries.iter().map(|(_, e)| e.bytes).sum::<usize>()
        );
    }
}
