//! The reloadable part of a load balancer: configuration, affinity (keys, cookie settings, the
//! learned app-cookie table), the upstream client and the TLS terminator. Swapped whole on reload;
//! requests keep the `Live` they started with.

use std::sync::Arc;

use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use usher_balancer::{AffinityKey, KeyRing};

use crate::affinity::Affinity;
use crate::body::AttemptBody;
use crate::config::LbConfig;
use crate::{LbError, tls};

/// The upstream HTTP client.
pub(crate) type Upstream = Client<HttpConnector, AttemptBody>;

/// One generation of reloadable state.
#[derive(Debug)]
pub(crate) struct Live {
    pub(crate) config: Arc<LbConfig>,
    pub(crate) affinity: Affinity,
    pub(crate) client: Upstream,
    pub(crate) tls: Option<tls::Terminator>,
}

impl Live {
    /// The first generation, or a successor reusing `client` (keeps pooled connections).
    pub(crate) fn new(
        config: LbConfig,
        keys: KeyRing,
        client: Option<Upstream>,
    ) -> Result<Self, LbError> {
        let tls = config.tls.as_ref().map(tls::Terminator::new).transpose()?;
        let client = client.unwrap_or_else(|| upstream(&config));
        let affinity = Affinity::new(&config, keys, tls.is_some());
        Ok(Self {
            config: Arc::new(config),
            affinity,
            client,
            tls,
        })
    }

    /// `http` or `https`: what the client used on our listener.
    pub(crate) fn scheme(&self) -> &'static str {
        if self.tls.is_some() { "https" } else { "http" }
    }

    /// The generation that follows this one under `config`, plus warnings about settings that
    /// only a restart applies. Errors leave this generation untouched.
    pub(crate) fn successor(&self, config: LbConfig) -> Result<(Self, Vec<String>), LbError> {
        let old = &self.config;
        let mut warnings = Vec::new();
        if config.listen != old.listen {
            warnings.push(format!(
                "listen {} kept: a new address needs a restart",
                old.listen
            ));
        }
        if config.admin != old.admin {
            warnings.push("admin settings kept: they need a restart".to_owned());
        }
        if config.tls.is_some() != old.tls.is_some() {
            return Err(LbError::NeedsRestart(
                "tls: switching TLS on or off needs a restart".to_owned(),
            ));
        }
        let keys = match &config.key_file {
            Some(path) => merge(crate::load_keys(Some(path), false)?, self.affinity.keys()),
            None => KeyRing::new(self.affinity.keys().keys().to_vec())
                .map_err(|e| LbError::NeedsRestart(format!("key ring: {e}")))?,
        };
        let client = (config.limits.connect_timeout == old.limits.connect_timeout)
            .then(|| self.client.clone());
        let mut next = Self::new(config, keys, client)?;
        next.affinity.adopt_learned(&self.affinity);
        Ok((next, warnings))
    }
}

/// The new ring with every old key it lacks kept as an older key: cookies sealed before a
/// rotation keep opening; the newest key of `new` seals.
fn merge(new: KeyRing, old: &KeyRing) -> KeyRing {
    let mut keys: Vec<AffinityKey> = old
        .keys()
        .iter()
        .filter(|k| !new.keys().iter().any(|n| n.id() == k.id()))
        .cloned()
        .collect();
    keys.extend(new.keys().iter().cloned());
    // Ids are unique by construction and the list is not empty, so this cannot fail; fall back to
    // the new ring alone if it ever did.
    KeyRing::new(keys).unwrap_or(new)
}

fn upstream(config: &LbConfig) -> Upstream {
    let mut connector = HttpConnector::new();
    connector.set_connect_timeout(Some(config.limits.connect_timeout));
    connector.set_nodelay(true);
    Client::builder(TokioExecutor::new())
        .timer(TokioTimer::new())
        .pool_timer(TokioTimer::new())
        .pool_idle_timeout(std::time::Duration::from_secs(90))
        .pool_max_idle_per_host(1024)
        .build(connector)
}
