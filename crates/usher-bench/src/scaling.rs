//! `usher-bench scaling`: how usher lb's cost grows with concurrency, idle connections, the
//! number of backends and the learned app-cookie table, and what the sealed cookie costs.
//! Each part writes a section of `docs/bench/scaling-DATE.md`; a part that fails says so there
//! and the others still run.

use std::fmt::Write as _;
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;

use crate::bench::{Bench, Measured};
use crate::compare_report::{ms, summarize};
use crate::configs::Mode;
use crate::systems::{self, Running, System, UsherOpts};
use crate::{machine, scaling_parts};

/// `usher-bench scaling`.
#[derive(Debug, Clone, clap::Args)]
pub struct ScalingArgs {
    /// The usher binary to measure.
    #[arg(long, default_value = "target/release/usher")]
    pub usher: PathBuf,
    /// Report directory.
    #[arg(long, default_value = "docs/bench")]
    pub out: PathBuf,
    /// Repetitions per point.
    #[arg(long, default_value_t = 3)]
    pub reps: usize,
    /// Seconds per run.
    #[arg(long, default_value_t = 5)]
    pub duration: u64,
    /// Trying things: 1 repetition of 2 s, app-cookie table up to 100k entries.
    #[arg(long)]
    pub quick: bool,
    /// Parts to run: conc, idle, backends, appcookie, sticky.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "conc,idle,backends,appcookie,sticky"
    )]
    pub parts: Vec<String>,
    /// Idle client connections for the idle part.
    #[arg(long, default_value_t = 10_000)]
    pub idle_conns: usize,
    /// Largest learned app-cookie table (1k, 10k, … up to this).
    #[arg(long, default_value_t = 1_000_000)]
    pub max_entries: usize,
}

/// One measured run of a scaling part (stored in `runs.jsonl`).
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    /// Part name.
    pub part: &'static str,
    /// Point on the curve (e.g. `c=256`, `backends=30`).
    pub label: String,
    /// System or policy.
    pub system: String,
    /// wrk -c.
    pub conns: usize,
    /// Repetition.
    pub rep: usize,
    /// The measurement.
    #[serde(flatten)]
    pub m: Measured,
}

/// The runner state shared by the parts.
#[derive(Debug)]
pub struct Ctx {
    /// Bench setup.
    pub bench: Bench,
    /// Repetitions.
    pub reps: usize,
    /// Run length.
    pub dur: Duration,
    /// Raw directory.
    pub raw: PathBuf,
    /// Every run so far.
    pub rows: Vec<Row>,
    runs_file: std::fs::File,
}

impl Ctx {
    /// Interleaved runs: for each rep, each `(name, running, cookies)` once, after one
    /// warm-up each. Returns the rows added.
    pub fn interleave(
        &mut self,
        part: &'static str,
        label: &str,
        conns: usize,
        targets: &[(String, &Running, Option<PathBuf>)],
    ) -> anyhow::Result<Vec<Row>> {
        let mut added = Vec::new();
        for (name, r, cookies) in targets {
            let w = self.raw.join(format!("warmup-{part}.jsonl"));
            self.bench
                .measure(r, conns, Duration::from_secs(1), cookies.as_deref(), &w)
                .map_err(|e| anyhow::anyhow!("{name} warm-up: {e:#}"))?;
        }
        for rep in 0..self.reps {
            for (name, r, cookies) in targets {
                let out = self.raw.join(format!("wrk-{part}.jsonl"));
                let m = self
                    .bench
                    .measure(r, conns, self.dur, cookies.as_deref(), &out)?;
                eprintln!(
                    "   {part} {label} {name} c{conns} rep {rep}: {:.0} req/s p99 {} µs",
                    m.wrk.rps(),
                    m.wrk.p99_us
                );
                let row = Row {
                    part,
                    label: label.to_owned(),
                    system: name.clone(),
                    conns,
                    rep,
                    m,
                };
                writeln!(self.runs_file, "{}", serde_json::to_string(&row)?)?;
                self.rows.push(row.clone());
                added.push(row);
            }
        }
        Ok(added)
    }

    /// Starts usher lb with one thread in front of `backends`.
    pub fn usher(
        &self,
        backends: &[(String, SocketAddr)],
        mode: Mode,
        opts: &UsherOpts,
        tag: &str,
    ) -> anyhow::Result<Running> {
        systems::start(&self.bench.env, System::Usher, backends, 1, mode, opts, tag)
    }
}

