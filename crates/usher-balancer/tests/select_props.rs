//! Property and differential tests of the selection policies, through the public API only.
//!
//! Every property is bounded (few cases, small rings) so the whole file runs in seconds even in a
//! debug build. The Maglev disruption bound is the one the issue requires: adding one member to a
//! ring of N moves at most 1.1/(N+1) of 100 000 keys.

use std::collections::BTreeSet;

use proptest::prelude::*;
use proptest::sample::Index;
use usher_balancer::{
    BackendId, LoadTotals, LoadView, Member, Policy, Selector, SelectorConfig, hash_key,
};

const KEYS: u64 = 100_000;

fn member(id: &str, weight: u32) -> Member {
    Member {
        id: BackendId::new(id).expect("valid id"),
        weight,
    }
}

fn ring(ids: &[String]) -> Selector {
    let members: Vec<Member> = ids.iter().map(|id| member(id, 1)).collect();
    Selector::new(
        &members,
        &SelectorConfig {
            policy: Policy::Maglev,
            balance_factor: 1.25,
        },
    )
}

/// The backend id each of `KEYS` keys (from `salt`) lands on with every member available and idle.
fn layout(ids: &[String], salt: u64) -> Vec<String> {
    let s = ring(ids);
    let idle = vec![(true, 0u64); ids.len()];
    (0..KEYS)
        .map(|k| {
            let i = s.pick_hashed(&idle[..], hash_key(&(salt ^ k).to_le_bytes()));
            ids[i.expect("an idle ring always answers")].clone()
        })
        .collect()
}

fn moved(a: &[String], b: &[String]) -> u64 {
    a.iter().zip(b).filter(|(x, y)| x != y).count() as u64
}

/// 3 to 21 distinct random ids, in random (not sorted) order.
fn ids(range: std::ops::RangeInclusive<usize>) -> impl Strategy<Value = Vec<String>> {
    proptest::collection::btree_set("[a-z0-9._-]{1,12}", range)
        .prop_map(|set: BTreeSet<String>| set.into_iter().collect::<Vec<_>>())
        .prop_shuffle()
}

fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config(8))]

    /// Adding a member moves at most 1.1/(N+1) of the keys (ideal: exactly its share, 1/(N+1)).
    #[test]
    fn maglev_adding_a_member_moves_little(all in ids(3..=21), salt: u64) {
        let n = all.len() - 1;
        let before = layout(&all[..n], salt);
        let after = layout(&all, salt);
        let limit = (1.1 / (n as f64 + 1.0) * KEYS as f64) as u64;
        let m = moved(&before, &after);
        prop_assert!(m <= limit, "N = {}: moved {} of {} keys, limit {}", n, m, KEYS, limit);
        // Most moved keys went to the newcomer.
        let to_new = before.iter().zip(&after).filter(|(x, y)| x != y && **y == all[n]).count();
        prop_assert!((m - to_new as u64) * 8 <= m, "{} of {} moves to the new member", to_new, m);
    }

    /// Removing a member moves its keys and (about) nothing else.
    #[test]
    fn maglev_removing_a_member_moves_about_its_keys(all in ids(3..=21), gone: Index, salt: u64) {
        let gone = gone.index(all.len());
        let rest: Vec<String> = all.iter().filter(|id| **id != all[gone]).cloned().collect();
        let before = layout(&all, salt);
        let after = layout(&rest, salt);
        let its_keys = before.iter().filter(|id| **id == all[gone]).count() as u64;
        let others_moved = before
            .iter()
            .zip(&after)
            .filter(|(x, y)| x != y && **x != all[gone])
            .count() as u64;
        prop_assert!(
            others_moved * 8 <= its_keys,
            "{} keys of other members moved; the removed one had {}", others_moved, its_keys,
        );
    }
}

