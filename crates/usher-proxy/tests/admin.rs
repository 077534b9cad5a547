//! The admin API: membership at runtime, sticky-aware draining, explain, metrics, auth.
#![allow(clippy::unwrap_used)]

mod support;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::Full;
use support::{Backend, Client, Reply, TestLb, config};
use usher_proxy::Outcome;

async fn admin(c: &mut Client, addr: SocketAddr, method: Method, path: &str, body: &str) -> Reply {
    let req = Request::builder()
        .method(method)
        .uri(format!("http://{addr}{path}"))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_owned())))
        .unwrap();
    c.send(req).await
}

fn json(r: &Reply) -> serde_json::Value {
    serde_json::from_str(&r.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", r.body))
}

#[tokio::test]
async fn lists_backends_with_live_counters() {
    let (b0, b1) = (
        Backend::start("shop-0").await,
        Backend::start("shop-1").await,
    );
    let mut cfg = config(&[&b0, &b1]);
    cfg.affinity = "cookie".parse().unwrap();
    let lb = TestLb::start(cfg).await;
    let a = lb.start_admin(None).await;
    // Six clients, three requests each: the new binding and two hits count as one client.
    for _ in 0..6 {
        let mut client = Client::default();
        for _ in 0..3 {
            client.get(&lb.url("/")).await;
        }
    }
    let mut c = Client::default();
    let r = admin(&mut c, a, Method::GET, "/backends", "").await;
    assert_eq!(r.status, StatusCode::OK);
    let list = json(&r);
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), 2);
    for b in list {
        for field in [
            "id",
            "addr",
            "state",
            "weight",
            "healthy",
            "inflight",
            "requests",
            "pinned_clients",
        ] {
            assert!(b.get(field).is_some(), "{field} missing: {b}");
        }
        assert_eq!(b["state"], "active");
        assert_eq!(b["requests"], 9);
        assert_eq!(b["pinned_clients"], 3, "three distinct cookie clients each");
    }
    assert_eq!(
        admin(&mut c, a, Method::GET, "/healthz", "").await.status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn bad_requests_name_the_field_and_unknown_backends_are_404() {
    let b0 = Backend::start("shop-0").await;
    let lb = TestLb::start(config(&[&b0])).await;
    let a = lb.start_admin(None).await;
    let mut c = Client::default();
    let cases = [
        (
            Method::PUT,
            "/backends/shop-9",
            "{\"adr\": \"127.0.0.1:1\"}",
            "adr",
        ),
        (
            Method::PUT,
            "/backends/shop-9",
            "{\"addr\": \"nowhere\"}",
            "addr",
        ),
        (
            Method::PUT,
            "/backends/shop-9",
            "{\"addr\": \"127.0.0.1:1\", \"weight\": 0}",
            "weight",
        ),
        (Method::PUT, "/backends/shop-9", "{\"weight\": 2}", "addr"),
        (Method::PUT, "/backends/shop-9", "not json", "invalid body"),
        (
            Method::PUT,
            "/backends/bad%20id",
            "{\"addr\": \"127.0.0.1:1\"}",
            "id",
        ),
        (
            Method::POST,
            "/backends/shop-0/drain",
            "{\"deadline\": \"soon\"}",
            "deadline",
        ),
        (Method::POST, "/affinity/explain", "{}", "cookie"),
    ];
    for (method, path, body, field) in cases {
        let r = admin(&mut c, a, method.clone(), path, body).await;
        assert_eq!(
            r.status,
            StatusCode::BAD_REQUEST,
            "{method} {path} {body}: {}",
            r.body
        );
        let err = json(&r)["error"].as_str().unwrap().to_owned();
        assert!(err.contains(field), "{path} {body}: {err}");
    }
    for (method, path) in [
        (Method::POST, "/backends/shop-9/drain"),
        (Method::POST, "/backends/shop-9/activate"),
        (Method::DELETE, "/backends/shop-9"),
        (Method::GET, "/nothing"),
    ] {
        let r = admin(&mut c, a, method.clone(), path, "").await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{method} {path}");
    }
}

#[tokio::test]
async fn a_backend_added_under_load_gets_new_clients() {
    let (b0, b1, b2) = (
        Backend::start("shop-0").await,
        Backend::start("shop-1").await,
        Backend::start("shop-2").await,
    );
    let mut cfg = config(&[&b0, &b1]);
    cfg.affinity = "cookie".parse().unwrap();
    cfg.slow_start = Duration::ZERO; // the ramp has its own test below
    let lb = TestLb::start(cfg).await;
    let a = lb.start_admin(None).await;
    let mut pinned = Client::default();
    let home = pinned.get(&lb.url("/")).await.backend().to_owned();
    let mut c = Client::default();
    let r = admin(
        &mut c,
        a,
        Method::PUT,
        "/backends/shop-2",
        &format!("{{\"addr\": \"{}\"}}", b2.addr),
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let mut counts: HashMap<String, usize> = HashMap::new();
    for _ in 0..30 {
        *counts
            .entry(
                Client::default()
                    .get(&lb.url("/"))
                    .await
                    .backend()
                    .to_owned(),
            )
            .or_default() += 1;
    }
    assert_eq!(counts.get("shop-2"), Some(&10), "{counts:?}");
    // Existing clients stay where they are.
    assert_eq!(pinned.get(&lb.url("/")).await.backend(), home);
    // Updating the weight answers 200.
    let r = admin(
        &mut c,
        a,
        Method::PUT,
        "/backends/shop-2",
        &format!("{{\"addr\": \"{}\", \"weight\": 3}}", b2.addr),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
}

#[tokio::test]
async fn drain_takes_no_new_clients_serves_bound_ones_then_repins_them_without_errors() {
    let (b0, b1) = (
        Backend::start("shop-0").await,
        Backend::start("shop-1").await,
    );
    let mut cfg = config(&[&b0, &b1]);
    cfg.affinity = "cookie".parse().unwrap();
    let lb = TestLb::start(cfg).await;
    let a = lb.start_admin(None).await;
    // Four clients, two on each backend.
    let mut clients = Vec::new();
    for _ in 0..4 {
        let mut c = Client::default();
        let home = c.get(&lb.url("/")).await.backend().to_owned();
        clients.push((c, home));
    }
    let mut c = Client::default();
    let r = admin(
        &mut c,
        a,
        Method::POST,
        "/backends/shop-0/drain",
        "{\"deadline\": \"1s\"}",
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    // New clients: none on the draining backend.
    for _ in 0..10 {
        assert_eq!(
            Client::default().get(&lb.url("/")).await.backend(),
            "shop-1"
        );
    }
    // Bound clients: still served by shop-0 until the deadline.
    for (c, home) in &mut clients {
        let r = c.get(&lb.url("/")).await;
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(r.backend(), home);
    }
    let state = json(&admin(&mut c, a, Method::GET, "/backends", "").await);
    assert_eq!(state[0]["state"], "draining");
    // After the deadline the backend is removed and its clients move, without a single error.
    assert!(
        support::eventually(Duration::from_secs(5), || lb
            .lb
            .pool()
            .snapshot()
            .slots
            .len()
            == 1)
        .await
    );
    for (c, _) in &mut clients {
        let r = c.get(&lb.url("/")).await;
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(r.backend(), "shop-1");
    }
    assert_eq!(lb.lb.stats().outcome_count(Outcome::Drained), 2);
    assert_eq!(lb.lb.stats().local.class(5), 0);
}

#[tokio::test]
async fn a_drain_ends_early_once_bound_clients_are_gone() {
    let (b0, b1) = (
        Backend::start("shop-0").await,
        Backend::start("shop-1").await,
    );
    let mut cfg = config(&[&b0, &b1]);
    cfg.affinity = "cookie".parse().unwrap();
    cfg.cookie.idle_timeout = Duration::from_secs(1);
    let lb = TestLb::start(cfg).await;
    let a = lb.start_admin(None).await;
    Client::default().get(&lb.url("/")).await;
    let mut c = Client::default();
    let r = admin(
        &mut c,
        a,
        Method::POST,
        "/backends/shop-0/drain",
        "{\"deadline\": \"1h\"}",
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(
        support::eventually(Duration::from_secs(5), || lb
            .lb
            .pool()
            .snapshot()
            .slots
            .len()
            == 1)
        .await
    );
    // Activate on a removed backend: 404.
    let r = admin(&mut c, a, Method::POST, "/backends/shop-0/activate", "").await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn activate_ends_a_drain_and_delete_removes_at_once() {
    let (b0, b1) = (
        Backend::start("shop-0").await,
        Backend::start("shop-1").await,
    );
    let mut cfg = config(&[&b0, &b1]);
    cfg.affinity = "cookie".parse().unwrap();
    let lb = TestLb::start(cfg).await;
    let a = lb.start_admin(None).await;
    let mut c = Client::default();
    assert_eq!(
        admin(&mut c, a, Method::POST, "/backends/shop-0/drain", "")
            .await
            .status,
        StatusCode::OK
    );
    assert_eq!(
        admin(&mut c, a, Method::POST, "/backends/shop-0/activate", "")
            .await
            .status,
        StatusCode::OK
    );
    let mut seen: HashMap<String, usize> = HashMap::new();
    for _ in 0..4 {
        *seen
            .entry(
                Client::default()
                    .get(&lb.url("/"))
                    .await
                    .backend()
                    .to_owned(),
            )
            .or_default() += 1;
    }
    assert_eq!(seen.len(), 2, "{seen:?}");
    let mut on0 = Client::default();
    while on0.get(&lb.url("/")).await.backend() != "shop-0" {
        on0 = Client::default();
    }
    let r = admin(&mut c, a, Method::DELETE, "/backends/shop-0", "").await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    let r = on0.get(&lb.url("/")).await;
    assert_eq!(r.backend(), "shop-1");
    assert_eq!(lb.lb.stats().outcome_count(Outcome::Moved), 1);
}

#[tokio::test]
async fn explain_opens_cookies_and_says_why_not() {
    let b0 = Backend::start("shop-0").await;
    let mut cfg = config(&[&b0]);
    cfg.affinity = "cookie".parse().unwrap();
    let lb = TestLb::start(cfg).await;
    let a = lb.start_admin(None).await;
    let r = Client::default().get(&lb.url("/")).await;
    let pair = r
        .set_cookie("usher")
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    let mut c = Client::default();
    let v = json(
        &admin(
            &mut c,
            a,
            Method::POST,
            "/affinity/explain",
            &format!("{{\"cookie\": \"{pair}\"}}"),
        )
        .await,
    );
    assert_eq!(v["valid"], true);
    assert_eq!(v["backend"], "shop-0");
    assert_eq!(v["key_id"], 7);
    assert!(v["expires_at"].as_u64().unwrap() > v["issued_at"].as_u64().unwrap());
    let v = json(
        &admin(
            &mut c,
            a,
            Method::POST,
            "/affinity/explain",
            "{\"cookie\": \"forged\"}",
        )
        .await,
    );
    assert_eq!(v["valid"], false);
    assert_eq!(v["reason"], "malformed token");
}

#[tokio::test]
async fn metrics_are_prometheus_text_and_match_the_requests_sent() {
    let (b0, b1) = (
        Backend::start("shop-0").await,
        Backend::start("shop-1").await,
    );
    let mut cfg = config(&[&b0, &b1]);
    cfg.affinity = "cookie".parse().unwrap();
    cfg.slow_start = Duration::ZERO; // the ramp has its own test below
    let lb = TestLb::start(cfg).await;
    let a = lb.start_admin(None).await;
    let mut pinned = Client::default();
    for _ in 0..5 {
        pinned.get(&lb.url("/")).await;
    }
    for _ in 0..3 {
        Client::default().get(&lb.url("/")).await;
    }
    let r = admin(&mut Client::default(), a, Method::GET, "/metrics", "").await;
    assert!(
        r.headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain; version=0.0.4")
    );
    let mut samples: HashMap<String, f64> = HashMap::new();
    for line in r.body.lines() {
        if line.starts_with('#') || line.is_empty() {
            assert!(
                line.is_empty() || line.starts_with("# HELP ") || line.starts_with("# TYPE "),
                "{line}"
            );
            continue;
        }
        let (name, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("bad line {line}"));
        let v: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("bad value in {line}"));
        assert!(
            samples.insert(name.to_owned(), v).is_none(),
            "duplicate series {name}"
        );
    }
    let total_2xx: f64 = samples
        .iter()
        .filter(|(k, _)| k.starts_with("usher_requests_total{") && k.contains("code=\"2xx\""))
        .map(|(_, v)| v)
        .sum();
    assert_eq!(total_2xx, 8.0);
    assert_eq!(
        samples["usher_affinity_outcomes_total{outcome=\"new\"}"],
        4.0
    );
    assert_eq!(
        samples["usher_affinity_outcomes_total{outcome=\"hit\"}"],
        4.0
    );
    assert_eq!(samples["usher_request_duration_seconds_count"], 8.0);
    assert_eq!(samples["usher_backend_up{backend=\"shop-0\"}"], 1.0);
    assert_eq!(
        samples["usher_backend_state{backend=\"shop-1\",state=\"active\"}"],
        1.0
    );
    assert_eq!(samples["usher_retries_total"], 0.0);
}

#[tokio::test]
async fn a_token_protects_every_endpoint_and_exposure_needs_one() {
    let b0 = Backend::start("shop-0").await;
    let lb = TestLb::start(config(&[&b0])).await;
    let a = lb.start_admin(Some("s3cret")).await;
    let mut c = Client::default();
    for path in ["/backends", "/metrics", "/healthz"] {
        let r = admin(&mut c, a, Method::GET, path, "").await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{path}");
    }
    let req = Request::get(format!("http://{a}/backends"))
        .header("authorization", "Bearer s3cre7")
        .body(Full::<Bytes>::default())
        .unwrap();
    assert_eq!(c.send(req).await.status, StatusCode::UNAUTHORIZED);
    let req = Request::get(format!("http://{a}/backends"))
        .header("authorization", "Bearer s3cret")
        .body(Full::<Bytes>::default())
        .unwrap();
    assert_eq!(c.send(req).await.status, StatusCode::OK);

    let public: SocketAddr = "0.0.0.0:8081".parse().unwrap();
    assert!(usher_proxy::check_admin_bind(public, None).is_err());
    assert!(usher_proxy::check_admin_bind(public, Some("")).is_err());
    assert!(usher_proxy::check_admin_bind(public, Some("t")).is_ok());
    assert!(usher_proxy::check_admin_bind("127.0.0.1:0".parse().unwrap(), None).is_ok());
}

#[tokio::test]
async fn an_added_backend_ramps_up_its_share_of_new_clients() {
    let bs = [
        Backend::start("shop-0").await,
        Backend::start("shop-1").await,
        Backend::start("shop-2").await,
    ];
    let b3 = Backend::start("shop-3").await;
    let mut cfg = config(&[&bs[0], &bs[1], &bs[2]]);
    cfg.affinity = "cookie".parse().unwrap();
    cfg.slow_start = Duration::from_secs(3);
    let lb = TestLb::start(cfg).await;
    let a = lb.start_admin(None).await;
    let mut c = Client::default();
    let body = format!("{{\"addr\": \"{}\"}}", b3.addr);
    assert_eq!(
        admin(&mut c, a, Method::PUT, "/backends/shop-3", &body)
            .await
            .status,
        StatusCode::CREATED
    );
    let share = |n: usize| {
        let lb = &lb;
        async move {
            let mut on_new = 0;
            for _ in 0..n {
                on_new +=
                    usize::from(Client::default().get(&lb.url("/")).await.backend() == "shop-3");
            }
            on_new
        }
    };
    // At first ~10 % of its fair quarter; after the window, exactly its quarter (round robin).
    // 80 requests take well under a second even on a loaded machine: the factor stays ≤ ~0.4,
    // so the expected count is ≤ 80 × 1/4 × 0.4 = 8 (a fair quarter would be 20).
    let early = share(80).await;
    assert!(early <= 12, "{early} of 80 right after the add");
    assert!(
        support::eventually(Duration::from_secs(5), || {
            let snap = lb.lb.pool().snapshot();
            snap.slots[3].ramp_factor(lb.lb.pool().now_ms(), 3000) >= 1.0
        })
        .await
    );
    let late = share(200).await;
    assert_eq!(late, 50, "a full quarter after the ramp");
}
