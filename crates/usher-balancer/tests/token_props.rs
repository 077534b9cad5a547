//! Property tests for the sealed affinity token: round trips, and nothing else ever opens.
//!
//! Case counts are bounded so the file runs in a few seconds even in a debug build.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use proptest::prelude::*;
use usher_balancer::{AffinityKey, BackendId, Claims, KeyRing, NONCE_LEN, OpenError};

/// Keys 1 and 3 differ in one bit, so id bit flips can land on another key the ring holds.
fn ring() -> KeyRing {
    KeyRing::new(vec![
        AffinityKey::from_bytes(1, [0x11; 32]),
        AffinityKey::from_bytes(3, [0x33; 32]),
    ])
    .expect("valid ring")
}

/// Valid claims plus a `now` at which they are still live.
fn live_claims() -> impl Strategy<Value = (Claims, u64)> {
    (
        "[A-Za-z0-9._-]{1,64}",
        any::<u64>(),
        1..=u64::MAX,
        1..=u64::MAX,
    )
        .prop_flat_map(|(id, issued_at, idle_expires_at, expires_at)| {
            let backend = BackendId::new(&id).expect("regex yields valid ids");
            let claims = Claims {
                backend,
                issued_at,
                idle_expires_at,
                expires_at,
            };
            (Just(claims), 0..idle_expires_at.min(expires_at))
        })
}

fn nonce() -> impl Strategy<Value = [u8; NONCE_LEN]> {
    any::<[u8; NONCE_LEN]>()
}

/// Anything a forged or damaged token may produce: never `Ok`, never `Expired` (which would mean
/// it authenticated).
fn rejected(result: &Result<(Claims, u32), OpenError>) -> bool {
    matches!(
        result,
        Err(OpenError::Forged | OpenError::Malformed | OpenError::UnknownKey(_))
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn round_trip((claims, now) in live_claims(), nonce in nonce()) {
        let ring = ring();
        let token = ring.seal(&claims, nonce);
        prop_assert!(token.len() <= 179);
        prop_assert_eq!(ring.open(&token, now), Ok((claims.clone(), 3)));
        let at = claims.idle_expires_at.min(claims.expires_at);
        prop_assert_eq!(ring.open(&token, at), Err(OpenError::Expired { at, claims }));
    }

    #[test]
    fn arbitrary_strings_never_open(s in any::<String>(), now in any::<u64>()) {
        prop_assert!(rejected(&ring().open(&s, now)));
    }

    #[test]
    fn arbitrary_base64url_never_opens(s in "[A-Za-z0-9_-]{90,185}", now in any::<u64>()) {
        prop_assert!(rejected(&ring().open(&s, now)));
    }

    /// Random bodies behind a valid header reach the AEAD, which must refuse them.
    #[test]
    fn random_bodies_are_forged(
        key_id in prop_oneof![Just(1u32), Just(3u32)],
        body in proptest::collection::vec(any::<u8>(), 54..=117),
    ) {
        let mut bytes = vec![1];
        bytes.extend_from_slice(&key_id.to_be_bytes());
        bytes.extend_from_slice(&body);
        prop_assert_eq!(ring().open(&URL_SAFE_NO_PAD.encode(&bytes), 0), Err(OpenError::Forged));
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// Every single-bit flip of a valid token's bytes is rejected.
    #[test]
    fn bit_flips_never_open((claims, now) in live_claims(), nonce in nonce()) {
        let ring = ring();
        let token = ring.seal(&claims, nonce);
        let bytes = URL_SAFE_NO_PAD.decode(&token).expect("valid base64url");
        for bit in 0..bytes.len() * 8 {
            let mut flipped = bytes.clone();
            flipped[bit / 8] ^= 1 << (bit % 8);
            let result = ring.open(&URL_SAFE_NO_PAD.encode(&flipped), now);
            prop_assert!(rejected(&result), "bit {}: {:?}", bit, result);
        }
    }

    /// Truncations and extensions of a valid token are rejected.
    #[test]
    fn resized_tokens_never_open(
        (claims, now) in live_claims(),
        nonce in nonce(),
        extra in proptest::collection::vec(any::<u8>(), 1..8),
    ) {
        let ring = ring();
        let bytes = URL_SAFE_NO_PAD.decode(ring.seal(&claims, nonce)).expect("valid base64url");
        for cut in 1..bytes.len() {
            let result = ring.open(&URL_SAFE_NO_PAD.encode(&bytes[..cut]), now);
            prop_assert!(rejected(&result), "cut to {}: {:?}", cut, result);
        }
        let longer = [&bytes[..], &extra].concat();
        prop_assert!(rejected(&ring.open(&URL_SAFE_NO_PAD.encode(&longer), now)));
    }
}
