//! The fault timeline: when each fault happens, as a fraction of the run, from a scenario file
//! (`--scenario FILE`) or the default.
//!
//! ```toml
//! # Every key is optional; a fraction of the run in (0, 1), or "off" to skip that fault.
//! kill = 0.3           # kill -9 shop-1
//! scale_out = 0.5      # add two shops through the admin API
//! drain = 0.75         # drain and remove the highest ordinal
//! store_restart = 0.9  # restart the private redis-server (needs --store redis); default "off"
//! ```

use std::time::Duration;

use serde::Deserialize;

/// When each fault happens, as a fraction of the run; `None` = not in this run.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Scenario {
    /// `kill -9` of shop-1.
    pub kill: Option<f64>,
    /// Two shops added.
    pub scale_out: Option<f64>,
    /// The highest ordinal drained and removed.
    pub drain: Option<f64>,
    /// The private Redis server restarted (sessions in it are lost: it persists nothing).
    pub store_restart: Option<f64>,
}

impl Default for Scenario {
    fn default() -> Self {
        Self {
            kill: Some(0.30),
            scale_out: Some(0.50),
            drain: Some(0.75),
            store_restart: None,
        }
    }
}

/// A fraction, or the word "off".
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum When {
    At(f64),
    Word(String),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawScenario {
    kill: Option<When>,
    scale_out: Option<When>,
    drain: Option<When>,
    store_restart: Option<When>,
}

fn field(name: &str, raw: Option<When>, default: Option<f64>) -> Result<Option<f64>, String> {
    match raw {
        None => Ok(default),
        Some(When::Word(w)) if w == "off" => Ok(None),
        Some(When::Word(w)) => Err(format!("{name}: expected a fraction or \"off\", got {w:?}")),
        Some(When::At(f)) if f > 0.0 && f < 1.0 => Ok(Some(f)),
        Some(When::At(f)) => Err(format!(
            "{name}: must be between 0 and 1 (exclusive), got {f}"
        )),
    }
}

impl Scenario {
    /// Parses a scenario file's text; errors name the key.
    pub fn from_toml(text: &str) -> Result<Self, String> {
        let raw: RawScenario = toml::from_str(text).map_err(|e| e.to_string())?;
        let d = Self::default();
        Ok(Self {
            kill: field("kill", raw.kill, d.kill)?,
            scale_out: field("scale_out", raw.scale_out, d.scale_out)?,
            drain: field("drain", raw.drain, d.drain)?,
            store_restart: field("store_restart", raw.store_restart, d.store_restart)?,
        })
    }

    /// The faults in time order for a run of `d`.
    pub fn faults(&self, d: Duration) -> Vec<(Duration, Fault)> {
        let mut out: Vec<(Duration, Fault)> = [
            (self.kill, Fault::Kill),
            (self.scale_out, Fault::ScaleOut),
            (self.drain, Fault::Drain),
            (self.store_restart, Fault::StoreRestart),
        ]
        .into_iter()
        .filter_map(|(at, f)| at.map(|at| (d.mul_f64(at), f)))
        .collect();
        out.sort_by_key(|(at, _)| *at);
        out
    }
}

/// One fault of the timeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// `kill -9` of shop-1.
    Kill,
    /// Two shops added.
    ScaleOut,
    /// The highest ordinal drained and removed.
    Drain,
    /// The private Redis server restarted.
    StoreRestart,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_fractions_and_off_and_names_bad_keys() {
        let s = Scenario::from_toml("kill = 0.2\ndrain = \"off\"\nstore_restart = 0.9\n").unwrap();
        assert_eq!(s.kill, Some(0.2));
        assert_eq!(s.scale_out, Some(0.5), "default kept");
        assert_eq!(s.drain, None);
        assert_eq!(s.store_restart, Some(0.9));
        assert_eq!(Scenario::from_toml("").unwrap(), Scenario::default());
        assert!(
            Scenario::from_toml("kill = 1.5")
                .unwrap_err()
                .contains("kill")
        );
        assert!(
            Scenario::from_toml("drain = \"later\"")
                .unwrap_err()
                .contains("drain")
        );
        assert!(
            Scenario::from_toml("explode = 0.5")
                .unwrap_err()
                .contains("explode")
        );
    }

    #[test]
    fn faults_come_in_time_order() {
        let s = Scenario {
            kill: Some(0.6),
            scale_out: Some(0.2),
            drain: None,
            store_restart: Some(0.4),
        };
        let f = s.faults(Duration::from_secs(10));
        assert_eq!(
            f,
            [
                (Duration::from_secs(2), Fault::ScaleOut),
                (Duration::from_secs(4), Fault::StoreRestart),
                (Duration::from_secs(6), Fault::Kill),
            ]
        );
    }
}
