//! Smooth weighted round robin (the nginx algorithm), precomputed into a schedule.
//!
//! Hand-written because it is the product's default policy and its exact sequence is specified:
//! equal weights rotate strictly (A, B, C, A, B, C) and unequal weights interleave smoothly
//! (weights 5, 1, 1 give `a a b a c a a`). The schedule is computed once when the selector is
//! built; picking is one atomic increment plus a table read, so a shared selector needs no lock.

use std::sync::atomic::{AtomicUsize, Ordering};

use crate::backend::LoadView;

/// Target schedule length: weights (after dividing by their gcd) summing to more are scaled down
/// to `max(1, w · MAX_SCHEDULE / Σw)`, keeping their ratios approximately and every weight > 0
/// at least 1, so a schedule has at most `MAX_SCHEDULE` + one entry per member. Building costs
/// O(schedule length × members) simple steps, paid once per membership change.
pub const MAX_SCHEDULE: u64 = 10_000;

/// Probes made before checking, in O(members), whether anything is available at all: keeps an
/// all-down pick from walking a long schedule.
const PROBES_BEFORE_SCAN: usize = 8;

/// A precomputed round-robin schedule of member indices and the shared cursor into it.
#[derive(Default)]
pub(crate) struct Schedule {
    entries: Vec<u32>,
    cursor: AtomicUsize,
}

impl Schedule {
    /// Builds the schedule for members of these `weights` (weight-0 members are left out).
    pub(crate) fn build(weights: &[u32]) -> Self {
        let entries = smooth_sequence(&normalized_weights(weights));
        Self {
            entries,
            cursor: AtomicUsize::new(0),
        }
    }

    /// Length of one full cycle.
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// The next available member on the schedule, or `None` when none is available.
    ///
    /// Each pick takes a ticket from the cursor; if the scheduled member is unavailable the walk
    /// goes on to the following entries (at most one full cycle) and then tries to move the shared
    /// cursor past the skipped entries, so the member after an unavailable one is not picked twice
    /// as often. That move is best effort (a compare-exchange): under contention the order can
    /// deviate slightly, never the availability rule.
    pub(crate) fn pick(&self, weights: &[u32], view: &(impl LoadView + ?Sized)) -> Option<usize> {
        let len = self.entries.len();
        if len == 0 {
            return None;
        }
        let ticket = self.cursor.fetch_add(1, Ordering::Relaxed);
        let start = ticket % len;
        let (before, after) = self.entries.split_at(start);
        for (step, &entry) in after.iter().chain(before).enumerate() {
            if step == PROBES_BEFORE_SCAN && !any_available(weights, view) {
                return None;
            }
            let i = entry as usize;
            if view.available(i) {
                if step > 0 {
                    let _ = self.cursor.compare_exchange(
                        ticket.wrapping_add(1),
                        ticket.wrapping_add(1 + step),
                        Ordering::Relaxed,
                        Ordering::Relaxed,
                    );
                }
                return Some(i);
            }
        }
        None
    }
}

fn any_available(weights: &[u32], view: &(impl LoadView + ?Sized)) -> bool {
    weights
        .iter()
        .enumerate()
        .any(|(i, &w)| w > 0 && view.available(i))
}

/// `(member index, weight)` for members with weight > 0, divided by the weights' gcd and scaled
/// down when the sum exceeds [`MAX_SCHEDULE`].
fn normalized_weights(raw: &[u32]) -> Vec<(u32, u64)> {
    let mut weights: Vec<(u32, u64)> = raw
        .iter()
        .enumerate()
        .filter(|&(_, &w)| w > 0)
        .filter_map(|(i, &w)| Some((u32::try_from(i).ok()?, u64::from(w))))
        .collect();
    divide_by_gcd(&mut weights);
    let sum: u64 = weights.iter().map(|w| w.1).sum();
    if sum > MAX_SCHEDULE {
        for w in &mut weights {
            w.1 = (w.1 * MAX_SCHEDULE / sum).max(1);
        }
        divide_by_gcd(&mut weights);
    }
    weights
}

fn divide_by_gcd(weights: &mut [(u32, u64)]) {
    let g = weights.iter().fold(0, |g, w| gcd(g, w.1));
    if g > 1 {
        for w in weights {
            w.1 /= g;
        }
    }
}

fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// One full cycle of nginx's smooth weighted round robin: every step each member's current value
/// grows by its weight, the largest (first on ties) is chosen and loses the weight sum.
fn smooth_sequence(weights: &[(u32, u64)]) -> Vec<u32> {
    if weights.iter().all(|w| w.1 == 1) {
        // Equal weights: the algorithm degenerates to index order; skip the O(n²) loop.
        return weights.iter().map(|w| w.0).collect();
    }
    // Weights are ≤ MAX_SCHEDULE here (or 1), so the sums fit an i64 comfortably.
    let total: i64 = weights.iter().map(|w| w.1 as i64).sum();
    let mut current = vec![0i64; weights.len()];
    let mut out = Vec::with_capacity(usize::try_from(total).unwrap_or(0));
    for _ in 0..total {
        let mut best = 0;
        for (j, w) in weights.iter().enumerate() {
            current[j] += w.1 as i64;
            if current[j] > current[best] {
                best = j;
            }
        }
        current[best] -= total;
        out.push(weights[best].0);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sequence(weights: &[u32], view: &[(bool, u64)], n: usize) -> Vec<Option<usize>> {
        let s = Schedule::build(weights);
        (0..n).map(|_| s.pick(weights, view)).collect()
    }

    #[test]
    fn equal_weights_rotate_strictly() {
        let up = [(true, 0); 3];
        let got = sequence(&[1, 1, 1], &up, 7);
        let want = [0, 1, 2, 0, 1, 2, 0].map(Some);
        assert_eq!(got, want);
        assert_eq!(sequence(&[4, 4, 4], &up, 6), [0, 1, 2, 0, 1, 2].map(Some));
    }

    #[test]
    fn nginx_smooth_sequence() {
        let up = [(true, 0); 3];
        // a a b a c a a, as in nginx's ngx_http_upstream_round_robin.c commentary.
        assert_eq!(
            sequence(&[5, 1, 1], &up, 7),
            [0, 0, 1, 0, 2, 0, 0].map(Some)
        );
        // 3:1 — exactly 3:1 over each 4-pick cycle, the light one in the middle.
        let got = sequence(&[3, 1], &up[..2], 8);
        assert_eq!(got, [0, 0, 1, 0, 0, 0, 1, 0].map(Some));
        // 3:1:1 — interleaved: the heavy one never runs three in a row, even across cycles.
        let got = sequence(&[3, 1, 1], &up, 10);
        assert_eq!(got, [0, 1, 0, 2, 0, 0, 1, 0, 2, 0].map(Some));
    }

    #[test]
    fn skips_unavailable_fairly() {
        let view = [(true, 0), (false, 0), (true, 0)];
        let got = sequence(&[1, 1, 1], &view, 6);
        assert_eq!(got, [0, 2, 0, 2, 0, 2].map(Some));
    }

    #[test]
    fn zero_weight_never_picked_and_all_down_is_none() {
        let up = [(true, 0); 3];
        let got = sequence(&[0, 2, 1], &up, 30);
        assert!(got.iter().all(|p| matches!(p, Some(1 | 2))));
        assert_eq!(sequence(&[0, 0], &up[..2], 3), [None; 3]);
        let down = [(false, 0); 20];
        let ws: Vec<u32> = (1..=20).collect();
        assert_eq!(sequence(&ws, &down, 3), [None; 3]);
        assert_eq!(sequence(&[], &[], 1), [None]);
    }

    #[test]
    fn large_weights_are_scaled_into_the_cap() {
        let ws = normalized_weights(&[u32::MAX, u32::MAX / 3, 1]);
        let sum: u64 = ws.iter().map(|w| w.1).sum();
        assert!(sum <= MAX_SCHEDULE + 3, "{sum}");
        assert!(ws.iter().all(|w| w.1 >= 1));
        assert_eq!(normalized_weights(&[6, 4, 0]), [(0, 3), (1, 2)]);
        let s = Schedule::build(&[u32::MAX, u32::MAX / 3, 1]);
        assert!(s.len() <= 10_003);
    }
}
