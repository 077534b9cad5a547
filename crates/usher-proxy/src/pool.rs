//! The live backend set: an immutable snapshot (selector + per-backend slots) swapped whole on
//! membership change, so request tasks read it without locks.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use usher_balancer::{BackendId, LoadView, Member, Selector, SelectorConfig};

use crate::config::BackendConfig;
use crate::stats::StatusCounters;

/// One backend's identity and live counters. Kept across snapshot rebuilds (matched by id).
#[derive(Debug)]
pub struct BackendSlot {
    /// Stable id.
    pub id: BackendId,
    /// Address.
    pub addr: SocketAddr,
    /// `addr` as a URI authority, for upstream request URIs.
    pub authority: http::uri::Authority,
    /// Configured weight.
    pub weight: u32,
    inflight: AtomicU64,
    /// Milliseconds (on the pool clock) until which the backend is skipped after a refused connect.
    down_until_ms: AtomicU64,
    requests: AtomicU64,
    /// Responses from this backend by status class.
    pub statuses: StatusCounters,
}

impl BackendSlot {
    fn new(cfg: &BackendConfig) -> Result<Self, http::uri::InvalidUri> {
        Ok(Self {
            id: cfg.id.clone(),
            addr: cfg.addr,
            authority: cfg.addr.to_string().parse()?,
            weight: cfg.weight,
            inflight: AtomicU64::new(0),
            down_until_ms: AtomicU64::new(0),
            requests: AtomicU64::new(0),
            statuses: StatusCounters::default(),
        })
    }

    /// Requests in flight now.
    pub fn inflight(&self) -> u64 {
        self.inflight.load(Relaxed)
    }

    /// Requests sent to this backend so far (retries included).
    pub fn requests(&self) -> u64 {
        self.requests.load(Relaxed)
    }

    /// Marks a request as started; the guard ends it when dropped.
    pub fn begin(self: &Arc<Self>) -> InflightGuard {
        self.inflight.fetch_add(1, Relaxed);
        self.requests.fetch_add(1, Relaxed);
        InflightGuard(Arc::clone(self))
    }
}

/// Decrements a backend's in-flight count when the response is finished (or abandoned).
#[derive(Debug)]
pub struct InflightGuard(Arc<BackendSlot>);

impl InflightGuard {
    /// The backend this guard counts against.
    pub fn slot(&self) -> &Arc<BackendSlot> {
        &self.0
    }
}

impl Drop for InflightGuard {
    fn drop(&mut self) {
        self.0.inflight.fetch_sub(1, Relaxed);
    }
}

/// One consistent view of the backend set.
#[derive(Debug)]
pub struct Snapshot {
    /// Selector over `slots` (same indices).
    pub selector: Selector,
    /// The backends.
    pub slots: Vec<Arc<BackendSlot>>,
    by_id: HashMap<BackendId, usize>,
}

impl Snapshot {
    /// Index of a backend by id.
    pub fn index_of(&self, id: &BackendId) -> Option<usize> {
        self.by_id.get(id).copied()
    }

    /// A load view at time `now_ms` (pool clock).
    pub fn view(&self, now_ms: u64) -> View<'_> {
        View { snap: self, now_ms }
    }
}

/// [`LoadView`] over a snapshot at one instant.
#[derive(Debug, Clone, Copy)]
pub struct View<'a> {
    snap: &'a Snapshot,
    now_ms: u64,
}

impl LoadView for View<'_> {
    fn available(&self, i: usize) -> bool {
        self.snap
            .slots
            .get(i)
            .is_some_and(|s| s.down_until_ms.load(Relaxed) <= self.now_ms)
    }
    fn inflight(&self, i: usize) -> u64 {
        self.snap.slots.get(i).map_or(0, |s| s.inflight())
    }
}

/// The backend set and its clock.
#[derive(Debug)]
pub struct Pool {
    current: ArcSwap<Snapshot>,
    selector_config: SelectorConfig,
    epoch: Instant,
}

impl Pool {
    /// A pool over `backends`.
    pub fn new(
        backends: &[BackendConfig],
        selector_config: SelectorConfig,
    ) -> Result<Self, http::uri::InvalidUri> {
        let snap = build(backends, &selector_config, &[])?;
        Ok(Self {
            current: ArcSwap::from_pointee(snap),
            selector_config,
            epoch: Instant::now(),
        })
    }

    /// The current snapshot.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    /// Replaces the backend set; slots of backends that stay keep their counters.
    pub fn set_backends(&self, backends: &[BackendConfig]) -> Result<(), http::uri::InvalidUri> {
        let old = self.current.load();
        let snap = build(backends, &self.selector_config, &old.slots)?;
        self.current.store(Arc::new(snap));
        Ok(())
    }

    /// Milliseconds since the pool started (the clock of `down_until`).
    pub fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Skips `slot` for new work for `backoff` (it refused a connection).
    pub fn mark_down(&self, slot: &BackendSlot, backoff: Duration) {
        let until = self
            .now_ms()
            .saturating_add(u64::try_from(backoff.as_millis()).unwrap_or(0));
        let prev = slot.down_until_ms.swap(until, Relaxed);
        if prev <= self.now_ms() {
            tracing::warn!(backend = %slot.id, ?backoff, "backend refused a connection; skipping it");
        }
    }
}

fn build(
    backends: &[BackendConfig],
    selector_config: &SelectorConfig,
    old: &[Arc<BackendSlot>],
) -> Result<Snapshot, http::uri::InvalidUri> {
    let mut slots = Vec::with_capacity(backends.len());
    for b in backends {
        let keep = old
            .iter()
            .find(|s| s.id == b.id && s.addr == b.addr && s.weight == b.weight);
        slots.push(match keep {
            Some(s) => Arc::clone(s),
            None => Arc::new(BackendSlot::new(b)?),
        });
    }
    let members: Vec<Member> = slots
        .iter()
        .map(|s| Member {
            id: s.id.clone(),
            weight: s.weight,
        })
        .collect();
    let by_id = slots
        .iter()
        .enumerate()
        .map(|(i, s)| (s.id.clone(), i))
        .collect();
    Ok(Snapshot {
        selector: Selector::new(&members, selector_config),
        slots,
        by_id,
    })
}
