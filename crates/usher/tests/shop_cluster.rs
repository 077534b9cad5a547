//! Issues #4 and #5 across processes: `usher shop` replicas behind `usher lb --affinity none`.
//!
//! * A shared session store lets any shop serve any user; `--sessions memory` visibly does not.
//! * 50 identical concurrent checkouts with one Idempotency-Key, spread over two shops, place
//!   exactly one order (session and jwt mode); replays are byte-identical, another body is 422.
//! * A shop killed with `kill -9` in the middle of a checkout leaves a lease; once it expires the
//!   retry on the other shop places exactly one order.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod process;
mod shop_support;

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

use http::{Method, StatusCode};
use serde_json::json;
use shop_support::{Browser, LbProc, Reply, ShopProc};

fn sqlite(dir: &Path, name: &str) -> String {
    format!("sqlite:{}", dir.join(name).display())
}

/// Two shops on `sessions` (and one shared database) behind a non-sticky balancer.
fn cluster(dir: &Path, sessions: &str, extra: &[&str]) -> (ShopProc, ShopProc, LbProc) {
    let db = sqlite(dir, "shop.db");
    let mut args = vec!["--sessions", sessions, "--db", db.as_str()];
    args.extend_from_slice(extra);
    let a = ShopProc::start("shop-a", &args);
    let b = ShopProc::start("shop-b", &args);
    let lb = LbProc::start(&[&a, &b]);
    (a, b, lb)
}

/// Sends GET `path` through the balancer until both shops have answered (bounded); returns the
/// replies by shop.
async fn from_both(c: &mut Browser, lb: &LbProc, path: &str) -> Vec<Reply> {
    let mut seen = BTreeSet::new();
    let mut replies = Vec::new();
    for _ in 0..20 {
        let r = c.get(&lb.url(path)).await;
        if seen.insert(r.served_by()) {
            replies.push(r);
        }
        if seen.len() == 2 {
            return replies;
        }
    }
    panic!("the balancer never used both shops: {seen:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shared_store_serves_the_user_on_any_shop_and_memory_does_not() {
    let dir = tempfile::tempdir().unwrap();
    let sessions = sqlite(dir.path(), "sessions.db");
    let (_a, _b, lb) = cluster(dir.path(), &sessions, &[]);
    let mut c = Browser::default();
    let login = c.sign_in(&lb.url(""), "ann", true).await;
    let mut servers = BTreeSet::from([login.served_by()]);
    for _ in 0..3 {
        let r = c
            .post(&lb.url("/api/cart/items"), &json!({"sku": "mug", "qty": 1}))
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text());
        servers.insert(r.served_by());
    }
    assert_eq!(servers.len(), 2, "requests were spread: {servers:?}");
    for me in from_both(&mut c, &lb, "/api/me").await {
        assert_eq!(me.status, StatusCode::OK, "{}", me.text());
        assert_eq!(me.json()["user"], "ann");
        assert_eq!(me.json()["server"], me.served_by().as_str());
    }
    for cart in from_both(&mut c, &lb, "/api/cart").await {
        assert_eq!(
            cart.json()["items"][0]["qty"],
            3,
            "cart intact on {}",
            cart.served_by()
        );
    }
    drop(lb);

    // The same with per-process memory sessions: the other shop does not know the session.
    let mem_dir = tempfile::tempdir().unwrap();
    let (c_shop, d_shop, lb) = cluster(mem_dir.path(), "memory", &[]);
    let mut c = Browser::default();
    let login = c.sign_in(&lb.url(""), "ann", true).await;
    let home = login.served_by();
    let home_shop = if c_shop.id == home { &c_shop } else { &d_shop };
    // The same browser talking to its home shop directly still has its session…
    let mut direct = c.clone();
    let me = direct.get(&home_shop.url("/api/me")).await;
    assert_eq!(me.status, StatusCode::OK, "{}", me.text());
    // …but round robin sends the next request to the other shop, which has no such session:
    // 401, and it clears the cookie it cannot honour.
    let add = c
        .post(&lb.url("/api/cart/items"), &json!({"sku": "mug", "qty": 1}))
        .await;
    assert_ne!(add.served_by(), home);
    assert_eq!(add.status, StatusCode::UNAUTHORIZED, "{}", add.text());
    assert_eq!(add.json()["error"], "not_signed_in");
    assert!(
        !c.jar.contains_key("usher_sid"),
        "cookie cleared: {:?}",
        c.jar
    );
    let other = c.get(&lb.url("/api/me")).await;
    assert_eq!(other.status, StatusCode::UNAUTHORIZED);
    for cart in from_both(&mut c, &lb, "/api/cart").await {
        assert_eq!(
            cart.json()["items"],
            json!([]),
            "empty cart on {}",
            cart.served_by()
        );
    }
    // A browser that keeps the cookie is known only where it signed in.
    let saved = direct.jar.clone();
    let mut replies = Vec::new();
    for _ in 0..2 {
        direct.jar = saved.clone();
        let r = direct.get(&lb.url("/api/me")).await;
        replies.push((r.served_by(), r.status));
    }
    let ok: Vec<_> = replies
        .iter()
        .filter(|(_, s)| *s == StatusCode::OK)
        .collect();
    assert_eq!(ok.len(), 1, "known on exactly one shop: {replies:?}");
    assert_eq!(ok[0].0, home);
}

