//! The data plane without affinity: headers, bodies, limits, malformed input, shutdown.
#![allow(clippy::unwrap_used)]

mod support;

use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::Full;
use support::{Backend, Client, TestLb, config, raw_exchange};

#[tokio::test]
async fn forwards_and_sets_forwarding_headers_and_strips_hop_by_hop() {
    let b = Backend::start("shop-0").await;
    let lb = TestLb::start(config(&[&b])).await;
    let mut c = Client::default();
    let req = Request::get(lb.url("/path?q=1"))
        .header("host", "shop.example")
        .header("connection", "x-private")
        .header("x-private", "secret")
        .header("keep-alive", "timeout=5")
        .header("x-forwarded-for", "6.6.6.6")
        .header("x-request-id", "req-123")
        .body(Full::<Bytes>::default())
        .unwrap();
    let r = c.send(req).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body, "shop-0");
    assert_eq!(r.headers["x-request-id"], "req-123");

    let seen = b.seen();
    let h = &seen[0].headers;
    assert_eq!(seen[0].uri.path_and_query().unwrap().as_str(), "/path?q=1");
    assert_eq!(h["host"], "shop.example");
    assert!(h.get("x-private").is_none() && h.get("keep-alive").is_none());
    // Untrusted peer: its X-Forwarded-For is replaced, not extended.
    assert_eq!(h["x-forwarded-for"], "127.0.0.1");
    assert_eq!(h["x-forwarded-proto"], "http");
    assert_eq!(h["x-forwarded-host"], "shop.example");
    assert_eq!(
        h["forwarded"],
        "for=127.0.0.1;host=\"shop.example\";proto=http"
    );
    assert_eq!(h["x-request-id"], "req-123");
}

#[tokio::test]
async fn generates_a_request_id_when_missing() {
    let b = Backend::start("shop-0").await;
    let lb = TestLb::start(config(&[&b])).await;
    let r = Client::default().get(&lb.url("/")).await;
    let id = r.headers["x-request-id"].to_str().unwrap().to_owned();
    assert_eq!(id.len(), 32);
    assert_eq!(b.seen()[0].headers["x-request-id"], id.as_str());
}

#[tokio::test]
async fn streams_large_bodies_both_ways() {
    let b = Backend::start("shop-0").await;
    let lb = TestLb::start(config(&[&b])).await;
    // 4 MiB: well above the retry buffer, so it streams.
    let payload: Vec<u8> = (0..4 * 1024 * 1024).map(|i| (i % 251) as u8).collect();
    let mut s = tokio::net::TcpStream::connect(lb.addr).await.unwrap();
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let head = format!(
        "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        payload.len()
    );
    s.write_all(head.as_bytes()).await.unwrap();
    let writer = {
        let payload = payload.clone();
        let (mut rd, mut wr) = s.into_split();
        let w = tokio::spawn(async move {
            wr.write_all(&payload).await.unwrap();
            wr
        });
        let mut out = Vec::new();
        tokio::time::timeout(Duration::from_secs(20), rd.read_to_end(&mut out))
            .await
            .unwrap()
            .unwrap();
        (w, out)
    };
    let (_w, out) = writer;
    let split = out.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    let head = String::from_utf8_lossy(&out[..split]);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(&out[split..], &payload[..]);
}

#[tokio::test]
async fn chunked_uploads_are_forwarded() {
    let b = Backend::start("shop-0").await;
    let lb = TestLb::start(config(&[&b])).await;
    let out = raw_exchange(
        lb.addr,
        b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
        Duration::from_secs(5),
    )
    .await;
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    // Streamed through chunk by chunk (the backend echoes each frame as it arrives).
    assert!(
        out.contains("5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"),
        "{out}"
    );
}

#[tokio::test]
async fn oversized_headers_get_431() {
    let b = Backend::start("shop-0").await;
    let lb = TestLb::start(config(&[&b])).await;
    let big = "a".repeat(64 * 1024);
    let req = format!("GET / HTTP/1.1\r\nHost: x\r\nX-Big: {big}\r\n\r\n");
    let out = raw_exchange(lb.addr, req.as_bytes(), Duration::from_secs(5)).await;
    assert!(
        out.starts_with("HTTP/1.1 431"),
        "{}",
        &out[..out.len().min(200)]
    );
    assert_eq!(b.count(), 0);
}

