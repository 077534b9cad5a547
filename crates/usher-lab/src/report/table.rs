//! The terminal table: one row per architecture.

use std::fmt::Write as _;

use super::LabReport;

/// Renders the report as a fixed-width table followed by the verdicts.
pub fn render_table(report: &LabReport) -> String {
    let mut out = String::new();
    let header = [
        "architecture",
        "req/s",
        "errors",
        "p50 ms",
        "p99 ms",
        "max/mean",
        "sess lost",
        "items lost",
        "dup orders",
        "fair share",
        "failed@kill",
    ];
    let mut rows = vec![header.map(str::to_owned).to_vec()];
    for a in &report.architectures {
        if a.error.is_some() {
            // The reason is printed under the table, not squeezed into a column.
            rows.push(vec![a.architecture.clone(), "not run".to_owned()]);
            continue;
        }
        rows.push(vec![
            a.architecture.clone(),
            format!("{:.0}", a.throughput_rps),
            a.error_count().to_string(),
            format!("{:.1}", a.latency_ms.p50),
            format!("{:.1}", a.latency_ms.p99),
            format!("{:.2}", a.imbalance.max_over_mean),
            a.sessions_lost.to_string(),
            a.cart_items_lost.to_string(),
            a.duplicate_orders.to_string(),
            a.fair_share_secs
                .map_or_else(|| "never".to_owned(), |s| format!("{s:.0}s")),
            a.failed_around_kill.to_string(),
        ]);
    }
    let widths: Vec<usize> = (0..header.len())
        .map(|i| {
            rows.iter()
                .map(|r| r.get(i).map_or(0, String::len))
                .max()
                .unwrap_or(0)
        })
        .collect();
    for (k, row) in rows.iter().enumerate() {
        let cells: Vec<String> = row
            .iter()
            .zip(&widths)
            .enumerate()
            .map(|(i, (c, w))| {
                if i == 0 {
                    format!("{c:<w$}")
                } else {
                    format!("{c:>w$}")
                }
            })
            .collect();
        let _ = writeln!(out, "{}", cells.join("  ").trim_end());
        if k == 0 {
            let _ = writeln!(
                out,
                "{}",
                "-".repeat(widths.iter().sum::<usize>() + 2 * (widths.len() - 1))
            );
        }
    }
    for a in &report.architectures {
        if let Some(e) = &a.error {
            let _ = writeln!(out, "{} not run: {}", a.architecture, first_line(e));
        }
    }
    if !report.verdicts.is_empty() {
        out.push('\n');
        for v in &report.verdicts {
            let _ = writeln!(out, "* {v}");
        }
    }
    out
}

fn first_line(s: &str) -> &str {
    let line = s.lines().next().unwrap_or("");
    line.get(..300).unwrap_or(line)
}
