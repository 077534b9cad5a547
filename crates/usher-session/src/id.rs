//! Session ids and the hashed keys stores index them by.
//!
//! A [`SessionId`] is the secret the client holds (in a cookie): 256 bits from a CSPRNG, rendered
//! as 43 characters of unpadded URL-safe base64. Stores never see it: every [`crate::SessionStore`]
//! operation takes the [`SessionKey`], the SHA-256 of the id's bytes, so a leaked store (a copied
//! SQLite file, a memory dump of the index) does not hand out live session ids.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::CryptoRng;
use sha2::{Digest, Sha256};
use zeroize::Zeroize;

/// A session id: the bearer secret a client presents. 256 random bits.
///
/// `Debug` does not print the secret and the bytes are zeroed on drop. There is deliberately no
/// `Display`: rendering the id is an explicit [`SessionId::encode`], so it does not end up in a log
/// line by accident.
#[derive(Clone, PartialEq, Eq)]
pub struct SessionId([u8; SessionId::LEN]);

impl SessionId {
    /// Length of the id in bytes (256 bits).
    pub const LEN: usize = 32;
    /// Length of the encoded id in characters (unpadded URL-safe base64 of [`Self::LEN`] bytes).
    pub const ENCODED_LEN: usize = 43;

    /// A new id drawn from `rng`, which must be a cryptographically secure generator.
    pub fn generate<R: CryptoRng + ?Sized>(rng: &mut R) -> Self {
        let mut bytes = [0u8; Self::LEN];
        rng.fill_bytes(&mut bytes);
        Self(bytes)
    }

    /// A new id from the thread-local CSPRNG (`rand::rng()`, ChaCha seeded from the OS).
    pub fn random() -> Self {
        Self::generate(&mut rand::rng())
    }

    /// Parses the encoded form produced by [`SessionId::encode`]. Anything else (wrong length,
    /// padding, characters outside the URL-safe alphabet) is rejected.
    pub fn parse(encoded: &str) -> Result<Self, InvalidSessionId> {
        if encoded.len() != Self::ENCODED_LEN {
            return Err(InvalidSessionId);
        }
        let mut bytes = [0u8; Self::LEN];
        match URL_SAFE_NO_PAD.decode_slice(encoded.as_bytes(), &mut bytes) {
            Ok(Self::LEN) => Ok(Self(bytes)),
            _ => {
                bytes.zeroize();
                Err(InvalidSessionId)
            }
        }
    }

    /// The id as 43 characters of unpadded URL-safe base64, for a cookie or header value.
    pub fn encode(&self) -> String {
        URL_SAFE_NO_PAD.encode(self.0)
    }

    /// The key stores index this session by: SHA-256 of the id's bytes.
    pub fn key(&self) -> SessionKey {
        SessionKey(Sha256::digest(self.0).into())
    }
}

impl fmt::Debug for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SessionId(<redacted>)")
    }
}

impl Drop for SessionId {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

/// A string that is not an encoded [`SessionId`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("not a session id")]
pub struct InvalidSessionId;

/// The at-rest identity of a session: SHA-256 of its [`SessionId`].
///
/// Not a secret (it cannot be turned back into the id), so `Debug` prints a short hex prefix.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionKey([u8; SessionKey::LEN]);

impl SessionKey {
    /// Length of the key in bytes.
    pub const LEN: usize = 32;

    /// A key from its raw bytes (as read back from a store).
    pub const fn from_bytes(bytes: [u8; Self::LEN]) -> Self {
        Self(bytes)
    }

    /// The raw bytes, as written to a store.
    pub const fn as_bytes(&self) -> &[u8; Self::LEN] {
        &self.0
    }

    /// A key for a record that is not a cookie session (a refresh-token family, an idempotency
    /// record, ...): SHA-256 over a domain separator and `parts`.
    ///
    /// Every input is length-prefixed (8-byte big-endian), so `("ab", ["c"])` and `("a", ["bc"])`
    /// hash differently, and so do different part boundaries. The `domain` keeps the record kinds
    /// apart from each other and from session keys (which hash 32 raw id bytes with no prefix),
    /// so one store can hold them all without collisions.
    pub fn derive(domain: &str, parts: &[&[u8]]) -> Self {
        let mut h = Sha256::new();
        h.update(b"usher-session/derive/v1\0");
        h.update((domain.len() as u64).to_be_bytes());
        h.update(domain.as_bytes());
        h.update((parts.len() as u64).to_be_bytes());
        for part in parts {
            h.update((part.len() as u64).to_be_bytes());
            h.update(part);
        }
        Self(h.finalize().into())
    }
}

impl fmt::Debug for SessionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SessionKey(")?;
        for b in &self.0[..6] {
            write!(f, "{b:02x}")?;
        }
        f.write_str("…)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encode_parse_round_trip() {
        let id = SessionId::random();
        let s = id.encode();
        assert_eq!(s.len(), SessionId::ENCODED_LEN);
        assert!(
            s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        );
        let back = SessionId::parse(&s).unwrap();
        assert_eq!(back, id);
        assert_eq!(back.key(), id.key());
    }

    #[test]
    fn ids_are_distinct_and_keys_differ_from_ids() {
        let a = SessionId::random();
        let b = SessionId::random();
        assert_ne!(a, b);
        assert_ne!(a.key(), b.key());
        assert_ne!(a.key().as_bytes(), &a.0);
    }

    #[test]
    fn parse_rejects_bad_input() {
        let good = SessionId::random().encode();
        assert_eq!(SessionId::parse(""), Err(InvalidSessionId));
        assert_eq!(SessionId::parse(&good[1..]), Err(InvalidSessionId));
        assert_eq!(SessionId::parse(&format!("{good}=")), Err(InvalidSessionId));
        let plus = format!("+{}", &good[1..]);
        assert_eq!(SessionId::parse(&plus), Err(InvalidSessionId));
        // 43 chars whose last char carries non-zero trailing bits are not canonical.
        let mut noncanonical = "A".repeat(42);
        noncanonical.push('B');
        assert_eq!(SessionId::parse(&noncanonical), Err(InvalidSessionId));
    }

    #[test]
    fn derive_separates_domains_and_part_boundaries() {
        let a = SessionKey::derive("idem", &[b"alice", b"k1"]);
        assert_eq!(a, SessionKey::derive("idem", &[b"alice", b"k1"]));
        assert_ne!(a, SessionKey::derive("refresh", &[b"alice", b"k1"]));
        assert_ne!(a, SessionKey::derive("idem", &[b"alicek1"]));
        assert_ne!(a, SessionKey::derive("idem", &[b"alic", b"ek1"]));
        assert_ne!(
            SessionKey::derive("ab", &[b"c"]),
            SessionKey::derive("a", &[b"bc"])
        );
        assert_ne!(
            SessionKey::derive("x", &[]),
            SessionKey::derive("x", &[b""])
        );
        let id = SessionId::random();
        assert_ne!(SessionKey::derive("", &[&id.0]), id.key());
    }

    #[test]
    fn debug_hides_the_secret() {
        let id = SessionId::random();
        let dbg = format!("{id:?}");
        assert!(!dbg.contains(&id.encode()));
        assert_eq!(dbg, "SessionId(<redacted>)");
        assert!(format!("{:?}", id.key()).starts_with("SessionKey("));
    }
}
