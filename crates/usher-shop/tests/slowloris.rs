//! The shop's header-read timeout: a client that never finishes its request head (or trickles it
//! one byte at a time) is disconnected after `header_read_timeout`, while normal requests on new
//! connections are served.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use http::StatusCode;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use usher_shop::{DbSpec, PasswordCost, SessionsSpec, Shop, ShopConfig};

use support::TestShop;

/// The timeout the tests configure.
const TIMEOUT: Duration = Duration::from_millis(300);
/// How long after the timeout the server may take to close.
const SLACK: Duration = Duration::from_secs(2);

fn config(db: &std::path::Path, timeout: Duration) -> ShopConfig {
    let mut c = ShopConfig::new(
        "shop-s",
        SessionsSpec::Memory,
        DbSpec::Sqlite(db.to_owned()),
    );
    c.password_cost = PasswordCost::LOW;
    c.header_read_timeout = timeout;
    c
}

/// Reads until the server closes the connection (EOF or reset) or `deadline`; while waiting,
/// sends one more byte of `trickle` every 100 ms (if any). Returns when the connection ended,
/// or `None` if it was still open at the deadline.
async fn wait_closed(stream: &mut TcpStream, trickle: &[u8], deadline: Instant) -> Option<Instant> {
    let mut buf = [0u8; 1024];
    let mut next = trickle.iter();
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    loop {
        let left = deadline.checked_duration_since(Instant::now())?;
        tokio::select! {
            read = tokio::time::timeout(left, stream.read(&mut buf)) => match read {
                Err(_) => return None,
                Ok(Ok(0) | Err(_)) => return Some(Instant::now()),
                // A response (e.g. 408) before the close is allowed; keep reading.
                Ok(Ok(_)) => {}
            },
            _ = tick.tick() => {
                if let Some(b) = next.next()
                    && stream.write_all(&[*b]).await.is_err()
                {
                    return Some(Instant::now());
                }
            }
        }
    }
}

async fn connect(addr: SocketAddr) -> TcpStream {
    tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(addr))
        .await
        .expect("connect timed out")
        .expect("connect failed")
}

#[tokio::test]
async fn an_incomplete_head_is_cut_off_and_others_are_served() {
    let dir = tempfile::tempdir().unwrap();
    let shop = TestShop::start_with(config(&dir.path().join("shop.db"), TIMEOUT)).await;

    // A head that stops half-way.
    let mut stalled = connect(shop.addr).await;
    stalled
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: shop\r\n")
        .await
        .unwrap();
    let start = Instant::now();
    let closed = wait_closed(&mut stalled, &[], start + TIMEOUT + SLACK)
        .await
        .expect("a stalled head must be cut off within the timeout + 2 s");
    assert!(
        closed.duration_since(start) >= TIMEOUT - Duration::from_millis(50),
        "closed after {:?}, before the timeout",
        closed.duration_since(start)
    );

    // Slowloris: a byte every 100 ms keeps the connection busy but does not extend the deadline.
    let mut trickling = connect(shop.addr).await;
    let start = Instant::now();
    let head =
        b"GET /healthz HTTP/1.1\r\nHost: shop\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    wait_closed(&mut trickling, head, start + TIMEOUT + SLACK)
        .await
        .expect("a trickled head must be cut off within the timeout + 2 s");

    // A normal request on a fresh connection still works.
    let r = shop.client().get("/healthz").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.json()["status"], "ok");
    shop.stop().await;
}

#[tokio::test]
async fn a_whole_request_is_answered_then_an_idle_connection_is_closed() {
    let dir = tempfile::tempdir().unwrap();
    let shop = TestShop::start_with(config(&dir.path().join("shop.db"), TIMEOUT)).await;
    let mut conn = connect(shop.addr).await;
    conn.write_all(b"GET /healthz HTTP/1.1\r\nHost: shop\r\n\r\n")
        .await
        .unwrap();
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut buf = [0u8; 1024];
    while !String::from_utf8_lossy(&got).contains("\"status\":\"ok\"") {
        let left = deadline
            .checked_duration_since(Instant::now())
            .expect("no answer within 10 s");
        let n = tokio::time::timeout(left, conn.read(&mut buf))
            .await
            .expect("no answer within 10 s")
            .unwrap();
        assert!(
            n > 0,
            "closed before answering: {:?}",
            String::from_utf8_lossy(&got)
        );
        got.extend_from_slice(&buf[..n]);
    }
    assert!(
        got.starts_with(b"HTTP/1.1 200"),
        "{:?}",
        String::from_utf8_lossy(&got)
    );
    // hyper starts the header clock as soon as it waits for the next head, so a keep-alive
    // connection left idle is closed after the same timeout.
    let start = Instant::now();
    wait_closed(&mut conn, &[], start + TIMEOUT + SLACK)
        .await
        .expect("an idle keep-alive connection is closed after the timeout");
    shop.stop().await;
}

#[tokio::test]
async fn a_zero_timeout_is_refused_naming_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let e = Shop::open(config(&dir.path().join("shop.db"), Duration::ZERO))
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("header-read-timeout"), "{e}");
}

/// Serving on hyper's builder keeps `axum::serve`'s shutdown: a request being served when
/// shutdown begins still gets its answer.
#[tokio::test]
async fn shutdown_lets_an_in_flight_request_finish() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(&dir.path().join("shop.db"), Duration::from_secs(10));
    c.test_checkout_delay = Duration::from_secs(1);
    let shop = TestShop::start_with(c).await;
    let mut alice = shop.client();
    alice.sign_in("alice", "pw-alice-1", true).await;

    // Two checkouts with one key: when one is refused as `idempotency_key_in_flight`, the other
    // is being served (sleeping in the handler). Stop the shop then: it must still answer. Each
    // round first puts something in the (emptied) cart.
    for _ in 0..5 {
        let r = alice
            .post(
                "/api/cart/items",
                serde_json::json!({"sku": "mug", "qty": 1}),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text());
        let key = support::new_key();
        let spawn = || {
            let (mut client, key) = (alice.clone(), key.clone());
            tokio::spawn(async move { client.checkout_with(&key).await })
        };
        let (mut a, mut b) = (spawn(), spawn());
        let (refused, holder) = tokio::select! {
            r = &mut a => (r.unwrap(), b),
            r = &mut b => (r.unwrap(), a),
        };
        if refused.status == StatusCode::CONFLICT
            && refused.text().contains("idempotency_key_in_flight")
        {
            shop.stop().await;
            let r = holder.await.expect("the in-flight checkout was answered");
            assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
            return;
        }
        holder.await.unwrap();
    }
    panic!("never found a checkout in flight");
}
