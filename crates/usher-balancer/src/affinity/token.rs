//! Sealed affinity token. SKELETON: public API fixed, bodies being written.

use crate::backend::BackendId;

/// Nonce length (XChaCha20-Poly1305).
pub const NONCE_LEN: usize = 24;

/// One 256-bit sealing key with its id. `Debug` never shows the secret.
pub struct AffinityKey {
    id: u32,
    secret: zeroize::Zeroizing<[u8; 32]>,
}

impl std::fmt::Debug for AffinityKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AffinityKey").field("id", &self.id).finish_non_exhaustive()
    }
}

impl AffinityKey {
    /// A key from its id and secret bytes.
    pub fn from_bytes(id: u32, secret: [u8; 32]) -> Self {
        Self { id, secret: zeroize::Zeroizing::new(secret) }
    }
    /// The key id (written in clear in every token so the right key can be found).
    pub fn id(&self) -> u32 {
        self.id
    }
    /// One line of a key file for this key.
    pub fn to_line(&self) -> String {
        let _ = &self.secret;
        todo!()
    }
}

/// What an affinity token says. Times are Unix seconds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claims {
    /// The backend the client is pinned to.
    pub backend: BackendId,
    /// When the binding was first made.
    pub issued_at: u64,
    /// Expires if not refreshed by this time (sliding idle expiry).
    pub idle_expires_at: u64,
    /// Hard end of the binding, never extended.
    pub expires_at: u64,
}

/// Why a token could not be opened. None of these is a client error: the proxy ignores the token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OpenError {
    /// Not base64url, wrong version, or wrong length.
    #[error("malformed token")]
    Malformed,
    /// Sealed with a key id this ring does not hold.
    #[error("unknown key id {0}")]
    UnknownKey(u32),
    /// Authentication failed: tampered, or sealed by someone else.
    #[error("token failed authentication")]
    Forged,
    /// Authentic but past its idle or absolute expiry.
    #[error("token expired at {at}")]
    Expired {
        /// Unix seconds when it expired.
        at: u64,
        /// The claims, for logging and `explain`.
        claims: Claims,
    },
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
    /// 1-based line number.
    pub line: usize,
    /// What is wrong with it.
    pub message: String,
}

/// The keys a load balancer accepts; the last one seals.
#[derive(Debug)]
pub struct KeyRing {
    _todo: Vec<AffinityKey>,
}

impl KeyRing {
    /// A ring from keys, oldest first; the last key seals.
    pub fn new(keys: Vec<AffinityKey>) -> Result<Self, KeyRingError> {
        let _ = keys;
        todo!()
    }
    /// Parses a key file (see module docs for the format).
    pub fn parse(text: &str) -> Result<Self, KeyFileError> {
        let _ = text;
        todo!()
    }
    /// Id of the sealing key.
    pub fn sealing_key_id(&self) -> u32 {
        todo!()
    }
    /// Seals claims into a cookie-safe token.
    pub fn seal(&self, claims: &Claims, nonce: [u8; NONCE_LEN]) -> String {
        let _ = (claims, nonce);
        todo!()
    }
    /// Opens a token, checking authenticity and expiry at `now` (Unix seconds).
    /// On success also returns the id of the key that opened it.
    pub fn open(&self, token: &str, now: u64) -> Result<(Claims, u32), OpenError> {
        let _ = (token, now);
        todo!()
    }
}
