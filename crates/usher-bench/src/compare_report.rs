//! The comparison report: per cell a table of medians, then the summary against the targets
//! (usher ≥ 1.1 × the best other proxy, p99 ≤ theirs, sticky costing ≤ 5 %).

use std::fmt::Write as _;

use crate::bench::Measured;
use crate::compare::Record;
use crate::configs::Mode;
use crate::stats::{Spread, spread};

/// One cell of the matrix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cell {
    /// rr or sticky.
    pub mode: Mode,
    /// wrk -c.
    pub conns: usize,
    /// Proxy threads / workers.
    pub threads: usize,
}

impl Cell {
    /// `rr-c64-t1`.
    pub fn tag(&self) -> String {
        format!("{}-c{}-t{}", self.mode.as_str(), self.conns, self.threads)
    }

    fn title(&self) -> String {
        format!(
            "{}, c{}, {} proxy thread{}",
            self.mode.as_str(),
            self.conns,
            self.threads,
            if self.threads == 1 { "" } else { "s" }
        )
    }
}

/// What the report header says.
#[derive(Debug, Clone)]
pub struct Meta {
    /// YYYY-MM-DD.
    pub date: String,
    /// Markdown bullets from `machine::versions`.
    pub versions: String,
    /// The pinning sentence.
    pub pinning: String,
    /// The command line.
    pub command: String,
    /// Repetitions.
    pub reps: usize,
    /// Seconds per run.
    pub duration: u64,
    /// Raw output directory.
    pub raw: String,
    /// What the other proxies add to requests (`Forwarding::describe`).
    pub forwarding: String,
}

/// Medians of one system in one cell.
#[derive(Debug, Clone, Copy)]
pub struct Agg {
    /// req/s median, min, max.
    pub rps: Spread,
    /// Median p50, µs.
    pub p50: f64,
    /// Median p99, µs.
    pub p99: f64,
    /// Median proxy CPU, %.
    pub cpu: Option<f64>,
    /// Median RSS at run end, MiB.
    pub rss: Option<f64>,
    /// Largest VmHWM, MiB.
    pub hwm: Option<f64>,
    /// Runs with errors or error statuses.
    pub flagged: usize,
}

/// Aggregates the runs of `system` in `cell`.
pub fn aggregate(records: &[Record], cell: &Cell, system: &str) -> Option<Agg> {
    let ms: Vec<Measured> = records
        .iter()
        .filter(|r| {
            r.system == system
                && r.mode == cell.mode.as_str()
                && r.conns == cell.conns
                && r.threads == cell.threads
        })
        .map(|r| r.m)
        .collect();
    summarize(&ms)
}

/// Medians of a set of runs; `None` when empty.
pub fn summarize(rs: &[Measured]) -> Option<Agg> {
    let med = |f: &dyn Fn(&Measured) -> Option<f64>| {
        spread(&rs.iter().filter_map(f).collect::<Vec<_>>()).map(|s| s.median)
    };
    Some(Agg {
        rps: spread(&rs.iter().map(|r| r.wrk.rps()).collect::<Vec<_>>())?,
        p50: med(&|r| Some(r.wrk.p50_us as f64))?,
        p99: med(&|r| Some(r.wrk.p99_us as f64))?,
        cpu: med(&|r| r.cpu_pct),
        rss: med(&|r| r.rss_kib.map(|k| k as f64 / 1024.0)),
        hwm: rs
            .iter()
            .filter_map(|r| r.hwm_kib)
            .max()
            .map(|k| k as f64 / 1024.0),
        flagged: rs.iter().filter(|r| r.wrk.flagged()).count(),
    })
}

/// µs as `1.23 ms`.
pub fn ms(us: f64) -> String {
    format!("{:.2} ms", us / 1000.0)
}

fn ratio(a: f64, b: Option<f64>) -> String {
    b.filter(|b| *b > 0.0)
        .map_or_else(|| "—".to_owned(), |b| format!("{:.2}", a / b))
}

const PROXIES: [&str; 3] = ["usher", "haproxy", "nginx"];

/// Median req/s of the best proxy other than `me` in a cell.
fn best_other(aggs: &[(&str, Agg)], me: &str) -> Option<f64> {
    aggs.iter()
        .filter(|(s, _)| *s != me && *s != "direct")
        .map(|(_, a)| a.rps.median)
        .reduce(f64::max)
}

