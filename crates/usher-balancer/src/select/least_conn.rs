//! Load-aware policies: least connections and power of two choices.
//!
//! Hand-written because they are small, allocation-free and must take their randomness from the
//! caller (no global RNG), so that every decision can be replayed in a test. Load is compared per
//! unit of weight with exact integer arithmetic: `a` is less loaded than `b` when
//! `inflight_a × weight_b < inflight_b × weight_a` (in `u128`, so nothing overflows).
//! Members with weight 0 or not available are never picked.

use crate::backend::LoadView;

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
    uniform: bool,
    view: &(impl LoadView + ?Sized),
    random: u64,
) -> Option<usize> {
    let n = weights.len();
    if n == 0 {
        return None;
    }
    // ⌊random · n / 2^64⌋: uniform like `random mod n`, without a division.
    let start = ((u128::from(random) * n as u128) >> 64) as usize;
    let mut best = Best::NONE;
    if uniform {
        best.scan::<true>(&weights[start..], start, view);
        best.scan::<true>(&weights[..start], 0, view);
    } else {
        best.scan::<false>(&weights[start..], start, view);
        best.scan::<false>(&weights[..start], 0, view);
    }
    (best.weight > 0).then_some(best.index)
}

/// The lightest member seen so far. [`Best::NONE`] has load 1 and weight 0, an infinite load per
/// weight that any eligible member beats, so the scan needs no special first case.
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

    /// Scans members `first..first + weights.len()` in order. `UNIFORM`: every weight > 0 is the
    /// same, so comparing loads is comparing loads per weight (and skips two multiplications).
    fn scan<const UNIFORM: bool>(
        &mut self,
        weights: &[u32],
        first: usize,
        view: &(impl LoadView + ?Sized),
    ) {
        for (i, &weight) in (first..).zip(weights) {
            if (weight > 0) & view.available(i) {
                let load = view.inflight(i);
                let better = if UNIFORM {
                    (self.weight == 0) | (load < self.load)
                } else {
                    lighter(load, weight, self.load, self.weight)
                };
                if better {
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

    fn uniform(weights: &[u32]) -> bool {
        let mut positive = weights.iter().filter(|&&w| w > 0);
        positive.next().is_none_or(|&w| positive.all(|&v| v == w))
    }

    #[test]
    fn least_conn_picks_least_loaded_per_weight() {
        let ms = &[1, 1, 1];
        let view = [(true, 5), (true, 2), (true, 7)];
        for r in 0..10 {
            assert_eq!(least_conn(ms, uniform(ms), &view[..], r), Some(1));
        }
        // 4 in flight on weight 4 (1 per unit) beats 2 on weight 1.
        let ms = &[1, 4];
        assert_eq!(
            least_conn(ms, uniform(ms), &[(true, 2), (true, 4)][..], 0),
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
        assert_eq!(least_conn(ms, uniform(ms), &view[..], 0), Some(2));
        assert_eq!(least_conn(ms, uniform(ms), &[(false, 0); 3][..], 0), None);
        assert_eq!(least_conn(&[], uniform(&[]), &[][..], 0), None);
    }

    #[test]
    fn uniform_and_general_scans_agree() {
        let ms = &[2, 2, 0, 2, 2];
        let view = [(true, 4), (true, 1), (true, 0), (false, 0), (true, 1)];
        for r in 0..10 {
            let fast = least_conn(ms, true, &view[..], r);
            assert_eq!(fast, least_conn(ms, false, &view[..], r));
            assert!(matches!(fast, Some(1 | 4)));
        }
        assert!(uniform(&[0, 3, 3, 0]) && uniform(&[]) && !uniform(&[1, 2]));
    }

    #[test]
    fn least_conn_ties_spread() {
        let ms = &[1, 1, 1, 1];
        let view = [(true, 3); 4];
        let mut seen = [0; 4];
        for k in 0..4u64 {
            // One random value from each quarter of the u64 range: each start once.
            let r = k * (u64::MAX / 4) + 12_345;
            if let Some(i) = least_conn(ms, uniform(ms), &view[..], r) {
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
