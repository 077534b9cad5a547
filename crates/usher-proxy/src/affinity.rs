//! The affinity key chain: what in a request ties it to a backend, and which backend that is.
//!
//! Reading a request yields a [`Binding`] (a sealed cookie's backend, a learned app-cookie's
//! backend, a hash to look up, or nothing) plus its provisional [`Outcome`]. [`Affinity::choose`]
//! turns that into a backend index against the current snapshot, applying the failover policy.
//! The sealed-cookie spec: no cookie → pick and set; tampered/unknown-key/expired → ignore, pick,
//! set a fresh one (never an error); valid for an available backend → route there, no `Set-Cookie`
//! unless the idle expiry needs refreshing; the cookie is always stripped before forwarding.
//! A connection that presents the same sealed cookie again is served from its [`OpenedToken`]
//! memo instead of decrypting it once more (expiry is still checked every time).

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use cookie::{Cookie, SameSite as CookieSameSite};
use http::{HeaderMap, HeaderValue, Uri};
use usher_balancer::{BackendId, Claims, KeyRing, LearnedRoutes, NONCE_LEN, OpenError, hash_key};

use crate::config::{AffinityMode, CookieConfig, FailurePolicy, LbConfig, SameSite};
use crate::headers::{find_cookie, find_query};
use crate::pool::{BoundView, Snapshot};
use crate::stats::Outcome;

mod opened;
pub use opened::OpenedToken;

/// Source of [`Affinity`] generations: each instance gets its own, so a connection's
/// [`OpenedToken`] memo never outlives the key ring that checked it.
static GENERATIONS: AtomicU64 = AtomicU64::new(0);

/// What a request carries that ties it to a backend.
#[derive(Debug, Clone)]
pub enum Binding {
    /// Nothing: balance by policy.
    Unbound,
    /// A named backend (from a valid sealed cookie, or a learned app cookie).
    Pinned {
        /// The backend.
        id: BackendId,
        /// The cookie's claims (sealed-cookie mode), for idle refresh.
        claims: Option<Claims>,
        /// Hash to fall back on when the backend is gone (app-cookie mode).
        fallback_hash: Option<u64>,
    },
    /// A key to look up on the consistent-hash ring.
    Hashed(u64),
}

/// A request's affinity, as read.
#[derive(Debug, Clone)]
pub struct Key {
    /// What ties it.
    pub binding: Binding,
    /// Outcome so far (`new`, `invalid`, `expired` for cookies; refined by [`Affinity::choose`]).
    pub outcome: Outcome,
    /// A hash identifying the client's binding (token, key or app-cookie value), for the
    /// `pinned_clients` estimate.
    pub identity: Option<u64>,
}

/// The decision for one attempt.
#[derive(Debug, Clone, Copy)]
pub struct Choice {
    /// Backend index in the snapshot, or `None` (→ 503).
    pub index: Option<usize>,
    /// Final outcome.
    pub outcome: Outcome,
}

/// Affinity settings and state for one load balancer.
#[derive(Debug)]
pub struct Affinity {
    mode: AffinityMode,
    on_failure: FailurePolicy,
    keys: KeyRing,
    cookie: CookieConfig,
    secure_listener: bool,
    learned: Option<Arc<LearnedRoutes>>,
    nonces: Nonces,
    slow_start_ms: u64,
    app_cookie: crate::config::AppCookieConfig,
    generation: u64,
}

impl Affinity {
    /// Affinity for `config`, sealing with `keys`.
    pub fn new(config: &LbConfig, keys: KeyRing, secure_listener: bool) -> Self {
        let learned = matches!(config.affinity, AffinityMode::AppCookie(_)).then(|| {
            Arc::new(LearnedRoutes::new(
                config.app_cookie.capacity,
                config.app_cookie.ttl,
            ))
        });
        Self {
            mode: config.affinity.clone(),
            on_failure: config.on_failure,
            keys,
            cookie: config.cookie.clone(),
            secure_listener,
            learned,
            nonces: Nonces::new(rand::random()),
            app_cookie: config.app_cookie.clone(),
            slow_start_ms: u64::try_from(config.slow_start.as_millis()).unwrap_or(u64::MAX),
            generation: GENERATIONS.fetch_add(1, Ordering::Relaxed),
        }
    }

    /// The sealed cookie's name when the mode is `cookie`.
    pub fn own_cookie(&self) -> Option<&str> {
        matches!(self.mode, AffinityMode::Cookie).then_some(self.cookie.name.as_str())
    }

