//! JWTs for stateless auth (feature `jwt`): a [`KeyRing`] that signs and verifies, key files and
//! rotation, a JWKS document and a [`JwksVerifier`] that follows one, and refresh-token families
//! with reuse detection kept in any [`crate::SessionStore`] ([`TokenService`]).
//!
//! The crypto is `jsonwebtoken` (≥ 10.3, where string-typed `exp` no longer skips validation —
//! CVE-2026-25537) on the aws-lc-rs backend; key generation uses aws-lc-rs directly. Why
//! aws-lc-rs rather than the pure-Rust backend: it builds here with nothing but a C compiler (its
//! `cc` builder needs no cmake, nasm or clang), its RSA signing is constant time (the `rsa` crate
//! the RustCrypto backend uses has the unfixed Marvin timing advisory), and it can generate every
//! key type we issue, so one library does all the cryptography.
//!
//! What the verifier enforces, and why each rule exists:
//!
//! * **The algorithm comes from the key, never from the token.** Every key is stored with its
//!   algorithm; a token's header `alg` must equal it or the token is rejected
//!   ([`Rejection::AlgMismatch`]). That closes "`alg: none`" ([`Rejection::AlgNone`]) and the
//!   HS/RS confusion (an HS256 token "signed" with an RSA or Ed25519 public key used as the HMAC
//!   secret names the public key's `kid` but the wrong algorithm).
//! * **`kid` is required** and must name a known key ([`Rejection::UnknownKid`]); a
//!   [`JwksVerifier`] refetches its JWKS once per interval on an unknown `kid`.
//! * **`exp` is required and must be a number** ([`Rejection::MissingExp`],
//!   [`Rejection::ExpNotANumber`]); `nbf` and `iat` (if present) must be numbers and not in the
//!   future; `iss`/`aud` must match when configured, and a token carrying an `aud` is rejected by
//!   a verifier that expects none (RFC 7519 §4.1.3). Time checks use a small leeway (30 s by
//!   default) and a caller-supplied clock, so tests control time.
//! * **Every rejection has a reason** ([`Rejection`], with a stable [`Rejection::code`]) for the
//!   401's log line; the client only ever learns "401".

mod claims;
mod error;
mod jwks;
mod key;
mod keyfile;
mod keyset;
mod refresh;
mod ring;

use std::fmt;
use std::str::FromStr;

pub use claims::{Claims, VerifyOptions};
pub use error::{JwtError, Rejection};
pub use jwks::{JwksSource, JwksVerifier};
pub use key::{KeyEntry, KeyMaterial, generate};
pub use keyfile::{KEY_FILE_FORMAT, KeyFile, read_key_file, write_key_file};
pub use refresh::{REFRESH_TOKEN_PREFIX, RevocationCheck, TokenError, TokenPair, TokenService};
pub use ring::KeyRing;

/// The signing algorithms Usher issues and accepts. Each key is pinned to exactly one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub enum Algorithm {
    /// Ed25519 signatures (the default): small keys, fast, deterministic.
    #[default]
    EdDSA,
    /// ECDSA on P-256 with SHA-256.
    ES256,
    /// RSASSA-PKCS1-v1_5 with SHA-256 (2048-bit keys when generated here).
    RS256,
    /// HMAC-SHA-256 with a shared secret; never published in a JWKS.
    HS256,
}

impl Algorithm {
    /// Every supported algorithm.
    pub const ALL: [Algorithm; 4] = [Self::EdDSA, Self::ES256, Self::RS256, Self::HS256];

    /// The JOSE name (`"EdDSA"`, `"ES256"`, ...), as in a token header or a JWK's `alg`.
    pub const fn name(self) -> &'static str {
        match self {
            Self::EdDSA => "EdDSA",
            Self::ES256 => "ES256",
            Self::RS256 => "RS256",
            Self::HS256 => "HS256",
        }
    }

    /// Whether the key is a shared secret (verifying needs the signing secret).
    pub const fn is_symmetric(self) -> bool {
        matches!(self, Self::HS256)
    }

    pub(crate) fn to_jwt(self) -> jsonwebtoken::Algorithm {
        match self {
            Self::EdDSA => jsonwebtoken::Algorithm::EdDSA,
            Self::ES256 => jsonwebtoken::Algorithm::ES256,
            Self::RS256 => jsonwebtoken::Algorithm::RS256,
            Self::HS256 => jsonwebtoken::Algorithm::HS256,
        }
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The name is not one of [`Algorithm::ALL`] (matching is exact, as JOSE names are
/// case-sensitive).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unsupported JWT algorithm {0:?} (expected EdDSA, ES256, RS256 or HS256)")]
pub struct UnknownAlgorithm(pub String);

impl FromStr for Algorithm {
    type Err = UnknownAlgorithm;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|a| a.name() == s)
            .ok_or_else(|| UnknownAlgorithm(s.to_owned()))
    }
}

impl serde::Serialize for Algorithm {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

impl<'de> serde::Deserialize<'de> for Algorithm {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Unix seconds from the system clock (0 if the clock is before 1970).
pub(crate) fn system_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn algorithm_names_round_trip_and_are_case_sensitive() {
        for alg in Algorithm::ALL {
            assert_eq!(alg.name().parse::<Algorithm>().unwrap(), alg);
            let json = serde_json::to_string(&alg).unwrap();
            assert_eq!(serde_json::from_str::<Algorithm>(&json).unwrap(), alg);
        }
        assert!("eddsa".parse::<Algorithm>().is_err());
        assert!("none".parse::<Algorithm>().is_err());
        assert_eq!(Algorithm::default(), Algorithm::EdDSA);
    }
}
