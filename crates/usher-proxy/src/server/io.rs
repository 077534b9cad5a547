//! The client socket's two halves as the connection sees them: a [`Reader`] that owns the read
//! half and what has been read but not used, and, after a `101`, the halves joined again
//! ([`Upgraded`]) with the client's early bytes in front.
//!
//! The read buffer is only held while there is something in it: an idle keep-alive connection
//! keeps no buffer at all (a read into an empty buffer goes through a stack array and is copied
//! into a buffer of the size that arrived). That is what keeps 10 000 idle clients cheap.

use std::io;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Buf as _, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The read half, type-erased (plain TCP or TLS).
pub(crate) type ReadHalf = Box<dyn AsyncRead + Send + Unpin>;
/// The write half, type-erased (plain TCP or TLS).
pub(crate) type WriteHalf = Box<dyn AsyncWrite + Send + Unpin>;

/// Stack buffer for reads into an empty buffer; a request head usually fits.
const FIRST_READ: usize = 4 * 1024;
/// Free space kept before each read into a non-empty buffer.
const READ_CHUNK: usize = 16 * 1024;

/// The client's read half and its unread bytes.
pub(crate) struct Reader {
    io: ReadHalf,
    /// Bytes read and not used yet.
    pub(crate) buf: BytesMut,
}

impl std::fmt::Debug for Reader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reader")
            .field("buffered", &self.buf.len())
            .finish_non_exhaustive()
    }
}

impl Reader {
    pub(crate) fn new(io: ReadHalf) -> Self {
        Self {
            io,
            buf: BytesMut::new(),
        }
    }

    /// Reads more into the buffer; `Ready(Ok(0))` is end of stream.
    pub(crate) fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        if self.buf.is_empty() {
            // Nothing held while waiting: the stack array only lives for this call.
            let mut stack = [MaybeUninit::<u8>::uninit(); FIRST_READ];
            let mut rb = ReadBuf::uninit(&mut stack);
            ready!(Pin::new(&mut self.io).poll_read(cx, &mut rb))?;
            let got = rb.filled();
            if !got.is_empty() {
                let mut buf = BytesMut::with_capacity(got.len().max(1024));
                buf.extend_from_slice(got);
                self.buf = buf;
            }
            return Poll::Ready(Ok(got.len()));
        }
        if self.buf.capacity() - self.buf.len() < READ_CHUNK / 4 {
            self.buf.reserve(READ_CHUNK);
        }
        tokio_util::io::poll_read_buf(Pin::new(&mut self.io), cx, &mut self.buf)
    }

    /// Drops the buffer if it holds nothing (the connection is between requests).
    pub(crate) fn release_if_empty(&mut self) {
        if self.buf.is_empty() {
            self.buf = BytesMut::new();
        }
    }
}

/// The client connection after a `101 Switching Protocols`: reads return the bytes the client
/// sent behind its request head first, then the socket's.
pub struct Upgraded {
    reader: Reader,
    writer: WriteHalf,
}

impl std::fmt::Debug for Upgraded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upgraded").finish_non_exhaustive()
    }
}

impl Upgraded {
    pub(crate) fn new(reader: Reader, writer: WriteHalf) -> Self {
        Self { reader, writer }
    }
}

impl AsyncRead for Upgraded {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let early = &mut this.reader.buf;
        if !early.is_empty() {
            let n = early.len().min(out.remaining());
            out.put_slice(&early[..n]);
            early.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.reader.io).poll_read(cx, out)
    }
}

impl AsyncWrite for Upgraded {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().writer).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().writer).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().writer).poll_shutdown(cx)
    }
}
