//! `usher up`: one architecture running live, for a person to poke at.
//!
//! [`Live`] supervises the shops (child processes, as in the lab) and the private store, and
//! holds the load balancer, which runs in the `usher up` process itself: the control endpoints
//! then act on the very pool that routes traffic (adding a shop is a pool upsert, draining is a
//! pool drain) instead of going through a second process's admin API, and the dashboard reads
//! the balancer's live counters directly. [`api`] serves the dashboard and its JSON.
//!
//! What the supervisor does *not* do is tell the balancer about a kill: like a crashed server,
//! a killed shop is noticed by the balancer's health checks, which is exactly what a person
//! watching the dashboard should see happen.

pub mod api;
mod lbconf;
mod rates;
mod view;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use usher_proxy::{BackendConfig, Lb};

use crate::arch::Architecture;
use crate::fleet::{FleetSpec, start_shop};
use crate::procs::Proc;
use crate::store::{PrivateRedis, StoreChoice};

pub use lbconf::lb_config;
pub use view::{ShopView, StateView, StoreView};

/// Most shops running (or starting) at once: each is a process on a 2-core machine.
pub const MAX_SHOPS: usize = 12;
/// How long a drain may keep serving pinned clients when the request does not say.
pub const DEFAULT_DRAIN: Duration = Duration::from_secs(15);
/// How long a stopping shop gets between SIGTERM and SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(3);

/// What a live system is started with.
#[derive(Debug, Clone)]
pub struct LiveOptions {
    /// The `usher` binary the shops are started from.
    pub bin: PathBuf,
    /// How the balancer routes and where sessions live.
    pub arch: Architecture,
    /// Shops at the start.
    pub shops: usize,
    /// The shared session store.
    pub store: StoreChoice,
    /// Where logs and SQLite files go; a temporary directory (deleted at the end) if `None`.
    pub dir: Option<PathBuf>,
    /// The balancer's (already bound) listen address: for its configuration and the shop link.
    pub listen: SocketAddr,
    /// Extra `usher shop` flags.
    pub shop_extra: Vec<String>,
}

/// A control request that could not be carried out.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// Not a `shop-N` id.
    #[error("bad shop id {0:?}: expected shop-N")]
    BadId(String),
    /// No such shop.
    #[error("no shop {0}")]
    UnknownShop(String),
    /// The shop exists but is not running (killed, exited).
    #[error("{id} is {state}: only a running shop can be {verb}")]
    NotRunning {
        /// The shop.
        id: String,
        /// Its state.
        state: &'static str,
        /// What was asked (`killed`, `drained`).
        verb: &'static str,
    },
    /// Already at [`MAX_SHOPS`].
    #[error("already {0} shops running or starting: kill or drain one first")]
    TooMany(usize),
    /// The store has no server this process controls.
    #[error("the store cannot be restarted: {0}")]
    NotRestartable(String),
    /// A new shop did not start.
    #[error("shop-{n} did not start")]
    Start {
        /// Its ordinal.
        n: usize,
        /// Why.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The store server did not come back.
    #[error("the store did not restart")]
    StoreRestart(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The balancer's pool refused the change.
    #[error("the balancer refused the change to {id}")]
    Pool {
        /// The shop.
        id: String,
        /// Why.
        #[source]
        source: usher_proxy::PoolError,
    },
}

/// A shop process and what became of it.
#[derive(Debug)]
struct Shop {
    proc: Proc,
    addr: SocketAddr,
    fate: Fate,
}

/// Whether a shop's process runs; the balancer's view (active/draining/down) is separate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fate {
    Running,
    /// `kill -9` from the dashboard.
    Killed,
    /// Exited by itself.
    Exited,
}

impl Fate {
    fn as_str(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Killed => "killed",
            Self::Exited => "exited",
        }
    }
}

#[derive(Debug, Default)]
struct Shops {
    map: BTreeMap<usize, Shop>,
    /// The next ordinal: never reused, so a new shop is never mistaken for a dead one.
    next: usize,
    /// Shops being started right now (counted against [`MAX_SHOPS`]).
    starting: usize,
}

