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

#[cfg(test)]
mod tests {
    use super::*;

    /// Differential test: every value below was computed independently with the reference C
    /// implementation (Python `xxhash` 3.x `xxh3_64_intdigest(key, seed=int.from_bytes(b"usher-v1",
    /// "big"))`). If one changes, every hashed client in production moves: don't update these
    /// numbers, revert the change.
    #[test]
    fn pinned_values() {
        assert_eq!(HASH_SEED, 0x7573_6865_722d_7631);
        let cases: [(&[u8], u64); 5] = [
            (b"127.0.0.1", 0x7483_4f89_3c8b_5a4b),
            (b"::1", 0x1610_b159_9ee4_abe2),
            (b"10.0.0.7", 0x4676_a0d6_8594_bc97),
            (b"", 0xfbe1_ccdf_db32_da8b),
            (b"session-abc123", 0xcf08_d701_ab29_2fd9),
        ];
        for (key, want) in cases {
            assert_eq!(
                hash_key(key),
                want,
                "hash_key({:?})",
                String::from_utf8_lossy(key)
            );
        }
    }

    #[test]
    fn seed_matters_and_is_fixed() {
        let unseeded = xxhash_rust::xxh3::xxh3_64(b"127.0.0.1");
        assert_ne!(hash_key(b"127.0.0.1"), unseeded);
        assert_eq!(hash_key(b"127.0.0.1"), hash_key(b"127.0.0.1"));
    }
}
