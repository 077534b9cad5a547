//! The lab's results: one [`ArchResult`] per architecture, the verdicts drawn from them, and
//! their renderings (terminal table, JSON).
//!
//! The JSON is the stable interface (`schema: "usher-lab/1"`); docs/lab.md documents each field.

mod html;
mod table;
mod verdicts;

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;

use crate::LabOptions;
use crate::arch::Architecture;
use crate::run::Timeline;
use crate::stats::{MAX_SHOPS, Recorder, imbalance};

pub use html::render_html;
pub use table::render_table;
pub use verdicts::verdicts;

/// The JSON schema name and version.
pub const SCHEMA: &str = "usher-lab/1";

/// Something the fault timeline did.
#[derive(Debug, Clone, Serialize)]
pub struct Event {
    /// Seconds from the start of the run.
    pub at_secs: f64,
    /// What happened.
    pub event: String,
}

/// Latency percentiles, milliseconds.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Latency {
    /// Median.
    pub p50: f64,
    /// 95th percentile.
    pub p95: f64,
    /// 99th percentile.
    pub p99: f64,
}

/// How evenly the steady phase's requests spread over the shops.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Imbalance {
    /// Busiest shop's requests over the mean (1.0 = even).
    pub max_over_mean: f64,
    /// Coefficient of variation of requests per shop (0 = even).
    pub cv: f64,
}

/// One architecture's figures, all from the users' point of view.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ArchResult {
    /// The architecture's name.
    pub architecture: String,
    /// Why it could not be measured, if it could not.
    pub error: Option<String>,
    /// Seconds the users ran.
    pub duration_secs: f64,
    /// Virtual users.
    pub users: usize,
    /// Requests sent.
    pub requests: u64,
    /// Requests per second.
    pub throughput_rps: f64,
    /// Failed requests by kind: `transport` (refused, reset, timed out), `503`, `5xx`, `login-rejected`.
    pub errors: BTreeMap<String, u64>,
    /// Latency percentiles of completed requests.
    pub latency_ms: Latency,
    /// Spread over shop-0…shop-(N-1) before the kill.
    pub imbalance: Imbalance,
    /// Requests per second of the run (index), per shop ordinal (`shop-0` = index 0).
    pub per_second_by_shop: Vec<Vec<u32>>,
    /// Sessions lost: a signed-in user found signed out.
    pub sessions_lost: u64,
    /// Sign-ins forced by lost sessions.
    pub relogins: u64,
    /// Items users added to carts.
    pub cart_items_added: u64,
    /// Added items missing from the cart when the user looked again (or lost with the session).
    pub cart_items_lost: u64,
    /// Checkouts completed.
    pub checkouts: u64,
    /// Checkouts sent twice (timeout, then a retry with the same Idempotency-Key).
    pub retried_checkouts: u64,
    /// Orders beyond one per checkout.
    pub duplicate_orders: u64,
    /// Seconds after scale-out until the first new shop served ≥ 80 % of a fair share (1/n of
    /// the requests of a second, n = shops serving in that second); `null` if it never did.
    pub fair_share_secs: Option<f64>,
    /// Failed requests in the 5 seconds after the kill.
    pub failed_around_kill: u64,
    /// What the fault timeline did, and when.
    pub events: Vec<Event>,
}

#[allow(clippy::cast_precision_loss)]
impl ArchResult {
    /// A result for an architecture that could not be run.
    pub fn failed(arch: Architecture, error: String) -> Self {
        Self {
            architecture: arch.as_str().to_owned(),
            error: Some(error),
            ..Self::default()
        }
    }

    /// Reduces a run's observations.
    pub fn from_run(
        arch: Architecture,
        opts: &LabOptions,
        mut rec: Recorder,
        elapsed: Duration,
        events: Vec<Event>,
        t: &Timeline,
    ) -> Self {
        let secs = |d: Duration| usize::try_from(d.as_secs()).unwrap_or(usize::MAX);
        let last = rec.per_second.len();
        // Before the kill (the whole run if there is none).
        let kill = t.kill.map(secs);
        let steady = rec.served(1, kill.unwrap_or(last));
        let (max_over_mean, cv) = imbalance(&steady[..opts.shops.min(MAX_SHOPS)]);
        // The first new shop stays to the end; it carries a fair share in a second when it
        // serves at least 80 % of 1/n of that second's requests, n being the shops that served any.
        let newcomer = opts.shops;
        let fair_share_secs = t.scale_out.and_then(|scale_out| {
            (secs(scale_out) + 1..last).find_map(|s| {
                let row = rec.served(s, s + 1);
                let total: u64 = row.iter().sum();
                let serving = row.iter().filter(|&&n| n > 0).count().max(1);
                let ok = newcomer < MAX_SHOPS
                    && total > 0
                    && row[newcomer] as f64 / total as f64 >= 0.8 / serving as f64;
                ok.then(|| (s + 1) as f64 - scale_out.as_secs_f64())
            })
        });
        Self {
            architecture: arch.as_str().to_owned(),
            error: None,
            duration_secs: elapsed.as_secs_f64(),
            users: opts.users,
            requests: rec.requests,
            throughput_rps: rec.requests as f64 / elapsed.as_secs_f64().max(1e-9),
            errors: rec
                .errors
                .iter()
                .map(|(k, v)| ((*k).to_owned(), *v))
                .collect(),
            latency_ms: Latency {
                p50: rec.latency_ms(0.50),
                p95: rec.latency_ms(0.95),
                p99: rec.latency_ms(0.99),
            },
            imbalance: Imbalance { max_over_mean, cv },
            per_second_by_shop: rec.per_second.iter().map(|r| r.to_vec()).collect(),
            sessions_lost: rec.sessions_lost,
            relogins: rec.relogins,
            cart_items_added: rec.cart_items_added,
            cart_items_lost: rec.cart_items_lost,
            checkouts: rec.checkouts,
            retried_checkouts: rec.retried_checkouts,
            duplicate_orders: rec.duplicate_orders,
            fair_share_secs,
            failed_around_kill: kill.map_or(0, |k| rec.failed(k, k + 5)),
            events,
        }
    }

    /// Failed requests of every kind.
    pub fn error_count(&self) -> u64 {
        self.errors.values().sum()
    }
}

/// The whole lab run.
#[derive(Debug, Clone, Serialize)]
pub struct LabReport {
    /// [`SCHEMA`].
    pub schema: &'static str,
    /// The workload seed.
    pub seed: u64,
    /// Whether this was a `--quick` run.
    pub quick: bool,
    /// The shared store's kind (`sqlite`, `redis`, `postgres`).
    pub store: String,
    /// Shops at the start.
    pub shops: usize,
    /// One entry per architecture, in the order run.
    pub architectures: Vec<ArchResult>,
    /// One line per claim the lab tests.
    pub verdicts: Vec<String>,
}