impl Shops {
    fn running(&self) -> usize {
        self.map
            .values()
            .filter(|s| s.fate == Fate::Running)
            .count()
    }
}

/// The session store as `usher up` sees it.
#[derive(Debug)]
enum Store {
    /// SQLite files the shops open themselves.
    Embedded,
    /// A server the user runs.
    External,
    /// A `redis-server` this process started.
    Private(Box<PrivateRedis>),
}

#[derive(Debug)]
struct StoreState {
    store: Store,
    restarts: u32,
}

/// A running live system: shops, store and the balancer in front.
#[derive(Debug)]
pub struct Live {
    lb: Arc<Lb>,
    arch: Architecture,
    listen: SocketAddr,
    store_kind: &'static str,
    spec: FleetSpec,
    shops: tokio::sync::Mutex<Shops>,
    store: tokio::sync::Mutex<StoreState>,
    rates: Mutex<rates::Rates>,
    /// Keeps the temporary directory (when `dir` was not given) until the system is dropped.
    _tmp: Option<tempfile::TempDir>,
}

impl Live {
    /// Starts the store and `opts.shops` shops, and builds the balancer in front of them (serve
    /// it with `usher_proxy::serve` on the listener bound at `opts.listen`). On error, whatever
    /// was started is stopped (dropped handles kill their processes).
    pub async fn start(opts: LiveOptions) -> anyhow::Result<Arc<Self>> {
        let (dir, tmp) = match &opts.dir {
            Some(d) => {
                std::fs::create_dir_all(d)
                    .with_context(|| format!("cannot create {}", d.display()))?;
                (d.clone(), None)
            }
            None => {
                let t = tempfile::Builder::new().prefix("usher-up-").tempdir()?;
                (t.path().to_path_buf(), Some(t))
            }
        };
        let (store, shared_store) = match &opts.store {
            StoreChoice::Sqlite => (
                Store::Embedded,
                format!("sqlite:{}", dir.join("sessions.db").display()),
            ),
            StoreChoice::Url(u) => (Store::External, u.clone()),
            StoreChoice::PrivateRedis => {
                let r = PrivateRedis::start(&dir).await?;
                let url = r.url.clone();
                (Store::Private(Box::new(r)), url)
            }
        };
        let spec = FleetSpec {
            bin: opts.bin.clone(),
            dir: dir.clone(),
            arch: opts.arch,
            shared_store,
            db: format!("sqlite:{}", dir.join("shop.db").display()),
            // `Architecture::shop_args` adds the rest (for `jwt`, the shared key file in `dir`).
            shop_extra: opts.shop_extra.clone(),
        };
        let mut shops = Shops::default();
        let mut backends = Vec::new();
        for n in 0..opts.shops {
            let (proc, addr) = start_shop(&spec, n).await?;
            backends.push((shop_id(n), addr));
            let fate = Fate::Running;
            shops.map.insert(n, Shop { proc, addr, fate });
        }
        shops.next = opts.shops;
        let config = lb_config(opts.arch, opts.listen, &backends)?;
        let cookie_mode = config.affinity == usher_proxy::AffinityMode::Cookie;
        let keys = usher_proxy::load_keys(None, cookie_mode)?;
        let lb = Lb::new(config, keys)?;
        Ok(Arc::new(Self {
            lb,
            arch: opts.arch,
            listen: opts.listen,
            store_kind: opts.store.kind(),
            spec,
            shops: tokio::sync::Mutex::new(shops),
            store: tokio::sync::Mutex::new(StoreState { store, restarts: 0 }),
            rates: Mutex::new(rates::Rates::default()),
            _tmp: tmp,
        }))
    }

    /// Where logs and databases are.
    pub fn dir(&self) -> &std::path::Path {
        &self.spec.dir
    }

    /// The balancer.
    pub fn lb(&self) -> &Arc<Lb> {
        &self.lb
    }

