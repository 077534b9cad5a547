//! The live backend set: an immutable snapshot (selector + per-backend slots) swapped whole on
//! membership change, so request tasks read it without locks.
//!
//! A backend's state is derived from its slot's atomics: `draining` (by an operator, until a
//! deadline), `down` (refused connections: skipped for a back-off), else `active`. New clients go
//! only to active backends; clients already bound to a draining backend keep reaching it until its
//! deadline. A backend no longer in the snapshot is `removed`.

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use usher_balancer::{BackendId, LoadTotals, LoadView, Member, Selector, SelectorConfig};

use crate::config::BackendConfig;
use crate::stats::StatusCounters;

mod load;

use load::{Counter, PoolLoad, Steady};

/// What a backend is doing, as operators and metrics see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendState {
    /// Takes new and bound clients.
    Active,
    /// Takes no new clients; bound clients until the drain deadline.
    Draining,
    /// Failing (refused connections): skipped until its back-off ends.
    Down,
}

impl BackendState {
    /// Lower-case name, as in the admin API and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Draining => "draining",
            Self::Down => "down",
        }
    }
}

impl fmt::Display for BackendState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One backend's identity and live counters. Kept across snapshot rebuilds (matched by id and
/// address), so counters survive membership changes.
#[derive(Debug)]
pub struct BackendSlot {
    /// Stable id.
    pub id: BackendId,
    /// Address.
    pub addr: SocketAddr,
    /// `addr` as a URI authority, for upstream request URIs.
    pub authority: http::uri::Authority,
    weight: AtomicU32,
    /// Requests in flight; also feeds the pool-wide sum while the slot is in the pool.
    inflight: Counter,
    /// The pool's shared counters (see `pool/load.rs`).
    load: Arc<PoolLoad>,
    /// Pool-clock milliseconds until which the backend is skipped after a refused connect.
    down_until_ms: AtomicU64,
    draining: AtomicBool,
    /// Pool-clock milliseconds at which the current drain started.
    drain_started_ms: AtomicU64,
    /// Pool-clock milliseconds at which a drain ends (meaningful while `draining`).
    drain_deadline_ms: AtomicU64,
    requests: AtomicU64,
    /// Responses from this backend by status class.
    pub statuses: StatusCounters,
    /// Pool-clock milliseconds of the last request from a client bound here.
    last_bound_ms: AtomicU64,
    health_transitions: AtomicU64,
    // --- health (health.rs) ---
    /// Verdict of active health checks (true until a check says otherwise).
    check_ok: AtomicBool,
    /// Consecutive failed responses (5xx, timeouts) seen by the request path.
    passive_failures: AtomicU32,
    /// Pool-clock start of the current slow-start ramp (0: none; the initial set starts at full
    /// weight, a backend added later or back from being down ramps up).
    ramp_start_ms: AtomicU64,
    /// Distinct bindings (hashes of affinity tokens or keys) → last seen, pool clock.
    bound: Mutex<HashMap<u64, u64>>,
    // --- Upgraded tunnels (WebSocket and other `Upgrade`s); see `tunnel.rs`. ---
    /// When this backend's tunnels must close: each tunnel subscribes, drain / activate / removal
    /// publish (so tunnels wait on a signal instead of polling the slot).
    tunnels: tokio::sync::watch::Sender<TunnelClose>,
}

/// Most bindings remembered per backend for the `pinned_clients` estimate.
const MAX_TRACKED_BINDINGS: usize = 200_000;

