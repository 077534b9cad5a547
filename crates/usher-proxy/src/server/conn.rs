//! One client connection: read a request head, hand the request to the proxy, write the
//! response, and again, until the client or a timer ends it.
//!
//! Timers: the header timer starts at the first byte of a request head, the idle timer when a
//! response has been written; while a request is being served neither runs (the proxy bounds
//! the backend's answer itself). Both are served by one sleep per connection that is never
//! re-armed on the request path: it never sleeps longer than the shorter timeout, so any
//! deadline set after it was armed lies at or after its wake-up, where the real deadline is
//! checked and slept on exactly. A busy connection thus costs one timer wake per period and two
//! clock reads per request.
//!
//! Shutdown: an idle connection closes at once; one mid-request finishes that request (with
//! `Connection: close`) and then closes.
//!
//! After a `101 Switching Protocols` the socket goes to the tunnel the proxy handed over
//! (`tunnel.rs`), which runs here, in the connection's task, outside these timers.

use std::future::{Future, poll_fn};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http::{Method, Request, StatusCode, Version};
use tokio::io::AsyncWriteExt as _;
use tokio::sync::watch;
use tokio::time::Sleep;

use super::body::{BodyLoan, ClientBody};
use super::io::{ReadHalf, Reader, Upgraded, WriteHalf};
use super::request::{self, Refusal, RequestHead};
use super::response::{self, Exchange};
use crate::Lb;
use crate::h1::decode::BodyFraming;
use crate::tunnel::Tunnel;

/// How long a client's remaining bytes are read and dropped before a close that follows an
/// answer to a request not read whole, so the close does not reset the connection under it.
const LINGER: Duration = Duration::from_secs(1);
/// Most bytes read and dropped while lingering.
const LINGER_BYTES: usize = 1024 * 1024;

/// What the request path may tell the connection about itself.
#[derive(Debug)]
pub struct ConnState {
    /// The peer's address as forwarding headers write it.
    pub(crate) peer_text: crate::headers::PeerText,
    /// The tunnel to run once the 101 has been written.
    tunnel: Mutex<Option<Tunnel>>,
    /// The sealed affinity cookie this connection last presented, already opened.
    pub(crate) opened_token: crate::affinity::OpenedToken,
}

impl ConnState {
    fn new(peer: std::net::IpAddr) -> Self {
        Self {
            peer_text: crate::headers::PeerText::new(peer),
            tunnel: Mutex::new(None),
            opened_token: crate::affinity::OpenedToken::new(),
        }
    }

    /// The connection switches protocols: `tunnel` runs once the 101 has been written.
    pub fn hand_over_tunnel(&self, tunnel: Tunnel) {
        *self.tunnel.lock().unwrap_or_else(|e| e.into_inner()) = Some(tunnel);
    }

    fn take_tunnel(&self) -> Option<Tunnel> {
        self.tunnel.lock().unwrap_or_else(|e| e.into_inner()).take()
    }
}

/// Why a connection ended while waiting for a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    /// The client closed it (or the socket failed).
    Closed,
    /// The client did not finish a request head in time.
    HeaderTimeout,
    /// Idle keep-alive connection timed out.
    Idle,
    /// Shutdown began while the connection was idle.
    Shutdown,
}

// Returned once per request and moved straight out: boxing the head would cost an allocation.
#[allow(clippy::large_enum_variant)]
enum Next {
    Head(RequestHead),
    Refused(Refusal),
    End(End),
}

/// The connection's timers (see the module docs).
struct Clock {
    sleep: Pin<Box<Sleep>>,
    header: Duration,
    idle: Duration,
    /// Never sleep longer than this: the shorter timeout.
    period: Duration,
    /// When the last response was written (or the connection accepted).
    last_activity: Instant,
    /// When the current request head began, if one has.
    head_started: Option<Instant>,
}

