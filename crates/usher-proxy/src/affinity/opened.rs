//! The last sealed cookie a connection presented, already opened.
//!
//! A browser sends the same affinity cookie on every request of a keep-alive connection, and
//! opening it (base64 decode, AES-256-GCM check, claims parse with its `BackendId` allocation)
//! was the larger half of what sticky routing cost. So each connection keeps the token it last
//! opened with its claims: the next request that carries byte-for-byte the same token reuses them
//! instead of decrypting again. Measured with callgrind (`usher lb`, one thread, curl over one
//! connection, 2026-12-07): sealed-cookie mode cost 5 050 instructions per request more than
//! `--affinity none` before, about 2 700 with the memo (2 470 once the per-request maps also
//! moved from SipHash to foldhash); the rest is mostly the `Cookie` field itself (parse,
//! validate, find, strip), which any proxy reading a cookie pays.
//! `scripts/bench-allocs.sh --instructions` measures it.
//!
//! Nothing is trusted that was not checked: an entry is stored only after the token opened, a hit
//! needs the exact token text and the same [`Affinity`](super::Affinity) instance (so a reload
//! with other keys never reuses an old verdict), and expiry is checked again at every use. The
//! memo is per connection, so one client cannot evict or read another's entry. It takes no lock:
//! reading is an [`ArcSwapOption`] load, and storing (only when a connection presents a token it
//! has not presented just before) swaps in a new entry; HTTP/2 streams of one connection share it.
//!
//! A connection that carries many clients' cookies (a CDN or another proxy in front, or a load
//! generator cycling cookies) would miss on nearly every request and pay two allocations and a
//! swap each time for nothing. So an entry replaced before it served a single hit counts as
//! wasted, and after [`MAX_WASTED`] of those the connection stops storing: from then on it costs
//! one atomic load per request and opens every token, as it did before the memo existed.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering::Relaxed};

use arc_swap::ArcSwapOption;
use usher_balancer::Claims;

/// Entries replaced without a hit before a connection stops remembering tokens.
const MAX_WASTED: u32 = 4;

/// One connection's memo (see the module docs).
#[derive(Debug, Default)]
pub struct OpenedToken {
    last: ArcSwapOption<Opened>,
    wasted: AtomicU32,
}

#[derive(Debug)]
struct Opened {
    generation: u64,
    token: Box<str>,
    claims: Claims,
    identity: u64,
    /// Served at least one request after the one that stored it.
    hit: AtomicBool,
}

impl OpenedToken {
    /// An empty memo.
    pub fn new() -> Self {
        Self::default()
    }

    /// The claims and identity hash of `token` if it is the token last stored under
    /// `generation`. Expiry is the caller's to check.
    pub(super) fn get(&self, generation: u64, token: &str) -> Option<(Claims, u64)> {
        let last = self.last.load();
        let o = last.as_deref()?;
        if o.generation != generation || *o.token != *token {
            return None;
        }
        if !o.hit.load(Relaxed) {
            o.hit.store(true, Relaxed);
        }
        Some((o.claims.clone(), o.identity))
    }

    /// Remembers that `token` opened to `claims` under `generation`, unless this connection has
    /// already replaced [`MAX_WASTED`] entries that never served a hit.
    pub(super) fn put(&self, generation: u64, token: &str, claims: &Claims, identity: u64) {
        if self.wasted.load(Relaxed) >= MAX_WASTED {
            return;
        }
        if self
            .last
            .load()
            .as_deref()
            .is_some_and(|o| !o.hit.load(Relaxed))
        {
            self.wasted.fetch_add(1, Relaxed);
        }
        self.last.store(Some(Arc::new(Opened {
            generation,
            token: token.into(),
            claims: claims.clone(),
            identity,
            hit: AtomicBool::new(false),
        })));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use usher_balancer::BackendId;

    fn claims(backend: &str) -> Claims {
        Claims {
            backend: BackendId::new(backend).expect("valid id"),
            issued_at: 1,
            idle_expires_at: 100,
            expires_at: 200,
        }
    }

    #[test]
    fn hits_only_on_the_same_token_and_generation() {
        let memo = OpenedToken::new();
        assert!(memo.get(1, "tok").is_none(), "empty memo");
        memo.put(1, "tok", &claims("a"), 7);
        assert_eq!(memo.get(1, "tok"), Some((claims("a"), 7)));
        assert!(memo.get(2, "tok").is_none(), "another Affinity instance");
        assert!(memo.get(1, "tok2").is_none(), "longer token");
        assert!(memo.get(1, "to").is_none(), "prefix");
        assert!(memo.get(1, "tOk").is_none(), "one byte differs");
    }

    #[test]
    fn a_new_token_replaces_the_old_one() {
        let memo = OpenedToken::new();
        memo.put(1, "first-token-text", &claims("a"), 7);
        memo.put(3, "second", &claims("b"), 9);
        assert!(memo.get(1, "first-token-text").is_none());
        assert_eq!(memo.get(3, "second"), Some((claims("b"), 9)));
    }

    #[test]
    fn a_connection_whose_tokens_never_repeat_stops_storing_them() {
        let memo = OpenedToken::new();
        // The first entry is not wasted until it is replaced without a hit.
        for n in 0..=MAX_WASTED {
            memo.put(1, &format!("tok{n}"), &claims("a"), u64::from(n));
        }
        assert_eq!(memo.wasted.load(Relaxed), MAX_WASTED);
        let last = format!("tok{MAX_WASTED}");
        assert_eq!(
            memo.get(1, &last),
            Some((claims("a"), u64::from(MAX_WASTED)))
        );
        memo.put(1, "later", &claims("b"), 99);
        assert!(memo.get(1, "later").is_none(), "no longer stored");
        assert!(memo.get(1, &last).is_some(), "the last entry stays");
    }

    #[test]
    fn entries_that_served_hits_are_not_wasted() {
        let memo = OpenedToken::new();
        for n in 0..10u64 {
            let token = format!("refreshed{n}");
            memo.put(1, &token, &claims("a"), n);
            assert_eq!(memo.get(1, &token), Some((claims("a"), n)));
        }
        assert_eq!(memo.wasted.load(Relaxed), 0);
        memo.put(1, "next", &claims("b"), 10);
        assert_eq!(memo.get(1, "next"), Some((claims("b"), 10)));
    }
}
