//! [`TokenService`]: short-lived access tokens plus rotating refresh tokens with reuse detection,
//! the refresh families kept in any [`SessionStore`].
//!
//! * **A login starts a family.** The family is one store record under
//!   `SessionKey::derive("jwt-refresh-family", [family id])`, `user` = the subject (so "log out
//!   everywhere" is `delete_user_sessions`), holding the current generation number, the SHA-256
//!   of the current refresh secret and of the last [`TokenService::with_history`] rotated ones.
//! * **Refresh tokens are opaque random secrets, not JWTs:** `urt1.` + base64url(16-byte family id
//!   ‖ 32-byte secret). Only their hash is stored, so a leaked store mints no tokens; a JWT would
//!   add nothing (the store must be consulted on every refresh anyway, to rotate) and would make
//!   the refresh token verifiable — and so replayable — without that check.
//! * **Every refresh rotates:** the presented secret must be the current one; the record is
//!   rewritten with a new secret by compare-and-swap, so of two refreshes racing with the same
//!   token exactly one wins.
//! * **Reuse revokes the family.** A secret that was current once but has been rotated away (a
//!   stolen token used by the thief or by the victim after the other) deletes the family — with a
//!   tombstone, so a request that loaded it just before cannot resurrect it — and every token of
//!   it stops refreshing. Losing the compare-and-swap counts as reuse too: two uses of one token.
//!   A secret the family never had is refused without revoking (anyone who saw an access token
//!   knows the family id; they must not be able to log its owner out).
//! * **Access tokens carry the family id as `sid`.** With [`RevocationCheck::Always`] each
//!   verification loads the family (one store read), so a logout or a detected reuse takes effect
//!   at once on every server; with [`RevocationCheck::Never`] (the default) verification needs no
//!   store and a revoked family's access tokens live out their lifetime (5 min by default).

use std::fmt;
use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Map, Value, json};
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq as _;

use super::claims::Claims;
use super::error::{JwtError, Rejection};
use super::ring::KeyRing;
use crate::data::SessionData;
use crate::error::StoreError;
use crate::id::SessionKey;
use crate::store::{Record, SessionStore};

/// Every refresh token starts with this (a format version, and easy to grep for in leaks).
pub const REFRESH_TOKEN_PREFIX: &str = "urt1.";
const FAMILY_DOMAIN: &str = "jwt-refresh-family";
const FAMILY_ID_LEN: usize = 16;
const SECRET_LEN: usize = 32;

/// Whether verifying an access token also checks that its refresh family is still alive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RevocationCheck {
    /// No store access: revocation takes effect when the access token expires.
    #[default]
    Never,
    /// One store read per verification: revocation takes effect at once.
    Always,
}

/// What a login or refresh hands the client.
#[derive(Clone, PartialEq, Eq)]
pub struct TokenPair {
    /// The signed JWT for `Authorization: Bearer`.
    pub access_token: String,
    /// The opaque refresh token (single use).
    pub refresh_token: String,
    /// The access token's lifetime in seconds.
    pub expires_in: u64,
    /// The family id (also the access token's `sid`).
    pub family: String,
}

impl fmt::Debug for TokenPair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenPair")
            .field("expires_in", &self.expires_in)
            .field("family", &self.family)
            .finish_non_exhaustive()
    }
}

