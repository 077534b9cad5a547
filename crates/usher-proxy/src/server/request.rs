//! Parsing a client's request head: httparse, then the method, target, version and fields as
//! `http` types (values share the head's buffer), and the body framing with the checks that
//! stop request smuggling (RFC 9112 §6.1, §6.3): a request naming both `Content-Length` and
//! `Transfer-Encoding`, differing lengths, or a transfer coding other than final `chunked` is
//! refused with 400 before anything reaches a backend.

use std::mem::MaybeUninit;

use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderMap};
use http::{Method, Uri, Version};

use crate::h1::decode::BodyFraming;
use crate::h1::fields::{self, MAX_FIELDS};

/// A parsed request head.
#[derive(Debug)]
pub(crate) struct RequestHead {
    pub method: Method,
    pub uri: Uri,
    pub version: Version,
    pub headers: HeaderMap,
    /// How the body is delimited.
    pub framing: BodyFraming,
    /// Whether the client lets the connection carry another request.
    pub keep_alive: bool,
    /// `Expect: 100-continue` on an HTTP/1.1 request with a body.
    pub expects_continue: bool,
}

/// Why a head was refused; each maps to the status the client gets before the connection is
/// closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// 400: not HTTP/1.x, bad syntax, or ambiguous framing.
    Bad(&'static str),
    /// 431: the head is larger than allowed, or has too many fields.
    TooLarge,
    /// 501: a method the proxy does not forward (`CONNECT`).
    NotImplemented,
}

/// Tries to parse a request head at the start of `buf`. `Ok(None)`: incomplete, read more.
/// On success the head's bytes are split off `buf`; the body's stay in it.
pub(crate) fn parse(buf: &mut BytesMut, max_head: usize) -> Result<Option<RequestHead>, Refusal> {
    let mut slots = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_FIELDS];
    let mut req = httparse::Request::new(&mut []);
    let parsed = httparse::ParserConfig::default()
        .parse_request_with_uninit_headers(&mut req, buf, &mut slots);
    let len = match parsed {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() > max_head => return Err(Refusal::TooLarge),
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(Refusal::TooLarge),
        Err(httparse::Error::Version) => return Err(Refusal::Bad("not HTTP/1.x")),
        Err(_) => return Err(Refusal::Bad("malformed request head")),
    };
    if len > max_head {
        return Err(Refusal::TooLarge);
    }
    let method = req.method.ok_or(Refusal::Bad("no method"))?;
    let method = Method::from_bytes(method.as_bytes()).map_err(|_| Refusal::Bad("bad method"))?;
    if method == Method::CONNECT {
        return Err(Refusal::NotImplemented);
    }
    let version = match req.version {
        Some(1) => Version::HTTP_11,
        Some(0) => Version::HTTP_10,
        _ => return Err(Refusal::Bad("not HTTP/1.x")),
    };
    let path = req.path.ok_or(Refusal::Bad("no target"))?;
    let path_at = (path.as_ptr() as usize).wrapping_sub(buf.as_ptr() as usize);
    let path_span = path_at..path_at + path.len();
    let mut spans = [(0u32, 0u32, 0u32, 0u32); MAX_FIELDS];
    let count = fields::spans(buf, &*req.headers, &mut spans);
    let head: Bytes = buf.split_to(len).freeze();
    let target = head
        .get(path_span.clone())
        .ok_or(Refusal::Bad("head offsets"))?;
    if target.is_empty() {
        return Err(Refusal::Bad("empty target"));
    }
    let uri =
        Uri::from_maybe_shared(head.slice(path_span)).map_err(|_| Refusal::Bad("bad target"))?;
    let headers = fields::header_map(&head, &spans[..count]).map_err(Refusal::Bad)?;
    if version == Version::HTTP_10 && headers.contains_key(header::TRANSFER_ENCODING) {
        // HTTP/1.0 has no transfer codings: its framing is faulty (RFC 9112 §6.1), and a
        // front end that ignores the field would see other request boundaries.
        return Err(Refusal::Bad("Transfer-Encoding in an HTTP/1.0 request"));
    }
    let framing = framing(&headers)?;
    let keep_alive = fields::persistent(version, &headers);
    let expects_continue = version == Version::HTTP_11
        && framing != BodyFraming::Empty
        && headers
            .get(header::EXPECT)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    Ok(Some(RequestHead {
        method,
        uri,
        version,
        headers,
        framing,
        keep_alive,
        expects_continue,
    }))
}

