//! Why a token was refused ([`Rejection`]) and what else can fail ([`JwtError`]).

use std::path::PathBuf;

/// Why a token was refused. Every variant means HTTP 401; the variant is for the log line (see
/// [`Rejection::code`]) and must never be sent to the client in detail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
#[non_exhaustive]
pub enum Rejection {
    /// Not a compact JWS: wrong number of segments, bad base64url, header or payload not a JSON
    /// object, a claim of the wrong type, an unsupported `crit` header, or too long.
    #[error("malformed token")]
    Malformed,
    /// The header says `alg: none` (an unsigned token).
    #[error("unsigned token (alg none)")]
    AlgNone,
    /// The header's `alg` is not the algorithm the `kid`'s key is pinned to.
    #[error("token algorithm does not match its key's algorithm")]
    AlgMismatch,
    /// No `kid`, or a `kid` no key has (after a rate-limited refetch, for a JWKS verifier).
    #[error("unknown or missing key id")]
    UnknownKid,
    /// The signature does not verify with the `kid`'s key.
    #[error("bad signature")]
    BadSignature,
    /// No `exp` claim.
    #[error("missing exp claim")]
    MissingExp,
    /// `exp` is present but not a JSON number (a string, `null`, ...).
    #[error("exp claim is not a number")]
    ExpNotANumber,
    /// `nbf` or `iat` is present but not a JSON number.
    #[error("nbf or iat claim is not a number")]
    TimeClaimNotANumber,
    /// `exp` (plus the leeway) has passed.
    #[error("token expired")]
    Expired,
    /// `nbf` or `iat` (minus the leeway) is still in the future.
    #[error("token not yet valid")]
    NotYetValid,
    /// `iss` is missing or not an accepted issuer.
    #[error("wrong issuer")]
    WrongIssuer,
    /// `aud` is missing or names no accepted audience, or is present where none is expected.
    #[error("wrong audience")]
    WrongAudience,
    /// The token's refresh family is gone: logged out, revoked after a reuse, or expired.
    #[error("token revoked")]
    Revoked,
    /// A refresh token that was already rotated was presented again; its family is now revoked.
    #[error("refresh token reused; family revoked")]
    RefreshReused,
    /// A refresh token whose family exists but whose secret matches no generation of it.
    #[error("unknown refresh token")]
    UnknownRefreshToken,
}

impl Rejection {
    /// A short, stable identifier for logs and metrics (`"alg_none"`, `"expired"`, ...).
    pub const fn code(self) -> &'static str {
        match self {
            Self::Malformed => "malformed",
            Self::AlgNone => "alg_none",
            Self::AlgMismatch => "alg_mismatch",
            Self::UnknownKid => "unknown_kid",
            Self::BadSignature => "bad_signature",
            Self::MissingExp => "missing_exp",
            Self::ExpNotANumber => "exp_not_a_number",
            Self::TimeClaimNotANumber => "time_claim_not_a_number",
            Self::Expired => "expired",
            Self::NotYetValid => "not_yet_valid",
            Self::WrongIssuer => "wrong_issuer",
            Self::WrongAudience => "wrong_audience",
            Self::Revoked => "revoked",
            Self::RefreshReused => "refresh_reused",
            Self::UnknownRefreshToken => "unknown_refresh_token",
        }
    }
}

/// A failure that is not a refused token: bad key material, I/O, a JWKS fetch, signing.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum JwtError {
    /// Reading or writing a key file or JWKS file failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A key file or JWKS document is not valid JSON of the documented shape.
    #[error("invalid key document")]
    Document(#[source] serde_json::Error),
    /// A key file has an unknown `format` marker (written by a newer Usher?).
    #[error("unknown key file format {0:?}")]
    UnknownFormat(String),
    /// A key's material does not parse or does not fit its algorithm.
    #[error("key {kid:?} is invalid: {reason}")]
    InvalidKey {
        /// The key's id.
        kid: String,
        /// What is wrong.
        reason: String,
    },
    /// A key's material was rejected by the JWT library.
    #[error("key {kid:?} was rejected")]
    KeyRejected {
        /// The key's id.
        kid: String,
        /// The library's error.
        #[source]
        source: jsonwebtoken::errors::Error,
    },
    /// Two keys share a `kid`.
    #[error("duplicate key id {0:?}")]
    DuplicateKid(String),
    /// The ring has no private key to sign with (or the named signing key is verify-only).
    #[error("no signing key")]
    NoSigningKey,
    /// Key generation failed in the crypto library.
    #[error("key generation failed")]
    KeyGen(#[source] aws_lc_rs::error::Unspecified),
    /// Signing a token failed.
    #[error("signing failed")]
    Sign(#[source] jsonwebtoken::errors::Error),
    /// Fetching a JWKS over HTTP failed (connection, timeout, status, size, ...).
    #[error("fetching JWKS from {url} failed: {reason}")]
    Fetch {
        /// The URL.
        url: String,
        /// What went wrong.
        reason: String,
        /// The underlying error, if any.
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync + 'static>>,
    },
    /// A JWKS URL that is not `http://host[:port]/path` (TLS is not supported here).
    #[error("unsupported JWKS URL {0:?} (only http:// is supported)")]
    BadUrl(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_distinct() {
        let all = [
            Rejection::Malformed,
            Rejection::AlgNone,
            Rejection::AlgMismatch,
            Rejection::UnknownKid,
            Rejection::BadSignature,
            Rejection::MissingExp,
            Rejection::ExpNotANumber,
            Rejection::TimeClaimNotANumber,
            Rejection::Expired,
            Rejection::NotYetValid,
            Rejection::WrongIssuer,
            Rejection::WrongAudience,
            Rejection::Revoked,
            Rejection::RefreshReused,
            Rejection::UnknownRefreshToken,
        ];
        let codes: std::collections::HashSet<_> = all.iter().map(|r| r.code()).collect();
        assert_eq!(codes.len(), all.len());
    }
}
