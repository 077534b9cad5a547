//! Pool-wide load counters, so a hashed pick's bounded-load cap needs no pass over the backends.
//!
//! The cap is `c ×` the mean in-flight count over the backends that take new work
//! ([`usher_balancer::LoadView::totals`]). Scanning for it costs every backend's atomics on every
//! hashed pick. Instead the pool keeps two numbers current:
//!
//! * the sum of in-flight requests over the backends of the current snapshot (each slot adds to it
//!   as its own count changes, and a slot leaving the pool takes its share out: see
//!   [`Counter::detach`]);
//! * a *generation*, bumped by every change of a backend's availability (drain, activate, a
//!   health verdict, an ejection) and every membership change.
//!
//! When every backend of a snapshot takes new work, the totals are just (backends, pool sum). A
//! view learns that with one scan, records the generation it saw, and answers in O(1) while the
//! generation stays the same. If any backend is out, the view scans as before (and does not
//! record anything), so the O(1) answer is never taken from a state it does not describe.
//!
//! Races: the counters are relaxed atomics read while requests start and finish, exactly as a scan
//! would read them; a mutation that lands during a pick is seen by the next one. A pick racing a
//! membership change may read the new sum with the old member list once; a sum that went briefly
//! below zero (a request starting on a slot being detached) is recognised and answered by a scan.

use std::sync::atomic::{AtomicU64, Ordering};

use usher_balancer::LoadTotals;

/// Set in a slot's in-flight word once the slot has left the pool: from then on its requests no
/// longer move the pool sum. The count itself lives in the other 63 bits.
const DETACHED: u64 = 1 << 63;

/// Counters shared by a pool and all its slots.
#[derive(Debug, Default)]
pub struct PoolLoad {
    /// Requests in flight on the slots of the current snapshot (wrapping; see [`Self::sum`]).
    inflight: AtomicU64,
    /// Bumped by every change to which backends take new work, and by every membership change.
    generation: AtomicU64,
    /// Bumped by every membership change; a snapshot remembers the value it was built at.
    epoch: AtomicU64,
}

impl PoolLoad {
    /// Records that some backend's availability changed (call after changing it).
    pub fn changed(&self) {
        self.generation.fetch_add(1, Ordering::Release);
    }

    /// Starts a membership change: returns the epoch the new snapshot is built at. Snapshots of
    /// earlier epochs stop using the pool sum from here on.
    pub fn next_epoch(&self) -> u64 {
        self.generation.fetch_add(1, Ordering::Release);
        self.epoch.fetch_add(1, Ordering::AcqRel).wrapping_add(1)
    }

    /// The current generation, and whether `epoch` is still the current one.
    pub fn generation(&self, epoch: u64) -> (u64, bool) {
        let generation = self.generation.load(Ordering::Acquire);
        (generation, self.epoch.load(Ordering::Acquire) == epoch)
    }

    /// The pool sum, unless it is transiently below zero (then `None`: scan instead).
    pub fn sum(&self) -> Option<u64> {
        let sum = self.inflight.load(Ordering::Relaxed);
        (sum & DETACHED == 0).then_some(sum)
    }
}

