//! One backend's identity and live counters ([`BackendSlot`]), kept across snapshot rebuilds.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed};

use usher_balancer::BackendId;

use super::bindings::Bindings;
use super::cells::CellRef;
use super::load::PoolLoad;
use super::state::BackendState;
use super::tunnels::TunnelClose;
use crate::config::BackendConfig;
use crate::stats::StatusCounters;

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
    /// What picks read (see `pool/cells.rs`).
    pub(super) hot: CellRef,
    requests: AtomicU64,
    pub(super) weight: AtomicU32,
    /// The pool's shared counters (see `pool/load.rs`).
    pub(super) load: Arc<PoolLoad>,
    /// Pool-clock milliseconds at which the current drain started.
    pub(super) drain_started_ms: AtomicU64,
    /// Pool-clock milliseconds at which a drain ends (meaningful while draining).
    pub(super) drain_deadline_ms: AtomicU64,
    /// Responses from this backend by status class.
    pub statuses: StatusCounters,
    /// Pool-clock milliseconds of the last request from a client bound here.
    last_bound_ms: AtomicU64,
    pub(super) health_transitions: AtomicU64,
    /// Consecutive failed responses (5xx, timeouts) seen by the request path.
    pub(super) passive_failures: AtomicU32,
    /// Pool-clock start of the current slow-start ramp (0: none; the initial set starts at full
    /// weight, a backend added later or back from being down ramps up).
    ramp_start_ms: AtomicU64,
    /// Distinct client bindings seen, for `pinned_clients` (lock-free on the request path).
    bindings: Bindings,
    /// When this backend's upgraded tunnels must close (see `pool/tunnels.rs`).
    pub(super) tunnels: tokio::sync::watch::Sender<TunnelClose>,
}

impl BackendSlot {
    /// A fresh slot for `cfg`, counting into the pool's `load`, with `hot` its (new) pick cell.
    pub(super) fn new(
        cfg: &BackendConfig,
        load: &Arc<PoolLoad>,
        hot: CellRef,
    ) -> Result<Self, http::uri::InvalidUri> {
        Ok(Self {
            id: cfg.id.clone(),
            addr: cfg.addr,
            authority: cfg.addr.to_string().parse()?,
            hot,
            requests: AtomicU64::new(0),
            weight: AtomicU32::new(cfg.weight),
            load: Arc::clone(load),
            drain_started_ms: AtomicU64::new(0),
            drain_deadline_ms: AtomicU64::new(0),
            statuses: StatusCounters::default(),
            last_bound_ms: AtomicU64::new(0),
            health_transitions: AtomicU64::new(0),
            passive_failures: AtomicU32::new(0),
            ramp_start_ms: AtomicU64::new(0),
            bindings: Bindings::default(),
            tunnels: tokio::sync::watch::Sender::new(TunnelClose::Open),
        })
    }

    /// Configured weight.
    pub fn weight(&self) -> u32 {
        self.weight.load(Relaxed)
    }

    /// Requests in flight now.
    #[inline]
    pub fn inflight(&self) -> u64 {
        self.hot.inflight.get()
    }

    /// Requests sent to this backend so far (retries included).
    pub fn requests(&self) -> u64 {
        self.requests.load(Relaxed)
    }

    /// Whether it is reachable (checks pass, not in a refused-connection back-off) at `now_ms`.
    pub fn healthy(&self, now_ms: u64) -> bool {
        self.hot.gate.healthy(now_ms)
    }

    /// Whether active health checks currently pass.
    pub fn check_ok(&self) -> bool {
        self.hot.gate.check_ok()
    }

    /// Share of new clients this backend should take at `now_ms` relative to its weight:
    /// from 0.1 at the start of a slow-start ramp to 1.0 at its end (`window_ms`). A backend back
    /// from a passive ejection ramps from the end of its back-off.
    pub fn ramp_factor(&self, now_ms: u64, window_ms: u64) -> f64 {
        let start = self
            .ramp_start_ms
            .load(Relaxed)
            .max(self.hot.gate.down_until_ms());
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
        let changed = self.hot.gate.set_check_ok(ok) != ok;
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
        if self.hot.gate.draining() {
            BackendState::Draining
        } else if !self.healthy(now_ms) {
            BackendState::Down
        } else {
            BackendState::Active
        }
    }

    /// Whether new clients may be sent here at `now_ms`.
    #[inline]
    pub fn takes_new(&self, now_ms: u64) -> bool {
        self.hot.gate.takes_new(now_ms)
    }

    /// Whether clients bound here may still reach it at `now_ms` (a draining backend serves them
    /// until its deadline).
    pub fn serves_bound(&self, now_ms: u64) -> bool {
        self.healthy(now_ms)
            && (!self.hot.gate.draining() || now_ms < self.drain_deadline_ms.load(Relaxed))
    }

    /// Whether an operator is draining it.
    pub(super) fn draining(&self) -> bool {
        self.hot.gate.draining()
    }

    /// Pool-clock deadline of a drain in progress.
    pub fn drain_deadline_ms(&self) -> Option<u64> {
        self.hot
            .gate
            .draining()
            .then(|| self.drain_deadline_ms.load(Relaxed))
    }

    /// Records a request from the client binding `binding` (a hash) at `now_ms`. Lock-free (see
    /// `pool/bindings.rs`).
    pub fn saw_binding(&self, binding: u64, now_ms: u64) {
        self.last_bound_ms.store(now_ms, Relaxed);
        self.bindings.saw(binding, now_ms);
    }

    /// Distinct bindings seen within `window_ms` before `now_ms` (forgets older ones). For
    /// admin and metrics: it folds the request path's records into a map under a lock.
    pub fn pinned_clients(&self, now_ms: u64, window_ms: u64) -> usize {
        self.bindings.pinned(now_ms, window_ms)
    }

    /// Binding records dropped because they came faster than they could be folded (only under a
    /// flood of distinct clients while `pinned_clients` runs; 0 otherwise).
    pub fn dropped_bindings(&self) -> u64 {
        self.bindings.dropped()
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
        self.hot.inflight.begin(&self.load);
        self.requests.fetch_add(1, Relaxed);
        InflightGuard(Arc::clone(self))
    }
}

/// Decrements a backend's in-flight count when the response is finished (or abandoned).
#[derive(Debug)]
pub struct InflightGuard(Arc<BackendSlot>);

impl Drop for InflightGuard {
    fn drop(&mut self) {
        self.0.hot.inflight.end(&self.0.load);
    }
}
