//! [`KeySet`]: verification keys by `kid`, the one verification pipeline, and JWKS documents.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::DecodingKey;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk};
use serde_json::{Map, Value};

use super::Algorithm;
use super::claims::{Claims, VerifyOptions};
use super::error::{JwtError, Rejection};
use super::key::public_key;

/// One verification key: its pinned algorithm, the key, and the public JWK if it has one.
pub(crate) struct VerifyKey {
    pub(crate) alg: Algorithm,
    decoding: DecodingKey,
    pub(crate) jwk: Option<Jwk>,
}

impl VerifyKey {
    pub(crate) fn new(alg: Algorithm, decoding: DecodingKey, jwk: Option<Jwk>) -> Self {
        Self { alg, decoding, jwk }
    }
}

/// Verification keys by `kid`.
#[derive(Default)]
pub(crate) struct KeySet {
    keys: HashMap<String, VerifyKey>,
}

impl fmt::Debug for KeySet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut kids: Vec<_> = self.keys.iter().map(|(k, v)| (k, v.alg)).collect();
        kids.sort();
        f.debug_struct("KeySet").field("keys", &kids).finish()
    }
}

impl KeySet {
    pub(crate) fn insert(&mut self, kid: &str, key: VerifyKey) -> Result<(), JwtError> {
        if self.keys.contains_key(kid) {
            return Err(JwtError::DuplicateKid(kid.to_owned()));
        }
        self.keys.insert(kid.to_owned(), key);
        Ok(())
    }

    pub(crate) fn len(&self) -> usize {
        self.keys.len()
    }

    pub(crate) fn contains(&self, kid: &str) -> bool {
        self.keys.contains_key(kid)
    }

    /// The whole pipeline. Order matters: everything that can be decided from the header (and
    /// costs no crypto) is decided first; the signature is then checked with the algorithm of the
    /// key (`jsonwebtoken::crypto::verify`), never one the token chose; only a token whose
    /// signature holds has its payload parsed and its claims checked.
    pub(crate) fn verify(
        &self,
        token: &str,
        opts: &VerifyOptions,
        now: u64,
    ) -> Result<Claims, Rejection> {
        if token.len() > opts.max_token_len {
            return Err(Rejection::Malformed);
        }
        let (message, signature) = token.rsplit_once('.').ok_or(Rejection::Malformed)?;
        let (header, payload) = message.split_once('.').ok_or(Rejection::Malformed)?;
        if payload.contains('.') {
            return Err(Rejection::Malformed);
        }
        let header_json = b64(header)?;
        let header: JoseHeader<'_> =
            serde_json::from_slice(&header_json).map_err(|_| Rejection::Malformed)?;
        let alg = header.alg.ok_or(Rejection::Malformed)?;
        if alg.eq_ignore_ascii_case("none") {
            return Err(Rejection::AlgNone);
        }
        // RFC 7515 §4.1.11: extensions we do not understand must not be ignored.
        if header.crit.is_some() {
            return Err(Rejection::Malformed);
        }
        let kid = header.kid.ok_or(Rejection::UnknownKid)?;
        let key = self.keys.get(kid.as_ref()).ok_or(Rejection::UnknownKid)?;
        if alg != key.alg.name() {
            return Err(Rejection::AlgMismatch);
        }
        match jsonwebtoken::crypto::verify(
            signature,
            message.as_bytes(),
            &key.decoding,
            key.alg.to_jwt(),
        ) {
            Ok(true) => {}
            Ok(false) => return Err(Rejection::BadSignature),
            Err(e) => {
                return Err(match e.kind() {
                    ErrorKind::Base64(_) => Rejection::Malformed,
                    _ => Rejection::BadSignature,
                });
            }
        }
        let claims: Map<String, Value> =
            serde_json::from_slice(&b64(payload)?).map_err(|_| Rejection::Malformed)?;
        Claims::check(claims, opts, now)
    }

    /// The public keys as a JWKS document (`{"keys": [...]}`), sorted by `kid`. HS256 secrets are
    /// never included.
    pub(crate) fn jwks(&self) -> Value {
        let mut keys: Vec<(&String, &Jwk)> = self
            .keys
            .iter()
            .filter_map(|(kid, k)| k.jwk.as_ref().map(|j| (kid, j)))
            .collect();
        keys.sort_by(|a, b| a.0.cmp(b.0));
        let keys: Vec<Value> = keys
            .into_iter()
            .filter_map(|(_, j)| serde_json::to_value(j).ok())
            .collect();
        serde_json::json!({ "keys": keys })
    }