    /// Reads a request's affinity key. `client` is the client address (after trusted proxies);
    /// `opened` is the connection's memo of the sealed cookie it last presented.
    pub fn read(
        &self,
        headers: &HeaderMap,
        uri: &Uri,
        client: IpAddr,
        now: u64,
        at: Instant,
        opened: &OpenedToken,
    ) -> Key {
        let hashed = |v: &[u8]| {
            let h = hash_key(v);
            Key {
                binding: Binding::Hashed(h),
                outcome: Outcome::Hit,
                identity: Some(h),
            }
        };
        let unbound = |outcome| Key {
            binding: Binding::Unbound,
            outcome,
            identity: None,
        };
        match &self.mode {
            AffinityMode::None => unbound(Outcome::Unpinned),
            AffinityMode::Cookie => match find_cookie(headers, &self.cookie.name) {
                None => unbound(Outcome::New),
                Some(token) => match self.open(token, now, opened) {
                    Ok((claims, identity)) => Key {
                        binding: Binding::Pinned {
                            id: claims.backend.clone(),
                            claims: Some(claims),
                            fallback_hash: None,
                        },
                        outcome: Outcome::Hit,
                        identity: Some(identity),
                    },
                    Err(OpenError::Expired { .. }) => unbound(Outcome::Expired),
                    Err(_) => unbound(Outcome::Invalid),
                },
            },
            AffinityMode::SourceIp => match client {
                IpAddr::V4(ip) => hashed(&ip.octets()),
                IpAddr::V6(ip) => match ip.to_ipv4_mapped() {
                    Some(v4) => hashed(&v4.octets()),
                    None => hashed(&ip.octets()),
                },
            },
            AffinityMode::Header(name) => match headers.get(name) {
                Some(v) if !v.is_empty() => hashed(v.as_bytes()),
                _ => unbound(Outcome::New),
            },
            AffinityMode::Query(name) => match find_query(uri.query(), name) {
                Some(v) => hashed(v.as_bytes()),
                None => unbound(Outcome::New),
            },
            AffinityMode::AppCookie(name) => match find_cookie(headers, name) {
                None | Some("") => unbound(Outcome::New),
                Some(value) => {
                    let learned = self
                        .learned
                        .as_ref()
                        .and_then(|t| t.lookup(value.as_bytes(), at));
                    let hash = hash_key(value.as_bytes());
                    match learned {
                        Some(id) => Key {
                            binding: Binding::Pinned {
                                id,
                                claims: None,
                                fallback_hash: Some(hash),
                            },
                            outcome: Outcome::Hit,
                            identity: Some(hash),
                        },
                        // Unknown value: consistent hashing keeps it on one backend anyway.
                        None => Key {
                            binding: Binding::Hashed(hash),
                            outcome: Outcome::New,
                            identity: Some(hash),
                        },
                    }
                }
            },
        }
    }

    /// Opens a sealed cookie, reusing the connection's memo when it holds this very token:
    /// the claims and the token's identity hash, or why it does not open. Expiry is checked at
    /// `now` either way, exactly as [`KeyRing::open`] checks it.
    fn open(
        &self,
        token: &str,
        now: u64,
        opened: &OpenedToken,
    ) -> Result<(Claims, u64), OpenError> {
        if let Some((claims, identity)) = opened.get(self.generation, token) {
            let at = claims.end();
            if now >= at {
                return Err(OpenError::Expired { at, claims });
            }
            return Ok((claims, identity));
        }
        let (claims, _key_id) = self.keys.open(token, now)?;
        let identity = hash_key(token.as_bytes());
        opened.put(self.generation, token, &claims, identity);
        Ok((claims, identity))
    }

    /// Chooses a backend for `key` in `snap`, given the load `view` and a fresh random value.
    pub fn choose(&self, key: &Key, snap: &Snapshot, view: &impl BoundView, random: u64) -> Choice {
        let strict = self.on_failure == FailurePolicy::Strict;
        let policy = |outcome| Choice {
            index: self.pick_new(snap, view, random),
            outcome,
        };
        match &key.binding {
            Binding::Unbound => policy(key.outcome),
            Binding::Pinned {
                id, fallback_hash, ..
            } => {
                let home = snap.index_of(id);
                if let Some(i) = home.filter(|&i| view.serves_bound(i)) {
                    return Choice {
                        index: Some(i),
                        outcome: key.outcome,
                    };
                }
                // A finished drain is planned: its clients re-pin even under `strict`.
                let outcome = if view.lost_to_drain(id) {
                    Outcome::Drained
                } else if strict {
                    return Choice {
                        index: None,
                        outcome: Outcome::StrictReject,
                    };
                } else {
                    Outcome::Moved
                };
                match fallback_hash {
                    Some(h) => Choice {
                        index: snap.selector.pick_hashed(view, *h),
                        outcome,
                    },
                    None => policy(outcome),
                }
            }
            Binding::Hashed(h) => {
                let home = snap.selector.owner(*h);
                let home_up = home.is_some_and(|i| view.serves_bound(i));
                if !home_up && strict {
                    return Choice {
                        index: None,
                        outcome: Outcome::StrictReject,
                    };
                }
                // A draining home keeps its keys until the deadline (they may be bound sessions).
                if let Some(i) = home.filter(|&i| home_up && !view.available(i)) {
                    return Choice {
                        index: Some(i),
                        outcome: key.outcome,
                    };
                }
                let index = snap.selector.pick_hashed(view, *h);
                // Sent elsewhere because home is down, or over the bounded-load cap: a move.
                let outcome = match (key.outcome, index == home) {
                    (Outcome::Hit, false) => Outcome::Moved,
                    (o, _) => o,
                };
                Choice { index, outcome }
            }
        }
    }

