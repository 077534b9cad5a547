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
mod conn;
mod headers;
mod health;
mod keys;
mod metrics;
mod pool;
mod proxy;
mod scan;
mod server;
mod stats;
mod tls;
mod tunnel;

use std::sync::Arc;

use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use ipnet::IpNet;
use usher_balancer::{KeyRing, SelectorConfig};

pub use admin::{AdminError, check_admin_bind, serve_admin};
pub use config::{
    AdminConfig, AdminSection, AffinityMode, AppCookieConfig, AppCookieSection, BackendAddr,
    BackendConfig, BackendSection, ConfigError, CookieConfig, CookieSection, FailurePolicy,
    FileConfig, HealthConfig, HealthSection, InvalidAffinity, InvalidBackendAddr,
    InvalidFailurePolicy, InvalidSameSite, LbConfig, Limits, LimitsSection, SameSite, TlsConfig,
    TlsSection,
};
pub use keys::{KeyError, generate_key, load_keys};
pub use pool::{BackendSlot, BackendState, Pool, PoolError, Snapshot};
pub use server::serve;
pub use stats::{Outcome, Stats, StatusCounters};
pub use tls::TlsError;

/// Why a load balancer could not be built.
#[derive(Debug, thiserror::Error)]
pub enum LbError {
    /// A backend address cannot be used as an upstream authority.
    #[error("backend address cannot be used: {0}")]
    BackendAddr(#[from] http::uri::InvalidUri),
    /// The TLS certificate or key could not be loaded (the message names the file).
    #[error(transparent)]
    Tls(#[from] TlsError),
}

/// One load balancer: configuration, backend pool, affinity, upstream client and counters.
#[derive(Debug)]
pub struct Lb {
    config: LbConfig,
    pool: Pool,
    affinity: affinity::Affinity,
    stats: Stats,
    client: Client<HttpConnector, body::AttemptBody>,
    trusted_proxies: Vec<IpNet>,
    scheme: &'static str,
    tls: Option<tls::Terminator>,
}

impl Lb {
    /// Builds a load balancer that seals affinity cookies with `keys`. With `config.tls` set it
    /// reads the certificate and key now (a bad file is an [`LbError::Tls`]) and [`serve`]
    /// terminates TLS: forwarded proto `https`, affinity cookies `Secure`.
    pub fn new(config: LbConfig, keys: KeyRing) -> Result<Arc<Self>, LbError> {
        let tls = config.tls.as_ref().map(tls::Terminator::new).transpose()?;
        let pool = Pool::new(
            &config.backends,
            SelectorConfig {
                policy: config.policy,
                balance_factor: config.balance_factor,
            },
        )?;
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(config.limits.connect_timeout));
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new())
            .timer(TokioTimer::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(std::time::Duration::from_secs(90))
            .pool_max_idle_per_host(1024)
            .build(connector);
        let affinity = affinity::Affinity::new(&config, keys, tls.is_some());
        Ok(Arc::new(Self {
            trusted_proxies: config.trusted_proxies.clone(),
            pool,
            affinity,
            stats: Stats::default(),
            client,
            scheme: if tls.is_some() { "https" } else { "http" },
            tls,
            config,
        }))
    }

    /// The configuration in force.
    pub fn config(&self) -> &LbConfig {
        &self.config
    }

    /// Whether the listener terminates TLS.
    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
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
