//! The upstream HTTP/1.1 client against a scripted raw-TCP backend: framing (chunked with
//! trailers, until-close, HEAD, 1xx), connection reuse and its limits (`Connection: close`, a
//! backend closing an idle connection), and malformed responses (→ 502, never trusted).
#![allow(clippy::unwrap_used)]

mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::Full;
use support::{Client, TestLb, eventually};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use usher_proxy::{BackendAddr, BackendSection, FileConfig, LbConfig};

/// What the scripted backend sends for one request, and whether it then closes.
struct Answer {
    bytes: Vec<u8>,
    close: bool,
}

fn answer(bytes: &str) -> Answer {
    Answer {
        bytes: bytes.as_bytes().to_vec(),
        close: false,
    }
}

/// A backend that reads request heads (and `Content-Length` bodies) and answers each with what
/// `script(request_head)` says. Counts connections and requests.
struct Scripted {
    addr: SocketAddr,
    conns: Arc<AtomicUsize>,
    requests: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Scripted {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Scripted {
    async fn start(script: impl Fn(&str) -> Answer + Send + Sync + 'static) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (conns, requests) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let script = Arc::new(script);
        let (c, r) = (Arc::clone(&conns), Arc::clone(&requests));
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                c.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(serve(stream, Arc::clone(&script), Arc::clone(&r)));
            }
        });
        Self {
            addr,
            conns,
            requests,
            task,
        }
    }

    fn config(&self) -> LbConfig {
        let raw = FileConfig {
            backends: vec![toml::Spanned::new(
                0..0,
                BackendSection {
                    id: "raw".parse().unwrap(),
                    addr: BackendAddr(self.addr),
                    weight: None,
                },
            )],
            ..FileConfig::default()
        };
        LbConfig::from_raw(raw, None).unwrap()
    }
}

async fn serve(
    mut s: TcpStream,
    script: Arc<impl Fn(&str) -> Answer + Send + Sync + 'static>,
    requests: Arc<AtomicUsize>,
) {
    let mut buf = Vec::new();
    loop {
        let end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            let mut chunk = [0u8; 4096];
            match s.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buf[..end]).into_owned();
        let length = head
            .lines()
            .find_map(|l| {
                l.to_ascii_lowercase()
                    .strip_prefix("content-length:")
                    .map(|v| v.trim().parse::<usize>().unwrap_or(0))
            })
            .unwrap_or(0);
        while buf.len() < end + length {
            let mut chunk = [0u8; 4096];
            match s.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        buf.drain(..end + length);
        requests.fetch_add(1, Ordering::SeqCst);
        let a = script(&head);
        if s.write_all(&a.bytes).await.is_err() || a.close {
            return;
        }
    }
}

const OK: &str = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";

#[tokio::test]
async fn keep_alive_connections_are_reused() {
    let backend = Scripted::start(|_| answer(OK)).await;
    let lb = TestLb::start(backend.config()).await;
    let mut client = Client::default();
    for _ in 0..20 {
        let r = client.get(&lb.url("/")).await;
        assert_eq!((r.status, r.body.as_str()), (StatusCode::OK, "ok"));
    }
    assert_eq!(backend.requests.load(Ordering::SeqCst), 20);
    assert_eq!(
        backend.conns.load(Ordering::SeqCst),
        1,
        "one upstream connection for all"
    );
}

#[tokio::test]
async fn chunked_responses_are_decoded_and_trailers_dropped() {
    let backend = Scripted::start(|_| {
        answer("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n1;x=y\r\n \r\n6\r\nworld!\r\n0\r\nX-Trailer: 1\r\n\r\n")
    })
    .await;
    let lb = TestLb::start(backend.config()).await;
    let mut client = Client::default();
    for _ in 0..3 {
        let r = client.get(&lb.url("/")).await;
        assert_eq!(r.body, "hello world!");
    }
    assert_eq!(
        backend.conns.load(Ordering::SeqCst),
        1,
        "chunked keeps the connection"
    );
}

