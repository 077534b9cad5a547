//! What one wrk run reports (the JSON line the shared Lua script writes) and the
//! median / min / max summaries the reports quote.

use serde::{Deserialize, Serialize};

/// Socket errors wrk counted during a run, by kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Errors {
    /// Failed connects.
    pub connect: u64,
    /// Failed reads (including connections closed by the peer).
    pub read: u64,
    /// Failed writes.
    pub write: u64,
    /// Requests that timed out (wrk's `--timeout`, 2 s by default).
    pub timeout: u64,
}

impl Errors {
    /// All socket errors together.
    pub fn total(&self) -> u64 {
        self.connect + self.read + self.write + self.timeout
    }
}

/// One wrk run, as written by `done()` in the Lua script.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct WrkRun {
    /// Completed requests.
    pub requests: u64,
    /// Wall time of the run in µs.
    pub duration_us: u64,
    /// Socket errors by kind.
    pub errors: Errors,
    /// Responses with a status ≥ 400 (wrk's `errors.status`).
    pub non2xx: u64,
    /// Median latency in µs.
    pub p50_us: u64,
    /// 99th percentile latency in µs.
    pub p99_us: u64,
    /// Largest latency in µs.
    pub max_us: u64,
}

impl WrkRun {
    /// Requests per second over the run.
    pub fn rps(&self) -> f64 {
        if self.duration_us == 0 {
            return 0.0;
        }
        self.requests as f64 * 1e6 / self.duration_us as f64
    }

    /// A run with socket errors or error statuses: flagged in the tables.
    pub fn flagged(&self) -> bool {
        self.errors.total() > 0 || self.non2xx > 0
    }
}

/// Parses the last non-empty line of a wrk output file written by the Lua script.
pub fn parse_wrk_line(text: &str) -> anyhow::Result<WrkRun> {
    let line = text
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .ok_or_else(|| anyhow::anyhow!("wrk wrote no result line"))?;
    serde_json::from_str(line.trim())
        .map_err(|e| anyhow::anyhow!("bad wrk result line {line:?}: {e}"))
}

/// Median with the range it came from.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Spread {
    /// Median (mean of the two middle values for an even count).
    pub median: f64,
    /// Smallest value.
    pub min: f64,
    /// Largest value.
    pub max: f64,
}

/// Median, min and max of `values`; `None` when empty.
pub fn spread(values: &[f64]) -> Option<Spread> {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    let median = if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    };
    Some(Spread {
        median,
        min: v[0],
        max: v[n - 1],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_lua_line() {
        let text = "warm\n{\"requests\":1000,\"duration_us\":2000000,\"errors\":{\"connect\":0,\"read\":1,\"write\":0,\"timeout\":2},\"non2xx\":0,\"p50_us\":120,\"p99_us\":900,\"max_us\":5000}\n\n";
        let r = parse_wrk_line(text).unwrap();
        assert_eq!(r.requests, 1000);
        assert_eq!(r.errors.total(), 3);
        assert_eq!(r.p99_us, 900);
        assert!((r.rps() - 500.0).abs() < 1e-9);
        assert!(r.flagged());
    }

    #[test]
    fn rejects_garbage_and_empty() {
        assert!(parse_wrk_line("").is_err());
        assert!(parse_wrk_line("not json").is_err());
    }

    #[test]
    fn clean_run_is_not_flagged() {
        let r = WrkRun {
            requests: 1,
            duration_us: 0,
            errors: Errors::default(),
            non2xx: 0,
            p50_us: 1,
            p99_us: 1,
            max_us: 1,
        };
        assert!(!r.flagged());
        assert_eq!(r.rps(), 0.0);
    }

    #[test]
    fn spread_odd_even_empty() {
        let s = spread(&[3.0, 1.0, 2.0]).unwrap();
        assert_eq!((s.median, s.min, s.max), (2.0, 1.0, 3.0));
        let s = spread(&[4.0, 1.0, 2.0, 3.0]).unwrap();
        assert_eq!((s.median, s.min, s.max), (2.5, 1.0, 4.0));
        assert!(spread(&[]).is_none());
    }
}