/// A request's body framing (RFC 9112 §6.3): chunked when `Transfer-Encoding` ends in it, a
/// length when `Content-Length` gives one, else none. Everything else is refused.
fn framing(headers: &HeaderMap) -> Result<BodyFraming, Refusal> {
    if headers.contains_key(header::TRANSFER_ENCODING) {
        if headers.contains_key(header::CONTENT_LENGTH) {
            return Err(Refusal::Bad(
                "conflicting Content-Length and Transfer-Encoding",
            ));
        }
        if !fields::chunked_is_final(headers) {
            return Err(Refusal::Bad("unsupported Transfer-Encoding"));
        }
        return Ok(BodyFraming::Chunked);
    }
    match fields::content_length(headers) {
        Ok(Some(0) | None) => Ok(BodyFraming::Empty),
        Ok(Some(n)) => Ok(BodyFraming::Length(n)),
        Err(()) => Err(Refusal::Bad("invalid Content-Length")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_str(text: &str) -> Result<Option<(RequestHead, BytesMut)>, Refusal> {
        let mut buf = BytesMut::from(text.as_bytes());
        Ok(parse(&mut buf, 8 * 1024)?.map(|h| (h, buf)))
    }

    fn ok(text: &str) -> (RequestHead, BytesMut) {
        parse_str(text).expect("valid").expect("complete")
    }

    #[test]
    fn a_head_is_split_off_and_the_body_stays() {
        let (head, rest) = ok(
            "POST /cart?x=1 HTTP/1.1\r\nHost: shop\r\nContent-Length: 3\r\nX-A: 1\r\nX-A: 2\r\n\r\nabc",
        );
        assert_eq!(head.method, Method::POST);
        assert_eq!(
            head.uri.path_and_query().map(|p| p.as_str()),
            Some("/cart?x=1")
        );
        assert_eq!(head.version, Version::HTTP_11);
        assert_eq!(head.framing, BodyFraming::Length(3));
        assert!(head.keep_alive);
        assert!(!head.expects_continue);
        assert_eq!(head.headers.get_all("x-a").iter().count(), 2);
        assert_eq!(&rest[..], b"abc");
    }

    #[test]
    fn incomplete_heads_ask_for_more_until_too_large() {
        assert!(
            parse_str("GET / HTTP/1.1\r\nHost: a")
                .expect("valid")
                .is_none()
        );
        let mut big = BytesMut::from(format!("GET / HTTP/1.1\r\nX: {}", "a".repeat(9000)).as_str());
        assert_eq!(parse(&mut big, 8 * 1024).unwrap_err(), Refusal::TooLarge);
        let many: String = (0..MAX_FIELDS + 1)
            .map(|i| format!("X-{i}: 1\r\n"))
            .collect();
        let mut buf = BytesMut::from(format!("GET / HTTP/1.1\r\n{many}\r\n").as_str());
        assert_eq!(parse(&mut buf, 64 * 1024).unwrap_err(), Refusal::TooLarge);
    }

    #[test]
    fn smuggling_and_junk_are_refused() {
        for bad in [
            "POST / HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
            "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n",
            "POST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n",
            "POST / HTTP/1.1\r\nContent-Length: 3, 4\r\n\r\n",
            "POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
            "POST / HTTP/1.1\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
            "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            "GET / HTTP/2.0\r\n\r\n",
            "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
            "GET /a b HTTP/1.1\r\n\r\n",
            "GET / HTTP/1.1\r\nBad Name: 1\r\n\r\n",
            "\x01GET / HTTP/1.1\r\n\r\n",
        ] {
            assert!(
                matches!(parse_str(bad), Err(Refusal::Bad(_))),
                "{bad:?} gave {:?}",
                parse_str(bad).map(|o| o.map(|(h, _)| h))
            );
        }
        assert_eq!(
            parse_str("CONNECT a:443 HTTP/1.1\r\n\r\n").unwrap_err(),
            Refusal::NotImplemented
        );
    }

    #[test]
    fn framing_persistence_and_expectations() {
        let (h, _) = ok("POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n");
        assert_eq!(h.framing, BodyFraming::Chunked);
        let (h, _) = ok("POST / HTTP/1.1\r\nContent-Length: 0\r\nExpect: 100-continue\r\n\r\n");
        assert_eq!(h.framing, BodyFraming::Empty);
        assert!(!h.expects_continue, "no body, nothing to continue");
        let (h, _) = ok("PUT / HTTP/1.1\r\nContent-Length: 5\r\nExpect: 100-Continue\r\n\r\n");
        assert!(h.expects_continue);
        let (h, _) = ok("GET / HTTP/1.0\r\n\r\n");
        assert!(!h.keep_alive);
        let (h, _) = ok("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
        assert!(h.keep_alive);
        let (h, _) = ok("GET / HTTP/1.1\r\nConnection: close\r\n\r\n");
        assert!(!h.keep_alive);
        let (h, _) = ok("GET http://shop.example/p?q HTTP/1.1\r\n\r\n");
        assert_eq!(h.uri.authority().map(|a| a.as_str()), Some("shop.example"));
        let (h, _) = ok("OPTIONS * HTTP/1.1\r\n\r\n");
        assert_eq!(h.method, Method::OPTIONS);
    }
}
