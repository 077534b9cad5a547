//! A backend's availability in one atomic word, so the request path decides "takes new clients?"
//! with one load and one comparison.
//!
//! The word ([`Gate`]) packs three things that used to be three atomics:
//!
//! * bit 63, `DRAINING`: an operator is draining the backend;
//! * bit 62, `CHECK_FAILED`: active health checks say it is down;
//! * bits 0–61: the pool-clock millisecond until which it is skipped after a refused connection
//!   or a passive ejection (0: never).
//!
//! Either flag makes the word ≥ 2⁶², larger than any pool-clock reading, so
//! `word <= now_ms` is exactly "not draining, checks pass, back-off over": [`Gate::takes_new`].
//! Each change is one atomic read-modify-write of the word, so concurrent changes (a drain racing
//! an ejection) never lose each other.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// What a backend is doing, as operators and metrics see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendState {
    /// Takes new and bound clients.
    Active,
    /// Takes no new clients; bound clients until the drain deadline.
    Draining,
    /// Failing (refused connections): skipped until its back-off ends.
    Down,
}

impl BackendState {
    /// Lower-case name, as in the admin API and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Draining => "draining",
            Self::Down => "down",
        }
    }
}

impl fmt::Display for BackendState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

const DRAINING: u64 = 1 << 63;
const CHECK_FAILED: u64 = 1 << 62;
/// The back-off deadline's bits; also the latest deadline that can be stored.
const UNTIL: u64 = CHECK_FAILED - 1;

/// A backend's availability word (see the module docs).
#[derive(Debug, Default)]
pub(super) struct Gate(AtomicU64);

impl Gate {
    /// Whether new clients may be sent here at `now_ms`: one load, one comparison.
    #[inline]
    pub(super) fn takes_new(&self, now_ms: u64) -> bool {
        self.0.load(Relaxed) <= now_ms
    }

    /// Checks pass and the back-off (if any) is over at `now_ms`; draining or not.
    pub(super) fn healthy(&self, now_ms: u64) -> bool {
        let word = self.0.load(Relaxed);
        word & CHECK_FAILED == 0 && word & UNTIL <= now_ms
    }

    pub(super) fn draining(&self) -> bool {
        self.0.load(Relaxed) & DRAINING != 0
    }

    pub(super) fn check_ok(&self) -> bool {
        self.0.load(Relaxed) & CHECK_FAILED == 0
    }

    /// The back-off deadline (0: never backed off).
    pub(super) fn down_until_ms(&self) -> u64 {
        self.0.load(Relaxed) & UNTIL
    }

    /// Sets or clears the drain flag; returns whether it was set before.
    pub(super) fn set_draining(&self, on: bool) -> bool {
        let before = if on {
            self.0.fetch_or(DRAINING, Relaxed)
        } else {
            self.0.fetch_and(!DRAINING, Relaxed)
        };
        before & DRAINING != 0
    }

    /// Records an active-check verdict; returns the previous one.
    pub(super) fn set_check_ok(&self, ok: bool) -> bool {
        let before = if ok {
            self.0.fetch_and(!CHECK_FAILED, Relaxed)
        } else {
            self.0.fetch_or(CHECK_FAILED, Relaxed)
        };
        before & CHECK_FAILED == 0
    }

    /// Moves the back-off deadline to `until_ms` (clamped to what fits); returns the previous one.
    pub(super) fn set_down_until(&self, until_ms: u64) -> u64 {
        let until = until_ms.min(UNTIL);
        let before = self
            .0
            .fetch_update(Relaxed, Relaxed, |w| Some((w & !UNTIL) | until))
            .unwrap_or_else(|w| w);
        before & UNTIL
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_word_answers_like_the_three_flags_it_replaces() {
        let gate = Gate::default();
        assert!(gate.takes_new(0) && gate.healthy(0) && gate.check_ok() && !gate.draining());
        assert_eq!(gate.set_down_until(50), 0);
        assert!(!gate.takes_new(49) && !gate.healthy(49));
        assert!(gate.takes_new(50) && gate.healthy(50));
        assert!(!gate.set_draining(true));
        assert!(gate.draining() && !gate.takes_new(u64::MAX / 4) && gate.healthy(60));
        assert!(gate.set_check_ok(false));
        assert!(!gate.check_ok() && !gate.healthy(60));
        // Flags and deadline change independently.
        assert_eq!(gate.set_down_until(u64::MAX), 50);
        assert_eq!(gate.down_until_ms(), UNTIL);
        assert!(gate.draining() && !gate.check_ok());
        assert!(gate.set_draining(false));
        assert!(!gate.set_check_ok(true));
        assert_eq!(gate.set_down_until(7), UNTIL);
        assert!(gate.takes_new(7) && !gate.takes_new(6));
    }
}
