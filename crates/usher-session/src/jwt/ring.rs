//! [`KeyRing`]: one signing key, any number of verification keys, each pinned to its algorithm.

use std::fmt;

use jsonwebtoken::{EncodingKey, Header};
use serde_json::Value;

use super::claims::{Claims, VerifyOptions};
use super::error::{JwtError, Rejection};
use super::key::KeyEntry;
use super::keyset::{KeySet, VerifyKey};

/// Signs with one key and verifies with all of them.
///
/// **Rotation without logging anyone out:** add a new key and make it the signing key, keep the
/// old one as a verification key until the last token it signed has expired (the access-token
/// lifetime, minutes), then drop it. Servers that load the new ring sign with the new key at once
/// and still accept tokens signed by the old one. See `KeyFile::rotate`.
pub struct KeyRing {
    keys: KeySet,
    signer: Option<Signer>,
    options: VerifyOptions,
}

struct Signer {
    header: Header,
    key: EncodingKey,
}

impl fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyRing")
            .field("keys", &self.keys)
            .field("signing_kid", &self.signing_kid())
            .field("options", &self.options)
            .finish()
    }
}

impl KeyRing {
    /// A ring of `entries` signing with `signing_kid` (which must have private material), or a
    /// verify-only ring if `None`. Duplicate `kid`s and unusable keys are errors.
    pub fn new(entries: &[KeyEntry], signing_kid: Option<&str>) -> Result<Self, JwtError> {
        let mut keys = KeySet::default();
        let mut signer = None;
        for entry in entries {
            let loaded = entry.load()?;
            if signing_kid == Some(entry.kid.as_str()) {
                let key = loaded.encoding.ok_or(JwtError::NoSigningKey)?;
                let mut header = Header::new(entry.alg.to_jwt());
                header.kid = Some(entry.kid.clone());
                header.typ = Some("JWT".to_owned());
                signer = Some(Signer { header, key });
            }
            keys.insert(
                &entry.kid,
                VerifyKey::new(entry.alg, loaded.decoding, loaded.jwk),
            )?;
        }
        if signing_kid.is_some() && signer.is_none() {
            return Err(JwtError::NoSigningKey);
        }
        Ok(Self {
            keys,
            signer,
            options: VerifyOptions::default(),
        })
    }

    /// Replaces the claim rules (issuer, audience, leeway).
    pub fn with_options(mut self, options: VerifyOptions) -> Self {
        self.options = options;
        self
    }

    /// The claim rules in force.
    pub fn options(&self) -> &VerifyOptions {
        &self.options
    }

    /// The `kid` new tokens are signed with.
    pub fn signing_kid(&self) -> Option<&str> {
        self.signer.as_ref().and_then(|s| s.header.kid.as_deref())
    }

    /// How many verification keys the ring holds.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether the ring holds no key.
    pub fn is_empty(&self) -> bool {
        self.keys.len() == 0
    }

    /// Signs `claims` with the signing key (header: its `alg`, its `kid`, `typ: JWT`).
    pub fn sign(&self, claims: &Claims) -> Result<String, JwtError> {
        let signer = self.signer.as_ref().ok_or(JwtError::NoSigningKey)?;
        jsonwebtoken::encode(&signer.header, &claims.to_json(), &signer.key).map_err(JwtError::Sign)
    }

    /// Verifies `token` at `now` (Unix seconds): see the module docs for every rule.
    pub fn verify(&self, token: &str, now: u64) -> Result<Claims, Rejection> {
        self.keys.verify(token, &self.options, now)
    }

    /// The public keys as a JWKS document for `GET /.well-known/jwks.json`. Symmetric (HS256)
    /// keys are never included.
    pub fn jwks(&self) -> Value {
        self.keys.jwks()
    }
}
