//! Killing a backend mid-run: `repin` keeps clients served, `strict` answers 503.
#![allow(clippy::unwrap_used)]

mod support;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::Full;
use support::{Backend, Client, TestLb, config};
use usher_proxy::{FailurePolicy, LbConfig, Outcome};

async fn three() -> Vec<Backend> {
    vec![
        Backend::start("shop-0").await,
        Backend::start("shop-1").await,
        Backend::start("shop-2").await,
    ]
}

fn cfg(bs: &[Backend], affinity: &str, on_failure: FailurePolicy) -> LbConfig {
    let refs: Vec<&Backend> = bs.iter().collect();
    let mut c = config(&refs);
    c.affinity = affinity.parse().unwrap();
    c.on_failure = on_failure;
    c.limits.down_backoff = Duration::from_millis(300);
    c
}

#[tokio::test]
async fn repin_keeps_clients_served_when_their_backend_is_killed_mid_run() {
    let bs = three().await;
    let lb = TestLb::start(cfg(&bs, "cookie", FailurePolicy::Repin)).await;
    let url = lb.url("/slow?ms=5");
    let running = Arc::new(AtomicBool::new(true));
    let failures = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    // 12 clients, each with its own cookie, looping until told to stop (bounded by 400 requests).
    for _ in 0..12 {
        let (url, running, failures) = (url.clone(), Arc::clone(&running), Arc::clone(&failures));
        tasks.push(tokio::spawn(async move {
            let mut c = Client::default();
            let mut served_by = Vec::new();
            for _ in 0..400 {
                if !running.load(Ordering::Relaxed) {
                    break;
                }
                match c.try_get(&url).await {
                    Ok(r) if r.status == StatusCode::OK => {
                        served_by.push(r.backend().to_owned());
                    }
                    _ => {
                        failures.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            served_by
        }));
    }
    // Let every client get pinned, then kill shop-1 under load.
    assert!(
        support::eventually(Duration::from_secs(10), || bs
            .iter()
            .all(|b| b.count() >= 20))
        .await
    );
    bs[1].kill();
    let killed_at = bs[1].count();
    assert!(
        support::eventually(Duration::from_secs(10), || bs[0].count() + bs[2].count()
            > killed_at + 300)
        .await
    );
    running.store(false, Ordering::Relaxed);
    let mut moved_clients = 0;
    for t in tasks {
        let served = t.await.unwrap();
        let last = served.last().unwrap();
        assert_ne!(last, "shop-1", "a client is still on the dead backend");
        if served.iter().any(|b| b == "shop-1") {
            moved_clients += 1;
        }
    }
    // At most the requests in flight on shop-1 at the kill may fail (one per client on it).
    assert!(
        failures.load(Ordering::Relaxed) <= 4,
        "failures: {}",
        failures.load(Ordering::Relaxed)
    );
    assert!(moved_clients >= 1);
    let stats = lb.lb.stats();
    assert!(
        stats.outcome_count(Outcome::Moved) >= moved_clients as u64,
        "{}",
        stats.outcomes_line()
    );
    assert_eq!(stats.outcome_count(Outcome::StrictReject), 0);
}

#[tokio::test]
async fn strict_answers_503_for_clients_of_a_dead_backend_and_serves_them_again_after_restart() {
    let mut bs = three().await;
    let lb = TestLb::start(cfg(&bs, "cookie", FailurePolicy::Strict)).await;
    // Pin three clients, one per backend (round robin).
    let mut clients = Vec::new();
    for _ in 0..3 {
        let mut c = Client::default();
        let r = c.get(&lb.url("/")).await;
        clients.push((c, r.backend().to_owned()));
    }
    bs[1].kill();
    for (c, home) in &mut clients {
        let cookie_before = c.cookies.clone();
        let r = c.get(&lb.url("/")).await;
        if home == "shop-1" {
            assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
            assert!(r.headers.contains_key("retry-after"));
            assert!(r.set_cookie("usher").is_none(), "strict keeps the binding");
            assert_eq!(c.cookies, cookie_before);
        } else {
            assert_eq!(r.status, StatusCode::OK);
            assert_eq!(r.backend(), home);
        }
    }
    assert!(lb.lb.stats().outcome_count(Outcome::StrictReject) >= 1);
    // New clients are never sent to the dead backend while it is marked down.
    for _ in 0..6 {
        let r = Client::default().get(&lb.url("/")).await;
        assert_eq!(r.status, StatusCode::OK);
        assert_ne!(r.backend(), "shop-1");
    }
    // Back up: after the back-off the pinned client is served by its own backend again.
    bs[1].restart().await;
    let (c, _) = clients.iter_mut().find(|(_, h)| h == "shop-1").unwrap();
    let mut ok = None;
    for _ in 0..100 {
        let r = c.get(&lb.url("/")).await;
        if r.status == StatusCode::OK {
            ok = Some(r);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(ok.expect("never served again").backend(), "shop-1");
}

#[tokio::test]
async fn hashed_keys_fail_over_to_the_next_backend_and_others_do_not_move() {
    let bs = three().await;
    let lb = TestLb::start(cfg(&bs, "header:X-Session-Id", FailurePolicy::Repin)).await;
    let mut c = Client::default();
    let mut home = HashMap::new();
    for i in 0..60 {
        let req = Request::get(lb.url("/")).header("x-session-id", format!("u{i}"));
        let r = c.send(req.body(Full::<Bytes>::default()).unwrap()).await;
        home.insert(i, r.backend().to_owned());
    }
    bs[0].kill();
    for i in 0..60 {
        let req = Request::get(lb.url("/")).header("x-session-id", format!("u{i}"));
        let r = c.send(req.body(Full::<Bytes>::default()).unwrap()).await;
        assert_eq!(r.status, StatusCode::OK);
        if home[&i] == "shop-0" {
            assert_ne!(r.backend(), "shop-0");
        } else {
            assert_eq!(
                r.backend(),
                home[&i],
                "key u{i} moved although its backend is up"
            );
        }
    }
    assert!(lb.lb.stats().outcome_count(Outcome::Moved) >= 1);
}

#[tokio::test]
async fn connect_failures_are_retried_once_for_any_method_including_post() {
    let bs = three().await;
    let lb = TestLb::start(cfg(&bs, "none", FailurePolicy::Repin)).await;
    bs[0].kill();
    let mut c = Client::default();
    for _ in 0..9 {
        let req = Request::post(lb.url("/echo"))
            .body(Full::new(Bytes::from_static(b"order")))
            .unwrap();
        let r = c.send(req).await;
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(r.body, "order");
    }
    assert!(lb.lb.stats().retries() >= 1);
}

#[tokio::test]
async fn all_backends_down_is_a_503_not_a_hang() {
    let bs = three().await;
    let lb = TestLb::start(cfg(&bs, "cookie", FailurePolicy::Repin)).await;
    for b in &bs {
        b.kill();
    }
    for _ in 0..5 {
        let r = Client::default().get(&lb.url("/")).await;
        assert!(
            r.status == StatusCode::BAD_GATEWAY || r.status == StatusCode::SERVICE_UNAVAILABLE,
            "{}",
            r.status
        );
    }
}

#[tokio::test]
async fn bounded_load_spills_a_hot_key_instead_of_overloading_its_backend() {
    let bs = three().await;
    let mut c = cfg(&bs, "header:X-Session-Id", FailurePolicy::Repin);
    c.policy = usher_balancer::Policy::Maglev;
    c.balance_factor = 1.25;
    let lb = TestLb::start(c).await;
    // 30 slow requests for one hot key, all in flight at once.
    let mut tasks = Vec::new();
    for _ in 0..30 {
        let url = lb.url("/slow?ms=800");
        tasks.push(tokio::spawn(async move {
            let req = Request::get(url).header("x-session-id", "celebrity");
            Client::default()
                .send(req.body(Full::<Bytes>::default()).unwrap())
                .await
        }));
    }
    let mut per_backend: HashMap<String, usize> = HashMap::new();
    for t in tasks {
        let r = t.await.unwrap();
        assert_eq!(r.status, StatusCode::OK);
        *per_backend.entry(r.backend().to_owned()).or_default() += 1;
    }
    // Request k arrives with k in flight: its cap is ceil(1.25 × (k + 1) / 3) ≤ 13 for k < 30.
    let max = per_backend.values().copied().max().unwrap();
    assert!(max <= 13, "{per_backend:?}");
    assert_eq!(per_backend.len(), 3, "{per_backend:?}");
    assert!(lb.lb.stats().outcome_count(Outcome::Moved) >= 17);
}
