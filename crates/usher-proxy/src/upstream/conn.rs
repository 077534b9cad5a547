//! One connection to a backend, and the idle ones kept for reuse.

use std::net::SocketAddr;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use std::sync::atomic::{AtomicUsize, Ordering};

use crossbeam_queue::SegQueue;
use tokio::net::TcpStream;

/// Read buffer reserve before each read from a backend.
const READ_CHUNK: usize = 8 * 1024;

/// A connection to a backend with what has been read from it but not used yet.
#[derive(Debug)]
pub struct UpConn {
    pub(crate) stream: TcpStream,
    /// Bytes read and not yet consumed.
    pub(crate) rbuf: BytesMut,
    /// Reused head-encoding buffer.
    pub(crate) wbuf: BytesMut,
    /// Whether the connection has carried a request before (a stale keep-alive may have been
    /// closed by the backend just as we reused it).
    pub(crate) reused: bool,
}

impl UpConn {
    /// Connects to `addr` within `timeout`, with Nagle off.
    pub async fn connect(addr: SocketAddr, timeout: Duration) -> std::io::Result<Self> {
        let stream = tokio::time::timeout(timeout, TcpStream::connect(addr))
            .await
            .map_err(|_| {
                std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out")
            })??;
        stream.set_nodelay(true)?;
        Ok(Self {
            stream,
            rbuf: BytesMut::with_capacity(READ_CHUNK),
            wbuf: BytesMut::with_capacity(1024),
            reused: false,
        })
    }

    /// Reads more bytes into `rbuf`; `Ready(Ok(0))` is end of stream. A short read clears the
    /// socket's cached readiness, so a later liveness check costs no system call.
    pub fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<usize>> {
        if self.rbuf.capacity() - self.rbuf.len() < READ_CHUNK / 2 {
            self.rbuf.reserve(READ_CHUNK);
        }
        tokio_util::io::poll_read_buf(std::pin::Pin::new(&mut self.stream), cx, &mut self.rbuf)
    }

    /// Reads more bytes into `rbuf` (0: end of stream).
    pub async fn fill(&mut self) -> std::io::Result<usize> {
        std::future::poll_fn(|cx| self.poll_fill(cx)).await
    }

    /// Whether an idle connection still looks open: nothing arrived on it (no FIN, no stray
    /// bytes). Free when the socket has no pending readiness.
    fn still_open(&self) -> bool {
        let mut probe = [0u8; 1];
        matches!(self.stream.try_read(&mut probe), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
    }
}

/// A backend's idle keep-alive connections: a lock-free queue, bounded by a counter. (Not an
/// `ArrayQueue`: that allocates its whole capacity up front, which with 300 backends was 36 MiB
/// per thread before a single connection was kept.)
#[derive(Debug)]
pub struct IdleConns {
    queue: SegQueue<(UpConn, Instant)>,
    len: AtomicUsize,
    capacity: usize,
    max_idle: Duration,
}

impl IdleConns {
    /// Keeps at most `capacity` connections, each for at most `max_idle`.
    pub fn new(capacity: usize, max_idle: Duration) -> Self {
        Self {
            queue: SegQueue::new(),
            len: AtomicUsize::new(0),
            capacity: capacity.max(1),
            max_idle,
        }
    }

    /// An idle connection that still looks usable, if any.
    pub fn take(&self) -> Option<UpConn> {
        while let Some((mut conn, since)) = self.queue.pop() {
            self.len.fetch_sub(1, Ordering::Relaxed);
            if since.elapsed() < self.max_idle && conn.still_open() {
                conn.reused = true;
                return Some(conn);
            }
        }
        None
    }

    /// Keeps `conn` for reuse (dropped, so closed, when the queue is full).
    pub fn put(&self, conn: UpConn) {
        self.keep(conn, Instant::now());
    }

    fn keep(&self, conn: UpConn, since: Instant) {
        if self.len.fetch_add(1, Ordering::Relaxed) >= self.capacity {
            self.len.fetch_sub(1, Ordering::Relaxed);
            return; // full: `conn` is dropped, which closes it
        }
        self.queue.push((conn, since));
    }

    /// Closes connections idle longer than the limit (or closed by the backend).
    pub fn prune(&self) {
        for _ in 0..self.queue.len() {
            let Some((conn, since)) = self.queue.pop() else {
                break;
            };
            self.len.fetch_sub(1, Ordering::Relaxed);
            if since.elapsed() < self.max_idle && conn.still_open() {
                self.keep(conn, since);
            }
        }
    }
}
