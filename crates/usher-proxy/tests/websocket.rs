//! WebSocket (HTTP/1.1 `Upgrade`) through the load balancer: echo with a real WebSocket client,
//! the same affinity decision as plain requests, pass-through of refused upgrades, and how drain,
//! removal, shutdown and the connection timers treat an open tunnel.
#![allow(clippy::unwrap_used)]

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::{Method, Request, StatusCode};
use http_body_util::Full;
use support::{Backend, Client, Reply, TestLb, config, eventually};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use usher_proxy::Outcome;

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;
type Handshake = tokio_tungstenite::tungstenite::handshake::client::Response;

/// Most the tunnel-closing tests wait beyond the expected instant (2 s jitter included).
const SLACK: Duration = Duration::from_millis(1500);

/// Opens a WebSocket to `/ws` on the load balancer with extra request headers.
async fn ws_connect(lb: SocketAddr, headers: &[(&str, &str)]) -> (Ws, Handshake) {
    let mut req = format!("ws://{lb}/ws").into_client_request().unwrap();
    for (k, v) in headers {
        req.headers_mut().insert(
            http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            http::HeaderValue::from_str(v).unwrap(),
        );
    }
    tokio::time::timeout(
        Duration::from_secs(10),
        tokio_tungstenite::connect_async(req),
    )
    .await
    .expect("handshake timed out")
    .expect("handshake failed")
}

fn header<'a>(res: &'a Handshake, name: &str) -> &'a str {
    res.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

fn usher_cookie(res: &Handshake) -> Option<String> {
    res.headers()
        .get_all(http::header::SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with("usher="))
        .map(|v| v.split(';').next().unwrap().to_owned())
}

/// Sends `msg` and waits (bounded) for its echo.
async fn try_echo(ws: &mut Ws, msg: Message) -> Result<(), String> {
    tokio::time::timeout(Duration::from_secs(5), async {
        ws.send(msg.clone()).await.map_err(|e| e.to_string())?;
        match ws.next().await {
            Some(Ok(m)) if m == msg => Ok(()),
            Some(Ok(other)) => Err(format!("unexpected message {other:?}")),
            Some(Err(e)) => Err(e.to_string()),
            None => Err("closed".to_owned()),
        }
    })
    .await
    .map_err(|_| "echo timed out".to_owned())?
}

/// Several text and binary messages, each echoed unchanged.
async fn echo_several(ws: &mut Ws) {
    for i in 0..4u8 {
        try_echo(ws, Message::text(format!("hello {i}")))
            .await
            .unwrap();
        let blob: Vec<u8> = (0..=255u8)
            .cycle()
            .skip(usize::from(i))
            .take(3000)
            .collect();
        try_echo(ws, Message::binary(blob)).await.unwrap();
    }
}

/// Waits (bounded) for the tunnel to be closed by the other end; returns when it was seen.
async fn wait_closed(ws: &mut Ws, limit: Duration) -> Option<Instant> {
    let res = tokio::time::timeout(limit, async {
        loop {
            match ws.next().await {
                None | Some(Err(_)) => return,
                Some(Ok(Message::Close(_))) => return,
                Some(Ok(_)) => {}
            }
        }
    })
    .await;
    res.ok().map(|()| Instant::now())
}

async fn admin(addr: SocketAddr, method: Method, path: &str, body: &str) -> Reply {
    let req = Request::builder()
        .method(method)
        .uri(format!("http://{addr}{path}"))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_owned())))
        .unwrap();
    Client::default().send(req).await
}

fn inflight(lb: &TestLb, id: &str) -> u64 {
    let snap = lb.lb.pool().snapshot();
    let slot = snap.slots.iter().find(|s| s.id.as_str() == id);
    slot.map_or(0, |s| s.inflight())
}