    /// Samples request rates, notices shops that exited by themselves, and stops (then forgets)
    /// shops that left the balancer's pool — a drain that ended, or a removal through the admin
    /// API — so nothing keeps running that no traffic can reach. Called once a second.
    pub async fn tick(&self) {
        let snapshot = self.lb.pool().snapshot();
        let counts: Vec<(String, u64)> = snapshot
            .slots
            .iter()
            .map(|s| (s.id.as_str().to_owned(), s.requests()))
            .collect();
        self.lock_rates().sample(Instant::now(), &counts);
        let mut gone = Vec::new();
        {
            let mut shops = self.shops.lock().await;
            // Membership read under the shops lock: `add` upserts and records a shop under the
            // same lock, so a shop added while this tick waited is not taken for one that left
            // (that race stopped freshly added shops on a busy machine).
            let in_pool: Vec<usize> = self
                .lb
                .pool()
                .snapshot()
                .slots
                .iter()
                .filter_map(|s| ordinal(s.id.as_str()))
                .collect();
            let left: Vec<usize> = shops
                .map
                .keys()
                .copied()
                .filter(|n| !in_pool.contains(n))
                .collect();
            for n in left {
                if let Some(shop) = shops.map.remove(&n) {
                    tracing::info!(shop = %shop_id(n), "left the balancer: stopping it");
                    gone.push(shop);
                }
            }
            for shop in shops.map.values_mut() {
                if shop.fate == Fate::Running && shop.proc.exited() {
                    shop.fate = Fate::Exited;
                }
            }
        }
        for mut shop in gone {
            tokio::spawn(async move { shop.proc.stop(STOP_GRACE).await });
        }
    }

    /// Ticks once a second, forever (spawn it; abort it to stop).
    pub async fn run_ticker(self: Arc<Self>) {
        let mut every = tokio::time::interval(Duration::from_secs(1));
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            every.tick().await;
            self.tick().await;
        }
    }

    /// `kill -9` shop `id`. The balancer is not told: its health checks must notice.
    pub async fn kill(&self, id: &str) -> Result<(), ControlError> {
        let n = parse_shop_id(id)?;
        let mut shops = self.shops.lock().await;
        let shop = running_shop(&mut shops, n, "killed")?;
        shop.proc.kill().await;
        shop.fate = Fate::Killed;
        tracing::info!(shop = %id, "killed (kill -9)");
        Ok(())
    }

    /// Starts a shop under the next ordinal and adds it to the pool (it ramps up under slow
    /// start). Returns its id and address.
    pub async fn add(&self) -> Result<(String, SocketAddr), ControlError> {
        let n = {
            let mut shops = self.shops.lock().await;
            let busy = shops.running() + shops.starting;
            if busy >= MAX_SHOPS {
                return Err(ControlError::TooMany(busy));
            }
            shops.starting += 1;
            shops.next += 1;
            shops.next - 1
        };
        let started = start_shop(&self.spec, n).await;
        let mut shops = self.shops.lock().await;
        shops.starting -= 1;
        let (proc, addr) = started.map_err(|e| ControlError::Start {
            n,
            source: e.into(),
        })?;
        let id = shop_id(n);
        let backend = BackendConfig {
            id: id.parse().map_err(|_| ControlError::BadId(id.clone()))?,
            addr,
            weight: 1,
        };
        // On error `proc` drops here, which kills the process.
        self.lb
            .pool()
            .upsert(&backend)
            .map_err(|source| ControlError::Pool {
                id: id.clone(),
                source,
            })?;
        let fate = Fate::Running;
        shops.map.insert(n, Shop { proc, addr, fate });
        tracing::info!(shop = %id, %addr, "added");
        Ok((id, addr))
    }

    /// Drains shop `id`: no new clients, pinned ones until `deadline`; once it is out of the pool
    /// the next tick stops its process.
    pub async fn drain(&self, id: &str, deadline: Duration) -> Result<(), ControlError> {
        let n = parse_shop_id(id)?;
        let mut shops = self.shops.lock().await;
        running_shop(&mut shops, n, "drained")?;
        let backend_id = id.parse().map_err(|_| ControlError::BadId(id.to_owned()))?;
        self.lb
            .pool()
            .drain(&backend_id, deadline)
            .map_err(|source| ControlError::Pool {
                id: id.to_owned(),
                source,
            })?;
        tracing::info!(shop = %id, ?deadline, "draining");
        Ok(())
    }

    /// Stops the private store server and starts it again on the same port (its sessions are
    /// lost: nothing is persisted). Returns how long the store was away.
    pub async fn restart_store(&self) -> Result<Duration, ControlError> {
        let mut state = self.store.lock().await;
        let Store::Private(redis) = &mut state.store else {
            return Err(ControlError::NotRestartable(
                restart_refusal(&state.store).to_owned(),
            ));
        };
        let t0 = Instant::now();
        redis
            .restart()
            .await
            .map_err(|e| ControlError::StoreRestart(e.into()))?;
        state.restarts += 1;
        tracing::info!(took = ?t0.elapsed(), "store restarted");
        Ok(t0.elapsed())
    }

    /// Stops every shop (SIGTERM, then SIGKILL after a grace period) and the store.
    pub async fn stop(&self) {
        let shops = std::mem::take(&mut self.shops.lock().await.map);
        let mut stopping = tokio::task::JoinSet::new();
        for (_, mut shop) in shops {
            stopping.spawn(async move { shop.proc.stop(STOP_GRACE).await });
        }
        while stopping.join_next().await.is_some() {}
        if let Store::Private(redis) = &mut self.store.lock().await.store {
            redis.stop().await;
        }
    }

    fn lock_rates(&self) -> std::sync::MutexGuard<'_, rates::Rates> {
        self.rates.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// `shop-N`.
