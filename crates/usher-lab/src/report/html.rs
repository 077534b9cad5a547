//! The self-contained HTML report: the summary table, the verdicts, and per architecture an SVG
//! chart of requests per second by shop with the fault timeline marked. No scripts, no external
//! files: it opens from disk in any browser.

use std::fmt::Write as _;

use super::{ArchResult, LabReport};

const COLORS: [&str; 8] = [
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
];

/// Escapes text for HTML.
fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Renders the whole report as one HTML page.
pub fn render_html(report: &LabReport) -> String {
    let mut out = String::from(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <title>Usher lab report</title><style>\
         body{font:15px/1.45 system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}\
         table{border-collapse:collapse;margin:1em 0}th,td{padding:.3em .7em;border-bottom:1px solid #ddd;text-align:right}\
         th:first-child,td:first-child{text-align:left}th{background:#f4f4f4}\
         .bad{color:#b00020;font-weight:600}.good{color:#0a7d2c}\
         section{margin:2.5em 0}svg{background:#fcfcfc;border:1px solid #eee}\
         .legend span{display:inline-block;margin-right:1em}.legend i{display:inline-block;width:.9em;height:.9em;margin-right:.3em;vertical-align:-1px}\
         </style></head><body>",
    );
    let _ = write!(
        out,
        "<h1>Usher lab</h1><p>Seed {}, {} shops at the start, shared store: {}{}. \
         Figures are what the virtual users saw.</p>",
        report.seed,
        report.shops,
        esc(&report.store),
        if report.quick { ", quick run" } else { "" }
    );
    summary(&mut out, report);
    if !report.verdicts.is_empty() {
        out.push_str("<h2>Verdicts</h2><ul>");
        for v in &report.verdicts {
            let _ = write!(out, "<li>{}</li>", esc(v));
        }
        out.push_str("</ul>");
    }
    for a in report.architectures.iter().filter(|a| a.error.is_none()) {
        let _ = write!(out, "<section><h2>{}</h2>", esc(&a.architecture));
        chart(&mut out, a);
        let _ = write!(
            out,
            "<p>Latency p50 {:.1} ms, p95 {:.1} ms, p99 {:.1} ms. {} requests, {} failed ({}).</p></section>",
            a.latency_ms.p50,
            a.latency_ms.p95,
            a.latency_ms.p99,
            a.requests,
            a.error_count(),
            esc(&a
                .errors
                .iter()
                .map(|(k, v)| format!("{k}: {v}"))
                .collect::<Vec<_>>()
                .join(", "))
        );
    }
    out.push_str("</body></html>\n");
    out
}

fn summary(out: &mut String, report: &LabReport) {
    out.push_str(
        "<table><tr><th>architecture</th><th>req/s</th><th>errors</th><th>p50 ms</th><th>p99 ms</th>\
         <th>busiest/mean</th><th>sessions lost</th><th>cart items lost</th><th>duplicate orders</th>\
         <th>fair share after</th><th>failed at kill</th></tr>",
    );
    for a in &report.architectures {
        if let Some(e) = &a.error {
            let _ = write!(
                out,
                "<tr><td>{}</td><td colspan=\"10\" class=\"bad\" style=\"text-align:left\">not run: {}</td></tr>",
                esc(&a.architecture),
                esc(e)
            );
            continue;
        }
        let flag = |n: u64| if n > 0 { "bad" } else { "good" };
        let _ = write!(
            out,
            "<tr><td>{}</td><td>{:.0}</td><td>{}</td><td>{:.1}</td><td>{:.1}</td><td>{:.2}</td>\
             <td class=\"{}\">{}</td><td class=\"{}\">{}</td><td class=\"{}\">{}</td><td>{}</td><td>{}</td></tr>",
            esc(&a.architecture),
            a.throughput_rps,
            a.error_count(),
            a.latency_ms.p50,
            a.latency_ms.p99,
            a.imbalance.max_over_mean,
            flag(a.sessions_lost),
            a.sessions_lost,
            flag(a.cart_items_lost),
            a.cart_items_lost,
            flag(a.duplicate_orders),
            a.duplicate_orders,
            a.fair_share_secs
                .map_or_else(|| "never".to_owned(), |s| format!("{s:.0} s")),
            a.failed_around_kill
        );
    }
    out.push_str("</table>");
}

/// Requests per second by shop over the run, one line per shop, faults as dashed lines.
#[allow(clippy::cast_precision_loss)]
fn chart(out: &mut String, a: &ArchResult) {
    let (w, h, pad) = (1000.0_f64, 260.0_f64, 40.0_f64);
    let secs = a.per_second_by_shop.len().max(1);
    let shops = a
        .per_second_by_shop
        .iter()
        .flat_map(|row| {
            row.iter()
                .enumerate()
                .filter(|(_, n)| **n > 0)
                .map(|(i, _)| i + 1)
        })
        .max()
        .unwrap_or(0);
    let peak = a
        .per_second_by_shop
        .iter()
        .flat_map(|r| r.iter().copied())
        .max()
        .unwrap_or(1)
        .max(1) as f64;
    let x = |s: f64| pad + s / secs as f64 * (w - 2.0 * pad);
    let y = |v: f64| h - pad - v / peak * (h - 2.0 * pad);
    let _ = write!(
        out,
        "<svg viewBox=\"0 0 {w} {h}\" width=\"100%\" role=\"img\" aria-label=\"requests per second by shop\">\
         <line x1=\"{pad}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"#999\"/>\
         <text x=\"{pad}\" y=\"{}\" font-size=\"12\">{peak:.0} req/s</text>\
         <text x=\"{}\" y=\"{}\" font-size=\"12\" text-anchor=\"end\">{secs} s</text>",
        h - pad,
        w - pad,
        h - pad,
        pad - 8.0,
        w - pad,
        h - pad + 16.0
    );
    for e in &a.events {
        let ex = x(e.at_secs);
        let _ = write!(
            out,
            "<line x1=\"{ex:.1}\" y1=\"{pad}\" x2=\"{ex:.1}\" y2=\"{:.1}\" stroke=\"#b00020\" stroke-dasharray=\"4 3\"/>\
             <text x=\"{:.1}\" y=\"{:.1}\" font-size=\"11\" fill=\"#b00020\">{}</text>",
            h - pad,
            ex + 3.0,
            pad + 10.0
                + 12.0
                    * (a.events
                        .iter()
                        .position(|o| std::ptr::eq(o, e))
                        .unwrap_or(0)
                        % 3) as f64,
            esc(&e.event)
        );
    }
    for shop in 0..shops {
        let points: Vec<String> = a
            .per_second_by_shop
            .iter()
            .enumerate()
            .map(|(s, row)| {
                let v = f64::from(row.get(shop).copied().unwrap_or(0));
                format!("{:.1},{:.1}", x(s as f64 + 0.5), y(v))
            })
            .collect();
        let _ = write!(
            out,
            "<polyline fill=\"none\" stroke=\"{}\" stroke-width=\"2\" points=\"{}\"/>",
            COLORS[shop % COLORS.len()],
            points.join(" ")
        );
    }
    out.push_str("</svg><div class=\"legend\">");
    for shop in 0..shops {
        let _ = write!(
            out,
            "<span><i style=\"background:{}\"></i>shop-{shop}</span>",
            COLORS[shop % COLORS.len()]
        );
    }
    out.push_str("</div>");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::Event;

    #[test]
    fn renders_a_page_with_a_chart_per_architecture() {
        let a = ArchResult {
            architecture: "shared".to_owned(),
            per_second_by_shop: vec![vec![5, 5, 5], vec![6, 0, 4]],
            events: vec![Event {
                at_secs: 1.0,
                event: "kill -9 shop-1 <x>".to_owned(),
            }],
            ..ArchResult::default()
        };
        let failed = ArchResult::failed(crate::Architecture::Jwt, "no --auth".to_owned());
        let report = LabReport {
            schema: super::super::SCHEMA,
            seed: 1,
            quick: true,
            store: "sqlite".to_owned(),
            shops: 3,
            architectures: vec![a, failed],
            verdicts: vec!["v".to_owned()],
        };
        let html = render_html(&report);
        assert!(html.contains("<svg"));
        assert_eq!(html.matches("<polyline").count(), 3, "one line per shop");
        assert!(html.contains("kill -9 shop-1 &lt;x&gt;"), "escaped");
        assert!(html.contains("not run: no --auth"));
    }
}