impl Clock {
    fn new(header: Duration, idle: Duration) -> Self {
        let period = header.min(idle).max(Duration::from_millis(1));
        let now = Instant::now();
        Self {
            sleep: Box::pin(tokio::time::sleep(period)),
            header,
            idle,
            period,
            last_activity: now,
            head_started: None,
        }
    }

    /// Resolves when the deadline that applies (`waiting_for_head`: the header timer, else the
    /// idle timer) has passed.
    async fn expired(&mut self, waiting_for_head: bool) -> End {
        loop {
            self.sleep.as_mut().await;
            let now = Instant::now();
            let (deadline, end) = match self.head_started {
                Some(at) if waiting_for_head => (at + self.header, End::HeaderTimeout),
                _ => (self.last_activity + self.idle, End::Idle),
            };
            if now >= deadline {
                return end;
            }
            let next = deadline.min(now + self.period);
            self.sleep.as_mut().reset(next.into());
        }
    }
}

/// Serves HTTP/1.1 on one client connection until it ends.
pub(crate) async fn serve(
    lb: Arc<Lb>,
    rd: ReadHalf,
    mut wr: WriteHalf,
    peer: SocketAddr,
    stop: watch::Receiver<bool>,
) {
    let (header_timeout, idle_timeout, max_head) = {
        let limits = &lb.live.load().config.limits;
        (
            limits.header_read_timeout,
            limits.idle_timeout,
            limits.max_header_bytes,
        )
    };
    let state = Arc::new(ConnState::new(peer.ip()));
    let mut clock = Clock::new(header_timeout, idle_timeout);
    let mut reader = Reader::new(rd);
    let mut stopping = *stop.borrow();
    let mut stop_signal = stop.clone();
    let stop_wait = async move {
        let _ = stop_signal.wait_for(|s| *s).await;
    };
    tokio::pin!(stop_wait);
    loop {
        let head = match next_head(
            &mut reader,
            &mut clock,
            stop_wait.as_mut(),
            &mut stopping,
            max_head,
        )
        .await
        {
            Next::Head(head) => head,
            Next::End(end) => {
                match end {
                    End::HeaderTimeout => {
                        tracing::debug!(%peer, "closed: request head not received in time");
                    }
                    End::Idle => tracing::trace!(%peer, "closed: idle keep-alive connection"),
                    End::Closed | End::Shutdown => {}
                }
                break;
            }
            Next::Refused(refusal) => {
                Box::pin(refuse(&lb, &mut reader, &mut wr, refusal)).await;
                return;
            }
        };
        let exchange = Exchange {
            head_request: head.method == Method::HEAD,
            version: head.version,
            close: !head.keep_alive,
        };
        if head.expects_continue
            && wr
                .write_all(b"HTTP/1.1 100 Continue\r\n\r\n")
                .await
                .is_err()
        {
            break;
        }
        let (req, home) = request(head, reader);
        // Boxed: the request path's state is several KiB, which an idle connection need not hold.
        let res = Box::pin(crate::proxy::handle(&lb, req, peer, &state)).await;
        let (back, body_complete) = match home {
            ReaderHome::Lent(loan) => loan.take_back(),
            ReaderHome::Kept(reader) => (Some(reader), true),
        };
        let Some(back) = back else {
            return;
        };
        reader = back;
        stopping |= *stop.borrow();
        let switching = res.status() == StatusCode::SWITCHING_PROTOCOLS;
        let exchange = Exchange {
            close: exchange.close || !body_complete || stopping,
            ..exchange
        };
        // Boxed for the same reason as the request path (it holds the whole response).
        let written = Box::pin(response::write(&mut wr, res, exchange)).await;
        if switching {
            if let (Ok(_), Some(tunnel)) = (written, state.take_tunnel()) {
                tunnel.run(Upgraded::new(reader, wr)).await;
            }
            return;
        }
        match written {
            Ok(true) => {
                clock.last_activity = Instant::now();
                reader.release_if_empty();
            }
            Ok(false) if !body_complete => {
                // The client may still be sending the body nobody read.
                linger(&mut reader, &mut wr).await;
                return;
            }
            Ok(false) => break,
            Err(e) => {
                tracing::debug!(%peer, error = %e, "response not written whole; closing");
                return;
            }
        }
    }
    let _ = tokio::time::timeout(LINGER, wr.shutdown()).await;
}