pub fn shop_id(n: usize) -> String {
    format!("shop-{n}")
}

/// The ordinal of `shop-N`, if `id` is one.
fn ordinal(id: &str) -> Option<usize> {
    let digits = id.strip_prefix("shop-")?;
    // `shop-01` would name a shop that `shop_id` never makes.
    if digits.len() > 1 && digits.starts_with('0') {
        return None;
    }
    digits.parse().ok()
}

fn parse_shop_id(id: &str) -> Result<usize, ControlError> {
    ordinal(id).ok_or_else(|| ControlError::BadId(id.to_owned()))
}

fn running_shop<'a>(
    shops: &'a mut Shops,
    n: usize,
    verb: &'static str,
) -> Result<&'a mut Shop, ControlError> {
    let shop = shops
        .map
        .get_mut(&n)
        .ok_or_else(|| ControlError::UnknownShop(shop_id(n)))?;
    if shop.fate != Fate::Running {
        return Err(ControlError::NotRunning {
            id: shop_id(n),
            state: shop.fate.as_str(),
            verb,
        });
    }
    Ok(shop)
}

/// Why `store` cannot be restarted from here (empty for a private server, which can).
fn restart_refusal(store: &Store) -> &'static str {
    match store {
        Store::Embedded => {
            "the sessions are in an embedded SQLite file each shop opens itself: there is no \
             store server to restart (start with --store redis to try a store outage)"
        }
        Store::External => "the store is a server you run: usher up does not control it",
        Store::Private(_) => "",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shop_ids() {
        assert_eq!(ordinal("shop-0"), Some(0));
        assert_eq!(ordinal("shop-12"), Some(12));
        for bad in [
            "shop-", "shop-x", "shop--1", "shop-01", "Shop-1", "1", "", "shop-1 ",
        ] {
            assert_eq!(ordinal(bad), None, "{bad:?}");
        }
        assert!(matches!(
            parse_shop_id("nope"),
            Err(ControlError::BadId(s)) if s == "nope"
        ));
        assert_eq!(
            parse_shop_id("shop-99999999999999999999999").map_err(|e| e.to_string()),
            Err("bad shop id \"shop-99999999999999999999999\": expected shop-N".to_owned())
        );
    }

    #[test]
    fn only_a_private_server_can_be_restarted() {
        assert!(restart_refusal(&Store::Embedded).contains("SQLite"));
        assert!(restart_refusal(&Store::External).contains("you run"));
    }
}
