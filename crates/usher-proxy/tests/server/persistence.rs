use crate::client::{Closed, Conn};
use crate::support::{Backend, TestLb, config};

#[tokio::test]
async fn expect_100_continue_gets_the_interim_answer_before_the_body_is_sent() {
    let b = Backend::start("e-0").await;
    let lb = TestLb::start(config(&[&b])).await;
    let mut c = Conn::open(lb.addr).await;
    let body = b"the body, sent only after 100";
    c.send(
        format!(
            "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\nExpect: 100-continue\r\n\r\n",
            body.len()
        )
        .as_bytes(),
    )
    .await;
    let r = c.response(false).await;
    assert_eq!(r.status, 100, "{r:?}");
    assert!(c.buf.is_empty(), "bytes behind the 100: {:?}", c.buf);
    c.send(body).await;
    let r = c.response(false).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.body, body);
    assert!(c.buf.is_empty(), "bytes behind the 200: {:?}", c.buf);
    // The connection carries on.
    c.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;
    let r = c.response(false).await;
    assert_eq!((r.status, r.text().as_str()), (200, "e-0"));
    assert_eq!(b.count(), 2);
}

#[tokio::test]
async fn an_http10_expectation_gets_no_interim_answer() {
    let b = Backend::start("e-1").await;
    let lb = TestLb::start(config(&[&b])).await;
    let mut c = Conn::open(lb.addr).await;
    // HTTP/1.0 has no 100 (RFC 9110 §10.1.1): the answer is the final one.
    c.send(
        b"POST /echo HTTP/1.0\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\nhello",
    )
    .await;
    let r = c.response(false).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.text(), "hello");
    c.closed().await;
}

#[tokio::test]
async fn http10_closes_unless_keep_alive_is_asked_for() {
    let b = Backend::start("h-0").await;
    let lb = TestLb::start(config(&[&b])).await;

    let mut c = Conn::open(lb.addr).await;
    c.send(b"GET /plain HTTP/1.0\r\nHost: x\r\n\r\n").await;
    let r = c.response(false).await;
    assert_eq!((r.status, r.text().as_str()), (200, "h-0"));
    assert_ne!(r.header("connection"), Some("keep-alive"), "{r:?}");
    assert_eq!(c.closed().await, Closed::Eof);

    let mut c = Conn::open(lb.addr).await;
    c.send(b"GET /kept-1 HTTP/1.0\r\nHost: x\r\nConnection: keep-alive\r\n\r\n")
        .await;
    let r = c.response(false).await;
    assert_eq!((r.status, r.text().as_str()), (200, "h-0"));
    assert_eq!(r.header("connection"), Some("keep-alive"), "{r:?}");
    // As ApacheBench writes it.
    c.send(b"GET /kept-2 HTTP/1.0\r\nHost: x\r\nConnection: Keep-Alive\r\n\r\n")
        .await;
    let r = c.response(false).await;
    assert_eq!((r.status, r.text().as_str()), (200, "h-0"));
    assert_eq!(r.header("connection"), Some("keep-alive"), "{r:?}");
    // A last HTTP/1.0 request without keep-alive ends it.
    c.send(b"GET /last HTTP/1.0\r\nHost: x\r\n\r\n").await;
    let r = c.response(false).await;
    assert_eq!(r.status, 200);
    assert_eq!(c.closed().await, Closed::Eof);

    let paths: Vec<String> = b.seen().iter().map(|s| s.uri.to_string()).collect();
    assert_eq!(paths, ["/plain", "/kept-1", "/kept-2", "/last"]);
}

#[tokio::test]
async fn an_http10_request_with_transfer_encoding_is_refused() {
    let b = Backend::start("h-1").await;
    let lb = TestLb::start(config(&[&b])).await;
    let mut c = Conn::open(lb.addr).await;
    // HTTP/1.0 has no chunked coding: RFC 9112 §6.1 has the server treat the framing as faulty
    // and close after the message (hyper answered 400), so nothing behind it may be served.
    c.send(
        b"POST /plain HTTP/1.0\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: keep-alive\r\n\r\n\
          5\r\nhello\r\n0\r\n\r\n\
          GET /behind HTTP/1.0\r\nHost: x\r\nConnection: keep-alive\r\n\r\n",
    )
    .await;
    let r = c.response(false).await;
    assert_eq!(r.status, 400, "{r:?}");
    assert_eq!(r.header("connection"), Some("close"), "{r:?}");
    c.closed().await;
    assert_eq!(b.count(), 0, "{:?}", b.seen());
}

#[tokio::test]
async fn connection_close_from_an_http11_client_is_honoured() {
    let b = Backend::start("c-0").await;
    let lb = TestLb::start(config(&[&b])).await;
    let mut c = Conn::open(lb.addr).await;
    // A request pipelined behind the close must not be served.
    c.send(
        b"GET /first HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n\
          GET /never HTTP/1.1\r\nHost: x\r\n\r\n",
    )
    .await;
    let r = c.response(false).await;
    assert_eq!((r.status, r.text().as_str()), (200, "c-0"));
    assert_eq!(r.header("connection"), Some("close"), "{r:?}");
    c.closed().await;
    let paths: Vec<String> = b.seen().iter().map(|s| s.uri.to_string()).collect();
    assert_eq!(paths, ["/first"]);
}
