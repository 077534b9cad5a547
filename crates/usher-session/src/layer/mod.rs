//! [`SessionLayer`]: sessions for any tower/axum service, on any [`SessionStore`].
//!
//! Per request the layer reads the session cookie, loads the session (a malformed or unknown id
//! is ignored and its cookie cleared — never trusted, never an error), hands the handler a
//! [`Session`], and after the handler returns, **before the response leaves**, writes what the
//! handler changed and sets or clears the cookie. Decisions it makes that other libraries get
//! wrong:
//!
//! * **No lost updates.** Deferred writes are per field and saved with compare-and-swap; when
//!   another request won the race, the layer reloads and re-applies *this* request's fields, so
//!   concurrent changes to other fields survive. [`Session::update`] is atomic in the store for
//!   counters, lists and carts that several requests change at once.
//! * **Logout sticks.** Logouts delete with a tombstone; a request that loaded the session before
//!   and saves after finds it deleted, drops its writes and clears the cookie.
//! * **Reads extend the session.** A request that changes nothing still moves the idle expiry,
//!   written at most once per touch interval.
//! * **Fixation.** A new session always gets a fresh server-made id; [`Session::login`] rotates it.
//! * **Store outages are a policy** ([`OutagePolicy`]): by default 503 with `Retry-After` and the
//!   handler not run when the session cannot be loaded — never an anonymous session in place of a
//!   real one. If the store fails when saving after the handler ran, the response becomes a 503
//!   (the session's changes were not made, so a retry is safe), never a 500. Optionally, sessions
//!   are served read-only from a bounded local cache while the store is down.
//!
//! Only the session's id travels in the cookie; the layer needs `ResBody: From<String>` to write
//! its own 503s (axum's `Body` and `http_body_util::Full` qualify).

mod cache;
mod cookie;
mod error;
mod service;
mod session;

#[cfg(feature = "axum")]
mod axum;

use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub use ::cookie::SameSite;
pub use error::SessionError;
pub use service::SessionService;
pub use session::Session;

use crate::store::SessionStore;
use cache::ReadCache;

/// The cookie name used unless [`SessionLayer::with_cookie_name`] says otherwise.
pub const DEFAULT_COOKIE_NAME: &str = "usher_sid";

/// What the layer does when the store cannot be reached.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum OutagePolicy {
    /// Answer 503 with `Retry-After` (the default, 1 s): the request has no effect.
    Unavailable {
        /// The `Retry-After` sent.
        retry_after: Duration,
    },
    /// Serve sessions this process loaded recently (at most `max_age` ago) read-only from a
    /// cache of `capacity` entries; requests that change the session, and sessions not cached,
    /// get 503 with `Retry-After`.
    ReadOnlyCache {
        /// The `Retry-After` sent.
        retry_after: Duration,
        /// Sessions kept.
        capacity: NonZeroUsize,
        /// How stale a served session may be.
        max_age: Duration,
    },
}

impl OutagePolicy {
    /// 503 with this `Retry-After`.
    pub fn unavailable(retry_after: Duration) -> Self {
        Self::Unavailable { retry_after }
    }

    /// Read-only from a cache of `capacity` sessions at most `max_age` old; 503 with
    /// `retry_after` otherwise.
    pub fn read_only_cache(
        capacity: NonZeroUsize,
        max_age: Duration,
        retry_after: Duration,
    ) -> Self {
        Self::ReadOnlyCache {
            retry_after,
            capacity,
            max_age,
        }
    }

    pub(crate) fn retry_after(&self) -> Duration {
        match self {
            Self::Unavailable { retry_after } | Self::ReadOnlyCache { retry_after, .. } => {
                *retry_after
            }
        }
    }
}

impl Default for OutagePolicy {
    fn default() -> Self {
        Self::unavailable(Duration::from_secs(1))
    }
}

/// A clock returning Unix seconds (the store contract takes `now` from the caller).
pub type Clock = Arc<dyn Fn() -> u64 + Send + Sync>;

/// Settings shared by every request of one layer.
#[derive(Clone)]
pub(crate) struct Config {
    pub(crate) store: Arc<dyn SessionStore>,
    pub(crate) cookie_name: String,
    pub(crate) secure: bool,
    pub(crate) http_only: bool,
    pub(crate) same_site: SameSite,
    pub(crate) path: String,
    pub(crate) domain: Option<String>,
    pub(crate) idle_secs: u64,
    pub(crate) absolute_secs: u64,
    pub(crate) touch_secs: u64,
    pub(crate) save_attempts: usize,
    pub(crate) outage: OutagePolicy,
    pub(crate) cache: Option<Arc<ReadCache>>,
    pub(crate) clock: Clock,
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("store", &self.store)
            .field("cookie_name", &self.cookie_name)
            .field("idle_secs", &self.idle_secs)
            .field("absolute_secs", &self.absolute_secs)
            .field("outage", &self.outage)
            .finish_non_exhaustive()
    }
}

