//! The client's request body: read off the client's own socket, in the connection's task, by
//! whoever polls it (the upstream client streaming it to a backend, or the proxy buffering it).
//!
//! The connection lends its [`Reader`] to the body for the request and takes it back once the
//! response is ready ([`BodyLoan::take_back`]); whether the body was read to its end then
//! decides if the connection can carry another request.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};

use super::io::Reader;
use crate::h1::decode::{BodyFraming, DecodeError, Decoded, Decoder};

/// Why a request body could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ClientBodyError {
    /// The client's framing was broken.
    #[error("request body: {0}")]
    Framing(#[from] DecodeError),
    /// The socket failed.
    #[error("request body: {0}")]
    Io(#[from] std::io::Error),
    /// The body is no longer readable (the connection took its reader back).
    #[error("request body no longer available")]
    Gone,
}

#[derive(Debug)]
struct Shared {
    reader: Option<Reader>,
    decoder: Decoder,
    failed: bool,
}

/// A request's body (empty, or read from the client connection as its framing says).
#[derive(Debug)]
pub struct ClientBody {
    shared: Option<Arc<Mutex<Shared>>>,
}

/// The connection's side of a body that borrowed its reader.
#[derive(Debug)]
pub(crate) struct BodyLoan(Arc<Mutex<Shared>>);

impl ClientBody {
    /// No body.
    pub(crate) fn empty() -> Self {
        Self { shared: None }
    }

    /// A body framed as `framing`, read through `reader`; the loan gives the reader back.
    pub(crate) fn lend(reader: Reader, framing: BodyFraming) -> (Self, BodyLoan) {
        let shared = Arc::new(Mutex::new(Shared {
            reader: Some(reader),
            decoder: Decoder::new(framing),
            failed: false,
        }));
        (
            Self {
                shared: Some(Arc::clone(&shared)),
            },
            BodyLoan(shared),
        )
    }
}

impl BodyLoan {
    /// Takes the reader back; the flag says whether the body was read whole (without it the
    /// connection cannot find the next request and must close).
    pub(crate) fn take_back(self) -> (Option<Reader>, bool) {
        let mut s = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let complete = s.decoder.is_done() && !s.failed;
        (s.reader.take(), complete)
    }
}

impl Body for ClientBody {
    type Data = Bytes;
    type Error = ClientBodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, ClientBodyError>>> {
        let Some(shared) = &self.shared else {
            return Poll::Ready(None);
        };
        let mut s = shared.lock().unwrap_or_else(|e| e.into_inner());
        let s = &mut *s;
        loop {
            if s.failed {
                return Poll::Ready(Some(Err(ClientBodyError::Gone)));
            }
            let Some(reader) = s.reader.as_mut() else {
                return Poll::Ready(Some(Err(ClientBodyError::Gone)));
            };
            let fail = |s: &mut Shared, e: ClientBodyError| {
                s.failed = true;
                Poll::Ready(Some(Err(e)))
            };
            match s.decoder.decode(&mut reader.buf) {
                Ok(Decoded::Data(d)) => return Poll::Ready(Some(Ok(Frame::data(d)))),
                Ok(Decoded::End) => return Poll::Ready(None),
                Ok(Decoded::NeedMore) => match ready!(reader.poll_fill(cx)) {
                    Ok(0) => {
                        let e = s
                            .decoder
                            .at_eof()
                            .err()
                            .unwrap_or(DecodeError("connection closed mid-body"));
                        return fail(s, e.into());
                    }
                    Ok(_) => {}
                    Err(e) => return fail(s, e.into()),
                },
                Err(e) => return fail(s, e.into()),
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.shared {
            None => true,
            Some(s) => s.lock().map(|s| s.decoder.is_done()).unwrap_or(true),
        }
    }

    fn size_hint(&self) -> SizeHint {
        let left = match &self.shared {
            None => Some(0),
            Some(s) => s.lock().ok().and_then(|s| s.decoder.exact_left()),
        };
        left.map_or_else(SizeHint::default, SizeHint::with_exact)
    }
}
