//! [`SessionError`]: what can go wrong with a session inside a request, and the one place it maps
//! to an HTTP status.

use std::time::Duration;

use http::StatusCode;

use crate::error::StoreError;

/// An error from the [`crate::Session`] handle or from the layer's save after the handler ran.
///
/// [`SessionError::status`] is the single mapping to HTTP; with feature `axum` the error is also an
/// `IntoResponse` that adds `Retry-After` where the store is at fault.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SessionError {
    /// The store failed (down, timing out, or holding undecodable data). 503 with `Retry-After`.
    #[error("session store unavailable")]
    Unavailable {
        /// The store's error.
        #[source]
        source: StoreError,
        /// What to tell the client in `Retry-After`.
        retry_after: Duration,
    },
    /// The store is down and the session is served read-only from the local cache, so it cannot
    /// be changed now. 503 with `Retry-After`.
    #[error("session store unavailable; the session is read-only until it is back")]
    ReadOnly {
        /// What to tell the client in `Retry-After`.
        retry_after: Duration,
    },
    /// The session ended during the request (a logout elsewhere, or expiry). 401: the client is
    /// signed out, and the layer clears its cookie.
    #[error("the session ended during the request")]
    Gone,
    /// Concurrent writers kept winning the compare-and-swap. 409; retrying the request is safe.
    #[error("session write lost {attempts} compare-and-swap races in a row")]
    Conflict {
        /// How many attempts were made.
        attempts: usize,
    },
    /// A field operation does not fit the field's stored value (e.g. incrementing a string). 422.
    #[error("invalid session field operation")]
    InvalidOp(#[source] StoreError),
    /// A stored field does not deserialize into the requested type: a bug or an old format. 500.
    #[error("session field `{field}` does not have the expected type")]
    Decode {
        /// The field read.
        field: String,
        /// Why it did not deserialize.
        #[source]
        source: serde_json::Error,
    },
    /// A value could not be serialized to JSON for storing (a bug in the caller). 500.
    #[error("value for session field `{field}` cannot be serialized")]
    Encode {
        /// The field written.
        field: String,
        /// Why it did not serialize.
        #[source]
        source: serde_json::Error,
    },
    /// A handler asked for the session on a route without a [`crate::SessionLayer`] (a wiring
    /// bug). 500.
    #[error("no SessionLayer is installed on this route")]
    MissingLayer,
}

impl SessionError {
    /// The HTTP status this error means for the request.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::Unavailable { .. } | Self::ReadOnly { .. } => StatusCode::SERVICE_UNAVAILABLE,
            Self::Gone => StatusCode::UNAUTHORIZED,
            Self::Conflict { .. } => StatusCode::CONFLICT,
            Self::InvalidOp(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Self::Decode { .. } | Self::Encode { .. } | Self::MissingLayer => {
                StatusCode::INTERNAL_SERVER_ERROR
            }
        }
    }

    /// The `Retry-After` to send, when the store is at fault.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::Unavailable { retry_after, .. } | Self::ReadOnly { retry_after } => {
                Some(*retry_after)
            }
            _ => None,
        }
    }

    /// A short, stable, client-safe code for JSON error bodies (no store details leak).
    pub fn code(&self) -> &'static str {
        match self {
            Self::Unavailable { .. } => "session_store_unavailable",
            Self::ReadOnly { .. } => "session_read_only",
            Self::Gone => "session_ended",
            Self::Conflict { .. } => "session_conflict",
            Self::InvalidOp(_) => "invalid_session_operation",
            Self::Decode { .. } | Self::Encode { .. } | Self::MissingLayer => "internal_error",
        }
    }
}

/// `Retry-After` in whole seconds, at least 1 (RFC 9110 §10.2.3 takes delay-seconds).
pub(crate) fn retry_after_secs(d: Duration) -> u64 {
    d.as_secs().max(1) + u64::from(d.subsec_nanos() > 0 && d.as_secs() >= 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses() {
        let down = SessionError::Unavailable {
            source: StoreError::unavailable(std::io::Error::other("x")),
            retry_after: Duration::from_millis(1500),
        };
        assert_eq!(down.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(down.retry_after(), Some(Duration::from_millis(1500)));
        assert_eq!(SessionError::Gone.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(SessionError::Gone.retry_after(), None);
        assert_eq!(
            SessionError::Conflict { attempts: 3 }.status(),
            StatusCode::CONFLICT
        );
    }

    #[test]
    fn retry_after_rounds_up_to_whole_seconds() {
        assert_eq!(retry_after_secs(Duration::ZERO), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(200)), 1);
        assert_eq!(retry_after_secs(Duration::from_secs(2)), 2);
        assert_eq!(retry_after_secs(Duration::from_millis(2500)), 3);
    }
}