/// 50 concurrent checkouts with one key through the balancer → one order.
async fn fifty_checkouts_one_order(auth: &str) {
    let dir = tempfile::tempdir().unwrap();
    let sessions = sqlite(dir.path(), "sessions.db");
    let keys = dir.path().join("jwt.json");
    let keys = keys.to_str().unwrap();
    let extra: &[&str] = if auth == "jwt" {
        &["--auth", "jwt", "--jwt-keys", keys]
    } else {
        &[]
    };
    let (_a, _b, lb) = cluster(dir.path(), &sessions, extra);
    let mut c = Browser::default();
    c.sign_in(&lb.url(""), "ann", true).await;
    for sku in ["mug", "honey"] {
        let r = c
            .post(&lb.url("/api/cart/items"), &json!({"sku": sku, "qty": 2}))
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    }
    let key = format!("{:032x}", rand::random::<u128>());
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..50 {
        let mut c = c.clone();
        let (url, key) = (lb.url(""), key.clone());
        tasks.spawn(async move { c.checkout(&url, &key).await.unwrap() });
    }
    let mut replies = Vec::new();
    while let Some(r) = tasks.join_next().await {
        replies.push(r.unwrap());
    }
    let served: BTreeSet<String> = replies.iter().map(Reply::served_by).collect();
    assert_eq!(served.len(), 2, "both shops took part: {served:?}");
    let fresh: Vec<&Reply> = replies
        .iter()
        .filter(|r| r.status == StatusCode::CREATED && r.header("idempotent-replayed").is_none())
        .collect();
    assert_eq!(fresh.len(), 1, "exactly one execution");
    let original = fresh[0].clone();
    for r in &replies {
        match r.status {
            StatusCode::CREATED => assert_eq!(r.body, original.body),
            StatusCode::CONFLICT => assert!(r.header("retry-after").is_some()),
            other => panic!("unexpected {other}: {}", r.text()),
        }
    }
    let orders = c.get(&lb.url("/api/orders")).await.json();
    assert_eq!(orders["count"], 1, "{orders}");
    assert_eq!(orders["orders"][0]["id"], original.json()["id"]);

    // After completion, from either shop: the same bytes, marked as a replay.
    for _ in 0..2 {
        let r = c.checkout(&lb.url(""), &key).await.unwrap();
        assert_eq!(r.status, StatusCode::CREATED);
        assert_eq!(r.body, original.body, "byte-identical replay");
        assert_eq!(r.header("idempotent-replayed"), Some("true"));
    }
    // The key with a different request is refused.
    let r = c
        .send(
            Method::POST,
            &lb.url("/api/checkout"),
            &[("idempotency-key", key.as_str())],
            Some(&json!({"note": "different"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text());
    assert_eq!(c.get(&lb.url("/api/orders")).await.json()["count"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_identical_checkouts_across_two_shops_place_one_order() {
    fifty_checkouts_one_order("session").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_identical_checkouts_across_two_jwt_shops_place_one_order() {
    fifty_checkouts_one_order("jwt").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shop_killed_mid_checkout_leaves_a_lease_the_retry_takes_over() {
    let dir = tempfile::tempdir().unwrap();
    let (sessions, db) = (
        sqlite(dir.path(), "sessions.db"),
        sqlite(dir.path(), "shop.db"),
    );
    let keys = dir.path().join("jwt.json");
    let keys = keys.to_str().unwrap();
    let common = [
        "--sessions",
        sessions.as_str(),
        "--db",
        db.as_str(),
        "--auth",
        "jwt",
        "--jwt-keys",
        keys,
        "--idempotency-lease",
        "2s",
    ];
    // Shop A is slow to check out (test-only flag), so it can be killed in the middle.
    let mut slow = common.to_vec();
    slow.extend(["--test-checkout-delay", "60s"]);
    let mut a = ShopProc::start("shop-a", &slow);
    let b = ShopProc::start("shop-b", &common);
    let mut c = Browser::default();
    c.sign_in(&a.url(""), "ann", true).await;
    let r = c
        .post(
            &a.url("/api/cart/items"),
            &json!({"sku": "kettle", "qty": 1}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);

    let key = format!("{:032x}", rand::random::<u128>());
    let first = {
        let (mut c, url, key) = (c.clone(), a.url(""), key.clone());
        tokio::spawn(async move { c.checkout(&url, &key).await })
    };
    // Shop A logs when it holds the key and sits in the checkout; shop B then sees it running.
    a.proc.wait_for("test checkout delay");
    let r = c.checkout(&b.url(""), &key).await.unwrap();
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.text());
    a.kill9();
    let died = first.await.unwrap();
    assert!(died.is_err(), "the killed shop answered: {died:?}");
    assert_eq!(c.get(&b.url("/api/orders")).await.json()["count"], 0);

    // The retry on shop B: 409 until the dead shop's lease ends, then it runs, once.
    let deadline = Instant::now() + Duration::from_secs(10);
    let done = loop {
        let r = c.checkout(&b.url(""), &key).await.unwrap();
        if r.status == StatusCode::CREATED {
            break r;
        }
        assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.text());
        assert!(Instant::now() < deadline, "the lease never expired");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(done.header("idempotent-replayed").is_none());
    assert_eq!(done.json()["server"], "shop-b");
    let orders = c.get(&b.url("/api/orders")).await.json();
    assert_eq!(orders["count"], 1, "{orders}");
    assert_eq!(orders["orders"][0]["items"][0]["sku"], "kettle");
    let again = c.checkout(&b.url(""), &key).await.unwrap();
    assert_eq!(again.body, done.body);
    assert_eq!(again.header("idempotent-replayed"), Some("true"));
}
