//! Maglev consistent hashing (Eisenbud et al., NSDI '16) with weights and bounded load.
//!
//! Hand-written rather than taken from a crate because the exact table layout is part of the
//! product's behaviour: every replica and every restart must map a key to the same backend, and a
//! differential test pins the layout. No `RandomState`, no global RNG: the layout depends only on
//! the member ids and weights (not on their order in the configuration).
//!
//! # Table
//!
//! A lookup table of `M` slots, each naming a member. `M` is the smallest prime in
//! [`TABLE_SIZES`] with at least [`SLOTS_PER_MEMBER`] slots per weighted member: 131 111 for up to
//! 1 311 members. Each member walks its own preference sequence over the slots,
//!
//! ```text
//! pref(j) = (offset + skip · (⌊M/2⌋ + j)³) mod M,    j = 0, 1, 2, …
//! offset  = xxh3_64(id, OFFSET_SEED) mod M
//! skip    = xxh3_64(id, SKIP_SEED) mod (M − 1) + 1
//! ```
//!
//! Every listed `M` is a prime with `M mod 3 = 2`, so cubing is a bijection mod `M` and each
//! sequence visits every slot exactly once per `M` steps (the build always terminates).
//!
//! The table is filled *depth-synchronously*: at depth `j = 0, 1, 2, …` every member still below
//! its quota, in id order, looks at its `j`-th preference and claims the slot if it is free.
//! Quotas are exact: member `i` gets `M · wᵢ / Σw` slots by largest remainder, at least one, so
//! the spread is within one slot of proportional and a weight-0 member gets none.
//!
//! ## Why not the textbook loop (measured, not guessed)
//!
//! The paper's populate loop (members take turns, each claiming its next free preference) with
//! linear permutations `offset + j · skip` and `M = 65 537` moved up to **1.12/(N+1)** of
//! 100 000 keys when a member joined a ring of N ≤ 20 (mean 1.07/(N+1) at N = 20), over the
//! 1.1/(N+1) budget. Two things were at fault. The turn order lets an early collision cascade
//! through later claims; claiming by depth instead cut the mean excess by about a third. And
//! linear permutations correlate: when two members' skips are in a small ratio (±2, ±1/2, …
//! mod M, which happens for a few percent of rings) one steals from the other systematically,
//! giving outliers of 1.18/(N+1) at M = 131 101 and still 1.10/(N+1) at M = 262 147. The cube
//! makes every pair of sequences look independent and removed those outliers. The remaining
//! excess is the price of exact balance (about `0.2 · (N+1)/√M`), so `M` starts at 131 111.
//! Measured over 1 500 random rings (ids of 1–12 random characters, 100 000 keys each): moved
//! fraction × (N+1) at N = 10: mean 1.015, max 1.041; N = 15: 1.023, 1.054; N = 20: 1.038, 1.065;
//! max over all N in 2..=20: 1.075. Building for 100 members takes about 6 ms.
//!
//! # Lookup and bounded load
//!
//! See [`Table::lookup`]: start at slot `hash mod M`, walk forward (wrapping) and take the first
//! member that is available and under the bounded-load cap. Walking on from an unavailable
//! member's slot is the "next on the ring" failover: keys owned by other members never move when
//! one member becomes unavailable.

mod build;

use crate::backend::{LoadTotals, LoadView, Member};

/// Candidate table sizes: for each power of two from 2^17 to 2^24, the smallest prime above it
/// that is 2 mod 3 (so that cubing permutes the slots).
pub const TABLE_SIZES: [usize; 8] = [
    131_111, 262_151, 524_309, 1_048_583, 2_097_257, 4_194_329, 8_388_617, 16_777_259,
];

/// Minimum table slots per weighted member when choosing the table size.
pub const SLOTS_PER_MEMBER: usize = 100;

/// Seed for a member's preference offset: the ASCII bytes `"mglv-off"` as a big-endian `u64`.
pub const OFFSET_SEED: u64 = u64::from_be_bytes(*b"mglv-off");

/// Seed for a member's preference skip: the ASCII bytes `"mglv-skp"` as a big-endian `u64`.
pub const SKIP_SEED: u64 = u64::from_be_bytes(*b"mglv-skp");

/// A built Maglev lookup table: slot → member index.
pub(crate) struct Table {
    slots: Slots,
}

/// Table entries: `u16` when every member index fits (halving the memory), else `u32`.
enum Slots {
    Narrow(Box<[u16]>),
    Wide(Box<[u32]>),
}

