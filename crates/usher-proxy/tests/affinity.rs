//! Every affinity mode pins a client and spreads new clients; the sealed-cookie spec line by line.
#![allow(clippy::unwrap_used)]

mod support;

use std::collections::HashMap;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::Full;
use support::{Backend, Client, Reply, TestLb, config, test_keys};
use usher_balancer::{AffinityKey, Claims, KeyRing};
use usher_proxy::{AffinityMode, LbConfig, Outcome};

async fn three() -> [Backend; 3] {
    [
        Backend::start("shop-0").await,
        Backend::start("shop-1").await,
        Backend::start("shop-2").await,
    ]
}

fn cfg(bs: &[Backend; 3], affinity: &str) -> LbConfig {
    let mut c = config(&[&bs[0], &bs[1], &bs[2]]);
    c.affinity = affinity.parse::<AffinityMode>().unwrap();
    c.trusted_proxies = vec!["127.0.0.0/8".parse().unwrap()];
    c
}

fn get(url: &str) -> http::request::Builder {
    Request::get(url)
}

async fn send(c: &mut Client, b: http::request::Builder) -> Reply {
    c.send(b.body(Full::<Bytes>::default()).unwrap()).await
}

/// `n` fresh clients make one request each; `req(i)` builds client i's request.
async fn spread(
    n: usize,
    mut req: impl FnMut(usize) -> http::request::Builder,
) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    let mut c = Client::default();
    for i in 0..n {
        c.cookies.clear();
        let r = send(&mut c, req(i)).await;
        assert_eq!(r.status, StatusCode::OK);
        *counts.entry(r.backend().to_owned()).or_insert(0) += 1;
    }
    counts
}

fn assert_even(counts: &HashMap<String, usize>, n: usize) {
    assert_eq!(counts.len(), 3, "{counts:?}");
    let mean = n as f64 / 3.0;
    for (b, &k) in counts {
        assert!(
            (k as f64 - mean).abs() <= 0.1 * mean,
            "{b} got {k} of {n}: {counts:?}"
        );
    }
}

/// 100 requests of one client all land on one backend.
async fn assert_pinned(c: &mut Client, mut req: impl FnMut() -> http::request::Builder) -> String {
    let first = send(c, req()).await.backend().to_owned();
    for _ in 1..100 {
        let r = send(c, req()).await;
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(r.backend(), first);
    }
    first
}

#[tokio::test]
async fn cookie_affinity_pins_clients_and_round_robins_new_ones() {
    let bs = three().await;
    let lb = TestLb::start(cfg(&bs, "cookie")).await;
    let counts = spread(300, |_| get(&lb.url("/"))).await;
    assert_eq!(
        counts.values().copied().collect::<Vec<_>>(),
        vec![100, 100, 100]
    );
    let mut c = Client::default();
    assert_pinned(&mut c, || get(&lb.url("/"))).await;
    assert_eq!(lb.lb.stats().outcome_count(Outcome::Hit), 99);
    assert_eq!(lb.lb.stats().outcome_count(Outcome::New), 301);
}

#[tokio::test]
async fn source_ip_affinity_pins_and_spreads() {
    let bs = three().await;
    let lb = TestLb::start(cfg(&bs, "source-ip")).await;
    let ip = |i: usize| format!("198.51.{}.{}", i / 250, i % 250 + 1);
    let counts = spread(3000, |i| get(&lb.url("/")).header("x-forwarded-for", ip(i))).await;
    assert_even(&counts, 3000);
    let mut c = Client::default();
    assert_pinned(&mut c, || {
        get(&lb.url("/")).header("x-forwarded-for", "203.0.113.77")
    })
    .await;
}

