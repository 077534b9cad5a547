//! `usher lab`: run every architecture side by side and report what each one cost.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::Args;
use usher_lab::{Architecture, LabOptions, StoreChoice, arch};

/// Measure every architecture side by side: sticky sessions in memory, a shared session store,
/// signed tokens. Starts the load balancer and shops on loopback, drives virtual users through a
/// fault timeline (kill -9 a shop at 30 %, scale out by two at 50 %, drain one at 75 %), and
/// prints a table with a verdict per claim.
#[derive(Debug, Args)]
pub struct LabCommand {
    /// A short run (fewer users, 7 s per architecture): about a minute in all.
    #[arg(long)]
    quick: bool,
    /// Architectures to run, comma-separated [default: all]:
    /// rr-memory, sticky-cookie-memory, sticky-ip-memory, shared, jwt, hybrid.
    #[arg(long, value_parser = parse_archs, value_name = "LIST")]
    architectures: Option<ArchList>,
    /// Shared store: sqlite (embedded, default), redis (a private redis-server the lab starts),
    /// or a redis://, redis+cluster:// or postgres:// URL.
    #[arg(long, value_parser = StoreChoice::parse, value_name = "STORE")]
    store: Option<StoreChoice>,
    /// Virtual users [default: 2000; 500 with --quick].
    #[arg(long)]
    users: Option<usize>,
    /// Shops at the start [default: 3].
    #[arg(long, value_parser = clap::value_parser!(u16).range(2..=5))]
    shops: Option<u16>,
    /// How long users run per architecture [default: 30s; 7s with --quick].
    #[arg(long, value_parser = humantime::parse_duration, value_name = "DURATION")]
    duration: Option<Duration>,
    /// Workload seed: the same seed gives the same users and choices [default: 42].
    #[arg(long)]
    seed: Option<u64>,
    /// Fault timeline file (TOML: kill, scale_out, drain, store_restart as fractions of the run,
    /// or "off"; see docs/lab.md).
    #[arg(long, value_name = "FILE")]
    scenario: Option<PathBuf>,
    /// Also restart the store at 90 % of the run (needs --store redis: a private redis-server).
    #[arg(long)]
    store_outage: bool,
    /// Write the full results as JSON (schema usher-lab/1, see docs/lab.md).
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// Write a self-contained HTML report with charts (open it in a browser).
    #[arg(long, value_name = "FILE")]
    html: Option<PathBuf>,
    /// Keep every process log and database under this directory (default: a temporary one).
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
}

/// A comma-separated architecture list (a newtype so clap takes it as one value).
#[derive(Debug, Clone)]
struct ArchList(Vec<Architecture>);

fn parse_archs(s: &str) -> Result<ArchList, String> {
    arch::parse_list(s).map(ArchList)
}

pub fn run(cmd: LabCommand) -> anyhow::Result<()> {
    let bin = std::env::current_exe().context("cannot find the usher binary")?;
    let mut opts = if cmd.quick {
        LabOptions::quick(bin)
    } else {
        LabOptions::standard(bin)
    };
    if let Some(a) = cmd.architectures {
        opts.architectures = a.0;
    }
    if let Some(s) = cmd.store {
        opts.store = s;
    }
    if let Some(u) = cmd.users {
        anyhow::ensure!(u > 0, "--users: must be at least 1");
        opts.users = u;
    }
    if let Some(s) = cmd.shops {
        opts.shops = usize::from(s);
    }
    if let Some(d) = cmd.duration {
        anyhow::ensure!(
            d >= Duration::from_secs(4),
            "--duration: must be at least 4s"
        );
        opts.duration = d;
    }
    if let Some(s) = cmd.seed {
        opts.seed = s;
    }
    if let Some(path) = &cmd.scenario {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read scenario {}", path.display()))?;
        opts.scenario = usher_lab::Scenario::from_toml(&text)
            .map_err(|e| anyhow::anyhow!("scenario {}: {e}", path.display()))?;
    }
    if cmd.store_outage && opts.scenario.store_restart.is_none() {
        opts.scenario.store_restart = Some(0.9);
    }
    opts.dir = cmd.dir;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let report = rt.block_on(async {
        tokio::select! {
            r = usher_lab::run_lab(&opts) => r,
            _ = tokio::signal::ctrl_c() => {
                // Dropping the lab's future kills every child it started.
                anyhow::bail!("interrupted; every process the lab started was stopped")
            }
        }
    })?;
    println!("{}", usher_lab::render_table(&report));
    if let Some(path) = cmd.json {
        let text = serde_json::to_string_pretty(&report)?;
        std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
        eprintln!("results written to {}", path.display());
    }
    if let Some(path) = cmd.html {
        std::fs::write(&path, usher_lab::render_html(&report))
            .with_context(|| format!("cannot write {}", path.display()))?;
        eprintln!("HTML report written to {}", path.display());
    }
    if report.architectures.iter().all(|a| a.error.is_some()) {
        anyhow::bail!("no architecture could be run");
    }
    Ok(())
}
