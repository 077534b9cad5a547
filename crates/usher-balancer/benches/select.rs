//! Benchmarks of the selection policies: one pick per policy over 100 members (target ≤ 100 ns),
//! and building the Maglev table for 100 members (target ≤ 10 ms).
//!
//! Run with `cargo bench -p usher-balancer --bench select`. All inputs (members, load view,
//! random values, key hashes) are built outside the timed closures; `iter` times only the call.
//!
//! The load view is a bench-local type, like the proxy's own view: the selectors are generic over
//! [`LoadView`], so a caller's view inlines into them.
//!
//! Three views, because the costs depend on them:
//! * the default view scans for the bounded-load totals and has a few idle members (least-conn
//!   stops at the first idle one it meets);
//! * `-busy`: no member is idle, so least-conn reads all 100 (its worst case);
//! * `-counted`: the view keeps its eligible count and in-flight total, as the proxy's pool does,
//!   so a hashed pick needs no scan.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use rand::{Rng, SeedableRng, rngs::StdRng};
use usher_balancer::{
    BackendId, LoadTotals, LoadView, Member, Policy, Selector, SelectorConfig, hash_key,
};

const MEMBERS: usize = 100;
/// Pre-drawn random values and key hashes, cycled through by the timed closures.
const INPUTS: usize = 1024;

/// `(available, in flight)` per backend, as plain data, and optionally kept totals.
struct View(Vec<(bool, u64)>, Option<LoadTotals>);

impl LoadView for View {
    fn available(&self, i: usize) -> bool {
        self.0.get(i).is_some_and(|s| s.0)
    }
    fn inflight(&self, i: usize) -> u64 {
        self.0.get(i).map_or(0, |s| s.1)
    }
    fn totals(&self, weights: &[u32]) -> LoadTotals {
        match self.1 {
            Some(totals) => totals,
            None => LoadTotals::scan(self, weights),
        }
    }
}

impl View {
    /// Everyone up except every 25th member, `floor..floor + 20` requests in flight each.
    fn new(rng: &mut StdRng, floor: u64) -> Self {
        Self(
            (0..MEMBERS)
                .map(|i| (i % 25 != 0, floor + rng.random_range(0..20)))
                .collect(),
            None,
        )
    }

    /// The same view, keeping its totals (for members of these `weights`).
    fn counted(&self, weights: &[u32]) -> Self {
        Self(self.0.clone(), Some(LoadTotals::scan(self, weights)))
    }
}

/// 100 members; `weighted`: weights 1, 2, 3, 1, 2, 3, …, else all 1 (the default).
fn members(weighted: bool) -> Vec<Member> {
    (0..MEMBERS)
        .map(|i| Member {
            id: BackendId::new(&format!("backend-{i}")).expect("valid id"),
            weight: if weighted { 1 + (i % 3) as u32 } else { 1 },
        })
        .collect()
}

fn bench_pick(c: &mut Criterion) {
    let equal = members(false);
    let mut rng = StdRng::seed_from_u64(7);
    // A realistic view: everyone up except a few, with small in-flight counts.
    let view = View::new(&mut rng, 0);
    let randoms: Vec<u64> = (0..INPUTS).map(|_| rng.random()).collect();
    let hashes: Vec<u64> = (0..INPUTS as u64)
        .map(|k| hash_key(format!("10.0.{}.{}", k / 256, k % 256).as_bytes()))
        .collect();

    let mut group = c.benchmark_group("pick_100");
    for policy in [
        Policy::RoundRobin,
        Policy::LeastConn,
        Policy::P2c,
        Policy::Maglev,
    ] {
        let config = SelectorConfig {
            policy,
            ..SelectorConfig::default()
        };
        let selector = Selector::new(&equal, &config);
        let mut k = 0;
        group.bench_function(policy.as_str(), |b| {
            b.iter(|| {
                k = (k + 1) % INPUTS;
                black_box(selector.pick(black_box(&view), Some(hashes[k]), randoms[k]))
            })
        });
    }
    // Unequal weights: least-conn multiplies each load by a precomputed factor.
    let weighted_members = members(true);
    let weighted = Selector::new(
        &weighted_members,
        &SelectorConfig {
            policy: Policy::LeastConn,
            ..SelectorConfig::default()
        },
    );
    let least_conn = Selector::new(
        &equal,
        &SelectorConfig {
            policy: Policy::LeastConn,
            ..SelectorConfig::default()
        },
    );
    let busy = View::new(&mut rng, 1);
    let runs: [(&str, &Selector, &View); 3] = [
        ("least-conn-weighted", &weighted, &view),
        ("least-conn-busy", &least_conn, &busy),
        ("least-conn-weighted-busy", &weighted, &busy),
    ];
    for (name, selector, view) in runs {
        let mut k = 0;
        group.bench_function(name, |b| {
            b.iter(|| {
                k = (k + 1) % INPUTS;
                black_box(selector.pick(black_box(view), None, randoms[k]))
            })
        });
    }
    let selector = Selector::new(&equal, &SelectorConfig::default());
    let weights: Vec<u32> = equal.iter().map(|m| m.weight).collect();
    let counted = view.counted(&weights);
    for (name, view) in [("pick_hashed", &view), ("pick_hashed-counted", &counted)] {
        let mut k = 0;
        group.bench_function(name, |b| {
            b.iter(|| {
                k = (k + 1) % INPUTS;
                black_box(selector.pick_hashed(black_box(view), hashes[k]))
            })
        });
    }
    group.finish();
}

fn bench_build(c: &mut Criterion) {
    let members = members(true);
    let config = SelectorConfig {
        policy: Policy::Maglev,
        ..SelectorConfig::default()
    };
    let mut group = c.benchmark_group("build_100");
    group.sample_size(30);
    group.bench_function("maglev", |b| {
        b.iter(|| black_box(Selector::new(black_box(&members), &config)))
    });
    group.finish();
}

criterion_group!(benches, bench_pick, bench_build);
criterion_main!(benches);
