//! HTTP/1.1 on the wire towards a backend: the request head we write and the response head we
//! read, with the body framing rules of RFC 9112 §6.

use bytes::{BufMut, Bytes, BytesMut};
use http::header::{self, HeaderMap};
use http::{Method, StatusCode, Version};

use crate::h1::fields::{self, MAX_FIELDS};

/// How the request body goes on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReqFraming {
    /// No body, or `Content-Length` (already in the headers): bytes as they come.
    Plain,
    /// Length unknown: `Transfer-Encoding: chunked` is added and the body chunked.
    Chunked,
}

/// Writes `METHOD path HTTP/1.1`, the headers and, for [`ReqFraming::Chunked`], the
/// `transfer-encoding` line, into `out`.
pub fn encode_head(
    out: &mut BytesMut,
    method: &Method,
    path: &str,
    headers: &HeaderMap,
    framing: ReqFraming,
) {
    let size: usize = headers
        .iter()
        .map(|(n, v)| n.as_str().len() + v.len() + 4)
        .sum();
    out.reserve(method.as_str().len() + path.len() + size + 48);
    out.put_slice(method.as_str().as_bytes());
    out.put_u8(b' ');
    out.put_slice(path.as_bytes());
    out.put_slice(b" HTTP/1.1\r\n");
    for (name, value) in headers {
        out.put_slice(name.as_str().as_bytes());
        out.put_slice(b": ");
        out.put_slice(value.as_bytes());
        out.put_slice(b"\r\n");
    }
    if framing == ReqFraming::Chunked {
        out.put_slice(b"transfer-encoding: chunked\r\n");
    }
    out.put_slice(b"\r\n");
}

pub use crate::h1::decode::BodyFraming;

/// A parsed response head.
#[derive(Debug)]
pub struct Head {
    /// Status code.
    pub status: StatusCode,
    /// Version the backend spoke.
    pub version: Version,
    /// Header fields, as sent.
    pub headers: HeaderMap,
    /// Body framing.
    pub framing: BodyFraming,
    /// Whether the connection may carry another request after this response's body.
    pub keep_alive: bool,
}

/// Why a response head was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeadError {
    /// Not HTTP/1.x, bad syntax, or too many fields.
    #[error("malformed response head: {0}")]
    Syntax(&'static str),
    /// `Content-Length` is not one number, or `Transfer-Encoding` is not understood.
    #[error("response framing is ambiguous")]
    Framing,
}

