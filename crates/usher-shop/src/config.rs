//! What a shop is started with: its id, where sessions live, where users and orders live, and
//! how expensive password hashing is.
//!
//! The `--sessions` and `--db` strings are parsed here (not in the CLI) so that the lab, tests and
//! the `usher shop` subcommand all accept exactly the same spellings and get the same errors.

use std::fmt;
use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use http::HeaderValue;
use usher_session::jwt::{Algorithm, RevocationCheck};

use crate::password::PasswordCost;

/// How clients prove who they are (`--auth`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AuthMode {
    /// A session cookie; sign-in state, cart and preferences live in the session store.
    #[default]
    Session,
    /// Signed access tokens (JWT) plus rotating refresh tokens; the cart and preferences live in
    /// the database keyed by user, so no shop keeps per-user state.
    Jwt,
}

impl AuthMode {
    /// `session` or `jwt`, as `/api/me` reports it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Session => "session",
            Self::Jwt => "jwt",
        }
    }
}

impl FromStr for AuthMode {
    type Err = SpecError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            "session" => Ok(Self::Session),
            "jwt" => Ok(Self::Jwt),
            other => Err(SpecError(format!(
                "--auth: expected session or jwt, got {other:?}"
            ))),
        }
    }
}

/// The `--jwt-*` settings (used only with [`AuthMode::Jwt`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JwtSettings {
    /// The key file (`usher shop keygen`). Created (with one EdDSA key) if missing, so shops
    /// started together with the same path share one key. `None`: a random key per process.
    pub keys: Option<PathBuf>,
    /// Whether each access token is checked against the store (logout effective at once).
    pub revocation: RevocationCheck,
    /// Access-token lifetime.
    pub access_ttl: Duration,
    /// Algorithm of a key the shop generates itself.
    pub generate_alg: Algorithm,
}

impl Default for JwtSettings {
    fn default() -> Self {
        Self {
            keys: None,
            revocation: RevocationCheck::Never,
            access_ttl: Duration::from_secs(300),
            generate_alg: Algorithm::EdDSA,
        }
    }
}

/// Parses `--jwt-revocation never|always`.
pub fn parse_revocation(s: &str) -> Result<RevocationCheck, SpecError> {
    match s.trim() {
        "never" => Ok(RevocationCheck::Never),
        "always" => Ok(RevocationCheck::Always),
        other => Err(SpecError(format!(
            "--jwt-revocation: expected never or always, got {other:?}"
        ))),
    }
}

/// Where sessions live (`--sessions`).
#[derive(Clone, PartialEq, Eq)]
pub enum SessionsSpec {
    /// Each shop process keeps its own sessions: a user routed to another shop is signed out.
    Memory,
    /// One SQLite file that every shop on this machine shares.
    Sqlite(PathBuf),
    /// A single Redis node (`redis://`, `rediss://` or `redis+unix://`).
    Redis(String),
    /// A Redis Cluster (`redis+cluster://` or `rediss+cluster://`).
    RedisCluster(String),
    /// Redis behind Sentinel (`redis+sentinel://` or `rediss+sentinel://`).
    RedisSentinel(String),
    /// PostgreSQL (`postgres://` or `postgresql://`).
    Postgres(String),
}

impl SessionsSpec {
    /// The kind reported by `GET /api/me` as `store`.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Memory => "memory",
            Self::Sqlite(_) => "sqlite",
            Self::Redis(_) => "redis",
            Self::RedisCluster(_) => "redis-cluster",
            Self::RedisSentinel(_) => "redis-sentinel",
            Self::Postgres(_) => "postgres",
        }
    }
}

// URLs may carry passwords: Debug and Display show the kind and, for files, the path only.
impl fmt::Debug for SessionsSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for SessionsSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Sqlite(path) => write!(f, "sqlite:{}", path.display()),
            other => f.write_str(other.kind()),
        }
    }
}

/// A `--sessions` or `--db` value that is not understood.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SpecError(String);

fn sqlite_path(rest: &str, flag: &str) -> Result<PathBuf, SpecError> {
    if rest.is_empty() {
        return Err(SpecError(format!(
            "{flag}: `sqlite:` needs a file path, e.g. sqlite:/tmp/shop.db"
        )));
    }
    Ok(PathBuf::from(rest))
}

fn is_postgres(s: &str) -> bool {
    s.starts_with("postgres://") || s.starts_with("postgresql://")
}

