//! Benchmarks of the selection policies: one pick per policy over 100 members (target ≤ 100 ns),
//! and building the Maglev table for 100 members (target ≤ 10 ms).
//!
//! Run with `cargo bench -p usher-balancer --bench select`. All inputs (members, load view,
//! random values, key hashes) are built outside the timed closures; `iter` times only the call.
//!
//! The load view is a bench-local type, like the proxy's own view: the selectors are generic over
//! [`LoadView`], so a caller's view inlines into them. (The `[(bool, u64)]` impl lives in this
//! library and is not `#[inline]`, so across crates every `available`/`inflight` would be a call.)

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use rand::{Rng, SeedableRng, rngs::StdRng};
use usher_balancer::{BackendId, LoadView, Member, Policy, Selector, SelectorConfig, hash_key};

const MEMBERS: usize = 100;
/// Pre-drawn random values and key hashes, cycled through by the timed closures.
const INPUTS: usize = 1024;

/// `(available, in flight)` per backend, as plain data.
struct View(Vec<(bool, u64)>);

impl LoadView for View {
    fn available(&self, i: usize) -> bool {
        self.0.get(i).is_some_and(|s| s.0)
    }
    fn inflight(&self, i: usize) -> u64 {
        self.0.get(i).map_or(0, |s| s.1)
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
    let view = View(
        (0..MEMBERS)
            .map(|i| (i % 25 != 0, rng.random_range(0..20)))
            .collect(),
    );
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
    // Unequal weights cost least-conn two multiplications per member.
    let weighted = Selector::new(
        &members(true),
        &SelectorConfig {
            policy: Policy::LeastConn,
            ..SelectorConfig::default()
        },
    );
    let mut k = 0;
    group.bench_function("least-conn-weighted", |b| {
        b.iter(|| {
            k = (k + 1) % INPUTS;
            black_box(weighted.pick(black_box(&view), None, randoms[k]))
        })
    });
    let selector = Selector::new(&equal, &SelectorConfig::default());
    let mut k = 0;
    group.bench_function("pick_hashed", |b| {
        b.iter(|| {
            k = (k + 1) % INPUTS;
            black_box(selector.pick_hashed(black_box(&view), hashes[k]))
        })
    });
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