#[tokio::test]
async fn smuggling_inputs_get_400() {
    let b = Backend::start("shop-0").await;
    let lb = TestLb::start(config(&[&b])).await;
    let cases: [&[u8]; 4] = [
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n0\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\nabcde",
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4, 5\r\n\r\nabcde",
    ];
    for case in cases {
        let out = raw_exchange(lb.addr, case, Duration::from_secs(5)).await;
        assert!(
            out.starts_with("HTTP/1.1 400"),
            "{:?} -> {out}",
            String::from_utf8_lossy(case)
        );
    }
    assert_eq!(b.count(), 0, "no smuggling attempt may reach a backend");
}

#[tokio::test]
async fn slow_header_clients_are_cut_off_at_the_header_timeout() {
    let b = Backend::start("shop-0").await;
    let mut cfg = config(&[&b]);
    cfg.limits.header_read_timeout = Duration::from_millis(500);
    cfg.limits.idle_timeout = Duration::from_secs(30);
    let lb = TestLb::start(cfg).await;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(lb.addr).await.unwrap();
    let start = Instant::now();
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n").await.unwrap();
    // Trickle one header byte at a time, never finishing the head.
    let mut closed_after = None;
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        if s.write_all(b"X").await.is_err() {
            closed_after = Some(start.elapsed());
            break;
        }
        let mut buf = [0u8; 64];
        if let Ok(Ok(0)) = tokio::time::timeout(Duration::from_millis(1), s.read(&mut buf)).await {
            closed_after = Some(start.elapsed());
            break;
        }
    }
    let t = closed_after.expect("slow client was never cut off");
    assert!(
        t >= Duration::from_millis(450) && t < Duration::from_millis(2500),
        "{t:?}"
    );
    assert_eq!(b.count(), 0);
}

#[tokio::test]
async fn idle_keep_alive_connections_are_closed_but_slow_backends_are_not_cut() {
    let b = Backend::start("shop-0").await;
    let mut cfg = config(&[&b]);
    cfg.limits.idle_timeout = Duration::from_millis(300);
    let lb = TestLb::start(cfg).await;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(lb.addr).await.unwrap();
    // A request slower than the idle timeout is not idle time.
    s.write_all(b"GET /slow?ms=600 HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    // Then, idle: closed within the timeout (plus slack).
    let start = Instant::now();
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(n, 0, "expected close");
    assert!(start.elapsed() < Duration::from_secs(2));
}

#[tokio::test]
async fn errors_never_name_a_backend() {
    let b = Backend::start("shop-0").await;
    let addr = b.addr;
    let lb = TestLb::start(config(&[&b])).await;
    b.kill();
    drop(b);
    let r = Client::default().get(&lb.url("/")).await;
    assert!(r.status.is_server_error(), "{}", r.status);
    assert!(
        !r.body.contains("shop-0") && !r.body.contains(&addr.to_string()),
        "{}",
        r.body
    );
    for v in r.headers.values() {
        let v = v.to_str().unwrap_or("");
        assert!(
            !v.contains("shop-0") && !v.contains(&addr.port().to_string()),
            "{v}"
        );
    }
}

#[tokio::test]
async fn graceful_shutdown_finishes_in_flight_requests_and_stops_accepting() {
    let b = Backend::start("shop-0").await;
    let mut lb = TestLb::start(config(&[&b])).await;
    let url = lb.url("/slow?ms=500");
    let inflight = tokio::spawn(async move { Client::default().get(&url).await });
    assert!(support::eventually(Duration::from_secs(5), || b.count() == 1).await);
    let stopped = lb.shutdown();
    let r = inflight.await.unwrap();
    assert_eq!(r.status, StatusCode::OK, "in-flight request must complete");
    tokio::time::timeout(Duration::from_secs(5), stopped)
        .await
        .unwrap()
        .unwrap();
    assert!(
        tokio::net::TcpStream::connect(lb.addr).await.is_err(),
        "still accepting"
    );
}