impl FromStr for SessionsSpec {
    type Err = SpecError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if s == "memory" {
            Ok(Self::Memory)
        } else if let Some(rest) = s.strip_prefix("sqlite:") {
            Ok(Self::Sqlite(sqlite_path(rest, "--sessions")?))
        } else if s.starts_with("redis+cluster://") || s.starts_with("rediss+cluster://") {
            Ok(Self::RedisCluster(s.to_owned()))
        } else if s.starts_with("redis+sentinel://") || s.starts_with("rediss+sentinel://") {
            Ok(Self::RedisSentinel(s.to_owned()))
        } else if ["redis://", "rediss://", "redis+unix://"]
            .iter()
            .any(|p| s.starts_with(p))
        {
            Ok(Self::Redis(s.to_owned()))
        } else if is_postgres(s) {
            Ok(Self::Postgres(s.to_owned()))
        } else {
            Err(SpecError(
                "--sessions: expected memory, sqlite:PATH, redis://…, redis+cluster://…, \
                 redis+sentinel://… or postgres://…"
                    .to_owned(),
            ))
        }
    }
}

/// Where users and orders live (`--db`): durable data, shared by every shop.
#[derive(Clone, PartialEq, Eq)]
pub enum DbSpec {
    /// A SQLite file (WAL mode) shared by the shops on one machine.
    Sqlite(PathBuf),
    /// A PostgreSQL database.
    Postgres(String),
}

impl DbSpec {
    /// `sqlite` or `postgres`.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Sqlite(_) => "sqlite",
            Self::Postgres(_) => "postgres",
        }
    }
}

impl fmt::Debug for DbSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for DbSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Sqlite(path) => write!(f, "sqlite:{}", path.display()),
            Self::Postgres(_) => f.write_str("postgres"),
        }
    }
}

impl FromStr for DbSpec {
    type Err = SpecError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if let Some(rest) = s.strip_prefix("sqlite:") {
            Ok(Self::Sqlite(sqlite_path(rest, "--db")?))
        } else if is_postgres(s) {
            Ok(Self::Postgres(s.to_owned()))
        } else {
            Err(SpecError(
                "--db: expected sqlite:PATH or postgres://…".to_owned(),
            ))
        }
    }
}

/// Everything [`crate::run`] needs.
#[derive(Debug, Clone)]
pub struct ShopConfig {
    /// This shop's name, sent as `X-Served-By` on every response and shown on every page.
    pub id: String,
    /// Where sessions live.
    pub sessions: SessionsSpec,
    /// Where users and orders live.
    pub db: DbSpec,
    /// Argon2id cost for new password hashes.
    pub password_cost: PasswordCost,
    /// A session dies after this long without a request.
    pub idle_timeout: Duration,
    /// A session dies this long after it was created.
    pub absolute_timeout: Duration,
    /// Most sessions the `memory` store keeps before evicting the least recently used.
    pub memory_capacity: NonZeroUsize,
    /// Mark the session cookie `Secure` (when the shop is served over HTTPS).
    pub secure_cookie: bool,
    /// Session cookies or JWTs.
    pub auth: AuthMode,
    /// JWT settings (jwt mode only).
    pub jwt: JwtSettings,
    /// How long a running checkout holds its Idempotency-Key before a retry may take it over
    /// (must outlast the slowest checkout).
    pub idempotency_lease: Duration,
    /// How long a client may take to send a whole request head (`--header-read-timeout`); a
    /// connection whose head is still incomplete then is closed, so a client trickling bytes
    /// (slowloris) cannot hold it forever. The clock starts when the server starts waiting for a
    /// head, so it also closes a keep-alive connection left idle this long. Must be above zero.
    ///
    /// The default (60 s, as NGINX's `client_header_timeout`) is above the 30 s for which
    /// `usher lb` keeps an idle upstream connection: a backend that closes idle connections
    /// before its balancer does races the balancer's next request on them, and a request that
    /// is not safe to resend then fails.
    pub header_read_timeout: Duration,
    /// Test only: how long checkout waits before writing the order, so a test can kill the
    /// process mid-checkout. Zero in production.
    pub test_checkout_delay: Duration,
}

/// Default of [`ShopConfig::header_read_timeout`].
pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(60);

/// Longest accepted shop id.
const MAX_ID_LEN: usize = 64;

impl ShopConfig {
    /// A config with defaults: 30 min idle, 24 h absolute, 100 000 memory sessions, default
    /// password cost, no `Secure` cookie, session auth, a 60 s idempotency lease, a 60 s
    /// header-read timeout.
    pub fn new(id: impl Into<String>, sessions: SessionsSpec, db: DbSpec) -> Self {
        Self {
            id: id.into(),
            sessions,
            db,
            password_cost: PasswordCost::default(),
            idle_timeout: Duration::from_secs(1800),
            absolute_timeout: Duration::from_secs(86_400),
            memory_capacity: NonZeroUsize::new(100_000).unwrap_or(NonZeroUsize::MIN),
            secure_cookie: false,
            auth: AuthMode::Session,
            jwt: JwtSettings::default(),
            idempotency_lease: Duration::from_secs(60),
            header_read_timeout: DEFAULT_HEADER_READ_TIMEOUT,
            test_checkout_delay: Duration::ZERO,
        }
    }