/// Where the connection's reader is while a request is served.
enum ReaderHome {
    /// No body: the connection kept it.
    Kept(Reader),
    /// The request's body borrowed it; the loan gives it back.
    Lent(BodyLoan),
}

/// The request for `head`; a body borrows the reader, else the connection keeps it.
fn request(head: RequestHead, reader: Reader) -> (Request<ClientBody>, ReaderHome) {
    let (body, home) = if head.framing == BodyFraming::Empty {
        (ClientBody::empty(), ReaderHome::Kept(reader))
    } else {
        let (body, loan) = ClientBody::lend(reader, head.framing);
        (body, ReaderHome::Lent(loan))
    };
    let mut req = Request::new(body);
    *req.method_mut() = head.method;
    *req.uri_mut() = head.uri;
    *req.version_mut() = head.version;
    *req.headers_mut() = head.headers;
    (req, home)
}

/// Waits for the next complete request head.
async fn next_head(
    reader: &mut Reader,
    clock: &mut Clock,
    mut stop_wait: Pin<&mut impl Future<Output = ()>>,
    stopping: &mut bool,
    max_head: usize,
) -> Next {
    loop {
        if !reader.buf.is_empty() {
            if clock.head_started.is_none() {
                clock.head_started = Some(Instant::now());
            }
            match request::parse(&mut reader.buf, max_head) {
                Ok(Some(head)) => {
                    clock.head_started = None;
                    return Next::Head(head);
                }
                Ok(None) => {}
                Err(refusal) => return Next::Refused(refusal),
            }
        } else if *stopping {
            return Next::End(End::Shutdown);
        }
        let waiting_for_head = !reader.buf.is_empty();
        tokio::select! {
            read = poll_fn(|cx| reader.poll_fill(cx)) => match read {
                Ok(0) | Err(_) => return Next::End(End::Closed),
                Ok(_) => {}
            },
            end = clock.expired(waiting_for_head) => return Next::End(end),
            () = stop_wait.as_mut(), if !*stopping => *stopping = true,
        }
    }
}

/// Answers a refused head and closes, first reading (and dropping) what the client still sends
/// for a moment, so the close does not reset the connection under the answer.
async fn refuse(lb: &Lb, reader: &mut Reader, wr: &mut WriteHalf, refusal: Refusal) {
    let (status, text) = match refusal {
        Refusal::Bad(why) => {
            tracing::debug!(why, "refused a request head");
            (StatusCode::BAD_REQUEST, "bad request\n")
        }
        Refusal::TooLarge => (
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "request header fields too large\n",
        ),
        Refusal::NotImplemented => (StatusCode::NOT_IMPLEMENTED, "not implemented\n"),
    };
    let res = crate::proxy::local(lb, status, text, None);
    let exchange = Exchange {
        head_request: false,
        version: Version::HTTP_11,
        close: true,
    };
    if response::write(wr, res, exchange).await.is_err() {
        return;
    }
    linger(reader, wr).await;
}

/// Closes after an answer the client may not have finished sending its request for: ends the
/// write side, then reads and drops what still arrives (bounded in bytes and time), so that the
/// close does not reset the connection and take the unread answer with it.
async fn linger(reader: &mut Reader, wr: &mut WriteHalf) {
    let _ = tokio::time::timeout(LINGER, async {
        let _ = wr.shutdown().await;
        reader.buf.clear();
        let mut dropped = 0;
        while dropped < LINGER_BYTES {
            match poll_fn(|cx| reader.poll_fill(cx)).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    dropped += n;
                    reader.buf.clear();
                }
            }
        }
    })
    .await;
}