#[tokio::test]
async fn interim_responses_are_skipped_and_head_has_no_body() {
    let backend = Scripted::start(|head| {
        if head.starts_with("HEAD") {
            answer("HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n")
        } else {
            answer("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 4\r\n\r\ndone")
        }
    })
    .await;
    let lb = TestLb::start(backend.config()).await;
    let mut client = Client::default();
    let r = client
        .send(
            Request::post(lb.url("/"))
                .body(Full::new(Bytes::from_static(b"x=1")))
                .unwrap(),
        )
        .await;
    assert_eq!((r.status, r.body.as_str()), (StatusCode::CREATED, "done"));
    let r = client
        .send(Request::head(lb.url("/")).body(Full::default()).unwrap())
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.headers["content-length"], "10");
    let r = client.get(&lb.url("/")).await;
    assert_eq!(r.body, "done", "the connection is still in step after HEAD");
    assert_eq!(backend.conns.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn close_delimited_and_connection_close_responses_are_not_reused() {
    let backend = Scripted::start(|head| {
        if head.contains("/until-close") {
            Answer {
                bytes: b"HTTP/1.1 200 OK\r\n\r\nall of it".to_vec(),
                close: true,
            }
        } else {
            Answer {
                bytes: b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok"
                    .to_vec(),
                close: true,
            }
        }
    })
    .await;
    let lb = TestLb::start(backend.config()).await;
    let mut client = Client::default();
    assert_eq!(client.get(&lb.url("/until-close")).await.body, "all of it");
    assert_eq!(client.get(&lb.url("/")).await.body, "ok");
    assert_eq!(client.get(&lb.url("/")).await.body, "ok");
    assert_eq!(
        backend.conns.load(Ordering::SeqCst),
        3,
        "a new connection each time"
    );
}

#[tokio::test]
async fn an_idle_connection_the_backend_closed_is_not_used_even_for_a_post() {
    // The backend answers and then closes every connection without saying so.
    let backend = Scripted::start(|_| Answer {
        bytes: OK.as_bytes().to_vec(),
        close: true,
    })
    .await;
    let lb = TestLb::start(backend.config()).await;
    let mut client = Client::default();
    assert_eq!(client.get(&lb.url("/")).await.body, "ok");
    // Give the FIN time to arrive; the pooled connection must then be seen as closed.
    let conns = Arc::clone(&backend.conns);
    tokio::time::sleep(Duration::from_millis(50)).await;
    let r = client
        .send(
            Request::post(lb.url("/order"))
                .body(Full::new(Bytes::from_static(b"1")))
                .unwrap(),
        )
        .await;
    assert_eq!((r.status, r.body.as_str()), (StatusCode::OK, "ok"));
    assert!(eventually(Duration::from_secs(2), || conns.load(Ordering::SeqCst) == 2).await);
    assert_eq!(
        backend.requests.load(Ordering::SeqCst),
        2,
        "the POST was sent once"
    );
}

#[tokio::test]
async fn malformed_responses_are_bad_gateway() {
    let backend = Scripted::start(|head| {
        if head.contains("/two-lengths") {
            answer("HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nok")
        } else if head.contains("/garbage") {
            answer("SMTP ready\r\n\r\n")
        } else if head.contains("/bad-chunk") {
            answer("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n")
        } else {
            answer(OK)
        }
    })
    .await;
    let lb = TestLb::start(backend.config()).await;
    let mut client = Client::default();
    for path in ["/two-lengths", "/garbage"] {
        let r = client.get(&lb.url(path)).await;
        assert_eq!(r.status, StatusCode::BAD_GATEWAY, "{path}");
        assert!(!r.body.contains("127.0.0.1"), "{path}: {}", r.body);
    }
    // A body that turns bad after the head: the client sees the response cut short.
    let mut fresh = Client::default();
    let cut = fresh.try_get(&lb.url("/bad-chunk")).await;
    assert!(cut.is_err(), "{cut:?}");
    assert_eq!(
        client.get(&lb.url("/")).await.body,
        "ok",
        "and service goes on"
    );
}