impl BackendSlot {
    fn new(cfg: &BackendConfig, load: &Arc<PoolLoad>) -> Result<Self, http::uri::InvalidUri> {
        Ok(Self {
            id: cfg.id.clone(),
            addr: cfg.addr,
            authority: cfg.addr.to_string().parse()?,
            weight: AtomicU32::new(cfg.weight),
            inflight: Counter::default(),
            load: Arc::clone(load),
            down_until_ms: AtomicU64::new(0),
            draining: AtomicBool::new(false),
            drain_started_ms: AtomicU64::new(0),
            drain_deadline_ms: AtomicU64::new(0),
            requests: AtomicU64::new(0),
            statuses: StatusCounters::default(),
            last_bound_ms: AtomicU64::new(0),
            health_transitions: AtomicU64::new(0),
            check_ok: AtomicBool::new(true),
            passive_failures: AtomicU32::new(0),
            ramp_start_ms: AtomicU64::new(0),
            bound: Mutex::new(HashMap::new()),
            tunnels: tokio::sync::watch::Sender::new(TunnelClose::Open),
        })
    }

    /// Configured weight.
    pub fn weight(&self) -> u32 {
        self.weight.load(Relaxed)
    }

    /// Requests in flight now.
    pub fn inflight(&self) -> u64 {
        self.inflight.get()
    }

    /// Requests sent to this backend so far (retries included).
    pub fn requests(&self) -> u64 {
        self.requests.load(Relaxed)
    }

    /// Whether it is reachable (not in a refused-connection back-off) at `now_ms`.
    pub fn healthy(&self, now_ms: u64) -> bool {
        self.check_ok.load(Relaxed) && self.down_until_ms.load(Relaxed) <= now_ms
    }

    /// Whether active health checks currently pass.
    pub fn check_ok(&self) -> bool {
        self.check_ok.load(Relaxed)
    }

    /// Share of new clients this backend should take at `now_ms` relative to its weight:
    /// from 0.1 at the start of a slow-start ramp to 1.0 at its end (`window_ms`). A backend back
    /// from a passive ejection ramps from the end of its back-off.
    pub fn ramp_factor(&self, now_ms: u64, window_ms: u64) -> f64 {
        let start = self
            .ramp_start_ms
            .load(Relaxed)
            .max(self.down_until_ms.load(Relaxed));
        if window_ms == 0 || start == 0 || now_ms >= start.saturating_add(window_ms) {
            return 1.0;
        }
        let done = now_ms.saturating_sub(start) as f64 / window_ms as f64;
        0.1 + 0.9 * done.clamp(0.0, 1.0)
    }

    /// Starts a slow-start ramp at `now_ms`.
    pub fn start_ramp(&self, now_ms: u64) {
        self.ramp_start_ms.store(now_ms.max(1), Relaxed);
    }

    /// Records an active check verdict; returns whether it changed.
    pub fn set_check_ok(&self, ok: bool) -> bool {
        let changed = self.check_ok.swap(ok, Relaxed) != ok;
        if changed {
            self.load.changed();
        }
        if changed && !ok {
            self.health_transitions.fetch_add(1, Relaxed);
        }
        changed
    }

    /// Counts one failed response (5xx, timeout); returns the consecutive count.
    pub fn passive_failure(&self) -> u32 {
        self.passive_failures
            .fetch_add(1, Relaxed)
            .saturating_add(1)
    }

    /// A good response resets the consecutive failure count.
    pub fn passive_success(&self) {
        if self.passive_failures.load(Relaxed) != 0 {
            self.passive_failures.store(0, Relaxed);
        }
    }

    /// State at `now_ms`.
    pub fn state(&self, now_ms: u64) -> BackendState {
        if self.draining.load(Relaxed) {
            BackendState::Draining
        } else if !self.healthy(now_ms) {
            BackendState::Down
        } else {
            BackendState::Active
        }
    }

    /// Whether new clients may be sent here at `now_ms`.
    pub fn takes_new(&self, now_ms: u64) -> bool {
        !self.draining.load(Relaxed) && self.healthy(now_ms)
    }

    /// Whether clients bound here may still reach it at `now_ms` (a draining backend serves them
    /// until its deadline).
    pub fn serves_bound(&self, now_ms: u64) -> bool {
        self.healthy(now_ms)
            && (!self.draining.load(Relaxed) || now_ms < self.drain_deadline_ms.load(Relaxed))
    }

