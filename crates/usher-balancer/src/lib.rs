//! Pure load-balancing logic for Usher: no I/O, no clocks, no global randomness.
//!
//! Everything here is deterministic given its inputs. Time (`now`, in Unix seconds or as an
//! [`std::time::Instant`]) and randomness (a `u64` or nonce bytes) are passed in by the caller, so
//! every decision can be replayed in a test and every replica of the load balancer decides alike.
//!
//! * [`BackendId`], [`Member`], [`LoadView`], [`LoadTotals`] — who can be picked and how loaded
//!   they are.
//! * [`Selector`] — the selection policies (`round-robin`, `least-conn`, `p2c`, `maglev`) and the
//!   consistent-hash pick with bounded load used by hashed affinity keys.
//! * [`KeyRing`] / [`Claims`] — the sealed affinity cookie (AES-256-GCM, key ids for rotation).
//! * [`LearnedRoutes`] — the bounded, expiring table behind `app-cookie:NAME` affinity.

mod affinity;
mod backend;
mod hash;
mod select;

pub use affinity::learned::LearnedRoutes;
pub use affinity::token::{
    AffinityKey, Claims, KeyFileError, KeyRing, KeyRingError, NONCE_LEN, OpenError,
};
pub use backend::{BackendId, InvalidBackendId, LoadTotals, LoadView, Member};
pub use hash::{HASH_SEED, hash_key};
pub use select::{Policy, Selector, SelectorConfig, UnknownPolicy};
