//! Benchmarks of one backend pick through the proxy's own pool, as the request path makes it:
//! `pool.current()` (the borrowed snapshot), `snap.view(pool.now_ms())`, then the selector's pick
//! (what `Affinity::pick_new` does for a client without a binding; the affinity read is not
//! timed).
//!
//! Run with `cargo bench -p usher-proxy --bench pick`. The pool is real (`Pool::new` over backends
//! at 127.0.0.1:10000+i; nothing needs to listen) and every backend is busy: 1–3 requests in
//! flight each, held by `BackendSlot::begin` guards for the whole run, so least-conn reads every
//! backend (its worst case). Target (issue #2): ≤ 100 ns per pick for 100 backends.
//!
//! Groups:
//! * `pool_pick_100`: the four policies over 100 backends, and least-conn with weights 1/2/3.
//! * `pool_pick_scaling`: least-conn and maglev over 3, 100 and 300 backends (issue #7). Least-conn
//!   must compare every backend, so it is O(n) by nature; maglev is O(1) in the pool size.
//! * `pool_pick_parts_100`: the parts of the least-conn pick taken apart (snapshot + clock; the
//!   borrowed and the reference-counted snapshot alone; the clock alone; the pick on a snapshot
//!   held outside the loop), to see where the time goes.

use std::hint::black_box;
use std::net::SocketAddr;

use criterion::{Criterion, criterion_group, criterion_main};
use rand::{Rng, SeedableRng, rngs::StdRng};
use usher_balancer::{Policy, SelectorConfig};
use usher_proxy::{BackendConfig, Pool};

/// Pre-drawn random values, cycled through by the timed closures.
const INPUTS: usize = 1024;

/// A pool of `n` backends under `policy`, with 1–3 requests in flight on each (the guards keep
/// them in flight; drop them after the run).
fn busy_pool(n: u16, policy: Policy, weighted: bool) -> (Pool, Vec<impl Sized>) {
    let backends: Vec<BackendConfig> = (0..n)
        .map(|i| BackendConfig {
            id: format!("backend-{i}").parse().expect("valid id"),
            addr: SocketAddr::from(([127, 0, 0, 1], 10_000 + i)),
            weight: if weighted { 1 + u32::from(i % 3) } else { 1 },
        })
        .collect();
    let config = SelectorConfig {
        policy,
        ..SelectorConfig::default()
    };
    let pool = Pool::new(&backends, config).expect("pool");
    let snap = pool.snapshot();
    let guards = snap
        .slots
        .iter()
        .enumerate()
        .flat_map(|(i, slot)| (0..=i % 3).map(move |_| slot.begin()))
        .collect();
    (pool, guards)
}

fn randoms() -> Vec<u64> {
    let mut rng = StdRng::seed_from_u64(7);
    (0..INPUTS).map(|_| rng.random()).collect()
}

/// Times one pick as the proxy makes it, under `name`.
fn bench_one(
    group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    name: &str,
    n: u16,
    policy: Policy,
    weighted: bool,
) {
    let (pool, guards) = busy_pool(n, policy, weighted);
    let randoms = randoms();
    let mut k = 0;
    group.bench_function(name, |b| {
        b.iter(|| {
            k = (k + 1) % INPUTS;
            let snap = pool.current();
            let view = snap.view(pool.now_ms());
            black_box(snap.selector.pick(&view, None, randoms[k]))
        })
    });
    drop(guards);
}

fn bench_policies(c: &mut Criterion) {
    let mut group = c.benchmark_group("pool_pick_100");
    for policy in [
        Policy::RoundRobin,
        Policy::LeastConn,
        Policy::P2c,
        Policy::Maglev,
    ] {
        bench_one(&mut group, policy.as_str(), 100, policy, false);
    }
    bench_one(
        &mut group,
        "least-conn-weights-1-2-3",
        100,
        Policy::LeastConn,
        true,
    );
    group.finish();
}

fn bench_scaling(c: &mut Criterion) {
    let mut group = c.benchmark_group("pool_pick_scaling");
    for policy in [Policy::LeastConn, Policy::Maglev] {
        for n in [3, 100, 300] {
            bench_one(
                &mut group,
                &format!("{}/{n}", policy.as_str()),
                n,
                policy,
                false,
            );
        }
    }
    group.finish();
}

fn bench_parts(c: &mut Criterion) {
    let (pool, guards) = busy_pool(100, Policy::LeastConn, false);
    let randoms = randoms();
    let mut group = c.benchmark_group("pool_pick_parts_100");
    group.bench_function("snapshot+clock", |b| {
        b.iter(|| {
            let snap = pool.current();
            black_box(snap.view(black_box(pool.now_ms())));
        })
    });
    group.bench_function("snapshot-borrowed", |b| {
        b.iter(|| black_box(pool.current().slots.len()))
    });
    group.bench_function("snapshot-counted", |b| {
        b.iter(|| black_box(pool.snapshot().slots.len()))
    });
    group.bench_function("clock", |b| b.iter(|| black_box(pool.now_ms())));
    let snap = pool.snapshot();
    let now = pool.now_ms();
    let mut k = 0;
    group.bench_function("least-conn-held-snapshot", |b| {
        b.iter(|| {
            k = (k + 1) % INPUTS;
            let view = snap.view(black_box(now));
            black_box(snap.selector.pick(&view, None, randoms[k]))
        })
    });
    group.finish();
    drop(guards);
}

criterion_group!(benches, bench_policies, bench_scaling, bench_parts);
criterion_main!(benches);
