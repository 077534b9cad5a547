//! Load-aware policies: least connections and power of two choices.
//!
//! Hand-written because they are small, allocation-free and must take their randomness from the
//! caller (no global RNG), so that every decision can be replayed in a test. Load is compared per
//! unit of weight with exact integer arithmetic: `a` is less loaded than `b` when
//! `inflight_a × weight_b < inflight_b × weight_a` (in `u128`, so nothing overflows).
//! Members with weight 0 or not available are never picked.
//!
//! # How least-conn stays cheap (measured)
//!
//! Least-conn must look at every member, so its cost is the per-member step. Two things made that
//! step dear and are gone:
//!
//! * Weighted sets compared with two `u128` multiplications per member. Now each member's load is
//!   multiplied once by a factor precomputed at build time, `lcm(weights) / weight`, which keeps
//!   the order exact (`a/wa < b/wb ⇔ a·(L/wa) < b·(L/wb)`). When the lcm is large or a load so
//!   large that the product could wrap, the pick is redone with the exact comparison.
//! * Equal weights (the common case) need no factor at all: the scan reads only the view.
//!
//! And the scan stops at the first idle member in its order: cost 0 cannot be beaten, and the
//! first minimum in scan order is the answer anyway, so this changes no pick. On a pool with
//! some idle backends that is most of the win; on a busy pool the whole set is still read.
//! Branch-free variants (packing cost and position into one `u64` and taking the minimum) were
//! tried and were slower: on baseline x86-64 there is no vector `u64` minimum, and the serial
//! `min` chain costs more than a well-predicted branch.

use std::ops::Range;

use crate::backend::LoadView;

/// Largest common weight (lcm of the member weights) for which least-conn compares scaled loads.
const MAX_COMMON_WEIGHT: u64 = 1 << 20;

/// Loads below this, times a scale of at most [`MAX_COMMON_WEIGHT`], cannot overflow a `u64`.
const MAX_LOAD: u64 = 1 << 44;

/// Per-member factors that turn a load into a cost comparable across weights:
/// `factors[i] = lcm(weights) / weights[i]`, and 0 for a weight-0 member (never eligible).
/// `factors` is `None` when the lcm exceeds [`MAX_COMMON_WEIGHT`]: picks then use the exact
/// comparison.
#[derive(Debug, Default)]
pub(crate) struct Scales {
    factors: Option<Box<[u64]>>,
    kind: Kind,
}

/// What the factors look like, so the scan can skip work.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Every factor is 1 (all weights equal and > 0): loads are costs and everyone is a member.
    #[default]
    Equal,
    /// Every factor is 0 or 1 (weights > 0 equal, some weight-0 members).
    Uniform,
    /// Weights differ: loads are multiplied by their factors.
    Scaled,
}

impl Scales {
    /// Precomputes the factors for `weights` (once per selector build).
    pub(crate) fn new(weights: &[u32]) -> Self {
        let mut common = 1u64;
        for &w in weights.iter().filter(|&&w| w > 0) {
            let w = u64::from(w);
            common = common / gcd(common, w) * w;
            if common > MAX_COMMON_WEIGHT {
                return Self::default();
            }
        }
        let factors: Box<[u64]> = weights
            .iter()
            .map(|&w| if w == 0 { 0 } else { common / u64::from(w) })
            .collect();
        let kind = if factors.iter().all(|&f| f == 1) {
            Kind::Equal
        } else if factors.iter().all(|&f| f <= 1) {
            Kind::Uniform
        } else {
            Kind::Scaled
        };
        Self {
            factors: Some(factors),
            kind,
        }
    }
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 { a } else { gcd(b, a % b) }
}

/// Whether member `i` may take new work: weight > 0 and available.
fn eligible(weights: &[u32], view: &(impl LoadView + ?Sized), i: usize) -> bool {
    weights.get(i).is_some_and(|&w| w > 0) && view.available(i)
}

/// Whether `(load_a, weight_a)` is strictly less loaded per unit of weight than `(load_b, weight_b)`.
fn lighter(load_a: u64, weight_a: u32, load_b: u64, weight_b: u32) -> bool {
    u128::from(load_a) * u128::from(weight_b) < u128::from(load_b) * u128::from(weight_a)
}

