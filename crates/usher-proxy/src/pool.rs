//! The live backend set: an immutable snapshot (selector + per-backend slots) swapped whole on
//! membership change, so request tasks read it without locks.
//!
//! A backend's state is derived from its slot's availability word (`pool/state.rs`): `draining`
//! (by an operator, until a deadline), `down` (failed checks, or refused connections: skipped for
//! a back-off), else `active`. New clients go only to active backends; clients already bound to a
//! draining backend keep reaching it until its deadline. A backend no longer in the snapshot is
//! `removed`.
//!
//! Modules: `slot` (one backend's counters), `state` (the availability word), `bindings` (the
//! lock-free `pinned_clients` records), `tunnels` (the close signal of upgraded tunnels),
//! `snapshot` and `view` (what the request path reads), `membership` (adding and removing
//! backends), `load` (pool-wide counters for the bounded-load cap).

use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use usher_balancer::{BackendId, SelectorConfig};

use crate::config::BackendConfig;

mod bindings;
mod cells;
mod clock;
mod load;
mod membership;
mod slot;
mod snapshot;
mod state;
mod tunnels;
mod view;

use load::PoolLoad;

pub use slot::{BackendSlot, InflightGuard};
pub use snapshot::Snapshot;
pub use state::BackendState;
pub(crate) use tunnels::TunnelClose;
pub use view::{BoundView, Excluding};

/// Why a membership change was refused.
#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    /// No backend with that id.
    #[error("no backend {0}")]
    Unknown(BackendId),
    /// The address cannot be used as an upstream authority.
    #[error("backend address cannot be used: {0}")]
    Addr(#[from] http::uri::InvalidUri),
}

/// The backend set and its clock.
#[derive(Debug)]
pub struct Pool {
    current: ArcSwap<Snapshot>,
    load: Arc<PoolLoad>,
    /// Serializes writers; readers never take it.
    write: Mutex<()>,
    selector_config: Mutex<SelectorConfig>,
    /// [`clock::coarse_ms`] when the pool started.
    epoch_ms: u64,
}

impl Pool {
    /// A pool over `backends`.
    pub fn new(
        backends: &[BackendConfig],
        selector_config: SelectorConfig,
    ) -> Result<Self, http::uri::InvalidUri> {
        let load = Arc::new(PoolLoad::default());
        // One block of pick cells for all of them, so picks scan one array (`pool/cells.rs`).
        let cells = cells::CellRef::block(backends.len());
        let slots = backends
            .iter()
            .zip(cells)
            .map(|(b, hot)| BackendSlot::new(b, &load, hot).map(Arc::new))
            .collect::<Result<_, _>>()?;
        let epoch = load.next_epoch();
        Ok(Self {
            current: ArcSwap::from_pointee(Snapshot::build(
                slots,
                &selector_config,
                Arc::default(),
                (&load, epoch),
            )),
            load,
            write: Mutex::new(()),
            selector_config: Mutex::new(selector_config),
            epoch_ms: clock::coarse_ms(),
        })
    }

    /// The current snapshot.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    /// The current snapshot, borrowed: cheaper than [`Self::snapshot`] (no reference count is
    /// taken), for the request path's pick. Hold it briefly and never across an `.await`: each
    /// thread has only a few such borrows before loads fall back to the slower path.
    pub fn current(&self) -> arc_swap::Guard<Arc<Snapshot>> {
        self.current.load()
    }

    /// Milliseconds since the pool started (the clock of deadlines and back-offs), on the
    /// coarse monotonic clock: it may run up to one scheduler tick behind (see `pool/clock.rs`).
    pub fn now_ms(&self) -> u64 {
        clock::coarse_ms().saturating_sub(self.epoch_ms)
    }

    /// Ends drains that are over: a draining backend is removed once its deadline has passed or
    /// no bound client has been seen for `idle` (and none holds an open tunnel). Returns the ids
    /// removed.
    pub fn reap_drained(&self, idle: Duration) -> Vec<BackendId> {
        let now = self.now_ms();
        let idle = millis(idle);
        let done: Vec<BackendId> = self
            .snapshot()
            .slots
            .iter()
            .filter(|s| {
                s.drain_deadline_ms().is_some_and(|deadline| {
                    let quiet_since = s.last_bound_ms().max(s.drain_started_ms.load(Relaxed));
                    // A client with an open tunnel is still there: only the deadline ends it.
                    now >= deadline
                        || (now.saturating_sub(quiet_since) >= idle && s.open_tunnels() == 0)
                })
            })
            .map(|s| s.id.clone())
            .collect();
        for id in &done {
            if self.remove(id).is_ok() {
                tracing::info!(backend = %id, "drain finished: backend removed");
            }
        }
        done
    }

    /// Starts draining a backend: no new clients; bound clients until `deadline` from now.
    pub fn drain(&self, id: &BackendId, deadline: Duration) -> Result<(), PoolError> {
        let slot = self.slot(id)?;
        let now = self.now_ms();
        slot.drain_started_ms.store(now, Relaxed);
        let deadline_ms = now.saturating_add(millis(deadline));
        slot.drain_deadline_ms.store(deadline_ms, Relaxed);
        slot.hot.gate.set_draining(true);
        self.load.changed();
        // The same moment on the precise clock (the pool's may lag it by a tick).
        match std::time::Instant::now().checked_add(deadline) {
            Some(at) => slot.close_tunnels_at(at),
            // A deadline past the clock's range never comes.
            None => slot.keep_tunnels_open(),
        }
        tracing::info!(backend = %id, ?deadline, "backend draining");
        Ok(())
    }

