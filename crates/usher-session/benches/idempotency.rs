//! What the Idempotency-Key layer adds to a request on a Redis store (a private redis-server on a
//! free loopback port), timed until the response is returned (issue #5):
//! * `first_execution`: a new key — the claim before the handler; the outcome write runs in the
//!   background and is awaited (`IdempotencyLayer::flushed`) outside the timed section;
//! * `first_execution_until_stored`: the same, timed until the outcome write has landed too;
//! * `first_execution_memory_store`: the same on a `MemoryStore`, i.e. the layer's own CPU cost;
//! * `replay`: a completed key on another server (layer) sharing the store — the store path;
//! * `replay_same_server`: a retry on the server that just ran the request (its local cache);
//! * for scale, one Redis round trip (`load` of a missing key), the claim alone (`save` creating a
//!   record: one round trip plus the script's work) and the route without the layer.
//!
//! Run with `cargo bench -p usher-session --bench idempotency`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::num::NonZeroUsize;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::routing::post;
use criterion::{Criterion, criterion_group, criterion_main};
use http::Request;
use tower::ServiceExt;
use usher_session::idempotency::{Anonymous, IdempotencyLayer};
use usher_session::{
    MemoryStore, Record, RedisStore, SessionData, SessionId, SessionStore, StoreConfig,
};
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

/// Times `iters` calls of `timed`, each after an untimed `before` and followed by an untimed
/// `flushed` on `layer` (so background writes never pile up or leak into the next sample).
fn timed_iters<F, B>(
    rt: &tokio::runtime::Runtime,
    layer: &IdempotencyLayer,
    iters: u64,
    mut before: impl FnMut() -> B,
    mut timed: impl FnMut() -> F,
) -> Duration
where
    B: Future,
    F: Future,
{
    rt.block_on(async {
        let mut total = Duration::ZERO;
        for _ in 0..iters {
            before().await;
            let start = Instant::now();
            black_box(timed().await);
            total += start.elapsed();
            layer.flushed().await;
        }
        total
    })
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
    let layer = || {
        IdempotencyLayer::new(store.clone())
            .with_principal(|p| {
                p.headers
                    .get("x-user")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned)
            })
            .with_anonymous(Anonymous::Reject)
    };
    let (layer_a, layer_b) = (layer(), layer());
    let plain = app(None);
    let guarded = app(Some(layer_a.clone()));
    let other = app(Some(layer_b));
    let n = AtomicU64::new(0);
    let fresh = || format!("bench-{}", n.fetch_add(1, Ordering::Relaxed));
    let done = "bench-replayed".to_owned();
    let first = rt.block_on(guarded.clone().oneshot(request(Some(done.clone()))));
    assert_eq!(first.unwrap().status(), 200);
    rt.block_on(layer_a.flushed());
    let replayed = rt.block_on(other.clone().oneshot(request(Some(done.clone()))));
    assert_eq!(replayed.unwrap().headers()["idempotent-replayed"], "true");

    let mut group = c.benchmark_group("idempotency_redis");
    group.bench_function("redis_round_trip", |b| {
        let key = SessionId::random().key();
        b.iter(|| rt.block_on(store.load(&key, 1_700_000_000)).unwrap());
    });
    group.bench_function("claim_alone", |b| {
        // The one round trip a first execution waits for: `save(None)` of a new `running` record.
        let mut data = SessionData::new();
        data.insert("state", serde_json::json!("running"));
        let record = Record::new(data, None, 1_700_000_000, 86_400, 86_400);
        b.iter(|| {
            let key = SessionId::random().key();
            rt.block_on(store.save(&key, &record, None, 1_700_000_000))
                .unwrap()
        });
    });
    group.bench_function("without_layer", |b| {
        b.iter(|| rt.block_on(plain.clone().oneshot(request(None))).unwrap());
    });
    group.bench_function("first_execution", |b| {
        b.iter_custom(|iters| {
            timed_iters(
                &rt,
                &layer_a,
                iters,
                || async {},
                || guarded.clone().oneshot(request(Some(fresh()))),
            )
        });
    });
    group.bench_function("first_execution_until_stored", |b| {
        b.iter_custom(|iters| {
            timed_iters(
                &rt,
                &layer_a,
                iters,
                || async {},
                || async {
                    let res = guarded.clone().oneshot(request(Some(fresh()))).await;
                    layer_a.flushed().await;
                    res
                },
            )
        });
    });
    group.bench_function("first_execution_memory_store", |b| {
        // The layer's own work (fingerprint, records, cache, spawn) with no network in the way.
        let memory: Arc<dyn SessionStore> = Arc::new(MemoryStore::new(
            StoreConfig::default(),
            NonZeroUsize::new(1 << 20).unwrap(),
        ));
        let layer = IdempotencyLayer::new(memory).with_principal(|p| {
            p.headers
                .get("x-user")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        });
        let local = app(Some(layer.clone()));
        b.iter_custom(|iters| {
            timed_iters(
                &rt,
                &layer,
                iters,
                || async {},
                || local.clone().oneshot(request(Some(fresh()))),
            )
        });
    });
    group.bench_function("replay", |b| {
        b.iter(|| {
            rt.block_on(other.clone().oneshot(request(Some(done.clone()))))
                .unwrap()
        });
    });
    group.bench_function("replay_same_server", |b| {
        let key = std::cell::RefCell::new(String::new());
        b.iter_custom(|iters| {
            timed_iters(
                &rt,
                &layer_a,
                iters,
                || {
                    key.replace(fresh());
                    let first = guarded.clone().oneshot(request(Some(key.borrow().clone())));
                    async move { first.await.unwrap() }
                },
                || guarded.clone().oneshot(request(Some(key.borrow().clone()))),
            )
        });
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
