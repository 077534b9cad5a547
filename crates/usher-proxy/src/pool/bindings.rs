//! The distinct client bindings seen by one backend, for the `pinned_clients` estimate, without a
//! lock on the request path.
//!
//! A response with affinity records `(binding hash, now)` by pushing it onto a bounded lock-free
//! queue ([`crossbeam_queue::ArrayQueue`]). The map of distinct bindings (hash → last seen) is
//! only touched by the reader ([`Bindings::pinned`], for admin and metrics), which first folds
//! the queue into it. When the queue fills up between two readings, the request that finds it
//! full folds it itself, if it gets the map's lock without waiting; if another thread holds it
//! (and is emptying the queue), the request retries its push once and otherwise drops the record
//! and counts it ([`Bindings::dropped`]). So no request ever waits for a lock, small counts are
//! exact, and memory stays bounded: the queue's fixed capacity plus at most
//! [`MAX_TRACKED_BINDINGS`] map entries.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Mutex, MutexGuard, TryLockError};

use crossbeam_queue::ArrayQueue;

/// Most bindings remembered per backend for the `pinned_clients` estimate.
const MAX_TRACKED_BINDINGS: usize = 200_000;

/// Records queued per backend between foldings (16 bytes each, allocated up front).
const QUEUE_CAPACITY: usize = 1024;

type SeenMap = HashMap<u64, u64, foldhash::fast::RandomState>;

/// One backend's binding records (see the module docs).
#[derive(Debug)]
pub(super) struct Bindings {
    queue: ArrayQueue<(u64, u64)>,
    /// Distinct bindings → last seen, pool clock. Every sticky request's record is folded in
    /// here, so the map hashes with foldhash, seeded per process (the keys are hashes of client
    /// values, and the map is capped at [`MAX_TRACKED_BINDINGS`] anyway).
    seen: Mutex<SeenMap>,
    /// Records dropped because the queue was full while another thread was folding it.
    dropped: AtomicU64,
}

impl Default for Bindings {
    fn default() -> Self {
        Self {
            queue: ArrayQueue::new(QUEUE_CAPACITY),
            seen: Mutex::new(SeenMap::default()),
            dropped: AtomicU64::new(0),
        }
    }
}

impl Bindings {
    /// Records a request from `binding` at `now_ms`. Never waits for a lock.
    pub(super) fn saw(&self, binding: u64, now_ms: u64) {
        let Err(record) = self.queue.push((binding, now_ms)) else {
            return;
        };
        match self.seen.try_lock() {
            Ok(mut seen) => {
                self.fold(&mut seen);
                remember(&mut seen, record);
            }
            Err(TryLockError::Poisoned(e)) => {
                let mut seen = e.into_inner();
                self.fold(&mut seen);
                remember(&mut seen, record);
            }
            // Someone else is folding (so emptying the queue): one more try, then drop it.
            Err(TryLockError::WouldBlock) => {
                if self.queue.push(record).is_err() {
                    self.dropped.fetch_add(1, Relaxed);
                }
            }
        }
    }

    /// Distinct bindings seen within `window_ms` before `now_ms` (forgets older ones).
    pub(super) fn pinned(&self, now_ms: u64, window_ms: u64) -> usize {
        let mut seen = self.lock();
        self.fold(&mut seen);
        seen.retain(|_, t| now_ms.saturating_sub(*t) < window_ms);
        seen.len()
    }

    /// Records dropped so far because the queue was full (see the module docs).
    pub(super) fn dropped(&self) -> u64 {
        self.dropped.load(Relaxed)
    }

    fn lock(&self) -> MutexGuard<'_, SeenMap> {
        self.seen.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Moves the queued records into `seen`. Bounded: takes at most the queue's capacity, so a
    /// steady stream of pushes cannot keep it going.
    fn fold(&self, seen: &mut SeenMap) {
        for _ in 0..self.queue.capacity() {
            match self.queue.pop() {
                Some(record) => remember(seen, record),
                None => break,
            }
        }
    }
}

/// Inserts one record, keeping the latest time; when full, forgets the oldest half first rather
/// than grow without bound.
fn remember(seen: &mut SeenMap, (binding, now_ms): (u64, u64)) {
    if seen.len() >= MAX_TRACKED_BINDINGS && !seen.contains_key(&binding) {
        let mut times: Vec<u64> = seen.values().copied().collect();
        let mid = times.len() / 2;
        let cutoff = *times.select_nth_unstable(mid).1;
        seen.retain(|_, t| *t > cutoff);
    }
    let last = seen.entry(binding).or_insert(now_ms);
    *last = (*last).max(now_ms);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_counts_are_exact_and_old_bindings_are_forgotten() {
        let b = Bindings::default();
        for (binding, t) in [(1, 10), (2, 20), (1, 30), (3, 40)] {
            b.saw(binding, t);
        }
        assert_eq!(b.pinned(45, 100), 3);
        // Binding 1 was last seen at 30 (not 10), binding 2 at 20.
        assert_eq!(b.pinned(125, 100), 2);
        assert_eq!(b.pinned(1000, 100), 0);
        assert_eq!(b.dropped(), 0);
    }

    #[test]
    fn a_full_queue_is_folded_by_the_request_that_finds_it_full() {
        let b = Bindings::default();
        let n = (QUEUE_CAPACITY * 3 + 5) as u64;
        for binding in 0..n {
            b.saw(binding, 1);
        }
        assert!(b.queue.len() < QUEUE_CAPACITY);
        assert_eq!(b.pinned(2, 10), n as usize);
        assert_eq!(b.dropped(), 0);
    }

    #[test]
    fn a_full_queue_drops_records_rather_than_wait_for_the_lock() {
        let b = Bindings::default();
        for binding in 0..QUEUE_CAPACITY as u64 {
            b.saw(binding, 1);
        }
        let held = b.lock();
        b.saw(u64::MAX, 1);
        drop(held);
        assert_eq!(b.dropped(), 1);
        assert_eq!(b.pinned(2, 10), QUEUE_CAPACITY);
    }

    #[test]
    fn concurrent_records_are_all_counted() {
        let b = std::sync::Arc::new(Bindings::default());
        let threads: Vec<_> = (0..4u64)
            .map(|t| {
                let b = std::sync::Arc::clone(&b);
                std::thread::spawn(move || {
                    for k in 0..5_000u64 {
                        b.saw(t * 1_000_000 + k % 700, 5);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().expect("thread");
        }
        // Each binding was recorded 7 times; one can only be missing if all 7 were dropped.
        let pinned = b.pinned(6, 10) as u64;
        assert!(pinned <= 2800 && pinned + b.dropped() >= 2800, "{pinned}");
    }
}
