//! [`IdempotencyLayer`] (feature `idempotency`): the `Idempotency-Key` header of
//! draft-ietf-httpapi-idempotency-key-header as a tower layer, with its records in any
//! [`SessionStore`] — so a retry that lands on another replica is still recognised.
//!
//! Per request on a covered route (by default every `POST` and `PATCH` the layer wraps; narrow it
//! with [`IdempotencyLayer::with_methods`] / [`IdempotencyLayer::with_paths`], or apply the layer
//! to single routes):
//!
//! 1. `Idempotency-Key` is required: missing → 400, malformed → 400 (see the key grammar in
//!    `key.rs`: a Structured Field string, or a bare token).
//! 2. The key is scoped to the principal the configured function finds in the request (the
//!    session's or the JWT's user), so two users' identical keys never meet; anonymous requests
//!    get the key alone as scope ([`Anonymous::KeyOnly`], the default) or a 401
//!    ([`Anonymous::Reject`]). The record lives under `SessionKey::derive("idem", [scope, key])`.
//! 3. The fingerprint is SHA-256 over method, path-and-query and body; the body is buffered (up to
//!    [`IdempotencyLayer::with_max_body`], else 413) and handed on unchanged.
//! 4. The record is created with `save(None)` — SET NX on Redis, a unique key in SQL — as
//!    `running` with a lease. Exactly one request wins and runs the handler. The others see:
//!    * `running` with a live lease → **409** with `Retry-After` — `1` while the lease is at most
//!      2 s old (most likely a quick request whose outcome is being written, see below), else
//!      [`IdempotencyLayer::with_retry_after`];
//!    * a different fingerprint → **422** (the key was used for another request);
//!    * `done` → the stored **status, headers and body replayed byte for byte** plus
//!      `Idempotent-Replayed: true`;
//!    * `running` with an expired lease (the server running it crashed) or `released` → taken
//!      over with a compare-and-swap save, and the handler runs. The lease must outlast the
//!      slowest handler: one that runs longer can be taken over and so run twice.
//! 5. After the handler: a response below 500 is stored as `done`. A **5xx is released, not
//!    stored** — the draft leaves it to the server; a 5xx usually means the operation did not
//!    happen (a store or upstream outage), and replaying the failure for 24 hours would make a
//!    retry useless, while releasing lets the client's retry run it again. A handler that
//!    returns a 5xx after committing its effect must therefore not be retried blindly; checkout
//!    handlers should commit and answer 2xx in one step. An inner service error, a response body
//!    that fails, or one larger than [`IdempotencyLayer::with_max_response`] also release.
//! 6. Store down → **503** with `Retry-After`, the handler not run (the draft's "cannot
//!    guarantee idempotency" case). If the store fails when saving the outcome, the response has
//!    been returned anyway (the effect happened) and the failure is logged (`warn`); the record
//!    stays `running` until its lease ends.
//!
//! **The outcome write is off the response path.** The claim (step 4) is the only store round
//! trip before the handler and the only one a first execution waits for: as soon as the handler's
//! body is collected the response is returned, and the `done` record (or the release) is written
//! over our `running` record by a spawned Tokio task (compare-and-swap on the claim's version;
//! inline if there is no Tokio runtime). The rules that keep this safe:
//! * Exactly-once is untouched: it rests on the claim, which still precedes the handler.
//! * A retry that reaches the store before the write lands sees `running` with a fresh lease and
//!   gets **409 with `Retry-After: 1`** — the accepted price of the early response. The window is
//!   one store write long (about one round trip).
//! * For retries on the **same process** that window is closed by a small cache of outcomes the
//!   layer has just produced (per layer and its clones; at most 1024 entries, 8 MiB of responses,
//!   64 KiB each, 5 s each, and never past the record's window), consulted before the claim: a
//!   `done` outcome with the same fingerprint is replayed from it — the same status, headers and
//!   body as a replay from the store, plus `Idempotent-Replayed: true` — and a retry of a request
//!   whose release is still being written waits for that write, then claims. Anything else (other
//!   fingerprints, other processes, older outcomes) goes to the store as before.
//! * A write that fails is logged (`warn`), as before; the cache still replays the outcome for its
//!   few seconds, which is the truth (the handler ran).
//! * On graceful shutdown await [`IdempotencyLayer::flushed`] after the server stops taking
//!   requests, so the writes under way land; a process killed before that leaves keys `running`
//!   until their leases end, as a crash mid-request always did.
//!
//! A replay costs two store round trips (the create that finds the key taken, then the read);
//! the store contract has no "create or return the existing record" to do it in one.
//!
//! Stored headers exclude hop-by-hop headers (`Connection`, `Keep-Alive`, `Proxy-Connection`,
//! `Transfer-Encoding`, `TE`, `Trailer`, `Upgrade`), `Content-Length` (recomputed from the
//! identical body) and **`Set-Cookie`**: a replay must not hand out a session cookie again (it
//! could resurrect a session rotated since, or leak one to a different device of the user).
//!
//! **The window.** Records expire [`IdempotencyLayer::with_window`] (default 24 h) after they
//! were created; after that the key is new again. Every response of a covered route says so in
//! `Idempotency-Key-Window: <seconds>` (our header; the draft asks that the expiry policy be
//! published and leaves how to the resource), and the API docs state it.
//!
//! Records are written with `user = None` so "log out everywhere" (`delete_user_sessions`) does
//! not wipe a user's idempotency history mid-retry.

