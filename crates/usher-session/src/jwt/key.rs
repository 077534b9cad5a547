//! Key entries: what a key file holds per key, [`generate`], and turning an entry into the
//! `jsonwebtoken` keys that sign and verify.

use std::fmt;

use aws_lc_rs::encoding::{AsDer as _, Pkcs8V1Der};
use aws_lc_rs::rsa::KeySize;
use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, Ed25519KeyPair, RsaKeyPair,
};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, PublicKeyUse};
use jsonwebtoken::{DecodingKey, EncodingKey};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use zeroize::Zeroize;

use super::error::JwtError;
use super::{Algorithm, system_now};

/// HS256 secrets shorter than this are refused (RFC 7518 §3.2: at least the hash size).
pub const MIN_HMAC_SECRET_LEN: usize = 32;

/// One key of a key file: an id, the one algorithm it may be used with, and its material.
#[derive(Clone, Serialize, Deserialize, PartialEq)]
#[serde(try_from = "RawEntry", into = "RawEntry")]
pub struct KeyEntry {
    /// The key id tokens name in their `kid` header.
    pub kid: String,
    /// The only algorithm this key signs or verifies with.
    pub alg: Algorithm,
    /// When the key was made (Unix seconds), for operators deciding what to retire.
    pub created_at: u64,
    /// The key itself.
    pub material: KeyMaterial,
}

/// The file form of a [`KeyEntry`]: exactly one of the three material fields, no unknown fields
/// (a misspelt field must not silently leave a key without material).
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEntry {
    kid: String,
    alg: Algorithm,
    #[serde(default)]
    created_at: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    private_key_pem: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    secret: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    public_jwk: Option<Value>,
}

impl TryFrom<RawEntry> for KeyEntry {
    type Error = String;

    fn try_from(mut raw: RawEntry) -> Result<Self, String> {
        let material = match (
            raw.private_key_pem.take(),
            raw.secret.take(),
            raw.public_jwk.take(),
        ) {
            (Some(p), None, None) => KeyMaterial::PrivateKeyPem(p),
            (None, Some(s), None) => KeyMaterial::Secret(s),
            (None, None, Some(j)) => KeyMaterial::PublicJwk(j),
            _ => {
                return Err(format!(
                    "key {:?} needs exactly one of private_key_pem, secret, public_jwk",
                    raw.kid
                ));
            }
        };
        Ok(Self {
            kid: std::mem::take(&mut raw.kid),
            alg: raw.alg,
            created_at: raw.created_at,
            material,
        })
    }
}

impl Drop for RawEntry {
    fn drop(&mut self) {
        if let Some(p) = &mut self.private_key_pem {
            p.zeroize();
        }
        if let Some(s) = &mut self.secret {
            s.zeroize();
        }
    }
}

impl From<KeyEntry> for RawEntry {
    fn from(e: KeyEntry) -> Self {
        let (private_key_pem, secret, public_jwk) = match &e.material {
            KeyMaterial::PrivateKeyPem(p) => (Some(p.clone()), None, None),
            KeyMaterial::Secret(s) => (None, Some(s.clone()), None),
            KeyMaterial::PublicJwk(j) => (None, None, Some(j.clone())),
        };
        Self {
            kid: e.kid.clone(),
            alg: e.alg,
            created_at: e.created_at,
            private_key_pem,
            secret,
            public_jwk,
        }
    }
}

impl fmt::Debug for KeyEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyEntry")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .field("created_at", &self.created_at)
            .field("material", &self.material)
            .finish()
    }
}

/// A key's material: one of three fields in the key file.
#[derive(Clone, PartialEq)]
pub enum KeyMaterial {
    /// EdDSA, ES256, RS256: an unencrypted PKCS#8 private key in PEM (`BEGIN PRIVATE KEY`), the
    /// same bytes `openssl genpkey` writes. Signs and verifies.
    PrivateKeyPem(String),
    /// HS256: the shared secret, unpadded base64url, at least 32 bytes decoded.
    Secret(String),
    /// EdDSA, ES256, RS256: only the public JWK — verifies, cannot sign. What a retired key
    /// becomes once its private half is destroyed.
    PublicJwk(Value),
}

impl fmt::Debug for KeyMaterial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::PrivateKeyPem(_) => "PrivateKeyPem(<redacted>)",
            Self::Secret(_) => "Secret(<redacted>)",
            Self::PublicJwk(_) => "PublicJwk",
        })
    }
}

impl Drop for KeyMaterial {
    fn drop(&mut self) {
        match self {
            Self::PrivateKeyPem(s) | Self::Secret(s) => s.zeroize(),
            Self::PublicJwk(_) => {}
        }
    }
}

