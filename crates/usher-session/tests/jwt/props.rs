//! Property tests of the token codecs.

use std::sync::Arc;

use proptest::prelude::*;
use serde_json::json;
use usher_session::jwt::{
    Algorithm, Claims, KeyFile, KeyRing, TokenError, TokenService, VerifyOptions,
};

use super::NOW;
use super::refresh::memory;

fn hs_ring() -> &'static KeyRing {
    static RING: std::sync::OnceLock<KeyRing> = std::sync::OnceLock::new();
    RING.get_or_init(|| {
        KeyFile::generate(Algorithm::HS256)
            .unwrap()
            .ring(VerifyOptions::default())
            .unwrap()
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn claims_round_trip(
        sub in "[a-zA-Z0-9@._-]{1,40}",
        ttl in 1u64..1_000_000,
        jti in proptest::option::of("[ -~]{0,30}"),
        extra in proptest::collection::btree_map("[a-z]{1,8}", any::<i64>(), 0..5),
    ) {
        let mut c = Claims::new(sub, NOW, ttl);
        c.jti = jti;
        for (k, v) in extra {
            c.extra.insert(format!("x_{k}"), json!(v));
        }
        let token = hs_ring().sign(&c).unwrap();
        prop_assert_eq!(hs_ring().verify(&token, NOW).unwrap(), c);
    }

    #[test]
    fn arbitrary_input_never_panics_or_verifies(s in "\\PC{0,300}") {
        prop_assert!(hs_ring().verify(&s, NOW).is_err());
    }

    #[test]
    fn any_single_character_change_is_rejected(pos in any::<prop::sample::Index>(), c in "[A-Za-z0-9_.-]") {
        let token = hs_ring().sign(&Claims::new("alice", NOW, 300)).unwrap();
        let i = pos.index(token.len());
        let mut bytes = token.clone().into_bytes();
        let replacement = c.as_bytes()[0];
        prop_assume!(bytes[i] != replacement);
        bytes[i] = replacement;
        let changed = String::from_utf8(bytes).unwrap();
        prop_assert!(hs_ring().verify(&changed, NOW).is_err());
    }

    #[test]
    fn arbitrary_refresh_tokens_are_refused(s in "(urt1\\.)?[A-Za-z0-9_-]{0,80}") {
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let svc = TokenService::new(Arc::new(KeyFile::generate(Algorithm::HS256).unwrap().ring(VerifyOptions::default()).unwrap()), memory());
        let r = rt.block_on(svc.refresh(&s, NOW));
        prop_assert!(matches!(r, Err(TokenError::Rejected(_))));
    }
}