    /// Reads a JWKS document. Keys without a `kid`, with `use` other than `sig`, of an algorithm
    /// we do not support, or symmetric (`kty: oct` — a published secret is no secret) are
    /// skipped; a key without `alg` gets the one algorithm we support for its type and curve.
    pub(crate) fn from_jwks(doc: &[u8]) -> Result<Self, JwtError> {
        #[derive(serde::Deserialize)]
        struct Doc {
            keys: Vec<Value>,
        }
        let doc: Doc = serde_json::from_slice(doc).map_err(JwtError::Document)?;
        let mut set = Self::default();
        for raw in doc.keys {
            let kid = match raw.get("kid") {
                Some(Value::String(k)) if !k.is_empty() => k.clone(),
                _ => {
                    tracing::debug!("JWKS key without kid skipped");
                    continue;
                }
            };
            let Ok(jwk) = serde_json::from_value::<Jwk>(raw.clone()) else {
                tracing::debug!(kid, "unparseable JWKS key skipped");
                continue;
            };
            let alg = match raw.get("alg") {
                Some(Value::String(a)) => a.parse::<Algorithm>().ok(),
                Some(_) => None,
                None => inferred_alg(&jwk),
            };
            let Some(alg) = alg.filter(|a| !a.is_symmetric()) else {
                tracing::debug!(kid, "JWKS key of an unsupported algorithm skipped");
                continue;
            };
            match public_key(&kid, alg, jwk) {
                Ok((decoding, jwk)) => {
                    if set.contains(&kid) {
                        tracing::warn!(kid, "duplicate kid in JWKS; the first one is kept");
                        continue;
                    }
                    set.keys
                        .insert(kid, VerifyKey::new(alg, decoding, Some(jwk)));
                }
                Err(e) => tracing::debug!(kid, error = %e, "JWKS key skipped"),
            }
        }
        Ok(set)
    }
}

fn inferred_alg(jwk: &Jwk) -> Option<Algorithm> {
    match &jwk.algorithm {
        AlgorithmParameters::OctetKeyPair(p) if p.curve == EllipticCurve::Ed25519 => {
            Some(Algorithm::EdDSA)
        }
        AlgorithmParameters::EllipticCurve(p) if p.curve == EllipticCurve::P256 => {
            Some(Algorithm::ES256)
        }
        AlgorithmParameters::RSA(_) => Some(Algorithm::RS256),
        _ => None,
    }
}

/// The JOSE header fields the verifier reads; anything else is ignored (a duplicate field, or
/// one of the wrong type, makes the token malformed).
#[derive(serde::Deserialize)]
struct JoseHeader<'a> {
    #[serde(borrow, default)]
    alg: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    kid: Option<Cow<'a, str>>,
    #[serde(default)]
    crit: Option<serde::de::IgnoredAny>,
}

/// Unpadded base64url (the canonical encoding only), or `Malformed`.
fn b64(segment: &str) -> Result<Vec<u8>, Rejection> {
    URL_SAFE_NO_PAD
        .decode(segment)
        .map_err(|_| Rejection::Malformed)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::jwt::{KeyFile, VerifyOptions};

    #[test]
    fn jwks_documents_are_read_strictly() {
        let file = KeyFile::generate(Algorithm::EdDSA).unwrap();
        let ring = file.ring(VerifyOptions::default()).unwrap();
        let mut ed = ring.jwks()["keys"][0].clone();
        let kid = ed["kid"].as_str().unwrap().to_owned();
        let mut no_alg = ed.clone();
        no_alg.as_object_mut().unwrap().remove("alg");
        no_alg["kid"] = json!("inferred");
        let mut enc = ed.clone();
        enc["use"] = json!("enc");
        enc["kid"] = json!("for-encryption");
        let mut lying = ed.clone();
        lying["alg"] = json!("ES256");
        lying["kid"] = json!("lying");
        let doc = json!({"keys": [
            ed.clone(),
            no_alg,
            enc,
            lying,
            {"kty": "oct", "kid": "secret", "alg": "HS256", "k": "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LTMy"},
            {"kty": "EC", "kid": "p384", "crv": "P-384", "x": "AA", "y": "AA"},
            {"kty": "RSA", "alg": "RS256", "n": "AQAB", "e": "AQAB"},
            {"kty": "weird", "kid": "weird"},
        ]});
        let set = KeySet::from_jwks(doc.to_string().as_bytes()).unwrap();
        assert!(set.contains(&kid));
        assert!(set.contains("inferred"));
        for skipped in ["for-encryption", "lying", "secret", "p384", "weird"] {
            assert!(!set.contains(skipped), "{skipped}");
        }
        assert_eq!(set.len(), 2);
        // A duplicate kid keeps the first key.
        ed["x"] = json!("11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo");
        let doc = json!({"keys": [ring.jwks()["keys"][0].clone(), ed]});
        let set = KeySet::from_jwks(doc.to_string().as_bytes()).unwrap();
        assert_eq!(set.len(), 1);
        let token = ring.sign(&crate::jwt::Claims::new("a", 0, 100)).unwrap();
        assert!(set.verify(&token, &VerifyOptions::default(), 0).is_ok());
        assert!(KeySet::from_jwks(b"{\"nokeys\": 1}").is_err());
        assert!(KeySet::from_jwks(b"[").is_err());
    }
}
