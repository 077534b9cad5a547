//! Attack vectors against a `KeyRing`, each refused with its reason; rotation; the JWKS document.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};
use usher_session::jwt::{Algorithm, KeyFile, KeyRing, Rejection};

use super::{NOW, b64, claims, forge_hs256, kid_of, options, ring_of_all};

#[test]
fn every_algorithm_round_trips() {
    for alg in Algorithm::ALL {
        let (file, ring) = ring_of_all(alg);
        let token = ring.sign(&claims()).unwrap();
        let header: Value = serde_json::from_slice(
            &URL_SAFE_NO_PAD
                .decode(token.split('.').next().unwrap())
                .unwrap(),
        )
        .unwrap();
        assert_eq!(header["alg"], json!(alg.name()));
        assert_eq!(header["kid"], json!(kid_of(&file, alg)));
        let back = ring.verify(&token, NOW + 10).unwrap();
        assert_eq!(back, claims(), "{alg}");
    }
}

#[test]
fn alg_none_is_rejected() {
    let (file, ring) = ring_of_all(Algorithm::EdDSA);
    let kid = kid_of(&file, Algorithm::EdDSA);
    let payload = b64(&Value::Object(claims().to_json()));
    for none in ["none", "None", "NONE"] {
        let header = b64(&json!({"alg": none, "typ": "JWT", "kid": kid}));
        for sig in ["", "AAAA"] {
            let token = format!("{header}.{payload}.{sig}");
            assert_eq!(
                ring.verify(&token, NOW),
                Err(Rejection::AlgNone),
                "{none} {sig:?}"
            );
        }
    }
}

#[test]
fn hs256_signed_with_a_public_key_is_rejected() {
    let (file, ring) = ring_of_all(Algorithm::EdDSA);
    let jwks = ring.jwks();
    let payload = Value::Object(claims().to_json());
    for alg in [Algorithm::RS256, Algorithm::ES256, Algorithm::EdDSA] {
        let kid = kid_of(&file, alg);
        let jwk = jwks["keys"]
            .as_array()
            .unwrap()
            .iter()
            .find(|k| k["kid"] == json!(kid))
            .unwrap();
        // Every public form an attacker might feed to HMAC: the JWK text, and the raw key bytes.
        let raw_field = if alg == Algorithm::RS256 { "n" } else { "x" };
        let raw = URL_SAFE_NO_PAD
            .decode(jwk[raw_field].as_str().unwrap())
            .unwrap();
        for secret in [jwk.to_string().into_bytes(), raw] {
            let token = forge_hs256(&kid, &secret, &payload);
            assert_eq!(
                ring.verify(&token, NOW),
                Err(Rejection::AlgMismatch),
                "{alg}"
            );
        }
    }
}

#[test]
fn kid_pointing_to_another_key_is_rejected() {
    let (file, ring) = ring_of_all(Algorithm::EdDSA);
    // A second Ed25519 key, unknown to the verifier except by the kid it borrows.
    let other = KeyFile::generate(Algorithm::EdDSA).unwrap();
    let mut entry = other.keys[0].clone();
    entry.kid = kid_of(&file, Algorithm::EdDSA);
    let impostor = KeyRing::new(&[entry], Some(&kid_of(&file, Algorithm::EdDSA))).unwrap();
    let token = impostor.sign(&claims()).unwrap();
    assert_eq!(ring.verify(&token, NOW), Err(Rejection::BadSignature));

    // A real EdDSA token relabelled with the ES256 key's kid: the algorithm no longer fits.
    let good = ring.sign(&claims()).unwrap();
    let mut parts: Vec<String> = good.split('.').map(str::to_owned).collect();
    parts[0] = b64(&json!({"alg": "EdDSA", "kid": kid_of(&file, Algorithm::ES256)}));
    assert_eq!(
        ring.verify(&parts.join("."), NOW),
        Err(Rejection::AlgMismatch)
    );
    // An HS256 token naming the HS256 key but signed with a guessed secret.
    let forged = forge_hs256(
        &kid_of(&file, Algorithm::HS256),
        b"guessed-secret-guessed-secret-32",
        &Value::Object(claims().to_json()),
    );
    assert_eq!(ring.verify(&forged, NOW), Err(Rejection::BadSignature));
}

