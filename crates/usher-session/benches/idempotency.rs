//! What the Idempotency-Key layer adds to a request on a Redis store (a private redis-server on a
//! free loopback port): a first execution (new key: the record is created before the handler and
//! the outcome written after it), a replay (a completed key: one read, no handler), and, for
//! scale, one Redis round trip (`load` of a missing key) and the same request without the layer.
//!
//! Run with `cargo bench -p usher-session --bench idempotency`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::Router;
use axum::body::Body;
use axum::routing::post;
use criterion::{Criterion, criterion_group, criterion_main};
use http::Request;
use tower::ServiceExt;
use usher_session::idempotency::{Anonymous, IdempotencyLayer};
use usher_session::{RedisStore, SessionId, SessionStore, StoreConfig};
use usher_testkit::redis::RedisServer;

fn app(layer: Option<IdempotencyLayer>) -> Router {
    let router = Router::new().route("/api/checkout", post(|| async { "{\"order\":1}" }));
    match layer {
        Some(l) => router.layer(l),
        None => router,
    }
}

fn request(key: Option<String>) -> Request<Body> {
    let mut r = Request::post("/api/checkout").header("x-user", "bench");
    if let Some(k) = key {
        r = r.header("idempotency-key", format!("\"{k}\""));
    }
    r.body(Body::from("{\"cart\":\"abc\"}")).unwrap()
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let server = RedisServer::start();
    let store: Arc<dyn SessionStore> = Arc::new(
        rt.block_on(RedisStore::connect(&server.url(), StoreConfig::default()))
            .unwrap(),
    );
    let layer = IdempotencyLayer::new(store.clone())
        .with_principal(|p| {
            p.headers
                .get("x-user")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        })
        .with_anonymous(Anonymous::Reject);
    let plain = app(None);
    let guarded = app(Some(layer));
    let n = AtomicU64::new(0);
    let fresh = || format!("bench-{}", n.fetch_add(1, Ordering::Relaxed));
    let done = "bench-replayed".to_owned();
    rt.block_on(guarded.clone().oneshot(request(Some(done.clone()))))
        .unwrap();

    let mut group = c.benchmark_group("idempotency_redis");
    group.bench_function("redis_round_trip", |b| {
        let key = SessionId::random().key();
        b.iter(|| rt.block_on(store.load(&key, 1_700_000_000)).unwrap());
    });
    group.bench_function("without_layer", |b| {
        b.iter(|| rt.block_on(plain.clone().oneshot(request(None))).unwrap());
    });
    group.bench_function("first_execution", |b| {
        b.iter(|| {
            rt.block_on(guarded.clone().oneshot(request(Some(fresh()))))
                .unwrap()
        });
    });
    group.bench_function("replay", |b| {
        b.iter(|| {
            rt.block_on(guarded.clone().oneshot(request(Some(done.clone()))))
                .unwrap()
        });
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
