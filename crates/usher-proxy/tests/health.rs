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
    let (b0, b1) = (
        Backend::start("shop-0").await,
        Backend::start("shop-1").await,
    );
    let mut cfg = config(&[&b0, &b1]);
    cfg.health.passive_failures = 3;
    cfg.health.passive_backoff = Duration::from_millis(500);
    let lb = TestLb::start(cfg).await;
    let mut c = Client::default();
    // Round robin: every second /fail lands on each backend; both answer 500.
    for _ in 0..6 {
        assert_eq!(
            c.get(&lb.url("/fail")).await.status,
            StatusCode::INTERNAL_SERVER_ERROR
        );
    }
    assert!(
        !up(&lb, "shop-0") && !up(&lb, "shop-1"),
        "both ejected after 3 failures each"
    );
    // All ejected: 503, not a hang and not a request to an ejected backend.
    let before = b0.count() + b1.count();
    assert_eq!(
        c.get(&lb.url("/")).await.status,
        StatusCode::SERVICE_UNAVAILABLE
    );
    assert_eq!(b0.count() + b1.count(), before);
    // After the back-off they are tried again; a success clears the count.
    assert!(
        support::eventually(Duration::from_secs(3), || up(&lb, "shop-0")
            && up(&lb, "shop-1"))
        .await
    );
    assert_eq!(c.get(&lb.url("/")).await.status, StatusCode::OK);
    // Two failures then a success: no ejection.
    for path in ["/fail", "/fail", "/", "/", "/fail", "/fail"] {
        c.get(&lb.url(path)).await;
    }
    assert!(up(&lb, "shop-0") && up(&lb, "shop-1"));
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
