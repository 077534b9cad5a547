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
    /// How many members are eligible (`weights[i] > 0` and available) and their total in flight:
    /// the mean the bounded-load cap of [`crate::Selector::pick_hashed`] is taken from.
    ///
    /// The default is one pass over `weights` ([`LoadTotals::scan`]), which is most of the cost
    /// of a hashed pick. A view that keeps pool-wide counters can answer in O(1) instead, but it
    /// must give exactly the numbers a scan of its own `available` / `inflight` would (the cap
    /// property depends on it); a view that cannot should keep the default.
    fn totals(&self, weights: &[u32]) -> LoadTotals {
        LoadTotals::scan(self, weights)
    }
    /// A hint: `true` promises that [`LoadView::available`] is `true` for every member right now,
    /// so a scan may skip asking. The default, `false`, promises nothing. A view that answers
    /// `true` when some member is unavailable makes selectors pick that member.
    fn all_available(&self) -> bool {
        false
    }
    /// Calls `visit(i, inflight(i), with[i])` for the members of `range` in order until it
    /// returns `true`; returns whether it did. `with` is the caller's per-member data (a
    /// selector's weights or scale factors); members it has no entry for are not visited.
    /// Scans that need only the counts use this so a view can walk its own storage once, side
    /// by side with `with` (no bounds check nor base reload per member), instead of being
    /// indexed per member. The default asks [`LoadView::inflight`] member by member.
    #[inline]
    fn visit_inflight<T: Copy>(
        &self,
        range: std::ops::Range<usize>,
        with: &[T],
        mut visit: impl FnMut(usize, u64, T) -> bool,
    ) -> bool {
        let with = with
            .get(range.start..range.end.min(with.len()))
            .unwrap_or_default();
        range.zip(with).any(|(i, &t)| visit(i, self.inflight(i), t))
    }
}

/// Eligible members and their load, as [`LoadView::totals`] reports them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LoadTotals {
    /// Members with weight > 0 that are available.
    pub members: u64,
    /// Sum of those members' in-flight counts (wrapping; it counts live requests, so it never
    /// gets near 2^64).
    pub inflight: u64,
}

impl LoadTotals {
    /// Computes the totals from `view` member by member.
    #[inline]
    pub fn scan(view: &(impl LoadView + ?Sized), weights: &[u32]) -> Self {
        let mut totals = Self::default();
        for (i, &w) in weights.iter().enumerate() {
            // A branch, not a mask: availability is steady from one pick to the next, so the
            // predictor gets it right and unavailable members cost no load (measured faster).
            if (w > 0) & view.available(i) {
                totals.members += 1;
                totals.inflight = totals.inflight.wrapping_add(view.inflight(i));
            }
        }
        totals
    }

    /// These totals with member `i` (of `weights`, as seen by `view`) taken out, if it was
    /// counted: for views that hide one member of an underlying view.
    pub fn without(self, view: &(impl LoadView + ?Sized), weights: &[u32], i: usize) -> Self {
        if weights.get(i).is_some_and(|&w| w > 0) && view.available(i) {
            Self {
                members: self.members.saturating_sub(1),
                inflight: self.inflight.wrapping_sub(view.inflight(i)),
            }
        } else {
            self
        }
    }
}

impl<T: LoadView + ?Sized> LoadView for &T {
    #[inline]
    fn available(&self, i: usize) -> bool {
        (**self).available(i)
    }
    #[inline]
    fn inflight(&self, i: usize) -> u64 {
        (**self).inflight(i)
    }
    #[inline]
    fn totals(&self, weights: &[u32]) -> LoadTotals {
        (**self).totals(weights)
    }
    #[inline]
    fn all_available(&self) -> bool {
        (**self).all_available()
    }
    #[inline]
    fn visit_inflight<U: Copy>(
        &self,
        range: std::ops::Range<usize>,
        with: &[U],
        visit: impl FnMut(usize, u64, U) -> bool,
    ) -> bool {
        (**self).visit_inflight(range, with, visit)
    }
}

/// A plain-slice view for tests and benchmarks: `(available, inflight)` per backend.
impl LoadView for [(bool, u64)] {
    #[inline]
    fn available(&self, i: usize) -> bool {
        self.get(i).is_some_and(|s| s.0)
    }
    #[inline]
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

    #[test]
    fn totals_count_only_eligible_members() {
        let view = [(true, 3), (false, 5), (true, 7), (true, 11)];
        let weights = [1, 1, 0, 2];
        let t = view[..].totals(&weights);
        assert_eq!(
            t,
            LoadTotals {
                members: 2,
                inflight: 14
            }
        );
        // Through a reference, and with members taken out (counted, uncounted, out of range).
        let by_ref: &[(bool, u64)] = &view;
        assert_eq!(LoadView::totals(&by_ref, &weights), t);
        assert_eq!(
            t.without(&view[..], &weights, 3),
            LoadTotals {
                members: 1,
                inflight: 3
            }
        );
        assert_eq!(t.without(&view[..], &weights, 1), t);
        assert_eq!(t.without(&view[..], &weights, 2), t);
        assert_eq!(t.without(&view[..], &weights, 9), t);
        // Weights shorter than the view: members beyond them are not members.
        assert_eq!(view[..].totals(&weights[..1]).members, 1);
        assert_eq!(view[..].totals(&[]), LoadTotals::default());
    }
}