/// Table rows `| point | system | req/s | p50 | p99 | CPU | RSS |` for the given rows, grouped
/// by (label, system) in first-seen order.
pub fn runs_table(rows: &[Row]) -> String {
    let mut s = String::from(
        "| point | system | req/s median (min..max) | p50 | p99 | proxy CPU | RSS (peak) |\n|---|---|---|---|---|---|---|\n",
    );
    let mut keys: Vec<(String, String)> = Vec::new();
    for r in rows {
        let k = (r.label.clone(), r.system.clone());
        if !keys.contains(&k) {
            keys.push(k);
        }
    }
    for (label, system) in keys {
        let ms_: Vec<Measured> = rows
            .iter()
            .filter(|r| r.label == label && r.system == system)
            .map(|r| r.m)
            .collect();
        let Some(a) = summarize(&ms_) else { continue };
        let _ = writeln!(
            s,
            "| {label} | {system}{} | {:.0} ({:.0}..{:.0}) | {} | {} | {} | {} |",
            if a.flagged > 0 {
                format!(" ⚠ {} run(s) with errors", a.flagged)
            } else {
                String::new()
            },
            a.rps.median,
            a.rps.min,
            a.rps.max,
            ms(a.p50),
            ms(a.p99),
            a.cpu
                .map_or_else(|| "—".to_owned(), |c| format!("{c:.0} %")),
            match (a.rss, a.hwm) {
                (Some(r), Some(h)) => format!("{r:.1} MiB ({h:.1})"),
                _ => "—".to_owned(),
            },
        );
    }
    s
}

/// Runs the chosen parts and writes the report.
pub fn run(mut a: ScalingArgs) -> anyhow::Result<()> {
    if a.quick {
        a.reps = 1;
        a.duration = 2;
        a.max_entries = a.max_entries.min(100_000);
    }
    let date = machine::today();
    let raw = a.out.join("raw").join(format!("scaling-{date}"));
    let bench = Bench::new(&a.usher, &raw)?;
    let mut doc = String::new();
    let _ = writeln!(doc, "# Scaling curves, {date}\n");
    let _ = writeln!(
        doc,
        "Generated by `scripts/bench-scaling.sh` (`usher-bench scaling`). usher lb with 1 thread unless \
         said otherwise; {} repetition(s) of {} s per point, interleaved within each curve, after a \
         1 s warm-up per system. req/s median (min..max); p50/p99 medians; RSS = VmRSS of the LB at \
         the end of the run (peak VmHWM).\n",
        a.reps, a.duration
    );
    let _ = writeln!(
        doc,
        "Command: `{}`\n",
        std::env::args().collect::<Vec<_>>().join(" ")
    );
    let _ = writeln!(doc, "Pinning: {}\n", machine::pinning());
    let _ = writeln!(doc, "{}", machine::versions(&std::env::current_dir()?));
    let _ = writeln!(doc, "Raw outputs: `{}`\n", raw.display());
    let mut ctx = Ctx {
        runs_file: std::fs::File::create(raw.join("runs.jsonl"))?,
        bench,
        reps: a.reps,
        dur: Duration::from_secs(a.duration),
        raw: raw.clone(),
        rows: Vec::new(),
    };
    for part in &a.parts {
        eprintln!("== part {part}");
        let res = match part.as_str() {
            "conc" => scaling_parts::concurrency(&mut ctx),
            "idle" => scaling_parts::idle(&mut ctx, a.idle_conns),
            "backends" => scaling_parts::backends(&mut ctx),
            "appcookie" => scaling_parts::app_cookie(&mut ctx, a.max_entries),
            "sticky" => scaling_parts::sticky(&mut ctx),
            other => Err(anyhow::anyhow!("unknown part {other:?}")),
        };
        match res {
            Ok(section) => doc.push_str(&section),
            Err(e) => {
                eprintln!("part {part} failed: {e:#}");
                let _ = writeln!(doc, "## {part}: FAILED\n\n`{e:#}`\n");
            }
        }
    }
    std::fs::create_dir_all(&a.out)?;
    let path = a.out.join(format!("scaling-{date}.md"));
    std::fs::write(&path, &doc)?;
    println!("{doc}");
    println!("report: {}\nraw: {}", path.display(), raw.display());
    Ok(())
}
