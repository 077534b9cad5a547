//! Selection policies. SKELETON: the public API below is fixed; bodies are being written.

use std::str::FromStr;

use crate::backend::{LoadView, Member};

/// How a backend is chosen for a request that has no affinity binding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Policy {
    /// Smooth weighted round robin.
    #[default]
    RoundRobin,
    /// Fewest in-flight requests per unit of weight.
    LeastConn,
    /// Power of two choices on in-flight requests.
    P2c,
    /// Maglev consistent hashing with bounded load.
    Maglev,
}

/// A policy name that is not one of `round-robin`, `least-conn`, `p2c`, `maglev`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown policy {0:?}: expected round-robin, least-conn, p2c or maglev")]
pub struct UnknownPolicy(pub String);

impl FromStr for Policy {
    type Err = UnknownPolicy;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "round-robin" => Ok(Self::RoundRobin),
            "least-conn" => Ok(Self::LeastConn),
            "p2c" => Ok(Self::P2c),
            "maglev" => Ok(Self::Maglev),
            other => Err(UnknownPolicy(other.to_owned())),
        }
    }
}

impl Policy {
    /// The policy's name as written in flags and config.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::RoundRobin => "round-robin",
            Self::LeastConn => "least-conn",
            Self::P2c => "p2c",
            Self::Maglev => "maglev",
        }
    }
}

/// Settings for [`Selector::new`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SelectorConfig {
    /// Policy for requests without an affinity binding.
    pub policy: Policy,
    /// Bounded-load factor `c` (≥ 1.0): a hashed pick skips a backend whose in-flight count would
    /// exceed `c ×` the mean. Default 1.25.
    pub balance_factor: f64,
}

impl Default for SelectorConfig {
    fn default() -> Self {
        Self { policy: Policy::RoundRobin, balance_factor: 1.25 }
    }
}

/// An immutable selector over one backend set. Rebuilt (and swapped in whole) on membership change;
/// shared by all request tasks without locks.
#[derive(Debug)]
pub struct Selector {
    _todo: (),
}

impl Selector {
    /// Builds the selector (round-robin schedule, Maglev table) for `members`.
    pub fn new(members: &[Member], config: &SelectorConfig) -> Self {
        let _ = (members, config);
        todo!()
    }

    /// Number of members.
    pub fn len(&self) -> usize {
        todo!()
    }

    /// Whether there are no members.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Picks a backend by the configured policy for a request without an affinity binding.
    ///
    /// `hash` is the request's key hash when it has one (the Maglev policy hashes it; without one
    /// it uses `random`). `random` is a fresh random value (p2c's choices, tie-breaks).
    /// Returns `None` when no member is available.
    pub fn pick(&self, view: &impl LoadView, hash: Option<u64>, random: u64) -> Option<usize> {
        let _ = (view, hash, random);
        todo!()
    }

    /// Consistent-hash pick with bounded load, independent of the policy: the first member on
    /// `hash`'s Maglev probe sequence that is available and whose in-flight count + 1 stays within
    /// `ceil(c × (total in-flight + 1) / available members)`.
    pub fn pick_hashed(&self, view: &impl LoadView, hash: u64) -> Option<usize> {
        let _ = (view, hash);
        todo!()
    }
}