    /// Pool-clock deadline of a drain in progress.
    pub fn drain_deadline_ms(&self) -> Option<u64> {
        self.draining
            .load(Relaxed)
            .then(|| self.drain_deadline_ms.load(Relaxed))
    }

    /// Records a request from the client binding `binding` (a hash) at `now_ms`.
    pub fn saw_binding(&self, binding: u64, now_ms: u64) {
        self.last_bound_ms.store(now_ms, Relaxed);
        let mut bound = self.bound.lock().unwrap_or_else(|e| e.into_inner());
        if bound.len() >= MAX_TRACKED_BINDINGS && !bound.contains_key(&binding) {
            // Full: forget the oldest half rather than grow without bound.
            let mut seen: Vec<u64> = bound.values().copied().collect();
            let mid = seen.len() / 2;
            let cutoff = *seen.select_nth_unstable(mid).1;
            bound.retain(|_, t| *t > cutoff);
        }
        bound.insert(binding, now_ms);
    }

    /// Distinct bindings seen within `window_ms` before `now_ms` (forgets older ones).
    pub fn pinned_clients(&self, now_ms: u64, window_ms: u64) -> usize {
        let mut bound = self.bound.lock().unwrap_or_else(|e| e.into_inner());
        bound.retain(|_, t| now_ms.saturating_sub(*t) < window_ms);
        bound.len()
    }

    /// Times this backend went down.
    pub fn health_transitions(&self) -> u64 {
        self.health_transitions.load(Relaxed)
    }

    /// Pool-clock time of the last request from a bound client (0: never).
    pub fn last_bound_ms(&self) -> u64 {
        self.last_bound_ms.load(Relaxed)
    }

    /// Marks a request as started; the guard ends it when dropped.
    pub fn begin(self: &Arc<Self>) -> InflightGuard {
        self.inflight.begin(&self.load);
        self.requests.fetch_add(1, Relaxed);
        InflightGuard(Arc::clone(self))
    }
}

/// Decrements a backend's in-flight count when the response is finished (or abandoned).
#[derive(Debug)]
pub struct InflightGuard(Arc<BackendSlot>);

impl Drop for InflightGuard {
    fn drop(&mut self) {
        self.0.inflight.end(&self.0.load);
    }
}

// --- Upgraded tunnels: the close signal a backend's tunnels wait on. ---

/// When a backend's upgraded tunnels must close. Each tunnel adds its own random jitter to the
/// instant, so that clients do not all reconnect at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TunnelClose {
    /// Keep them open.
    Open,
    /// Draining: close at the drain deadline.
    Deadline(Instant),
    /// Removed from the pool: close now (or at an earlier drain deadline).
    Removed(Instant),
}

impl TunnelClose {
    /// The instant to close at (before jitter), if any.
    pub(crate) fn at(self) -> Option<Instant> {
        match self {
            Self::Open => None,
            Self::Deadline(at) | Self::Removed(at) => Some(at),
        }
    }
}

impl BackendSlot {
    /// Upgraded tunnels open to this backend now.
    pub fn open_tunnels(&self) -> usize {
        self.tunnels.receiver_count()
    }

    /// Subscribes a new tunnel to this backend's close signal (the current value included).
    pub(crate) fn tunnel_close(&self) -> tokio::sync::watch::Receiver<TunnelClose> {
        self.tunnels.subscribe()
    }

    /// A drain started (or its deadline moved): tunnels close at `deadline`. No effect once removed.
    fn close_tunnels_at(&self, deadline: Instant) {
        self.tunnels.send_if_modified(|c| match c {
            TunnelClose::Removed(_) => false,
            _ => {
                *c = TunnelClose::Deadline(deadline);
                true
            }
        });
    }

    /// The drain was called off: tunnels stay open. No effect once removed.
    fn keep_tunnels_open(&self) {
        self.tunnels.send_if_modified(|c| match c {
            TunnelClose::Deadline(_) => {
                *c = TunnelClose::Open;
                true
            }
            _ => false,
        });
    }