proptest! {
    #![proptest_config(config(16))]

    /// An unavailable member (no rebuild) moves exactly its own keys.
    #[test]
    fn unavailable_member_moves_only_its_keys(all in ids(2..=12), down: Index, salt: u64) {
        let s = ring(&all);
        let down = down.index(all.len());
        let up = vec![(true, 0u64); all.len()];
        let mut view = up.clone();
        view[down].0 = false;
        for k in 0..5_000u64 {
            let h = hash_key(&(salt ^ k).to_le_bytes());
            let home = s.pick_hashed(&up[..], h);
            let now = s.pick_hashed(&view[..], h);
            if home == Some(down) {
                prop_assert!(now.is_some() && now != home);
            } else {
                prop_assert_eq!(now, home);
            }
        }
    }

    /// Whatever `pick_hashed` returns is available, has weight > 0 and satisfies the cap; it
    /// returns something whenever any member is available.
    #[test]
    fn bounded_load_cap_holds(
        state in proptest::collection::vec((any::<bool>(), 0u64..40, 0u32..4), 1..24),
        factor in prop_oneof![Just(1.0), 1.0f64..3.0, Just(f64::NAN), Just(0.2)],
        hashes in proptest::collection::vec(any::<u64>(), 20),
    ) {
        let members: Vec<Member> =
            state.iter().enumerate().map(|(i, s)| member(&format!("m{i}"), s.2)).collect();
        let view: Vec<(bool, u64)> = state.iter().map(|s| (s.0, s.1)).collect();
        let s = Selector::new(&members, &SelectorConfig { policy: Policy::Maglev, balance_factor: factor });
        let eligible: Vec<usize> = (0..state.len()).filter(|&i| state[i].0 && state[i].2 > 0).collect();
        let total: u64 = eligible.iter().map(|&i| state[i].1).sum();
        let c = if factor >= 1.0 { factor } else { 1.0 };
        let cap = (c * (total as f64 + 1.0) / eligible.len() as f64).ceil() as u64;
        for h in hashes {
            match s.pick_hashed(&view[..], h) {
                None => prop_assert!(eligible.is_empty()),
                Some(i) => {
                    prop_assert!(eligible.contains(&i), "picked {} not eligible", i);
                    prop_assert!(state[i].1 < cap, "load {} over cap {}", state[i].1, cap);
                }
            }
        }
    }

    /// No policy ever picks an unavailable or weight-0 member, and each answers when one is up.
    #[test]
    fn no_policy_picks_unavailable_or_weightless(
        state in proptest::collection::vec((any::<bool>(), 0u64..20, 0u32..5), 1..16),
        randoms in proptest::collection::vec(any::<u64>(), 30),
    ) {
        let members: Vec<Member> =
            state.iter().enumerate().map(|(i, s)| member(&format!("m{i}"), s.2)).collect();
        let view: Vec<(bool, u64)> = state.iter().map(|s| (s.0, s.1)).collect();
        let any_up = state.iter().any(|s| s.0 && s.2 > 0);
        for policy in [Policy::RoundRobin, Policy::LeastConn, Policy::P2c, Policy::Maglev] {
            let s = Selector::new(&members, &SelectorConfig { policy, ..SelectorConfig::default() });
            for &r in &randoms {
                let pick = s.pick(&view[..], None, r);
                prop_assert_eq!(pick.is_some(), any_up, "{:?}", policy);
                if let Some(i) = pick {
                    prop_assert!(state[i].0 && state[i].2 > 0, "{:?} picked {}", policy, i);
                }
            }
        }
    }

    /// least-conn returns a member with the minimal load per weight.
    #[test]
    fn least_conn_is_minimal(
        state in proptest::collection::vec((any::<bool>(), 0u64..20, 1u32..5), 1..16),
        r: u64,
    ) {
        let members: Vec<Member> =
            state.iter().enumerate().map(|(i, s)| member(&format!("m{i}"), s.2)).collect();
        let view: Vec<(bool, u64)> = state.iter().map(|s| (s.0, s.1)).collect();
        let s = Selector::new(&members, &SelectorConfig { policy: Policy::LeastConn, ..SelectorConfig::default() });
        if let Some(i) = s.pick(&view[..], None, r) {
            for (j, t) in state.iter().enumerate().filter(|(_, t)| t.0) {
                // load_i / w_i <= load_j / w_j
                prop_assert!(u64::from(t.2) * state[i].1 <= t.1 * u64::from(state[i].2), "{} vs {}", i, j);
            }
        }
    }

    /// Round robin over whole cycles gives every available member exactly its weight's share.
    #[test]
    fn round_robin_cycles_are_exact(weights in proptest::collection::vec(0u32..6, 1..8)) {
        let members: Vec<Member> =
            weights.iter().enumerate().map(|(i, &w)| member(&format!("m{i}"), w)).collect();
        let s = Selector::new(&members, &SelectorConfig::default());
        let view = vec![(true, 0u64); weights.len()];
        let g = weights.iter().fold(0u32, |g, &w| gcd(g, w));
        let cycle: u32 = weights.iter().map(|&w| w.checked_div(g).unwrap_or(0)).sum();
        let mut count = vec![0u32; weights.len()];
        for _ in 0..cycle * 3 {
            if let Some(i) = s.pick(&view[..], None, 0) {
                count[i] += 1;
            }
        }
        for (i, &w) in weights.iter().enumerate() {
            prop_assert_eq!(count[i], (3 * w).checked_div(g).unwrap_or(0));
        }
    }
}

