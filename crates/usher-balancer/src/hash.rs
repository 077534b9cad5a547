//! The one hash function every consistent-hashing decision uses.
//!
//! XXH3-64 with a fixed seed: fast on short keys (IP addresses, session ids), stable across
//! platforms, releases and restarts. Changing [`HASH_SEED`] or the algorithm moves every hashed
//! client to a new backend, so both are pinned by a differential test.

/// Seed for [`hash_key`]: the ASCII bytes of `"usher-v1"` read as a big-endian `u64`.
/// Every replica and every restart uses this value, so they all map a key to the same backend.
pub const HASH_SEED: u64 = u64::from_be_bytes(*b"usher-v1");

/// Hashes an affinity key (client IP, header value, query value, cookie value).
pub fn hash_key(bytes: &[u8]) -> u64 {
    xxhash_rust::xxh3::xxh3_64_with_seed(bytes, HASH_SEED)
}
