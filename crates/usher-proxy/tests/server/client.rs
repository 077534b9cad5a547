//! A raw client connection to the load balancer, and a load balancer with no live backend.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

use crate::support::{Backend, TestLb, config};
use crate::wire::{Res, parse_response};

/// Longest any single wait on the load balancer may take.
pub(crate) const WAIT: Duration = Duration::from_secs(10);
/// How soon the load balancer must close a connection it is done with.
const CLOSE_WITHIN: Duration = Duration::from_secs(5);
/// Most reads spent on one response (each is also bounded by [`WAIT`] overall).
const MAX_READS: usize = 10_000;

/// How the load balancer ended a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Closed {
    /// An orderly close (FIN).
    Eof,
    /// A reset (the load balancer closed with bytes of ours unread).
    Reset,
}

/// A raw client connection to the load balancer with its own read buffer.
pub(crate) struct Conn {
    rd: OwnedReadHalf,
    pub(crate) wr: Option<OwnedWriteHalf>,
    pub(crate) buf: Vec<u8>,
    /// The load balancer has closed the connection (read returned 0).
    eof: bool,
}

impl Conn {
    pub(crate) async fn open(addr: SocketAddr) -> Self {
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
    pub(crate) async fn send(&mut self, bytes: &[u8]) {
        let wr = self.wr.as_mut().expect("write half handed away");
        tokio::time::timeout(WAIT, wr.write_all(bytes))
            .await
            .expect("write timed out")
            .expect("write failed");
    }

    /// Reads the next whole response (bounded by [`WAIT`]).
    pub(crate) async fn response(&mut self, head_request: bool) -> Res {
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
    pub(crate) async fn closed(&mut self) -> Closed {
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
pub(crate) async fn lb_without_backends() -> TestLb {
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