/// A view that keeps its totals precomputed (as a proxy with pool-wide counters would) and can
/// hide one member, answering `totals` without a scan.
struct Counted {
    state: Vec<(bool, u64)>,
    totals: LoadTotals,
    hidden: Option<usize>,
}

impl Counted {
    fn new(state: Vec<(bool, u64)>, weights: &[u32]) -> Self {
        let totals = state[..].totals(weights);
        Self {
            state,
            totals,
            hidden: None,
        }
    }

    /// The same view with member `i` unavailable, its totals adjusted in O(1).
    fn hiding(self, i: usize, weights: &[u32]) -> Self {
        let totals = self.totals.without(&self, weights, i);
        Self {
            totals,
            hidden: Some(i),
            ..self
        }
    }
}

impl LoadView for Counted {
    fn available(&self, i: usize) -> bool {
        self.hidden != Some(i) && self.state[..].available(i)
    }
    fn inflight(&self, i: usize) -> u64 {
        self.state[..].inflight(i)
    }
    fn totals(&self, _weights: &[u32]) -> LoadTotals {
        self.totals
    }
}

/// A slice view whose members are all available, and says so.
struct AllUp(Vec<(bool, u64)>);

impl LoadView for AllUp {
    fn available(&self, i: usize) -> bool {
        self.0[..].available(i)
    }
    fn inflight(&self, i: usize) -> u64 {
        self.0[..].inflight(i)
    }
    fn all_available(&self) -> bool {
        self.0.iter().all(|m| m.0)
    }
}

/// The least-conn answer by definition: scanning from `⌊r · n / 2^64⌋`, the first eligible
/// member with the smallest load per weight (compared exactly in `u128`).
fn least_conn_reference(state: &[(bool, u64, u32)], r: u64) -> Option<usize> {
    let n = state.len();
    let start = ((u128::from(r) * n as u128) >> 64) as usize;
    let mut best: Option<usize> = None;
    for i in (start..n).chain(0..start) {
        let (up, load, w) = state[i];
        if !up || w == 0 {
            continue;
        }
        let lighter = best.is_none_or(|b| {
            let (_, bl, bw) = state[b];
            u128::from(load) * u128::from(bw) < u128::from(bl) * u128::from(w)
        });
        if lighter {
            best = Some(i);
        }
    }
    best
}

