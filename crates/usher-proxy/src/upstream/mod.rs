//! The HTTP/1.1 client towards backends.
//!
//! Written by hand rather than taken from `hyper_util`'s pooled client because it is the proxy's
//! hot path: hyper's client runs every upstream connection in a task of its own and hands each
//! request to it through a channel, so one proxied request cost two task switches and a pool lock
//! on top of the socket I/O. Here the client connection's own task writes the request, reads the
//! response head and streams the body straight off the backend socket; idle connections wait in
//! a lock-free queue per backend. Parsing is `httparse` (what hyper itself uses).
//!
//! What it does, in order: take an idle connection that still looks open (no FIN or stray bytes
//! seen; checking costs no system call) or connect; write the head (and a buffered body) in one
//! write; stream any other body, chunked when its length is unknown; skip `1xx` interim
//! responses; parse the head and the body framing (RFC 9112 §6.3, ambiguous lengths refused);
//! hand the connection back once the body has been read whole, unless the response or its
//! framing ends the connection. A reused connection that the backend closed before answering is
//! replaced by a fresh one, once, when the request can be sent again (replayable body, and the
//! caller says a resend is safe). `101 Switching Protocols` hands the socket to the tunnel.

mod body;
mod conn;
mod wire;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderMap};
use http::{Method, Response, StatusCode};
use http_body::Body as _;
use http_body_util::BodyExt as _;
use tokio::io::AsyncWriteExt as _;

pub use body::UpstreamBody;
pub use conn::IdleConns;
pub(crate) use conn::UpConn;
use wire::{ReqFraming, encode_head, parse_head};

use crate::body::AttemptBody;

/// Bodies up to this size are copied behind the head and sent in one write.
const COALESCE_BODY: usize = 16 * 1024;
/// Largest response head accepted from a backend.
const MAX_HEAD: usize = 64 * 1024;
/// Idle connections kept per backend.
const IDLE_PER_BACKEND: usize = 1024;
/// An idle connection unused this long is closed (backends commonly keep 60–75 s).
const IDLE_FOR: Duration = Duration::from_secs(30);

/// A backend's socket after `101 Switching Protocols`, with any bytes it sent after the head.
#[derive(Debug)]
pub struct Switched {
    /// The socket.
    pub stream: tokio::net::TcpStream,
    /// Bytes already read past the 101's head.
    pub early: Bytes,
}

/// Why a request to a backend failed.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// No connection: nothing was sent.
    #[error("connect failed: {0}")]
    Connect(std::io::Error),
    /// The request may have reached the backend.
    #[error("{0}")]
    AfterSend(String),
}

impl SendError {
    fn after(e: impl std::fmt::Display) -> Self {
        Self::AfterSend(e.to_string())
    }
}

/// One outgoing request, borrowed from the proxy's request.
#[derive(Debug)]
pub struct Outgoing<'a> {
    /// Method.
    pub method: &'a Method,
    /// Path and query.
    pub path: &'a str,
    /// Header fields to send (hop-by-hop already removed; `Host` set).
    pub headers: &'a HeaderMap,
    /// Whether sending it twice is safe (idempotent, or an `Idempotency-Key`).
    pub replay_safe: bool,
}

/// Idle connections of every backend address, one set per serving thread (a connection stays
/// with the thread whose reactor it is registered with; see `workers.rs`).
#[derive(Debug)]
pub struct Upstreams {
    shards: Box<[Shard]>,
    last_prune: std::sync::Mutex<Option<std::time::Instant>>,
}

#[derive(Debug, Default)]
struct Shard {
    /// Looked up on every request, so hashed with foldhash rather than SipHash (about 150
    /// fewer instructions a request); the keys are configured backend addresses.
    by_addr: ArcSwap<HashMap<SocketAddr, Arc<IdleConns>, foldhash::fast::RandomState>>,
    write: std::sync::Mutex<()>,
}

/// Idle connections are checked at most this often.
const PRUNE_EVERY: Duration = Duration::from_secs(5);

impl Upstreams {
    /// Idle sets for `threads` serving threads.
    pub fn new(threads: usize) -> Self {
        Self {
            shards: (0..threads.max(1)).map(|_| Shard::default()).collect(),
            last_prune: std::sync::Mutex::new(None),
        }
    }

    /// The current thread's idle queue for `addr` (created on first use; a lock only then).
    pub fn idle(&self, addr: SocketAddr) -> Arc<IdleConns> {
        let shard = &self.shards[crate::workers::current_index() % self.shards.len()];
        if let Some(q) = shard.by_addr.load().get(&addr) {
            return Arc::clone(q);
        }
        let _w = shard.write.lock().unwrap_or_else(|e| e.into_inner());
        let current = shard.by_addr.load();
        if let Some(q) = current.get(&addr) {
            return Arc::clone(q);
        }
        let q = Arc::new(IdleConns::new(IDLE_PER_BACKEND, IDLE_FOR));
        let mut next = (**current).clone();
        next.insert(addr, Arc::clone(&q));
        shard.by_addr.store(Arc::new(next));
        q
    }

    /// Closes stale idle connections of every backend (at most every few seconds; called from
    /// the housekeeping tick, never on the request path).
    pub fn prune(&self) {
        {
            let mut last = self.last_prune.lock().unwrap_or_else(|e| e.into_inner());
            if last.is_some_and(|t| t.elapsed() < PRUNE_EVERY) {
                return;
            }
            *last = Some(std::time::Instant::now());
        }
        for shard in &self.shards {
            for q in shard.by_addr.load().values() {
                q.prune();
            }
        }
    }

