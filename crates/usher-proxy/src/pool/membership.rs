//! Membership changes: adding, moving, reweighting and removing backends, one whole snapshot
//! at a time. Writers are serialized by the pool's write lock; readers never take it.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use usher_balancer::{BackendId, SelectorConfig};

use super::cells::CellRef;
use super::{BackendSlot, Pool, PoolError, Snapshot};
use crate::config::BackendConfig;

impl Pool {
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
                let fresh = Arc::new(self.ramping(cfg, CellRef::single())?);
                replaced = Some(std::mem::replace(&mut slots[i], fresh));
            }
            None => slots.push(Arc::new(self.ramping(cfg, CellRef::single())?)),
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
        drained: HashSet<BackendId>,
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
        drained: HashSet<BackendId>,
        retired: &[Arc<BackendSlot>],
    ) {
        let epoch = self.load.next_epoch();
        let snapshot = Snapshot::build(slots, config, Arc::new(drained), (&self.load, epoch));
        for slot in retired {
            slot.hot.inflight.detach(&self.load);
        }
        self.current.store(Arc::new(snapshot));
    }

    fn ramping(
        &self,
        cfg: &BackendConfig,
        cell: CellRef,
    ) -> Result<BackendSlot, http::uri::InvalidUri> {
        let slot = BackendSlot::new(cfg, &self.load, cell)?;
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
        // The new backends' cells in one block: a reload that replaces every backend leaves a
        // snapshot that scans one array again (`pool/cells.rs`).
        let kept = |cfg: &BackendConfig| {
            old.index_of(&cfg.id)
                .is_some_and(|i| old.slots[i].addr == cfg.addr)
        };
        let mut cells = CellRef::block(backends.iter().filter(|c| !kept(c)).count()).into_iter();
        let mut cell = || cells.next().unwrap_or_else(CellRef::single);
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
                    slots.push(Arc::new(self.ramping(cfg, cell())?));
                }
                None => slots.push(Arc::new(self.ramping(cfg, cell())?)),
            }
        }
        for slot in &old.slots {
            if !backends.iter().any(|b| b.id == slot.id) {
                if slot.draining() {
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
        if removed.draining() {
            drained.insert(id.clone());
        } else {
            drained.remove(id);
        }
        self.publish(slots, drained, std::slice::from_ref(&removed));
        removed.close_tunnels_removed();
        Ok(removed)
    }
}