    /// The backend left the pool: tunnels close now, or at the drain deadline if that came first.
    fn close_tunnels_removed(&self) {
        let now = Instant::now();
        self.tunnels.send_if_modified(|c| {
            let at = c.at().map_or(now, |d| d.min(now));
            let changed = *c != TunnelClose::Removed(at);
            *c = TunnelClose::Removed(at);
            changed
        });
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
    /// Ids removed at the end of a drain (their clients' moves count as `drained`).
    drained: Arc<std::collections::HashSet<BackendId>>,
    /// The pool's counters, and when they describe this snapshot (see `pool/load.rs`).
    load: Arc<PoolLoad>,
    steady: Steady,
}

impl Snapshot {
    /// Whether clients bound to `id` lost it to a drain (draining past its deadline, or removed
    /// when the drain ended) rather than to a failure.
    pub fn lost_to_drain(&self, id: &BackendId, now_ms: u64) -> bool {
        match self.index_of(id) {
            Some(i) => self.slots[i]
                .drain_deadline_ms()
                .is_some_and(|d| now_ms >= d),
            None => self.drained.contains(id),
        }
    }

    /// Index of a backend by id.
    pub fn index_of(&self, id: &BackendId) -> Option<usize> {
        self.by_id.get(id).copied()
    }

    /// A load view at time `now_ms` (pool clock).
    pub fn view(&self, now_ms: u64) -> View<'_> {
        View { snap: self, now_ms }
    }
}

/// A [`LoadView`] that can also say whether already-bound clients may reach a backend.
pub trait BoundView: LoadView {
    /// Whether clients bound to backend `i` may still be sent there.
    fn serves_bound(&self, i: usize) -> bool;
    /// Whether clients bound to `id` lost it to a drain (see [`Snapshot::lost_to_drain`]).
    fn lost_to_drain(&self, id: &BackendId) -> bool;
    /// The pool-clock time this view was taken at.
    fn now_ms(&self) -> u64;
}

impl<T: BoundView + ?Sized> BoundView for &T {
    fn serves_bound(&self, i: usize) -> bool {
        (**self).serves_bound(i)
    }
    fn lost_to_drain(&self, id: &BackendId) -> bool {
        (**self).lost_to_drain(id)
    }
    fn now_ms(&self) -> u64 {
        (**self).now_ms()
    }
}

/// A load view with one backend taken out (one that just failed, or lost a slow-start draw).
#[derive(Debug)]
pub struct Excluding<V> {
    /// The underlying view.
    pub view: V,
    /// The backend index taken out.
    pub skip: usize,
}

impl<V: BoundView> BoundView for Excluding<V> {
    fn serves_bound(&self, i: usize) -> bool {
        i != self.skip && self.view.serves_bound(i)
    }
    fn lost_to_drain(&self, id: &BackendId) -> bool {
        self.view.lost_to_drain(id)
    }
    fn now_ms(&self) -> u64 {
        self.view.now_ms()
    }
}

impl<V: LoadView> LoadView for Excluding<V> {
    fn available(&self, i: usize) -> bool {
        i != self.skip && self.view.available(i)
    }
    fn inflight(&self, i: usize) -> u64 {
        self.view.inflight(i)
    }
    /// The underlying view's totals (O(1) when it has them) without the skipped backend.
    fn totals(&self, weights: &[u32]) -> LoadTotals {
        self.view
            .totals(weights)
            .without(&self.view, weights, self.skip)
    }
}

/// [`LoadView`] over a snapshot at one instant: `available` means "takes new clients".
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
            .is_some_and(|s| s.takes_new(self.now_ms))
    }
    fn inflight(&self, i: usize) -> u64 {
        self.snap.slots.get(i).map_or(0, |s| s.inflight())
    }
    /// O(1) from the pool's counters while every backend takes new work; else a scan.
    fn totals(&self, weights: &[u32]) -> LoadTotals {
        let scan = || LoadTotals::scan(self, weights);
        // The counters describe this snapshot's own backends, which `weights` must match.
        if weights.len() != self.snap.slots.len() {
            return scan();
        }
        self.snap
            .steady
            .totals(&self.snap.load, self.snap.slots.len(), scan)
    }
}

