//! The hand-written client-facing HTTP/1.1 server (`src/server/`) over real sockets, for what
//! the other suites do not reach: pipelined requests answered in order, `Expect: 100-continue`,
//! HTTP/1.0 and `Connection: close` persistence, refused heads (`CONNECT`, non-HTTP/1 junk)
//! that never reach a backend, a chunked body arriving in pieces, the `Date` field, `HEAD`
//! framing, and the close after a request body that nobody read.
#![allow(clippy::unwrap_used)]

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime};

use support::{Backend, TestLb, config};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

/// Longest any single wait on the load balancer may take.
const WAIT: Duration = Duration::from_secs(10);
/// How soon the load balancer must close a connection it is done with.
const CLOSE_WITHIN: Duration = Duration::from_secs(5);
/// Most reads spent on one response (each is also bounded by [`WAIT`] overall).
const MAX_READS: usize = 10_000;

/// One response as read off the wire.
#[derive(Debug)]
struct Res {
    status: u16,
    /// Lower-cased names and trimmed values, in wire order.
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Res {
    /// The first value of `name`.
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// Every value of `name`.
    fn all(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Decodes a chunked body at the start of `buf`: the data and the bytes used, or `None` when
/// it is not complete yet.
fn dechunk(buf: &[u8]) -> Option<(Vec<u8>, usize)> {
    let mut body = Vec::new();
    let mut at = 0;
    loop {
        let line_end = at + buf[at..].windows(2).position(|w| w == b"\r\n")?;
        let line = std::str::from_utf8(&buf[at..line_end]).expect("chunk size line not ASCII");
        let size_text = line.split(';').next().unwrap().trim();
        let size = usize::from_str_radix(size_text, 16)
            .unwrap_or_else(|_| panic!("bad chunk size line {line:?}"));
        at = line_end + 2;
        if size == 0 {
            // Trailer fields (if any) up to the empty line.
            loop {
                let end = at + buf[at..].windows(2).position(|w| w == b"\r\n")?;
                let empty = end == at;
                at = end + 2;
                if empty {
                    return Some((body, at));
                }
            }
        }
        if buf.len() < at + size + 2 {
            return None;
        }
        body.extend_from_slice(&buf[at..at + size]);
        assert_eq!(
            &buf[at + size..at + size + 2],
            b"\r\n",
            "chunk not ended by CRLF"
        );
        at += size + 2;
    }
}

/// Parses one response at the start of `buf`: the response and the bytes it used, or `None`
/// when it is not complete yet. `head_request`: no body follows, whatever the fields say;
/// `eof`: the connection has closed behind `buf`.
fn parse_response(buf: &[u8], head_request: bool, eof: bool) -> Option<(Res, usize)> {
    let end = buf.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let head = std::str::from_utf8(&buf[..end - 4]).expect("response head not ASCII");
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap();
    assert!(
        status_line.starts_with("HTTP/1.1 ") && status_line.len() >= 12,
        "bad status line {status_line:?}"
    );
    let status: u16 = status_line[9..12].parse().unwrap();
    let headers = lines
        .map(|l| {
            let (n, v) = l
                .split_once(':')
                .unwrap_or_else(|| panic!("field without a colon: {l:?}"));
            (n.to_ascii_lowercase(), v.trim().to_owned())
        })
        .collect();
    let mut res = Res {
        status,
        headers,
        body: Vec::new(),
    };
    if head_request || (100..200).contains(&status) || status == 204 || status == 304 {
        return Some((res, end));
    }
    if res
        .header("transfer-encoding")
        .is_some_and(|v| v.eq_ignore_ascii_case("chunked"))
    {
        let (body, used) = dechunk(&buf[end..])?;
        res.body = body;
        return Some((res, end + used));
    }
    let Some(len) = res.header("content-length") else {
        // Delimited by the close (an HTTP/1.0 client, a length not known in advance).
        if !eof {
            return None;
        }
        res.body = buf[end..].to_vec();
        return Some((res, buf.len()));
    };
    let len: usize = len.parse().unwrap();
    if buf.len() < end + len {
        return None;
    }
    res.body = buf[end..end + len].to_vec();
    Some((res, end + len))
}

/// How the load balancer ended a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Closed {
    /// An orderly close (FIN).
    Eof,
    /// A reset (the load balancer closed with bytes of ours unread).
    Reset,
}

/// A raw client connection to the load balancer with its own read buffer.
struct Conn {
    rd: OwnedReadHalf,
    wr: Option<OwnedWriteHalf>,
    buf: Vec<u8>,
    /// The load balancer has closed the connection (read returned 0).
    eof: bool,
}

impl Conn {
    async fn open(addr: SocketAddr) -> Self {
        let s = tokio::time::timeout(WAIT, TcpStream::connect(addr))
            .await
            .expect("connect timed out")
            .expect("connect failed");
        s.set_nodelay(true).unwrap();
        let (rd, wr) = s.into_split();
        Self {
            rd,
            wr: Some(wr),
            buf: Vec::new(),
            eof: false,
        }
    }

    /// Writes `bytes` in one write call.
    async fn send(&mut self, bytes: &[u8]) {
        let wr = self.wr.as_mut().expect("write half handed away");
        tokio::time::timeout(WAIT, wr.write_all(bytes))
            .await
            .expect("write timed out")
            .expect("write failed");
    }

    /// Reads the next whole response (bounded by [`WAIT`]).
    async fn response(&mut self, head_request: bool) -> Res {
        let read = async {
            for _ in 0..MAX_READS {
                if let Some((res, used)) = parse_response(&self.buf, head_request, self.eof) {
                    self.buf.drain(..used);
                    return res;
                }
                assert!(
                    !self.eof,
                    "closed before a whole response; buffered: {:?}",
                    String::from_utf8_lossy(&self.buf)
                );
                let mut chunk = [0u8; 16 * 1024];
                let n = self.rd.read(&mut chunk).await.unwrap_or_else(|e| {
                    panic!(
                        "read failed ({e}) with {:?} buffered",
                        String::from_utf8_lossy(&self.buf)
                    )
                });
                self.eof = n == 0;
                self.buf.extend_from_slice(&chunk[..n]);
            }
            panic!("no whole response after {MAX_READS} reads");
        };
        tokio::time::timeout(WAIT, read)
            .await
            .expect("no whole response in time")
    }

    /// Waits for the load balancer to close the connection, with no byte beyond the responses
    /// already read; panics if it stays open for [`CLOSE_WITHIN`].
    async fn closed(&mut self) -> Closed {
        assert!(
            self.buf.is_empty(),
            "stray bytes after the last response: {:?}",
            String::from_utf8_lossy(&self.buf)
        );
        if self.eof {
            return Closed::Eof;
        }
        let mut chunk = [0u8; 4096];
        match tokio::time::timeout(CLOSE_WITHIN, self.rd.read(&mut chunk)).await {
            Err(_) => panic!("the connection was not closed within {CLOSE_WITHIN:?}"),
            Ok(Ok(0)) => Closed::Eof,
            Ok(Ok(n)) => panic!(
                "stray bytes instead of a close: {:?}",
                String::from_utf8_lossy(&chunk[..n])
            ),
            Ok(Err(_)) => Closed::Reset,
        }
    }
}

/// A load balancer whose only backend is gone: its port refuses connections.
async fn lb_without_backends() -> TestLb {
    let b = Backend::start("gone-0").await;
    let (cfg, addr) = (config(&[&b]), b.addr);
    b.kill();
    drop(b);
    let start = Instant::now();
    let mut refused = false;
    for _ in 0..500 {
        if start.elapsed() > WAIT {
            break;
        }
        match tokio::time::timeout(Duration::from_secs(1), TcpStream::connect(addr)).await {
            Ok(Err(_)) => {
                refused = true;
                break;
            }
            _ => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    }
    assert!(refused, "the killed backend's port still accepts");
    TestLb::start(cfg).await
}

/// Asserts `res` carries exactly one `Date`, an IMF-fixdate close to now.
fn assert_dated(res: &Res, what: &str) {
    let dates = res.all("date");
    assert_eq!(
        dates.len(),
        1,
        "{what}: want one Date, got {:?}",
        res.headers
    );
    let text = dates[0];
    assert_eq!(text.len(), 29, "{what}: {text:?}");
    assert!(text.ends_with(" GMT"), "{what}: {text:?}");
    let at = httpdate::parse_http_date(text)
        .unwrap_or_else(|e| panic!("{what}: Date {text:?} does not parse: {e}"));
    let now = SystemTime::now();
    let off = now.duration_since(at).unwrap_or_else(|e| e.duration());
    assert!(
        off < Duration::from_secs(60),
        "{what}: Date {text:?} is {off:?} off"
    );
}

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
async fn every_response_carries_one_valid_date() {
    let b = Backend::start("d-0").await;
    let lb = TestLb::start(config(&[&b])).await;
    let mut c = Conn::open(lb.addr).await;
    c.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\nGET /fail HTTP/1.1\r\nHost: x\r\n\r\n")
        .await;
    let r = c.response(false).await;
    assert_eq!(r.status, 200);
    assert_dated(&r, "proxied 200");
    let r = c.response(false).await;
    assert_eq!(r.status, 500);
    assert_dated(&r, "proxied 500");

    for (case, status) in [
        (&b"GET /a b HTTP/1.1\r\n\r\n"[..], 400),
        (&b"CONNECT a:443 HTTP/1.1\r\n\r\n"[..], 501),
    ] {
        let mut c = Conn::open(lb.addr).await;
        c.send(case).await;
        let r = c.response(false).await;
        assert_eq!(r.status, status);
        assert_dated(&r, &format!("local {status}"));
    }

    let dead = lb_without_backends().await;
    let mut c = Conn::open(dead.addr).await;
    c.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;
    let r = c.response(false).await;
    assert!(r.status == 502 || r.status == 503, "{r:?}");
    assert_dated(&r, "local 5xx");
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
