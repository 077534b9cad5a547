//! A backend's response body, read straight from its connection in the client's own task, and
//! the connection handed back to its backend's idle queue once the body has been read whole.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use bytes::{Buf, Bytes};
use http_body::{Body, Frame, SizeHint};

use super::conn::{IdleConns, UpConn};
use super::wire::BodyFraming;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Longest chunk-size line (with extensions) accepted.
const MAX_CHUNK_LINE: usize = 4 * 1024;
/// Most trailer bytes accepted (and dropped) after the last chunk.
const MAX_TRAILERS: usize = 16 * 1024;

#[derive(Debug, Clone, Copy)]
enum State {
    /// This many bytes left.
    Length(u64),
    /// Waiting for a chunk-size line.
    ChunkSize,
    /// This many bytes left in the current chunk.
    ChunkData(u64),
    /// The CRLF after a chunk's data.
    ChunkEnd,
    /// Trailer fields after the last chunk; the count is bytes seen so far.
    Trailers(usize),
    /// Until the backend closes.
    UntilClose,
    /// Finished.
    Done,
}

/// The body of a backend's response.
#[derive(Debug)]
pub struct UpstreamBody {
    conn: Option<UpConn>,
    state: State,
    /// Where the connection goes back when the body is done and it may carry another request.
    home: Option<Arc<IdleConns>>,
}

impl UpstreamBody {
    /// A body read from `conn` as `framing` says; with `home`, the connection is returned there
    /// once the body is complete.
    pub(crate) fn new(conn: UpConn, framing: BodyFraming, home: Option<Arc<IdleConns>>) -> Self {
        let state = match framing {
            BodyFraming::Empty => State::Length(0),
            BodyFraming::Length(n) => State::Length(n),
            BodyFraming::Chunked => State::ChunkSize,
            BodyFraming::UntilClose => State::UntilClose,
        };
        let mut body = Self {
            conn: Some(conn),
            state,
            home,
        };
        if let State::Length(0) = body.state {
            body.finish();
        }
        body
    }

    /// No body and no connection (a `101`'s, whose connection became the tunnel).
    pub(crate) fn empty() -> Self {
        Self {
            conn: None,
            state: State::Done,
            home: None,
        }
    }

    /// The body is complete: the connection goes back to the idle queue if it can carry
    /// another request (nothing unread is left on it), else it is closed.
    fn finish(&mut self) {
        self.state = State::Done;
        let conn = self.conn.take();
        if let (Some(conn), Some(home)) = (conn, self.home.take())
            && conn.rbuf.is_empty()
        {
            home.put(conn);
        }
    }

    fn conn(&mut self) -> Result<&mut UpConn, BoxError> {
        self.conn
            .as_mut()
            .ok_or_else(|| "upstream connection already released".into())
    }

    /// Reads more; end of stream before the body's end is an error.
    fn poll_more(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        let n = ready!(self.conn()?.poll_fill(cx))?;
        if n == 0 {
            self.conn = None;
            self.state = State::Done;
            return Poll::Ready(Err("backend closed the connection mid-body".into()));
        }
        Poll::Ready(Ok(()))
    }

