//! Turning `--sessions` into a [`SessionStore`] and the [`SessionLayer`] on top of it.
//!
//! The store's idle timeout and the layer's must agree (the store extends sessions on touch by its
//! own setting), so both come from one [`ShopConfig`]. The memory, SQLite and PostgreSQL stores
//! keep expired sessions and lapsed tombstones as rows until purged (they are invisible, but take
//! space), so the shop sweeps them once a minute; with several shops on one shared store each
//! sweeps, which is harmless. Redis expires its keys itself.

use std::sync::Arc;
use std::time::Duration;

use usher_session::{
    MemoryStore, OutagePolicy, PostgresStore, RedisStore, SameSite, SessionLayer, SessionStore,
    SqliteStore, StoreConfig, StoreError,
};

use crate::config::{SessionsSpec, ShopConfig};
use crate::error::ShopError;

/// The session cookie's name (the load balancer's affinity cookie is `usher`).
pub const COOKIE_NAME: &str = "usher_sid";
/// How often expired sessions are swept from stores that keep them.
pub const PURGE_EVERY: Duration = Duration::from_secs(60);
/// `Retry-After` when the store is down.
pub const RETRY_AFTER: Duration = Duration::from_secs(1);

/// Opens the store `config.sessions` names.
pub async fn open_store(config: &ShopConfig) -> Result<Arc<dyn SessionStore>, ShopError> {
    let store_config = StoreConfig {
        idle_timeout_secs: config.idle_timeout.as_secs().max(1),
        ..StoreConfig::default()
    };
    let failed = |source: StoreError| ShopError::Sessions {
        spec: config.sessions.to_string(),
        source,
    };
    let store: Arc<dyn SessionStore> = match &config.sessions {
        SessionsSpec::Memory => Arc::new(MemoryStore::new(store_config, config.memory_capacity)),
        SessionsSpec::Sqlite(path) => {
            let path = path.clone();
            let store = tokio::task::spawn_blocking(move || SqliteStore::open(path, store_config))
                .await
                .map_err(|e| failed(StoreError::unavailable(e)))?
                .map_err(failed)?;
            Arc::new(store)
        }
        SessionsSpec::Redis(url)
        | SessionsSpec::RedisCluster(url)
        | SessionsSpec::RedisSentinel(url) => Arc::new(
            RedisStore::connect(url, store_config)
                .await
                .map_err(failed)?,
        ),
        SessionsSpec::Postgres(url) => Arc::new(
            PostgresStore::connect(url, store_config)
                .await
                .map_err(failed)?,
        ),
    };
    Ok(store)
}

/// Whether the shop should sweep expired sessions itself.
pub fn needs_purge(spec: &SessionsSpec) -> bool {
    matches!(
        spec,
        SessionsSpec::Memory | SessionsSpec::Sqlite(_) | SessionsSpec::Postgres(_)
    )
}

/// The session layer: cookie `usher_sid` (HttpOnly, SameSite=Lax, Secure if configured), the
/// configured timeouts, and 503 + `Retry-After` while the store is down.
pub fn layer(store: Arc<dyn SessionStore>, config: &ShopConfig) -> SessionLayer {
    SessionLayer::new(store)
        .with_cookie_name(COOKIE_NAME)
        .with_secure(config.secure_cookie)
        .with_same_site(SameSite::Lax)
        .with_idle_timeout(config.idle_timeout)
        .with_absolute_timeout(config.absolute_timeout)
        .with_outage_policy(OutagePolicy::unavailable(RETRY_AFTER))
}

/// Sweeps expired sessions every [`PURGE_EVERY`] until `stop` resolves.
pub async fn purge_loop(store: Arc<dyn SessionStore>, stop: tokio::sync::watch::Receiver<bool>) {
    let mut stop = stop;
    let mut tick = tokio::time::interval(PURGE_EVERY);
    tick.tick().await; // the first tick is immediate
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => return,
        }
        let now = now_secs();
        match store.purge_expired(now).await {
            Ok(n) if n > 0 => tracing::debug!(removed = n, "purged expired sessions"),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %crate::error::chain(&e), "session purge failed"),
        }
    }
}

fn now_secs() -> u64 {
    u64::try_from(crate::state::unix_now()).unwrap_or(0)
}