#[tokio::test]
async fn websocket_echo_through_the_lb_stays_on_one_backend() {
    let backends = [
        Backend::start("ws-0").await,
        Backend::start("ws-1").await,
        Backend::start("ws-2").await,
    ];
    let mut cfg = config(&backends.iter().collect::<Vec<_>>());
    cfg.affinity = "cookie".parse().unwrap();
    let lb = TestLb::start(cfg).await;
    let mut homes = Vec::new();
    for _ in 0..4 {
        let mut c = Client::default();
        let first = c.get(&lb.url("/")).await;
        let home = first.backend().to_owned();
        let set_cookie = first.set_cookie("usher").unwrap();
        let cookie = set_cookie.split(';').next().unwrap();
        let (mut ws, res) = ws_connect(lb.addr, &[("cookie", cookie)]).await;
        assert_eq!(res.status(), StatusCode::SWITCHING_PROTOCOLS);
        assert_eq!(
            header(&res, "x-backend"),
            home,
            "the WebSocket follows the cookie"
        );
        assert!(
            usher_cookie(&res).is_none(),
            "a bound client gets no new cookie"
        );
        echo_several(&mut ws).await;
        // Plain requests still go to the same backend while the tunnel is open.
        assert_eq!(c.get(&lb.url("/")).await.backend(), home);
        ws.close(None).await.unwrap();
        homes.push(home);
    }
    homes.sort();
    homes.dedup();
    assert!(
        homes.len() > 1,
        "clients were spread over backends: {homes:?}"
    );

    // The backend saw the upgrade headers, and not the load balancer's cookie.
    let seen: Vec<_> = backends
        .iter()
        .flat_map(|b| b.seen())
        .filter(|s| s.uri.path() == "/ws")
        .collect();
    assert_eq!(seen.len(), 4);
    for s in &seen {
        assert_eq!(s.headers["upgrade"], "websocket");
        assert_eq!(s.headers["connection"], "upgrade");
        assert!(s.headers.contains_key("sec-websocket-key"));
        let cookies = s
            .headers
            .get("cookie")
            .map(|v| v.to_str().unwrap().to_owned());
        assert!(!cookies.unwrap_or_default().contains("usher="));
    }
    assert_eq!(lb.lb.stats().outcome_count(Outcome::Hit), 8);
    // Plain requests never carry upgrade headers upstream.
    let plain = backends
        .iter()
        .flat_map(|b| b.seen())
        .filter(|s| s.uri.path() == "/");
    for s in plain {
        assert!(!s.headers.contains_key("upgrade"));
    }
    // Every tunnel was released from the in-flight count when it closed.
    assert!(
        eventually(Duration::from_secs(5), || {
            backends.iter().all(|b| inflight(&lb, &b.id) == 0)
        })
        .await
    );
}

#[tokio::test]
async fn header_affinity_puts_the_websocket_on_the_key_s_backend() {
    let backends = [
        Backend::start("h-0").await,
        Backend::start("h-1").await,
        Backend::start("h-2").await,
    ];
    let mut cfg = config(&backends.iter().collect::<Vec<_>>());
    cfg.affinity = "header:X-Session-Id".parse().unwrap();
    let lb = TestLb::start(cfg).await;
    for k in 0..6 {
        let key = format!("session-{k}");
        let req = Request::get(lb.url("/"))
            .header("x-session-id", &key)
            .body(Full::default())
            .unwrap();
        let home = Client::default().send(req).await.backend().to_owned();
        let (mut ws, res) = ws_connect(lb.addr, &[("x-session-id", &key)]).await;
        assert_eq!(header(&res, "x-backend"), home, "key {key}");
        echo_several(&mut ws).await;
        ws.close(None).await.unwrap();
    }
}

#[tokio::test]
async fn a_new_client_gets_its_affinity_cookie_on_the_101() {
    let (b0, b1) = (Backend::start("n-0").await, Backend::start("n-1").await);
    let mut cfg = config(&[&b0, &b1]);
    cfg.affinity = "cookie".parse().unwrap();
    let lb = TestLb::start(cfg).await;
    let (mut ws, res) = ws_connect(lb.addr, &[]).await;
    assert_eq!(res.status(), StatusCode::SWITCHING_PROTOCOLS);
    let cookie = usher_cookie(&res).expect("Set-Cookie on the 101");
    let home = header(&res, "x-backend").to_owned();
    assert!(!home.is_empty());
    assert_eq!(lb.lb.stats().outcome_count(Outcome::New), 1);
    try_echo(&mut ws, Message::text("hi")).await.unwrap();
    // The cookie from the 101 pins the client's plain requests to the WebSocket's backend.
    let mut c = Client::default();
    for _ in 0..4 {
        let req = Request::get(lb.url("/"))
            .header("cookie", &cookie)
            .body(Full::default())
            .unwrap();
        assert_eq!(c.send(req).await.backend(), home);
    }
    assert_eq!(lb.lb.stats().outcome_count(Outcome::Hit), 4);
}

