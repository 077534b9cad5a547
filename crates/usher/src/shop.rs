//! `usher shop`: run the demo web shop (see the usher-shop crate for its routes), or make and
//! rotate its JWT key file (`usher shop keygen`).

use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, Subcommand};
use usher_shop::config::parse_revocation;
use usher_shop::{
    AuthMode, DbSpec, JwtAlgorithm as Algorithm, PasswordCost, RevocationCheck, SessionsSpec,
    ShopConfig,
};

/// `usher shop`.
#[derive(Debug, Args)]
#[command(
    args_conflicts_with_subcommands = true,
    after_help = "EXAMPLES:\n  usher shop --listen 127.0.0.1:9001 --id shop-0 --sessions memory --db sqlite:/tmp/shop.db\n  usher shop --listen 127.0.0.1:0 --id shop-1 --sessions redis://127.0.0.1:7000/0 \\\n             --db postgres://shop@127.0.0.1:5999/shop --password-cost low\n  usher shop --auth jwt --jwt-keys /tmp/jwt.json --sessions sqlite:/tmp/s.db --db sqlite:/tmp/shop.db\n  usher shop keygen --out /tmp/jwt.json     # create, or rotate (old keys keep verifying)\n\n--sessions: memory | sqlite:PATH | redis://… | redis+cluster://… | redis+sentinel://… | postgres://…\n--db:       sqlite:PATH | postgres://…\n--jwt-keys: created with one EdDSA key if missing (atomically: shops started together share it).\nThe ready line (`usher shop ready`) carries the bound address as `listen`."
)]
pub struct ShopCommand {
    #[command(subcommand)]
    sub: Option<ShopSub>,
    #[command(flatten)]
    run: ShopArgs,
}

#[derive(Debug, Subcommand)]
enum ShopSub {
    /// Create a JWT key file, or rotate an existing one: the new key signs from now on and every
    /// old key keeps verifying, so nobody is logged out. Restart (or start) the shops after.
    Keygen {
        /// The key file.
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
        /// Algorithm of the new key.
        #[arg(long, value_name = "ALG", default_value = "eddsa", value_parser = parse_alg)]
        alg: Algorithm,
    },
}

fn parse_alg(s: &str) -> Result<Algorithm, String> {
    Algorithm::ALL
        .into_iter()
        .find(|a| a.name().eq_ignore_ascii_case(s))
        .ok_or_else(|| format!("unknown algorithm {s:?}; expected eddsa, es256, rs256 or hs256"))
}

fn parse_revocation_flag(s: &str) -> Result<RevocationCheck, String> {
    parse_revocation(s).map_err(|e| e.to_string())
}

/// The flags of a serving shop.
#[derive(Debug, Args)]
struct ShopArgs {
    /// Address to listen on; port 0 picks a free port (printed in the ready line).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:9001")]
    listen: SocketAddr,
    /// This shop's name, sent as X-Served-By and shown on every page.
    #[arg(long, default_value = "shop-0")]
    id: String,
    /// Where sessions live.
    #[arg(long, value_name = "STORE", default_value = "memory")]
    sessions: SessionsSpec,
    /// Where users and orders live (required).
    #[arg(long, value_name = "DB")]
    db: Option<DbSpec>,
    /// Password hashing cost: default (argon2id 19 MiB, 2 passes) or low (64 KiB, 1 pass: for
    /// load tests that seed many users, never for real ones).
    #[arg(long, value_name = "COST", default_value = "default")]
    password_cost: PasswordCost,
    /// Argon2id memory in KiB (overrides --password-cost).
    #[arg(long, value_name = "KIB")]
    argon2_m_kib: Option<u32>,
    /// Argon2id passes (overrides --password-cost).
    #[arg(long, value_name = "N")]
    argon2_t: Option<u32>,
    /// A session dies after this long without a request.
    #[arg(long, value_parser = humantime::parse_duration, value_name = "DURATION", default_value = "30m")]
    session_idle: Duration,
    /// A session dies this long after it was created.
    #[arg(long, value_parser = humantime::parse_duration, value_name = "DURATION", default_value = "24h")]
    session_max_age: Duration,
    /// Most sessions the memory store keeps (least recently used evicted beyond).
    #[arg(long, value_name = "N", default_value = "100000")]
    memory_sessions: NonZeroUsize,
    /// Mark the session cookie Secure (when served over HTTPS).
    #[arg(long)]
    secure_cookie: bool,
    /// How clients sign in: session (a cookie; state in the session store) or jwt (access and
    /// refresh tokens; cart and preferences in the database).
    #[arg(long, value_name = "MODE", default_value = "session")]
    auth: AuthMode,
    /// JWT key file (from `usher shop keygen`; created if missing). Without it a random key is
    /// used, which other shops do not accept.
    #[arg(long, value_name = "FILE")]
    jwt_keys: Option<PathBuf>,
    /// Check every access token against the store (never: logout takes effect when the access
    /// token expires; always: at once, one store read per request).
    #[arg(long, value_name = "WHEN", default_value = "never", value_parser = parse_revocation_flag)]
    jwt_revocation: RevocationCheck,
    /// Access-token lifetime.
    #[arg(long, value_parser = humantime::parse_duration, value_name = "DURATION", default_value = "5m")]
    jwt_access_ttl: Duration,
    /// How long a running checkout holds its Idempotency-Key before a retry may take it over;
    /// must outlast the slowest checkout.
    #[arg(long, value_parser = humantime::parse_duration, value_name = "DURATION", default_value = "60s")]
    idempotency_lease: Duration,
    /// Close a connection whose request head is not complete this long after the server began
    /// waiting for it (slowloris protection; also ends keep-alive connections idle this long, so
    /// keep it above the balancer's upstream idle hold, 30 s for `usher lb`).
    #[arg(long, value_parser = humantime::parse_duration, value_name = "DURATION", default_value = "60s")]
    header_read_timeout: Duration,
    /// TEST ONLY: checkout waits this long before writing the order, so tests can kill a shop
    /// mid-checkout. Never set in production.
    #[arg(long, hide = true, value_parser = humantime::parse_duration, value_name = "DURATION")]
    test_checkout_delay: Option<Duration>,
}

