//! The body decoder: given the bytes read so far, how much of them is body, per the message's
//! framing (RFC 9112 §6.3, §7.1). It never reads; the caller reads more when told to, which lets
//! the client side (`server/body.rs`) and the backend side (`upstream/body.rs`) share it.
//! Chunk extensions and trailer fields are accepted and dropped (the proxy forwards neither).

use bytes::{Buf as _, Bytes, BytesMut};

/// Longest chunk-size line (with extensions) accepted.
const MAX_CHUNK_LINE: usize = 4 * 1024;
/// Most trailer bytes accepted (and dropped) after the last chunk.
const MAX_TRAILERS: usize = 16 * 1024;

/// How a message body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFraming {
    /// No body.
    Empty,
    /// Exactly this many bytes.
    Length(u64),
    /// Chunked transfer coding.
    Chunked,
    /// Until the peer closes the connection (responses only).
    UntilClose,
}

/// Where the decoder is in the body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Decoder {
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
    /// Until the peer closes.
    UntilClose,
    /// The body is complete.
    Done,
}

/// What [`Decoder::decode`] found.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Decoded {
    /// Body bytes.
    Data(Bytes),
    /// Read more, then call again (at end of stream see [`Decoder::at_eof`]).
    NeedMore,
    /// The body is complete; what is left in the buffer belongs to the next message.
    End,
}

/// Why a body cannot be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub(crate) struct DecodeError(pub &'static str);

impl Decoder {
    /// A decoder for a body framed as `framing`.
    pub(crate) fn new(framing: BodyFraming) -> Self {
        match framing {
            BodyFraming::Empty | BodyFraming::Length(0) => Self::Done,
            BodyFraming::Length(n) => Self::Length(n),
            BodyFraming::Chunked => Self::ChunkSize,
            BodyFraming::UntilClose => Self::UntilClose,
        }
    }

    /// Whether the body is complete.
    pub(crate) fn is_done(&self) -> bool {
        *self == Self::Done
    }

    /// The exact number of body bytes left, when the framing says it.
    pub(crate) fn exact_left(&self) -> Option<u64> {
        match self {
            Self::Length(n) => Some(*n),
            Self::Done => Some(0),
            _ => None,
        }
    }

    /// The peer closed the connection: the end of an until-close body, else an error.
    pub(crate) fn at_eof(&mut self) -> Result<(), DecodeError> {
        let was = *self;
        *self = Self::Done;
        match was {
            Self::UntilClose | Self::Done => Ok(()),
            _ => Err(DecodeError("connection closed mid-body")),
        }
    }

    /// Takes the next piece of body out of `buf`.
    pub(crate) fn decode(&mut self, buf: &mut BytesMut) -> Result<Decoded, DecodeError> {
        loop {
            let step = match *self {
                Self::Done => return Ok(Decoded::End),
                Self::Length(left) | Self::ChunkData(left) => {
                    let Some(data) = take(buf, left) else {
                        return Ok(Decoded::NeedMore);
                    };
                    let left = left - data.len() as u64;
                    *self = match (*self, left) {
                        (Self::Length(_), 0) => Self::Done,
                        (Self::Length(_), n) => Self::Length(n),
                        (_, 0) => Self::ChunkEnd,
                        (_, n) => Self::ChunkData(n),
                    };
                    return Ok(Decoded::Data(data));
                }
                Self::UntilClose => {
                    if buf.is_empty() {
                        return Ok(Decoded::NeedMore);
                    }
                    return Ok(Decoded::Data(buf.split().freeze()));
                }
                Self::ChunkSize => chunk_size(buf),
                Self::ChunkEnd => chunk_end(buf),
                Self::Trailers(seen) => trailers(buf, seen),
            };
            match step {
                Err(e) => {
                    *self = Self::Done;
                    return Err(e);
                }
                Ok(Step::Next(state)) => *self = state,
                Ok(Step::NeedMore) => return Ok(Decoded::NeedMore),
                Ok(Step::End) => {
                    *self = Self::Done;
                    return Ok(Decoded::End);
                }
            }
        }
    }
}

/// Up to `max` buffered bytes, or `None` if none are buffered.
fn take(buf: &mut BytesMut, max: u64) -> Option<Bytes> {
    if buf.is_empty() {
        return None;
    }
    let n = usize::try_from(max).unwrap_or(usize::MAX).min(buf.len());
    Some(buf.split_to(n).freeze())
}