impl Config {
    pub(crate) fn now(&self) -> u64 {
        (self.clock)()
    }
}

fn system_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The tower `Layer` that gives every request a [`Session`]. Build it with
/// [`SessionLayer::new`] and the `with_*` methods; cloning is cheap.
#[derive(Debug, Clone)]
pub struct SessionLayer {
    config: Arc<Config>,
}

impl SessionLayer {
    /// A layer on `store` with defaults: cookie `usher_sid`, `HttpOnly`, `SameSite=Lax`,
    /// `Path=/`, not `Secure`; 30 min idle and 24 h absolute expiry (keep the idle timeout equal
    /// to the store's `StoreConfig::idle_timeout_secs`); touch at most once a minute; three
    /// save attempts; [`OutagePolicy::default`].
    pub fn new(store: Arc<dyn SessionStore>) -> Self {
        Self {
            config: Arc::new(Config {
                store,
                cookie_name: DEFAULT_COOKIE_NAME.to_owned(),
                secure: false,
                http_only: true,
                same_site: SameSite::Lax,
                path: "/".to_owned(),
                domain: None,
                idle_secs: 1800,
                absolute_secs: 86_400,
                touch_secs: 60,
                save_attempts: 3,
                outage: OutagePolicy::default(),
                cache: None,
                clock: Arc::new(system_now),
            }),
        }
    }

    fn edit(mut self, f: impl FnOnce(&mut Config)) -> Self {
        f(Arc::make_mut(&mut self.config));
        self
    }

    /// The cookie's name. Must be a valid cookie name (RFC 6265 token); panics otherwise, as it
    /// is a programming error found at start-up.
    pub fn with_cookie_name(self, name: &str) -> Self {
        assert!(
            !name.is_empty()
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)),
            "invalid session cookie name {name:?}"
        );
        self.edit(|c| c.cookie_name = name.to_owned())
    }

    /// Sets `Secure` (send the cookie over HTTPS only). Always on with `SameSite=None`.
    pub fn with_secure(self, secure: bool) -> Self {
        self.edit(|c| c.secure = secure)
    }

    /// Sets `HttpOnly` (default on: scripts cannot read the id).
    pub fn with_http_only(self, http_only: bool) -> Self {
        self.edit(|c| c.http_only = http_only)
    }

    /// The `SameSite` attribute (default `Lax`).
    pub fn with_same_site(self, same_site: SameSite) -> Self {
        self.edit(|c| c.same_site = same_site)
    }

    /// The cookie's `Path` (default `/`).
    pub fn with_path(self, path: &str) -> Self {
        self.edit(|c| c.path = path.to_owned())
    }

    /// The cookie's `Domain` (default none: host-only).
    pub fn with_domain(self, domain: &str) -> Self {
        self.edit(|c| c.domain = Some(domain.to_owned()))
    }

    /// A session dies after this long without a request (default 30 min).
    pub fn with_idle_timeout(self, idle: Duration) -> Self {
        self.edit(|c| c.idle_secs = idle.as_secs().max(1))
    }

    /// A session dies this long after it was created, active or not (default 24 h). Also the
    /// cookie's `Max-Age`.
    pub fn with_absolute_timeout(self, absolute: Duration) -> Self {
        self.edit(|c| c.absolute_secs = absolute.as_secs().max(1))
    }

    /// A request that changes nothing extends the idle expiry at most this often (default 60 s).
    pub fn with_touch_interval(self, every: Duration) -> Self {
        self.edit(|c| c.touch_secs = every.as_secs())
    }

    /// How many compare-and-swap attempts a deferred save makes before answering 409 (default 3).
    pub fn with_save_attempts(self, attempts: usize) -> Self {
        self.edit(|c| c.save_attempts = attempts.max(1))
    }

    /// What to do while the store is unreachable.
    pub fn with_outage_policy(self, policy: OutagePolicy) -> Self {
        self.edit(|c| {
            c.cache = cache_for(&policy);
            c.outage = policy;
        })
    }

    /// The clock (Unix seconds) expiry is decided by; for tests.
    pub fn with_clock(self, clock: Clock) -> Self {
        self.edit(|c| c.clock = clock)
    }
}

fn cache_for(policy: &OutagePolicy) -> Option<Arc<ReadCache>> {
    match policy {
        OutagePolicy::Unavailable { .. } => None,
        OutagePolicy::ReadOnlyCache {
            capacity, max_age, ..
        } => Some(Arc::new(ReadCache::new(*capacity, max_age.as_secs()))),
    }
}

impl<S> tower_layer::Layer<S> for SessionLayer {
    type Service = SessionService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        SessionService::new(inner, self.config.clone())
    }
}