fn cell_table(out: &mut String, aggs: &[(&str, Agg)]) {
    out.push_str("| system | req/s median (min..max) | p50 | p99 | vs direct | vs best other proxy | proxy CPU | RSS (peak) |\n");
    out.push_str("|---|---|---|---|---|---|---|---|\n");
    let direct = aggs
        .iter()
        .find(|(s, _)| *s == "direct")
        .map(|(_, a)| a.rps.median);
    for (s, a) in aggs {
        let is_proxy = PROXIES.contains(s);
        let flag = if a.flagged > 0 {
            format!(" ⚠ {} run(s) with errors", a.flagged)
        } else {
            String::new()
        };
        let _ = writeln!(
            out,
            "| {s}{flag} | {:.0} ({:.0}..{:.0}) | {} | {} | {} | {} | {} | {} |",
            a.rps.median,
            a.rps.min,
            a.rps.max,
            ms(a.p50),
            ms(a.p99),
            if *s == "direct" {
                "1.00".to_owned()
            } else {
                ratio(a.rps.median, direct)
            },
            if is_proxy {
                ratio(a.rps.median, best_other(aggs, s))
            } else {
                "—".to_owned()
            },
            a.cpu
                .map_or_else(|| "—".to_owned(), |c| format!("{c:.0} %")),
            match (a.rss, a.hwm) {
                (Some(r), Some(h)) => format!("{r:.1} MiB ({h:.1})"),
                _ => "—".to_owned(),
            },
        );
    }
}

/// Renders the report and the summary (the summary is also the report's last section).
pub fn render(
    meta: &Meta,
    cells: &[Cell],
    records: &[Record],
    checks: &[String],
) -> (String, String) {
    let mut r = String::new();
    let _ = writeln!(r, "# Comparison benchmark, {}\n", meta.date);
    let _ = writeln!(
        r,
        "Generated by `scripts/bench-compare.sh` (`usher-bench compare`). {} repetition(s) of {} s per \
         system per cell, interleaved (direct, usher, haproxy, nginx, direct, …), after a discarded \
         warm-up run per system per cell. req/s: median (min..max) over the repetitions; p50 / p99: \
         medians of the runs' percentiles; proxy CPU: utime+stime of the proxy's process tree over \
         the run, % of one core; RSS: sum of VmRSS of the tree at the end of the run (peak VmHWM).\n",
        meta.reps, meta.duration
    );
    let _ = writeln!(r, "Command: `{}`\n", meta.command);
    let _ = writeln!(r, "Pinning: {}\n", meta.pinning);
    let _ = writeln!(r, "Headers: {}.\n", meta.forwarding);
    let _ = writeln!(r, "{}", meta.versions);
    let _ = writeln!(
        r,
        "Raw outputs (every wrk JSON line, the configs, cookies and logs): `{}`\n",
        meta.raw
    );
    for cell in cells {
        let aggs: Vec<(&str, Agg)> = ["direct", "usher", "haproxy", "nginx"]
            .into_iter()
            .filter_map(|s| aggregate(records, cell, s).map(|a| (s, a)))
            .collect();
        let _ = writeln!(r, "## {}\n", cell.title());
        cell_table(&mut r, &aggs);
        r.push('\n');
    }
    if !checks.is_empty() {
        r.push_str("## Checks before measuring\n\n");
        for c in checks {
            let _ = writeln!(r, "- {c}");
        }
        r.push('\n');
    }
    let summary = summary(cells, records);
    r.push_str(&summary);
    (r, summary)
}

