//! Usher's HTTP/1.1 load-balancer data plane (hyper 1 + tokio).
//!
//! Build an [`Lb`] from a validated [`LbConfig`] and serve it on a listener you bound yourself:
//!
//! ```no_run
//! # async fn run(config: usher_proxy::LbConfig) -> anyhow::Result<()> {
//! let keys = usher_proxy::load_keys(config.key_file.as_deref(), true)?;
//! let lb = usher_proxy::Lb::new(config.clone(), keys)?;
//! let listener = tokio::net::TcpListener::bind(config.listen).await?;
//! usher_proxy::serve(listener, lb, async { let _ = tokio::signal::ctrl_c().await; }).await;
//! # Ok(()) }
//! ```

mod access;
mod admin;
mod affinity;
mod body;
mod config;
mod h1;
mod headers;
mod health;
mod keys;
mod live;
mod metrics;
mod pool;
mod proxy;
mod server;
mod stats;
mod tls;
mod tunnel;
mod upstream;
mod workers;

use std::sync::{Arc, OnceLock};

use arc_swap::ArcSwap;
use usher_balancer::{KeyRing, SelectorConfig};

use live::Live;

pub use admin::{AdminError, admin_router, check_admin_bind, serve_admin};
pub use config::{
    AdminConfig, AdminSection, AffinityMode, AppCookieConfig, AppCookieSection, BackendAddr,
    BackendConfig, BackendSection, ConfigError, CookieConfig, CookieSection, FailurePolicy,
    FileConfig, HealthConfig, HealthSection, InvalidAffinity, InvalidBackendAddr,
    InvalidFailurePolicy, InvalidSameSite, LbConfig, Limits, LimitsSection, SameSite, TlsConfig,
    TlsSection,
};
pub use keys::{KeyError, generate_key, load_keys};
pub use pool::{BackendSlot, BackendState, Pool, PoolError, Snapshot};
pub use server::{serve, serve_on};
pub use stats::{Outcome, Stats, StatusCounters};
pub use tls::TlsError;
pub use workers::Workers;

/// Why a load balancer could not be built.
#[derive(Debug, thiserror::Error)]
pub enum LbError {
    /// A backend address cannot be used as an upstream authority.
    #[error("backend address cannot be used: {0}")]
    BackendAddr(#[from] http::uri::InvalidUri),
    /// The backend set could not be applied.
    #[error(transparent)]
    Pool(#[from] PoolError),
    /// The TLS certificate or key could not be loaded (the message names the file).
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// A reload's key file could not be used.
    #[error(transparent)]
    Keys(#[from] KeyError),
    /// A reload asked for something that needs a restart.
    #[error("{0}")]
    NeedsRestart(String),
}

/// One load balancer: backend pool, counters, and the reloadable rest ([`Live`]).
pub struct Lb {
    live: ArcSwap<Live>,
    pool: Pool,
    /// Idle keep-alive connections to the backends.
    upstreams: upstream::Upstreams,
    stats: Stats,
    /// Re-reads the configuration for `POST /reload` (set by whoever knows its source).
    reloader: OnceLock<Reloader>,
}

/// Produces a fresh configuration for a reload (re-reading files and flags).
pub type Reloader = Box<dyn Fn() -> Result<LbConfig, String> + Send + Sync>;

impl std::fmt::Debug for Lb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lb")
            .field("live", &self.live)
            .field("pool", &self.pool)
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl Lb {
    /// Builds a load balancer that seals affinity cookies with `keys`. With `config.tls` set it
    /// reads the certificate and key now (a bad file is an [`LbError::Tls`]) and [`serve`]
    /// terminates TLS: forwarded proto `https`, affinity cookies `Secure`.
    pub fn new(config: LbConfig, keys: KeyRing) -> Result<Arc<Self>, LbError> {
        let pool = Pool::new(
            &config.backends,
            SelectorConfig {
                policy: config.policy,
                balance_factor: config.balance_factor,
            },
        )?;
        let threads = config.threads.unwrap_or(1);
        let live = Live::new(config, keys, None)?;
        Ok(Arc::new(Self {
            live: ArcSwap::from_pointee(live),
            pool,
            upstreams: upstream::Upstreams::new(threads),
            stats: Stats::default(),
            reloader: OnceLock::new(),
        }))
    }

    /// The reloadable state in force (configuration, affinity, upstream client, TLS). A request
    /// holds on to the one it started with, so a reload never changes a request midway.
    pub(crate) fn live(&self) -> Arc<Live> {
        self.live.load_full()
    }

    /// The configuration in force.
    pub fn config(&self) -> Arc<LbConfig> {
        Arc::clone(&self.live.load().config)
    }

    /// Whether the listener terminates TLS.
    pub fn is_tls(&self) -> bool {
        self.live.load().tls.is_some()
    }

    /// Installs the function `POST /reload` uses to re-read the configuration (once).
    pub fn set_reloader(&self, reloader: Reloader) {
        let _ = self.reloader.set(reloader);
    }

    /// Re-reads the configuration with the installed reloader and applies it.
    pub fn reload_from_source(&self) -> Result<Vec<String>, String> {
        let reloader = self
            .reloader
            .get()
            .ok_or("no configuration source to reload from")?;
        let config = reloader()?;
        self.reload(config).map_err(|e| e.to_string())
    }

    /// Applies a new configuration without dropping anything in flight: backends (added ones
    /// ramp up, missing ones are removed and their clients re-pin), policy, limits for new
    /// requests and connections, affinity settings, cookie keys (keys no longer in the file stay
    /// accepted for opening until the next restart) and TLS files. On error nothing changes.
    /// Returns warnings for settings that need a restart (listen and admin addresses, TLS on/off).
    pub fn reload(&self, config: LbConfig) -> Result<Vec<String>, LbError> {
        let old = self.live();
        let (live, warnings) = old.successor(config)?;
        let selector = SelectorConfig {
            policy: live.config.policy,
            balance_factor: live.config.balance_factor,
        };
        self.pool.reconfigure(&live.config.backends, selector)?;
        self.live.store(Arc::new(live));
        for w in &warnings {
            tracing::warn!("reload: {w}");
        }
        tracing::info!(
            backends = self.pool.snapshot().slots.len(),
            "configuration reloaded"
        );
        Ok(warnings)
    }

    /// Request counters.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// The backend pool.
    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// Logs the per-backend and per-outcome summary (done at shutdown).
    pub fn log_summary(&self) {
        for line in self.summary_lines() {
            tracing::info!("{line}");
        }
    }

    /// The summary as text lines.
    pub fn summary_lines(&self) -> Vec<String> {
        let mut lines = vec![format!(
            "summary: affinity outcomes {} | retries {} | local responses {}",
            self.stats.outcomes_line(),
            self.stats.retries(),
            self.stats.local
        )];
        for slot in &self.pool.snapshot().slots {
            lines.push(format!(
                "summary: backend {} requests {} responses {}",
                slot.id,
                slot.requests(),
                slot.statuses
            ));
        }
        lines
    }
}