/// Reads one response with a `Content-Length` body from a raw socket (bounded).
async fn read_response(s: &mut TcpStream) -> (String, String) {
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&buf[..end]).to_lowercase();
                let len: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .map_or(0, |v| v.trim().parse().unwrap());
                if buf.len() >= end + 4 + len {
                    let body = String::from_utf8_lossy(&buf[end + 4..end + 4 + len]).into_owned();
                    buf.drain(..end + 4 + len);
                    return (head, body);
                }
            }
            let mut chunk = [0u8; 4096];
            let n = s.read(&mut chunk).await.unwrap();
            assert!(n > 0, "connection closed mid-response");
            buf.extend_from_slice(&chunk[..n]);
        }
    })
    .await
    .expect("response timed out")
}

#[tokio::test]
async fn a_refused_upgrade_is_passed_through_and_the_connection_kept() {
    let b0 = Backend::start("r-0").await;
    let lb = TestLb::start(config(&[&b0])).await;
    let mut s = TcpStream::connect(lb.addr).await.unwrap();
    // `/` ignores the upgrade and answers 200: the client gets that answer as it is ...
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n")
        .await
        .unwrap();
    let (head, body) = read_response(&mut s).await;
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert_eq!(body, "r-0");
    // ... and the same connection serves the next request as plain HTTP.
    s.write_all(b"GET /again HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let (head, body) = read_response(&mut s).await;
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert_eq!(body, "r-0");
    let seen = b0.seen();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[0].headers["upgrade"], "websocket");
    assert!(!seen[1].headers.contains_key("upgrade"));
    assert_eq!(inflight(&lb, "r-0"), 0);

    // A WebSocket handshake to a path that does not upgrade gets the plain answer.
    let mut req = format!("ws://{}/nope", lb.addr)
        .into_client_request()
        .unwrap();
    req.headers_mut()
        .insert("x-test", http::HeaderValue::from_static("1"));
    match tokio_tungstenite::connect_async(req).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(res)) => {
            assert_eq!(res.status(), StatusCode::OK);
        }
        other => panic!("expected the backend's 200, got {other:?}"),
    }
}

