//! One client connection: an I/O wrapper that records activity, and the driver that enforces the
//! header-read and idle keep-alive timeouts and graceful shutdown around hyper's connection.
//!
//! hyper's own `header_read_timeout` starts while a keep-alive connection is merely idle, which
//! would make the idle timeout unusable; so both timers live here: the header timer starts at the
//! first byte of a request head, the idle timer when the last response has finished.
//!
//! The request path never wakes the driver: the driver never sleeps longer than the shorter of
//! the two timeouts, so a deadline set after it went to sleep (a head that started, a response
//! that ended) is still at or after its wake-up, where it is seen and slept on exactly. This
//! costs one timer wake per timeout period on a busy connection instead of two task wake-ups and
//! two timer re-arms per request.
//!
//! After a `101 Switching Protocols` hyper releases the socket and the connection future ends; the
//! connection's task then runs the tunnel (`tunnel.rs`) the request path handed over, outside these
//! timers.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Notify;

use crate::scan::HeadScanner;
use crate::tunnel::Tunnel;

/// Shared state of one client connection.
#[derive(Debug)]
pub struct ConnState {
    epoch: Instant,
    header_timeout_ms: u64,
    idle_timeout_ms: u64,
    last_activity_ms: AtomicU64,
    /// 0 = no request head in progress.
    head_deadline_ms: AtomicU64,
    active_requests: AtomicU32,
    /// When the driver will next look (ms on the same clock); a deadline earlier than this needs
    /// a wake-up (only possible if the configuration changes underneath; kept as a safety net).
    armed_ms: AtomicU64,
    suspicious: AtomicBool,
    scanner: Mutex<HeadScanner>,
    notify: Notify,
    /// Set when a 101 is on its way: later bytes belong to the tunnel, not to HTTP.
    upgraded: AtomicBool,
    /// The tunnel to run once hyper has released the socket after the 101.
    tunnel: Mutex<Option<Tunnel>>,
    /// The peer's address as forwarding headers write it.
    pub(crate) peer_text: crate::headers::PeerText,
}

impl ConnState {
    /// State for a connection that was just accepted.
    pub fn new(
        header_timeout: Duration,
        idle_timeout: Duration,
        peer: std::net::IpAddr,
    ) -> Arc<Self> {
        Arc::new(Self {
            epoch: Instant::now(),
            header_timeout_ms: millis(header_timeout),
            idle_timeout_ms: millis(idle_timeout),
            last_activity_ms: AtomicU64::new(0),
            head_deadline_ms: AtomicU64::new(0),
            active_requests: AtomicU32::new(0),
            armed_ms: AtomicU64::new(0),
            suspicious: AtomicBool::new(false),
            scanner: Mutex::new(HeadScanner::default()),
            notify: Notify::new(),
            upgraded: AtomicBool::new(false),
            tunnel: Mutex::new(None),
            peer_text: crate::headers::PeerText::new(peer),
        })
    }

    fn now_ms(&self) -> u64 {
        // +1 so that 0 can mean "unset".
        millis(self.epoch.elapsed()) + 1
    }

    /// A request head was parsed: the header timer stops, the request is active.
    pub fn request_started(self: &Arc<Self>) -> RequestActivity {
        self.active_requests.fetch_add(1, Relaxed);
        self.head_deadline_ms.store(0, Relaxed);
        RequestActivity(Arc::clone(self))
    }

    /// Whether a header block with both `Content-Length` and `Transfer-Encoding` was read.
    pub fn saw_conflicting_framing(&self) -> bool {
        self.suspicious.load(Relaxed)
    }

    /// The connection switches protocols: `tunnel` runs in the connection's task after hyper has
    /// written the 101 and handed the socket over. From now on reads start no header timer and
    /// are not scanned.
    pub fn hand_over_tunnel(&self, tunnel: Tunnel) {
        self.upgraded.store(true, Relaxed);
        *self.tunnel.lock().unwrap_or_else(|e| e.into_inner()) = Some(tunnel);
    }

    /// The tunnel handed over by the request path, if any.
    pub fn take_tunnel(&self) -> Option<Tunnel> {
        self.tunnel.lock().unwrap_or_else(|e| e.into_inner()).take()
    }

    fn on_read(&self, bytes: &[u8]) {
        if self.upgraded.load(Relaxed) {
            return;
        }
        if self.active_requests.load(Relaxed) == 0 && self.head_deadline_ms.load(Relaxed) == 0 {
            let deadline = self.now_ms() + self.header_timeout_ms;
            self.head_deadline_ms.store(deadline, Relaxed);
            if self.armed_ms.load(Relaxed) > deadline {
                self.notify.notify_one();
            }
        }
        let mut scanner = self.scanner.lock().unwrap_or_else(|e| e.into_inner());
        if scanner.feed(bytes) {
            self.suspicious.store(true, Relaxed);
        }
    }

