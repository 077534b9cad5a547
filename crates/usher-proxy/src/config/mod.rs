//! Load-balancer configuration: raw file/flag values ([`FileConfig`]) validated into [`LbConfig`].

mod file;
mod types;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;
use usher_balancer::{BackendId, Policy};

pub use file::{
    AdminSection, AppCookieSection, BackendSection, CookieSection, FileConfig, HealthSection,
    LimitsSection, TlsSection,
};
pub use types::{
    AffinityMode, BackendAddr, FailurePolicy, InvalidAffinity, InvalidBackendAddr,
    InvalidFailurePolicy, InvalidSameSite, SameSite,
};

/// A configuration error, naming the field (and the line, for files).
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// TOML syntax, an unknown field or a bad value (the message names key, line and column).
    #[error("{path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// `toml`'s message, which names the key and line.
        message: String,
    },
    /// A value that parsed but is not allowed.
    #[error("{field}{}: {message}", line.map(|l| format!(" (line {l})")).unwrap_or_default())]
    Invalid {
        /// Dotted field path, e.g. `backend[2].id` or `limits.max_header_bytes`.
        field: String,
        /// 1-based line in the file, when known.
        line: Option<usize>,
        /// What is wrong.
        message: String,
    },
}

impl ConfigError {
    fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Invalid {
            field: field.into(),
            line: None,
            message: message.into(),
        }
    }
}

/// One backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendConfig {
    /// Stable id.
    pub id: BackendId,
    /// Where it listens.
    pub addr: SocketAddr,
    /// Relative weight, 1–1000.
    pub weight: u32,
}

/// Affinity cookie settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CookieConfig {
    /// Cookie name.
    pub name: String,
    /// `SameSite` attribute.
    pub same_site: SameSite,
    /// Always `Secure`.
    pub secure: bool,
    /// Absolute lifetime of a binding.
    pub max_age: Duration,
    /// Sliding idle expiry.
    pub idle_timeout: Duration,
}

/// The learned table behind `app-cookie:NAME`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppCookieConfig {
    /// Most routes remembered.
    pub capacity: usize,
    /// Forget a route this long after its last use.
    pub ttl: Duration,
}

/// Limits and timeouts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Time to send a whole request head once its first byte arrived.
    pub header_read_timeout: Duration,
    /// Largest request head; larger gets 431.
    pub max_header_bytes: usize,
    /// Time to connect to a backend.
    pub connect_timeout: Duration,
    /// Time for a backend to send its response head.
    pub response_timeout: Duration,
    /// Idle keep-alive client connections are closed after this.
    pub idle_timeout: Duration,
    /// Shutdown waits this long for in-flight requests.
    pub shutdown_grace: Duration,
    /// A backend that refused a connection is skipped for this long.
    pub down_backoff: Duration,
    /// Request bodies up to this size are buffered so a retry can resend them.
    pub retry_buffer_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            header_read_timeout: Duration::from_secs(10),
            max_header_bytes: 16 * 1024,
            connect_timeout: Duration::from_secs(2),
            response_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(60),
            shutdown_grace: Duration::from_secs(30),
            down_backoff: Duration::from_secs(2),
            retry_buffer_bytes: 64 * 1024,
        }
    }
}

/// Health checking.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthConfig {
    /// Active check path; `None`: no active checks.
    pub path: Option<String>,
    /// Time between checks.
    pub interval: Duration,
    /// Check timeout.
    pub timeout: Duration,
    /// Passing checks to come up.
    pub rise: u32,
    /// Failing checks to go down.
    pub fall: u32,
    /// Expected status; `None`: any 2xx or 3xx.
    pub expect_status: Option<u16>,
    /// Consecutive failed responses that eject a backend (0: never).
    pub passive_failures: u32,
    /// Ejection time.
    pub passive_backoff: Duration,
}

/// The admin API listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminConfig {
    /// Where the admin API listens; `None` when disabled.
    pub listen: Option<SocketAddr>,
    /// File with the bearer token.
    pub token_file: Option<PathBuf>,
}

/// TLS termination: where the certificate chain and private key are (read by `Lb::new`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsConfig {
    /// PEM certificate chain, server certificate first.
    pub cert: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

