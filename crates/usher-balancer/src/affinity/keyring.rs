//! Sealing keys, key rotation and the key file.
//!
//! # Rotation
//!
//! A [`KeyRing`] holds keys oldest first. The **last** key seals every new token; every key in
//! the ring opens tokens. To rotate, append a new key (every replica must get it), wait at least
//! the longest token lifetime, then remove the old key. Each token carries the id of the key
//! that sealed it, so opening never has to try keys one by one.
//!
//! # Key file
//!
//! Plain text, one key per line, oldest first (the last line seals), as written by
//! [`AffinityKey::to_line`] and appended by `usher lb keygen`:
//!
//! ```text
//! # usher affinity keys: oldest first, the last line seals
//! 1 <43 characters: 32 random bytes as base64url, no padding>
//! 2 <43 characters: the newest key, which seals>
//! ```
//!
//! Each line is `<id> <key>`: `id` a decimal `u32`, `key` exactly 32 bytes encoded as base64url
//! without padding (43 characters). Blank lines and lines whose first non-blank character is `#`
//! are ignored. Keep the file readable only by the load balancer's user.
//!
//! # Secrets
//!
//! Secret bytes live in [`zeroize::Zeroizing`] buffers (wiped on drop), and neither `Debug`
//! output nor any error message ever includes key material: parse errors name the line number and
//! the problem, never the offending text.

use std::collections::HashMap;
use std::collections::hash_map::Entry;

use aes_gcm::{Aes256Gcm, KeyInit as _};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use zeroize::Zeroizing;

/// Length of a sealing key in bytes (256 bits).
pub const KEY_LEN: usize = 32;

/// One 256-bit sealing key with its id. `Debug` never shows the secret.
#[derive(Clone)]
pub struct AffinityKey {
    id: u32,
    secret: Zeroizing<[u8; KEY_LEN]>,
    /// The expanded AES key schedule and GHASH key, made once (the `zeroize` feature wipes them).
    cipher: Aes256Gcm,
}

impl std::fmt::Debug for AffinityKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AffinityKey")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl AffinityKey {
    /// A key from its id and secret bytes (which should come from a CSPRNG).
    pub fn from_bytes(id: u32, secret: [u8; KEY_LEN]) -> Self {
        let cipher = Aes256Gcm::new((&secret).into());
        Self {
            id,
            secret: Zeroizing::new(secret),
            cipher,
        }
    }

    /// The key id (written in clear in every token so the right key can be found).
    pub fn id(&self) -> u32 {
        self.id
    }

    /// One line of a key file for this key: `<id> <base64url-no-pad secret>`, no newline.
    ///
    /// The returned string contains the secret; write it to the key file and drop it.
    pub fn to_line(&self) -> String {
        format!(
            "{} {}",
            self.id,
            URL_SAFE_NO_PAD.encode(self.secret.as_slice())
        )
    }

    /// The AEAD instance for this key.
    pub(super) fn cipher(&self) -> &Aes256Gcm {
        &self.cipher
    }

    /// Parses the body of one key-file line (already trimmed, not a comment).
    fn parse_line(line: &str) -> Result<Self, String> {
        let mut fields = line.split_ascii_whitespace();
        let (Some(id), Some(key), None) = (fields.next(), fields.next(), fields.next()) else {
            return Err(format!(
                "expected `<id> <key>` (a decimal id, a space, 32 bytes of base64url), \
                 got {} fields",
                line.split_ascii_whitespace().count()
            ));
        };
        // Never echo a field back: a swapped or mangled line may put the secret anywhere.
        if !id.bytes().all(|b| b.is_ascii_digit()) {
            return Err("id must be a decimal number".to_owned());
        }
        let id: u32 = id
            .parse()
            .map_err(|_| format!("id must be a decimal number from 0 to {}", u32::MAX))?;
        let bytes = Zeroizing::new(URL_SAFE_NO_PAD.decode(key).map_err(|_| {
            "key must be 32 bytes of base64url without padding (A-Z a-z 0-9 - _)".to_owned()
        })?);
        if bytes.len() != KEY_LEN {
            return Err(format!(
                "key must be {KEY_LEN} bytes of base64url, got {} bytes",
                bytes.len()
            ));
        }
        let mut secret = Zeroizing::new([0u8; KEY_LEN]);
        secret.copy_from_slice(&bytes);
        Ok(Self::from_bytes(id, *secret))
    }
}

