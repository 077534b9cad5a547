//! Outcome accounting: every request is counted by backend, status class and affinity outcome.
//!
//! Plain atomics (relaxed): one increment per counter per request, readable at any time by the
//! shutdown summary, tests and (later) the metrics endpoint.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// What the affinity step decided for a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// Affinity is off (`--affinity none`).
    Unpinned,
    /// The request carried no binding: picked by policy (a cookie binding is issued).
    New,
    /// Routed to the backend its binding names.
    Hit,
    /// The cookie was tampered, undecryptable or sealed by an unknown key: ignored and re-issued.
    Invalid,
    /// The cookie was authentic but expired: ignored and re-issued.
    Expired,
    /// The bound backend was down or gone: re-pinned elsewhere (`--on-failure repin`).
    Moved,
    /// The bound backend was down or gone: answered 503 (`--on-failure strict`).
    StrictReject,
    /// The bound backend finished draining: re-pinned elsewhere.
    Drained,
}

impl Outcome {
    /// All outcomes, in display order.
    pub const ALL: [Outcome; 8] = [
        Self::Unpinned,
        Self::New,
        Self::Hit,
        Self::Invalid,
        Self::Expired,
        Self::Moved,
        Self::StrictReject,
        Self::Drained,
    ];

    /// The label used in logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unpinned => "none",
            Self::New => "new",
            Self::Hit => "hit",
            Self::Invalid => "invalid",
            Self::Expired => "expired",
            Self::Moved => "moved",
            Self::StrictReject => "strict_reject",
            Self::Drained => "drained",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Responses by status class (`1xx`…`5xx`).
#[derive(Debug, Default)]
pub struct StatusCounters {
    classes: [AtomicU64; 5],
}

impl StatusCounters {
    /// Counts one response.
    pub fn record(&self, status: http::StatusCode) {
        let class = usize::from(status.as_u16() / 100).clamp(1, 5) - 1;
        self.classes[class].fetch_add(1, Relaxed);
    }

    /// Responses of class `class` (1–5).
    pub fn class(&self, class: u16) -> u64 {
        match class {
            1..=5 => self.classes[usize::from(class) - 1].load(Relaxed),
            _ => 0,
        }
    }

    /// All responses counted.
    pub fn total(&self) -> u64 {
        self.classes.iter().map(|c| c.load(Relaxed)).sum()
    }
}

impl fmt::Display for StatusCounters {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for class in 1..=5 {
            let n = self.class(class);
            if n > 0 {
                if !first {
                    f.write_str(" ")?;
                }
                write!(f, "{class}xx={n}")?;
                first = false;
            }
        }
        if first {
            f.write_str("-")?;
        }
        Ok(())
    }
}

/// Upper bounds (seconds) of the latency histogram's buckets; the last bucket is `+Inf`.
pub const LATENCY_BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];

/// A fixed-bucket latency histogram (Prometheus style: cumulative on output, not in storage).
#[derive(Debug, Default)]
pub struct Histogram {
    buckets: [AtomicU64; LATENCY_BUCKETS.len() + 1],
    sum_micros: AtomicU64,
}

impl Histogram {
    /// Records one observation.
    pub fn observe(&self, d: std::time::Duration) {
        let secs = d.as_secs_f64();
        let i = LATENCY_BUCKETS
            .iter()
            .position(|&b| secs <= b)
            .unwrap_or(LATENCY_BUCKETS.len());
        self.buckets[i].fetch_add(1, Relaxed);
        self.sum_micros
            .fetch_add(u64::try_from(d.as_micros()).unwrap_or(u64::MAX), Relaxed);
    }

    /// Cumulative counts per bucket (the last one is the total), and the sum in seconds.
    pub fn cumulative(&self) -> (Vec<u64>, f64) {
        let mut acc = 0;
        let counts = self
            .buckets
            .iter()
            .map(|b| {
                acc += b.load(Relaxed);
                acc
            })
            .collect();
        (counts, self.sum_micros.load(Relaxed) as f64 / 1e6)
    }
}

/// Process-wide counters.
#[derive(Debug, Default)]
pub struct Stats {
    outcomes: [AtomicU64; Outcome::ALL.len()],
    /// Time from receiving a request head to sending the response head.
    pub latency: Histogram,
    /// Responses the load balancer made itself without reaching a backend (503 no backend,
    /// strict rejects, 502/504 after failures, 400s).
    pub local: StatusCounters,
    retries: AtomicU64,
}

impl Stats {
    /// Counts one affinity outcome.
    pub fn outcome(&self, o: Outcome) {
        self.outcomes[o.index()].fetch_add(1, Relaxed);
    }

    /// How many requests had outcome `o`.
    pub fn outcome_count(&self, o: Outcome) -> u64 {
        self.outcomes[o.index()].load(Relaxed)
    }

    /// Counts one retry on another backend.
    pub fn retry(&self) {
        self.retries.fetch_add(1, Relaxed);
    }

    /// Retries so far.
    pub fn retries(&self) -> u64 {
        self.retries.load(Relaxed)
    }

    /// `new=3 hit=97 …` for the outcomes seen so far.
    pub fn outcomes_line(&self) -> String {
        let parts: Vec<String> = Outcome::ALL
            .iter()
            .filter_map(|&o| {
                let n = self.outcome_count(o);
                (n > 0).then(|| format!("{o}={n}"))
            })
            .collect();
        if parts.is_empty() {
            "-".to_owned()
        } else {
            parts.join(" ")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_add_up() {
        let s = Stats::default();
        s.outcome(Outcome::Hit);
        s.outcome(Outcome::Hit);
        s.outcome(Outcome::StrictReject);
        assert_eq!(s.outcome_count(Outcome::Hit), 2);
        assert_eq!(s.outcomes_line(), "hit=2 strict_reject=1");
        s.latency.observe(std::time::Duration::from_millis(3));
        s.latency.observe(std::time::Duration::from_secs(60));
        let (counts, sum) = s.latency.cumulative();
        assert_eq!(counts[1], 0);
        assert_eq!(counts[2], 1, "3 ms lands in the 5 ms bucket");
        assert_eq!(counts[counts.len() - 2], 1);
        assert_eq!(counts[counts.len() - 1], 2, "+Inf holds everything");
        assert!((sum - 60.003).abs() < 1e-6);
        s.local.record(http::StatusCode::SERVICE_UNAVAILABLE);
        s.local.record(http::StatusCode::OK);
        assert_eq!(s.local.class(5), 1);
        assert_eq!(s.local.total(), 2);
        assert_eq!(s.local.to_string(), "2xx=1 5xx=1");
    }
}
