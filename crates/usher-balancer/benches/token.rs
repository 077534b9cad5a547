//! Sealed affinity token throughput: `seal`, `open`, and `seal+open` for a typical claim.
//!
//! Inputs (ring, claims, nonce, token) are built outside the timed closures.
//! Target: `seal+open` of a `shop-12` claim in at most 1 µs.
//!
//! Run with `cargo bench -p usher-balancer --bench token`.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use usher_balancer::{AffinityKey, BackendId, Claims, KeyRing, NONCE_LEN};

const NOW: u64 = 1_700_000_000;

fn bench_token(c: &mut Criterion) {
    // Two keys, as during a rotation: the newer one seals.
    let ring = KeyRing::new(vec![
        AffinityKey::from_bytes(1, [0x11; 32]),
        AffinityKey::from_bytes(2, [0x22; 32]),
    ])
    .expect("valid ring");
    let claims = Claims {
        backend: BackendId::new("shop-12").expect("valid id"),
        issued_at: NOW,
        idle_expires_at: NOW + 1800,
        expires_at: NOW + 86_400,
    };
    let nonce = [0x5C; NONCE_LEN];
    let token = ring.seal(&claims, nonce);
    assert!(ring.open(&token, NOW).is_ok());

    let mut group = c.benchmark_group("token");
    group.bench_function("seal", |b| {
        b.iter(|| ring.seal(black_box(&claims), black_box(nonce)))
    });
    group.bench_function("open", |b| {
        b.iter(|| ring.open(black_box(&token), black_box(NOW)))
    });
    group.bench_function("seal+open", |b| {
        b.iter(|| {
            let token = ring.seal(black_box(&claims), black_box(nonce));
            ring.open(black_box(&token), black_box(NOW))
        })
    });
    group.finish();
}

criterion_group!(benches, bench_token);
criterion_main!(benches);