/// The eligible member with the fewest in-flight requests per unit of weight.
///
/// The scan starts at `⌊random · len / 2^64⌋` and keeps the first minimum it meets, so equally
/// loaded members share new work instead of the lowest index always winning.
pub(crate) fn least_conn(
    weights: &[u32],
    scales: &Scales,
    view: &(impl LoadView + ?Sized),
    random: u64,
) -> Option<usize> {
    let n = weights.len();
    if n == 0 {
        return None;
    }
    // ⌊random · n / 2^64⌋: uniform like `random mod n`, without a division.
    let start = ((u128::from(random) * n as u128) >> 64) as usize;
    if let Some(factors) = &scales.factors
        && let Some(answer) = scaled_min(factors, scales.kind, view, start)
    {
        return answer;
    }
    let mut best = Best::NONE;
    best.scan(&weights[start..], start, view);
    best.scan(&weights[..start], 0, view);
    (best.weight > 0).then_some(best.index)
}

/// The scaled scan (see the module docs): `Some(answer)`, or `None` when a scanned member's load
/// is so large that its scaled cost might have wrapped, and the exact scan must decide.
fn scaled_min(
    scales: &[u64],
    kind: Kind,
    view: &(impl LoadView + ?Sized),
    start: usize,
) -> Option<Option<usize>> {
    let mut best = Cheapest {
        cost: u64::MAX,
        index: usize::MAX,
        loads: 0,
    };
    let n = scales.len();
    // Each half returns early on an idle member; `||` then skips the other half.
    if view.all_available() {
        // The common case: every backend up (the view says so once per pick), so the view
        // walks its counts and each member costs a load and a comparison.
        let _ = match kind {
            Kind::Equal => {
                best.scan_all::<EQUAL>(scales, start..n, view)
                    || best.scan_all::<EQUAL>(scales, 0..start, view)
            }
            Kind::Uniform => {
                best.scan_all::<UNIFORM>(scales, start..n, view)
                    || best.scan_all::<UNIFORM>(scales, 0..start, view)
            }
            Kind::Scaled => {
                best.scan_all::<SCALED>(scales, start..n, view)
                    || best.scan_all::<SCALED>(scales, 0..start, view)
            }
        };
        if best.index == usize::MAX {
            // Every cost was u64::MAX (or nobody has weight): let the exact scan decide.
            best.loads = u64::MAX;
        }
    } else {
        let _ = match kind {
            Kind::Equal => {
                best.scan::<EQUAL>(scales, start..n, view)
                    || best.scan::<EQUAL>(scales, 0..start, view)
            }
            Kind::Uniform => {
                best.scan::<UNIFORM>(scales, start..n, view)
                    || best.scan::<UNIFORM>(scales, 0..start, view)
            }
            Kind::Scaled => {
                best.scan::<SCALED>(scales, start..n, view)
                    || best.scan::<SCALED>(scales, 0..start, view)
            }
        };
    }
    if best.loads >= MAX_LOAD {
        return None;
    }
    Some((best.index != usize::MAX).then_some(best.index))
}

/// [`Cheapest::scan`] modes, one per [`Kind`] (const generics take no enums).
const EQUAL: u8 = 0;
const UNIFORM: u8 = 1;
const SCALED: u8 = 2;

/// The cheapest member seen so far by [`scaled_min`], and the OR of every load it read (a
/// bound on the largest, to know whether any cost could have wrapped).
struct Cheapest {
    cost: u64,
    index: usize,
    loads: u64,
}

impl Cheapest {
    /// Scans members `range` (within `scales`) in order; `true` when it met an idle member,
    /// which nothing later can beat (cost 0), so the caller stops there. `MODE` skips what the
    /// [`Kind`] makes redundant: reading the scale (`EQUAL`) and multiplying by it (all but
    /// `SCALED`), the two costs that made weighted least-conn slower than unweighted.
    fn scan<const MODE: u8>(
        &mut self,
        scales: &[u64],
        range: Range<usize>,
        view: &(impl LoadView + ?Sized),
    ) -> bool {
        let scales = scales.get(range.clone()).unwrap_or_default();
        for (i, &scale) in range.zip(scales) {
            let eligible = if MODE == EQUAL {
                view.available(i)
            } else {
                (scale > 0) & view.available(i)
            };
            if eligible {
                let load = view.inflight(i);
                // Also in the unscaled modes: a load of `u64::MAX` would tie with "none yet".
                self.loads |= load;
                let cost = if MODE == SCALED {
                    load.wrapping_mul(scale)
                } else {
                    load
                };
                if cost < self.cost {
                    (self.cost, self.index) = (cost, i);
                    if cost == 0 {
                        return true;
                    }
                }
            }
        }
        false
    }

