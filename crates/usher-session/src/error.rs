//! The one error type every store returns, and its classification for the HTTP layer.

use std::error::Error as StdError;

/// Why stored session bytes could not be decoded (or data could not be encoded).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CodecError {
    /// The stored value was empty: not even a format byte.
    #[error("empty session data")]
    Empty,
    /// The format byte names a format this build does not know (written by a newer build?).
    #[error("unknown session data format {0}")]
    UnknownFormat(u8),
    /// The JSON payload did not parse or did not serialize.
    #[error("session data is not valid JSON")]
    Json(#[source] serde_json::Error),
    /// The JSON payload parsed but is not an object.
    #[error("session data is not a JSON object")]
    NotAnObject,
    /// A stored column other than the data holds an impossible value (negative time, ...).
    #[error("stored column `{0}` is out of range")]
    Column(&'static str),
}

/// An error from a [`crate::SessionStore`] operation.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// Compare-and-swap failed: the stored version is not the expected one (or a create found a
    /// live session). Reload and retry, or report a conflict.
    #[error("session version conflict (stored version is {current})")]
    Conflict {
        /// The version currently stored.
        current: u64,
    },
    /// The session was deleted (logged out) and its tombstone is still in force; late writes fail.
    #[error("session was deleted")]
    Deleted,
    /// No live session under this key (never existed, expired, or its tombstone has lapsed).
    #[error("session not found or expired")]
    NotFound,
    /// A field operation does not fit the field's current value (e.g. incrementing a string).
    #[error("invalid operation on session field `{field}`: {reason}")]
    InvalidOp {
        /// The field the operation addressed.
        field: String,
        /// What was wrong.
        reason: &'static str,
    },
    /// Stored data could not be decoded. Never a panic.
    #[error("stored session data is corrupt")]
    Corrupt(#[from] CodecError),
    /// The backing store failed (I/O, lock timeout, a crashed worker task, ...).
    #[error("session store unavailable")]
    Unavailable(#[source] Box<dyn StdError + Send + Sync + 'static>),
}

/// Who is at fault for a [`StoreError`]: the one place a later layer maps errors to statuses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// The request cannot succeed as sent: the session is gone, or the operation is invalid
    /// (a 4xx; a gone session usually means "treat as logged out").
    Client,
    /// A concurrent writer won the compare-and-swap (409, or retry after reloading).
    Conflict,
    /// The store failed or holds undecodable data (503).
    Unavailable,
}

impl StoreError {
    /// Wraps a backend error as [`StoreError::Unavailable`].
    pub fn unavailable(err: impl Into<Box<dyn StdError + Send + Sync + 'static>>) -> Self {
        Self::Unavailable(err.into())
    }

    /// Classifies the error. [`StoreError::Corrupt`] counts as [`ErrorClass::Unavailable`]: it is
    /// the server's fault, though a layer may choose to drop such a session instead.
    pub fn class(&self) -> ErrorClass {
        match self {
            Self::Deleted | Self::NotFound | Self::InvalidOp { .. } => ErrorClass::Client,
            Self::Conflict { .. } => ErrorClass::Conflict,
            Self::Corrupt(_) | Self::Unavailable(_) => ErrorClass::Unavailable,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes() {
        assert_eq!(StoreError::Deleted.class(), ErrorClass::Client);
        assert_eq!(StoreError::NotFound.class(), ErrorClass::Client);
        assert_eq!(
            StoreError::Conflict { current: 3 }.class(),
            ErrorClass::Conflict
        );
        assert_eq!(
            StoreError::Corrupt(CodecError::Empty).class(),
            ErrorClass::Unavailable
        );
        let e = StoreError::unavailable(std::io::Error::other("disk"));
        assert_eq!(e.class(), ErrorClass::Unavailable);
        assert!(e.source().is_some(), "the source is kept");
    }
}
