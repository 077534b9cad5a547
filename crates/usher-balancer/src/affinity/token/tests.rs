//! Unit tests for the token format (property tests live in `tests/token_props.rs`).

use super::*;

const NOW: u64 = 1_700_000_000;

fn key(id: u32, fill: u8) -> AffinityKey {
    AffinityKey::from_bytes(id, [fill; 32])
}

fn ring(keys: Vec<AffinityKey>) -> KeyRing {
    KeyRing::new(keys).expect("valid ring")
}

fn claims(backend: &str) -> Claims {
    Claims {
        backend: BackendId::new(backend).expect("valid id"),
        issued_at: NOW,
        idle_expires_at: NOW + 1800,
        expires_at: NOW + 86_400,
    }
}

fn raw(token: &str) -> Vec<u8> {
    URL_SAFE_NO_PAD.decode(token).expect("base64url")
}

#[test]
fn seal_then_open_round_trips() {
    let r = ring(vec![key(1, 7)]);
    let c = claims("shop-12");
    let token = r.seal(&c, [3; NONCE_LEN]);
    assert_eq!(token.len(), 87, "typical token length");
    assert!(
        token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    );
    assert_eq!(r.open(&token, NOW), Ok((c.clone(), 1)));
    // Deterministic in its inputs; a new nonce gives an unrelated token.
    assert_eq!(r.seal(&c, [3; NONCE_LEN]), token);
    assert_ne!(r.seal(&c, [4; NONCE_LEN]), token);
    // The backend id never appears in clear.
    assert!(!raw(&token).windows(7).any(|w| w == b"shop-12"));
}

#[test]
fn length_bounds_match_the_format() {
    let r = ring(vec![key(1, 7)]);
    let short = r.seal(&claims("a"), [0; NONCE_LEN]);
    let long = r.seal(&claims(&"z".repeat(64)), [0; NONCE_LEN]);
    assert_eq!((short.len(), long.len()), (MIN_TOKEN_LEN, MAX_TOKEN_LEN));
    assert_eq!((MIN_TOKEN_LEN, MAX_TOKEN_LEN), (79, 163));
    assert!(r.open(&short, NOW).is_ok() && r.open(&long, NOW).is_ok());
}

/// Pins version 1 byte for byte: tokens already in browsers must keep opening after any refactor.
#[test]
fn known_answer() {
    let r = ring(vec![key(0x0102_0304, 0x42)]);
    let c = claims("shop-12");
    let token = r.seal(&c, [0x24; NONCE_LEN]);
    let bytes = raw(&token);
    assert_eq!(bytes[..5], [1, 1, 2, 3, 4]);
    assert_eq!(bytes[5..17], [0x24; NONCE_LEN]);
    assert_eq!(token, KNOWN_TOKEN);
    assert_eq!(r.open(KNOWN_TOKEN, NOW), Ok((c, 0x0102_0304)));
}

/// Cross-checked against an independent implementation (Python `cryptography`'s AESGCM with key
/// `0x42 * 32`, nonce `0x24 * 12`, associated data = the 5 header bytes).
const KNOWN_TOKEN: &str =
    "AQECAwQkJCQkJCQkJCQkJCQS4qwumev3DCboIqrYYWKmbPszcNP4qGWwpMxaM5Clk-8OPCoM4-C3uPkrsuMjv48";

#[test]
fn expiry_idle_and_absolute_with_exact_boundaries() {
    let r = ring(vec![key(1, 7)]);
    let c = claims("shop-1");
    let token = r.seal(&c, [9; NONCE_LEN]);
    let idle = c.idle_expires_at;
    assert!(r.open(&token, idle - 1).is_ok());
    assert_eq!(
        r.open(&token, idle),
        Err(OpenError::Expired {
            at: idle,
            claims: c.clone()
        })
    );
    assert_eq!(
        r.open(&token, u64::MAX),
        Err(OpenError::Expired {
            at: idle,
            claims: c.clone()
        })
    );

    // Absolute expiry earlier than idle (the idle window was refreshed near the hard end).
    let c = Claims {
        idle_expires_at: NOW + 500,
        expires_at: NOW + 100,
        ..c
    };
    let token = r.seal(&c, [9; NONCE_LEN]);
    assert!(r.open(&token, NOW + 99).is_ok());
    let expired = OpenError::Expired {
        at: NOW + 100,
        claims: c.clone(),
    };
    assert_eq!(r.open(&token, NOW + 100), Err(expired.clone()));
    assert_eq!(r.open(&token, NOW + 600), Err(expired));
}

#[test]
fn unknown_key_id() {
    let token = ring(vec![key(5, 7)]).seal(&claims("shop-1"), [0; NONCE_LEN]);
    assert_eq!(
        ring(vec![key(6, 7)]).open(&token, NOW),
        Err(OpenError::UnknownKey(5))
    );
}