/// The summary section: usher against the best other proxy per cell, and sticky against rr.
pub fn summary(cells: &[Cell], records: &[Record]) -> String {
    let mut s = String::from("## Summary\n\n");
    s.push_str("| cell | usher req/s | best other | usher / best other (target ≥ 1.10) | usher p99 | best other p99 | p99 ≤ best | usher peak RSS (target ≤ 25 MiB at c256) |\n");
    s.push_str("|---|---|---|---|---|---|---|---|\n");
    for cell in cells {
        let Some(u) = aggregate(records, cell, "usher") else {
            continue;
        };
        let others: Vec<(&str, Agg)> = ["haproxy", "nginx"]
            .into_iter()
            .filter_map(|x| aggregate(records, cell, x).map(|a| (x, a)))
            .collect();
        let best = others
            .iter()
            .max_by(|a, b| a.1.rps.median.total_cmp(&b.1.rps.median));
        let best_p99 = others.iter().map(|(_, a)| a.p99).reduce(f64::min);
        let (bname, brps) = best.map_or(("—", None), |(n, a)| (*n, Some(a.rps.median)));
        let r = brps.map(|b| u.rps.median / b);
        let _ = writeln!(
            s,
            "| {} | {:.0} | {bname} {} | {} | {} | {} | {} | {} |",
            cell.tag(),
            u.rps.median,
            brps.map_or_else(String::new, |b| format!("{b:.0}")),
            r.map_or_else(
                || "—".to_owned(),
                |r| format!("{r:.2} {}", if r >= 1.1 { "met" } else { "**missed**" })
            ),
            ms(u.p99),
            best_p99.map_or_else(|| "—".to_owned(), ms),
            best_p99.map_or("—", |b| if u.p99 <= b { "yes" } else { "**no**" }),
            u.hwm.map_or_else(
                || "—".to_owned(),
                |h| format!(
                    "{h:.1} MiB{}",
                    match (cell.conns >= 256, h <= 25.0) {
                        (false, _) => "",
                        (true, true) => " met",
                        (true, false) => " **missed**",
                    }
                )
            ),
        );
    }
    s.push_str("\nusher sticky (sealed cookie) vs rr (`--affinity none`), same c and threads (target: sticky costs ≤ 5 %):\n\n");
    s.push_str("| c | threads | rr req/s | sticky req/s | cost |\n|---|---|---|---|---|\n");
    for cell in cells.iter().filter(|c| c.mode == Mode::Rr) {
        let sticky = Cell {
            mode: Mode::Sticky,
            ..*cell
        };
        if let (Some(rr), Some(st)) = (
            aggregate(records, cell, "usher"),
            aggregate(records, &sticky, "usher"),
        ) {
            let cost = (1.0 - st.rps.median / rr.rps.median) * 100.0;
            let _ = writeln!(
                s,
                "| {} | {} | {:.0} | {:.0} | {cost:.1} % {} |",
                cell.conns,
                cell.threads,
                rr.rps.median,
                st.rps.median,
                if cost <= 5.0 { "met" } else { "**missed**" }
            );
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::{Errors, WrkRun};

    fn rec(mode: Mode, system: &'static str, rps: u64, p99: u64) -> Record {
        Record {
            mode: mode.as_str(),
            conns: 64,
            threads: 1,
            system,
            rep: 0,
            m: Measured {
                wrk: WrkRun {
                    requests: rps,
                    duration_us: 1_000_000,
                    errors: Errors::default(),
                    non2xx: 0,
                    p50_us: 100,
                    p99_us: p99,
                    max_us: 1000,
                },
                cpu_pct: Some(99.0),
                rss_kib: Some(10240),
                hwm_kib: Some(20480),
            },
        }
    }

    #[test]
    fn summary_ratios_and_verdicts() {
        let records = vec![
            rec(Mode::Rr, "direct", 100_000, 500),
            rec(Mode::Rr, "usher", 44_000, 800),
            rec(Mode::Rr, "haproxy", 30_000, 900),
            rec(Mode::Rr, "nginx", 40_000, 700),
            rec(Mode::Sticky, "usher", 43_000, 800),
        ];
        let cells = [
            Cell {
                mode: Mode::Rr,
                conns: 64,
                threads: 1,
            },
            Cell {
                mode: Mode::Sticky,
                conns: 64,
                threads: 1,
            },
        ];
        let s = summary(&cells, &records);
        assert!(
            s.contains(
                "| rr-c64-t1 | 44000 | nginx 40000 | 1.10 met | 0.80 ms | 0.70 ms | **no** |"
            ),
            "{s}"
        );
        assert!(s.contains("| 64 | 1 | 44000 | 43000 | 2.3 % met |"), "{s}");
        let meta = Meta {
            date: "2026-01-01".into(),
            versions: "- v\n".into(),
            pinning: "p".into(),
            command: "c".into(),
            reps: 1,
            duration: 1,
            raw: "raw".into(),
            forwarding: "same work".into(),
        };
        let (r, _) = render(&meta, &cells, &records, &["ok".into()]);
        assert!(r.contains("| usher | 44000 (44000..44000) | 0.10 ms | 0.80 ms | 0.44 | 1.10 | 99 % | 10.0 MiB (20.0) |"), "{r}");
    }
}