mod error;
mod key;
mod recent;
mod record;
mod service;
mod writer;

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::Method;
use http::request::Parts;

pub use error::IdempotencyError;
pub use key::MAX_KEY_LEN;
pub use service::IdempotencyService;

use crate::store::SessionStore;

/// The request header carrying the key.
pub const IDEMPOTENCY_KEY: &str = "idempotency-key";
/// Set to `true` on a replayed response.
pub const IDEMPOTENT_REPLAYED: &str = "idempotent-replayed";
/// The window, in seconds, on every response of a covered route.
pub const IDEMPOTENCY_KEY_WINDOW: &str = "idempotency-key-window";

/// Finds the principal a key is scoped to (a user id), or `None` for anonymous requests.
pub type Principal = Arc<dyn Fn(&Parts) -> Option<String> + Send + Sync>;

/// What to do with a request that has no principal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Anonymous {
    /// Scope the key by itself: anonymous clients share one key space, so keys must be unguessable
    /// (UUIDv4), as the draft recommends anyway.
    #[default]
    KeyOnly,
    /// Answer 401.
    Reject,
}

/// Unix seconds, for tests to control.
pub type Clock = Arc<dyn Fn() -> u64 + Send + Sync>;

#[derive(Clone)]
pub(crate) struct Config {
    pub(crate) store: Arc<dyn SessionStore>,
    pub(crate) methods: Vec<Method>,
    pub(crate) paths: Option<Vec<String>>,
    pub(crate) principal: Principal,
    pub(crate) anonymous: Anonymous,
    pub(crate) window_secs: u64,
    pub(crate) lease_secs: u64,
    pub(crate) max_body: usize,
    pub(crate) max_response: usize,
    pub(crate) retry_after: Duration,
    pub(crate) clock: Clock,
    /// Outcomes this layer just produced (shared by the layer's clones).
    pub(crate) recent: Arc<recent::Recent>,
    /// Outcome writes under way.
    pub(crate) writes: Arc<writer::Writes>,
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("store", &self.store)
            .field("methods", &self.methods)
            .field("paths", &self.paths)
            .field("anonymous", &self.anonymous)
            .field("window_secs", &self.window_secs)
            .field("lease_secs", &self.lease_secs)
            .finish_non_exhaustive()
    }
}

impl Config {
    pub(crate) fn covers(&self, method: &Method, path: &str) -> bool {
        self.methods.contains(method)
            && self
                .paths
                .as_ref()
                .is_none_or(|ps| ps.iter().any(|p| p == path))
    }
}