    /// What the driver should do now, and when to look again.
    fn check(&self) -> Check {
        let now = self.now_ms();
        let head = self.head_deadline_ms.load(Relaxed);
        if head != 0 && now >= head {
            return Check::HeaderTimeout;
        }
        // Never sleep past the shorter timeout: a deadline set meanwhile is no earlier than that.
        let period = self.header_timeout_ms.min(self.idle_timeout_ms).max(1);
        let mut next = now + period;
        if head != 0 {
            next = next.min(head);
        } else if self.active_requests.load(Relaxed) == 0 {
            // A head in progress is governed by the header timer alone.
            let idle_at = self.last_activity_ms.load(Relaxed) + self.idle_timeout_ms;
            if now >= idle_at {
                return Check::Idle;
            }
            next = next.min(idle_at);
        }
        self.armed_ms.store(next, Relaxed);
        Check::Wait(Duration::from_millis(next - now))
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX / 4)
}

enum Check {
    HeaderTimeout,
    Idle,
    Wait(Duration),
}

/// Ends a request's activity on the connection when dropped (after its response body finished).
#[derive(Debug)]
pub struct RequestActivity(Arc<ConnState>);

impl Drop for RequestActivity {
    fn drop(&mut self) {
        self.0.last_activity_ms.store(self.0.now_ms(), Relaxed);
        self.0.active_requests.fetch_sub(1, Relaxed);
    }
}

pin_project_lite::pin_project! {
    /// The client socket, reporting reads and writes to its [`ConnState`].
    #[derive(Debug)]
    pub struct ConnIo<T> {
        #[pin]
        inner: T,
        state: Arc<ConnState>,
    }
}

impl<T> ConnIo<T> {
    /// Wraps a socket.
    pub fn new(inner: T, state: Arc<ConnState>) -> Self {
        Self { inner, state }
    }
}

impl<T: AsyncRead> AsyncRead for ConnIo<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.project();
        let before = buf.filled().len();
        let res = this.inner.poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = res {
            let new = &buf.filled()[before..];
            if !new.is_empty() {
                this.state.on_read(new);
            }
        }
        res
    }
}

impl<T: AsyncWrite> AsyncWrite for ConnIo<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.project().inner.poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.project().inner.poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().inner.poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().inner.poll_shutdown(cx)
    }
}

/// Why a connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnEnd {
    /// The client or hyper closed it.
    Closed,
    /// The client did not finish a request head in time.
    HeaderTimeout,
    /// Idle keep-alive connection timed out.
    Idle,
}

/// Drives a hyper connection future: enforces the timers and turns `shutdown` into a graceful
/// close (finish the request in progress, accept no further one on this connection).
pub async fn drive<C>(
    state: Arc<ConnState>,
    mut conn: Pin<&mut C>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) -> ConnEnd
where
    C: GracefulConn,
{
    let mut shutting_down = *shutdown.borrow();
    if shutting_down {
        conn.as_mut().begin_graceful_shutdown();
    }
    loop {
        let wait = match state.check() {
            Check::HeaderTimeout => return ConnEnd::HeaderTimeout,
            Check::Idle => return ConnEnd::Idle,
            Check::Wait(d) => d,
        };
        tokio::select! {
            res = conn.as_mut() => {
                if let Err(e) = res {
                    tracing::debug!(error = %e, "client connection ended with an error");
                }
                return ConnEnd::Closed;
            }
            () = tokio::time::sleep(wait) => {}
            () = state.notify.notified() => {}
            changed = shutdown.changed(), if !shutting_down => {
                shutting_down = true;
                if changed.is_ok() {
                    conn.as_mut().begin_graceful_shutdown();
                }
            }
        }
    }
}

/// A hyper server connection that can be asked to finish gracefully.
pub trait GracefulConn: std::future::Future<Output = Result<(), hyper::Error>> {
    /// Starts a graceful shutdown.
    fn begin_graceful_shutdown(self: Pin<&mut Self>);
}

impl<I, S, B> GracefulConn for hyper::server::conn::http1::Connection<I, S>
where
    S: hyper::service::HttpService<hyper::body::Incoming, ResBody = B>,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    I: hyper::rt::Read + hyper::rt::Write + Unpin,
    B: hyper::body::Body + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    fn begin_graceful_shutdown(self: Pin<&mut Self>) {
        self.graceful_shutdown();
    }
}

impl<I, S, B> GracefulConn for hyper::server::conn::http1::UpgradeableConnection<I, S>
where
    S: hyper::service::HttpService<hyper::body::Incoming, ResBody = B>,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    B: hyper::body::Body + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    fn begin_graceful_shutdown(self: Pin<&mut Self>) {
        self.graceful_shutdown();
    }
}
