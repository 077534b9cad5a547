//! Upgraded tunnels (WebSocket and other `Upgrade`s; see `tunnel.rs`): the close signal a
//! backend's tunnels wait on. Each tunnel subscribes to its slot's signal; drain, activate and
//! removal publish to it, so tunnels wait on a signal instead of polling the slot.

use std::time::Instant;

use super::slot::BackendSlot;

/// When a backend's upgraded tunnels must close. Each tunnel adds its own random jitter to the
/// instant, so that clients do not all reconnect at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TunnelClose {
    /// Keep them open.
    Open,
    /// Draining: close at the drain deadline.
    Deadline(Instant),
    /// Removed from the pool: close now (or at an earlier drain deadline).
    Removed(Instant),
}

impl TunnelClose {
    /// The instant to close at (before jitter), if any.
    pub(crate) fn at(self) -> Option<Instant> {
        match self {
            Self::Open => None,
            Self::Deadline(at) | Self::Removed(at) => Some(at),
        }
    }
}

impl BackendSlot {
    /// Upgraded tunnels open to this backend now.
    pub fn open_tunnels(&self) -> usize {
        self.tunnels.receiver_count()
    }

    /// Subscribes a new tunnel to this backend's close signal (the current value included).
    pub(crate) fn tunnel_close(&self) -> tokio::sync::watch::Receiver<TunnelClose> {
        self.tunnels.subscribe()
    }

    /// A drain started (or its deadline moved): tunnels close at `deadline`. No effect once removed.
    pub(super) fn close_tunnels_at(&self, deadline: Instant) {
        self.tunnels.send_if_modified(|c| match c {
            TunnelClose::Removed(_) => false,
            _ => {
                *c = TunnelClose::Deadline(deadline);
                true
            }
        });
    }

    /// The drain was called off: tunnels stay open. No effect once removed.
    pub(super) fn keep_tunnels_open(&self) {
        self.tunnels.send_if_modified(|c| match c {
            TunnelClose::Deadline(_) => {
                *c = TunnelClose::Open;
                true
            }
            _ => false,
        });
    }

    /// The backend left the pool: tunnels close now, or at the drain deadline if that came first.
    pub(super) fn close_tunnels_removed(&self) {
        let now = Instant::now();
        self.tunnels.send_if_modified(|c| {
            let at = c.at().map_or(now, |d| d.min(now));
            let changed = *c != TunnelClose::Removed(at);
            *c = TunnelClose::Removed(at);
            changed
        });
    }
}
