//! One consistent, immutable view of the backend set ([`Snapshot`]), swapped whole on
//! membership change so request tasks read it without locks.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use usher_balancer::{BackendId, Member, Selector, SelectorConfig};

use super::cells::Cells;
use super::load::{PoolLoad, Steady};
use super::slot::BackendSlot;
use super::view::View;

/// One consistent view of the backend set.
#[derive(Debug)]
pub struct Snapshot {
    /// Selector over `slots` (same indices).
    pub selector: Selector,
    /// The backends.
    pub slots: Vec<Arc<BackendSlot>>,
    /// `slots[i].hot`, as one array when they are one block: what the views scan (see
    /// `pool/cells.rs`).
    pub(super) hot: Cells,
    /// Looked up on every pinned request, so hashed with foldhash (seeded per process) rather
    /// than SipHash: the keys are the configured ids, never chosen by a client.
    by_id: HashMap<BackendId, usize, foldhash::fast::RandomState>,
    /// Ids removed at the end of a drain (their clients' moves count as `drained`).
    pub(super) drained: Arc<HashSet<BackendId>>,
    /// The pool's counters, and when they describe this snapshot (see `pool/load.rs`).
    pub(super) load: Arc<PoolLoad>,
    pub(super) steady: Steady,
}

impl Snapshot {
    /// A snapshot over `slots` with a selector built from their current weights; `epoch` is
    /// the membership epoch `load` gave for it.
    pub(super) fn build(
        slots: Vec<Arc<BackendSlot>>,
        selector_config: &SelectorConfig,
        drained: Arc<HashSet<BackendId>>,
        (load, epoch): (&Arc<PoolLoad>, u64),
    ) -> Self {
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
        let hot = Cells::new(slots.iter().map(|s| &s.hot));
        let all_weighted = members.iter().all(|m| m.weight > 0);
        Self {
            selector: Selector::new(&members, selector_config),
            slots,
            hot,
            by_id,
            drained,
            load: Arc::clone(load),
            steady: Steady::new(epoch, all_weighted),
        }
    }

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
    #[inline]
    pub fn view(&self, now_ms: u64) -> View<'_> {
        View::new(self, now_ms)
    }
}
