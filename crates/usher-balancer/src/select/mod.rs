//! Selection policies: which backend gets a request.
//!
//! Hand-written because this is the product's core logic and must be exactly specified,
//! deterministic and allocation-free on the request path: no I/O, no clocks, no global RNG, no
//! `RandomState`. Randomness is a `u64` the caller passes in; the Maglev layout depends only on the
//! member ids and weights, so every replica and restart agrees.
//!
//! * [`round_robin`] — smooth weighted round robin (nginx), a precomputed schedule + atomic cursor.
//! * [`least_conn`] — least in-flight per weight, and power of two choices.
//! * [`maglev`] — the Maglev table and the bounded-load consistent-hash lookup.

use std::fmt;
use std::str::FromStr;

use crate::backend::{LoadView, Member};

mod least_conn;
mod maglev;
mod round_robin;

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
        Self {
            policy: Policy::RoundRobin,
            balance_factor: 1.25,
        }
    }
}

/// An immutable selector over one backend set. Rebuilt (and swapped in whole) on membership change;
/// shared by all request tasks without locks.
///
/// Building always computes the Maglev table (131 111 slots for up to 1 311 weighted members, a
/// few milliseconds), because [`Selector::pick_hashed`] serves hashed affinity keys whatever the
/// policy; the round-robin schedule is built only for [`Policy::RoundRobin`]. The only mutable
/// state is the round-robin cursor, an atomic, so the selector is `Send + Sync`. Picking never
/// allocates.
///
/// Member indices in results and in the [`LoadView`] are positions in the `members` slice given
/// to [`Selector::new`]. Members with weight 0 are never picked for new work by any method.
/// Duplicate ids are the caller's error: they are not rejected, and they share one slot sequence.
pub struct Selector {
    members: Vec<Member>,
    /// `members[i].weight`, contiguous for the request-path scans.
    weights: Box<[u32]>,
    /// Least-conn's per-member cost factors (built only for [`Policy::LeastConn`]).
    scales: least_conn::Scales,
    policy: Policy,
    balance_factor: f64,
    schedule: round_robin::Schedule,
    table: maglev::Table,
}

impl fmt::Debug for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Selector")
            .field("members", &self.members)
            .field("policy", &self.policy)
            .field("balance_factor", &self.balance_factor)
            .field("schedule_len", &self.schedule.len())
            .field("table_size", &self.table.size())
            .finish()
    }
}

impl Selector {
    /// Builds the selector (round-robin schedule, Maglev table) for `members`.
    ///
    /// `config.balance_factor` below 1.0 or NaN is treated as 1.0 (the tightest cap that can
    /// always be met); `+∞` disables the cap.
    pub fn new(members: &[Member], config: &SelectorConfig) -> Self {
        let balance_factor = sanitize_factor(config.balance_factor);
        let weights: Box<[u32]> = members.iter().map(|m| m.weight).collect();
        let scales = match config.policy {
            Policy::LeastConn => least_conn::Scales::new(&weights),
            _ => least_conn::Scales::default(),
        };
        let schedule = match config.policy {
            Policy::RoundRobin => round_robin::Schedule::build(&weights),
            _ => round_robin::Schedule::default(),
        };
        Self {
            members: members.to_vec(),
            weights,
            scales,
            policy: config.policy,
            balance_factor,
            schedule,
            table: maglev::Table::build(members),
        }
    }

    /// Number of members.
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// Whether there are no members.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The member at index `i` (as given to [`Selector::new`]), if any.
    pub fn member(&self, i: usize) -> Option<&Member> {
        self.members.get(i)
    }

    /// All members, in the order given to [`Selector::new`].
    pub fn members(&self) -> &[Member] {
        &self.members
    }

    /// The configured policy.
    pub fn policy(&self) -> Policy {
        self.policy
    }

    /// The bounded-load factor in use (after clamping, see [`Selector::new`]).
    pub fn balance_factor(&self) -> f64 {
        self.balance_factor
    }

    /// Number of slots in the Maglev table (a prime from a fixed list, at least 131 111); 0 when
    /// no member has weight > 0.
    pub fn table_size(&self) -> usize {
        self.table.size()
    }

    /// The member owning `hash`'s Maglev slot, ignoring availability and load: what
    /// [`Selector::pick_hashed`] returns when every member is available and idle.
    pub fn owner(&self, hash: u64) -> Option<usize> {
        self.table.owner(hash)
    }

    /// Picks a backend by the configured policy for a request without an affinity binding.
    ///
    /// `hash` is the request's key hash when it has one (the Maglev policy hashes it; without one
    /// it uses `random`). `random` is a fresh random value (p2c's choices, tie-breaks).
    /// Returns `None` when no member is available.
    ///
    /// * `round-robin`: the next available member on the smooth weighted schedule.
    /// * `least-conn`: the available member with the fewest in-flight requests per unit of
    ///   weight; equal loads are broken by a scan starting at a position drawn from `random`.
    /// * `p2c`: the less loaded (per unit of weight) of two distinct available members chosen by
    ///   the low and high halves of `random`.
    /// * `maglev`: [`Selector::pick_hashed`] with `hash`, or `random` when there is none.
    ///
    /// `view` may be unsized (e.g. the `[(bool, u64)]` slice view), which is why the bound is
    /// relaxed to `?Sized`; every sized caller is unaffected.
    pub fn pick(
        &self,
        view: &(impl LoadView + ?Sized),
        hash: Option<u64>,
        random: u64,
    ) -> Option<usize> {
        match self.policy {
            Policy::RoundRobin => self.schedule.pick(&self.weights, view),
            Policy::LeastConn => least_conn::least_conn(&self.weights, &self.scales, view, random),
            Policy::P2c => least_conn::p2c(&self.weights, view, random),
            Policy::Maglev => self.pick_hashed(view, hash.unwrap_or(random)),
        }
    }

