//! Key names. Session, tombstone and update-lock keys carry the session's hex in a hash tag
//! (`<prefix>s:{<hex>}`, `<prefix>t:{<hex>}`, `<prefix>l:{<hex>}`), so on a Redis Cluster all
//! three live in one slot and one script may touch them together, while different sessions
//! spread over every slot. The user index (`<prefix>u:<user>`) is a key of its own.

use std::fmt::Write as _;

use crate::id::SessionKey;

/// The key names of one store (its prefix).
#[derive(Debug, Clone)]
pub(super) struct Keys {
    prefix: String,
}

impl Keys {
    /// Key names under `prefix` (checked by the caller to hold no braces).
    pub(super) fn new(prefix: String) -> Self {
        Self { prefix }
    }

    pub(super) fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The session hash.
    pub(super) fn session(&self, key: &SessionKey) -> String {
        self.session_of_hex(&hex(key))
    }

    pub(super) fn session_of_hex(&self, hex: &str) -> String {
        format!("{}{hex}{TAIL}", self.session_head())
    }

    /// The tombstone.
    pub(super) fn tombstone(&self, key: &SessionKey) -> String {
        self.tombstone_of_hex(&hex(key))
    }

    pub(super) fn tombstone_of_hex(&self, hex: &str) -> String {
        format!("{}{hex}{TAIL}", self.tombstone_head())
    }

    /// The field-update lock.
    pub(super) fn lock(&self, key: &SessionKey) -> String {
        format!("{}l:{{{}{TAIL}", self.prefix, hex(key))
    }

    /// The user's index of session hexes.
    pub(super) fn user(&self, user: &str) -> String {
        format!("{}u:{user}", self.prefix)
    }

    /// What comes before the hex in a session key.
    pub(super) fn session_head(&self) -> String {
        format!("{}s:{{", self.prefix)
    }

    /// What comes before the hex in a tombstone key.
    pub(super) fn tombstone_head(&self) -> String {
        format!("{}t:{{", self.prefix)
    }

    /// `SCAN MATCH` pattern of the session (`'s'`) or tombstone (`'t'`) keys.
    pub(super) fn pattern(&self, kind: &str) -> String {
        format!("{}{kind}:*", glob_escape(&self.prefix))
    }
}

/// What follows the hex in session, tombstone and lock keys (closes the hash tag).
pub(super) const TAIL: &str = "}";

/// Lowercase hex of a session key.
pub(super) fn hex(key: &SessionKey) -> String {
    let mut s = String::with_capacity(SessionKey::LEN * 2);
    for b in key.as_bytes() {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// The session key of a stored hex string; `None` if it is not one.
pub(super) fn parse_hex(s: &str) -> Option<SessionKey> {
    let bytes = s.as_bytes();
    if bytes.len() != SessionKey::LEN * 2 {
        return None;
    }
    let mut out = [0u8; SessionKey::LEN];
    for (i, pair) in bytes.chunks_exact(2).enumerate() {
        let hi = char::from(pair[0]).to_digit(16)?;
        let lo = char::from(pair[1]).to_digit(16)?;
        out[i] = u8::try_from(hi * 16 + lo).ok()?;
    }
    Some(SessionKey::from_bytes(out))
}

/// Escapes glob characters for `SCAN MATCH`.
fn glob_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::SessionId;

    #[test]
    fn hex_round_trip() {
        let key = SessionId::random().key();
        let h = hex(&key);
        assert_eq!(h.len(), 64);
        assert_eq!(parse_hex(&h), Some(key));
        assert_eq!(parse_hex("zz"), None);
        assert_eq!(parse_hex(&"g".repeat(64)), None);
    }

    #[test]
    fn glob_is_escaped() {
        assert_eq!(glob_escape("a*b?[c]\\"), "a\\*b\\?\\[c\\]\\\\");
    }

    #[test]
    fn per_session_keys_share_one_hash_tag() {
        let keys = Keys::new("p:".into());
        let key = SessionId::random().key();
        let tag = format!("{{{}}}", hex(&key));
        for k in [keys.session(&key), keys.tombstone(&key), keys.lock(&key)] {
            assert!(k.starts_with("p:") && k.ends_with(&tag), "{k}");
        }
        assert_eq!(keys.session(&key), keys.session_of_hex(&hex(&key)));
        assert_eq!(keys.tombstone(&key), keys.tombstone_of_hex(&hex(&key)));
        assert_eq!(keys.user("ann"), "p:u:ann");
        assert_eq!(keys.pattern("s"), "p:s:*");
    }
}