#[tokio::test]
async fn source_ip_ignores_forwarded_for_from_untrusted_peers() {
    let bs = three().await;
    let mut c = cfg(&bs, "source-ip");
    c.trusted_proxies.clear();
    let lb = TestLb::start(c).await;
    // Every spoofed address is ignored: all requests hash 127.0.0.1, so one backend serves all.
    let counts = spread(60, |i| {
        get(&lb.url("/")).header("x-forwarded-for", format!("10.0.0.{i}"))
    })
    .await;
    assert_eq!(counts.len(), 1, "{counts:?}");
}

#[tokio::test]
async fn header_affinity_pins_and_spreads() {
    let bs = three().await;
    let lb = TestLb::start(cfg(&bs, "header:X-Session-Id")).await;
    let counts = spread(3000, |i| {
        get(&lb.url("/")).header("x-session-id", format!("user-{i}"))
    })
    .await;
    assert_even(&counts, 3000);
    let mut c = Client::default();
    assert_pinned(&mut c, || get(&lb.url("/")).header("x-session-id", "alice")).await;
    // No header: balanced by policy.
    let counts = spread(300, |_| get(&lb.url("/"))).await;
    assert_eq!(
        counts.values().copied().collect::<Vec<_>>(),
        vec![100, 100, 100]
    );
}

#[tokio::test]
async fn query_affinity_pins_and_spreads() {
    let bs = three().await;
    let lb = TestLb::start(cfg(&bs, "query:sid")).await;
    let counts = spread(3000, |i| get(&lb.url(&format!("/cart?x=1&sid=s{i}")))).await;
    assert_even(&counts, 3000);
    let mut c = Client::default();
    assert_pinned(&mut c, || get(&lb.url("/cart?sid=bob&page=2"))).await;
}

#[tokio::test]
async fn app_cookie_affinity_learns_the_apps_session_cookie() {
    let bs = three().await;
    let lb = TestLb::start(cfg(&bs, "app-cookie:JSESSIONID")).await;
    // New clients (no JSESSIONID) are balanced by policy.
    let counts = spread(300, |_| get(&lb.url("/"))).await;
    assert_eq!(
        counts.values().copied().collect::<Vec<_>>(),
        vec![100, 100, 100]
    );
    // A client that got JSESSIONID from shop-k keeps going to shop-k (learned, not hashed).
    for _ in 0..3 {
        let mut c = Client::default();
        let r = send(&mut c, get(&lb.url("/"))).await;
        let issued_by = r.backend().to_owned();
        assert!(
            c.cookies
                .iter()
                .any(|(k, v)| k == "JSESSIONID" && v.starts_with(&issued_by))
        );
        let pinned = assert_pinned(&mut c, || get(&lb.url("/"))).await;
        assert_eq!(pinned, issued_by);
    }
    // Unknown values fall back to hashing: stable per value, spread across values.
    let counts = spread(3000, |i| {
        get(&lb.url("/")).header("cookie", format!("JSESSIONID=zz{i}"))
    })
    .await;
    assert_even(&counts, 3000);
}

#[tokio::test]
async fn no_affinity_spreads_every_request() {
    let bs = three().await;
    let lb = TestLb::start(cfg(&bs, "none")).await;
    let mut c = Client::default();
    let mut counts: HashMap<String, usize> = HashMap::new();
    for _ in 0..300 {
        *counts
            .entry(send(&mut c, get(&lb.url("/"))).await.backend().to_owned())
            .or_default() += 1;
    }
    assert_eq!(
        counts.values().copied().collect::<Vec<_>>(),
        vec![100, 100, 100]
    );
    assert!(c.cookies.iter().all(|(k, _)| k != "usher"));
    assert_eq!(lb.lb.stats().outcome_count(Outcome::Unpinned), 300);
}

// ---- the sealed-cookie spec ----

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn seal(ring: &KeyRing, backend: &str, issued: u64, idle_exp: u64, exp: u64) -> String {
    let claims = Claims {
        backend: backend.parse().unwrap(),
        issued_at: issued,
        idle_expires_at: idle_exp,
        expires_at: exp,
    };
    ring.seal(&claims, [9u8; usher_balancer::NONCE_LEN])
}

