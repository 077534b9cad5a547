//! Reload: a new configuration applied under load drops nothing; keys rotate; bad reloads are
//! refused and the running configuration stays.
#![allow(clippy::unwrap_used)]

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use http::StatusCode;
use support::{Backend, Client, TestLb, config};
use tokio_tungstenite::tungstenite::Message;
use usher_proxy::{LbConfig, Outcome};

fn with(bs: &[&Backend], edit: impl FnOnce(&mut LbConfig)) -> LbConfig {
    let mut c = config(bs);
    c.affinity = "cookie".parse().unwrap();
    edit(&mut c);
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_reloads_under_load_fail_no_request() {
    let bs = [
        Backend::start("shop-0").await,
        Backend::start("shop-1").await,
        Backend::start("shop-2").await,
        Backend::start("shop-3").await,
    ];
    let three = [&bs[0], &bs[1], &bs[2]];
    let four = [&bs[0], &bs[1], &bs[2], &bs[3]];
    let lb = TestLb::start(with(&three, |_| {})).await;
    let running = Arc::new(AtomicBool::new(true));
    let (ok, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let mut tasks = Vec::new();
    for i in 0..8 {
        let (url, running, ok, failed) = (
            lb.url(if i % 2 == 0 { "/" } else { "/slow?ms=20" }),
            Arc::clone(&running),
            Arc::clone(&ok),
            Arc::clone(&failed),
        );
        tasks.push(tokio::spawn(async move {
            // Half the tasks keep their cookie (bound clients), half are a new client each time.
            let fresh = i % 4 < 2;
            let mut c = Client::default();
            for _ in 0..5_000 {
                if !running.load(Ordering::Relaxed) {
                    break;
                }
                if fresh {
                    c.cookies.clear();
                }
                match c.try_get(&url).await {
                    Ok(r) if r.status == StatusCode::OK => ok.fetch_add(1, Ordering::Relaxed),
                    _ => failed.fetch_add(1, Ordering::Relaxed),
                };
            }
        }));
    }
    for round in 0..20 {
        tokio::time::sleep(Duration::from_millis(150)).await;
        let next = match round % 4 {
            0 => with(&four, |c| c.slow_start = Duration::ZERO),
            1 => with(&four, |c| {
                c.policy = usher_balancer::Policy::LeastConn;
                c.backends[0].weight = 3;
            }),
            2 => with(&three, |c| c.limits.idle_timeout = Duration::from_secs(5)),
            _ => with(&three, |c| c.policy = usher_balancer::Policy::P2c),
        };
        lb.lb.reload(next).unwrap();
    }
    running.store(false, Ordering::Relaxed);
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(
        failed.load(Ordering::Relaxed),
        0,
        "failed requests across 20 reloads"
    );
    assert!(
        ok.load(Ordering::Relaxed) > 200,
        "too little load: {}",
        ok.load(Ordering::Relaxed)
    );
    assert!(bs[3].count() > 0, "the backend added by reload served");
    assert_eq!(lb.lb.pool().snapshot().slots.len(), 3);
}

#[tokio::test]
async fn reloaded_keys_seal_new_cookies_and_old_ones_keep_opening() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("keys.txt");
    std::fs::write(&file, usher_proxy::generate_key(1).to_line() + "\n").unwrap();
    let b0 = Backend::start("shop-0").await;
    let b1 = Backend::start("shop-1").await;
    let cfg = with(&[&b0, &b1], |c| c.key_file = Some(file.clone()));
    let keys = usher_proxy::load_keys(Some(&file), true).unwrap();
    let lb = TestLb::start_with_keys(cfg.clone(), keys).await;
    let mut old_client = Client::default();
    let home = old_client.get(&lb.url("/")).await.backend().to_owned();
    // Rotate: the file now holds only key 2.
    std::fs::write(&file, usher_proxy::generate_key(2).to_line() + "\n").unwrap();
    lb.lb.reload(cfg).unwrap();
    for _ in 0..5 {
        let r = old_client.get(&lb.url("/")).await;
        assert_eq!(
            r.backend(),
            home,
            "a cookie sealed before the rotation still pins"
        );
        assert!(r.set_cookie("usher").is_none());
    }
    let a = lb.start_admin(None).await;
    let r = Client::default().get(&lb.url("/")).await;
    let pair = r
        .set_cookie("usher")
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    let req = http::Request::post(format!("http://{a}/affinity/explain"))
        .body(http_body_util::Full::new(bytes::Bytes::from(format!(
            "{{\"cookie\": \"{pair}\"}}"
        ))))
        .unwrap();
    let v: serde_json::Value =
        serde_json::from_str(&Client::default().send(req).await.body).unwrap();
    assert_eq!(v["key_id"], 2, "new cookies are sealed with the new key");
    assert_eq!(lb.lb.stats().outcome_count(Outcome::Invalid), 0);
}

#[tokio::test]
async fn a_bad_reload_is_refused_and_the_old_config_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("lb.toml");
    let b0 = Backend::start("shop-0").await;
    let lb = TestLb::start(with(&[&b0], |_| {})).await;
    let source = file.clone();
    lb.lb.set_reloader(Box::new(move || {
        usher_proxy::LbConfig::load(&source).map_err(|e| e.to_string())
    }));
    let a = lb.start_admin(None).await;
    let post = || {
        http::Request::post(format!("http://{a}/reload"))
            .body(http_body_util::Full::default())
            .unwrap()
    };

    std::fs::write(&file, "[[backend]]\nid = \"shop-0\"\naddr = \"nowhere\"\n").unwrap();
    let r = Client::default().send(post()).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(
        r.body.contains("addr") && r.body.contains("line 3"),
        "{}",
        r.body
    );
    assert_eq!(
        Client::default().get(&lb.url("/")).await.status,
        StatusCode::OK
    );

    // Switching TLS on needs a restart: refused, nothing changed.
    std::fs::write(&file, format!("[tls]\ncert = \"c.pem\"\nkey = \"k.pem\"\n[[backend]]\nid = \"shop-0\"\naddr = \"{}\"\n", b0.addr)).unwrap();
    let r = Client::default().send(post()).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.body.contains("restart"), "{}", r.body);
    assert!(!lb.lb.is_tls());

    // A good file applies and reports what needs a restart.
    std::fs::write(&file, format!("listen = \"127.0.0.1:1\"\npolicy = \"p2c\"\n[[backend]]\nid = \"shop-0\"\naddr = \"{}\"\n", b0.addr)).unwrap();
    let r = Client::default().send(post()).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(v["reloaded"], true);
    assert!(v["warnings"][0].as_str().unwrap().contains("listen"));
    assert_eq!(lb.lb.config().policy, usher_balancer::Policy::P2c);
    assert_eq!(
        Client::default().get(&lb.url("/")).await.status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn a_websocket_survives_a_reload() {
    let b0 = Backend::start("shop-0").await;
    let b1 = Backend::start("shop-1").await;
    let lb = TestLb::start(with(&[&b0, &b1], |_| {})).await;
    let url = format!("ws://{}/ws", lb.addr);
    let (mut ws, _) = tokio::time::timeout(
        Duration::from_secs(5),
        tokio_tungstenite::connect_async(url),
    )
    .await
    .unwrap()
    .unwrap();
    ws.send(Message::text("before")).await.unwrap();
    assert_eq!(ws.next().await.unwrap().unwrap(), Message::text("before"));
    for policy in [
        usher_balancer::Policy::LeastConn,
        usher_balancer::Policy::RoundRobin,
    ] {
        lb.lb
            .reload(with(&[&b0, &b1], |c| c.policy = policy))
            .unwrap();
    }
    ws.send(Message::text("after")).await.unwrap();
    let echoed = tokio::time::timeout(Duration::from_secs(5), ws.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(echoed, Message::text("after"));
}
