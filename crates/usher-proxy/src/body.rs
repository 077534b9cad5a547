//! Body types on both sides of the proxy.
//!
//! * [`RequestBody`] holds the client's request body so that an attempt that failed before the
//!   backend read anything (a refused connect) can hand the *same* unread stream to a second
//!   backend. The stream is taken out of a shared slot on the first poll; if the slot is still full
//!   after a failure, nothing was sent and a retry is safe for any method. Small bodies with a known
//!   length can instead be buffered whole (bounded by `retry_buffer_bytes`) so that idempotent
//!   requests stay retryable after a send.
//! * [`ResponseBody`] streams the backend's response (or a local error page) and carries the guards
//!   that end the request's in-flight accounting when the body is finished or dropped.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use crate::pool::InflightGuard;
use crate::server::{ClientBody, ClientBodyError};
use crate::upstream::UpstreamBody;
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::{BodyExt, Full};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The client's request body, replayable while unread.
#[derive(Debug, Clone)]
pub enum RequestBody {
    /// No body.
    Empty,
    /// Fully buffered (small, known length).
    Buffered(Bytes),
    /// A stream, taken by the first attempt that polls it.
    Stream {
        /// The unread stream, until an attempt takes it.
        slot: Arc<Mutex<Option<ClientBody>>>,
        /// The stream's size hint, captured before it went into the slot.
        hint: SizeHint,
    },
}

impl RequestBody {
    /// Wraps a client body: empty, buffered (if its length is known and ≤ `buffer_limit`), or a
    /// replayable-until-read stream.
    pub async fn from_client(
        body: ClientBody,
        buffer_limit: usize,
    ) -> Result<Self, ClientBodyError> {
        if body.is_end_stream() {
            return Ok(Self::Empty);
        }
        let hint = body.size_hint();
        let small = hint.exact().is_some_and(|n| n <= buffer_limit as u64);
        if small {
            let bytes = body.collect().await?.to_bytes();
            return Ok(if bytes.is_empty() {
                Self::Empty
            } else {
                Self::Buffered(bytes)
            });
        }
        Ok(Self::Stream {
            slot: Arc::new(Mutex::new(Some(body))),
            hint,
        })
    }

    /// A body for one attempt, or `None` when an earlier attempt already consumed the stream.
    pub fn attempt(&self) -> Option<AttemptBody> {
        match self {
            Self::Empty => Some(AttemptBody::Empty),
            Self::Buffered(b) => Some(AttemptBody::Buffered(Some(b.clone()))),
            Self::Stream { slot, hint } => {
                let unread = slot.lock().map(|s| s.is_some()).unwrap_or(false);
                unread.then(|| AttemptBody::Stream {
                    slot: Arc::clone(slot),
                    taken: None,
                    hint: *hint,
                })
            }
        }
    }
}

/// The body of one upstream attempt.
#[derive(Debug)]
pub enum AttemptBody {
    /// No body.
    Empty,
    /// Buffered bytes, yielded once.
    Buffered(Option<Bytes>),
    /// The client stream, taken from the slot on first poll.
    Stream {
        /// Where the unread stream waits.
        slot: Arc<Mutex<Option<ClientBody>>>,
        /// The stream, once taken.
        taken: Option<ClientBody>,
        /// Size hint of the stream.
        hint: SizeHint,
    },
}

impl AttemptBody {
    /// A copy that can be sent again, when the body is held whole (not a stream).
    pub fn replayable(&self) -> Option<Self> {
        match self {
            Self::Empty => Some(Self::Empty),
            Self::Buffered(b) => Some(Self::Buffered(b.clone())),
            Self::Stream { .. } => None,
        }
    }
}

impl Body for AttemptBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            Self::Empty => Poll::Ready(None),
            Self::Buffered(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            Self::Stream { slot, taken, .. } => {
                if taken.is_none() {
                    *taken = slot
                        .lock()
                        .map_err(|_| "request body lock poisoned")?
                        .take();
                }
                match taken {
                    Some(body) => Pin::new(body).poll_frame(cx).map_err(Into::into),
                    None => Poll::Ready(Some(Err("request body already consumed".into()))),
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Self::Empty => true,
            Self::Buffered(b) => b.is_none(),
            Self::Stream { taken: Some(b), .. } => b.is_end_stream(),
            Self::Stream { .. } => false,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Self::Empty => SizeHint::with_exact(0),
            Self::Buffered(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
            Self::Stream { taken: Some(b), .. } => b.size_hint(),
            Self::Stream { hint, .. } => *hint,
        }
    }
}

/// The response body sent to the client.
#[derive(Debug)]
pub struct ResponseBody {
    inner: Inner,
    _inflight: Option<InflightGuard>,
}

#[derive(Debug)]
enum Inner {
    Upstream(UpstreamBody),
    Local(Full<Bytes>),
}

impl ResponseBody {
    /// A backend's streaming response.
    pub fn upstream(body: UpstreamBody) -> Self {
        Self {
            inner: Inner::Upstream(body),
            _inflight: None,
        }
    }

    /// A response made by the load balancer itself.
    pub fn local(text: impl Into<Bytes>) -> Self {
        Self {
            inner: Inner::Local(Full::new(text.into())),
            _inflight: None,
        }
    }

    /// Keeps the backend's in-flight count up until the body is done.
    pub fn with_inflight(mut self, guard: InflightGuard) -> Self {
        self._inflight = Some(guard);
        self
    }

    fn finish(&mut self) {
        self._inflight = None;
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        let res = match &mut this.inner {
            Inner::Upstream(b) => Pin::new(b).poll_frame(cx),
            Inner::Local(b) => Pin::new(b).poll_frame(cx).map_err(|never| match never {}),
        };
        if let Poll::Ready(None | Some(Err(_))) = res {
            this.finish();
        }
        res
    }

    fn is_end_stream(&self) -> bool {
        match &self.inner {
            Inner::Upstream(b) => b.is_end_stream(),
            Inner::Local(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            Inner::Upstream(b) => b.size_hint(),
            Inner::Local(b) => b.size_hint(),
        }
    }
}
