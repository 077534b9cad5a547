//! `usher up` end to end: the real binary starts shops and the balancer on free ports, the shop
//! answers through the balancer, the dashboard's JSON and control endpoints work (and refuse bad
//! input with JSON 4xx), SIGTERM leaves no child behind — and the dashboard page itself, driven in
//! a real headless Chromium over WebDriver, shows the shops and kills one on a click while a
//! signed-in user of `shared` keeps their cart.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../../usher-proxy/tests/support/mod.rs"]
mod support;
mod up_support;

use std::time::{Duration, Instant};

use http::{Method, StatusCode};
use serde_json::json;
use support::Client;
use up_support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_runs_a_live_system_with_working_controls() {
    let up = Up::start(&[]);
    let mut c = Client::default();
    let page = c.get(&up.shop("/")).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(served_by(&page).starts_with("shop-"), "{:?}", page.headers);

    let s = state(&up).await;
    assert_eq!(s["architecture"], "shared");
    assert_eq!(s["shop_url"], format!("http://{}/", up.listen));
    let ids: Vec<&str> = s["shops"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["shop-0", "shop-1", "shop-2"], "{s}");
    for sh in s["shops"].as_array().unwrap() {
        assert_eq!(sh["state"], "active", "{sh}");
        assert_eq!(sh["process"], "running", "{sh}");
    }
    assert_eq!(s["store"]["kind"], "sqlite");
    assert_eq!(s["store"]["restartable"], false);
    let r = send(&mut c, Method::POST, &up.dash("/api/store/restart"), None).await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    assert!(
        json_of(&r)["error"].as_str().unwrap().contains("SQLite"),
        "{}",
        r.body
    );
    assert_eq!(up.children("").len(), 3, "three shops");

    // Requests/s comes from counter deltas, one a second, kept for a minute: the burst shows up
    // in the history (the current rate alone may already be back to 0 on a busy machine).
    for _ in 0..30 {
        assert_eq!(c.get(&up.shop("/healthz")).await.status, StatusCode::OK);
    }
    state_until(&up, "a non-zero rate in the history", |s| {
        s["shops"].as_array().unwrap().iter().any(|sh| {
            let h = sh["history"].as_array().unwrap();
            h.iter().any(|r| r.as_f64().unwrap() > 0.0)
        })
    })
    .await;

    // Bad ids are JSON 4xx, never a panic.
    for (path, status) in [
        ("/api/shops/shop-x/kill", StatusCode::BAD_REQUEST),
        ("/api/shops/shop-01/kill", StatusCode::BAD_REQUEST),
        ("/api/shops/shop-99/kill", StatusCode::NOT_FOUND),
        ("/api/shops/%FF/drain", StatusCode::BAD_REQUEST),
        ("/api/shops/shop-42/drain", StatusCode::NOT_FOUND),
    ] {
        let r = send(&mut c, Method::POST, &up.dash(path), None).await;
        assert_eq!(r.status, status, "{path}: {}", r.body);
        assert!(json_of(&r)["error"].is_string(), "{path}: {}", r.body);
    }
    let bad = json!({ "deadline": "soon" });
    let r = send(
        &mut c,
        Method::POST,
        &up.dash("/api/shops/shop-0/drain"),
        Some(bad),
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.body);

    // Kill: the process dies at once; the balancer notices through its health checks.
    let r = send(
        &mut c,
        Method::POST,
        &up.dash("/api/shops/shop-1/kill"),
        None,
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert!(up.children("shop-1").is_empty(), "shop-1 still running");
    let r = send(
        &mut c,
        Method::POST,
        &up.dash("/api/shops/shop-1/kill"),
        None,
    )
    .await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.body);
    state_until(&up, "shop-1 down in the balancer", |s| {
        shop(s, "shop-1").is_some_and(|x| x["state"] == "killed" && x["lb_state"] == "down")
    })
    .await;
    for _ in 0..10 {
        let r = c.get(&up.shop("/healthz")).await;
        assert_eq!(r.status, StatusCode::OK);
        assert_ne!(served_by(&r), "shop-1");
    }

    // Add: the next ordinal, in the pool, answering.
    let r = send(&mut c, Method::POST, &up.dash("/api/shops"), None).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    assert_eq!(json_of(&r)["id"], "shop-3");
    state_until(&up, "shop-3 active", |s| {
        shop(s, "shop-3").is_some_and(|x| x["state"] == "active" && x["process"] == "running")
    })
    .await;
    // The admin API shares the listener and sees the same pool.
    let backends = json_of(&c.get(&format!("http://{}/backends", up.admin)).await);
    assert!(
        backends
            .as_array()
            .unwrap()
            .iter()
            .any(|b| b["id"] == "shop-3"),
        "{backends}"
    );
    let mut seen_new = false;
    for _ in 0..200 {
        let r = c.get(&up.shop("/healthz")).await;
        assert_eq!(r.status, StatusCode::OK);
        if served_by(&r) == "shop-3" {
            seen_new = true;
            break;
        }
    }
    assert!(seen_new, "the added shop never served a request");

    // Drain: draining at once, then out of the pool and its process stopped.
    let body = json!({ "deadline": "1s" });
    let r = send(
        &mut c,
        Method::POST,
        &up.dash("/api/shops/shop-0/drain"),
        Some(body),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(json_of(&r)["state"], "draining");
    state_until(&up, "shop-0 drained away", |s| shop(s, "shop-0").is_none()).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while !up.children("shop-0").is_empty() {
        assert!(
            Instant::now() < deadline,
            "the drained shop-0 was never stopped"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(up.children("").len(), 2, "shop-2 and shop-3 remain");

    up.stop_and_check_clean();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_private_redis_store_restarts_and_the_shops_carry_on() {
    let up = Up::start(&["--store", "redis", "--shops", "2"]);
    let s = state(&up).await;
    assert_eq!(s["store"]["kind"], "redis");
    assert_eq!(s["store"]["restartable"], true, "{s}");
    let url = s["store"]["url"].as_str().unwrap().to_owned();
    let port = url.strip_prefix("redis://127.0.0.1:").unwrap().to_owned();
    let redis_pids = || processes_mentioning("redis-server", &format!("127.0.0.1:{port}"));
    let before = redis_pids();
    assert_eq!(before.len(), 1, "one private redis-server on {port}");
    let mut c = Client::default();
    let r = send(&mut c, Method::POST, &up.dash("/api/store/restart"), None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(json_of(&r)["restarted"], true);
    assert_eq!(state(&up).await["store"]["restarts"], 1);
    let after = redis_pids();
    assert_eq!(after.len(), 1, "one redis-server after the restart");
    assert_ne!(before, after, "the restart started a new server");
    // The shops reconnect to the new server: a new user can sign up and in (bounded retries
    // while the connections come back).
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let mut user = Client::default();
        let creds = json!({ "user": "bob", "password": "pw" });
        let _ = send(
            &mut user,
            Method::POST,
            &up.shop("/api/signup"),
            Some(creds.clone()),
        )
        .await;
        let r = send(&mut user, Method::POST, &up.shop("/api/login"), Some(creds)).await;
        if r.status.is_success() && user.get(&up.shop("/api/me")).await.status.is_success() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the shops never came back after the store restart"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    up.stop_and_check_clean();
    assert!(
        redis_pids().is_empty(),
        "the private redis-server outlived usher up"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_in_headless_chromium_kills_a_shop_and_the_cart_survives() {
    let driver = Driver::start().await;
    let up = Up::start(&[]);
    let mut user = signed_in_user(&up).await;

    let b = driver.browser().await;
    b.goto(&up.dash("/")).await.unwrap();
    let rows = page_until("three active shops", || async {
        let rows = b
            .find_all(fantoccini::Locator::Css("#shops tr"))
            .await
            .ok()?;
        let mut states = Vec::new();
        for id in ["shop-0", "shop-1", "shop-2"] {
            states.push(row_text(&b, id, ".state").await?);
        }
        (rows.len() == 3 && states.iter().all(|s| s == "active")).then_some(rows.len())
    })
    .await;
    assert_eq!(rows, 3);
    let link = b.find(fantoccini::Locator::Id("shop-link")).await.unwrap();
    assert_eq!(
        link.attr("href").await.unwrap().as_deref(),
        Some(format!("http://{}/", up.listen).as_str())
    );
    // The chart draws one line per shop once the first rates are in.
    page_until("a chart line per shop", || async {
        let lines = b
            .find_all(fantoccini::Locator::Css("#chart polyline"))
            .await
            .ok()?;
        (lines.len() == 3).then_some(())
    })
    .await;
    // With SQLite there is no store server: the button says why it is disabled.
    let restart = b
        .find(fantoccini::Locator::Id("restart-store"))
        .await
        .unwrap();
    assert!(!restart.is_enabled().await.unwrap());
    let reason = b
        .find(fantoccini::Locator::Id("store-reason"))
        .await
        .unwrap();
    assert!(reason.text().await.unwrap().contains("SQLite"));

    let kill = b
        .find(fantoccini::Locator::Css(
            "button[data-action=\"kill\"][data-shop=\"shop-1\"]",
        ))
        .await
        .unwrap();
    assert_eq!(kill.text().await.unwrap(), "kill shop-1");
    kill.click().await.unwrap();
    page_until("shop-1 killed", || async {
        (row_text(&b, "shop-1", ".state").await? == "killed").then_some(())
    })
    .await;
    page_until("the balancer taking shop-1 down", || async {
        (row_text(&b, "shop-1", ".lb-state").await? == "balancer: down").then_some(())
    })
    .await;
    assert!(up.children("shop-1").is_empty(), "shop-1 still running");
    let kill = b
        .find(fantoccini::Locator::Css(
            "button[data-action=\"kill\"][data-shop=\"shop-1\"]",
        ))
        .await
        .unwrap();
    assert!(
        !kill.is_enabled().await.unwrap(),
        "a killed shop cannot be killed again"
    );

    // `shared` keeps sessions in the store: the user is still signed in with the same cart.
    cart_survives(&mut user, &up, "shop-1").await;

    b.close().await.unwrap();
    drop(driver);
    up.stop_and_check_clean();
}

#[test]
fn bad_flags_fail_with_a_clear_message() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken = taken.local_addr().unwrap().to_string();
    let cases: [(&[&str], &str); 5] = [
        (&["--architecture", "nope"], "rr-memory"),
        (&["--admin-listen", "0.0.0.0:0"], "loopback"),
        (
            &["--listen", &taken, "--admin-listen", "127.0.0.1:0"],
            "cannot listen",
        ),
        (&["--store", "mysql://x"], "expected sqlite"),
        (&["--shops", "0"], "--shops"),
    ];
    for (args, needle) in cases {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_usher"))
            .arg("up")
            .args(args)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} should fail");
        assert!(stderr.contains(needle), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
}
