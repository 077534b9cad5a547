//! [`IdempotencyError`]: every answer the layer gives instead of running the handler, and the one
//! place each maps to a status.

use std::time::Duration;

use bytes::Bytes;
use http::header::{CONTENT_TYPE, RETRY_AFTER};
use http::{HeaderValue, Response, StatusCode};

use crate::error::StoreError;

/// Why the layer answered itself. Bodies are `application/problem+json` (RFC 9457), as the
/// draft's examples use.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IdempotencyError {
    /// The route requires `Idempotency-Key` and the request has none. 400.
    #[error("this request requires an Idempotency-Key header")]
    MissingKey,
    /// The header is present but not a valid key (or present twice). 400.
    #[error("the Idempotency-Key header is malformed")]
    MalformedKey,
    /// No principal and the layer is configured to refuse anonymous keys. 401.
    #[error("idempotent requests require authentication")]
    Anonymous,
    /// The body is larger than the layer buffers for fingerprinting. 413.
    #[error("request body too large to fingerprint")]
    BodyTooLarge,
    /// The request body could not be read. 400.
    #[error("request body could not be read")]
    BodyRead(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// A request with this key is still running. 409 with `Retry-After`.
    #[error("a request with this Idempotency-Key is still being processed")]
    InFlight {
        /// When to try again.
        retry_after: Duration,
    },
    /// The key was used with a different request (method, path or body). 422.
    #[error("this Idempotency-Key was already used for a different request")]
    KeyReused,
    /// The record store failed (or holds an undecodable record). 503 with `Retry-After`.
    #[error("idempotency store unavailable")]
    Unavailable {
        /// The store's error.
        #[source]
        source: StoreError,
        /// When to try again.
        retry_after: Duration,
    },
}

impl IdempotencyError {
    /// The status this error answers with.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::MissingKey | Self::MalformedKey | Self::BodyRead(_) => StatusCode::BAD_REQUEST,
            Self::Anonymous => StatusCode::UNAUTHORIZED,
            Self::BodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::InFlight { .. } => StatusCode::CONFLICT,
            Self::KeyReused => StatusCode::UNPROCESSABLE_ENTITY,
            Self::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// The `Retry-After` sent, if any.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::InFlight { retry_after } | Self::Unavailable { retry_after, .. } => {
                Some(*retry_after)
            }
            _ => None,
        }
    }

    /// A stable, client-safe code.
    pub fn code(&self) -> &'static str {
        match self {
            Self::MissingKey => "idempotency_key_missing",
            Self::MalformedKey => "idempotency_key_malformed",
            Self::Anonymous => "idempotency_requires_auth",
            Self::BodyTooLarge => "idempotency_body_too_large",
            Self::BodyRead(_) => "idempotency_body_unreadable",
            Self::InFlight { .. } => "idempotency_key_in_flight",
            Self::KeyReused => "idempotency_key_reused",
            Self::Unavailable { .. } => "idempotency_store_unavailable",
        }
    }

    /// The response: status, `Retry-After` where it applies, a problem+json body.
    pub fn to_response<B: From<Bytes>>(&self) -> Response<B> {
        let body = serde_json::json!({
            "type": "about:blank",
            "title": self.to_string(),
            "status": self.status().as_u16(),
            "code": self.code(),
        });
        let mut res = Response::new(B::from(Bytes::from(body.to_string())));
        *res.status_mut() = self.status();
        let h = res.headers_mut();
        h.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if let Some(after) = self.retry_after() {
            let secs = after.as_secs().max(1)
                + u64::from(after.subsec_nanos() > 0 && after.as_secs() >= 1);
            h.insert(RETRY_AFTER, HeaderValue::from(secs));
        }
        res
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_and_retry_after() {
        let r: Response<Bytes> = IdempotencyError::InFlight {
            retry_after: Duration::from_millis(1500),
        }
        .to_response();
        assert_eq!(r.status(), StatusCode::CONFLICT);
        assert_eq!(r.headers()[RETRY_AFTER], "2");
        assert_eq!(
            IdempotencyError::KeyReused.status(),
            StatusCode::UNPROCESSABLE_ENTITY
        );
        assert_eq!(
            IdempotencyError::MissingKey.status(),
            StatusCode::BAD_REQUEST
        );
        let down = IdempotencyError::Unavailable {
            source: StoreError::unavailable(std::io::Error::other("x")),
            retry_after: Duration::from_secs(1),
        };
        let r: Response<Bytes> = down.to_response();
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(r.headers()[RETRY_AFTER], "1");
        assert!(std::error::Error::source(&down).is_some());
    }
}
