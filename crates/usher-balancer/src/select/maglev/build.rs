//! Populating the Maglev table: preference sequences, weight quotas and the depth-synchronous
//! fill described in the parent module.
//!
//! Hand-written because the exact layout is a compatibility contract (replicas and restarts must
//! agree) and because it is the one expensive step of a membership change: it is tuned to do
//! `O(M log M)` cheap, branch-free probes against an in-cache bitset.

use std::hint::select_unpredictable;

use super::{OFFSET_SEED, SKIP_SEED, SLOTS_PER_MEMBER, TABLE_SIZES};
use crate::backend::Member;

/// Marks a slot not yet claimed while building (never present in a built table).
pub(super) const EMPTY: u32 = u32::MAX;

/// The table size for `weighted` members with weight > 0: the smallest of [`TABLE_SIZES`] with at
/// least [`SLOTS_PER_MEMBER`] slots per member (the largest size beyond that).
pub(super) fn table_size(weighted: usize) -> usize {
    let want = weighted.saturating_mul(SLOTS_PER_MEMBER);
    TABLE_SIZES
        .iter()
        .copied()
        .find(|&m| m >= want)
        .unwrap_or(TABLE_SIZES[TABLE_SIZES.len() - 1])
}

/// One member's state while the table is being populated.
struct Builder {
    member: u32,
    offset: u64,
    skip: u64,
    left: usize,
}

/// Fills a table of [`table_size`] slots for `members`; empty when no member has weight > 0.
/// Every entry is a member index below [`EMPTY`].
pub(super) fn populate(members: &[Member]) -> Vec<u32> {
    // Indices must fit a `u32` entry below `EMPTY` (4 billion members: never).
    let mut order: Vec<usize> = (0..members.len())
        .filter(|&i| members[i].weight > 0 && i < EMPTY as usize)
        .collect();
    if order.is_empty() {
        return Vec::new();
    }
    // Id order, not list order: reordering the configuration must not move keys.
    order.sort_by(|&a, &b| members[a].id.cmp(&members[b].id).then(a.cmp(&b)));
    let m = table_size(order.len());
    // More weighted members than slots (over 16 million): the rest only serve as lookup fallbacks.
    order.truncate(m);
    let m64 = m as u64;
    let weights: Vec<u32> = order.iter().map(|&i| members[i].weight).collect();
    let mut active: Vec<Builder> = order
        .iter()
        .zip(quotas(&weights, m))
        .map(|(&i, left)| {
            let id = members[i].id.as_str().as_bytes();
            let hash = |seed| xxhash_rust::xxh3::xxh3_64_with_seed(id, seed);
            Builder {
                member: u32::try_from(i).unwrap_or(EMPTY),
                offset: hash(OFFSET_SEED) % m64,
                skip: hash(SKIP_SEED) % (m64 - 1) + 1,
                left,
            }
        })
        .collect();

    // One spare entry at index `m` absorbs the writes of probes that hit a taken slot.
    let mut slots = vec![EMPTY; m + 1];
    let mut taken = vec![0u64; m.div_ceil(64)];
    let mut filled = 0;
    let modulus = Modulus::new(m64);
    let mut cubes = Cubes::new(m64);
    // Quotas sum to `m` and every sequence visits every slot within `m` depths, so while a slot
    // is free some member below quota reaches it: the loop ends after fewer than `m²` depths
    // (in practice about `(m/n) · ln m`).
    while filled < m && !active.is_empty() {
        let cube = cubes.cube;
        let mut finished = false;
        for b in &mut active {
            // Branch-free: whether a slot is free is a coin flip a branch predictor gets wrong
            // half the time. The bitset (M/8 bytes) stays in cache; the table does not.
            let pos = reduce(b.offset + modulus.rem(b.skip * cube), m64);
            let (word, bit) = ((pos / 64) as usize, 1u64 << (pos % 64));
            let seen = taken[word];
            let free = usize::from(seen & bit == 0);
            taken[word] = seen | bit;
            slots[select_unpredictable(free == 1, pos as usize, m)] = b.member;
            filled += free;
            b.left -= free;
            finished |= b.left == 0;
        }
        if finished {
            active.retain(|b| b.left > 0);
        }
        cubes.step();
    }
    slots.truncate(m);
    slots
}

/// Slot quotas for `weights` (all > 0) in a table of `m ≥ weights.len()` slots: proportional to
/// weight by largest remainder (ties to the earlier member), at least one slot each, summing to
/// exactly `m`.
pub(super) fn quotas(weights: &[u32], m: usize) -> Vec<usize> {
    let total: u128 = weights.iter().map(|&w| u128::from(w)).sum::<u128>().max(1);
    let m128 = m as u128;
    let mut quota = Vec::with_capacity(weights.len());
    let mut rest = Vec::with_capacity(weights.len());
    for (k, &w) in weights.iter().enumerate() {
        let exact = m128 * u128::from(w);
        quota.push(usize::try_from(exact / total).unwrap_or(m).max(1));
        rest.push((exact % total, k));
    }
    let sum: usize = quota.iter().sum();
    if sum < m {
        // Fewer than `weights.len()` slots are missing: one more for each largest remainder.
        rest.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
        for &(_, k) in rest.iter().cycle().take(m - sum) {
            quota[k] += 1;
        }
    } else if sum > m {
        // Only the at-least-one rule overshoots: take the excess from the largest quotas. Some
        // quota exceeds 1 while there is excess, because `m ≥ weights.len()`.
        let mut by_size: Vec<usize> = (0..quota.len()).collect();
        by_size.sort_by(|&a, &b| quota[b].cmp(&quota[a]).then(a.cmp(&b)));
        let mut excess = sum - m;
        for &k in by_size.iter().cycle() {
            if excess == 0 {
                break;
            }
            if quota[k] > 1 {
                quota[k] -= 1;
                excess -= 1;
            }
        }
    }
    quota
}