impl Table {
    /// Builds the table for `members` (weight-0 members get no slots).
    pub(crate) fn build(members: &[Member]) -> Self {
        let slots = build::populate(members);
        let slots = match slots.iter().map(|&i| u16::try_from(i)).collect() {
            Ok(narrow) => Slots::Narrow(narrow),
            Err(_) => Slots::Wide(slots.into_boxed_slice()),
        };
        Self { slots }
    }

    /// Number of slots (`M`), or 0 when no member has weight > 0.
    pub(crate) fn size(&self) -> usize {
        match &self.slots {
            Slots::Narrow(s) => s.len(),
            Slots::Wide(s) => s.len(),
        }
    }

    /// The member owning the slot `hash` lands on, ignoring availability and load.
    pub(crate) fn owner(&self, hash: u64) -> Option<usize> {
        match &self.slots {
            Slots::Narrow(s) => slot_at(s, hash).map(SlotIndex::index),
            Slots::Wide(s) => slot_at(s, hash).map(SlotIndex::index),
        }
    }

    /// Bounded-load lookup.
    ///
    /// A member is *eligible* when it has weight > 0 and is available. With `n` eligible members
    /// carrying `total` in-flight requests, the cap is `⌈c · (total + 1) / n⌉`; the walk from slot
    /// `hash mod M` returns the first eligible member with `inflight + 1 ≤ cap`. The least-loaded
    /// eligible member always meets the cap (for `c ≥ 1`: its load is at most `⌊total / n⌋` and
    /// `⌊total / n⌋ + 1 = ⌈(total + 1) / n⌉`), so with a consistent view the walk finds one. If the
    /// view changes underneath (live atomics) and nothing meets the cap, the first eligible member
    /// on the walk is returned; if the walk saw none, the first eligible member in index order from
    /// `hash mod len`. The walk is at most `M` slots; members already rejected are skipped by a
    /// small bitset. The counts come from [`LoadView::totals`].
    pub(crate) fn lookup(
        &self,
        weights: &[u32],
        view: &(impl LoadView + ?Sized),
        hash: u64,
        factor: f64,
    ) -> Option<usize> {
        // The mean comes from the view: O(1) when it keeps pool-wide counters, else the one
        // O(n) pass of a pick. The walk itself usually stops at its first or second slot.
        let LoadTotals {
            members: eligible,
            inflight: total,
        } = view.totals(weights);
        if eligible == 0 {
            return None;
        }
        let cap = load_cap(factor, total, eligible);
        let found = match &self.slots {
            Slots::Narrow(s) => walk(s, view, hash, cap),
            Slots::Wide(s) => walk(s, view, hash, cap),
        };
        found.or_else(|| {
            let n = weights.len();
            let from = (hash % n as u64) as usize;
            (from..n)
                .chain(0..from)
                .find(|&i| weights[i] > 0 && view.available(i))
        })
    }
}

/// A table entry as a member index.
trait SlotIndex: Copy {
    fn index(self) -> usize;
}

impl SlotIndex for u16 {
    fn index(self) -> usize {
        usize::from(self)
    }
}

impl SlotIndex for u32 {
    fn index(self) -> usize {
        self as usize
    }
}

fn slot_at<T: SlotIndex>(slots: &[T], hash: u64) -> Option<T> {
    let m = slots.len() as u64;
    if m == 0 {
        return None;
    }
    slots.get((hash % m) as usize).copied()
}

/// The bounded-load walk of [`Table::lookup`] over one table representation.
fn walk<T: SlotIndex>(
    slots: &[T],
    view: &(impl LoadView + ?Sized),
    hash: u64,
    cap: u64,
) -> Option<usize> {
    if slots.is_empty() {
        return None;
    }
    let start = (hash % slots.len() as u64) as usize;
    let (before, after) = slots.split_at(start);
    let mut rejected = SmallBitSet::default();
    let mut first_available = None;
    for &slot in after.iter().chain(before) {
        let i = slot.index();
        if rejected.contains(i) {
            continue;
        }
        if view.available(i) {
            if view.inflight(i).saturating_add(1) <= cap {
                return Some(i);
            }
            first_available.get_or_insert(i);
        }
        rejected.insert(i);
    }
    first_available
}

/// The bounded-load cap `⌈c · (total + 1) / n⌉`, saturating at `u64::MAX` (`c = +∞`: no cap).
fn load_cap(factor: f64, total: u64, eligible: u64) -> u64 {
    let cap = (factor * (total as f64 + 1.0) / eligible as f64).ceil();
    // `as` saturates, which is the intent for +∞ and huge factors.
    cap as u64
}

