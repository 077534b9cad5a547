//! JWT authentication for `--auth jwt`: the token service, how a request's token is found and
//! checked ([`authenticate`]), and the cookies that carry tokens for browsers and cookie-jar
//! clients.
//!
//! A request proves who it is with `Authorization: Bearer <access token>` or, failing that, the
//! `usher_at` cookie (HttpOnly, `Path=/`). Both are accepted because API clients send headers
//! while browsers — and the lab's virtual users, which only keep a cookie jar — send cookies.
//! The refresh token travels in the JSON body or the `usher_rt` cookie, scoped to
//! `Path=/api/token` so it is sent only where it is used.
//!
//! [`authenticate`] never refuses a request by itself: it records a [`Caller`] — a user, nobody,
//! or a rejected token — and the routes that need a user refuse with 401. That keeps `login`,
//! `signup` and `token/refresh` usable with a stale cookie still in the jar. Each rejection is
//! logged once with its reason code ([`usher_session::jwt::Rejection::code`]); the client only
//! learns `invalid_token`.

pub mod keys;

use std::sync::Arc;
use std::time::Duration;

use axum::extract::Request;
use axum::http::header::{AUTHORIZATION, COOKIE, SET_COOKIE};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use usher_session::SessionStore;
use usher_session::jwt::{
    KeyFile, KeyRing, RevocationCheck, TokenError, TokenPair, TokenService, VerifyOptions,
};

use crate::config::JwtSettings;
use crate::error::{ApiError, ShopError};

/// The access-token cookie.
pub const ACCESS_COOKIE: &str = "usher_at";
/// The refresh-token cookie.
pub const REFRESH_COOKIE: &str = "usher_rt";
/// Where the refresh cookie is sent.
pub const REFRESH_PATH: &str = "/api/token";
/// `iss` of every token the shop issues (and demands).
pub const ISSUER: &str = "usher-shop";
/// `aud` of every token the shop issues (and demands).
pub const AUDIENCE: &str = "usher-shop-api";
/// Refresh tokens die after this long unused (the token service's default).
pub const REFRESH_TTL: Duration = Duration::from_secs(14 * 86_400);

/// Who sent the request, as [`authenticate`] found it (a request extension in jwt mode).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// A valid access token for `user`, of refresh family `sid`.
    User {
        /// The token's subject.
        user: String,
        /// The refresh family (for logout).
        sid: Option<String>,
    },
    /// No token at all.
    Anonymous,
    /// A token that failed verification (the reason is logged).
    Rejected,
}

impl Caller {
    /// The signed-in user, if any.
    pub fn user(&self) -> Option<&str> {
        match self {
            Self::User { user, .. } => Some(user),
            _ => None,
        }
    }

    /// The signed-in user, or 401 (`invalid_token` for a bad token, else `not_signed_in`).
    pub fn require(&self) -> Result<String, ApiError> {
        match self {
            Self::User { user, .. } => Ok(user.clone()),
            Self::Anonymous => Err(ApiError::not_signed_in()),
            Self::Rejected => Err(invalid_token()),
        }
    }
}

/// 401 `invalid_token`.
pub fn invalid_token() -> ApiError {
    ApiError::new(
        StatusCode::UNAUTHORIZED,
        "invalid_token",
        "the access token is not valid; refresh it (POST /api/token/refresh) or sign in again",
    )
}

/// The token service plus cookie settings. One per shop.
#[derive(Debug)]
pub struct JwtAuth {
    /// Issues, refreshes, verifies and revokes.
    pub tokens: TokenService,
    secure: bool,
    revocation: RevocationCheck,
}

impl JwtAuth {
    /// Loads (or creates) the keys `settings` name and builds the token service over `store`.
    pub fn open(
        settings: &JwtSettings,
        store: Arc<dyn SessionStore>,
        secure: bool,
    ) -> Result<Self, ShopError> {
        let file = match &settings.keys {
            Some(path) => {
                let (file, origin) =
                    keys::load_or_create(path, settings.generate_alg).map_err(|source| {
                        ShopError::Keys {
                            path: path.display().to_string(),
                            source,
                        }
                    })?;
                if origin == keys::Origin::Created {
                    tracing::info!(path = %path.display(), kid = %file.signing_kid, "created JWT key file");
                }
                file
            }
            None => {
                tracing::warn!(
                    "no --jwt-keys: signing with a random key; other shops will refuse this shop's tokens and a restart signs everyone out"
                );
                KeyFile::generate(settings.generate_alg).map_err(|source| ShopError::Keys {
                    path: "(random key)".to_owned(),
                    source,
                })?
            }
        };
        let ring = file
            .ring(
                VerifyOptions::default()
                    .with_issuer(ISSUER)
                    .with_audience(AUDIENCE),
            )
            .map_err(|source| ShopError::Keys {
                path: settings
                    .keys
                    .as_ref()
                    .map_or_else(String::new, |p| p.display().to_string()),
                source,
            })?;
        Ok(Self::with_ring(Arc::new(ring), store, settings, secure))
    }

