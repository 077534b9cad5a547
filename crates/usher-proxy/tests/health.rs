//! Active health checks (rise/fall) and passive ejection.
#![allow(clippy::unwrap_used)]

mod support;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use http::StatusCode;
use support::{Backend, Client, TestLb, config};

fn up(lb: &TestLb, id: &str) -> bool {
    let snap = lb.lb.pool().snapshot();
    let i = snap.index_of(&id.parse().unwrap()).unwrap();
    snap.slots[i].healthy(lb.lb.pool().now_ms())
}

#[tokio::test]
async fn active_checks_take_a_dead_backend_down_within_fall_intervals_and_up_after_rise() {
    let (b0, mut b1) = (
        Backend::start("shop-0").await,
        Backend::start("shop-1").await,
    );
    let mut cfg = config(&[&b0, &b1]);
    cfg.health.path = Some("/healthz".into());
    cfg.health.interval = Duration::from_millis(100);
    cfg.health.timeout = Duration::from_millis(200);
    cfg.health.rise = 2;
    cfg.health.fall = 3;
    cfg.slow_start = Duration::ZERO; // the recovered backend's share is checked at once below
    let lb = TestLb::start(cfg).await;
    assert!(
        support::eventually(Duration::from_secs(2), || b1
            .seen()
            .iter()
            .any(|s| s.uri.path() == "/healthz"))
        .await
    );
    let checks = b1
        .seen()
        .iter()
        .filter(|s| s.uri.path() == "/healthz")
        .count();
    assert!(checks >= 1);
    assert!(
        b1.seen()
            .iter()
            .all(|s| s.headers["user-agent"] == "usher-health")
    );

    b1.kill();
    let killed = Instant::now();
    assert!(support::eventually(Duration::from_secs(3), || !up(&lb, "shop-1")).await);
    // fall × interval, plus slack for the check phase and a loaded machine.
    assert!(
        killed.elapsed() < Duration::from_millis(3 * 100 + 1000),
        "{:?}",
        killed.elapsed()
    );
    // No new requests go to it (no traffic was needed to find out).
    let mut c = Client::default();
    for _ in 0..10 {
        assert_eq!(c.get(&lb.url("/")).await.backend(), "shop-0");
    }
    b1.restart().await;
    let back = Instant::now();
    assert!(support::eventually(Duration::from_secs(3), || up(&lb, "shop-1")).await);
    assert!(
        back.elapsed() >= Duration::from_millis(100),
        "needs rise = 2 passing checks"
    );
    let mut seen: HashMap<String, usize> = HashMap::new();
    for _ in 0..10 {
        *seen
            .entry(c.get(&lb.url("/")).await.backend().to_owned())
            .or_default() += 1;
    }
    assert_eq!(seen.get("shop-1"), Some(&5), "{seen:?}");
    assert!(lb.lb.pool().snapshot().slots[1].health_transitions() >= 1);
}

#[tokio::test]
async fn consecutive_5xx_eject_a_backend_for_the_backoff() {
    let (b0, b1, b2) = (
        Backend::start("shop-0").await,
        Backend::start("shop-1").await,
        Backend::start("shop-2").await,
    );
    let mut cfg = config(&[&b0, &b1, &b2]);
    cfg.health.passive_failures = 3;
    cfg.health.passive_backoff = Duration::from_millis(500);
    let lb = TestLb::start(cfg).await;
    let mut c = Client::default();
    // Round robin over 3: /fail hits each backend in turn, and only shop-0 is sent /fail when
    // its turn comes (the others get /).
    for round in 0..3 {
        for (i, path) in ["/fail", "/", "/"].iter().enumerate() {
            let r = c.get(&lb.url(path)).await;
            assert_eq!(r.status.is_success(), i != 0, "round {round}, request {i}");
        }
    }
    assert!(!up(&lb, "shop-0"), "ejected after 3 failures in a row");
    assert!(up(&lb, "shop-1") && up(&lb, "shop-2"));
    let before = b0.count();
    for _ in 0..4 {
        assert_eq!(c.get(&lb.url("/")).await.status, StatusCode::OK);
    }
    assert_eq!(b0.count(), before, "nothing is sent to an ejected backend");
    // After the back-off it is tried again; a success clears the count.
    assert!(support::eventually(Duration::from_secs(3), || up(&lb, "shop-0")).await);
    // Two failures then a success: no ejection.
    for path in ["/fail", "/fail", "/", "/", "/fail", "/fail"] {
        c.get(&lb.url(path)).await;
    }
    assert!(up(&lb, "shop-0") && up(&lb, "shop-1") && up(&lb, "shop-2"));
}

#[tokio::test]
async fn when_every_backend_fails_at_most_half_are_ejected() {
    // A shared dependency is down: every backend answers 5xx. Ejecting them all would replace
    // their answers with the balancer's 503 and keep doing so after the dependency is back.
    let (b0, b1, b2) = (
        Backend::start("shop-0").await,
        Backend::start("shop-1").await,
        Backend::start("shop-2").await,
    );
    let mut cfg = config(&[&b0, &b1, &b2]);
    cfg.health.passive_failures = 2;
    cfg.health.passive_backoff = Duration::from_secs(30);
    let lb = TestLb::start(cfg).await;
    let mut c = Client::default();
    for _ in 0..30 {
        let r = c.get(&lb.url("/fail")).await;
        assert_eq!(
            r.status,
            StatusCode::INTERNAL_SERVER_ERROR,
            "the backend's own answer"
        );
    }
    let ejected = ["shop-0", "shop-1", "shop-2"]
        .iter()
        .filter(|id| !up(&lb, id))
        .count();
    assert_eq!(
        ejected, 1,
        "3 backends: one ejection leaves 2 of 3; a second would leave 1"
    );
    // The dependency is back: traffic flows at once, no back-off to wait out.
    assert_eq!(c.get(&lb.url("/")).await.status, StatusCode::OK);
}

#[test]
fn health_config_is_validated() {
    let base = "[[backend]]\nid = \"a\"\naddr = \"127.0.0.1:1\"\n";
    for (section, field) in [
        ("[health]\npath = \"healthz\"\n", "health.path"),
        ("[health]\nrise = 0\n", "health.rise"),
        ("[health]\nexpect_status = 99\n", "health.expect_status"),
        ("[health]\ninterval = \"1ms\"\n", "health.interval"),
    ] {
        let raw: usher_proxy::FileConfig = toml::from_str(&format!("{base}{section}")).unwrap();
        let err = usher_proxy::LbConfig::from_raw(raw, None)
            .unwrap_err()
            .to_string();
        assert!(err.contains(field), "{err}");
    }
}