#[tokio::test]
async fn keep_alive_connections_work_as_before() {
    let b0 = Backend::start("k-0").await;
    let lb = TestLb::start(config(&[&b0])).await;
    let mut s = TcpStream::connect(lb.addr).await.unwrap();
    for i in 0..3 {
        s.write_all(format!("GET /{i} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
            .await
            .unwrap();
        let (head, body) = read_response(&mut s).await;
        assert!(head.starts_with("http/1.1 200"), "{head}");
        assert!(!head.contains("upgrade"), "{head}");
        assert_eq!(body, "k-0");
    }
}

#[tokio::test]
async fn draining_keeps_a_tunnel_until_the_deadline_then_closes_it() {
    let (b0, b1) = (Backend::start("d-0").await, Backend::start("d-1").await);
    let mut cfg = config(&[&b0, &b1]);
    cfg.affinity = "cookie".parse().unwrap();
    let lb = TestLb::start(cfg).await;
    let a = lb.start_admin(None).await;
    let (mut ws, res) = ws_connect(lb.addr, &[]).await;
    let home = header(&res, "x-backend").to_owned();
    assert_eq!(
        inflight(&lb, &home),
        1,
        "the open tunnel counts as in flight"
    );

    let deadline = Duration::from_secs(2);
    let t0 = Instant::now();
    let r = admin(
        a,
        Method::POST,
        &format!("/backends/{home}/drain"),
        "{\"deadline\": \"2s\"}",
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    // Before the deadline the tunnel keeps working.
    let mut last_ok = None;
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    let closed_at = loop {
        tick.tick().await;
        assert!(
            t0.elapsed() < deadline + CLOSE_JITTER + SLACK,
            "tunnel still open"
        );
        match try_echo(&mut ws, Message::text("still there?")).await {
            Ok(()) => last_ok = Some(t0.elapsed()),
            Err(_) => break t0.elapsed(),
        }
    };
    assert!(
        closed_at >= deadline - Duration::from_millis(20),
        "closed at {closed_at:?}, before the deadline"
    );
    assert!(
        closed_at <= deadline + CLOSE_JITTER + SLACK,
        "closed at {closed_at:?}"
    );
    let last_ok = last_ok.unwrap();
    assert!(
        last_ok >= deadline - Duration::from_millis(500),
        "worked until shortly before the deadline: last echo at {last_ok:?}"
    );
    assert!(eventually(Duration::from_secs(5), || inflight(&lb, &home) == 0).await);
}

const CLOSE_JITTER: Duration = Duration::from_secs(2);

#[tokio::test]
async fn removing_a_backend_closes_its_tunnels_within_the_jitter() {
    let (b0, b1) = (Backend::start("x-0").await, Backend::start("x-1").await);
    let lb = TestLb::start(config(&[&b0, &b1])).await;
    let a = lb.start_admin(None).await;
    let mut tunnels = Vec::new();
    for _ in 0..4 {
        let (mut ws, res) = ws_connect(lb.addr, &[]).await;
        try_echo(&mut ws, Message::text("ping")).await.unwrap();
        tunnels.push((header(&res, "x-backend").to_owned(), ws));
    }
    assert!(tunnels.iter().any(|(home, _)| home == "x-0"));
    let t0 = Instant::now();
    let r = admin(a, Method::DELETE, "/backends/x-0", "").await;
    assert!(r.status.is_success(), "{}", r.body);
    for (home, mut ws) in tunnels {
        if home == "x-0" {
            let left = (CLOSE_JITTER + SLACK).saturating_sub(t0.elapsed());
            assert!(
                wait_closed(&mut ws, left).await.is_some(),
                "tunnel to a removed backend stays open"
            );
        } else {
            try_echo(&mut ws, Message::text("unaffected"))
                .await
                .unwrap();
        }
    }
}

#[tokio::test]
async fn shutdown_closes_tunnels_after_the_grace() {
    let b0 = Backend::start("s-0").await;
    let mut cfg = config(&[&b0]);
    cfg.limits.shutdown_grace = Duration::from_secs(1);
    let mut lb = TestLb::start(cfg).await;
    let (mut ws, _) = ws_connect(lb.addr, &[]).await;
    try_echo(&mut ws, Message::text("before")).await.unwrap();
    let t0 = Instant::now();
    let server = lb.shutdown();
    // Within the grace the tunnel still works; then it is closed and the server stops.
    try_echo(&mut ws, Message::text("during the grace"))
        .await
        .unwrap();
    let closed = wait_closed(&mut ws, Duration::from_secs(1) + SLACK).await;
    let closed = closed.expect("tunnel still open after the grace");
    assert!(
        closed - t0 >= Duration::from_millis(950),
        "closed {:?} after shutdown began, before the grace ended",
        closed - t0
    );
    tokio::time::timeout(SLACK, server).await.unwrap().unwrap();
}

#[tokio::test]
async fn a_tunnel_outlives_the_idle_and_header_timers() {
    let b0 = Backend::start("t-0").await;
    let mut cfg = config(&[&b0]);
    cfg.limits.idle_timeout = Duration::from_millis(200);
    cfg.limits.header_read_timeout = Duration::from_millis(200);
    let lb = TestLb::start(cfg).await;
    let (mut ws, _) = ws_connect(lb.addr, &[]).await;
    try_echo(&mut ws, Message::text("first")).await.unwrap();
    // Quiet for well past both timers: a plain keep-alive connection would be closed by now.
    tokio::time::sleep(Duration::from_millis(700)).await;
    try_echo(&mut ws, Message::text("after the idle timeout"))
        .await
        .unwrap();
    // Bytes after the quiet spell start no header timer either.
    tokio::time::sleep(Duration::from_millis(500)).await;
    echo_several(&mut ws).await;
    // Closing handshake, then the client drops its socket: the tunnel ends and is released.
    ws.close(None).await.unwrap();
    assert!(wait_closed(&mut ws, Duration::from_secs(5)).await.is_some());
    drop(ws);
    assert!(eventually(Duration::from_secs(5), || inflight(&lb, "t-0") == 0).await);
}