fn usher_cookie(r: &Reply) -> Option<String> {
    r.set_cookie("usher")
}

#[tokio::test]
async fn no_cookie_picks_and_sets_a_hardened_cookie() {
    let bs = three().await;
    let lb = TestLb::start(cfg(&bs, "cookie")).await;
    let r = send(&mut Client::default(), get(&lb.url("/"))).await;
    assert_eq!(r.status, StatusCode::OK);
    let sc = usher_cookie(&r).expect("Set-Cookie");
    for attr in ["HttpOnly", "SameSite=Lax", "Path=/", "Max-Age=86400"] {
        assert!(sc.contains(attr), "{attr} missing in {sc}");
    }
    assert!(!sc.contains("Secure"), "{sc}");
    assert!(
        !sc.contains("shop-"),
        "the cookie must not reveal the backend: {sc}"
    );
    // The cookie opens, with the LB's keys, to the backend that served.
    let token = sc.split(';').next().unwrap().trim_start_matches("usher=");
    let (claims, key_id) = test_keys().open(token, now()).unwrap();
    assert_eq!(claims.backend.as_str(), r.backend());
    assert_eq!(key_id, 7);
    assert_eq!(claims.expires_at - claims.issued_at, 86400);
}

#[tokio::test]
async fn cookie_attributes_follow_config() {
    let bs = three().await;
    let mut c = cfg(&bs, "cookie");
    c.cookie.secure = true;
    c.cookie.same_site = "strict".parse().unwrap();
    c.cookie.name = "lbid".into();
    c.cookie.max_age = std::time::Duration::from_secs(600);
    let lb = TestLb::start(c).await;
    let r = send(&mut Client::default(), get(&lb.url("/"))).await;
    let sc = r.set_cookie("lbid").expect("Set-Cookie");
    for attr in ["Secure", "SameSite=Strict", "Max-Age=600", "HttpOnly"] {
        assert!(sc.contains(attr), "{attr} missing in {sc}");
    }
}

#[tokio::test]
async fn valid_cookie_routes_without_set_cookie_and_never_reaches_the_backend() {
    let bs = three().await;
    let lb = TestLb::start(cfg(&bs, "cookie")).await;
    let token = seal(&test_keys(), "shop-2", now(), now() + 1800, now() + 86400);
    for _ in 0..20 {
        let r = send(
            &mut Client::default(),
            get(&lb.url("/")).header("cookie", format!("a=1; usher={token}; b=2")),
        )
        .await;
        assert_eq!(r.backend(), "shop-2");
        assert!(
            usher_cookie(&r).is_none(),
            "no Set-Cookie for a fresh valid binding"
        );
    }
    for seen in bs[2].seen() {
        let cookie = seen.headers["cookie"].to_str().unwrap().to_owned();
        assert_eq!(cookie, "a=1; b=2", "the affinity cookie must be stripped");
    }
    assert_eq!(lb.lb.stats().outcome_count(Outcome::Hit), 20);
}

#[tokio::test]
async fn idle_expiry_is_refreshed_when_half_spent() {
    let bs = three().await;
    let lb = TestLb::start(cfg(&bs, "cookie")).await;
    let (t, exp) = (now(), now() + 86400);
    let token = seal(&test_keys(), "shop-1", t - 3000, t + 60, exp);
    let r = send(
        &mut Client::default(),
        get(&lb.url("/")).header("cookie", format!("usher={token}")),
    )
    .await;
    assert_eq!(r.backend(), "shop-1");
    let sc = usher_cookie(&r).expect("refreshed cookie");
    let fresh = sc.split(';').next().unwrap().trim_start_matches("usher=");
    let (claims, _) = test_keys().open(fresh, now()).unwrap();
    assert_eq!(claims.backend.as_str(), "shop-1");
    assert_eq!(claims.issued_at, t - 3000, "issue time is kept");
    assert_eq!(claims.expires_at, exp, "absolute expiry is never extended");
    assert!(claims.idle_expires_at >= t + 1800 - 5);
    assert_eq!(lb.lb.stats().outcome_count(Outcome::Hit), 1);
}

