//! The raw, serde-facing configuration (`usher lb --config FILE.toml` and the quick flags).
//!
//! Every field that has a syntax of its own (addresses, ids, durations, policy and affinity names)
//! is parsed *during* deserialization, so a bad value is reported by `toml` with its key and line.
//! Cross-field checks (duplicate ids, no backends) happen in [`super::LbConfig::try_from`] and use the
//! spans kept here to name the line too.

use std::path::PathBuf;
use std::time::Duration;

use ipnet::IpNet;
use serde::Deserialize;
use toml::Spanned;

use super::types::{AffinityMode, BackendAddr, FailurePolicy, SameSite};
use usher_balancer::{BackendId, Policy};

/// The whole file. Every field is optional so that flags can fill or override it.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// Address to accept clients on, e.g. `"127.0.0.1:8080"`.
    pub listen: Option<std::net::SocketAddr>,
    /// Selection policy for requests without an affinity binding.
    #[serde(default, with = "opt_from_str")]
    pub policy: Option<Policy>,
    /// Bounded-load factor `c` for consistent hashing (≥ 1.0).
    pub balance_factor: Option<f64>,
    /// A new or recovered backend's share of new clients ramps from ~10 % to 100 % over this
    /// (default `30s`; `0s` turns slow start off).
    #[serde(default, with = "humantime_serde")]
    pub slow_start: Option<Duration>,
    /// Worker threads serving clients (default: one per CPU the process may run on).
    pub threads: Option<usize>,
    /// Affinity mode: `none`, `cookie`, `source-ip`, `header:NAME`, `query:NAME`, `app-cookie:NAME`.
    pub affinity: Option<AffinityMode>,
    /// What to do when a pinned backend is unavailable: `repin` or `strict`.
    pub on_failure: Option<FailurePolicy>,
    /// File with affinity cookie keys (`usher lb keygen`).
    pub key_file: Option<PathBuf>,
    /// CIDRs whose `X-Forwarded-For` / `Forwarded` headers are believed.
    pub trusted_proxies: Option<Vec<IpNet>>,
    /// Affinity cookie attributes.
    #[serde(default)]
    pub cookie: CookieSection,
    /// The learned table behind `app-cookie:NAME`.
    #[serde(default)]
    pub app_cookie: AppCookieSection,
    /// Limits and timeouts.
    #[serde(default)]
    pub limits: LimitsSection,
    /// TLS termination; without it the listener speaks plain HTTP.
    pub tls: Option<TlsSection>,
    /// One log line per request (target `usher::access`; JSON with `--log-format json`).
    pub access_log: Option<bool>,
    /// The admin API listener.
    #[serde(default)]
    pub admin: AdminSection,
    /// Active and passive health checking.
    #[serde(default)]
    pub health: HealthSection,
    /// The backends, in order.
    #[serde(default, rename = "backend")]
    pub backends: Vec<Spanned<BackendSection>>,
}

/// `[cookie]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CookieSection {
    /// Cookie name (default `usher`).
    pub name: Option<String>,
    /// `lax` (default), `strict` or `none`.
    pub same_site: Option<SameSite>,
    /// Always mark the cookie `Secure` (it is on TLS listeners anyway).
    pub secure: Option<bool>,
    /// Absolute lifetime of a binding, also the cookie's `Max-Age` (default `24h`).
    #[serde(default, with = "humantime_serde")]
    pub max_age: Option<Duration>,
    /// Sliding idle expiry of a binding (default `30m`).
    #[serde(default, with = "humantime_serde")]
    pub idle_timeout: Option<Duration>,
}

/// `[app_cookie]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppCookieSection {
    /// Most routes remembered (default 100 000).
    pub capacity: Option<usize>,
    /// A route is forgotten this long after its last use (default `30m`).
    #[serde(default, with = "humantime_serde")]
    pub ttl: Option<Duration>,
}