/// Why a [`TokenService`] operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TokenError {
    /// The token is refused (401); the reason is for the log.
    #[error("token rejected: {0}")]
    Rejected(#[from] Rejection),
    /// The store failed (503: retry later).
    #[error("token store unavailable")]
    Store(#[source] StoreError),
    /// Signing or key trouble (500).
    #[error("token issuing failed")]
    Jwt(#[source] JwtError),
}

/// Issues and refreshes token pairs; see the module docs.
#[derive(Debug, Clone)]
pub struct TokenService {
    ring: Arc<KeyRing>,
    store: Arc<dyn SessionStore>,
    access_ttl: u64,
    refresh_ttl: u64,
    family_ttl: u64,
    history: usize,
    revocation: RevocationCheck,
    issuer: Option<String>,
    audience: Option<String>,
}

struct Parsed {
    family: [u8; FAMILY_ID_LEN],
    secret: [u8; SECRET_LEN],
}

fn parse_refresh(token: &str) -> Option<Parsed> {
    let body = token.strip_prefix(REFRESH_TOKEN_PREFIX)?;
    let mut raw = [0u8; FAMILY_ID_LEN + SECRET_LEN];
    // 48 bytes encode to exactly 64 characters; decode_slice rejects anything longer.
    if body.len() != 64 || URL_SAFE_NO_PAD.decode_slice(body, &mut raw).ok()? != raw.len() {
        return None;
    }
    let (f, s) = raw.split_at(FAMILY_ID_LEN);
    Some(Parsed {
        family: f.try_into().ok()?,
        secret: s.try_into().ok()?,
    })
}

fn hash_hex(secret: &[u8]) -> String {
    Sha256::digest(secret)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn random<const N: usize>() -> Result<[u8; N], TokenError> {
    let mut b = [0u8; N];
    aws_lc_rs::rand::fill(&mut b).map_err(|e| TokenError::Jwt(JwtError::KeyGen(e)))?;
    Ok(b)
}

fn family_key(family: &[u8]) -> SessionKey {
    SessionKey::derive(FAMILY_DOMAIN, &[family])
}

fn ct_eq(a: &str, b: &str) -> bool {
    a.as_bytes().ct_eq(b.as_bytes()).into()
}

impl TokenService {
    /// Tokens signed by `ring`, families in `store`. Defaults: access tokens 5 min, refresh
    /// tokens 14 days without use, families 30 days at most, 32 rotated secrets remembered,
    /// [`RevocationCheck::Never`].
    pub fn new(ring: Arc<KeyRing>, store: Arc<dyn SessionStore>) -> Self {
        Self {
            ring,
            store,
            access_ttl: 300,
            refresh_ttl: 14 * 86_400,
            family_ttl: 30 * 86_400,
            history: 32,
            revocation: RevocationCheck::Never,
            issuer: None,
            audience: None,
        }
    }

    /// Access-token lifetime in seconds.
    pub fn with_access_ttl(mut self, secs: u64) -> Self {
        self.access_ttl = secs.max(1);
        self
    }

    /// A refresh token dies after this many seconds unused.
    pub fn with_refresh_ttl(mut self, secs: u64) -> Self {
        self.refresh_ttl = secs.max(1);
        self
    }

    /// A family (a login) dies this many seconds after it started, used or not.
    pub fn with_family_ttl(mut self, secs: u64) -> Self {
        self.family_ttl = secs.max(1);
        self
    }

    /// How many rotated-away secrets are remembered for reuse detection.
    pub fn with_history(mut self, n: usize) -> Self {
        self.history = n.max(1);
        self
    }

    /// Whether access-token verification checks the family in the store.
    pub fn with_revocation_check(mut self, check: RevocationCheck) -> Self {
        self.revocation = check;
        self
    }

    /// `iss` for issued tokens (pair with the ring's `VerifyOptions::with_issuer`).
    pub fn with_issuer(mut self, iss: impl Into<String>) -> Self {
        self.issuer = Some(iss.into());
        self
    }

    /// `aud` for issued tokens (pair with `VerifyOptions::with_audience`).
    pub fn with_audience(mut self, aud: impl Into<String>) -> Self {
        self.audience = Some(aud.into());
        self
    }

    /// The key ring tokens are signed and verified with.
    pub fn ring(&self) -> &KeyRing {
        &self.ring
    }

    /// Starts a family for `sub` and returns its first pair. `extra` claims are copied into
    /// every access token of the family.
    pub async fn login(
        &self,
        sub: &str,
        extra: Map<String, Value>,
        now: u64,
    ) -> Result<TokenPair, TokenError> {
        let family = random::<FAMILY_ID_LEN>()?;
        let secret = random::<SECRET_LEN>()?;
        let mut data = SessionData::new();
        data.insert("sub", json!(sub));
        data.insert("gen", json!(1));
        data.insert("cur", json!(hash_hex(&secret)));
        data.insert("prev", json!([]));
        data.insert("claims", Value::Object(extra));
        let idle = self.refresh_ttl.min(self.family_ttl);
        let record = Record::new(data, Some(sub.to_owned()), now, idle, self.family_ttl);
        self.store
            .save(&family_key(&family), &record, None, now)
            .await
            .map_err(TokenError::Store)?;
        self.pair(&record.data, &family, &secret, now)
    }

    fn pair(
        &self,
        data: &SessionData,
        family: &[u8; FAMILY_ID_LEN],
        secret: &[u8; SECRET_LEN],
        now: u64,
    ) -> Result<TokenPair, TokenError> {
        let fid = URL_SAFE_NO_PAD.encode(family);
        let mut claims = Claims::new(
            data.get("sub").and_then(Value::as_str).unwrap_or_default(),
            now,
            self.access_ttl,
        );
        claims.iss = self.issuer.clone();
        claims.aud = self.audience.iter().cloned().collect();
        claims.sid = Some(fid.clone());
        claims.jti = Some(URL_SAFE_NO_PAD.encode(random::<12>()?));
        if let Some(Value::Object(extra)) = data.get("claims") {
            claims.extra = extra.clone();
        }
        let access_token = self.ring.sign(&claims).map_err(TokenError::Jwt)?;
        let mut raw = [0u8; FAMILY_ID_LEN + SECRET_LEN];
        raw[..FAMILY_ID_LEN].copy_from_slice(family);
        raw[FAMILY_ID_LEN..].copy_from_slice(secret);
        let refresh_token = format!("{REFRESH_TOKEN_PREFIX}{}", URL_SAFE_NO_PAD.encode(raw));
        Ok(TokenPair {
            access_token,
            refresh_token,
            expires_in: self.access_ttl,
            family: fid,
        })
    }

    /// Exchanges a refresh token for a new pair, rotating it; a reused token revokes its family.
    pub async fn refresh(&self, refresh_token: &str, now: u64) -> Result<TokenPair, TokenError> {
        let parsed = parse_refresh(refresh_token).ok_or(Rejection::Malformed)?;
        let key = family_key(&parsed.family);
        let record = self
            .store
            .load(&key, now)
            .await
            .map_err(TokenError::Store)?
            .ok_or(Rejection::Revoked)?;
        let presented = hash_hex(&parsed.secret);
        let current = record.data.get("cur").and_then(Value::as_str).unwrap_or("");
        let prev: Vec<String> = record
            .data
            .get("prev")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        if !ct_eq(&presented, current) {
            if prev.iter().any(|p| ct_eq(&presented, p)) {
                return Err(self.revoke_reused(&key, &record, now).await);
            }
            return Err(Rejection::UnknownRefreshToken.into());
        }
        let secret = random::<SECRET_LEN>()?;
        let mut next = record.clone();
        let generation = record.data.get("gen").and_then(Value::as_u64).unwrap_or(0);
        let mut prev = prev;
        prev.push(presented);
        let excess = prev.len().saturating_sub(self.history);
        prev.drain(..excess);
        next.data.insert("gen", json!(generation.saturating_add(1)));
        next.data.insert("cur", json!(hash_hex(&secret)));
        next.data.insert("prev", json!(prev));
        next.last_seen_at = now;
        next.idle_expires_at = now.saturating_add(self.refresh_ttl).min(next.expires_at);
        match self
            .store
            .save(&key, &next, Some(record.version), now)
            .await
        {
            Ok(_) => self.pair(&next.data, &parsed.family, &secret, now),
            Err(StoreError::Conflict { .. }) => Err(self.revoke_reused(&key, &record, now).await),
            Err(StoreError::Deleted | StoreError::NotFound) => Err(Rejection::Revoked.into()),
            Err(e) => Err(TokenError::Store(e)),
        }
    }

    async fn revoke_reused(&self, key: &SessionKey, record: &Record, now: u64) -> TokenError {
        tracing::warn!(
            user = record.user.as_deref().unwrap_or(""),
            family = ?key,
            "refresh token reuse detected; revoking the family"
        );
        match self.store.delete(key, now).await {
            Ok(_) => Rejection::RefreshReused.into(),
            Err(e) => TokenError::Store(e),
        }
    }

    /// Verifies an access token; with [`RevocationCheck::Always`] also that its family lives.
    pub async fn verify_access(&self, token: &str, now: u64) -> Result<Claims, TokenError> {
        let claims = self.ring.verify(token, now)?;
        if self.revocation == RevocationCheck::Always {
            let sid = claims.sid.as_deref().ok_or(Rejection::Revoked)?;
            let family = URL_SAFE_NO_PAD
                .decode(sid)
                .map_err(|_| Rejection::Malformed)?;
            let live = self
                .store
                .load(&family_key(&family), now)
                .await
                .map_err(TokenError::Store)?;
            if live.is_none() {
                return Err(Rejection::Revoked.into());
            }
        }
        Ok(claims)
    }

    /// Logs out one device: deletes the family of `refresh_token`. Returns whether it was live.
    pub async fn logout(&self, refresh_token: &str, now: u64) -> Result<bool, TokenError> {
        let parsed = parse_refresh(refresh_token).ok_or(Rejection::Malformed)?;
        self.store
            .delete(&family_key(&parsed.family), now)
            .await
            .map_err(TokenError::Store)
    }

    /// Logs out the family an access token's `sid` names.
    pub async fn logout_family(&self, sid: &str, now: u64) -> Result<bool, TokenError> {
        let family = URL_SAFE_NO_PAD
            .decode(sid)
            .map_err(|_| Rejection::Malformed)?;
        self.store
            .delete(&family_key(&family), now)
            .await
            .map_err(TokenError::Store)
    }

    /// Logs `sub` out everywhere: deletes every record of the user in the store — all refresh
    /// families, and cookie sessions too if they share the store. Returns how many died.
    pub async fn logout_everywhere(&self, sub: &str, now: u64) -> Result<usize, TokenError> {
        self.store
            .delete_user_sessions(sub, now)
            .await
            .map_err(TokenError::Store)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refresh_token_codec() {
        let family = [7u8; FAMILY_ID_LEN];
        let secret = [9u8; SECRET_LEN];
        let mut raw = [0u8; 48];
        raw[..16].copy_from_slice(&family);
        raw[16..].copy_from_slice(&secret);
        let tok = format!("{REFRESH_TOKEN_PREFIX}{}", URL_SAFE_NO_PAD.encode(raw));
        let p = parse_refresh(&tok).unwrap();
        assert_eq!(p.family, family);
        assert_eq!(p.secret, secret);
        assert!(parse_refresh(&tok[1..]).is_none());
        assert!(parse_refresh(&format!("{tok}A")).is_none());
        assert!(parse_refresh(&tok[..tok.len() - 1]).is_none());
        assert!(parse_refresh("urt1.").is_none());
        assert!(parse_refresh("").is_none());
        assert!(parse_refresh(&tok.replace("urt1.", "urt2.")).is_none());
    }
}
