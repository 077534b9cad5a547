//! Usher's lab: the same users, workload, seed and fault timeline against every architecture —
//! sticky sessions in memory, a shared session store, signed tokens — and a side-by-side report of
//! what each one cost, measured from the users' own point of view.
//!
//! For each architecture the lab starts `usher shop` processes (`shop-0`…) and an `usher lb` in
//! front of them, all on loopback port 0 (their ready lines say where they listen), signs the
//! users up, and runs them for the configured duration while the timeline kills shop-1 (`kill -9`)
//! at 30 %, adds two shops through the admin API at 50 %, and drains and removes the highest
//! ordinal at 75 %. Everything it starts is stopped when the run ends, and killed if the lab dies.
//!
//! Modules: [`arch`] (what is compared), `procs`/`fleet` (the processes), `client`/`user` (the
//! virtual users), `stats` (what they saw), [`report`] (figures, verdicts, table, JSON), and
//! [`live`]: one architecture running live with a dashboard (`usher up`).

pub mod arch;
mod client;
mod fleet;
pub mod live;
mod procs;
pub mod report;
mod run;
pub mod scenario;
mod stats;
mod store;
mod user;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;

pub use arch::Architecture;
pub use procs::EXIT_WITH_PARENT_ENV;
pub use report::{ArchResult, LabReport, render_html, render_table};
pub use scenario::Scenario;
pub use store::{PrivateRedis, StoreChoice};

/// Everything a lab run is configured by.
#[derive(Debug, Clone)]
pub struct LabOptions {
    /// The `usher` binary to start shops and the load balancer from.
    pub bin: PathBuf,
    /// Architectures to run, in order.
    pub architectures: Vec<Architecture>,
    /// Shops at the start.
    pub shops: usize,
    /// Virtual users.
    pub users: usize,
    /// How long the users run per architecture.
    pub duration: Duration,
    /// Workload seed: same seed, same users and choices.
    pub seed: u64,
    /// The shared store.
    pub store: StoreChoice,
    /// Pause between one user's requests, milliseconds (min, max).
    pub think_ms: (u64, u64),
    /// Share of checkouts sent twice.
    pub retry_share: f64,
    /// Share of users behind one NAT address.
    pub nat_share: f64,
    /// Share of users adding from two tabs at once.
    pub two_tab_share: f64,
    /// Catalogue skus users add.
    pub skus: Vec<String>,
    /// Extra `usher shop` flags.
    pub shop_extra: Vec<String>,
    /// Where to keep logs and databases; a temporary directory (deleted) if `None`.
    pub dir: Option<PathBuf>,
    /// Whether this is the `--quick` variant (reported).
    pub quick: bool,
    /// When the faults happen.
    pub scenario: Scenario,
}

impl LabOptions {
    /// The default run: 3 shops, 2000 users, 30 s per architecture, all architectures.
    pub fn standard(bin: PathBuf) -> Self {
        Self {
            bin,
            architectures: Architecture::ALL.to_vec(),
            shops: 3,
            users: 2000,
            duration: Duration::from_secs(30),
            seed: 42,
            store: StoreChoice::Sqlite,
            think_ms: (100, 500),
            retry_share: 0.2,
            nat_share: 0.3,
            two_tab_share: 0.2,
            skus: default_skus(),
            shop_extra: vec!["--password-cost".to_owned(), "low".to_owned()],
            dir: None,
            quick: false,
            scenario: Scenario::default(),
        }
    }

    /// `--quick`: fewer users, 7 s per architecture.
    pub fn quick(bin: PathBuf) -> Self {
        Self {
            users: 500,
            duration: Duration::from_secs(7),
            quick: true,
            ..Self::standard(bin)
        }
    }
}

/// The skus of the shop's catalogue the users buy.
pub fn default_skus() -> Vec<String> {
    [
        "tea-green",
        "tea-black",
        "mug",
        "kettle",
        "honey",
        "biscuits",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect()
}

/// Runs every configured architecture in turn and reports.
pub async fn run_lab(opts: &LabOptions) -> anyhow::Result<LabReport> {
    if opts.scenario.store_restart.is_some() && opts.store != StoreChoice::PrivateRedis {
        anyhow::bail!(
            "a store restart (--store-outage, or store_restart in the scenario) needs --store redis: \
             a private redis-server the lab can restart"
        );
    }
    let tmp;
    let root = match &opts.dir {
        Some(d) => {
            std::fs::create_dir_all(d).with_context(|| format!("cannot create {}", d.display()))?;
            d.clone()
        }
        None => {
            tmp = tempfile::Builder::new().prefix("usher-lab-").tempdir()?;
            tmp.path().to_path_buf()
        }
    };
    let bars = indicatif::MultiProgress::new();
    let mut results = Vec::new();
    for &arch in &opts.architectures {
        let dir = root.join(arch.as_str());
        std::fs::create_dir_all(&dir)?;
        let mut redis = None;
        let shared_store = match &opts.store {
            StoreChoice::Sqlite => format!("sqlite:{}", dir.join("sessions.db").display()),
            StoreChoice::Url(u) => u.clone(),
            StoreChoice::PrivateRedis => {
                let r = store::PrivateRedis::start(&dir).await?;
                let url = r.url.clone();
                redis = Some(r);
                url
            }
        };
        let spec = fleet::FleetSpec {
            bin: opts.bin.clone(),
            dir: dir.clone(),
            arch,
            shared_store,
            db: format!("sqlite:{}", dir.join("shop.db").display()),
            shop_extra: opts.shop_extra.clone(),
        };
        let bar = bars.add(indicatif::ProgressBar::new_spinner());
        bar.enable_steady_tick(Duration::from_millis(200));
        let result = run::run_arch(opts, arch, spec, &bar, redis.as_mut()).await;
        bar.finish_with_message(match &result.error {
            None => format!(
                "{arch}: {} requests, {} sessions lost",
                result.requests, result.sessions_lost
            ),
            Some(e) => format!("{arch}: not run: {e}"),
        });
        drop(redis);
        results.push(result);
    }
    Ok(LabReport {
        schema: report::SCHEMA,
        seed: opts.seed,
        quick: opts.quick,
        store: opts.store.kind().to_owned(),
        shops: opts.shops,
        verdicts: report::verdicts(&results),
        architectures: results,
    })
}
