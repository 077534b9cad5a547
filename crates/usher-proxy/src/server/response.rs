//! Writing a response to the client: the status line and fields (with `Date`, the framing and
//! `Connection` decided here), then the body, coalesced so that a small response goes out in
//! one write together with its head.

use std::cell::RefCell;
use std::future::poll_fn;
use std::io::{self, Write as _};
use std::pin::Pin;
use std::task::Poll;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::BytesMut;
use http::header::{self, HeaderMap};
use http::{Response, StatusCode, Version};
use http_body::Body as _;
use tokio::io::AsyncWriteExt as _;

use super::io::WriteHalf;
use crate::body::ResponseBody;

/// Bytes gathered before a write while more body is ready.
const COALESCE: usize = 32 * 1024;

/// How the body goes on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    /// No body may follow (HEAD, 1xx, 204, 304): the fields pass through as they are.
    None,
    /// `Content-Length`.
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
    /// Until the connection closes (an HTTP/1.0 client and a length not known in advance).
    Close,
}

/// What the exchange asks of the response.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Exchange {
    /// The request was `HEAD`.
    pub head_request: bool,
    /// The request's version.
    pub version: Version,
    /// The connection closes after this response.
    pub close: bool,
}

/// Writes `res`. `Ok(true)`: written whole with framing that lets the connection carry another
/// request; `Ok(false)`: written, but the connection must close (the body's end is the close).
pub(crate) async fn write(
    wr: &mut WriteHalf,
    res: Response<ResponseBody>,
    ex: Exchange,
) -> io::Result<bool> {
    let (parts, mut body) = res.into_parts();
    let status = parts.status;
    let framing = if ex.head_request
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
    {
        Framing::None
    } else if let Some(n) = body.size_hint().exact() {
        Framing::Length(n)
    } else if ex.version == Version::HTTP_11 {
        Framing::Chunked
    } else {
        Framing::Close
    };
    let close = ex.close || framing == Framing::Close;
    let mut out = BytesMut::with_capacity(512);
    encode_head(&mut out, status, &parts.headers, framing, close, ex.version);
    if framing == Framing::None {
        drop(body);
        wr.write_all(&out).await?;
        wr.flush().await?;
        return Ok(!close);
    }
    let mut sent: u64 = 0;
    loop {
        // Whatever is ready now is gathered; only when the body must wait is it written.
        let mut frame = poll_fn(|cx| Poll::Ready(Pin::new(&mut body).poll_frame(cx))).await;
        if frame.is_pending() {
            if !out.is_empty() {
                wr.write_all(&out).await?;
                wr.flush().await?;
                out.clear();
            }
            frame = Poll::Ready(poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await);
        }
        let Poll::Ready(frame) = frame else {
            continue;
        };
        match frame {
            Some(Ok(frame)) => {
                let Ok(data) = frame.into_data() else {
                    continue; // trailers are not forwarded
                };
                if data.is_empty() {
                    continue;
                }
                sent += data.len() as u64;
                if let Framing::Length(n) = framing
                    && sent > n
                {
                    return Err(io::Error::other("response body longer than its length"));
                }
                if framing == Framing::Chunked {
                    put_number(&mut out, data.len() as u64, 16);
                    out.extend_from_slice(b"\r\n");
                    out.extend_from_slice(&data);
                    out.extend_from_slice(b"\r\n");
                } else {
                    out.extend_from_slice(&data);
                }
                if out.len() >= COALESCE {
                    wr.write_all(&out).await?;
                    out.clear();
                }
            }
            None => {
                if framing == Framing::Chunked {
                    out.extend_from_slice(b"0\r\n\r\n");
                }
                wr.write_all(&out).await?;
                wr.flush().await?;
                if let Framing::Length(n) = framing
                    && sent != n
                {
                    return Err(io::Error::other("response body shorter than its length"));
                }
                return Ok(!close);
            }
            Some(Err(e)) => {
                // Send what there is; the close tells the client the body is cut short.
                let _ = wr.write_all(&out).await;
                return Err(io::Error::other(e));
            }
        }
    }
}