    /// Policy pick for a new client, with slow start: a backend in its ramp keeps the pick with
    /// probability equal to its ramp factor, else the pick is redrawn without it (once).
    fn pick_new(&self, snap: &Snapshot, view: &impl BoundView, random: u64) -> Option<usize> {
        let first = snap.selector.pick(view, None, random)?;
        let factor = snap.slots[first].ramp_factor(view.now_ms(), self.slow_start_ms);
        // The top 53 bits of a second random value, as a uniform draw in [0, 1).
        let draw = (random.rotate_left(29).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 11) as f64
            / (1u64 << 53) as f64;
        if draw < factor {
            return Some(first);
        }
        let others = crate::pool::Excluding { view, skip: first };
        snap.selector
            .pick(&others, None, random.rotate_left(17))
            .or(Some(first))
    }

    /// The `Set-Cookie` to send with a response from `backend`, if the binding must be (re)issued
    /// or its idle expiry refreshed.
    pub fn set_cookie(
        &self,
        key: &Key,
        outcome: Outcome,
        backend: &BackendId,
        now: u64,
    ) -> Option<HeaderValue> {
        if !matches!(self.mode, AffinityMode::Cookie) {
            return None;
        }
        let idle = self.cookie.idle_timeout.as_secs();
        let claims = match (&key.binding, outcome) {
            (
                Binding::Pinned {
                    claims: Some(c), ..
                },
                Outcome::Hit,
            ) => {
                // Refresh only when less than half the idle window is left.
                if c.idle_expires_at.saturating_sub(now) >= idle / 2
                    || c.idle_expires_at >= c.expires_at
                {
                    return None;
                }
                Claims {
                    idle_expires_at: (now + idle).min(c.expires_at),
                    ..c.clone()
                }
            }
            _ => {
                let expires_at = now + self.cookie.max_age.as_secs();
                Claims {
                    backend: backend.clone(),
                    issued_at: now,
                    idle_expires_at: (now + idle).min(expires_at),
                    expires_at,
                }
            }
        };
        let token = self.keys.seal(&claims, self.nonces.next());
        let max_age = claims.expires_at.saturating_sub(now);
        let same_site = match self.cookie.same_site {
            SameSite::Lax => CookieSameSite::Lax,
            SameSite::Strict => CookieSameSite::Strict,
            SameSite::None => CookieSameSite::None,
        };
        let secure =
            self.cookie.secure || self.secure_listener || self.cookie.same_site == SameSite::None;
        let c = Cookie::build((self.cookie.name.as_str(), token))
            .path("/")
            .http_only(true)
            .same_site(same_site)
            .secure(secure)
            .max_age(cookie::time::Duration::seconds(
                i64::try_from(max_age).unwrap_or(i64::MAX),
            ));
        HeaderValue::from_str(&c.to_string()).ok()
    }

    /// The key ring (for a reload to extend).
    pub fn keys(&self) -> &KeyRing {
        &self.keys
    }

    /// Keeps the routes `previous` learned when the app-cookie settings did not change.
    pub fn adopt_learned(&mut self, previous: &Affinity) {
        if self.mode == previous.mode && self.app_cookie == previous.app_cookie {
            self.learned.clone_from(&previous.learned);
        }
    }

    /// Opens a cookie token the way requests are checked (for the admin API's `explain`).
    pub fn explain(&self, token: &str, now: u64) -> Result<(Claims, u32), OpenError> {
        self.keys.open(token, now)
    }

    /// Learns app-cookie routes from a backend's `Set-Cookie` headers.
    pub fn learn(&self, response_headers: &HeaderMap, backend: &BackendId, at: Instant) {
        let (AffinityMode::AppCookie(name), Some(table)) = (&self.mode, &self.learned) else {
            return;
        };
        for v in response_headers.get_all(http::header::SET_COOKIE) {
            let Some(c) = v.to_str().ok().and_then(|s| Cookie::parse(s).ok()) else {
                continue;
            };
            if c.name() == name && !c.value().is_empty() {
                table.learn(c.value().as_bytes(), backend, at);
            }
        }
    }
}

/// Cookie nonces: a random 96-bit start per process plus a counter, so no nonce repeats within
/// a process and processes sharing a key collide only if their random starts fall within one
/// run's count of each other in 2^96 (AES-GCM must never reuse a nonce under one key).
#[derive(Debug)]
struct Nonces {
    start: u128,
    counter: AtomicU64,
}

impl Nonces {
    const MASK: u128 = (1 << 96) - 1;

    fn new(start: u128) -> Self {
        Self {
            start: start & Self::MASK,
            counter: AtomicU64::new(0),
        }
    }

    fn next(&self) -> [u8; NONCE_LEN] {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let value = self.start.wrapping_add(u128::from(n)) & Self::MASK;
        let mut out = [0u8; NONCE_LEN];
        out.copy_from_slice(&value.to_be_bytes()[16 - NONCE_LEN..]);
        out
    }
}

/// Unix time in seconds.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs()
}

#[cfg(test)]
mod tests;
