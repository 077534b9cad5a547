//! What a pick reads about each backend ([`Hot`]: availability and in-flight count, 16 bytes),
//! and how those cells are laid out so a scan over them is a walk through one array.
//!
//! Least-conn reads every backend's cell on every pick (issue #2: ≤ 100 ns for 100 backends),
//! so the layout is the cost. History, measured with `benches/pick.rs`:
//!
//! * Inside the ~1 KiB slots, the two words sat at one offset of many same-sized allocations,
//!   and a 100-backend scan hit a few L1 sets over and over (least-conn 257 ns).
//! * One small allocation per cell, reached through a pointer array, depended on the allocator
//!   placing them side by side; between the slots' other allocations they were spread out and
//!   the scan waited on the cache once per backend.
//! * Now the backends a pool starts with (or gets in one reload) share one block, `Arc<[Hot]>`,
//!   allocated at once. A snapshot whose backends are exactly one block, in order (the usual
//!   case), scans that array directly ([`Cells::Dense`]); any other mix, after backends were
//!   added one by one, goes through each slot's reference ([`Cells::Scattered`]).
//!
//! A cell is shared by its slot (which updates it) and every snapshot holding the slot; a block
//! lives while any of its slots or snapshots does.

use std::ops::Deref;
use std::sync::Arc;

use super::load::Counter;
use super::state::Gate;

/// One backend's pick cell.
#[derive(Debug, Default)]
pub(super) struct Hot {
    /// Draining / health verdict / back-off deadline (see `pool/state.rs`).
    pub(super) gate: Gate,
    /// Requests in flight; also feeds the pool-wide sum while the slot is in the pool.
    pub(super) inflight: Counter,
}

impl Hot {
    /// Whether new clients may be sent here at `now_ms`.
    #[inline]
    pub(super) fn takes_new(&self, now_ms: u64) -> bool {
        self.gate.takes_new(now_ms)
    }

    /// Requests in flight now.
    #[inline]
    pub(super) fn inflight(&self) -> u64 {
        self.inflight.get()
    }
}

/// A slot's cell: `block[at]`.
#[derive(Debug, Clone)]
pub(super) struct CellRef {
    block: Arc<[Hot]>,
    at: usize,
}

impl CellRef {
    /// `n` fresh cells in one block, in order.
    pub(super) fn block(n: usize) -> Vec<Self> {
        let block: Arc<[Hot]> = (0..n).map(|_| Hot::default()).collect();
        (0..n)
            .map(|at| Self {
                block: Arc::clone(&block),
                at,
            })
            .collect()
    }

    /// One fresh cell (a block of its own).
    pub(super) fn single() -> Self {
        Self {
            block: Arc::new([Hot::default()]),
            at: 0,
        }
    }
}

impl Deref for CellRef {
    type Target = Hot;
    #[inline]
    fn deref(&self) -> &Hot {
        // `at < block.len()` by construction (only `block` and `single` make these).
        &self.block[self.at]
    }
}

/// A snapshot's cells, in member order.
#[derive(Debug)]
pub(super) enum Cells {
    /// The members' cells are exactly one block, in order.
    Dense(Arc<[Hot]>),
    /// Anything else: each member's own reference.
    Scattered(Box<[CellRef]>),
}