    /// Ends a drain: the backend takes new clients again.
    pub fn activate(&self, id: &BackendId) -> Result<(), PoolError> {
        let slot = self.slot(id)?;
        if slot.hot.gate.set_draining(false) {
            self.load.changed();
            slot.keep_tunnels_open();
            tracing::info!(backend = %id, "backend active again");
        }
        Ok(())
    }

    fn slot(&self, id: &BackendId) -> Result<Arc<BackendSlot>, PoolError> {
        let snap = self.current.load();
        let i = snap
            .index_of(id)
            .ok_or_else(|| PoolError::Unknown(id.clone()))?;
        Ok(Arc::clone(&snap.slots[i]))
    }

    /// Skips `slot` for new work for `backoff` (it refused a connection).
    pub fn mark_down(&self, slot: &BackendSlot, backoff: Duration) {
        self.eject(slot, backoff, "refused a connection");
    }

    /// Takes `slot` out of rotation for `backoff` (passive ejection); after it, real requests (or
    /// active checks) probe it again. Logs once per transition, with `reason`.
    pub fn eject(&self, slot: &BackendSlot, backoff: Duration, reason: &str) {
        let now = self.now_ms();
        let prev = slot
            .hot
            .gate
            .set_down_until(now.saturating_add(millis(backoff)));
        slot.passive_failures.store(0, Relaxed);
        slot.load.changed();
        if prev <= now {
            slot.health_transitions.fetch_add(1, Relaxed);
            tracing::warn!(backend = %slot.id, ?backoff, "backend down: {reason}");
        }
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX / 4)
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use super::*;
    use usher_balancer::LoadView;

    fn cfg(id: &str, port: u16, weight: u32) -> BackendConfig {
        BackendConfig {
            id: id.parse().expect("id"),
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            weight,
        }
    }

    #[test]
    fn picks_scan_one_array_when_the_backends_are_one_block() {
        let set = [cfg("a", 1, 1), cfg("b", 2, 1), cfg("c", 3, 1)];
        let pool = Pool::new(&set, SelectorConfig::default()).expect("pool");
        assert!(pool.snapshot().hot.is_dense(), "the starting set");
        let a = Arc::clone(&pool.snapshot().slots[0]);
        let _busy = a.begin();
        pool.upsert(&cfg("d", 4, 1)).expect("add");
        let snap = pool.snapshot();
        assert!(
            !snap.hot.is_dense(),
            "one added later has a cell of its own"
        );
        assert_eq!(
            snap.view(0).inflight(0),
            1,
            "counts read through either layout"
        );
        // A reload that keeps some backends stays scattered; one that replaces all is dense.
        pool.reconfigure(&set[..2], SelectorConfig::default())
            .expect("shrink");
        assert!(!pool.snapshot().hot.is_dense());
        let fresh = [cfg("x", 7, 1), cfg("y", 8, 1)];
        pool.reconfigure(&fresh, SelectorConfig::default())
            .expect("replace");
        assert!(pool.snapshot().hot.is_dense());
        assert_eq!(a.inflight(), 1, "a retired slot keeps its own count");
    }

    #[test]
    fn membership_changes_keep_counters_of_backends_that_stay() {
        let pool =
            Pool::new(&[cfg("a", 1, 1), cfg("b", 2, 1)], SelectorConfig::default()).expect("pool");
        let a = Arc::clone(&pool.snapshot().slots[0]);
        drop(a.begin());
        pool.upsert(&cfg("c", 3, 2)).expect("add");
        pool.upsert(&cfg("a", 1, 5)).expect("reweight");
        let snap = pool.snapshot();
        assert_eq!(snap.slots.len(), 3);
        assert!(
            Arc::ptr_eq(&snap.slots[0], &a),
            "same slot after a weight change"
        );
        assert_eq!(snap.slots[0].weight(), 5);
        assert_eq!(snap.slots[0].requests(), 1);
        pool.upsert(&cfg("a", 9, 5)).expect("move");
        assert_eq!(
            pool.snapshot().slots[0].requests(),
            0,
            "new address, new slot"
        );
        pool.remove(&"b".parse().expect("id")).expect("remove");
        assert!(
            pool.snapshot()
                .index_of(&"b".parse().expect("id"))
                .is_none()
        );
        assert!(matches!(
            pool.remove(&"zz".parse().expect("id")),
            Err(PoolError::Unknown(_))
        ));
    }

    #[test]
    fn draining_takes_no_new_clients_but_serves_bound_ones_until_the_deadline() {
        let pool = Pool::new(&[cfg("a", 1, 1)], SelectorConfig::default()).expect("pool");
        let id: BackendId = "a".parse().expect("id");
        pool.drain(&id, Duration::from_secs(10)).expect("drain");
        let slot = pool.slot(&id).expect("slot");
        let now = pool.now_ms();
        assert_eq!(slot.state(now), BackendState::Draining);
        assert!(!slot.takes_new(now));
        assert!(slot.serves_bound(now));
        assert!(!slot.serves_bound(now + 10_001));
        pool.activate(&id).expect("activate");
        assert!(slot.takes_new(now));
        pool.mark_down(&slot, Duration::from_secs(5));
        assert_eq!(slot.state(pool.now_ms()), BackendState::Down);
        assert!(!slot.serves_bound(pool.now_ms()));
    }
}
