//! `usher-bench compare`: direct, usher lb, HAProxy and NGINX, interleaved, in every cell
//! (mode × concurrency × proxy threads), then the Markdown report and its raw outputs.

use std::io::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use serde::Serialize;

use crate::bench::{Bench, Measured};
use crate::compare_report::{self, Cell, Meta};
use crate::configs::Mode;
use crate::machine;
use crate::systems::{self, System, UsherOpts};

/// `usher-bench compare`.
#[derive(Debug, Clone, clap::Args)]
pub struct CompareArgs {
    /// The usher binary to measure.
    #[arg(long, default_value = "target/release/usher")]
    pub usher: PathBuf,
    /// Report directory (`compare-DATE.md` and `raw/compare-DATE/` go there).
    #[arg(long, default_value = "docs/bench")]
    pub out: PathBuf,
    /// Repetitions per system per cell (at least 3 for the docs).
    #[arg(long, default_value_t = 3)]
    pub reps: usize,
    /// Seconds per run.
    #[arg(long, default_value_t = 5)]
    pub duration: u64,
    /// Seconds of the discarded warm-up run per system per cell.
    #[arg(long, default_value_t = 1)]
    pub warmup: u64,
    /// Trying things: 1 repetition of 2 s.
    #[arg(long)]
    pub quick: bool,
    /// Concurrencies (wrk -c).
    #[arg(long, value_delimiter = ',', default_value = "64,256")]
    pub conns: Vec<usize>,
    /// Proxy threads / workers.
    #[arg(long, value_delimiter = ',', default_value = "1,2")]
    pub threads: Vec<usize>,
    /// Modes: rr, sticky.
    #[arg(long, value_delimiter = ',', default_value = "rr,sticky")]
    pub modes: Vec<String>,
    /// Systems, in interleaving order.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "direct,usher,haproxy,nginx"
    )]
    pub systems: Vec<String>,
    /// Headers HAProxy and NGINX add: `same` (what usher lb adds by default: forwarding headers
    /// and a request id, so all do the same work) or `bare` (none, their defaults).
    #[arg(long, default_value = "same")]
    pub others_forwarding: String,
}

/// One run as stored in `runs.jsonl`.
#[derive(Debug, Clone, Serialize)]
pub struct Record {
    /// rr or sticky.
    pub mode: &'static str,
    /// wrk -c.
    pub conns: usize,
    /// Proxy threads.
    pub threads: usize,
    /// System name.
    pub system: &'static str,
    /// Repetition (0-based).
    pub rep: usize,
    /// The measurement.
    #[serde(flatten)]
    pub m: Measured,
}

fn parse_mode(s: &str) -> anyhow::Result<Mode> {
    match s {
        "rr" => Ok(Mode::Rr),
        "sticky" => Ok(Mode::Sticky),
        _ => anyhow::bail!("unknown mode {s:?} (rr, sticky)"),
    }
}

/// Runs the comparison and writes the report; prints the summary.
pub fn run(mut a: CompareArgs) -> anyhow::Result<()> {
    if a.quick {
        a.reps = 1;
        a.duration = 2;
    }
    let modes = a
        .modes
        .iter()
        .map(|m| parse_mode(m))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let sys = a
        .systems
        .iter()
        .map(|s| System::parse(s).with_context(|| format!("unknown system {s:?}")))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let forwarding = crate::configs::Forwarding::parse(&a.others_forwarding)?;
    let date = machine::today();
    let raw = a.out.join("raw").join(format!("compare-{date}"));
    let repo = std::env::current_dir()?;
    let meta = Meta {
        date: date.clone(),
        versions: machine::versions(&repo),
        pinning: machine::pinning(),
        command: std::env::args().collect::<Vec<_>>().join(" "),
        reps: a.reps,
        duration: a.duration,
        raw: raw.display().to_string(),
        forwarding: forwarding.describe().to_owned(),
    };
    let mut bench = Bench::new(&a.usher, &raw)?;
    bench.env.forwarding = forwarding;
    let (_backend_procs, backends) = bench.backends(3, 1, None)?;
    eprintln!("backends: {backends:?}");
    let mut records = Vec::new();
    let mut checks = Vec::new();
    let mut runs_file = std::fs::File::create(raw.join("runs.jsonl"))?;
    let (dur, warm) = (
        Duration::from_secs(a.duration),
        Duration::from_secs(a.warmup),
    );
    let mut cells = Vec::new();
    for &mode in &modes {
        for &conns in &a.conns {
            for &threads in &a.threads {
                let cell = Cell {
                    mode,
                    conns,
                    threads,
                };
                let tag = cell.tag();
                eprintln!("== cell {tag}");
                let mut running = Vec::new();
                for &s in &sys {
                    let r = systems::start(
                        &bench.env,
                        s,
                        &backends,
                        threads,
                        mode,
                        &UsherOpts::default(),
                        &tag,
                    )?;
                    let (cookies, desc) = bench.prepare(&r, mode, backends.len(), &tag)?;
                    checks.push(format!("{tag} {}: {desc}", s.as_str()));
                    let out = raw.join(format!("wrk-{tag}-{}.jsonl", s.as_str()));
                    let w = raw.join(format!("warmup-{tag}-{}.jsonl", s.as_str()));
                    running.push((r, cookies, out, w));
                }
                for (r, cookies, _, w) in &running {
                    bench.measure(r, conns, warm, cookies.as_deref(), w)?;
                }
                for rep in 0..a.reps {
                    for (r, cookies, out, _) in &running {
                        let m = bench.measure(r, conns, dur, cookies.as_deref(), out)?;
                        eprintln!(
                            "   {tag} {:8} rep {rep}: {:>9.0} req/s p99 {} µs{}",
                            r.system.as_str(),
                            m.wrk.rps(),
                            m.wrk.p99_us,
                            if m.wrk.flagged() { " (errors)" } else { "" }
                        );
                        let rec = Record {
                            mode: mode.as_str(),
                            conns,
                            threads,
                            system: r.system.as_str(),
                            rep,
                            m,
                        };
                        writeln!(runs_file, "{}", serde_json::to_string(&rec)?)?;
                        records.push(rec);
                    }
                }
                drop(running);
                cells.push(cell);
            }
        }
    }
    let (report, summary) = compare_report::render(&meta, &cells, &records, &checks);
    std::fs::create_dir_all(&a.out)?;
    let path = a.out.join(format!("compare-{date}.md"));
    std::fs::write(&path, report)?;
    println!("{summary}");
    println!("report: {}\nraw: {}", path.display(), raw.display());
    Ok(())
}