#[test]
fn time_claims_are_enforced() {
    let (file, _) = ring_of_all(Algorithm::ES256);
    let ring = file.ring(options()).unwrap();
    let token = ring.sign(&claims()).unwrap();
    assert!(ring.verify(&token, NOW + 304).is_ok(), "within the leeway");
    assert_eq!(ring.verify(&token, NOW + 305), Err(Rejection::Expired));
    let mut early = claims();
    early.nbf = Some(NOW + 60);
    let token = ring.sign(&early).unwrap();
    assert_eq!(ring.verify(&token, NOW), Err(Rejection::NotYetValid));
    assert!(ring.verify(&token, NOW + 56).is_ok());
}

#[test]
fn exp_as_a_string_or_missing_is_rejected() {
    let (file, ring) = ring_of_all(Algorithm::HS256);
    let kid = kid_of(&file, Algorithm::HS256);
    let secret = match &file.keys.iter().find(|k| k.kid == kid).unwrap().material {
        usher_session::jwt::KeyMaterial::Secret(s) => URL_SAFE_NO_PAD.decode(s).unwrap(),
        _ => unreachable!(),
    };
    // Correctly signed, so the only defect is the claim (CVE-2026-25537's shape).
    let mut payload = claims().to_json();
    payload.insert("exp".into(), json!((NOW - 1000).to_string()));
    let token = forge_hs256(&kid, &secret, &Value::Object(payload.clone()));
    assert_eq!(ring.verify(&token, NOW), Err(Rejection::ExpNotANumber));
    payload.insert("exp".into(), json!("9999999999"));
    let token = forge_hs256(&kid, &secret, &Value::Object(payload.clone()));
    assert_eq!(ring.verify(&token, NOW), Err(Rejection::ExpNotANumber));
    payload.remove("exp");
    let token = forge_hs256(&kid, &secret, &Value::Object(payload.clone()));
    assert_eq!(ring.verify(&token, NOW), Err(Rejection::MissingExp));
    payload.insert("exp".into(), json!(NOW + 100));
    payload.insert("nbf".into(), json!("0"));
    let token = forge_hs256(&kid, &secret, &Value::Object(payload));
    assert_eq!(
        ring.verify(&token, NOW),
        Err(Rejection::TimeClaimNotANumber)
    );
}

#[test]
fn tampered_payload_is_rejected() {
    for alg in Algorithm::ALL {
        let (_, ring) = ring_of_all(alg);
        let token = ring.sign(&claims()).unwrap();
        let parts: Vec<&str> = token.split('.').collect();
        let mut evil = claims().to_json();
        evil.insert("sub".into(), json!("admin"));
        let tampered = format!("{}.{}.{}", parts[0], b64(&Value::Object(evil)), parts[2]);
        assert_eq!(
            ring.verify(&tampered, NOW),
            Err(Rejection::BadSignature),
            "{alg}"
        );
        // A signature from another token of the same key does not transplant.
        let mut other = claims();
        other.sub = Some("bob".into());
        let other = ring.sign(&other).unwrap();
        let sig = other.rsplit('.').next().unwrap();
        let spliced = format!("{}.{}.{sig}", parts[0], parts[1]);
        assert_eq!(
            ring.verify(&spliced, NOW),
            Err(Rejection::BadSignature),
            "{alg}"
        );
    }
}