#[tokio::test]
async fn forged_and_expired_cookies_are_ignored_and_reissued_never_trusted() {
    let bs = three().await;
    let lb = TestLb::start(cfg(&bs, "cookie")).await;
    let t = now();
    let good = seal(&test_keys(), "shop-2", t, t + 1800, t + 86400);
    let mut raw = URL_SAFE_NO_PAD.decode(&good).unwrap();
    let flip_at = raw.len() - 20;
    raw[flip_at] ^= 0x01;
    let bit_flipped = URL_SAFE_NO_PAD.encode(&raw);
    let other_secret = KeyRing::new(vec![AffinityKey::from_bytes(7, [1u8; 32])]).unwrap();
    let other_id = KeyRing::new(vec![AffinityKey::from_bytes(99, [42u8; 32])]).unwrap();
    let cases: Vec<(&str, String, Outcome)> = vec![
        ("bit-flipped", bit_flipped, Outcome::Invalid),
        (
            "re-encoded",
            URL_SAFE_NO_PAD.encode(b"shop-2"),
            Outcome::Invalid,
        ),
        ("plain backend name", "shop-2".into(), Outcome::Invalid),
        (
            "other key, same id",
            seal(&other_secret, "shop-2", t, t + 1800, t + 86400),
            Outcome::Invalid,
        ),
        (
            "unknown key id",
            seal(&other_id, "shop-2", t, t + 1800, t + 86400),
            Outcome::Invalid,
        ),
        (
            "expired",
            seal(&test_keys(), "shop-2", t - 90000, t - 10, t - 5),
            Outcome::Expired,
        ),
        (
            "idle-expired",
            seal(&test_keys(), "shop-2", t - 4000, t - 1, t + 80000),
            Outcome::Expired,
        ),
        ("garbage", "%%%;;".into(), Outcome::Invalid),
    ];
    for (name, token, outcome) in cases {
        let before = lb.lb.stats().outcome_count(outcome);
        let mut on_target = 0;
        for _ in 0..30 {
            let r = send(
                &mut Client::default(),
                get(&lb.url("/")).header("cookie", format!("usher={token}")),
            )
            .await;
            assert_eq!(r.status, StatusCode::OK, "{name}");
            let sc = usher_cookie(&r).unwrap_or_else(|| panic!("{name}: no fresh cookie"));
            let fresh = sc.split(';').next().unwrap().trim_start_matches("usher=");
            let (claims, _) = test_keys().open(fresh, now()).unwrap();
            assert_eq!(claims.backend.as_str(), r.backend(), "{name}");
            on_target += usize::from(r.backend() == "shop-2");
        }
        // Balanced by policy (round robin): a third, not all, land on the forged target.
        assert_eq!(on_target, 10, "{name}: forged cookie steered traffic");
        assert_eq!(lb.lb.stats().outcome_count(outcome) - before, 30, "{name}");
    }
    for b in &bs {
        for seen in b.seen() {
            let cookie = seen
                .headers
                .get("cookie")
                .map(|v| v.to_str().unwrap().to_owned());
            assert!(
                cookie.as_ref().is_none_or(|c| !c.contains("usher=")),
                "{cookie:?}"
            );
        }
    }
}

#[tokio::test]
async fn a_cookie_for_a_removed_backend_is_moved() {
    let bs = three().await;
    let lb = TestLb::start(cfg(&bs, "cookie")).await;
    let t = now();
    let token = seal(&test_keys(), "shop-9", t, t + 1800, t + 86400);
    let r = send(
        &mut Client::default(),
        get(&lb.url("/")).header("cookie", format!("usher={token}")),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(usher_cookie(&r).is_some());
    assert_eq!(lb.lb.stats().outcome_count(Outcome::Moved), 1);
}