#[test]
fn rotation_keeps_old_tokens_and_seals_with_the_new_key() {
    let old = ring(vec![key(1, 0x11)]);
    let old_token = old.seal(&claims("shop-1"), [1; NONCE_LEN]);
    let rotated = ring(vec![key(1, 0x11), key(2, 0x22)]);
    assert_eq!(rotated.sealing_key_id(), 2);
    assert_eq!(rotated.open(&old_token, NOW), Ok((claims("shop-1"), 1)));
    let new_token = rotated.seal(&claims("shop-2"), [2; NONCE_LEN]);
    assert_eq!(raw(&new_token)[1..5], 2u32.to_be_bytes());
    assert_eq!(rotated.open(&new_token, NOW), Ok((claims("shop-2"), 2)));
    // Replicas not yet rotated cannot open new tokens (and say why); retiring key 1 drops old ones.
    assert_eq!(old.open(&new_token, NOW), Err(OpenError::UnknownKey(2)));
    let retired = ring(vec![key(2, 0x22)]);
    assert_eq!(retired.open(&old_token, NOW), Err(OpenError::UnknownKey(1)));
    assert!(retired.open(&new_token, NOW).is_ok());
}

#[test]
fn same_key_id_other_secret_is_forged() {
    let ours = ring(vec![key(1, 0x11)]);
    let theirs = ring(vec![key(1, 0x99)]);
    let token = theirs.seal(&claims("shop-1"), [0; NONCE_LEN]);
    assert_eq!(ours.open(&token, NOW), Err(OpenError::Forged));
}

#[test]
fn header_is_authenticated() {
    // Relabelling a token with another key id that the ring holds must not open it.
    let r = ring(vec![key(1, 0x11), key(2, 0x11)]);
    let token = r.seal(&claims("shop-1"), [0; NONCE_LEN]);
    let mut bytes = raw(&token);
    bytes[4] = 1;
    assert_eq!(
        r.open(&URL_SAFE_NO_PAD.encode(&bytes), NOW),
        Err(OpenError::Forged)
    );
    bytes[0] = 2;
    assert_eq!(
        r.open(&URL_SAFE_NO_PAD.encode(&bytes), NOW),
        Err(OpenError::Malformed)
    );
}

#[test]
fn malformed_inputs() {
    let r = ring(vec![key(1, 7)]);
    let token = r.seal(&claims("shop-1"), [0; NONCE_LEN]);
    for bad in [
        String::new(),
        "x".into(),
        "a".repeat(MIN_TOKEN_LEN - 1),
        "a".repeat(MAX_TOKEN_LEN + 1),
        "a".repeat(10_000),
        format!("{token}="),                             // padding
        token.replace('-', "+").replace('_', "/") + "+", // standard alphabet
        format!("{}!", &token[1..]),
        format!("{}é", &token[2..]),
        token[..4 * 20 + 1].to_owned(), // truncated to 4k+1 characters: not base64
    ] {
        assert_eq!(r.open(&bad, NOW), Err(OpenError::Malformed), "{bad:?}");
    }
    // Non-canonical base64 (unused trailing bits set) is refused, so a token has one spelling.
    let last = token.as_bytes()[token.len() - 1];
    let sibling = format!("{}{}", &token[..token.len() - 1], (last + 1) as char);
    assert!(r.open(&sibling, NOW).is_err());
    for cut in 1..token.len() {
        assert!(
            r.open(&token[..token.len() - cut], NOW).is_err(),
            "cut {cut}"
        );
    }
}

#[test]
fn authentic_but_unparsable_plaintext_is_malformed() {
    // Seal a plaintext the encoder would never produce, with the real key and header.
    let k = key(1, 7);
    let r = ring(vec![key(1, 7)]);
    let seal_raw = |plain: &[u8]| {
        let mut bytes = vec![VERSION, 0, 0, 0, 1];
        bytes.extend_from_slice(&[5; NONCE_LEN]);
        let mut body = plain.to_vec();
        let header: [u8; 5] = [VERSION, 0, 0, 0, 1];
        let tag = k
            .cipher()
            .encrypt_in_place_detached(&[5u8; NONCE_LEN].into(), &header, &mut body)
            .expect("seal");
        bytes.extend_from_slice(&body);
        bytes.extend_from_slice(&tag);
        URL_SAFE_NO_PAD.encode(&bytes)
    };
    let mut good = vec![2, b'o', b'k'];
    good.extend_from_slice(&[0xFF; 24]);
    assert!(r.open(&seal_raw(&good), NOW).is_ok(), "control");
    let mut bad_len = good.clone();
    bad_len[0] = 3;
    let mut bad_id = good.clone();
    bad_id[1] = b' ';
    let mut not_utf8 = good.clone();
    not_utf8[1] = 0xC3;
    let mut zero_len = vec![0];
    zero_len.extend_from_slice(&[0xFF; 25]);
    let mut trailing = good.clone();
    trailing.push(0);
    for plain in [bad_len, bad_id, not_utf8, zero_len, trailing] {
        assert_eq!(
            r.open(&seal_raw(&plain), NOW),
            Err(OpenError::Malformed),
            "{plain:?}"
        );
    }
}

#[test]
fn claims_encoding_round_trips() {
    let c = Claims {
        issued_at: 0,
        idle_expires_at: u64::MAX,
        expires_at: 1,
        ..claims("a.b_C-9")
    };
    let mut buf = [0u8; MAX_PLAINTEXT];
    let n = c.encode(&mut buf);
    assert_eq!(n, CLAIMS_FIXED_LEN + 7);
    assert_eq!(Claims::decode(&buf[..n]), Some(c));
    assert_eq!(Claims::decode(&[]), None);
    assert_eq!(Claims::decode(&buf[..n - 1]), None);
}