/// The tower `Layer`; build with [`IdempotencyLayer::new`] and the `with_*` methods.
#[derive(Debug, Clone)]
pub struct IdempotencyLayer {
    config: Arc<Config>,
}

impl IdempotencyLayer {
    /// Records in `store`. Defaults: `POST` and `PATCH` covered, every request anonymous
    /// ([`Anonymous::KeyOnly`]) until [`IdempotencyLayer::with_principal`] is set, 24 h window,
    /// 60 s lease, 1 MiB request bodies fingerprinted and responses stored, `Retry-After: 1` on
    /// store outages.
    pub fn new(store: Arc<dyn SessionStore>) -> Self {
        Self {
            config: Arc::new(Config {
                store,
                methods: vec![Method::POST, Method::PATCH],
                paths: None,
                principal: Arc::new(|_| None),
                anonymous: Anonymous::KeyOnly,
                window_secs: 86_400,
                lease_secs: 60,
                max_body: 1 << 20,
                max_response: 1 << 20,
                retry_after: Duration::from_secs(1),
                clock: Arc::new(system_now),
                recent: Arc::new(recent::Recent::new()),
                writes: Arc::default(),
            }),
        }
    }

    fn edit(mut self, f: impl FnOnce(&mut Config)) -> Self {
        f(Arc::make_mut(&mut self.config));
        self
    }

    /// The methods that require a key (default `POST`, `PATCH`).
    pub fn with_methods(self, methods: &[Method]) -> Self {
        self.edit(|c| c.methods = methods.to_vec())
    }

    /// Only these exact paths require a key (default: every path the layer wraps).
    pub fn with_paths(self, paths: &[&str]) -> Self {
        self.edit(|c| c.paths = Some(paths.iter().map(|p| (*p).to_owned()).collect()))
    }

    /// How to find the principal a key is scoped to.
    pub fn with_principal(
        self,
        f: impl Fn(&Parts) -> Option<String> + Send + Sync + 'static,
    ) -> Self {
        self.edit(|c| c.principal = Arc::new(f))
    }

    /// What to do without a principal.
    pub fn with_anonymous(self, policy: Anonymous) -> Self {
        self.edit(|c| c.anonymous = policy)
    }

    /// How long a key is remembered (default 24 h).
    pub fn with_window(self, window: Duration) -> Self {
        self.edit(|c| c.window_secs = window.as_secs().max(1))
    }

    /// How long a running request holds its key before another may take it over (default 60 s).
    /// Must exceed the slowest handler.
    pub fn with_lease(self, lease: Duration) -> Self {
        self.edit(|c| c.lease_secs = lease.as_secs().max(1))
    }

    /// Largest request body buffered for the fingerprint (default 1 MiB; larger → 413).
    pub fn with_max_body(self, bytes: usize) -> Self {
        self.edit(|c| c.max_body = bytes)
    }

    /// Largest response stored for replay (default 1 MiB). A larger response is returned but
    /// its key released, so it is not idempotent: size the limit to the API.
    pub fn with_max_response(self, bytes: usize) -> Self {
        self.edit(|c| c.max_response = bytes)
    }

    /// `Retry-After` on store outages and on keys held by a lease older than 2 s (default 1 s).
    pub fn with_retry_after(self, after: Duration) -> Self {
        self.edit(|c| c.retry_after = after)
    }

    /// The clock (Unix seconds); for tests.
    pub fn with_clock(self, clock: Clock) -> Self {
        self.edit(|c| c.clock = clock)
    }

    /// Resolves once every outcome write this layer (and its clones) has under way is finished.
    /// Await it on graceful shutdown, after the server has stopped taking requests, so no answered
    /// request leaves its key `running` until the lease ends.
    pub async fn flushed(&self) {
        self.config.writes.flushed().await;
    }
}

impl<S> tower_layer::Layer<S> for IdempotencyLayer {
    type Service = IdempotencyService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        IdempotencyService::new(inner, self.config.clone())
    }
}

fn system_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