/// `[limits]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsSection {
    /// Time a client has to send a whole request head once it started (default `10s`).
    #[serde(default, with = "humantime_serde")]
    pub header_read_timeout: Option<Duration>,
    /// Largest request head accepted; larger gets 431 (default 16 KiB).
    pub max_header_bytes: Option<usize>,
    /// Time to open a connection to a backend (default `2s`).
    #[serde(default, with = "humantime_serde")]
    pub connect_timeout: Option<Duration>,
    /// Time for a backend to send its response head (default `30s`).
    #[serde(default, with = "humantime_serde")]
    pub response_timeout: Option<Duration>,
    /// An idle keep-alive client connection is closed after this (default `60s`).
    #[serde(default, with = "humantime_serde")]
    pub idle_timeout: Option<Duration>,
    /// How long shutdown waits for in-flight requests (default `30s`).
    #[serde(default, with = "humantime_serde")]
    pub shutdown_grace: Option<Duration>,
    /// A backend that refused a connection is skipped for this long (default `2s`).
    #[serde(default, with = "humantime_serde")]
    pub down_backoff: Option<Duration>,
    /// Request bodies up to this size are kept so a retry can resend them (default 64 KiB).
    pub retry_buffer_bytes: Option<usize>,
}

/// `[health]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthSection {
    /// Path for active checks, e.g. `/healthz`; unset: no active checks.
    pub path: Option<String>,
    /// Time between checks of one backend (default `2s`).
    #[serde(default, with = "humantime_serde")]
    pub interval: Option<Duration>,
    /// A check slower than this fails (default `1s`).
    #[serde(default, with = "humantime_serde")]
    pub timeout: Option<Duration>,
    /// Consecutive passing checks to bring a backend up (default 2).
    pub rise: Option<u32>,
    /// Consecutive failing checks to take a backend down (default 3).
    pub fall: Option<u32>,
    /// Status a passing check returns; unset: any 2xx or 3xx.
    pub expect_status: Option<u16>,
    /// Consecutive 5xx or timed-out responses that eject a backend (default 5; 0: never).
    pub passive_failures: Option<u32>,
    /// How long an ejected backend sits out before it is tried again (default `10s`).
    #[serde(default, with = "humantime_serde")]
    pub passive_backoff: Option<Duration>,
}

/// `[admin]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminSection {
    /// Admin API address (default `127.0.0.1:8081`); `"off"` disables it.
    pub listen: Option<String>,
    /// File holding the bearer token (the `USHER_ADMIN_TOKEN` variable also works).
    pub token_file: Option<PathBuf>,
}

/// `[tls]`: both files are required when the section is present.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSection {
    /// PEM file with the certificate chain, server certificate first.
    pub cert: PathBuf,
    /// PEM file with the private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

/// One `[[backend]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackendSection {
    /// Stable id, e.g. `shop-0`.
    #[serde(with = "from_str")]
    pub id: BackendId,
    /// `host:port` (resolved once, at load).
    pub addr: BackendAddr,
    /// Relative weight, 1–1000 (default 1).
    pub weight: Option<u32>,
}

/// `FromStr` types as TOML strings, so their parse errors carry the key and line.
mod from_str {
    use std::fmt::Display;
    use std::str::FromStr;

    use serde::{Deserialize, Deserializer};

    pub fn deserialize<'de, D, T>(d: D) -> Result<T, D::Error>
    where
        D: Deserializer<'de>,
        T: FromStr,
        T::Err: Display,
    {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Optional `FromStr` types as TOML strings.
mod opt_from_str {
    use std::fmt::Display;
    use std::str::FromStr;

    use serde::{Deserialize, Deserializer};

    pub fn deserialize<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
    where
        D: Deserializer<'de>,
        T: FromStr,
        T::Err: Display,
    {
        let s = String::deserialize(d)?;
        s.parse().map(Some).map_err(serde::de::Error::custom)
    }
}
