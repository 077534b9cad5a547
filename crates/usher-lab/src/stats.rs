//! What the virtual users saw, recorded per user without locks and merged at the end.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::client::Reply;

/// Shop ordinals the per-second series can hold (`shop-0` … `shop-7`).
pub const MAX_SHOPS: usize = 8;

/// One user's (or, merged, everyone's) observations.
#[derive(Debug, Clone, Default)]
pub struct Recorder {
    /// Requests sent.
    pub requests: u64,
    /// Failed requests by kind (`transport`, `5xx`, `503`, …).
    pub errors: BTreeMap<&'static str, u64>,
    /// Latency of every completed request, microseconds.
    pub latencies_us: Vec<u32>,
    /// Requests per second of the run, by the shop that served them.
    pub per_second: Vec<[u32; MAX_SHOPS]>,
    /// Failed requests (transport or 5xx) per second of the run.
    pub failures_per_second: Vec<u32>,
    /// A signed-in user found signed out.
    pub sessions_lost: u64,
    /// Sign-ins after the first (mostly forced by lost sessions).
    pub relogins: u64,
    /// Items added to carts.
    pub cart_items_added: u64,
    /// Items the user added that were missing from the cart later.
    pub cart_items_lost: u64,
    /// Checkouts completed (the user saw an order).
    pub checkouts: u64,
    /// Checkouts that were deliberately sent twice (a timeout, then a retry).
    pub retried_checkouts: u64,
    /// Orders beyond one per checkout, found in the user's order list.
    pub duplicate_orders: u64,
}

/// The ordinal in `shop-N`.
pub fn ordinal(served_by: &str) -> Option<usize> {
    served_by.strip_prefix("shop-")?.parse().ok()
}

impl Recorder {
    /// Records one request sent `at` after the run started.
    pub fn record(&mut self, at: Duration, reply: &Reply) {
        self.requests += 1;
        let second = usize::try_from(at.as_secs())
            .unwrap_or(usize::MAX)
            .min(3600);
        if self.per_second.len() <= second {
            self.per_second.resize(second + 1, [0; MAX_SHOPS]);
            self.failures_per_second.resize(second + 1, 0);
        }
        let kind = match reply.status {
            None => Some("transport"),
            Some(s) if s.as_u16() == 503 => Some("503"),
            Some(s) if s.is_server_error() => Some("5xx"),
            Some(_) => None,
        };
        if let Some(kind) = kind {
            *self.errors.entry(kind).or_default() += 1;
            self.failures_per_second[second] += 1;
        }
        if reply.status.is_some() {
            self.latencies_us
                .push(u32::try_from(reply.latency.as_micros()).unwrap_or(u32::MAX));
        }
        if let Some(n) = reply.served_by.as_deref().and_then(ordinal)
            && n < MAX_SHOPS
        {
            self.per_second[second][n] += 1;
        }
    }

    /// Counts an error of a kind the status alone does not tell (e.g. an unexpected 4xx).
    pub fn error(&mut self, kind: &'static str) {
        *self.errors.entry(kind).or_default() += 1;
    }

    /// Adds `other` into `self`.
    pub fn merge(&mut self, other: Self) {
        self.requests += other.requests;
        for (k, v) in other.errors {
            *self.errors.entry(k).or_default() += v;
        }
        self.latencies_us.extend(other.latencies_us);
        if self.per_second.len() < other.per_second.len() {
            self.per_second
                .resize(other.per_second.len(), [0; MAX_SHOPS]);
            self.failures_per_second.resize(other.per_second.len(), 0);
        }
        for (i, row) in other.per_second.iter().enumerate() {
            for (a, b) in self.per_second[i].iter_mut().zip(row) {
                *a += b;
            }
            self.failures_per_second[i] += other.failures_per_second[i];
        }
        self.sessions_lost += other.sessions_lost;
        self.relogins += other.relogins;
        self.cart_items_added += other.cart_items_added;
        self.cart_items_lost += other.cart_items_lost;
        self.checkouts += other.checkouts;
        self.retried_checkouts += other.retried_checkouts;
        self.duplicate_orders += other.duplicate_orders;
    }

    /// The `q` quantile (0..=1) of latency, in milliseconds. Sorts the samples.
    pub fn latency_ms(&mut self, q: f64) -> f64 {
        if self.latencies_us.is_empty() {
            return 0.0;
        }
        self.latencies_us.sort_unstable();
        let last = self.latencies_us.len() - 1;
        // Nearest-rank on the sorted samples; the cast is of a value in 0..=last.
        #[allow(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            clippy::cast_precision_loss
        )]
        let i = ((last as f64) * q.clamp(0.0, 1.0)).round() as usize;
        f64::from(self.latencies_us[i.min(last)]) / 1000.0
    }

    /// Requests served by each shop in seconds `[from, to)`.
    pub fn served(&self, from: usize, to: usize) -> [u64; MAX_SHOPS] {
        let mut out = [0u64; MAX_SHOPS];
        for row in self.per_second.iter().take(to).skip(from) {
            for (o, n) in out.iter_mut().zip(row) {
                *o += u64::from(*n);
            }
        }
        out
    }

    /// Failed requests in seconds `[from, to)`.
    pub fn failed(&self, from: usize, to: usize) -> u64 {
        self.failures_per_second
            .iter()
            .take(to)
            .skip(from)
            .map(|n| u64::from(*n))
            .sum()
    }
}

/// Max/mean and coefficient of variation of the counts of the given shops.
#[allow(clippy::cast_precision_loss)]
pub fn imbalance(counts: &[u64]) -> (f64, f64) {
    if counts.is_empty() {
        return (0.0, 0.0);
    }
    let n = counts.len() as f64;
    let mean = counts.iter().sum::<u64>() as f64 / n;
    if mean == 0.0 {
        return (0.0, 0.0);
    }
    let max = counts.iter().copied().max().unwrap_or(0) as f64;
    let var = counts
        .iter()
        .map(|&c| (c as f64 - mean).powi(2))
        .sum::<f64>()
        / n;
    (max / mean, var.sqrt() / mean)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn imbalance_of_even_and_skewed_loads() {
        assert_eq!(imbalance(&[10, 10, 10]), (1.0, 0.0));
        let (max_mean, cv) = imbalance(&[30, 0, 0]);
        assert!((max_mean - 3.0).abs() < 1e-9);
        assert!(cv > 1.4);
        assert_eq!(imbalance(&[]), (0.0, 0.0));
    }

    #[test]
    fn merge_and_windows() {
        let reply = |shop: &str| Reply {
            status: Some(http::StatusCode::OK),
            served_by: Some(shop.to_owned()),
            body: bytes::Bytes::new(),
            latency: Duration::from_millis(2),
        };
        let mut a = Recorder::default();
        a.record(Duration::from_millis(100), &reply("shop-0"));
        let mut b = Recorder::default();
        b.record(Duration::from_millis(2100), &reply("shop-2"));
        b.record(
            Duration::from_millis(2200),
            &Reply {
                status: None,
                ..reply("shop-1")
            },
        );
        a.merge(b);
        assert_eq!(a.requests, 3);
        assert_eq!(a.served(0, 3)[0], 1);
        assert_eq!(a.served(2, 3)[2], 1);
        assert_eq!(a.failed(2, 3), 1);
        assert_eq!(a.errors["transport"], 1);
        assert!((a.latency_ms(0.5) - 2.0).abs() < 1e-9);
    }
}