impl ShopArgs {
    fn config(self) -> anyhow::Result<ShopConfig> {
        let mut cost = self.password_cost;
        if let Some(m) = self.argon2_m_kib {
            cost.m_kib = m;
        }
        if let Some(t) = self.argon2_t {
            cost.t = t;
        }
        let db = self
            .db
            .context("--db is required (sqlite:PATH or postgres://…)")?;
        let mut config = ShopConfig::new(self.id, self.sessions, db);
        config.password_cost = cost;
        config.idle_timeout = self.session_idle;
        config.absolute_timeout = self.session_max_age;
        config.memory_capacity = self.memory_sessions;
        config.secure_cookie = self.secure_cookie;
        config.auth = self.auth;
        config.jwt.keys = self.jwt_keys;
        config.jwt.revocation = self.jwt_revocation;
        config.jwt.access_ttl = self.jwt_access_ttl;
        config.idempotency_lease = self.idempotency_lease;
        config.header_read_timeout = self.header_read_timeout;
        if let Some(delay) = self.test_checkout_delay {
            tracing::warn!(
                ?delay,
                "--test-checkout-delay is set: checkouts are slowed down (tests only)"
            );
            config.test_checkout_delay = delay;
        }
        Ok(config)
    }
}

/// Runs `usher shop` (until SIGTERM or SIGINT, then finishes in-flight requests) or
/// `usher shop keygen`.
pub fn run(cmd: ShopCommand) -> anyhow::Result<()> {
    match cmd.sub {
        Some(ShopSub::Keygen { out, alg }) => keygen(&out, alg),
        None => serve(cmd.run),
    }
}

fn keygen(out: &std::path::Path, alg: Algorithm) -> anyhow::Result<()> {
    let (kid, rotated) = usher_shop::auth::keys::keygen(out, alg)
        .with_context(|| format!("cannot make a key in {}", out.display()))?;
    if rotated {
        eprintln!(
            "usher: rotated {}: {kid} ({alg}) signs from now on; older keys still verify",
            out.display()
        );
    } else {
        eprintln!(
            "usher: created {} with signing key {kid} ({alg})",
            out.display()
        );
    }
    Ok(())
}

fn serve(args: ShopArgs) -> anyhow::Result<()> {
    let listen = args.listen;
    let config = args.config()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .with_context(|| format!("cannot listen on {listen}"))?;
        let local = listener.local_addr()?;
        let shutdown = shutdown_signal()?;
        let (id, sessions, db, auth) = (
            config.id.clone(),
            config.sessions.to_string(),
            config.db.to_string(),
            config.auth.as_str(),
        );
        // Stores are opened before "ready": a bad flag or an unreachable store ends the process.
        let shop = usher_shop::Shop::open(config).await?;
        tracing::info!(listen = %local, id = %id, sessions = %sessions, db = %db, auth, "usher shop ready");
        shop.serve(listener, shutdown).await?;
        tracing::info!(id = %id, "usher shop stopped");
        anyhow::Ok(())
    })
}

/// Installs SIGTERM/SIGINT handlers now (a signal arriving during start-up is not fatal) and
/// returns a future resolving on the first of them.
fn shutdown_signal() -> anyhow::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
    Ok(async move {
        tokio::select! {
            _ = int.recv() => tracing::info!("SIGINT: shutting down"),
            _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
        }
    })
}
