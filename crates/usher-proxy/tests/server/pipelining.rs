use std::time::Duration;

use crate::client::Conn;
use crate::support::{Backend, TestLb, config};

#[tokio::test]
async fn pipelined_gets_in_one_write_are_answered_in_order() {
    let b = Backend::start("p-0").await;
    let lb = TestLb::start(config(&[&b])).await;
    let mut c = Conn::open(lb.addr).await;
    // The first is the slowest: answers must still come in request order.
    c.send(
        b"GET /slow?ms=200 HTTP/1.1\r\nHost: x\r\nX-Request-Id: pipe-1\r\n\r\n\
          GET /two HTTP/1.1\r\nHost: x\r\nX-Request-Id: pipe-2\r\n\r\n\
          GET /three HTTP/1.1\r\nHost: x\r\nX-Request-Id: pipe-3\r\n\r\n",
    )
    .await;
    for i in 1..=3 {
        let r = c.response(false).await;
        assert_eq!(r.status, 200, "response {i}: {r:?}");
        assert_eq!(r.text(), "p-0", "response {i}");
        assert_eq!(
            r.header("x-request-id"),
            Some(format!("pipe-{i}").as_str()),
            "response {i} out of order: {r:?}"
        );
        assert_ne!(r.header("connection"), Some("close"), "response {i}");
    }
    let paths: Vec<String> = b.seen().iter().map(|s| s.uri.to_string()).collect();
    assert_eq!(paths, ["/slow?ms=200", "/two", "/three"]);
    // The connection is still usable afterwards.
    c.send(b"GET /four HTTP/1.1\r\nHost: x\r\n\r\n").await;
    let r = c.response(false).await;
    assert_eq!((r.status, r.text().as_str()), (200, "p-0"));
    assert!(c.buf.is_empty());
}

#[tokio::test]
async fn a_pipelined_body_does_not_bleed_into_the_next_request() {
    let b = Backend::start("p-1").await;
    let lb = TestLb::start(config(&[&b])).await;
    let mut c = Conn::open(lb.addr).await;
    c.send(
        b"GET /one HTTP/1.1\r\nHost: x\r\n\r\n\
          POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 20\r\n\r\nGET /smuggled HTTP/1\
          GET /three HTTP/1.1\r\nHost: x\r\n\r\n",
    )
    .await;
    let r = c.response(false).await;
    assert_eq!((r.status, r.text().as_str()), (200, "p-1"));
    let r = c.response(false).await;
    assert_eq!((r.status, r.text().as_str()), (200, "GET /smuggled HTTP/1"));
    let r = c.response(false).await;
    assert_eq!((r.status, r.text().as_str()), (200, "p-1"));
    let paths: Vec<String> = b.seen().iter().map(|s| s.uri.to_string()).collect();
    assert_eq!(paths, ["/one", "/echo", "/three"]);
}

#[tokio::test]
async fn a_chunked_body_arriving_in_pieces_is_forwarded_whole() {
    let b = Backend::start("k-0").await;
    let lb = TestLb::start(config(&[&b])).await;
    let mut c = Conn::open(lb.addr).await;
    // Cut inside chunk data, after a chunk, inside a size line (`0b`) and before the last chunk.
    let pieces: [&[u8]; 5] = [
        b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"5\r\nhel",
        b"lo\r\n0",
        b"b\r\n, in pi",
        b"eces\r\n0\r\n\r\n",
    ];
    for (i, piece) in pieces.iter().enumerate() {
        if i > 0 {
            // The client's own pacing, not a wait for the server.
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        c.send(piece).await;
    }
    let r = c.response(false).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.text(), "hello, in pieces");
    // The body's end was found: the connection serves the next request.
    c.send(b"GET /next HTTP/1.1\r\nHost: x\r\n\r\n").await;
    let r = c.response(false).await;
    assert_eq!((r.status, r.text().as_str()), (200, "k-0"));
    let seen = b.seen();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[0].uri, "/echo");
    assert_eq!(seen[1].uri, "/next");
}

#[tokio::test]
async fn a_head_response_has_no_body_and_the_next_request_is_answered() {
    let b = Backend::start("hd-0").await;
    let lb = TestLb::start(config(&[&b])).await;
    let mut c = Conn::open(lb.addr).await;
    c.send(b"HEAD /page HTTP/1.1\r\nHost: x\r\n\r\nGET /after HTTP/1.1\r\nHost: x\r\n\r\n")
        .await;
    let r = c.response(true).await;
    assert_eq!(r.status, 200, "{r:?}");
    // The backend's length for the body a GET would get, passed through as it is.
    if let Some(len) = r.header("content-length") {
        assert_eq!(len, "hd-0".len().to_string(), "{r:?}");
    }
    assert_ne!(r.header("connection"), Some("close"), "{r:?}");
    // Read as a response of its own: a body byte behind the HEAD would break this parse.
    let r = c.response(false).await;
    assert_eq!((r.status, r.text().as_str()), (200, "hd-0"), "{r:?}");
    assert!(c.buf.is_empty(), "stray bytes: {:?}", c.buf);
    let seen = b.seen();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[0].method, http::Method::HEAD);
    assert_eq!(seen[1].method, http::Method::GET);
}