/// What the chunked decoder does next.
enum Step {
    Next(Decoder),
    NeedMore,
    End,
}

fn chunk_size(buf: &mut BytesMut) -> Result<Step, DecodeError> {
    match httparse::parse_chunk_size(buf) {
        Ok(httparse::Status::Complete((used, size))) => {
            buf.advance(used);
            Ok(Step::Next(if size == 0 {
                Decoder::Trailers(0)
            } else {
                Decoder::ChunkData(size)
            }))
        }
        Ok(httparse::Status::Partial) if buf.len() > MAX_CHUNK_LINE => {
            Err(DecodeError("chunk-size line too long"))
        }
        Ok(httparse::Status::Partial) => Ok(Step::NeedMore),
        Err(_) => Err(DecodeError("invalid chunk size")),
    }
}

fn chunk_end(buf: &mut BytesMut) -> Result<Step, DecodeError> {
    match buf.get(..2) {
        None if buf.first().is_none_or(|b| *b == b'\r') => Ok(Step::NeedMore),
        Some(b"\r\n") => {
            buf.advance(2);
            Ok(Step::Next(Decoder::ChunkSize))
        }
        _ => Err(DecodeError("chunk data not followed by CRLF")),
    }
}

/// Skips trailer fields up to the empty line.
fn trailers(buf: &mut BytesMut, seen: usize) -> Result<Step, DecodeError> {
    let Some(eol) = buf.windows(2).position(|w| w == b"\r\n") else {
        return if seen + buf.len() > MAX_TRAILERS {
            Err(DecodeError("trailers too long"))
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
        return Err(DecodeError("trailers too long"));
    }
    Ok(Step::Next(Decoder::Trailers(seen)))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs a decoder over `input` fed in pieces of `step` bytes; returns the body and what is
    /// left in the buffer after it.
    fn decode(
        framing: BodyFraming,
        input: &[u8],
        step: usize,
    ) -> Result<(Vec<u8>, Vec<u8>), DecodeError> {
        let mut decoder = Decoder::new(framing);
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        let mut fed = 0;
        loop {
            match decoder.decode(&mut buf)? {
                Decoded::Data(d) => out.extend_from_slice(&d),
                Decoded::End => return Ok((out, buf.to_vec())),
                Decoded::NeedMore if fed >= input.len() => {
                    decoder.at_eof()?;
                    return Ok((out, Vec::new()));
                }
                Decoded::NeedMore => {
                    let end = (fed + step).min(input.len());
                    buf.extend_from_slice(&input[fed..end]);
                    fed = end;
                }
            }
        }
    }

    #[test]
    fn chunks_decode_whatever_the_read_sizes() {
        let input = b"5\r\nhello\r\n1;ext=1\r\n \r\n6\r\nworld!\r\n0\r\nX-T: 1\r\n\r\nNEXT";
        for step in [1, 2, 3, 7, 64] {
            let (body, rest) = decode(BodyFraming::Chunked, input, step).expect("valid");
            assert_eq!(body, b"hello world!", "{step}");
            // With small reads the next message's bytes are not read yet.
            assert!(b"NEXT".starts_with(&rest), "{step}: {rest:?}");
        }
    }

    #[test]
    fn lengths_stop_at_the_length() {
        let (body, rest) = decode(BodyFraming::Length(5), b"helloGET /", 64).expect("valid");
        assert_eq!((&body[..], &rest[..]), (&b"hello"[..], &b"GET /"[..]));
        assert!(decode(BodyFraming::Length(5), b"hel", 2).is_err());
        let (body, _) = decode(BodyFraming::Empty, b"x", 1).expect("valid");
        assert!(body.is_empty());
        let (body, _) = decode(BodyFraming::UntilClose, b"all of it", 4).expect("valid");
        assert_eq!(body, b"all of it");
    }

    #[test]
    fn broken_chunking_is_an_error() {
        for bad in [
            &b"5\r\nhelloXX0\r\n\r\n"[..],
            b"zz\r\nhello\r\n0\r\n\r\n",
            b"5\r\nhel",
        ] {
            assert!(
                decode(BodyFraming::Chunked, bad, 4).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        let long_line = [b"1".repeat(MAX_CHUNK_LINE + 10), b"\r\n".to_vec()].concat();
        assert!(decode(BodyFraming::Chunked, &long_line, 1024).is_err());
    }
}
