//! The shop on each shared session store, against private servers on free loopback ports (never
//! the machine's Redis on 6379 or PostgreSQL on 5432): two shops share the store, a user signs in
//! on one and is served by the other with the cart intact, parallel adds through both shops lose
//! nothing; and a Redis outage is a 503 with `Retry-After` (from whichever shop), then recovery.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::{Duration, Instant};

use http::StatusCode;
use serde_json::json;
use support::{TestShop, cart_qty, parallel_adds};
use usher_shop::SessionsSpec;
use usher_testkit::postgres::PgServer;
use usher_testkit::redis::{RedisCluster, RedisServer, Sentinel};

/// Two shops on `sessions`: the session follows the user, and 2 × 25 parallel adds through the
/// two shops all land.
async fn session_follows_the_user(sessions: SessionsSpec, kind: &str) {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("shop.db");
    let a = TestShop::start("shop-a", sessions.clone(), &db).await;
    let b = TestShop::start("shop-b", sessions, &db).await;
    let mut on_a = a.client();
    on_a.sign_in("ann", "pw", true).await;
    on_a.post("/api/cart/items", json!({"sku": "mug", "qty": 2}))
        .await;
    let mut on_b = on_a.to(&b);
    let me = on_b.get("/api/me").await.json();
    assert_eq!(
        me,
        json!({"user": "ann", "server": "shop-b", "store": kind, "auth": "session"})
    );
    assert_eq!(cart_qty(&on_b.get("/api/cart").await.json(), "mug"), 2);

    parallel_adds(&[on_a.clone(), on_b.clone()], 25, "tray", 1).await;
    assert_eq!(cart_qty(&on_a.get("/api/cart").await.json(), "tray"), 50);
    let r = on_b.checkout().await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    assert_eq!(on_a.get("/api/cart").await.json()["items"], json!([]));
    // Logging out on one shop logs out on both.
    on_a.post("/api/logout", json!({})).await;
    on_b.get("/api/me").await.expect_error(401, "not_signed_in");
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_single_node() {
    let redis = tokio::task::spawn_blocking(RedisServer::start)
        .await
        .unwrap();
    session_follows_the_user(SessionsSpec::Redis(redis.url()), "redis").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_cluster() {
    let cluster = tokio::task::spawn_blocking(|| RedisCluster::start(3))
        .await
        .unwrap();
    session_follows_the_user(SessionsSpec::RedisCluster(cluster.url()), "redis-cluster").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_behind_sentinel() {
    let sentinel = tokio::task::spawn_blocking(Sentinel::start).await.unwrap();
    session_follows_the_user(
        SessionsSpec::RedisSentinel(sentinel.url()),
        "redis-sentinel",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_sessions_and_postgres_database() {
    let pg = tokio::task::spawn_blocking(PgServer::start).await.unwrap();
    session_follows_the_user(SessionsSpec::Postgres(pg.url()), "postgres").await;
    // Users and orders in PostgreSQL too.
    let dir = tempfile::tempdir().unwrap();
    let mut config = usher_shop::ShopConfig::new(
        "shop-pg",
        SessionsSpec::Sqlite(dir.path().join("s.db")),
        usher_shop::DbSpec::Postgres(pg.url()),
    );
    config.password_cost = usher_shop::PasswordCost::LOW;
    let shop = TestShop::start_with(config).await;
    let mut c = shop.client();
    c.sign_in("pat", "pw", true).await;
    c.post("/api/cart/items", json!({"sku": "honey", "qty": 1}))
        .await;
    assert_eq!(c.checkout().await.status, StatusCode::CREATED);
    assert_eq!(c.get("/api/orders").await.json()["count"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_outage_is_a_503_with_retry_after_then_recovers() {
    let mut redis = tokio::task::spawn_blocking(RedisServer::start)
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let shop = TestShop::start(
        "shop-a",
        SessionsSpec::Redis(redis.url()),
        &dir.path().join("db"),
    )
    .await;
    let mut c = shop.client();
    c.sign_in("ann", "pw", true).await;
    let redis = tokio::task::spawn_blocking(move || {
        redis.kill();
        redis
    })
    .await
    .unwrap();
    for path in ["/api/me", "/api/cart", "/"] {
        let r = c.get(path).await;
        assert_eq!(
            r.status,
            StatusCode::SERVICE_UNAVAILABLE,
            "{path}: {}",
            r.text()
        );
        assert!(r.headers.contains_key("retry-after"), "{path}");
        assert_eq!(r.json()["error"], "session_store_unavailable");
    }
    let r = c
        .post("/api/cart/items", json!({"sku": "mug", "qty": 1}))
        .await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    // The healthz route needs no session and keeps answering.
    assert_eq!(c.get("/healthz").await.status, StatusCode::OK);

    // Redis comes back empty (nothing persisted): the shop recovers, the session is gone.
    let mut redis = redis;
    // Keep the restarted server: dropping it would kill it again.
    let _redis = tokio::task::spawn_blocking(move || {
        redis.restart();
        redis
    })
    .await
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = c.get("/api/me").await;
        if r.status != StatusCode::SERVICE_UNAVAILABLE {
            r.expect_error(401, "not_signed_in");
            break;
        }
        assert!(Instant::now() < deadline, "no recovery: {}", r.text());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    c.sign_in("ann", "pw", false).await;
    assert_eq!(c.get("/api/me").await.json()["user"], "ann");
}