/// A new key for `alg` with a fresh random `kid`: Ed25519, P-256 or RSA-2048 private keys from
/// aws-lc-rs, or 32 random bytes for HS256. This is what `usher shop keygen` writes.
pub fn generate(alg: Algorithm) -> Result<KeyEntry, JwtError> {
    let material = match alg {
        Algorithm::EdDSA => {
            let kp = Ed25519KeyPair::generate().map_err(JwtError::KeyGen)?;
            let der: Pkcs8V1Der<'_> = kp.as_der().map_err(JwtError::KeyGen)?;
            KeyMaterial::PrivateKeyPem(pem("PRIVATE KEY", der.as_ref()))
        }
        Algorithm::ES256 => {
            let kp = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING)
                .map_err(JwtError::KeyGen)?;
            let der = kp.to_pkcs8v1().map_err(JwtError::KeyGen)?;
            KeyMaterial::PrivateKeyPem(pem("PRIVATE KEY", der.as_ref()))
        }
        Algorithm::RS256 => {
            let kp = RsaKeyPair::generate(KeySize::Rsa2048).map_err(JwtError::KeyGen)?;
            let der: Pkcs8V1Der<'_> = kp.as_der().map_err(JwtError::KeyGen)?;
            KeyMaterial::PrivateKeyPem(pem("PRIVATE KEY", der.as_ref()))
        }
        Algorithm::HS256 => {
            let mut secret = [0u8; 32];
            aws_lc_rs::rand::fill(&mut secret).map_err(JwtError::KeyGen)?;
            let encoded = URL_SAFE_NO_PAD.encode(secret);
            secret.zeroize();
            KeyMaterial::Secret(encoded)
        }
    };
    let mut id = [0u8; 9];
    aws_lc_rs::rand::fill(&mut id).map_err(JwtError::KeyGen)?;
    Ok(KeyEntry {
        kid: format!(
            "{}-{}",
            alg.name().to_ascii_lowercase(),
            URL_SAFE_NO_PAD.encode(id)
        ),
        alg,
        created_at: system_now(),
        material,
    })
}