/// Tries to parse a response head at the start of `buf`. `Ok(None)`: incomplete, read more.
/// On success the head's bytes are split off `buf`; what follows (body bytes) stays in it.
pub fn parse_head(buf: &mut BytesMut, method: &Method) -> Result<Option<Head>, HeadError> {
    // Uninitialised field slots and compact offsets: zeroing kilobytes per response showed up
    // as the largest single cost of the proxy in callgrind.
    let mut slots = [const { std::mem::MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_FIELDS];
    let mut res = httparse::Response::new(&mut []);
    let parsed = httparse::ParserConfig::default()
        .parse_response_with_uninit_headers(&mut res, buf, &mut slots);
    let len = match parsed {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(HeadError::Syntax("too many fields")),
        Err(_) => return Err(HeadError::Syntax("invalid syntax")),
    };
    let code = res.code.ok_or(HeadError::Syntax("no status"))?;
    let status = StatusCode::from_u16(code).map_err(|_| HeadError::Syntax("invalid status"))?;
    let version = match res.version {
        Some(1) => Version::HTTP_11,
        Some(0) => Version::HTTP_10,
        _ => return Err(HeadError::Syntax("not HTTP/1.x")),
    };
    // Offsets of every name and value, so that after the head is frozen into one shared buffer
    // the values can point into it: no allocation per value.
    let mut spans = [(0u32, 0u32, 0u32, 0u32); MAX_FIELDS];
    let count = fields::spans(buf, &*res.headers, &mut spans);
    let head: Bytes = buf.split_to(len).freeze();
    let headers = fields::header_map(&head, &spans[..count]).map_err(HeadError::Syntax)?;
    let (framing, close_delimited) = framing(status, method, &headers)?;
    let keep_alive = !close_delimited && fields::persistent(version, &headers);
    Ok(Some(Head {
        status,
        version,
        headers,
        framing,
        keep_alive,
    }))
}

/// The body framing, and whether it forces the connection closed afterwards.
fn framing(
    status: StatusCode,
    method: &Method,
    headers: &HeaderMap,
) -> Result<(BodyFraming, bool), HeadError> {
    if method == Method::HEAD
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
    {
        return Ok((BodyFraming::Empty, false));
    }
    if headers.contains_key(header::TRANSFER_ENCODING) {
        // Chunked must be the final coding; anything else is read until close. A
        // Content-Length beside it is ignored and the connection not reused (§6.3 item 3).
        let with_length = headers.contains_key(header::CONTENT_LENGTH);
        return Ok(if fields::chunked_is_final(headers) {
            (BodyFraming::Chunked, with_length)
        } else {
            (BodyFraming::UntilClose, true)
        });
    }
    Ok(
        match fields::content_length(headers).map_err(|()| HeadError::Framing)? {
            Some(0) => (BodyFraming::Empty, false),
            Some(n) => (BodyFraming::Length(n), false),
            None => (BodyFraming::UntilClose, true),
        },
    )
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;

    fn parse(text: &str, method: &Method) -> Result<Option<(Head, BytesMut)>, HeadError> {
        let mut buf = BytesMut::from(text.as_bytes());
        Ok(parse_head(&mut buf, method)?.map(|h| (h, buf)))
    }

    fn get(text: &str) -> Head {
        parse(text, &Method::GET)
            .expect("valid")
            .expect("complete")
            .0
    }

    #[test]
    fn a_head_is_split_off_and_the_body_bytes_stay() {
        let (head, rest) = parse(
            "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nX-Backend: b0\r\n\r\nok\n",
            &Method::GET,
        )
        .expect("valid")
        .expect("complete");
        assert_eq!(head.status, StatusCode::OK);
        assert_eq!(head.framing, BodyFraming::Length(3));
        assert!(head.keep_alive);
        assert_eq!(head.headers["x-backend"], "b0");
        assert_eq!(&rest[..], b"ok\n");
    }

    #[test]
    fn an_incomplete_head_asks_for_more() {
        assert!(
            parse("HTTP/1.1 200 OK\r\nContent-Len", &Method::GET)
                .expect("valid")
                .is_none()
        );
    }

    #[test]
    fn framing_follows_rfc_9112() {
        assert_eq!(
            get("HTTP/1.1 204 No Content\r\n\r\n").framing,
            BodyFraming::Empty
        );
        assert_eq!(
            get("HTTP/1.1 304 Not Modified\r\nContent-Length: 9\r\n\r\n").framing,
            BodyFraming::Empty
        );
        let head = parse(
            "HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n",
            &Method::HEAD,
        )
        .expect("valid")
        .expect("complete")
        .0;
        assert_eq!(head.framing, BodyFraming::Empty);
        let chunked = get("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n");
        assert_eq!(chunked.framing, BodyFraming::Chunked);
        assert!(chunked.keep_alive);
        let both =
            get("HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n");
        assert_eq!(both.framing, BodyFraming::Chunked);
        assert!(!both.keep_alive, "TE with CL: never reuse the connection");
        let gzip = get("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n");
        assert_eq!(gzip.framing, BodyFraming::UntilClose);
        let neither = get("HTTP/1.1 200 OK\r\n\r\n");
        assert_eq!(neither.framing, BodyFraming::UntilClose);
        assert!(!neither.keep_alive);
        let same = get("HTTP/1.1 200 OK\r\nContent-Length: 4, 4\r\nContent-Length: 4\r\n\r\n");
        assert_eq!(same.framing, BodyFraming::Length(4));
    }

    #[test]
    fn ambiguous_lengths_and_junk_are_refused() {
        for bad in [
            "HTTP/1.1 200 OK\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: 4, 5\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: +4\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: \r\n\r\n",
        ] {
            assert_eq!(
                parse(bad, &Method::GET).expect_err(bad),
                HeadError::Framing,
                "{bad}"
            );
        }
        assert!(parse("HTTP/2 200 OK\r\n\r\n", &Method::GET).is_err());
        assert!(parse("garbage\r\n\r\n", &Method::GET).is_err());
    }

    #[test]
    fn connection_close_and_http10_end_the_connection() {
        assert!(
            !get("HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n").keep_alive
        );
        assert!(!get("HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n").keep_alive);
        assert!(
            get("HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n")
                .keep_alive
        );
    }

    #[test]
    fn the_request_head_is_written_in_order() {
        let mut headers = HeaderMap::new();
        headers.insert(header::HOST, HeaderValue::from_static("shop"));
        headers.append("x-a", HeaderValue::from_static("1"));
        headers.append("x-a", HeaderValue::from_static("2"));
        let mut out = BytesMut::new();
        encode_head(
            &mut out,
            &Method::POST,
            "/cart?x=1",
            &headers,
            ReqFraming::Chunked,
        );
        assert_eq!(
            &out[..],
            b"POST /cart?x=1 HTTP/1.1\r\nhost: shop\r\nx-a: 1\r\nx-a: 2\r\ntransfer-encoding: chunked\r\n\r\n"
        );
    }
}