/// One slot's in-flight count, feeding the pool sum while the slot is in the pool.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    /// Requests in flight on this slot.
    #[inline]
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed) & !DETACHED
    }

    /// A request started.
    pub fn begin(&self, pool: &PoolLoad) {
        if self.0.fetch_add(1, Ordering::Relaxed) & DETACHED == 0 {
            pool.inflight.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// A request ended.
    pub fn end(&self, pool: &PoolLoad) {
        if self.0.fetch_sub(1, Ordering::Relaxed) & DETACHED == 0 {
            pool.inflight.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// The slot left the pool: takes its requests out of the pool sum, once. Whichever of this
    /// and a concurrent [`Self::begin`] / [`Self::end`] comes first, the sum ends up without the
    /// slot: the flag and the count change in one atomic step, so each request is either counted
    /// here or by its own `end`, never both.
    pub fn detach(&self, pool: &PoolLoad) {
        let before = self.0.fetch_or(DETACHED, Ordering::Relaxed);
        if before & DETACHED == 0 {
            pool.inflight.fetch_sub(before, Ordering::Relaxed);
        }
    }
}

/// What a snapshot remembers about its pool: the epoch it was built at, and the generation at
/// which all its backends were last seen taking new work.
#[derive(Debug)]
pub struct Steady {
    epoch: u64,
    /// The generation verified steady, plus one (0: never).
    verified: AtomicU64,
    /// The generation at which every backend was seen taking new work (weights aside), plus
    /// one (0: never); see [`Self::all_take_new`].
    available: AtomicU64,
    /// Every backend had weight > 0 when the snapshot was built.
    all_weighted: bool,
}

impl Steady {
    /// For a snapshot built at `epoch`.
    pub fn new(epoch: u64, all_weighted: bool) -> Self {
        Self {
            epoch,
            verified: AtomicU64::new(0),
            available: AtomicU64::new(0),
            all_weighted,
        }
    }

    /// Whether every backend of this snapshot takes new work: O(1) while the snapshot is
    /// current and was verified at the current generation; else `check` (a pass over the
    /// backends), recording a `true` for the next pick. A backend can only become unavailable
    /// through a change that bumps the generation (a back-off deadline only ever expires), so a
    /// recorded answer holds until the generation moves.
    pub fn all_take_new(&self, pool: &PoolLoad, check: impl FnOnce() -> bool) -> bool {
        let (generation, current) = pool.generation(self.epoch);
        if !current {
            return false;
        }
        let mark = generation.wrapping_add(1);
        if self.available.load(Ordering::Relaxed) == mark {
            return true;
        }
        let all = check();
        if all {
            self.available.store(mark, Ordering::Relaxed);
        }
        all
    }

    /// The totals in O(1) when this snapshot is current and was verified steady at the current
    /// generation; else `scan` (which returns the totals and whether every one of the `members`
    /// backends was counted), recording a steady result for the next pick.
    pub fn totals(
        &self,
        pool: &PoolLoad,
        members: usize,
        scan: impl FnOnce() -> LoadTotals,
    ) -> LoadTotals {
        let (generation, current) = pool.generation(self.epoch);
        let fast = current && self.all_weighted;
        if fast
            && self.verified.load(Ordering::Relaxed) == generation.wrapping_add(1)
            && let Some(inflight) = pool.sum()
        {
            return LoadTotals {
                members: members as u64,
                inflight,
            };
        }
        let totals = scan();
        if fast && totals.members == members as u64 {
            self.verified
                .store(generation.wrapping_add(1), Ordering::Relaxed);
        }
        totals
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pool_sum_follows_attached_slots_only() {
        let pool = PoolLoad::default();
        let (a, b) = (Counter::default(), Counter::default());
        a.begin(&pool);
        a.begin(&pool);
        b.begin(&pool);
        assert_eq!(pool.sum(), Some(3));
        b.detach(&pool);
        assert_eq!((pool.sum(), b.get()), (Some(2), 1));
        // A detached slot's requests no longer move the sum; detaching twice is harmless.
        b.begin(&pool);
        b.end(&pool);
        b.end(&pool);
        b.detach(&pool);
        assert_eq!((pool.sum(), b.get()), (Some(2), 0));
        a.end(&pool);
        assert_eq!((pool.sum(), a.get()), (Some(1), 1));
    }

    #[test]
    fn a_negative_sum_is_not_trusted() {
        let pool = PoolLoad::default();
        let a = Counter::default();
        // The order a begin racing a detach can produce: the detach takes the new request out
        // before the begin adds it to the sum.
        a.0.fetch_add(1, Ordering::Relaxed);
        a.detach(&pool);
        assert_eq!(pool.sum(), None);
        pool.inflight.fetch_add(1, Ordering::Relaxed);
        assert_eq!(pool.sum(), Some(0));
    }

    #[test]
    fn steady_totals_are_reused_until_something_changes() {
        let pool = PoolLoad::default();
        let epoch = pool.next_epoch();
        let steady = Steady::new(epoch, true);
        let c = Counter::default();
        c.begin(&pool);
        let scans = std::cell::Cell::new(0);
        let scan = |members| {
            scans.set(scans.get() + 1);
            LoadTotals {
                members,
                inflight: 1,
            }
        };
        let all = LoadTotals {
            members: 2,
            inflight: 1,
        };
        assert_eq!(steady.totals(&pool, 2, || scan(2)), all);
        assert_eq!(steady.totals(&pool, 2, || scan(2)), all);
        assert_eq!(scans.get(), 1, "second answer from the counters");
        // An availability change: scan again; a backend is out, so nothing is recorded.
        pool.changed();
        assert_eq!(steady.totals(&pool, 2, || scan(1)).members, 1);
        assert_eq!(steady.totals(&pool, 2, || scan(1)).members, 1);
        assert_eq!(scans.get(), 3);
        // A newer snapshot: this one always scans.
        pool.next_epoch();
        steady.totals(&pool, 2, || scan(2));
        steady.totals(&pool, 2, || scan(2));
        assert_eq!(scans.get(), 5);
        // Weight-0 backends: always scans.
        let weightless = Steady::new(pool.next_epoch(), false);
        weightless.totals(&pool, 2, || scan(2));
        weightless.totals(&pool, 2, || scan(2));
        assert_eq!(scans.get(), 7);
    }
}

/// The counters as the pool uses them: every view it builds reports the totals a scan would.
#[cfg(test)]
mod pool_tests {
    use std::net::SocketAddr;
    use std::sync::Arc;
    use std::time::Duration;

    use usher_balancer::{LoadTotals, LoadView, SelectorConfig};

    use super::Ordering;
    use crate::config::BackendConfig;
    use crate::pool::{Excluding, Pool, Snapshot};

    fn cfg(id: &str, port: u16) -> BackendConfig {
        BackendConfig {
            id: id.parse().expect("id"),
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            weight: 1,
        }
    }

    fn pool(n: u16) -> Pool {
        let backends: Vec<BackendConfig> =
            (0..n).map(|i| cfg(&format!("b{i}"), 9000 + i)).collect();
        Pool::new(&backends, SelectorConfig::default()).expect("pool")
    }

    /// Checks `snap`'s views (plain and with each backend excluded) against scans, twice (the
    /// second answer may come from the counters); returns whether the counters answered.
    fn check(pool: &Pool, snap: &Snapshot) -> bool {
        let view = snap.view(pool.now_ms());
        let weights: Vec<u32> = snap.selector.members().iter().map(|m| m.weight).collect();
        for _ in 0..2 {
            assert_eq!(view.totals(&weights), LoadTotals::scan(&view, &weights));
        }
        for skip in 0..snap.slots.len() {
            let excluding = Excluding { view, skip };
            assert_eq!(
                excluding.totals(&weights),
                LoadTotals::scan(&excluding, &weights)
            );
        }
        let (generation, current) = pool.load.generation(snap.steady.epoch);
        current && snap.steady.verified.load(Ordering::Relaxed) == generation.wrapping_add(1)
    }

    #[test]
    fn totals_match_a_scan_through_drains_ejections_and_membership_changes() {
        let pool = pool(3);
        let snap = pool.snapshot();
        let guards: Vec<_> = [0, 0, 1, 2, 2, 2]
            .iter()
            .map(|&i| snap.slots[i].begin())
            .collect();
        assert!(check(&pool, &snap), "all up: the counters answer");
        assert_eq!(pool.load.sum(), Some(6));

        let b1 = "b1".parse().expect("id");
        pool.drain(&b1, Duration::from_secs(60)).expect("drain");
        assert!(!check(&pool, &snap), "one draining: scans");
        pool.activate(&b1).expect("activate");
        assert!(check(&pool, &snap));
        pool.mark_down(&snap.slots[2], Duration::from_secs(60));
        assert!(!check(&pool, &snap), "one down: scans");
        assert!(snap.slots[2].set_check_ok(false));
        assert!(!check(&pool, &snap));

        // Removing a backend with requests in flight takes them out of the sum, once.
        let removed = pool.remove(&"b2".parse().expect("id")).expect("remove");
        let now = pool.snapshot();
        assert!(check(&pool, &now));
        assert_eq!(pool.load.sum(), Some(3));
        assert!(!check(&pool, &snap), "an old snapshot scans");
        let late = removed.begin();
        drop(late);
        assert_eq!(pool.load.sum(), Some(3));

        // A new address for b0 retires its slot (2 in flight); the new one starts empty.
        pool.upsert(&cfg("b0", 9100)).expect("move");
        assert!(check(&pool, &pool.snapshot()));
        assert_eq!(pool.load.sum(), Some(1));
        pool.reconfigure(
            &[cfg("b1", 9001), cfg("b5", 9005)],
            SelectorConfig::default(),
        )
        .expect("reload");
        assert!(check(&pool, &pool.snapshot()));
        drop(guards);
        assert_eq!(pool.load.sum(), Some(0));
        assert!(check(&pool, &pool.snapshot()));
    }

    #[test]
    fn the_sum_stays_exact_while_requests_race_membership_changes() {
        let pool = Arc::new(pool(4));
        let workers: Vec<_> = (0..3u64)
            .map(|t| {
                let pool = Arc::clone(&pool);
                std::thread::spawn(move || {
                    let mut held = Vec::new();
                    for k in 0..8_000u64 {
                        let snap = pool.snapshot();
                        let i = ((k * 7 + t) % snap.slots.len() as u64) as usize;
                        held.push(snap.slots[i].begin());
                        if held.len() > 5 {
                            held.remove((k % 5) as usize);
                        }
                    }
                })
            })
            .collect();
        for round in 0..300u16 {
            let id = format!("b{}", round % 4);
            match round % 3 {
                0 => drop(pool.remove(&id.parse().expect("id"))),
                1 => pool.upsert(&cfg(&id, 9000 + round)).expect("upsert"),
                _ => pool
                    .reconfigure(
                        &(0..4)
                            .map(|i| cfg(&format!("b{i}"), 9000 + i))
                            .collect::<Vec<_>>(),
                        SelectorConfig::default(),
                    )
                    .expect("reload"),
            }
        }
        for w in workers {
            w.join().expect("worker");
        }
        // Every request has ended: whatever interleavings happened, nothing is left counted.
        assert_eq!(pool.load.sum(), Some(0));
        let snap = pool.snapshot();
        assert!(check(&pool, &snap));
    }
}
