//! A backend's response body, read straight from its connection in the client's own task, and
//! the connection handed back to its backend's idle queue once the body has been read whole.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};

use super::conn::{IdleConns, UpConn};
use crate::h1::decode::{BodyFraming, Decoded, Decoder};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The body of a backend's response.
#[derive(Debug)]
pub struct UpstreamBody {
    conn: Option<UpConn>,
    decoder: Decoder,
    /// Where the connection goes back when the body is done and it may carry another request.
    home: Option<Arc<IdleConns>>,
}

impl UpstreamBody {
    /// A body read from `conn` as `framing` says; with `home`, the connection is returned there
    /// once the body is complete.
    pub(crate) fn new(conn: UpConn, framing: BodyFraming, home: Option<Arc<IdleConns>>) -> Self {
        let mut body = Self {
            conn: Some(conn),
            decoder: Decoder::new(framing),
            home,
        };
        if body.decoder.is_done() {
            body.finish();
        }
        body
    }

    /// No body and no connection (a `101`'s, whose connection became the tunnel).
    pub(crate) fn empty() -> Self {
        Self {
            conn: None,
            decoder: Decoder::Done,
            home: None,
        }
    }

    /// The body is complete: the connection goes back to the idle queue if it can carry
    /// another request (nothing unread is left on it), else it is closed.
    fn finish(&mut self) {
        self.decoder = Decoder::Done;
        let conn = self.conn.take();
        if let (Some(conn), Some(home)) = (conn, self.home.take())
            && conn.rbuf.is_empty()
        {
            home.put(conn);
        }
    }

    /// The connection is unusable (an error or the backend's close): drop it.
    fn fail(&mut self, e: impl Into<BoxError>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.conn = None;
        self.decoder = Decoder::Done;
        Poll::Ready(Some(Err(e.into())))
    }
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        loop {
            let Some(conn) = this.conn.as_mut() else {
                return Poll::Ready(None);
            };
            match this.decoder.decode(&mut conn.rbuf) {
                Ok(Decoded::Data(data)) => {
                    if this.decoder.is_done() {
                        // Hand the connection back before the client has even got the last
                        // bytes: the next request can use it at once.
                        this.finish();
                    }
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Ok(Decoded::End) => {
                    this.finish();
                    return Poll::Ready(None);
                }
                Ok(Decoded::NeedMore) => match ready!(conn.poll_fill(cx)) {
                    Ok(0) => {
                        // The backend closed: the end of an until-close body, else an error.
                        this.conn = None;
                        if let Err(e) = this.decoder.at_eof() {
                            return this.fail(format!("backend: {e}"));
                        }
                        return Poll::Ready(None);
                    }
                    Ok(_) => {}
                    Err(e) => return this.fail(e),
                },
                Err(e) => return this.fail(format!("backend body: {e}")),
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.decoder.is_done()
    }

    fn size_hint(&self) -> SizeHint {
        match self.decoder.exact_left() {
            Some(n) => SizeHint::with_exact(n),
            None => SizeHint::default(),
        }
    }
}