proptest! {
    #![proptest_config(config(64))]

    /// least-conn's fast paths (early stop at an idle member, scaled costs, the exact fallback
    /// for huge loads or weights) pick exactly the member the definition picks, ties included.
    #[test]
    fn least_conn_matches_the_definition(
        state in proptest::collection::vec(
            (
                any::<bool>(),
                prop_oneof![0u64..4, 0u64..1_000, Just(u64::MAX), (1u64 << 40)..(1u64 << 50)],
                prop_oneof![Just(0u32), 1u32..4, 1u32..100_000],
            ),
            1..40,
        ),
        randoms in proptest::collection::vec(any::<u64>(), 8),
    ) {
        let members: Vec<Member> =
            state.iter().enumerate().map(|(i, s)| member(&format!("m{i}"), s.2)).collect();
        let view: Vec<(bool, u64)> = state.iter().map(|s| (s.0, s.1)).collect();
        let s = Selector::new(&members, &SelectorConfig { policy: Policy::LeastConn, ..SelectorConfig::default() });
        for r in randoms {
            prop_assert_eq!(s.pick(&view[..], None, r), least_conn_reference(&state, r));
        }
    }

    /// The same with every member available and a view that says so
    /// ([`LoadView::all_available`]), which takes least-conn's walk over the counts alone:
    /// equal, uniform (some weight 0) and scaled weights, idle members, huge loads.
    #[test]
    fn least_conn_on_an_all_up_view_matches_the_definition(
        state in proptest::collection::vec(
            (
                prop_oneof![0u64..4, 0u64..1_000, Just(u64::MAX), (1u64 << 40)..(1u64 << 50)],
                prop_oneof![Just(0u32), 1u32..4, 1u32..100_000],
            ),
            1..40,
        ),
        weights in prop_oneof![Just(None), Just(Some(1u32)), Just(Some(7))],
        randoms in proptest::collection::vec(any::<u64>(), 8),
    ) {
        let state: Vec<(bool, u64, u32)> = state
            .iter()
            .map(|&(load, w)| (true, load, weights.unwrap_or(w)))
            .collect();
        let members: Vec<Member> =
            state.iter().enumerate().map(|(i, s)| member(&format!("m{i}"), s.2)).collect();
        let view = AllUp(state.iter().map(|s| (s.0, s.1)).collect());
        let s = Selector::new(&members, &SelectorConfig { policy: Policy::LeastConn, ..SelectorConfig::default() });
        for r in randoms {
            prop_assert_eq!(s.pick(&view, None, r), least_conn_reference(&state, r));
        }
    }

    /// A view that supplies its totals in O(1), alone or with a member hidden through
    /// [`LoadTotals::without`], gets exactly the picks a scanning view gets, so the cap holds.
    #[test]
    fn counted_totals_pick_like_a_scan(
        state in proptest::collection::vec((any::<bool>(), 0u64..40, 0u32..4), 1..24),
        factor in prop_oneof![Just(1.0), 1.0f64..3.0],
        hide: Index,
        hashes in proptest::collection::vec(any::<u64>(), 20),
    ) {
        let members: Vec<Member> =
            state.iter().enumerate().map(|(i, s)| member(&format!("m{i}"), s.2)).collect();
        let weights: Vec<u32> = state.iter().map(|s| s.2).collect();
        let view: Vec<(bool, u64)> = state.iter().map(|s| (s.0, s.1)).collect();
        let s = Selector::new(&members, &SelectorConfig { policy: Policy::Maglev, balance_factor: factor });
        let hide = hide.index(state.len());
        let counted = Counted::new(view.clone(), &weights);
        let mut hidden_state = view.clone();
        hidden_state[hide].0 = false;
        let hidden = Counted::new(view.clone(), &weights).hiding(hide, &weights);
        prop_assert_eq!(hidden.totals, hidden_state[..].totals(&weights));
        for h in hashes {
            prop_assert_eq!(s.pick_hashed(&counted, h), s.pick_hashed(&view[..], h));
            prop_assert_eq!(s.pick_hashed(&hidden, h), s.pick_hashed(&hidden_state[..], h));
            prop_assert_eq!(s.pick(&hidden, Some(h), h), s.pick(&hidden_state[..], Some(h), h));
        }
    }
}