    /// Sends `req` with `body` to `addr` and returns the response once its head has arrived.
    pub async fn send(
        &self,
        addr: SocketAddr,
        connect_timeout: Duration,
        req: &Outgoing<'_>,
        body: AttemptBody,
    ) -> Result<Response<UpstreamBody>, SendError> {
        let home = self.idle(addr);
        let (conn, fresh) = match home.take() {
            Some(c) => (c, false),
            None => (
                UpConn::connect(addr, connect_timeout)
                    .await
                    .map_err(SendError::Connect)?,
                true,
            ),
        };
        let replay = (!fresh && req.replay_safe)
            .then(|| body.replayable())
            .flatten();
        match exchange(conn, req, body, &home).await {
            Err(Exchange::Stale) if replay.is_some() => {
                let conn = UpConn::connect(addr, connect_timeout)
                    .await
                    .map_err(SendError::Connect)?;
                let body = replay.unwrap_or(AttemptBody::Empty);
                exchange(conn, req, body, &home)
                    .await
                    .map_err(Exchange::into_error)
            }
            other => other.map_err(Exchange::into_error),
        }
    }
}

/// How one exchange on one connection failed.
enum Exchange {
    /// A reused connection ended before any byte of a response.
    Stale,
    /// Anything else.
    Failed(SendError),
}

impl Exchange {
    fn into_error(self) -> SendError {
        match self {
            Self::Stale => SendError::AfterSend("backend closed a reused connection".to_owned()),
            Self::Failed(e) => e,
        }
    }
}

async fn exchange(
    mut conn: UpConn,
    req: &Outgoing<'_>,
    body: AttemptBody,
    home: &Arc<IdleConns>,
) -> Result<Response<UpstreamBody>, Exchange> {
    let reused = conn.reused;
    let stale_or = |e: SendError| {
        if reused {
            Exchange::Stale
        } else {
            Exchange::Failed(e)
        }
    };
    write_request(&mut conn, req, body)
        .await
        .map_err(stale_or)?;
    let head = loop {
        match parse_head(&mut conn.rbuf, req.method) {
            Ok(Some(h))
                if h.status.is_informational() && h.status != StatusCode::SWITCHING_PROTOCOLS =>
            {
                continue;
            }
            Ok(Some(h)) => break h,
            Ok(None) if conn.rbuf.len() > MAX_HEAD => {
                return Err(Exchange::Failed(SendError::after(
                    "response head too large",
                )));
            }
            Ok(None) => {}
            Err(e) => return Err(Exchange::Failed(SendError::after(e))),
        }
        let before = conn.rbuf.len();
        match conn.fill().await {
            Ok(0) if before == 0 => {
                return Err(stale_or(SendError::after("backend closed the connection")));
            }
            Ok(0) => {
                return Err(Exchange::Failed(SendError::after(
                    "backend closed mid-head",
                )));
            }
            Ok(_) => {}
            Err(e) if before == 0 => return Err(stale_or(SendError::after(e))),
            Err(e) => return Err(Exchange::Failed(SendError::after(e))),
        }
    };
    let mut res = Response::new(UpstreamBody::empty());
    *res.status_mut() = head.status;
    *res.version_mut() = head.version;
    *res.headers_mut() = head.headers;
    if head.status == StatusCode::SWITCHING_PROTOCOLS {
        let early = conn.rbuf.split().freeze();
        res.extensions_mut().insert(SwitchedSlot(Some(Switched {
            stream: conn.stream,
            early,
        })));
        return Ok(res);
    }
    let home = head.keep_alive.then(|| Arc::clone(home));
    *res.body_mut() = UpstreamBody::new(conn, head.framing, home);
    Ok(res)
}

/// The response extension that carries a [`Switched`] socket (taken once).
#[derive(Debug)]
pub struct SwitchedSlot(pub Option<Switched>);

impl Clone for SwitchedSlot {
    /// Extensions must be `Clone`; a copy never carries the socket.
    fn clone(&self) -> Self {
        Self(None)
    }
}

async fn write_request(
    conn: &mut UpConn,
    req: &Outgoing<'_>,
    body: AttemptBody,
) -> Result<(), SendError> {
    let stream_body = matches!(body, AttemptBody::Stream { .. });
    let framing = if stream_body && !req.headers.contains_key(header::CONTENT_LENGTH) {
        ReqFraming::Chunked
    } else {
        ReqFraming::Plain
    };
    let mut out = std::mem::take(&mut conn.wbuf);
    out.clear();
    encode_head(&mut out, req.method, req.path, req.headers, framing);
    let result = send_body(conn, &mut out, body, framing).await;
    conn.wbuf = out;
    result
}

async fn send_body(
    conn: &mut UpConn,
    out: &mut BytesMut,
    mut body: AttemptBody,
    framing: ReqFraming,
) -> Result<(), SendError> {
    let io = SendError::after;
    if let AttemptBody::Buffered(Some(b)) = &body
        && b.len() <= COALESCE_BODY
    {
        out.extend_from_slice(b);
        return conn.stream.write_all(out).await.map_err(io);
    }
    conn.stream.write_all(out).await.map_err(io)?;
    if body.is_end_stream() {
        return Ok(());
    }
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| SendError::AfterSend(format!("request body: {e}")))?;
        let Ok(data) = frame.into_data() else {
            continue; // trailers are not forwarded
        };
        if data.is_empty() {
            continue;
        }
        if framing == ReqFraming::Chunked {
            let line = format!("{:x}\r\n", data.len());
            conn.stream.write_all(line.as_bytes()).await.map_err(io)?;
            conn.stream.write_all(&data).await.map_err(io)?;
            conn.stream.write_all(b"\r\n").await.map_err(io)?;
        } else {
            conn.stream.write_all(&data).await.map_err(io)?;
        }
    }
    if framing == ReqFraming::Chunked {
        conn.stream.write_all(b"0\r\n\r\n").await.map_err(io)?;
    }
    Ok(())
}