    /// [`Self::scan`] on a view whose members are all available ([`LoadView::all_available`]):
    /// the view walks its counts itself ([`LoadView::visit_inflight`]), and the loop is kept to
    /// a load, the scale (unless `EQUAL`), a compare and a well-predicted branch. A new cheapest
    /// member is rare once the first few are seen, so everything else happens only then, on a
    /// path marked cold (as conditional moves, the update made a two-cycle dependency from each
    /// member to the next):
    ///
    /// * a weight-0 member (scale 0) is passed over;
    /// * the load joins `loads`, the wrap check: a scaled cost can only have wrapped if its load
    ///   is ≥ [`MAX_LOAD`], and a wrapped cost matters only if it comes out below the cheapest so
    ///   far, which brings it here, so checking only here is enough;
    /// * the scan stops at an idle member (cost 0 is always below the cheapest so far, or the
    ///   scan would have stopped already).
    ///
    /// Measured: see `docs/benchmarks.md`, "least-conn".
    fn scan_all<const MODE: u8>(
        &mut self,
        scales: &[u64],
        range: Range<usize>,
        view: &(impl LoadView + ?Sized),
    ) -> bool {
        view.visit_inflight(range, scales, |i, load, scale| {
            let scale = if MODE == EQUAL { 1 } else { scale };
            let cost = if MODE == SCALED {
                load.wrapping_mul(scale)
            } else {
                load
            };
            if cost < self.cost {
                std::hint::cold_path();
                if scale == 0 {
                    return false;
                }
                self.loads |= load;
                (self.cost, self.index) = (cost, i);
                return cost == 0;
            }
            false
        })
    }
}

/// The lightest member seen so far, for the exact (unpacked) scan. [`Best::NONE`] has load 1 and
/// weight 0, an infinite load per weight that any eligible member beats, so the scan needs no
/// special first case.
struct Best {
    index: usize,
    load: u64,
    weight: u32,
}

impl Best {
    const NONE: Self = Self {
        index: usize::MAX,
        load: 1,
        weight: 0,
    };

    /// Scans members `first..first + weights.len()` in order.
    fn scan(&mut self, weights: &[u32], first: usize, view: &(impl LoadView + ?Sized)) {
        for (i, &weight) in (first..).zip(weights) {
            if (weight > 0) && view.available(i) {
                let load = view.inflight(i);
                if lighter(load, weight, self.load, self.weight) {
                    *self = Self {
                        index: i,
                        load,
                        weight,
                    };
                }
            }
        }
    }
}

/// Power of two choices: two distinct eligible members chosen from `random`, the less loaded per
/// unit of weight wins (the first on a tie).
///
/// The low 32 bits of `random` choose the first candidate, the high 32 bits the second (from the
/// other `len − 1` positions). A candidate that is not eligible is replaced by the next eligible
/// member after it (wrapping). With one eligible member it is returned; with none, `None`.
pub(crate) fn p2c(weights: &[u32], view: &(impl LoadView + ?Sized), random: u64) -> Option<usize> {
    let n = weights.len();
    if n == 0 {
        return None;
    }
    let a = (random as u32 as usize) % n;
    let first = next_eligible(weights, view, a, None)?;
    if n == 1 {
        return Some(first);
    }
    let b = ((random >> 32) as usize) % (n - 1);
    let b = if b >= a { b + 1 } else { b };
    let Some(second) = next_eligible(weights, view, b, Some(first)) else {
        return Some(first);
    };
    let (l1, w1) = (view.inflight(first), weights[first]);
    let (l2, w2) = (view.inflight(second), weights[second]);
    Some(if lighter(l2, w2, l1, w1) {
        second
    } else {
        first
    })
}