/// PEM armour: base64 in 64-column lines between BEGIN/END lines.
fn pem(label: &str, der: &[u8]) -> String {
    let b64 = STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// An entry made usable: how to verify, maybe how to sign, and its public JWK (asymmetric only).
pub(crate) struct Loaded {
    pub(crate) decoding: DecodingKey,
    pub(crate) encoding: Option<EncodingKey>,
    pub(crate) jwk: Option<Jwk>,
}

impl KeyEntry {
    pub(crate) fn load(&self) -> Result<Loaded, JwtError> {
        let kid = &self.kid;
        let rejected = |source| JwtError::KeyRejected {
            kid: kid.clone(),
            source,
        };
        if self.kid.is_empty() {
            return Err(invalid(kid, "empty kid"));
        }
        match (&self.material, self.alg) {
            (KeyMaterial::Secret(s), Algorithm::HS256) => {
                let mut bytes = URL_SAFE_NO_PAD
                    .decode(s)
                    .map_err(|_| invalid(kid, "secret is not unpadded base64url"))?;
                if bytes.len() < MIN_HMAC_SECRET_LEN {
                    bytes.zeroize();
                    return Err(invalid(kid, "HS256 secret shorter than 32 bytes"));
                }
                let loaded = Loaded {
                    decoding: DecodingKey::from_secret(&bytes),
                    encoding: Some(EncodingKey::from_secret(&bytes)),
                    jwk: None,
                };
                bytes.zeroize();
                Ok(loaded)
            }
            (KeyMaterial::Secret(_), _) => Err(invalid(kid, "a secret is only for HS256")),
            (_, Algorithm::HS256) => Err(invalid(kid, "HS256 needs a `secret`")),
            (KeyMaterial::PrivateKeyPem(pem), alg) => {
                let pem = pem.as_bytes();
                let encoding = match alg {
                    Algorithm::EdDSA => EncodingKey::from_ed_pem(pem),
                    Algorithm::ES256 => EncodingKey::from_ec_pem(pem),
                    _ => EncodingKey::from_rsa_pem(pem),
                }
                .map_err(rejected)?;
                let jwk = Jwk::from_encoding_key(&encoding, alg.to_jwt()).map_err(rejected)?;
                let (decoding, jwk) = public_key(kid, alg, jwk)?;
                Ok(Loaded {
                    decoding,
                    encoding: Some(encoding),
                    jwk: Some(jwk),
                })
            }
            (KeyMaterial::PublicJwk(v), alg) => {
                let jwk: Jwk = serde_json::from_value(v.clone()).map_err(JwtError::Document)?;
                let (decoding, jwk) = public_key(kid, alg, jwk)?;
                Ok(Loaded {
                    decoding,
                    encoding: None,
                    jwk: Some(jwk),
                })
            }
        }
    }
}

fn invalid(kid: &str, reason: &str) -> JwtError {
    JwtError::InvalidKey {
        kid: kid.to_owned(),
        reason: reason.to_owned(),
    }
}

/// Checks that a public JWK is the kind of key `alg` needs (never a symmetric one), then returns
/// the verifying key and the JWK as published: `kid`, `alg` and `use: sig` set.
pub(crate) fn public_key(
    kid: &str,
    alg: Algorithm,
    mut jwk: Jwk,
) -> Result<(DecodingKey, Jwk), JwtError> {
    let fits = match (&jwk.algorithm, alg) {
        (AlgorithmParameters::OctetKeyPair(p), Algorithm::EdDSA) => {
            p.curve == EllipticCurve::Ed25519
        }
        (AlgorithmParameters::EllipticCurve(p), Algorithm::ES256) => p.curve == EllipticCurve::P256,
        (AlgorithmParameters::RSA(_), Algorithm::RS256) => true,
        _ => false,
    };
    if !fits {
        return Err(invalid(
            kid,
            "the key's type or curve does not fit its algorithm",
        ));
    }
    if let Some(stated) = jwk.common.key_algorithm
        && stated != alg.to_jwt().into()
    {
        return Err(invalid(
            kid,
            "the JWK's alg differs from the key's algorithm",
        ));
    }
    if jwk
        .common
        .public_key_use
        .as_ref()
        .is_some_and(|u| *u != PublicKeyUse::Signature)
    {
        return Err(invalid(kid, "the JWK is not for signatures"));
    }
    let decoding = DecodingKey::from_jwk(&jwk).map_err(|source| JwtError::KeyRejected {
        kid: kid.to_owned(),
        source,
    })?;
    jwk.common.key_id = Some(kid.to_owned());
    jwk.common.key_algorithm = Some(alg.to_jwt().into());
    jwk.common.public_key_use = Some(PublicKeyUse::Signature);
    Ok((decoding, jwk))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generate_every_algorithm_and_load_it() {
        for alg in Algorithm::ALL {
            let k = generate(alg).unwrap();
            assert_eq!(k.alg, alg);
            assert!(k.kid.starts_with(&alg.name().to_ascii_lowercase()));
            let loaded = k.load().unwrap();
            assert!(loaded.encoding.is_some());
            assert_eq!(loaded.jwk.is_none(), alg.is_symmetric());
            if let KeyMaterial::PrivateKeyPem(p) = &k.material {
                assert!(p.starts_with("-----BEGIN PRIVATE KEY-----\n"));
            }
            assert!(!format!("{k:?}").contains("BEGIN"), "Debug leaks the key");
        }
        assert_ne!(
            generate(Algorithm::EdDSA).unwrap().kid,
            generate(Algorithm::EdDSA).unwrap().kid
        );
    }

    #[test]
    fn material_must_fit_the_algorithm() {
        let ed = generate(Algorithm::EdDSA).unwrap();
        let mut wrong = ed.clone();
        wrong.alg = Algorithm::ES256;
        assert!(wrong.load().is_err());
        wrong.alg = Algorithm::HS256;
        assert!(wrong.load().is_err());
        let hs = generate(Algorithm::HS256).unwrap();
        let mut wrong = hs.clone();
        wrong.alg = Algorithm::EdDSA;
        assert!(wrong.load().is_err());
        let short = KeyEntry {
            material: KeyMaterial::Secret(URL_SAFE_NO_PAD.encode([7u8; 16])),
            ..hs
        };
        assert!(matches!(short.load(), Err(JwtError::InvalidKey { .. })));
        // A public JWK of the Ed key, claimed to be RS256, is refused.
        let jwk = serde_json::to_value(ed.load().unwrap().jwk.unwrap()).unwrap();
        let pubonly = KeyEntry {
            material: KeyMaterial::PublicJwk(jwk.clone()),
            alg: Algorithm::EdDSA,
            ..ed.clone()
        };
        let loaded = pubonly.load().unwrap();
        assert!(loaded.encoding.is_none());
        let lying = KeyEntry {
            material: KeyMaterial::PublicJwk(jwk),
            alg: Algorithm::RS256,
            ..ed
        };
        assert!(lying.load().is_err());
    }
}
