use std::time::Instant;

use tokio::io::AsyncWriteExt;

use crate::client::{Conn, WAIT, lb_without_backends};
use crate::support::{Backend, TestLb, config};

#[tokio::test]
async fn connect_gets_501_and_never_reaches_a_backend() {
    let b = Backend::start("n-0").await;
    let lb = TestLb::start(config(&[&b])).await;
    let mut c = Conn::open(lb.addr).await;
    c.send(b"CONNECT shop.example:443 HTTP/1.1\r\nHost: shop.example:443\r\n\r\n")
        .await;
    let r = c.response(false).await;
    assert_eq!(r.status, 501, "{r:?}");
    assert_eq!(r.header("connection"), Some("close"), "{r:?}");
    c.closed().await;
    assert_eq!(b.count(), 0);
}

#[tokio::test]
async fn junk_and_non_http1_input_gets_400_and_never_reaches_a_backend() {
    let b = Backend::start("j-0").await;
    let lb = TestLb::start(config(&[&b])).await;
    let cases: [&[u8]; 8] = [
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost : x\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\rX-Bare-Cr: 1\r\n\r\n",
        b"GET /a b HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\nBad Name: 1\r\n\r\n",
        b"GET / HTTP/2.0\r\nHost: x\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 12abc\r\n\r\n",
        // The start of a TLS ClientHello on the plain listener.
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
    ];
    for case in cases {
        let what = String::from_utf8_lossy(case).into_owned();
        let mut c = Conn::open(lb.addr).await;
        c.send(case).await;
        let r = c.response(false).await;
        assert_eq!(r.status, 400, "{what:?}: {r:?}");
        assert_eq!(r.header("connection"), Some("close"), "{what:?}: {r:?}");
        c.closed().await;
    }
    assert_eq!(b.count(), 0, "junk reached the backend: {:?}", b.seen());

    // Junk behind a good request: the good one is served, then the junk refused.
    let mut c = Conn::open(lb.addr).await;
    c.send(b"GET /good HTTP/1.1\r\nHost: x\r\n\r\nPRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        .await;
    let r = c.response(false).await;
    assert_eq!((r.status, r.text().as_str()), (200, "j-0"));
    let r = c.response(false).await;
    assert_eq!(r.status, 400, "{r:?}");
    c.closed().await;
    assert_eq!(b.count(), 1);
}

#[tokio::test]
async fn an_unread_body_is_answered_and_the_connection_closed() {
    let lb = lb_without_backends().await;
    let mut c = Conn::open(lb.addr).await;
    let start = Instant::now();
    // Only the head and a sliver of the announced 100 000 bytes: the answer must not wait for
    // the rest, which nobody reads.
    let mut req = b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n".to_vec();
    req.extend_from_slice(&[b'a'; 1000]);
    c.send(&req).await;
    let r = c.response(false).await;
    assert!(r.status == 502 || r.status == 503, "{r:?}");
    assert_eq!(r.header("connection"), Some("close"), "{r:?}");
    c.closed().await;
    assert!(start.elapsed() < WAIT, "{:?}", start.elapsed());
    // The load balancer still answers new connections.
    let mut c = Conn::open(lb.addr).await;
    c.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;
    let r = c.response(false).await;
    assert!(r.status == 502 || r.status == 503, "{r:?}");
}

#[tokio::test]
async fn an_unread_body_sent_whole_still_gets_its_answer() {
    let lb = lb_without_backends().await;
    let mut c = Conn::open(lb.addr).await;
    let mut req = b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n".to_vec();
    req.extend_from_slice(&[b'a'; 100_000]);
    let mut wr = c.wr.take().unwrap();
    // The whole body goes out while the answer is read; the load balancer may close first.
    let writer = tokio::spawn(async move {
        let _ = tokio::time::timeout(WAIT, wr.write_all(&req)).await;
        wr
    });
    let r = c.response(false).await;
    assert!(r.status == 502 || r.status == 503, "{r:?}");
    assert_eq!(r.header("connection"), Some("close"), "{r:?}");
    c.closed().await;
    drop(
        tokio::time::timeout(WAIT, writer)
            .await
            .expect("writer hung"),
    );
}