impl BoundView for View<'_> {
    fn serves_bound(&self, i: usize) -> bool {
        self.snap
            .slots
            .get(i)
            .is_some_and(|s| s.serves_bound(self.now_ms))
    }
    fn lost_to_drain(&self, id: &BackendId) -> bool {
        self.snap.lost_to_drain(id, self.now_ms)
    }
    fn now_ms(&self) -> u64 {
        self.now_ms
    }
}

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
    epoch: Instant,
}

impl Pool {
    /// A pool over `backends`.
    pub fn new(
        backends: &[BackendConfig],
        selector_config: SelectorConfig,
    ) -> Result<Self, http::uri::InvalidUri> {
        let load = Arc::new(PoolLoad::default());
        let slots = backends
            .iter()
            .map(|b| BackendSlot::new(b, &load).map(Arc::new))
            .collect::<Result<_, _>>()?;
        let epoch = load.next_epoch();
        Ok(Self {
            current: ArcSwap::from_pointee(build(
                slots,
                &selector_config,
                Arc::default(),
                (&load, epoch),
            )),
            load,
            write: Mutex::new(()),
            selector_config: Mutex::new(selector_config),
            epoch: Instant::now(),
        })
    }

    /// The current snapshot.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    /// Milliseconds since the pool started (the clock of deadlines and back-offs).
    pub fn now_ms(&self) -> u64 {
        millis(self.epoch.elapsed())
    }

    /// Adds a backend, or updates one's address or weight. Requests in flight keep their
    /// connections; a new address gets new connections from then on.
    pub fn upsert(&self, cfg: &BackendConfig) -> Result<(), PoolError> {
        let _w = self.write.lock().unwrap_or_else(|e| e.into_inner());
        let old = self.current.load();
        let mut slots: Vec<Arc<BackendSlot>> = old.slots.clone();
        let mut replaced = None;
        match slots.iter().position(|s| s.id == cfg.id) {
            Some(i) if slots[i].addr == cfg.addr => slots[i].weight.store(cfg.weight, Relaxed),
            Some(i) => {
                let fresh = Arc::new(self.ramping(cfg)?);
                replaced = Some(std::mem::replace(&mut slots[i], fresh));
            }
            None => slots.push(Arc::new(self.ramping(cfg)?)),
        }
        let mut drained = (*old.drained).clone();
        drained.remove(&cfg.id);
        self.publish(slots, drained, replaced.as_slice());
        // The old address left the pool: its tunnels close like a removed backend's.
        if let Some(old_slot) = replaced {
            old_slot.close_tunnels_removed();
        }
        Ok(())
    }

    /// Builds and swaps in a snapshot over `slots` with the current selector settings;
    /// `retired` are the slots leaving the pool.
    fn publish(
        &self,
        slots: Vec<Arc<BackendSlot>>,
        drained: std::collections::HashSet<BackendId>,
        retired: &[Arc<BackendSlot>],
    ) {
        let config = self
            .selector_config
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        self.swap_in(slots, &config, drained, retired);
    }

    /// Swaps in a snapshot over `slots`, taking `retired` out of the pool-wide load sum. The
    /// epoch moves first, so readers of the old snapshot stop trusting the sum before it changes.
    fn swap_in(
        &self,
        slots: Vec<Arc<BackendSlot>>,
        config: &SelectorConfig,
        drained: std::collections::HashSet<BackendId>,
        retired: &[Arc<BackendSlot>],
    ) {
        let epoch = self.load.next_epoch();
        let snapshot = build(slots, config, Arc::new(drained), (&self.load, epoch));
        for slot in retired {
            slot.inflight.detach(&self.load);
        }
        self.current.store(Arc::new(snapshot));
    }