fn gcd(a: u32, b: u32) -> u32 {
    if b == 0 { a } else { gcd(b, a % b) }
}

/// The table is as even as exact quotas allow, keys spread within a few percent, and two builds
/// (even from reordered members) agree.
#[test]
fn maglev_spread_and_determinism() {
    let ids: Vec<String> = (0..10).map(|i| format!("api-{i}")).collect();
    let a = ring(&ids);
    let mut reversed = ids.clone();
    reversed.reverse();
    let b = ring(&reversed);
    let m = a.table_size() as u64;
    let mut slots = vec![0u64; ids.len()];
    for h in 0..m {
        let i = a.owner(h).expect("full table");
        slots[i] += 1;
        assert_eq!(
            ids[i],
            reversed[b.owner(h).expect("full table")],
            "slot {h}"
        );
    }
    assert!(
        slots.iter().all(|&c| c == m / 10 || c == m / 10 + 1),
        "{slots:?}"
    );
    let mut keys = vec![0u64; ids.len()];
    let idle = vec![(true, 0u64); ids.len()];
    for k in 0..KEYS {
        keys[a
            .pick_hashed(&idle[..], hash_key(&k.to_le_bytes()))
            .expect("idle")] += 1;
    }
    let even = KEYS / 10;
    assert!(
        keys.iter().all(|&c| c.abs_diff(even) * 20 <= even),
        "{keys:?}"
    );

    // Weighted: slots proportional to weight, within one slot.
    let weighted: Vec<Member> = [5, 3, 1, 1]
        .iter()
        .enumerate()
        .map(|(i, &w)| member(&format!("w{i}"), w))
        .collect();
    let s = Selector::new(
        &weighted,
        &SelectorConfig {
            policy: Policy::Maglev,
            balance_factor: 1.25,
        },
    );
    let m = s.table_size() as u64;
    let mut slots = [0u64; 4];
    for h in 0..m {
        slots[s.owner(h).expect("full table")] += 1;
    }
    for (i, w) in [5u64, 3, 1, 1].into_iter().enumerate() {
        assert!(slots[i].abs_diff(m * w / 10) <= 1, "{slots:?}");
    }
}

/// Differential test, like pingora-ketama's `backwards_compat`: the layout of a fixed ring must
/// never change by accident, since that would move every hashed client in production. If this
/// fails after a deliberate algorithm change, that change needs a migration note, not new numbers.
#[test]
fn maglev_layout_is_pinned() {
    let ids: Vec<String> = (0..5).map(|i| format!("shop-{i}")).collect();
    let s = ring(&ids);
    assert_eq!(s.table_size(), 131_111);
    let idle = [(true, 0u64); 5];
    let pinned = [
        ("127.0.0.1", "shop-3"),
        ("10.0.0.1", "shop-0"),
        ("192.168.1.20", "shop-3"),
        ("::1", "shop-1"),
        ("2001:db8::7", "shop-1"),
        ("user-42", "shop-2"),
        ("session-abc123", "shop-4"),
        ("cart-9", "shop-2"),
        ("", "shop-1"),
        ("x", "shop-3"),
    ];
    for (key, want) in pinned {
        let got = s
            .pick_hashed(&idle[..], hash_key(key.as_bytes()))
            .map(|i| ids[i].as_str());
        assert_eq!(got, Some(want), "key {key}");
    }
    // And the whole table, slot by slot, as a fingerprint.
    let owners: Vec<u8> = (0..131_111u64)
        .map(|h| {
            s.owner(h)
                .and_then(|i| u8::try_from(i).ok())
                .unwrap_or(u8::MAX)
        })
        .collect();
    assert_eq!(hash_key(&owners), 0x36dd_1e10_b397_1cb2);
}
