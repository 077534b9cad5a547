//! The outcome write, off the response path: [`record_outcome`] remembers the outcome in the
//! process's [`Recent`](super::recent::Recent) cache, then writes it over the `running` record in a
//! spawned task; [`Writes`] counts those tasks so a server can wait for them on shutdown.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::Notify;

use super::Config;
use super::record::{State, Stored};
use crate::error::StoreError;
use crate::id::SessionKey;
use crate::store::Record;

/// The outcome writes under way for one layer.
#[derive(Debug, Default)]
pub(crate) struct Writes {
    pending: AtomicUsize,
    idle: Notify,
}

/// Held by one write; ends it when dropped (also if its task is cancelled).
struct Pending(Arc<Writes>);

impl Drop for Pending {
    fn drop(&mut self) {
        if self.0.pending.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

impl Writes {
    fn start(self: &Arc<Self>) -> Pending {
        self.pending.fetch_add(1, Ordering::AcqRel);
        Pending(self.clone())
    }

    /// Resolves once no write is under way.
    pub(crate) async fn flushed(&self) {
        loop {
            let idle = self.idle.notified();
            tokio::pin!(idle);
            idle.as_mut().enable(); // registered before the check: no wake-up is lost
            if self.pending.load(Ordering::Acquire) == 0 {
                return;
            }
            idle.await;
        }
    }
}

/// Records the end of a run: `outcome` `Some` stores it as `done`, `None` releases the key. The
/// process's cache knows at once; the store write runs in a spawned task (inline when there is
/// no Tokio runtime), so the caller returns its response without waiting for it.
pub(crate) async fn record_outcome(
    config: &Arc<Config>,
    key: SessionKey,
    record: Record,
    version: u64,
    fingerprint: String,
    outcome: Option<Stored>,
) {
    let written = config
        .recent
        .remember(key, &fingerprint, outcome.as_ref(), record.expires_at);
    let state = match outcome {
        Some(response) => State::Done {
            fingerprint,
            response,
        },
        None => State::Released { fingerprint },
    };
    let pending = config.writes.start();
    let config = config.clone();
    let write = async move {
        finish(&config, &key, record, version, state).await;
        written.send_replace(true);
        drop(pending);
    };
    match tokio::runtime::Handle::try_current() {
        Ok(rt) => drop(rt.spawn(write)),
        Err(_) => write.await,
    }
}

/// Writes the outcome over our `running` record (compare-and-swap on our version). Failures are
/// logged, not returned: the handler has run and its response is the truth.
async fn finish(config: &Config, key: &SessionKey, mut record: Record, version: u64, state: State) {
    record.data = state.encode();
    let now = (config.clock)();
    match config.store.save(key, &record, Some(version), now).await {
        Ok(_) => {}
        Err(StoreError::Conflict { .. }) => tracing::warn!(
            "idempotency lease was taken over while the request ran (lease shorter than the handler?)"
        ),
        Err(e) => tracing::warn!(error = %e, "could not record the idempotent outcome"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn flushed_waits_for_every_pending_write() {
        let writes = Arc::new(Writes::default());
        writes.flushed().await; // nothing pending
        let (a, b) = (writes.start(), writes.start());
        let waiter = tokio::spawn({
            let writes = writes.clone();
            async move { writes.flushed().await }
        });
        drop(a);
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        drop(b);
        waiter.await.unwrap();
    }
}