/// A validated load-balancer configuration.
#[derive(Debug, Clone)]
pub struct LbConfig {
    /// Listen address.
    pub listen: SocketAddr,
    /// Backends, in order.
    pub backends: Vec<BackendConfig>,
    /// Selection policy.
    pub policy: Policy,
    /// Bounded-load factor for hashing.
    pub balance_factor: f64,
    /// Slow-start window for new and recovered backends (zero: off).
    pub slow_start: Duration,
    /// Worker threads for the runtime that serves clients (`None`: one per available CPU).
    /// Read when the process starts; a reload keeps the running count.
    pub threads: Option<usize>,
    /// Log one line per request.
    pub access_log: bool,
    /// Affinity mode.
    pub affinity: AffinityMode,
    /// Failover policy.
    pub on_failure: FailurePolicy,
    /// Key file for the affinity cookie; `None` means a random key per process.
    pub key_file: Option<PathBuf>,
    /// Proxies whose forwarding headers are believed.
    pub trusted_proxies: Vec<IpNet>,
    /// Cookie settings.
    pub cookie: CookieConfig,
    /// App-cookie table settings.
    pub app_cookie: AppCookieConfig,
    /// Limits and timeouts.
    pub limits: Limits,
    /// TLS termination on the listener; `None` for plain HTTP.
    pub tls: Option<TlsConfig>,
    /// Admin API settings.
    pub admin: AdminConfig,
    /// Health checking.
    pub health: HealthConfig,
}

/// Smallest `max_header_bytes` hyper can enforce.
const MIN_HEADER_BYTES: usize = 8 * 1024;

impl LbConfig {
    /// Reads and validates a TOML file; errors name the file, field and line.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let (raw, text) = FileConfig::read(path)?;
        Self::from_raw(raw, Some(&text))
    }

    /// Validates raw values. `text` (the file's contents) lets errors name lines.
    pub fn from_raw(raw: FileConfig, text: Option<&str>) -> Result<Self, ConfigError> {
        let line_of = |span: std::ops::Range<usize>| {
            text.map(|t| t[..span.start.min(t.len())].matches('\n').count() + 1)
        };
        let mut backends: Vec<BackendConfig> = Vec::with_capacity(raw.backends.len());
        for (i, spanned) in raw.backends.iter().enumerate() {
            let line = line_of(spanned.span());
            let b = spanned.get_ref();
            let field = |name: &str| format!("backend[{i}].{name}");
            if backends.iter().any(|o| o.id == b.id) {
                return Err(ConfigError::Invalid {
                    field: field("id"),
                    line,
                    message: format!("duplicate backend id {:?}", b.id.as_str()),
                });
            }
            let weight = b.weight.unwrap_or(1);
            if !(1..=1000).contains(&weight) {
                return Err(ConfigError::Invalid {
                    field: field("weight"),
                    line,
                    message: format!("weight must be 1-1000, got {weight}"),
                });
            }
            backends.push(BackendConfig {
                id: b.id.clone(),
                addr: b.addr.0,
                weight,
            });
        }
        if backends.is_empty() {
            return Err(ConfigError::invalid(
                "backend",
                "at least one backend is required",
            ));
        }

        let balance_factor = raw.balance_factor.unwrap_or(1.25);
        if !(1.0..=100.0).contains(&balance_factor) {
            return Err(ConfigError::invalid(
                "balance_factor",
                format!("must be between 1.0 and 100.0, got {balance_factor}"),
            ));
        }

        let c = raw.cookie;
        let cookie = CookieConfig {
            name: c.name.unwrap_or_else(|| "usher".to_owned()),
            same_site: c.same_site.unwrap_or_default(),
            secure: c.secure.unwrap_or(false),
            max_age: c.max_age.unwrap_or(Duration::from_secs(24 * 3600)),
            idle_timeout: c.idle_timeout.unwrap_or(Duration::from_secs(30 * 60)),
        };
        let valid_cookie_name = !cookie.name.is_empty()
            && cookie.name.bytes().all(|b| {
                b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'!' | b'~' | b'*')
            });
        if !valid_cookie_name {
            return Err(ConfigError::invalid(
                "cookie.name",
                format!("{:?} is not a valid cookie name", cookie.name),
            ));
        }
        for (field, d) in [
            ("cookie.max_age", cookie.max_age),
            ("cookie.idle_timeout", cookie.idle_timeout),
        ] {
            if d < Duration::from_secs(1) {
                return Err(ConfigError::invalid(field, "must be at least 1s"));
            }
        }

        let a = raw.app_cookie;
        let app_cookie = AppCookieConfig {
            capacity: a.capacity.unwrap_or(100_000),
            ttl: a.ttl.unwrap_or(Duration::from_secs(30 * 60)),
        };
        if app_cookie.capacity == 0 {
            return Err(ConfigError::invalid(
                "app_cookie.capacity",
                "must be at least 1",
            ));
        }

        let limits = limits_from(raw.limits)?;
        if raw.threads == Some(0) {
            return Err(ConfigError::invalid("threads", "must be at least 1"));
        }

        let health = health_from(raw.health)?;
        let admin = AdminConfig {
            listen: match raw.admin.listen.as_deref() {
                None => Some(SocketAddr::from(([127, 0, 0, 1], 8081))),
                Some("off") => None,
                Some(a) => Some(a.parse().map_err(|_| {
                    ConfigError::invalid("admin.listen", format!("{a:?} is not ip:port or \"off\""))
                })?),
            },
            token_file: raw.admin.token_file,
        };
        let tls = raw.tls.map(|t| TlsConfig {
            cert: t.cert,
            key: t.key,
        });
        if let Some(t) = &tls {
            for (field, path) in [("tls.cert", &t.cert), ("tls.key", &t.key)] {
                if path.as_os_str().is_empty() {
                    return Err(ConfigError::invalid(field, "must name a PEM file"));
                }
            }
        }

        Ok(Self {
            listen: raw
                .listen
                .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 8080))),
            backends,
            policy: raw.policy.unwrap_or_default(),
            balance_factor,
            slow_start: raw.slow_start.unwrap_or(Duration::from_secs(30)),
            threads: raw.threads,
            access_log: raw.access_log.unwrap_or(false),
            affinity: raw.affinity.unwrap_or_default(),
            on_failure: raw.on_failure.unwrap_or_default(),
            key_file: raw.key_file,
            trusted_proxies: raw.trusted_proxies.unwrap_or_default(),
            cookie,
            app_cookie,
            limits,
            tls,
            admin,
            health,
        })
    }
}

