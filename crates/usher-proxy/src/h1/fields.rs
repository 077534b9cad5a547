//! Header fields of a parsed head: a `HeaderMap` whose values point into the head's own buffer
//! (no allocation per value), and the framing and persistence rules of RFC 9112 that read them.

use bytes::Bytes;
use http::Version;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};

/// Most header fields accepted in one head (hyper's default too).
pub(crate) const MAX_FIELDS: usize = 100;

/// Where one field's name and value lie in the head: start and end offsets of each.
pub(crate) type Span = (u32, u32, u32, u32);

/// Records where each of `fields` lies relative to `base` (the buffer httparse parsed), so the
/// head can be frozen into one shared buffer before the values are made to point into it.
/// Returns how many spans were written.
pub(crate) fn spans(base: &[u8], fields: &[httparse::Header<'_>], out: &mut [Span]) -> usize {
    let origin = base.as_ptr() as usize;
    let at = |p: *const u8, len: usize| {
        let start = (p as usize).wrapping_sub(origin);
        (
            u32::try_from(start).unwrap_or(u32::MAX),
            u32::try_from(start + len).unwrap_or(u32::MAX),
        )
    };
    let mut n = 0;
    for (span, h) in out.iter_mut().zip(fields) {
        let (ns, ne) = at(h.name.as_ptr(), h.name.len());
        let (vs, ve) = at(h.value.as_ptr(), h.value.len());
        *span = (ns, ne, vs, ve);
        n += 1;
    }
    n
}

/// Room left in a parsed head's `HeaderMap` for the fields the proxy adds (forwarding headers,
/// a request id, an affinity cookie): growing a `HeaderMap` rehashes it, which was a tenth of
/// the proxy's instructions per request when maps were sized to the parsed fields alone.
const ADDED_FIELDS: usize = 8;

/// The fields at `spans` of `head` as a `HeaderMap`; values share `head`'s buffer.
pub(crate) fn header_map(head: &Bytes, spans: &[Span]) -> Result<HeaderMap, &'static str> {
    let mut headers = HeaderMap::with_capacity(spans.len() + ADDED_FIELDS);
    for &(ns, ne, vs, ve) in spans {
        let (ns, ne, vs, ve) = (ns as usize, ne as usize, vs as usize, ve as usize);
        let name = head.get(ns..ne).ok_or("head offsets")?;
        let name = HeaderName::from_bytes(name).map_err(|_| "invalid field name")?;
        if ve > head.len() || vs > ve {
            return Err("head offsets");
        }
        let value = HeaderValue::from_maybe_shared(head.slice(vs..ve))
            .map_err(|_| "invalid field value")?;
        headers.append(name, value);
    }
    Ok(headers)
}

/// The message's `Content-Length`: `Ok(None)` when absent; an error unless every field and
/// list member is the same plain decimal number (RFC 9112 §6.3 items 5 and 6).
pub(crate) fn content_length(headers: &HeaderMap) -> Result<Option<u64>, ()> {
    // The common case, one field of plain digits, without text handling.
    let mut all = headers.get_all(header::CONTENT_LENGTH).iter();
    if let (Some(one), None) = (all.next(), all.next())
        && let Some(n) = digits(one.as_bytes())
    {
        return Ok(Some(n));
    }
    let mut length: Option<u64> = None;
    for v in headers.get_all(header::CONTENT_LENGTH) {
        let text = v.to_str().map_err(|_| ())?;
        for part in text.split(',') {
            let part = part.trim();
            if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
                return Err(());
            }
            let n: u64 = part.parse().map_err(|_| ())?;
            if length.is_some_and(|l| l != n) {
                return Err(());
            }
            length = Some(n);
        }
    }
    Ok(length)
}

/// A non-empty run of ASCII digits that fits a `u64`.
fn digits(b: &[u8]) -> Option<u64> {
    if b.is_empty() || b.len() > 19 {
        return None;
    }
    b.iter().try_fold(0u64, |n, &d| {
        d.is_ascii_digit().then(|| n * 10 + u64::from(d - b'0'))
    })
}

/// Whether `chunked` is the final transfer coding named by `Transfer-Encoding`.
pub(crate) fn chunked_is_final(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::TRANSFER_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .rfind(|t| !t.is_empty())
        .is_some_and(|t| t.eq_ignore_ascii_case("chunked"))
}

/// Whether a comma-separated field `name` lists `token` (case-insensitive).
pub(crate) fn has_token(headers: &HeaderMap, name: &HeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// HTTP/1.1 persists unless `Connection: close`; HTTP/1.0 only with `Connection: keep-alive`.
pub(crate) fn persistent(version: Version, headers: &HeaderMap) -> bool {
    match version {
        Version::HTTP_11 => !has_token(headers, &header::CONNECTION, "close"),
        _ => has_token(headers, &header::CONNECTION, "keep-alive"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (n, v) in pairs {
            h.append(*n, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn content_length_must_be_one_plain_number() {
        assert_eq!(content_length(&map(&[])), Ok(None));
        assert_eq!(
            content_length(&map(&[("content-length", "4, 4"), ("content-length", "4")])),
            Ok(Some(4))
        );
        for bad in ["4, 5", "+4", "", "0x10", "-1"] {
            assert!(
                content_length(&map(&[("content-length", bad)])).is_err(),
                "{bad}"
            );
        }
        assert!(content_length(&map(&[("content-length", "4"), ("content-length", "5")])).is_err());
    }

    #[test]
    fn chunked_counts_only_when_final() {
        assert!(chunked_is_final(&map(&[(
            "transfer-encoding",
            "gzip, chunked"
        )])));
        assert!(chunked_is_final(&map(&[
            ("transfer-encoding", "gzip"),
            ("transfer-encoding", "Chunked")
        ])));
        assert!(!chunked_is_final(&map(&[(
            "transfer-encoding",
            "chunked, gzip"
        )])));
        assert!(!chunked_is_final(&map(&[])));
    }

    #[test]
    fn persistence_follows_the_version() {
        assert!(persistent(Version::HTTP_11, &map(&[])));
        assert!(!persistent(
            Version::HTTP_11,
            &map(&[("connection", "foo, Close")])
        ));
        assert!(!persistent(Version::HTTP_10, &map(&[])));
        assert!(persistent(
            Version::HTTP_10,
            &map(&[("connection", "keep-alive")])
        ));
    }
}