    /// Consistent-hash pick with bounded load, independent of the policy: the first member on
    /// `hash`'s Maglev probe sequence that is available and whose in-flight count + 1 stays within
    /// `ceil(c × (total in-flight + 1) / available members)`.
    ///
    /// The probe sequence is the table walked forward from slot `hash mod M`, so when a member is
    /// unavailable its keys fail over to the next members on the ring and no other key moves.
    /// "Available members" and "total in-flight" count only available members with weight > 0.
    /// If the view changes mid-walk and no member meets the cap, the first available member on the
    /// walk is returned. Returns `None` when no member is available.
    pub fn pick_hashed(&self, view: &(impl LoadView + ?Sized), hash: u64) -> Option<usize> {
        self.table
            .lookup(&self.weights, view, hash, self.balance_factor)
    }
}

/// NaN and values below 1.0 become 1.0.
fn sanitize_factor(c: f64) -> f64 {
    if c >= 1.0 { c } else { 1.0 }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::BackendId;

    fn members(weights: &[u32]) -> Vec<Member> {
        weights
            .iter()
            .enumerate()
            .map(|(i, &weight)| Member {
                id: BackendId::new(&format!("b{i}")).expect("id"),
                weight,
            })
            .collect()
    }

    fn config(policy: Policy) -> SelectorConfig {
        SelectorConfig {
            policy,
            ..SelectorConfig::default()
        }
    }

    const ALL: [Policy; 4] = [
        Policy::RoundRobin,
        Policy::LeastConn,
        Policy::P2c,
        Policy::Maglev,
    ];

    #[test]
    fn selector_is_send_sync_debug_and_small_to_print() {
        fn assert_traits<T: Send + Sync + fmt::Debug>() {}
        assert_traits::<Selector>();
        let s = Selector::new(&members(&[1, 2]), &config(Policy::Maglev));
        let text = format!("{s:?}");
        assert!(text.contains("table_size: 131111"), "{text}");
        assert!(text.len() < 400, "{text}");
    }

    #[test]
    fn policy_names_round_trip() {
        for p in ALL {
            assert_eq!(p.as_str().parse::<Policy>(), Ok(p));
        }
        assert_eq!(
            "random".parse::<Policy>(),
            Err(UnknownPolicy("random".into()))
        );
        assert_eq!(Policy::default(), Policy::RoundRobin);
    }

    #[test]
    fn balance_factor_is_clamped() {
        let ms = members(&[1]);
        let with = |c| {
            Selector::new(
                &ms,
                &SelectorConfig {
                    policy: Policy::Maglev,
                    balance_factor: c,
                },
            )
            .balance_factor()
        };
        assert_eq!(with(f64::NAN), 1.0);
        assert_eq!(with(0.5), 1.0);
        assert_eq!(with(-3.0), 1.0);
        assert_eq!(with(1.25), 1.25);
        assert_eq!(with(f64::INFINITY), f64::INFINITY);
    }

    #[test]
    fn empty_and_all_down_sets_pick_nothing() {
        for p in ALL {
            let empty = Selector::new(&[], &config(p));
            assert!(empty.is_empty());
            assert_eq!(empty.pick(&[][..], Some(1), 2), None);
            assert_eq!(empty.pick_hashed(&[][..], 1), None);
            let s = Selector::new(&members(&[1, 1, 1]), &config(p));
            assert_eq!(s.len(), 3);
            assert_eq!(s.pick(&[(false, 0); 3][..], Some(1), 2), None);
            let zero = Selector::new(&members(&[0, 0]), &config(p));
            assert_eq!(zero.pick(&[(true, 0); 2][..], None, 5), None);
            assert_eq!(zero.table_size(), 0);
        }
    }

    #[test]
    fn maglev_policy_uses_the_hash_when_given() {
        let s = Selector::new(&members(&[1, 1, 1, 1]), &config(Policy::Maglev));
        let idle = [(true, 0); 4];
        for k in 0..100u64 {
            let h = crate::hash_key(&k.to_le_bytes());
            assert_eq!(s.pick(&idle[..], Some(h), k), s.owner(h));
            assert_eq!(s.pick(&idle[..], None, h), s.owner(h));
            assert_eq!(s.pick_hashed(&idle[..], h), s.owner(h));
        }
        assert_eq!(s.member(4), None);
        assert_eq!(s.member(2).map(|m| m.id.as_str()), Some("b2"));
        assert_eq!(s.members().len(), 4);
        assert_eq!(s.policy(), Policy::Maglev);
    }
}