    /// A token service over an existing ring.
    pub fn with_ring(
        ring: Arc<KeyRing>,
        store: Arc<dyn SessionStore>,
        settings: &JwtSettings,
        secure: bool,
    ) -> Self {
        let tokens = TokenService::new(ring, store)
            .with_access_ttl(settings.access_ttl.as_secs())
            .with_refresh_ttl(REFRESH_TTL.as_secs())
            .with_revocation_check(settings.revocation)
            .with_issuer(ISSUER)
            .with_audience(AUDIENCE);
        Self {
            tokens,
            secure,
            revocation: settings.revocation,
        }
    }

    fn cookie(&self, name: &str, value: &str, path: &str, max_age: u64) -> HeaderValue {
        let secure = if self.secure { "; Secure" } else { "" };
        let v = format!(
            "{name}={value}; Path={path}; Max-Age={max_age}; HttpOnly; SameSite=Lax{secure}"
        );
        // Tokens are base64url and dots, always valid header bytes.
        HeaderValue::from_str(&v).unwrap_or_else(|_| HeaderValue::from_static(""))
    }

    /// `Set-Cookie`s carrying `pair`.
    pub fn set_cookies(&self, headers: &mut HeaderMap, pair: &TokenPair) {
        let at = self.cookie(ACCESS_COOKIE, &pair.access_token, "/", pair.expires_in);
        let rt = self.cookie(
            REFRESH_COOKIE,
            &pair.refresh_token,
            REFRESH_PATH,
            REFRESH_TTL.as_secs(),
        );
        headers.append(SET_COOKIE, at);
        headers.append(SET_COOKIE, rt);
    }

    /// `Set-Cookie`s deleting both token cookies.
    pub fn clear_cookies(&self, headers: &mut HeaderMap) {
        headers.append(SET_COOKIE, self.cookie(ACCESS_COOKIE, "", "/", 0));
        headers.append(SET_COOKIE, self.cookie(REFRESH_COOKIE, "", REFRESH_PATH, 0));
    }

    /// Whether access tokens are checked against the store.
    pub fn revocation(&self) -> RevocationCheck {
        self.revocation
    }
}

/// The value of cookie `name` in the request's `Cookie` headers.
pub fn cookie_value<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim())
        .filter(|v| !v.is_empty())
}

/// The access token: `Authorization: Bearer` first, else the access cookie.
pub fn access_token(headers: &HeaderMap) -> Option<&str> {
    let bearer = headers
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, token) = v.trim().split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
        });
    bearer.or_else(|| cookie_value(headers, ACCESS_COOKIE))
}

/// Middleware: verifies the request's access token and stores the [`Caller`] in the request's
/// extensions. A store outage during the revocation check is a 503 (the token cannot be
/// judged); everything else is left to the route.
pub async fn authenticate(auth: Arc<JwtAuth>, mut req: Request, next: Next) -> Response {
    let caller = match access_token(req.headers()) {
        None => Caller::Anonymous,
        Some(token) => {
            let now = u64::try_from(crate::state::unix_now()).unwrap_or(0);
            match auth.tokens.verify_access(token, now).await {
                Ok(claims) => match claims.sub {
                    Some(user) => Caller::User {
                        user,
                        sid: claims.sid,
                    },
                    None => Caller::Rejected,
                },
                Err(TokenError::Rejected(r)) => {
                    tracing::info!(reason = r.code(), path = %req.uri().path(), "access token rejected");
                    Caller::Rejected
                }
                Err(e) => return ApiError::from(e).into_response(),
            }
        }
    };
    req.extensions_mut().insert(caller);
    next.run(req).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_come_from_bearer_first_then_the_cookie() {
        let mut h = HeaderMap::new();
        assert_eq!(access_token(&h), None);
        h.insert(
            COOKIE,
            HeaderValue::from_static("a=1; usher_at=tok.c; usher_rt=r"),
        );
        assert_eq!(access_token(&h), Some("tok.c"));
        assert_eq!(cookie_value(&h, REFRESH_COOKIE), Some("r"));
        h.insert(AUTHORIZATION, HeaderValue::from_static("Bearer tok.b"));
        assert_eq!(access_token(&h), Some("tok.b"));
        h.insert(AUTHORIZATION, HeaderValue::from_static("Basic abc"));
        assert_eq!(access_token(&h), Some("tok.c"), "other schemes are ignored");
        h.insert(COOKIE, HeaderValue::from_static("usher_at="));
        assert_eq!(cookie_value(&h, ACCESS_COOKIE), None);
    }

    #[test]
    fn callers_map_to_401_codes() {
        assert_eq!(
            Caller::Anonymous.require().unwrap_err().code,
            "not_signed_in"
        );
        assert_eq!(
            Caller::Rejected.require().unwrap_err().code,
            "invalid_token"
        );
        let c = Caller::User {
            user: "ann".into(),
            sid: None,
        };
        assert_eq!(c.require().unwrap(), "ann");
    }
}