fn health_from(h: HealthSection) -> Result<HealthConfig, ConfigError> {
    let health = HealthConfig {
        path: h.path,
        interval: h.interval.unwrap_or(Duration::from_secs(2)),
        timeout: h.timeout.unwrap_or(Duration::from_secs(1)),
        rise: h.rise.unwrap_or(2),
        fall: h.fall.unwrap_or(3),
        expect_status: h.expect_status,
        passive_failures: h.passive_failures.unwrap_or(5),
        passive_backoff: h.passive_backoff.unwrap_or(Duration::from_secs(10)),
    };
    if let Some(p) = &health.path
        && (!p.starts_with('/') || p.parse::<http::uri::PathAndQuery>().is_err())
    {
        return Err(ConfigError::invalid(
            "health.path",
            format!("{p:?} must be a path starting with /"),
        ));
    }
    for (field, v) in [
        ("health.interval", health.interval),
        ("health.timeout", health.timeout),
    ] {
        if v < Duration::from_millis(10) {
            return Err(ConfigError::invalid(field, "must be at least 10ms"));
        }
    }
    for (field, v) in [("health.rise", health.rise), ("health.fall", health.fall)] {
        if v == 0 {
            return Err(ConfigError::invalid(field, "must be at least 1"));
        }
    }
    if let Some(code) = health.expect_status
        && !(100..=599).contains(&code)
    {
        return Err(ConfigError::invalid(
            "health.expect_status",
            format!("{code} is not an HTTP status"),
        ));
    }
    Ok(health)
}

fn limits_from(l: LimitsSection) -> Result<Limits, ConfigError> {
    let d = Limits::default();
    let limits = Limits {
        header_read_timeout: l.header_read_timeout.unwrap_or(d.header_read_timeout),
        max_header_bytes: l.max_header_bytes.unwrap_or(d.max_header_bytes),
        connect_timeout: l.connect_timeout.unwrap_or(d.connect_timeout),
        response_timeout: l.response_timeout.unwrap_or(d.response_timeout),
        idle_timeout: l.idle_timeout.unwrap_or(d.idle_timeout),
        shutdown_grace: l.shutdown_grace.unwrap_or(d.shutdown_grace),
        down_backoff: l.down_backoff.unwrap_or(d.down_backoff),
        retry_buffer_bytes: l.retry_buffer_bytes.unwrap_or(d.retry_buffer_bytes),
    };
    if !(MIN_HEADER_BYTES..=1024 * 1024).contains(&limits.max_header_bytes) {
        return Err(ConfigError::invalid(
            "limits.max_header_bytes",
            format!(
                "must be between {MIN_HEADER_BYTES} and 1048576, got {}",
                limits.max_header_bytes
            ),
        ));
    }
    for (field, v) in [
        ("limits.header_read_timeout", limits.header_read_timeout),
        ("limits.connect_timeout", limits.connect_timeout),
        ("limits.response_timeout", limits.response_timeout),
        ("limits.idle_timeout", limits.idle_timeout),
    ] {
        if v.is_zero() {
            return Err(ConfigError::invalid(field, "must be greater than 0s"));
        }
    }
    Ok(limits)
}

impl FileConfig {
    /// Reads and parses a TOML file without validating it (flags may still fill it in).
    pub fn read(path: &Path) -> Result<(Self, String), ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let raw = toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            message: e.to_string(),
        })?;
        Ok((raw, text))
    }
}

#[cfg(test)]
mod tests;