/// The first eligible member at or after `from` (wrapping), other than `skip`.
fn next_eligible(
    weights: &[u32],
    view: &(impl LoadView + ?Sized),
    from: usize,
    skip: Option<usize>,
) -> Option<usize> {
    let n = weights.len();
    (from..n)
        .chain(0..from)
        .find(|&i| Some(i) != skip && eligible(weights, view, i))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scales(weights: &[u32]) -> Scales {
        Scales::new(weights)
    }

    #[test]
    fn least_conn_picks_least_loaded_per_weight() {
        let ms = &[1, 1, 1];
        let view = [(true, 5), (true, 2), (true, 7)];
        for r in 0..10 {
            assert_eq!(least_conn(ms, &scales(ms), &view[..], r), Some(1));
        }
        // 4 in flight on weight 4 (1 per unit) beats 2 on weight 1.
        let ms = &[1, 4];
        assert_eq!(
            least_conn(ms, &scales(ms), &[(true, 2), (true, 4)][..], 0),
            Some(1)
        );
    }

    #[test]
    fn lighter_is_exact_for_huge_loads() {
        assert!(lighter(u64::MAX - 1, u32::MAX, u64::MAX, u32::MAX));
        assert!(!lighter(u64::MAX, 2, u64::MAX, 2));
        // Same load, more weight: lighter per unit of weight.
        assert!(lighter(u64::MAX, u32::MAX, u64::MAX, u32::MAX - 1));
        assert!(!lighter(u64::MAX, u32::MAX - 1, u64::MAX, u32::MAX));
        assert!(lighter(3, 1, u64::from(u32::MAX) + 1, 1));
        // The "none yet" sentinel (load 1, weight 0) loses to anything with weight.
        assert!(!lighter(1, 0, 0, 1));
        assert!(lighter(0, 1, 1, 0));
    }

    #[test]
    fn least_conn_skips_unavailable_and_zero_weight() {
        let ms = &[1, 0, 1];
        let view = [(false, 0), (true, 0), (true, 9)];
        assert_eq!(least_conn(ms, &scales(ms), &view[..], 0), Some(2));
        assert_eq!(least_conn(ms, &scales(ms), &[(false, 0); 3][..], 0), None);
        assert_eq!(least_conn(&[], &scales(&[]), &[][..], 0), None);
    }

    #[test]
    fn packed_and_exact_scans_agree() {
        let exact = Scales::default();
        for ms in [&[2, 2, 0, 2, 2][..], &[1, 2, 0, 3, 6]] {
            let view = [(true, 4), (true, 1), (true, 0), (false, 0), (true, 1)];
            for r in 0..10 {
                let packed = least_conn(ms, &scales(ms), &view[..], r);
                assert_eq!(packed, least_conn(ms, &exact, &view[..], r));
            }
        }
        let ms = &[2, 2, 0, 2, 2];
        let view = [(true, 4), (true, 1), (true, 0), (false, 0), (true, 1)];
        assert!(matches!(
            least_conn(ms, &scales(ms), &view[..], 7),
            Some(1 | 4)
        ));
    }

    #[test]
    fn scales_are_lcm_over_weight_or_absent() {
        let s = Scales::new(&[1, 2, 0, 3]);
        assert_eq!(s.factors.as_deref(), Some(&[6, 3, 0, 2][..]));
        assert_eq!(s.kind, Kind::Scaled);
        let s = Scales::new(&[5, 0, 5]);
        assert_eq!(s.factors.as_deref(), Some(&[1, 0, 1][..]));
        assert_eq!(s.kind, Kind::Uniform);
        assert_eq!(Scales::new(&[7, 7]).kind, Kind::Equal);
        assert_eq!(Scales::new(&[]).factors.as_deref(), Some(&[][..]));
        // Coprime weights whose lcm passes the limit: exact comparisons only.
        assert!(Scales::new(&[1021, 1031, 1033]).factors.is_none());
        assert!(Scales::new(&[u32::MAX, 1]).factors.is_none());
    }

    #[test]
    fn huge_loads_fall_back_to_the_exact_scan() {
        // Scaled loads that cannot be packed (or saturate) still give the exact answer.
        let ms = &[1, 2, 1];
        let view = [(true, u64::MAX), (true, u64::MAX - 1), (true, u64::MAX)];
        assert_eq!(least_conn(ms, &scales(ms), &view[..], 0), Some(1));
        let view = [(true, 1 << 62), (false, 0), (true, (1 << 62) - 1)];
        for r in [0, u64::MAX / 2, u64::MAX] {
            assert_eq!(least_conn(ms, &scales(ms), &view[..], r), Some(2));
        }
        // Huge loads on ineligible members do not force the fallback, nor win.
        let view = [(false, u64::MAX), (true, 3), (true, 2)];
        // 3 in flight on weight 2 (1.5 each) beats 2 on weight 1.
        assert_eq!(least_conn(ms, &scales(ms), &view[..], 0), Some(1));
        assert_eq!(
            scaled_min(&[1, 1, 1], Kind::Equal, &view[..], 0),
            Some(Some(2))
        );
        let one = [(true, 9)];
        assert_eq!(least_conn(&[4], &scales(&[4]), &one[..], u64::MAX), Some(0));
    }

    /// A slice view that says every member is available (takes the walk over counts alone).
    struct AllUp<'a>(&'a [(bool, u64)]);

    impl LoadView for AllUp<'_> {
        fn available(&self, i: usize) -> bool {
            self.0.available(i)
        }
        fn inflight(&self, i: usize) -> u64 {
            self.0.inflight(i)
        }
        fn all_available(&self) -> bool {
            true
        }
    }

    #[test]
    fn a_wrapped_cost_on_the_all_up_walk_falls_back_to_the_exact_scan() {
        // lcm 20 000: member 0's factor is 20 000, and this load times it wraps to 8 384,
        // below member 1's honest 9 000 (0.45 per unit of weight against 9.2e14).
        let ms = &[1, 20_000];
        let load = 922_337_203_685_478;
        assert_eq!(load * 20_000u128 % (1 << 64), 8_384);
        let view = [(true, load as u64), (true, 9_000)];
        for r in [0, u64::MAX] {
            assert_eq!(least_conn(ms, &scales(ms), &AllUp(&view), r), Some(1));
        }
        // Weight-0 members are passed over, idle or not; idle members stop the walk.
        let ms = &[0, 3, 0, 3];
        let view = [(true, 0), (true, 4), (true, 0), (true, 2)];
        assert_eq!(least_conn(ms, &scales(ms), &AllUp(&view), 0), Some(3));
        let view = [(true, 0), (true, 0), (true, 0), (true, 0)];
        assert_eq!(least_conn(ms, &scales(ms), &AllUp(&view), 0), Some(1));
        let ms = &[0, 0];
        assert_eq!(least_conn(ms, &scales(ms), &AllUp(&view[..2]), 0), None);
    }

    #[test]
    fn least_conn_ties_spread() {
        let ms = &[1, 1, 1, 1];
        let view = [(true, 3); 4];
        let mut seen = [0; 4];
        for k in 0..4u64 {
            // One random value from each quarter of the u64 range: each start once.
            let r = k * (u64::MAX / 4) + 12_345;
            if let Some(i) = least_conn(ms, &scales(ms), &view[..], r) {
                seen[i] += 1;
            }
        }
        assert_eq!(seen, [1; 4]);
    }

    #[test]
    fn p2c_picks_the_lighter_of_two() {
        let ms = &[1, 1];
        let view = [(true, 9), (true, 1)];
        for r in [0, 1, u64::MAX, 1 << 32, 12345] {
            assert_eq!(p2c(ms, &view[..], r), Some(1));
        }
        // Three members: the most loaded one can never win a comparison.
        let ms = &[1, 1, 1];
        let view = [(true, 0), (true, 1), (true, 100)];
        for r in 0..200u64 {
            let r = r.wrapping_mul(0x9E37_79B9_7F4A_7C15);
            assert_ne!(p2c(ms, &view[..], r), Some(2));
        }
    }

    #[test]
    fn p2c_falls_back_and_never_picks_unavailable() {
        let ms = &[1, 1, 0, 1];
        let view = [(false, 0), (true, 50), (true, 0), (false, 0)];
        for r in 0..50u64 {
            assert_eq!(
                p2c(ms, &view[..], r.wrapping_mul(0x9E37_79B9_7F4A_7C15)),
                Some(1)
            );
        }
        assert_eq!(p2c(ms, &[(false, 0); 4][..], 7), None);
        assert_eq!(p2c(&[3], &[(true, 1)][..], 7), Some(0));
        assert_eq!(p2c(&[], &[][..], 7), None);
    }

    #[test]
    fn p2c_ties_spread() {
        let ms = &[1, 1, 1, 1];
        let view = [(true, 0); 4];
        let mut seen = [0; 4];
        for r in 0..400u64 {
            if let Some(i) = p2c(ms, &view[..], r.wrapping_mul(0x9E37_79B9_7F4A_7C15)) {
                seen[i] += 1;
            }
        }
        assert!(seen.iter().all(|&c| c > 50), "{seen:?}");
    }
}