    /// Up to `max` buffered bytes, reading first if none are buffered.
    fn poll_data(&mut self, cx: &mut Context<'_>, max: u64) -> Poll<Result<Bytes, BoxError>> {
        if self.conn()?.rbuf.is_empty() {
            ready!(self.poll_more(cx))?;
        }
        let buf = &mut self.conn()?.rbuf;
        let n = usize::try_from(max).unwrap_or(usize::MAX).min(buf.len());
        Poll::Ready(Ok(buf.split_to(n).freeze()))
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
            let step = match this.state {
                State::Done => return Poll::Ready(None),
                State::Length(0) => {
                    this.finish();
                    return Poll::Ready(None);
                }
                State::Length(left) => {
                    let data = ready!(this.poll_data(cx, left))?;
                    let left = left - data.len() as u64;
                    this.state = State::Length(left);
                    if left == 0 {
                        // Hand the connection back before the client has even got the last
                        // bytes: the next request can use it at once.
                        this.finish();
                    }
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                State::ChunkData(left) => {
                    let data = ready!(this.poll_data(cx, left))?;
                    let left = left - data.len() as u64;
                    this.state = if left == 0 {
                        State::ChunkEnd
                    } else {
                        State::ChunkData(left)
                    };
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                State::UntilClose => {
                    let conn = this.conn()?;
                    if conn.rbuf.is_empty() {
                        if ready!(conn.poll_fill(cx))? == 0 {
                            this.conn = None;
                            this.state = State::Done;
                            return Poll::Ready(None);
                        }
                        continue;
                    }
                    let data = conn.rbuf.split().freeze();
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                State::ChunkSize => chunk_size(&mut this.conn()?.rbuf)?,
                State::ChunkEnd => chunk_end(&mut this.conn()?.rbuf)?,
                State::Trailers(seen) => trailers(&mut this.conn()?.rbuf, seen)?,
            };
            match step {
                Step::Next(state) => this.state = state,
                Step::NeedMore => ready!(this.poll_more(cx))?,
                Step::End => {
                    this.finish();
                    return Poll::Ready(None);
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self.state, State::Done | State::Length(0))
    }

    fn size_hint(&self) -> SizeHint {
        match self.state {
            State::Length(n) => SizeHint::with_exact(n),
            State::Done => SizeHint::with_exact(0),
            _ => SizeHint::default(),
        }
    }
}

/// What the chunked decoder does next.
enum Step {
    Next(State),
    NeedMore,
    End,
}

fn chunk_size(buf: &mut bytes::BytesMut) -> Result<Step, BoxError> {
    match httparse::parse_chunk_size(buf) {
        Ok(httparse::Status::Complete((used, size))) => {
            buf.advance(used);
            Ok(Step::Next(if size == 0 {
                State::Trailers(0)
            } else {
                State::ChunkData(size)
            }))
        }
        Ok(httparse::Status::Partial) if buf.len() > MAX_CHUNK_LINE => {
            Err("chunk-size line too long".into())
        }
        Ok(httparse::Status::Partial) => Ok(Step::NeedMore),
        Err(_) => Err("invalid chunk size".into()),
    }
}

fn chunk_end(buf: &mut bytes::BytesMut) -> Result<Step, BoxError> {
    match buf.get(..2) {
        None if buf.first().is_none_or(|b| *b == b'\r') => Ok(Step::NeedMore),
        Some(b"\r\n") => {
            buf.advance(2);
            Ok(Step::Next(State::ChunkSize))
        }
        _ => Err("chunk data not followed by CRLF".into()),
    }
}

/// Skips trailer fields (dropped: the proxy does not forward trailers) up to the empty line.
fn trailers(buf: &mut bytes::BytesMut, seen: usize) -> Result<Step, BoxError> {
    let Some(eol) = buf.windows(2).position(|w| w == b"\r\n") else {
        return if seen + buf.len() > MAX_TRAILERS {
            Err("trailers too long".into())
        } else {
            Ok(Step::NeedMore)
        };
    };
    buf.advance(eol + 2);
    if eol == 0 {
        return Ok(Step::End);
    }
    let seen = seen + eol + 2;
    if seen > MAX_TRAILERS {
        return Err("trailers too long".into());
    }
    Ok(Step::Next(State::Trailers(seen)))
}

#[cfg(test)]
mod tests {
    use bytes::BytesMut;

    use super::*;

    /// Runs the chunked decoder over `input` fed in pieces of `step` bytes.
    fn decode(input: &[u8], step: usize) -> Result<Vec<u8>, BoxError> {
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        let mut state = State::ChunkSize;
        let mut fed = 0;
        loop {
            let step_result = match state {
                State::ChunkSize => chunk_size(&mut buf)?,
                State::ChunkEnd => chunk_end(&mut buf)?,
                State::Trailers(seen) => trailers(&mut buf, seen)?,
                State::ChunkData(left) => {
                    if buf.is_empty() {
                        Step::NeedMore
                    } else {
                        let n = (left as usize).min(buf.len());
                        out.extend_from_slice(&buf.split_to(n));
                        let left = left - n as u64;
                        Step::Next(if left == 0 {
                            State::ChunkEnd
                        } else {
                            State::ChunkData(left)
                        })
                    }
                }
                _ => unreachable!("decoder states only"),
            };
            match step_result {
                Step::Next(s) => state = s,
                Step::End => return Ok(out),
                Step::NeedMore => {
                    if fed >= input.len() {
                        return Err("truncated".into());
                    }
                    let end = (fed + step).min(input.len());
                    buf.extend_from_slice(&input[fed..end]);
                    fed = end;
                }
            }
        }
    }

    #[test]
    fn chunks_decode_whatever_the_read_sizes() {
        let input = b"5\r\nhello\r\n1;ext=1\r\n \r\n6\r\nworld!\r\n0\r\nX-T: 1\r\n\r\n";
        for step in [1, 2, 3, 7, 64] {
            assert_eq!(
                decode(input, step).expect("valid"),
                b"hello world!",
                "{step}"
            );
        }
    }

    #[test]
    fn broken_chunking_is_an_error() {
        for bad in [
            &b"5\r\nhelloXX0\r\n\r\n"[..],
            b"zz\r\nhello\r\n0\r\n\r\n",
            b"5\r\nhel",
        ] {
            assert!(
                decode(bad, 4).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        let long_line = [b"1".repeat(MAX_CHUNK_LINE + 10), b"\r\n".to_vec()].concat();
        assert!(decode(&long_line, 1024).is_err());
    }
}
