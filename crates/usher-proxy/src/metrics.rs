//! Prometheus text exposition (format 0.0.4) of the load balancer's counters.
//!
//! Rendered on demand from the atomics the request path already keeps, so scraping costs the
//! request path nothing. Hand-written: a few dozen lines of text, no registry to keep in sync.

use std::fmt::Write as _;

use crate::Lb;
use crate::pool::{BackendSlot, BackendState, Snapshot};
use crate::stats::{LATENCY_BUCKETS, Outcome, StatusCounters};

/// The metrics page.
pub fn render(lb: &Lb) -> String {
    let mut out = String::with_capacity(4096);
    let snap = lb.pool.snapshot();
    let now = lb.pool.now_ms();
    let stats = &lb.stats;

    header(
        &mut out,
        "usher_requests_total",
        "counter",
        "Responses by backend and status class (backend=\"none\": made by the load balancer).",
    );
    for b in &snap.slots {
        classes(&mut out, b.id.as_str(), &b.statuses);
    }
    classes(&mut out, "none", &stats.local);

    header(
        &mut out,
        "usher_request_duration_seconds",
        "histogram",
        "Time from request head to response head.",
    );
    let (counts, sum) = stats.latency.cumulative();
    for (le, n) in LATENCY_BUCKETS.iter().zip(&counts) {
        let _ = writeln!(
            out,
            "usher_request_duration_seconds_bucket{{le=\"{le}\"}} {n}"
        );
    }
    let total = counts.last().copied().unwrap_or(0);
    let _ = writeln!(
        out,
        "usher_request_duration_seconds_bucket{{le=\"+Inf\"}} {total}"
    );
    let _ = writeln!(out, "usher_request_duration_seconds_sum {sum}");
    let _ = writeln!(out, "usher_request_duration_seconds_count {total}");

    per_backend(
        &mut out,
        &snap,
        "usher_backend_inflight",
        "gauge",
        "Requests in flight per backend.",
        |b| b.inflight(),
    );
    per_backend(
        &mut out,
        &snap,
        "usher_backend_open_tunnels",
        "gauge",
        "Upgraded (WebSocket) connections open per backend.",
        |b| b.open_tunnels() as u64,
    );
    per_backend(
        &mut out,
        &snap,
        "usher_backend_up",
        "gauge",
        "1 when the backend is reachable (not down).",
        |b| u64::from(b.healthy(now)),
    );
    header(
        &mut out,
        "usher_backend_state",
        "gauge",
        "1 for the backend's current state.",
    );
    for b in &snap.slots {
        let current = b.state(now);
        for st in [
            BackendState::Active,
            BackendState::Draining,
            BackendState::Down,
        ] {
            let _ = writeln!(
                out,
                "usher_backend_state{{backend=\"{}\",state=\"{}\"}} {}",
                b.id,
                st,
                u8::from(st == current)
            );
        }
    }
    per_backend(
        &mut out,
        &snap,
        "usher_backend_health_transitions_total",
        "counter",
        "Times the backend went down.",
        |b| b.health_transitions(),
    );

    header(
        &mut out,
        "usher_affinity_outcomes_total",
        "counter",
        "Requests by affinity outcome.",
    );
    for o in Outcome::ALL {
        let _ = writeln!(
            out,
            "usher_affinity_outcomes_total{{outcome=\"{o}\"}} {}",
            stats.outcome_count(o)
        );
    }
    header(
        &mut out,
        "usher_retries_total",
        "counter",
        "Requests retried on another backend.",
    );
    let _ = writeln!(out, "usher_retries_total {}", stats.retries());
    out
}

/// One series per backend: `name{backend="id"} value`.
fn per_backend(
    out: &mut String,
    snap: &Snapshot,
    name: &str,
    kind: &str,
    help: &str,
    value: impl Fn(&BackendSlot) -> u64,
) {
    header(out, name, kind, help);
    for b in &snap.slots {
        let _ = writeln!(out, "{name}{{backend=\"{}\"}} {}", b.id, value(b));
    }
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

fn classes(out: &mut String, backend: &str, s: &StatusCounters) {
    for class in 1..=5u16 {
        let _ = writeln!(
            out,
            "usher_requests_total{{backend=\"{backend}\",code=\"{class}xx\"}} {}",
            s.class(class)
        );
    }
}
