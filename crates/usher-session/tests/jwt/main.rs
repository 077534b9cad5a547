//! JWT key ring, JWKS and refresh families: every attack vector refused with its reason,
//! rotation, JWKS refetch over a real loopback HTTP server, refresh reuse on shared stores,
//! property tests of the codecs, and interop with PyJWT.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod attacks;
mod interop;
mod jwks;
mod props;
mod refresh;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};
use usher_session::jwt::{Algorithm, Claims, KeyFile, KeyRing, VerifyOptions};

pub const NOW: u64 = 1_800_000_000;

pub fn b64(v: &Value) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).unwrap())
}

pub fn options() -> VerifyOptions {
    VerifyOptions::default()
        .with_issuer("usher")
        .with_audience("shop")
        .with_leeway(5)
}

pub fn claims() -> Claims {
    let mut c = Claims::new("alice", NOW, 300);
    c.iss = Some("usher".into());
    c.aud = vec!["shop".into()];
    c
}

/// A ring holding one key of every algorithm, signing with `signing`.
pub fn ring_of_all(signing: Algorithm) -> (KeyFile, KeyRing) {
    let mut file = KeyFile::generate(Algorithm::EdDSA).unwrap();
    for alg in [Algorithm::ES256, Algorithm::RS256, Algorithm::HS256] {
        file.rotate(alg).unwrap();
    }
    file.signing_kid = file
        .keys
        .iter()
        .find(|k| k.alg == signing)
        .unwrap()
        .kid
        .clone();
    let ring = file.ring(options()).unwrap();
    (file, ring)
}

pub fn kid_of(file: &KeyFile, alg: Algorithm) -> String {
    file.keys.iter().find(|k| k.alg == alg).unwrap().kid.clone()
}

/// Signs `payload` as HS256 with an arbitrary `secret`, naming `kid` — the attacker's tool.
pub fn forge_hs256(kid: &str, secret: &[u8], payload: &Value) -> String {
    let header = b64(&json!({"alg": "HS256", "typ": "JWT", "kid": kid}));
    let input = format!("{header}.{}", b64(payload));
    let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, secret);
    let tag = aws_lc_rs::hmac::sign(&key, input.as_bytes());
    format!("{input}.{}", URL_SAFE_NO_PAD.encode(tag.as_ref()))
}
