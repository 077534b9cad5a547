//! Per-request session cost on each store, on loopback: what `SessionLayer` does for a typical
//! request — load the session, then (for a request that changed something) one compare-and-swap
//! save. Stores: memory, SQLite (a file in a temp dir), Redis and PostgreSQL (private servers
//! started by usher-testkit on free ports; never the shared ones). Compare each store to `memory`
//! from the same run: the machine is noisy, ratios are the robust figure.
//!
//! Run with `cargo bench -p usher-session --bench session`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::num::NonZeroUsize;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use criterion::{Criterion, criterion_group, criterion_main};
use serde_json::json;
use usher_session::{
    MemoryStore, PostgresStore, Record, RedisStore, SessionData, SessionId, SessionKey,
    SessionStore, SqliteStore, StoreConfig,
};
use usher_testkit::postgres::PgServer;
use usher_testkit::redis::RedisServer;

const NOW: u64 = 1_700_000_000;
const SESSIONS: usize = 1000;

/// About 200 bytes of session data, like a signed-in user with a small cart.
fn data() -> SessionData {
    let mut d = SessionData::new();
    d.insert("user", json!("lab-user-12345"));
    d.insert("cart:tea-green", json!(2));
    d.insert("cart:mug", json!(1));
    d.insert("prefs", json!({"theme": "dark", "lang": "en"}));
    d.insert("progress", json!({"intro-video": 125, "howto": 40}));
    d.insert(
        "csrf",
        json!("c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00c0ffee"),
    );
    d
}

fn bench_store(
    c: &mut Criterion,
    rt: &tokio::runtime::Runtime,
    name: &str,
    store: Arc<dyn SessionStore>,
) {
    let keys: Vec<SessionKey> = (0..SESSIONS)
        .map(|_| {
            let key = SessionId::random().key();
            let rec = Record::new(data(), Some("lab-user-12345".into()), NOW, 1800, 86_400);
            rt.block_on(store.save(&key, &rec, None, NOW)).unwrap();
            key
        })
        .collect();
    let next = AtomicUsize::new(0);
    let pick = || &keys[next.fetch_add(1, Ordering::Relaxed) % keys.len()];
    let mut group = c.benchmark_group("session_request");
    group.bench_function(format!("{name}/load"), |b| {
        b.iter(|| rt.block_on(async { store.load(pick(), NOW + 1).await.unwrap().unwrap() }));
    });
    group.bench_function(format!("{name}/load+save"), |b| {
        b.iter(|| {
            rt.block_on(async {
                let key = pick();
                let mut rec = store.load(key, NOW + 1).await.unwrap().unwrap();
                let n = rec.data.get("n").and_then(|v| v.as_i64()).unwrap_or(0);
                rec.data.insert("n", json!(n + 1));
                store
                    .save(key, &rec, Some(rec.version), NOW + 1)
                    .await
                    .unwrap()
            })
        });
    });
    group.finish();
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let config = StoreConfig::default();
    let memory = MemoryStore::new(config, NonZeroUsize::new(100_000).unwrap());
    bench_store(c, &rt, "memory", Arc::new(memory));

    let dir = tempfile::tempdir().unwrap();
    let sqlite = SqliteStore::open(dir.path().join("s.db"), config).unwrap();
    bench_store(c, &rt, "sqlite", Arc::new(sqlite));

    let redis_server = RedisServer::start();
    let redis = rt
        .block_on(RedisStore::connect(&redis_server.url(), config))
        .unwrap();
    bench_store(c, &rt, "redis", Arc::new(redis));

    let pg_server = PgServer::start();
    let pg = rt
        .block_on(PostgresStore::connect(&pg_server.url(), config))
        .unwrap();
    bench_store(c, &rt, "postgres", Arc::new(pg));
}

criterion_group!(benches, bench);
criterion_main!(benches);