#[test]
fn wrong_issuer_and_audience_are_rejected() {
    let (_, ring) = ring_of_all(Algorithm::EdDSA);
    let mut c = claims();
    c.iss = Some("evil".into());
    assert_eq!(
        ring.verify(&ring.sign(&c).unwrap(), NOW),
        Err(Rejection::WrongIssuer)
    );
    c.iss = None;
    assert_eq!(
        ring.verify(&ring.sign(&c).unwrap(), NOW),
        Err(Rejection::WrongIssuer)
    );
    let mut c = claims();
    c.aud = vec!["bank".into()];
    assert_eq!(
        ring.verify(&ring.sign(&c).unwrap(), NOW),
        Err(Rejection::WrongAudience)
    );
    c.aud.clear();
    assert_eq!(
        ring.verify(&ring.sign(&c).unwrap(), NOW),
        Err(Rejection::WrongAudience)
    );
}

#[test]
fn malformed_and_unknown_kid() {
    let (file, ring) = ring_of_all(Algorithm::EdDSA);
    let token = ring.sign(&claims()).unwrap();
    for bad in [
        "",
        ".",
        "..",
        "garbage",
        "a.b.c",
        &token[..token.len() / 2],
        &format!("{token}.x"),
        &token.replacen('.', "", 1),
        &"A".repeat(20_000),
    ] {
        assert_eq!(
            ring.verify(bad, NOW),
            Err(Rejection::Malformed),
            "{bad:.40}"
        );
    }
    let payload = b64(&Value::Object(claims().to_json()));
    let sig = token.rsplit('.').next().unwrap();
    let no_kid = format!("{}.{payload}.{sig}", b64(&json!({"alg": "EdDSA"})));
    assert_eq!(ring.verify(&no_kid, NOW), Err(Rejection::UnknownKid));
    let unknown = format!(
        "{}.{payload}.{sig}",
        b64(&json!({"alg": "EdDSA", "kid": "nope"}))
    );
    assert_eq!(ring.verify(&unknown, NOW), Err(Rejection::UnknownKid));
    let kid = kid_of(&file, Algorithm::EdDSA);
    let crit = b64(&json!({"alg": "EdDSA", "kid": kid, "crit": ["exp"]}));
    assert_eq!(
        ring.verify(&format!("{crit}.{payload}.{sig}"), NOW),
        Err(Rejection::Malformed)
    );
    let not_obj = format!(
        "{}.{}.{sig}",
        b64(&json!({"alg": "EdDSA", "kid": kid})),
        b64(&json!([1]))
    );
    assert_eq!(ring.verify(&not_obj, NOW), Err(Rejection::BadSignature));
}

#[test]
fn rotation_keeps_old_tokens_valid() {
    let mut file = KeyFile::generate(Algorithm::EdDSA).unwrap();
    let before = file.ring(options()).unwrap();
    let old = before.sign(&claims()).unwrap();
    let new_kid = file.rotate(Algorithm::EdDSA).unwrap();
    let after = file.ring(options()).unwrap();
    assert_eq!(after.signing_kid(), Some(new_kid.as_str()));
    assert!(after.verify(&old, NOW).is_ok(), "old token still verifies");
    let fresh = after.sign(&claims()).unwrap();
    assert!(after.verify(&fresh, NOW).is_ok());
    // The old ring does not know the new key yet (a server that has not reloaded).
    assert_eq!(before.verify(&fresh, NOW), Err(Rejection::UnknownKid));
}

#[test]
fn jwks_publishes_public_keys_only() {
    let (file, ring) = ring_of_all(Algorithm::EdDSA);
    let jwks = ring.jwks();
    let keys = jwks["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 3, "HS256 is never published");
    let text = jwks.to_string();
    assert!(!text.contains(&kid_of(&file, Algorithm::HS256)));
    for k in keys {
        assert_eq!(k["use"], json!("sig"));
        assert!(k.get("d").is_none() && k.get("k").is_none() && k.get("p").is_none());
        let alg: Algorithm = k["alg"].as_str().unwrap().parse().unwrap();
        assert_eq!(k["kid"], json!(kid_of(&file, alg)));
    }
}