/// Remembers rejected member indices below 256 without allocating; larger indices are rechecked.
#[derive(Default)]
struct SmallBitSet([u64; 4]);

impl SmallBitSet {
    fn contains(&self, i: usize) -> bool {
        self.0.get(i / 64).is_some_and(|w| w & (1 << (i % 64)) != 0)
    }
    fn insert(&mut self, i: usize) {
        if let Some(w) = self.0.get_mut(i / 64) {
            *w |= 1 << (i % 64);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::BackendId;

    fn members(n: usize) -> Vec<Member> {
        (0..n)
            .map(|i| Member {
                id: BackendId::new(&format!("b{i}")).expect("id"),
                weight: 1,
            })
            .collect()
    }

    #[test]
    fn load_cap_formula() {
        assert_eq!(load_cap(1.0, 0, 4), 1);
        assert_eq!(load_cap(1.25, 0, 1), 2);
        assert_eq!(load_cap(1.25, 11, 4), 4); // 1.25 · 12 / 4 = 3.75
        assert_eq!(load_cap(1.0, 11, 4), 3);
        assert_eq!(load_cap(2.0, 9, 5), 4);
        assert_eq!(load_cap(f64::INFINITY, 9, 5), u64::MAX);
        assert_eq!(load_cap(1.0, u64::MAX, 1), u64::MAX);
    }

    #[test]
    fn walk_skips_unavailable_and_full_members() {
        let ms = members(3);
        let table = Table::build(&ms);
        let weights = [1, 1, 1];
        let hash = (0..)
            .find(|&h| table.owner(h) == Some(0))
            .expect("member 0 owns a slot");
        let up = [(true, 0); 3];
        assert_eq!(table.lookup(&weights, &up[..], hash, 1.25), Some(0));
        // Down: the next member on the walk, which is what pick on the remaining two gives.
        let down0 = [(false, 0), (true, 0), (true, 0)];
        let next = table.lookup(&weights, &down0[..], hash, 1.25);
        assert!(matches!(next, Some(1 | 2)));
        // Over the cap (c = 1: cap = ⌈(10+1)/3⌉ = 4): also walks on, to the same next member.
        let busy0 = [(true, 10), (true, 0), (true, 0)];
        assert_eq!(table.lookup(&weights, &busy0[..], hash, 1.0), next);
        // A huge factor disables the cap.
        assert_eq!(
            table.lookup(&weights, &busy0[..], hash, f64::INFINITY),
            Some(0)
        );
        assert_eq!(
            table.lookup(&weights, &[(false, 0); 3][..], hash, 1.25),
            None
        );
    }

    #[test]
    fn weight_zero_is_never_picked_and_empty_tables_answer_none() {
        let mut ms = members(3);
        ms[1].weight = 0;
        let table = Table::build(&ms);
        let weights = [1, 0, 1];
        let view = [(true, 0), (true, 0), (true, 0)];
        for h in 0..2_000u64 {
            let h = crate::hash_key(&h.to_le_bytes());
            assert_ne!(table.lookup(&weights, &view[..], h, 1.25), Some(1));
            assert_ne!(table.owner(h), Some(1));
        }
        let empty = Table::build(&[]);
        assert_eq!((empty.size(), empty.owner(7)), (0, None));
        assert_eq!(empty.lookup(&[], &[][..], 7, 1.25), None);
    }

    #[test]
    fn wide_tables_are_used_when_indices_do_not_fit_u16() {
        // 70 000 members, all but two with weight 0: indices above u16::MAX must survive.
        let mut ms: Vec<Member> = (0..70_000)
            .map(|i| Member {
                id: BackendId::new(&format!("w{i}")).expect("id"),
                weight: 0,
            })
            .collect();
        ms[3].weight = 1;
        ms[69_999].weight = 1;
        let table = Table::build(&ms);
        assert!(matches!(table.slots, Slots::Wide(_)));
        let mut seen = [false; 2];
        for h in 0..1_000u64 {
            match table.owner(h) {
                Some(3) => seen[0] = true,
                Some(69_999) => seen[1] = true,
                other => panic!("unexpected owner {other:?}"),
            }
        }
        assert_eq!(seen, [true, true]);
    }

    #[test]
    fn small_bitset() {
        let mut s = SmallBitSet::default();
        for i in [0, 63, 64, 255, 256, 10_000] {
            assert!(!s.contains(i));
            s.insert(i);
        }
        assert!(s.contains(0) && s.contains(63) && s.contains(64) && s.contains(255));
        assert!(!s.contains(256) && !s.contains(10_000) && !s.contains(1));
    }
}
