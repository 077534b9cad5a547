//! The load views the selectors read on the request path: [`View`] over a snapshot at one
//! instant, and [`Excluding`] (one backend taken out).
//!
//! Cost (issue #2): least-conn reads every backend, so `available` and `inflight` are the inner
//! loop. Each is one relaxed load from the backend's 16-byte `Hot` cell (the packed availability
//! word of `pool/state.rs`, the in-flight counter next to it), reached through the snapshot's
//! dense array of cells rather than through the ~1 KiB slots, and both are `#[inline]`: the selectors
//! are generic over the view and are instantiated in other crates (benches) and other codegen
//! units, where a non-inline call per backend cost more than the loads themselves.

use usher_balancer::{BackendId, LoadTotals, LoadView};

use super::snapshot::Snapshot;

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
    #[inline]
    fn available(&self, i: usize) -> bool {
        i != self.skip && self.view.available(i)
    }
    #[inline]
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

impl<'a> View<'a> {
    #[inline]
    pub(super) fn new(snap: &'a Snapshot, now_ms: u64) -> Self {
        Self { snap, now_ms }
    }
}

impl LoadView for View<'_> {
    #[inline]
    fn available(&self, i: usize) -> bool {
        self.snap
            .hot
            .get(i)
            .is_some_and(|h| h.takes_new(self.now_ms))
    }
    #[inline]
    fn inflight(&self, i: usize) -> u64 {
        self.snap.hot.get(i).map_or(0, |h| h.inflight())
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
    /// One pass over the snapshot's dense cells.
    #[inline]
    fn visit_inflight<T: Copy>(
        &self,
        range: std::ops::Range<usize>,
        with: &[T],
        mut visit: impl FnMut(usize, u64, T) -> bool,
    ) -> bool {
        self.snap
            .hot
            .visit(range, with, |i, h, t| visit(i, h.inflight(), t))
    }
    /// O(1) while nothing changed since every backend was last seen taking new work.
    #[inline]
    fn all_available(&self) -> bool {
        let check = || self.snap.hot.all(|h| h.takes_new(self.now_ms));
        self.snap.steady.all_take_new(&self.snap.load, check)
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