/// The status line and fields. Framing fields of the message are replaced by the ones the
/// proxy writes; `Connection` carries `close`, or `keep-alive` for an HTTP/1.0 client.
fn encode_head(
    out: &mut BytesMut,
    status: StatusCode,
    headers: &HeaderMap,
    framing: Framing,
    close: bool,
    version: Version,
) {
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.extend_from_slice(b" ");
    out.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
    let mut dated = false;
    for (name, value) in headers {
        if framing != Framing::None
            && (name == header::CONTENT_LENGTH || name == header::TRANSFER_ENCODING)
        {
            continue;
        }
        dated |= name == header::DATE;
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    if !dated {
        out.extend_from_slice(b"date: ");
        date(out);
        out.extend_from_slice(b"\r\n");
    }
    match framing {
        Framing::Length(n) => {
            out.extend_from_slice(b"content-length: ");
            put_number(out, n, 10);
            out.extend_from_slice(b"\r\n");
        }
        Framing::Chunked => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
        Framing::None | Framing::Close => {}
    }
    if status != StatusCode::SWITCHING_PROTOCOLS {
        if close {
            out.extend_from_slice(b"connection: close\r\n");
        } else if version == Version::HTTP_10 {
            out.extend_from_slice(b"connection: keep-alive\r\n");
        }
    }
    out.extend_from_slice(b"\r\n");
}

/// Appends `n` in `radix` (10 or 16, lower-case) without the formatting machinery.
fn put_number(out: &mut BytesMut, mut n: u64, radix: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b"0123456789abcdef"[(n % radix) as usize];
        n /= radix;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[at..]);
}

thread_local! {
    /// The `Date` value of the current second, formatted once per second per thread.
    static DATE: RefCell<(u64, [u8; 29])> = const { RefCell::new((0, [b' '; 29])) };
}

/// Appends the current time as an IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`).
fn date(out: &mut BytesMut) {
    let now = SystemTime::now();
    let secs = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    DATE.with(|cell| {
        let mut cached = cell.borrow_mut();
        if cached.0 != secs {
            let mut text = [b' '; 29];
            let _ = write!(&mut text[..], "{}", httpdate::HttpDate::from(now));
            *cached = (secs, text);
        }
        out.extend_from_slice(&cached.1);
    });
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;

    fn head(status: StatusCode, headers: &HeaderMap, framing: Framing, close: bool) -> String {
        let mut out = BytesMut::new();
        encode_head(&mut out, status, headers, framing, close, Version::HTTP_11);
        String::from_utf8(out.to_vec()).expect("ascii")
    }

    #[test]
    fn framing_fields_are_the_proxys_own() {
        let mut h = HeaderMap::new();
        h.insert(header::CONTENT_LENGTH, HeaderValue::from_static("99"));
        h.insert("x-a", HeaderValue::from_static("1"));
        let text = head(StatusCode::OK, &h, Framing::Length(3), false);
        assert!(
            text.starts_with("HTTP/1.1 200 OK\r\nx-a: 1\r\ndate: "),
            "{text}"
        );
        assert!(
            text.ends_with(" GMT\r\ncontent-length: 3\r\n\r\n"),
            "{text}"
        );
        let text = head(StatusCode::OK, &h, Framing::Chunked, true);
        assert!(!text.contains("99"), "{text}");
        assert!(text.ends_with("transfer-encoding: chunked\r\nconnection: close\r\n\r\n"));
        // HEAD, 204, 304: the fields are the backend's, length included.
        let text = head(StatusCode::NOT_MODIFIED, &h, Framing::None, false);
        assert!(text.contains("content-length: 99\r\n"), "{text}");
    }

    #[test]
    fn numbers_are_written_in_either_radix() {
        for (n, radix, text) in [
            (0, 10, "0"),
            (1234567890, 10, "1234567890"),
            (u64::MAX, 10, "18446744073709551615"),
            (255, 16, "ff"),
            (u64::MAX, 16, "ffffffffffffffff"),
        ] {
            let mut out = BytesMut::new();
            put_number(&mut out, n, radix);
            assert_eq!(&out[..], text.as_bytes(), "{n} in {radix}");
        }
    }

    #[test]
    fn an_http10_client_is_told_the_connection_stays() {
        let mut out = BytesMut::new();
        encode_head(
            &mut out,
            StatusCode::OK,
            &HeaderMap::new(),
            Framing::Length(0),
            false,
            Version::HTTP_10,
        );
        assert!(out.ends_with(b"connection: keep-alive\r\n\r\n"));
    }

    #[test]
    fn the_date_is_an_imf_fixdate() {
        let mut out = BytesMut::new();
        date(&mut out);
        let text = std::str::from_utf8(&out).expect("ascii");
        assert_eq!(text.len(), 29);
        assert!(httpdate::parse_http_date(text).is_ok(), "{text}");
    }
}