    fn ramping(&self, cfg: &BackendConfig) -> Result<BackendSlot, http::uri::InvalidUri> {
        let slot = BackendSlot::new(cfg, &self.load)?;
        slot.start_ramp(self.now_ms());
        Ok(slot)
    }

    /// Applies a whole new backend list and selector settings (a reload) in one snapshot:
    /// backends that stay keep their slots (counters, drains, tunnels), new ones (or new
    /// addresses) ramp up, missing ones are removed and their tunnels closed.
    pub fn reconfigure(
        &self,
        backends: &[BackendConfig],
        selector_config: SelectorConfig,
    ) -> Result<(), PoolError> {
        let _w = self.write.lock().unwrap_or_else(|e| e.into_inner());
        let old = self.current.load();
        let mut drained = (*old.drained).clone();
        let mut retired = Vec::new();
        let mut slots = Vec::with_capacity(backends.len());
        for cfg in backends {
            drained.remove(&cfg.id);
            let current = old.index_of(&cfg.id).map(|i| &old.slots[i]);
            match current {
                Some(slot) if slot.addr == cfg.addr => {
                    slot.weight.store(cfg.weight, Relaxed);
                    slots.push(Arc::clone(slot));
                }
                Some(slot) => {
                    retired.push(Arc::clone(slot));
                    slots.push(Arc::new(self.ramping(cfg)?));
                }
                None => slots.push(Arc::new(self.ramping(cfg)?)),
            }
        }
        for slot in &old.slots {
            if !backends.iter().any(|b| b.id == slot.id) {
                if slot.draining.load(Relaxed) {
                    drained.insert(slot.id.clone());
                }
                retired.push(Arc::clone(slot));
            }
        }
        let mut config = self
            .selector_config
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        *config = selector_config;
        self.swap_in(slots, &config, drained, &retired);
        for slot in retired {
            slot.close_tunnels_removed();
        }
        Ok(())
    }

    /// Removes a backend at once; its bound clients re-pin on their next request.
    pub fn remove(&self, id: &BackendId) -> Result<Arc<BackendSlot>, PoolError> {
        let _w = self.write.lock().unwrap_or_else(|e| e.into_inner());
        let old = self.current.load();
        let i = old
            .index_of(id)
            .ok_or_else(|| PoolError::Unknown(id.clone()))?;
        let mut slots = old.slots.clone();
        let removed = slots.remove(i);
        let mut drained = (*old.drained).clone();
        if removed.draining.load(Relaxed) {
            drained.insert(id.clone());
        } else {
            drained.remove(id);
        }
        self.publish(slots, drained, std::slice::from_ref(&removed));
        removed.close_tunnels_removed();
        Ok(removed)
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
        slot.draining.store(true, Relaxed);
        self.load.changed();
        match self.epoch.checked_add(Duration::from_millis(deadline_ms)) {
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
        if slot.draining.swap(false, Relaxed) {
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
            .down_until_ms
            .swap(now.saturating_add(millis(backoff)), Relaxed);
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

fn build(
    slots: Vec<Arc<BackendSlot>>,
    selector_config: &SelectorConfig,
    drained: Arc<std::collections::HashSet<BackendId>>,
    (load, epoch): (&Arc<PoolLoad>, u64),
) -> Snapshot {
    let members: Vec<Member> = slots
        .iter()
        .map(|s| Member {
            id: s.id.clone(),
            weight: s.weight(),
        })
        .collect();
    let by_id = slots
        .iter()
        .enumerate()
        .map(|(i, s)| (s.id.clone(), i))
        .collect();
    let all_weighted = members.iter().all(|m| m.weight > 0);
    Snapshot {
        selector: Selector::new(&members, selector_config),
        slots,
        by_id,
        drained,
        load: Arc::clone(load),
        steady: Steady::new(epoch, all_weighted),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(id: &str, port: u16, weight: u32) -> BackendConfig {
        BackendConfig {
            id: id.parse().expect("id"),
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            weight,
        }
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