    /// Checks the settings that are not checked by their types: the header-read timeout must be
    /// above zero (zero would close every connection before its first request).
    pub fn check(&self) -> Result<(), SpecError> {
        if self.header_read_timeout.is_zero() {
            return Err(SpecError(
                "--header-read-timeout (header_read_timeout) must be above zero".to_owned(),
            ));
        }
        Ok(())
    }

    /// The id as a header value, if it can be one (printable ASCII, 1 to 64 bytes).
    pub fn served_by(&self) -> Result<HeaderValue, SpecError> {
        let ok = !self.id.is_empty()
            && self.id.len() <= MAX_ID_LEN
            && self.id.bytes().all(|b| b.is_ascii_graphic());
        ok.then(|| HeaderValue::from_str(&self.id).ok())
            .flatten()
            .ok_or_else(|| {
                SpecError(format!(
                    "--id must be 1 to {MAX_ID_LEN} printable ASCII characters without spaces, got {:?}",
                    self.id
                ))
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_specs() {
        assert_eq!("memory".parse(), Ok(SessionsSpec::Memory));
        assert_eq!(
            "sqlite:/tmp/s.db".parse(),
            Ok(SessionsSpec::Sqlite("/tmp/s.db".into()))
        );
        let r: SessionsSpec = "redis://127.0.0.1:7000/0".parse().unwrap();
        assert_eq!(r.kind(), "redis");
        let c: SessionsSpec = "redis+cluster://127.0.0.1:7000".parse().unwrap();
        assert_eq!(c.kind(), "redis-cluster");
        let s: SessionsSpec = "redis+sentinel://127.0.0.1:26379/m".parse().unwrap();
        assert_eq!(s.kind(), "redis-sentinel");
        let p: SessionsSpec = "postgresql://u:secret@127.0.0.1/db".parse().unwrap();
        assert_eq!(p.kind(), "postgres");
        assert!(
            !format!("{p} {p:?}").contains("secret"),
            "no password leaks"
        );
        for bad in ["", "sqlite:", "mem", "http://x", "file:/x"] {
            let e = bad.parse::<SessionsSpec>().unwrap_err();
            assert!(e.to_string().contains("--sessions"), "{bad}: {e}");
        }
    }

    #[test]
    fn db_specs() {
        assert_eq!(
            "sqlite:shop.db".parse(),
            Ok(DbSpec::Sqlite("shop.db".into()))
        );
        let p: DbSpec = "postgres://u:pw@127.0.0.1:5999/shop".parse().unwrap();
        assert_eq!(p.kind(), "postgres");
        assert!(!format!("{p:?}").contains("pw@"));
        for bad in ["memory", "sqlite:", "redis://x"] {
            assert!(bad.parse::<DbSpec>().is_err(), "{bad}");
        }
    }

    #[test]
    fn auth_modes_and_revocation() {
        assert_eq!("jwt".parse(), Ok(AuthMode::Jwt));
        assert_eq!("session".parse(), Ok(AuthMode::Session));
        assert!(
            "JWT"
                .parse::<AuthMode>()
                .unwrap_err()
                .to_string()
                .contains("--auth")
        );
        assert_eq!(parse_revocation("always"), Ok(RevocationCheck::Always));
        assert!(parse_revocation("sometimes").is_err());
    }

    #[test]
    fn header_read_timeout_must_be_positive() {
        let mut c = ShopConfig::new("s", SessionsSpec::Memory, DbSpec::Sqlite("x".into()));
        assert_eq!(c.header_read_timeout, Duration::from_secs(60));
        assert!(c.check().is_ok());
        c.header_read_timeout = Duration::ZERO;
        let e = c.check().unwrap_err().to_string();
        assert!(e.contains("header-read-timeout"), "{e}");
    }

    #[test]
    fn ids_must_fit_a_header() {
        let mk = |id: &str| ShopConfig::new(id, SessionsSpec::Memory, DbSpec::Sqlite("x".into()));
        assert!(mk("shop-0").served_by().is_ok());
        for bad in ["", "with space", "tab\t", "é", &"x".repeat(65)] {
            assert!(mk(bad).served_by().is_err(), "{bad:?}");
        }
    }
}
