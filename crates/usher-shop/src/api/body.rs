//! [`ApiJson`]: the JSON body extractor every API route uses, so that every kind of bad body gets
//! the same clear 4xx JSON error instead of axum's plain-text rejections.
//!
//! * Not `application/json` → 415. Larger than [`MAX_BODY`] → 413. Not UTF-8 → 400
//!   `not_utf8`. Malformed JSON → 400 `bad_json`. Well-formed but wrong shape (unknown field,
//!   missing field, wrong type, number out of range) → 422 `invalid_body`.
//! * An oversized body is read on (up to [`DRAIN_LIMIT`] bytes or [`DRAIN_TIME`]) before
//!   answering. Closing a socket with unread bytes makes the kernel send a reset, which can reach
//!   the client before it reads our 413 — it would see "connection reset" instead of the error.

use std::time::Duration;

use axum::body::Body;
use axum::extract::{FromRequest, Request};
use axum::http::{StatusCode, header};
use http_body_util::BodyExt as _;
use serde::de::DeserializeOwned;

use crate::error::ApiError;

/// Largest accepted request body, bytes. API bodies are a few dozen bytes.
pub const MAX_BODY: usize = 16 * 1024;
/// How much of an oversized body is read and discarded before answering 413.
pub const DRAIN_LIMIT: usize = 4 * 1024 * 1024;
/// How long an oversized body is drained at most.
pub const DRAIN_TIME: Duration = Duration::from_secs(2);

/// A JSON request body deserialized as `T` (give `T` `#[serde(deny_unknown_fields)]`).
#[derive(Debug)]
pub struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, _state: &S) -> Result<Self, Self::Rejection> {
        let json = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(is_json);
        if !json {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "send the body as Content-Type: application/json",
            ));
        }
        let bytes = read_limited(req.into_body()).await?;
        parse(&bytes).map(ApiJson)
    }
}

fn is_json(content_type: &str) -> bool {
    let mime = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    mime == "application/json" || (mime.starts_with("application/") && mime.ends_with("+json"))
}

/// The whole body if it is at most [`MAX_BODY`] bytes; 413 (after draining) otherwise.
pub async fn read_limited(mut body: Body) -> Result<Vec<u8>, ApiError> {
    let mut buf = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|_| {
            ApiError::bad_request("body_read_failed", "the request body could not be read")
        })?;
        let Ok(data) = frame.into_data() else {
            continue; // trailers
        };
        if buf.len() + data.len() > MAX_BODY {
            drain(body, buf.len() + data.len()).await;
            return Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                format!("request bodies are limited to {MAX_BODY} bytes"),
            )
            .with("limit", MAX_BODY));
        }
        buf.extend_from_slice(&data);
    }
    Ok(buf)
}

async fn drain(mut body: Body, mut seen: usize) {
    let _ = tokio::time::timeout(DRAIN_TIME, async {
        while seen <= DRAIN_LIMIT {
            match body.frame().await {
                Some(Ok(frame)) => seen += frame.data_ref().map_or(0, |d| d.len()),
                _ => break,
            }
        }
    })
    .await;
}

/// Decodes a JSON body; see the module docs for the statuses.
pub fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let text = std::str::from_utf8(bytes)
        .map_err(|_| ApiError::bad_request("not_utf8", "the request body is not valid UTF-8"))?;
    serde_json::from_str(text).map_err(|e| {
        use serde_json::error::Category;
        match e.classify() {
            Category::Data => ApiError::invalid("invalid_body", e.to_string()),
            Category::Syntax | Category::Eof | Category::Io => {
                ApiError::bad_request("bad_json", format!("the body is not valid JSON: {e}"))
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    use super::*;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Item {
        #[allow(dead_code)]
        qty: i64,
    }

    fn code(r: Result<Item, ApiError>) -> (StatusCode, &'static str) {
        let e = r.unwrap_err();
        (e.status, e.code)
    }

    #[test]
    fn bad_bodies_get_their_own_codes() {
        assert!(parse::<Item>(br#"{"qty": 2}"#).is_ok());
        let cases: [(&[u8], StatusCode, &str); 7] = [
            (b"\xff\xfe", StatusCode::BAD_REQUEST, "not_utf8"),
            (b"{", StatusCode::BAD_REQUEST, "bad_json"),
            (b"", StatusCode::BAD_REQUEST, "bad_json"),
            (
                br#"{"qty": 1, "x": 2}"#,
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_body",
            ),
            (
                br#"{"qty": "2"}"#,
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_body",
            ),
            (
                br#"{"qty": 1e40}"#,
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_body",
            ),
            (br#"{}"#, StatusCode::UNPROCESSABLE_ENTITY, "invalid_body"),
        ];
        for (body, status, c) in cases {
            assert_eq!(code(parse(body)), (status, c), "{body:?}");
        }
    }

    #[test]
    fn json_content_types() {
        assert!(is_json("application/json"));
        assert!(is_json("Application/JSON; charset=utf-8"));
        assert!(is_json("application/problem+json"));
        assert!(!is_json("text/plain"));
        assert!(!is_json("application/x-www-form-urlencoded"));
    }

    #[tokio::test]
    async fn oversized_bodies_are_413() {
        let ok = read_limited(Body::from(vec![b'a'; MAX_BODY]))
            .await
            .unwrap();
        assert_eq!(ok.len(), MAX_BODY);
        let e = read_limited(Body::from(vec![b'a'; MAX_BODY + 1]))
            .await
            .unwrap_err();
        assert_eq!(e.status, StatusCode::PAYLOAD_TOO_LARGE);
    }
}