/// `x³ mod m` for `x = ⌊m/2⌋ + j`, `j = 0, 1, 2, …`, stepped with additions only:
/// `(x+1)³ = x³ + 3x² + 3x + 1` and `(x+1)² = x² + 2x + 1`.
struct Cubes {
    m: u64,
    cube: u64,
    square: u64,
    x: u64,
}

impl Cubes {
    fn new(m: u64) -> Self {
        let x = m / 2;
        let square = mul_mod(x, x, m);
        Self {
            m,
            cube: mul_mod(square, x, m),
            square,
            x,
        }
    }

    fn step(&mut self) {
        let (c, s, x, m) = (self.cube, self.square, self.x, self.m);
        self.cube = reduce(c + 3 * s + 3 * x + 1, m);
        self.square = reduce(s + 2 * x + 1, m);
        self.x = reduce(x + 1, m);
    }
}

/// Barrett reduction by a fixed `m < 2^32`: `a mod m` for any `a: u64`, with two multiplications.
struct Modulus {
    m: u64,
    inverse: u64,
}

impl Modulus {
    fn new(m: u64) -> Self {
        Self {
            m,
            inverse: u64::MAX / m,
        }
    }

    fn rem(&self, a: u64) -> u64 {
        let q = ((u128::from(a) * u128::from(self.inverse)) >> 64) as u64;
        // `q` is `⌊a/m⌋` or one less, so one conditional subtraction finishes the job.
        let r = a - q * self.m;
        select_unpredictable(r >= self.m, r.wrapping_sub(self.m), r)
    }
}

fn mul_mod(a: u64, b: u64, m: u64) -> u64 {
    // The remainder is below `m`, which is a `u64`: the conversion cannot fail.
    u64::try_from(u128::from(a) * u128::from(b) % u128::from(m)).unwrap_or(0)
}

/// `x mod m` for `x < 8m`, without a division or a branch.
fn reduce(x: u64, m: u64) -> u64 {
    let x = select_unpredictable(x >= 4 * m, x.wrapping_sub(4 * m), x);
    let x = select_unpredictable(x >= 2 * m, x.wrapping_sub(2 * m), x);
    select_unpredictable(x >= m, x.wrapping_sub(m), x)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::BackendId;

    fn is_prime(n: u64) -> bool {
        n >= 2
            && (2..)
                .take_while(|d| d * d <= n)
                .all(|d| !n.is_multiple_of(d))
    }

    #[test]
    fn table_sizes_are_primes_with_a_cube_bijection() {
        for &m in &TABLE_SIZES {
            let m = m as u64;
            assert!(is_prime(m), "{m} is not prime");
            // x ↦ x³ is a bijection mod a prime p exactly when 3 does not divide p − 1.
            assert_eq!(m % 3, 2, "{m}");
        }
        assert!(TABLE_SIZES.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(table_size(1), 131_111);
        assert_eq!(table_size(1311), 131_111);
        assert_eq!(table_size(1312), 262_151);
        assert_eq!(table_size(usize::MAX), 16_777_259);
    }

    #[test]
    fn cubes_and_modulus_match_plain_arithmetic() {
        let m = 131_111u64;
        let mut cubes = Cubes::new(m);
        for j in 0..5_000u64 {
            let x = (m / 2 + j) % m;
            assert_eq!(cubes.cube, mul_mod(mul_mod(x, x, m), x, m), "j = {j}");
            cubes.step();
        }
        let modulus = Modulus::new(m);
        for a in [
            0,
            1,
            m - 1,
            m,
            m + 1,
            (m - 1) * (m - 1),
            u64::MAX,
            u64::MAX - 1,
            1 << 40,
        ] {
            assert_eq!(modulus.rem(a), a % m, "{a}");
        }
        for x in [0, 1, m - 1, m, 2 * m + 3, 8 * m - 1] {
            assert_eq!(reduce(x, m), x % m);
        }
    }

    #[test]
    fn quotas_are_proportional_exact_and_at_least_one() {
        assert_eq!(quotas(&[1, 1, 1], 10), [4, 3, 3]);
        assert_eq!(quotas(&[3, 1], 8), [6, 2]);
        assert_eq!(quotas(&[1, 2], 10), [3, 7]);
        let q = quotas(&[u32::MAX, 1, 1], 100);
        assert_eq!(q, [98, 1, 1]);
        let q = quotas(&[5; 7], 131_111);
        assert_eq!(q.iter().sum::<usize>(), 131_111);
        assert!(q.iter().all(|&c| c == 18_730 || c == 18_731));
    }

    #[test]
    fn populate_fills_every_slot_by_quota() {
        let members: Vec<Member> = [3u32, 1, 0, 2]
            .iter()
            .enumerate()
            .map(|(i, &weight)| Member {
                id: BackendId::new(&format!("m{i}")).expect("id"),
                weight,
            })
            .collect();
        let slots = populate(&members);
        assert_eq!(slots.len(), 131_111);
        let mut count = [0usize; 4];
        for &s in &slots {
            count[s as usize] += 1;
        }
        // Id order m0, m1, m3 with weights 3, 1, 2 of 6.
        assert_eq!(count, [65_555, 21_852, 0, 43_704]);
        assert!(populate(&members[2..3]).is_empty());
        assert!(populate(&[]).is_empty());
    }
}
