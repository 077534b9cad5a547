//! Backend identity and the caller-supplied view of live load.

use std::fmt;
use std::sync::Arc;

/// A backend's stable id (`shop-0`, `api-3`, …).
///
/// Ids, never addresses, are what clients can learn about (and even ids only travel sealed).
/// Allowed: 1–64 characters from `[A-Za-z0-9._-]`. Cloning is cheap (shared string).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BackendId(Arc<str>);

/// Why a string is not a valid [`BackendId`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid backend id {0:?}: use 1-64 characters from A-Z a-z 0-9 . _ -")]
pub struct InvalidBackendId(pub String);

impl BackendId {
    /// Longest id accepted.
    pub const MAX_LEN: usize = 64;

    /// Validates and wraps an id.
    pub fn new(id: &str) -> Result<Self, InvalidBackendId> {
        let ok = !id.is_empty()
            && id.len() <= Self::MAX_LEN
            && id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
        if ok {
            Ok(Self(Arc::from(id)))
        } else {
            Err(InvalidBackendId(id.to_owned()))
        }
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::str::FromStr for BackendId {
    type Err = InvalidBackendId;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

impl fmt::Display for BackendId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for BackendId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

/// One member of a backend set, as the selectors see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// Stable id.
    pub id: BackendId,
    /// Relative weight for new work; `0` means "takes no new clients".
    pub weight: u32,
}

/// Live state the selectors read but do not own (the proxy keeps it in atomics).
///
/// Index `i` refers to the `i`-th [`Member`] the [`crate::Selector`] was built from.
pub trait LoadView {
    /// Whether backend `i` may take new work (healthy and active).
    fn available(&self, i: usize) -> bool;
    /// Requests currently in flight on backend `i`.
    fn inflight(&self, i: usize) -> u64;
}

impl<T: LoadView + ?Sized> LoadView for &T {
    fn available(&self, i: usize) -> bool {
        (**self).available(i)
    }
    fn inflight(&self, i: usize) -> u64 {
        (**self).inflight(i)
    }
}

/// A plain-slice view for tests and benchmarks: `(available, inflight)` per backend.
impl LoadView for [(bool, u64)] {
    fn available(&self, i: usize) -> bool {
        self.get(i).is_some_and(|s| s.0)
    }
    fn inflight(&self, i: usize) -> u64 {
        self.get(i).map_or(0, |s| s.1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_validated() {
        assert!(BackendId::new("shop-0").is_ok());
        assert!(BackendId::new("a.b_c-D9").is_ok());
        assert!(BackendId::new("").is_err());
        assert!(BackendId::new("has space").is_err());
        assert!(BackendId::new("x=y").is_err());
        assert!(BackendId::new(&"a".repeat(65)).is_err());
        assert_eq!(
            BackendId::new("shop-1").map(|i| i.to_string()),
            Ok("shop-1".into())
        );
    }
}