impl Cells {
    /// The cells of `refs` (one per member, in member order).
    pub(super) fn new<'a>(refs: impl ExactSizeIterator<Item = &'a CellRef> + Clone) -> Self {
        let n = refs.len();
        let mut all = refs.clone();
        if let Some(first) = all.next() {
            let dense = first.block.len() == n
                && refs
                    .clone()
                    .enumerate()
                    .all(|(i, r)| r.at == i && Arc::ptr_eq(&r.block, &first.block));
            if dense {
                return Self::Dense(Arc::clone(&first.block));
            }
        }
        Self::Scattered(refs.cloned().collect())
    }

    /// Member `i`'s cell.
    #[inline]
    pub(super) fn get(&self, i: usize) -> Option<&Hot> {
        match self {
            Self::Dense(cells) => cells.get(i),
            Self::Scattered(refs) => refs.get(i).map(Deref::deref),
        }
    }

    /// Calls `visit(i, cell, with[i])` for members `range` in order until it returns `true`;
    /// returns whether it did (members `with` has no entry for are not visited). The layout is
    /// matched once, not per member, and the cells are walked side by side with `with`.
    #[inline]
    pub(super) fn visit<T: Copy>(
        &self,
        range: std::ops::Range<usize>,
        with: &[T],
        mut visit: impl FnMut(usize, &Hot, T) -> bool,
    ) -> bool {
        let with = with
            .get(range.start..range.end.min(with.len()))
            .unwrap_or_default();
        match self {
            Self::Dense(cells) => {
                let cells = cells.get(range.clone()).unwrap_or_default();
                let pairs = cells.iter().zip(with);
                range.zip(pairs).any(|(i, (h, &t))| visit(i, h, t))
            }
            Self::Scattered(refs) => {
                let refs = refs.get(range.clone()).unwrap_or_default();
                let pairs = refs.iter().zip(with);
                range.zip(pairs).any(|(i, (r, &t))| visit(i, r, t))
            }
        }
    }

    /// Whether `pred` holds for every member's cell.
    pub(super) fn all(&self, pred: impl Fn(&Hot) -> bool) -> bool {
        match self {
            Self::Dense(cells) => cells.iter().all(pred),
            Self::Scattered(refs) => refs.iter().all(|r| pred(r)),
        }
    }

    /// Number of members.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        match self {
            Self::Dense(cells) => cells.len(),
            Self::Scattered(refs) => refs.len(),
        }
    }

    /// Whether the cells are one block in member order.
    #[cfg(test)]
    pub(super) fn is_dense(&self) -> bool {
        matches!(self, Self::Dense(_))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_block_in_order_is_dense_and_anything_else_is_not() {
        let refs = CellRef::block(3);
        assert!(Cells::new(refs.iter()).is_dense());
        // A subset, another order, or a foreign cell: scattered, same cells.
        assert!(!Cells::new(refs[..2].iter()).is_dense());
        let swapped = [refs[1].clone(), refs[0].clone(), refs[2].clone()];
        assert!(!Cells::new(swapped.iter()).is_dense());
        let mixed = [refs[0].clone(), refs[1].clone(), CellRef::single()];
        let cells = Cells::new(mixed.iter());
        assert!(!cells.is_dense());
        assert_eq!(cells.len(), 3);
        assert!(Cells::new([CellRef::single()].iter()).is_dense());
        assert_eq!(Cells::new(std::iter::empty::<&CellRef>()).len(), 0);
    }

    #[test]
    fn both_layouts_read_the_slots_own_cells() {
        let refs = CellRef::block(4);
        let extra = CellRef::single();
        for (i, r) in refs.iter().enumerate() {
            for _ in 0..i {
                r.inflight.begin(&super::super::load::PoolLoad::default());
            }
        }
        for _ in 0..9 {
            extra
                .inflight
                .begin(&super::super::load::PoolLoad::default());
        }
        let dense = Cells::new(refs.iter());
        let with_extra: Vec<CellRef> = refs.iter().cloned().chain([extra]).collect();
        let scattered = Cells::new(with_extra.iter());
        let tags = [10, 11, 12, 13, 14];
        for cells in [&dense, &scattered] {
            let mut seen = Vec::new();
            assert!(!cells.visit(1..cells.len(), &tags, |i, h, t| {
                seen.push((i, h.inflight(), t));
                false
            }));
            assert_eq!(seen[..3], [(1, 1, 11), (2, 2, 12), (3, 3, 13)]);
            assert_eq!(cells.get(2).map(Hot::inflight), Some(2));
            assert!(cells.get(cells.len()).is_none());
            // Stops where the visitor says so, and where `with` ends.
            let mut calls = 0;
            assert!(cells.visit(0..cells.len(), &tags, |_, h, _| {
                calls += 1;
                h.inflight() == 1
            }));
            assert_eq!(calls, 2);
            calls = 0;
            assert!(!cells.visit(0..cells.len(), &tags[..2], |_, _, _| {
                calls += 1;
                false
            }));
            assert_eq!(calls, 2);
            assert!(cells.all(|h| h.inflight() < 10) && !cells.all(|h| h.inflight() > 0));
        }
        assert_eq!(scattered.get(4).map(Hot::inflight), Some(9));
    }
}