/// A key ring is empty or holds a duplicate id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyRingError {
    /// No keys.
    #[error("key ring is empty")]
    Empty,
    /// Two keys with one id.
    #[error("duplicate key id {0}")]
    DuplicateId(u32),
}

/// A key file could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("key file line {line}: {message}")]
pub struct KeyFileError {
    /// 1-based line number (0 when the file as a whole is wrong, e.g. holds no keys).
    pub line: usize,
    /// What is wrong with it (never includes key material).
    pub message: String,
}

/// The keys a load balancer accepts; the last one seals.
///
/// `Debug` lists key ids only.
#[derive(Debug)]
pub struct KeyRing {
    /// Oldest first; never empty; ids unique.
    keys: Vec<AffinityKey>,
}

impl KeyRing {
    /// A ring from keys, oldest first; the last key seals.
    pub fn new(keys: Vec<AffinityKey>) -> Result<Self, KeyRingError> {
        if keys.is_empty() {
            return Err(KeyRingError::Empty);
        }
        for (i, key) in keys.iter().enumerate() {
            if keys[..i].iter().any(|k| k.id == key.id) {
                return Err(KeyRingError::DuplicateId(key.id));
            }
        }
        Ok(Self { keys })
    }

    /// Parses a key file (see the module docs for the format).
    pub fn parse(text: &str) -> Result<Self, KeyFileError> {
        let mut keys = Vec::new();
        let mut first_seen: HashMap<u32, usize> = HashMap::new();
        for (index, raw) in text.lines().enumerate() {
            let line = index + 1;
            let body = raw.trim();
            if body.is_empty() || body.starts_with('#') {
                continue;
            }
            let key =
                AffinityKey::parse_line(body).map_err(|message| KeyFileError { line, message })?;
            match first_seen.entry(key.id) {
                Entry::Occupied(first) => {
                    return Err(KeyFileError {
                        line,
                        message: format!(
                            "duplicate key id {} (first used on line {})",
                            key.id,
                            first.get()
                        ),
                    });
                }
                Entry::Vacant(slot) => {
                    slot.insert(line);
                }
            }
            keys.push(key);
        }
        if keys.is_empty() {
            return Err(KeyFileError {
                line: 0,
                message: "no keys".to_owned(),
            });
        }
        Ok(Self { keys })
    }

    /// The whole ring as a key file (oldest first, one [`AffinityKey::to_line`] per line, each
    /// ending in a newline). Contains every secret.
    pub fn to_file(&self) -> String {
        let mut out = String::new();
        for key in &self.keys {
            out.push_str(&key.to_line());
            out.push('\n');
        }
        out
    }

    /// The keys, oldest first; the last one seals.
    pub fn keys(&self) -> &[AffinityKey] {
        &self.keys
    }

    /// Id of the sealing key.
    pub fn sealing_key_id(&self) -> u32 {
        self.sealing_key().id
    }

    /// The sealing key: the last (newest) one.
    pub(super) fn sealing_key(&self) -> &AffinityKey {
        // `new` and `parse` refuse empty rings, and `keys` is never mutated afterwards.
        match self.keys.last() {
            Some(key) => key,
            None => unreachable!("a KeyRing is never empty"),
        }
    }

