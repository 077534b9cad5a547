//! Signing in with tokens (`--auth jwt`): login, refresh, logout, logout everywhere, `me` and the
//! JWKS document. Signup is shared with session mode.
//!
//! Login answers `{access_token, refresh_token, expires_in, token_type, user, server, store,
//! auth}` and sets the same tokens as HttpOnly cookies (see [`crate::auth`]), so API clients use
//! the body and browsers or cookie-jar clients need do nothing. A refresh rotates the refresh
//! token; presenting an already-rotated one revokes the whole family (a stolen token was used),
//! which is answered like every other refusal: 401 `invalid_token`, the cookies cleared, the
//! reason in the log.

use axum::Json;
use axum::extract::{Extension, Request, State};
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Map, Value, json};
use usher_session::jwt::{TokenError, TokenPair};

use super::auth::{Credentials, check_password, me_body};
use super::body::ApiJson;
use crate::auth::{Caller, JwtAuth, REFRESH_COOKIE, cookie_value};
use crate::error::ApiError;
use crate::state::{AppState, unix_now};

fn now() -> u64 {
    u64::try_from(unix_now()).unwrap_or(0)
}

fn pair_response(state: &AppState, auth: &JwtAuth, user: &str, pair: &TokenPair) -> Response {
    let mut body = me_body(state, user);
    body["access_token"] = Value::from(pair.access_token.as_str());
    body["refresh_token"] = Value::from(pair.refresh_token.as_str());
    body["expires_in"] = Value::from(pair.expires_in);
    body["token_type"] = Value::from("Bearer");
    let mut res = Json(body).into_response();
    auth.set_cookies(res.headers_mut(), pair);
    // Tokens must never be cached by anything between us and the client.
    res.headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    res
}

/// `POST /api/login {user, password}` → the token pair (body and cookies); 401
/// `bad_credentials`.
pub async fn login(
    State(state): State<AppState>,
    ApiJson(c): ApiJson<Credentials>,
) -> Result<Response, ApiError> {
    let auth = state.jwt()?;
    let user = c.user.clone();
    check_password(&state, c).await?;
    let pair = auth.tokens.login(&user, Map::new(), now()).await?;
    tracing::debug!(%user, "token login");
    Ok(pair_response(&state, auth, &user, &pair))
}

/// `{refresh_token}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RefreshBody {
    /// The refresh token from login or the last refresh.
    pub refresh_token: String,
}

/// The refresh token from the JSON body if one is sent (with the usual body checks), else from
/// the refresh cookie.
async fn refresh_token(req: Request) -> Result<String, ApiError> {
    if req.headers().contains_key(CONTENT_TYPE) {
        let ApiJson(b) =
            <ApiJson<RefreshBody> as axum::extract::FromRequest<()>>::from_request(req, &())
                .await?;
        return Ok(b.refresh_token);
    }
    cookie_value(req.headers(), REFRESH_COOKIE)
        .map(str::to_owned)
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::UNAUTHORIZED,
                "no_refresh_token",
                "send {\"refresh_token\": …} as JSON or the refresh cookie",
            )
        })
}

/// `POST /api/token/refresh` (body `{refresh_token}` or the cookie) → a new pair; the old
/// refresh token is spent. 401 `invalid_token` (cookies cleared) for a bad, spent or revoked one.
pub async fn refresh(State(state): State<AppState>, req: Request) -> Result<Response, ApiError> {
    let auth = state.jwt()?;
    let token = refresh_token(req).await?;
    match auth.tokens.refresh(&token, now()).await {
        Ok(pair) => {
            let user = auth
                .tokens
                .ring()
                .verify(&pair.access_token, now())
                .ok()
                .and_then(|c| c.sub)
                .unwrap_or_default();
            Ok(pair_response(&state, auth, &user, &pair))
        }
        Err(e @ TokenError::Rejected(_)) => {
            let mut res = ApiError::from(e).into_response();
            auth.clear_cookies(res.headers_mut());
            Ok(res)
        }
        Err(e) => Err(e.into()),
    }
}

fn signed_out(auth: &JwtAuth, body: Value) -> Response {
    let mut res = Json(body).into_response();
    auth.clear_cookies(res.headers_mut());
    res
}

/// `POST /api/logout` → `{signed_out: true}`: revokes the access token's refresh family (every
/// server refuses its refresh token at once, and its access tokens too with
/// `--jwt-revocation always`) and clears the cookies. Idempotent.
pub async fn logout(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
) -> Result<Response, ApiError> {
    let auth = state.jwt()?;
    if let Caller::User { sid: Some(sid), .. } = &caller {
        auth.tokens.logout_family(sid, now()).await?;
    }
    let body = json!({ "signed_out": true, "server": state.id });
    Ok(signed_out(auth, body))
}

/// `POST /api/logout-everywhere` → `{sessions_ended}`: revokes every family of the user.
pub async fn logout_everywhere(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
) -> Result<Response, ApiError> {
    let auth = state.jwt()?;
    let user = caller.require()?;
    let n = auth.tokens.logout_everywhere(&user, now()).await?;
    let body = json!({ "sessions_ended": n, "server": state.id });
    Ok(signed_out(auth, body))
}

/// `GET /api/me` → `{user, server, store, auth}`; 401.
pub async fn me(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
) -> Result<Json<Value>, ApiError> {
    let user = caller.require()?;
    let mut body = me_body(&state, &user);
    if let Ok(auth) = state.jwt() {
        body["revocation"] = Value::from(match auth.revocation() {
            usher_session::jwt::RevocationCheck::Always => "always",
            _ => "never",
        });
    }
    Ok(Json(body))
}

/// `GET /.well-known/jwks.json` → the public keys (HS256 secrets never appear).
pub async fn jwks(State(state): State<AppState>) -> Result<Response, ApiError> {
    let auth = state.jwt()?;
    let mut headers = HeaderMap::new();
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("max-age=60"));
    Ok((headers, Json(auth.tokens.ring().jwks())).into_response())
}
