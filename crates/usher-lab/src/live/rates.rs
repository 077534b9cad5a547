//! Requests per second per shop, from the balancer's request counters.
//!
//! The balancer counts requests forwarded to each backend but keeps no rates; the dashboard
//! samples the counters once a second and turns each delta into a rate over the time that really
//! passed (a late tick must not read as a burst). The last [`WINDOW`] rates are kept per shop for
//! the live chart, so a freshly opened page shows the last minute at once.

use std::collections::{HashMap, VecDeque};
use std::time::Instant;

/// Samples kept per shop: one a second, so one minute.
pub const WINDOW: usize = 60;

/// Rolling request rates.
#[derive(Debug, Default)]
pub struct Rates {
    last: HashMap<String, u64>,
    last_at: Option<Instant>,
    history: HashMap<String, VecDeque<f64>>,
}

impl Rates {
    /// Records the counters `(id, requests so far)` seen at `now`. Ids missing from `counts` are
    /// forgotten (the backend left the pool). A counter that went down (a backend re-created
    /// under the same id) counts as a fresh start, never as a negative rate.
    pub fn sample(&mut self, now: Instant, counts: &[(String, u64)]) {
        let elapsed = self
            .last_at
            .map(|t| now.saturating_duration_since(t).as_secs_f64());
        self.last_at = Some(now);
        let mut next = HashMap::with_capacity(counts.len());
        for (id, count) in counts {
            let rate = match (elapsed, self.last.get(id)) {
                (Some(dt), Some(&before)) if dt > 0.0 => count.saturating_sub(before) as f64 / dt,
                _ => 0.0,
            };
            let h = self.history.entry(id.clone()).or_default();
            if elapsed.is_some() {
                if h.len() == WINDOW {
                    h.pop_front();
                }
                h.push_back(rate);
            }
            next.insert(id.clone(), *count);
        }
        self.history.retain(|id, _| next.contains_key(id));
        self.last = next;
    }

    /// The latest rate of `id` (0 before two samples).
    pub fn current(&self, id: &str) -> f64 {
        self.history
            .get(id)
            .and_then(|h| h.back().copied())
            .unwrap_or(0.0)
    }

    /// Up to [`WINDOW`] rates of `id`, oldest first, the last one current.
    pub fn history(&self, id: &str) -> Vec<f64> {
        self.history
            .get(id)
            .map(|h| h.iter().copied().collect())
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn counts(v: &[(&str, u64)]) -> Vec<(String, u64)> {
        v.iter().map(|(id, n)| ((*id).to_owned(), *n)).collect()
    }

    #[test]
    fn rates_come_from_deltas_over_real_time() {
        let t0 = Instant::now();
        let mut r = Rates::default();
        r.sample(t0, &counts(&[("shop-0", 100), ("shop-1", 7)]));
        assert_eq!(r.current("shop-0"), 0.0);
        assert!(r.history("shop-0").is_empty(), "one sample has no rate yet");
        r.sample(
            t0 + Duration::from_secs(2),
            &counts(&[("shop-0", 140), ("shop-1", 7)]),
        );
        assert!((r.current("shop-0") - 20.0).abs() < 1e-9);
        assert_eq!(r.current("shop-1"), 0.0);
        assert_eq!(r.history("shop-0"), vec![20.0]);
    }

    #[test]
    fn counter_resets_never_go_negative_and_gone_ids_are_forgotten() {
        let t0 = Instant::now();
        let mut r = Rates::default();
        r.sample(t0, &counts(&[("shop-0", 50), ("shop-1", 5)]));
        r.sample(t0 + Duration::from_secs(1), &counts(&[("shop-0", 3)]));
        assert_eq!(r.current("shop-0"), 0.0);
        assert!(r.history("shop-1").is_empty());
        // A newcomer starts from its first sample.
        r.sample(
            t0 + Duration::from_secs(2),
            &counts(&[("shop-0", 4), ("shop-2", 9)]),
        );
        assert!((r.current("shop-0") - 1.0).abs() < 1e-9);
        assert_eq!(r.current("shop-2"), 0.0);
        assert_eq!(r.current("nope"), 0.0);
    }

    #[test]
    fn history_is_bounded_to_the_window() {
        let t0 = Instant::now();
        let mut r = Rates::default();
        for i in 0..(WINDOW as u64 + 30) {
            r.sample(t0 + Duration::from_secs(i), &counts(&[("shop-0", i * 3)]));
        }
        let h = r.history("shop-0");
        assert_eq!(h.len(), WINDOW);
        assert!(h.iter().all(|x| (x - 3.0).abs() < 1e-9));
    }
}