    /// The key with this id, if the ring holds it.
    pub(super) fn key(&self, id: u32) -> Option<&AffinityKey> {
        // Newest first: almost every token in flight was sealed by the current key.
        self.keys.iter().rev().find(|k| k.id == id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const K1: &str = "1 AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8";

    fn err(text: &str) -> KeyFileError {
        KeyRing::parse(text).expect_err("should not parse")
    }

    #[test]
    fn to_line_round_trips_through_parse() {
        let mut secret = [0u8; KEY_LEN];
        secret
            .iter_mut()
            .enumerate()
            .for_each(|(i, b)| *b = i as u8);
        let key = AffinityKey::from_bytes(1, secret);
        assert_eq!(key.to_line(), K1);
        let a = AffinityKey::from_bytes(7, [0xAB; KEY_LEN]);
        let text = format!("# keys\n\n{K1}\r\n  {}  \n", a.to_line());
        let ring = KeyRing::parse(&text).expect("parses");
        assert_eq!(
            ring.keys().iter().map(AffinityKey::id).collect::<Vec<_>>(),
            [1, 7]
        );
        assert_eq!(ring.sealing_key_id(), 7);
        assert_eq!(*ring.keys()[1].secret, [0xAB; KEY_LEN]);
        let again = KeyRing::parse(&ring.to_file()).expect("to_file parses");
        assert_eq!(again.to_file(), ring.to_file());
    }

    #[test]
    fn new_rejects_empty_and_duplicates() {
        assert_eq!(KeyRing::new(vec![]).map(|_| ()), Err(KeyRingError::Empty));
        let keys = vec![
            AffinityKey::from_bytes(3, [1; 32]),
            AffinityKey::from_bytes(4, [2; 32]),
            AffinityKey::from_bytes(3, [3; 32]),
        ];
        assert_eq!(
            KeyRing::new(keys).map(|_| ()),
            Err(KeyRingError::DuplicateId(3))
        );
    }

    #[test]
    fn parse_errors_name_the_line() {
        let e = err("");
        assert_eq!((e.line, e.message.as_str()), (0, "no keys"));
        assert_eq!(err("# only a comment\n\n   \n").line, 0);
        let e = err(&format!(
            "{K1}\n\n2 AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHg\n"
        ));
        assert_eq!(e.line, 3);
        assert_eq!(e.message, "key must be 32 bytes of base64url, got 31 bytes");
        let e = err("x1 AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8");
        assert_eq!(
            (e.line, e.message.as_str()),
            (1, "id must be a decimal number")
        );
        let e = err("+1 AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8");
        assert_eq!(e.message, "id must be a decimal number");
        let e = err("4294967296 AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8");
        assert!(e.message.contains("from 0 to 4294967295"), "{e}");
        let e = err(&format!("{K1}\n# c\n{K1}"));
        assert_eq!(e.line, 3);
        assert_eq!(e.message, "duplicate key id 1 (first used on line 1)");
        assert!(err("1").message.contains("got 1 fields"));
        assert!(err(&format!("{K1} extra")).message.contains("got 3 fields"));
        // Standard base64 alphabet and padding are refused.
        assert!(
            err("1 AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=")
                .message
                .contains("base64url")
        );
        assert!(
            err("1 +/ECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8")
                .message
                .contains("base64url")
        );
    }

    #[test]
    fn nothing_leaks_secrets() {
        let secret_b64 = "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LXNlY3I";
        let key = AffinityKey::from_bytes(9, [0x5A; KEY_LEN]);
        let ring = KeyRing::new(vec![key]).expect("ring");
        let debug = format!("{ring:?}");
        assert!(debug.contains('9'));
        assert!(
            !debug.contains("90") && !debug.contains("5a") && !debug.contains("5A"),
            "{debug}"
        );
        assert!(
            !debug.contains(&URL_SAFE_NO_PAD.encode([0x5A; KEY_LEN])),
            "{debug}"
        );
        // Errors never echo any field: swapped fields, short key, bad id.
        for line in [
            format!("{secret_b64} 1"),
            format!("1 {}", &secret_b64[..40]),
            format!("1x {secret_b64}"),
            format!("1 {secret_b64} {secret_b64}"),
            format!("1 {secret_b64}!"),
        ] {
            let e = err(&line);
            let shown = format!("{e} {e:?}");
            assert!(!shown.contains(&secret_b64[..20]), "{shown}");
        }
    }
}
