//! Accounts and signing in: signup, login, logout, logout everywhere, and `me`.
//!
//! Accounts (name and argon2id hash) are durable and live in the database; being signed in is
//! session state. Signing up does not sign in: the lab seeds thousands of accounts and should not
//! leave a session behind for each. Signing in rotates the session id (session fixation) and
//! keeps anonymous session data such as preferences; signing in as someone else first ends the
//! other user's session, so one user's cart never carries over to another.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};
use usher_session::Session;

use super::body::ApiJson;
use crate::error::ApiError;
use crate::state::{AppState, require_user, unix_now};

/// Longest user name, bytes.
pub const MAX_NAME: usize = 64;
/// Longest password, bytes (argon2 takes any length; this bounds the work per request).
pub const MAX_PASSWORD: usize = 256;

/// `{user, password}` for signup and login.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Credentials {
    /// User name: 1 to 64 of `A-Z a-z 0-9 . _ -`.
    pub user: String,
    /// Password: 1 to 256 bytes.
    pub password: String,
}

/// Checks the shape of credentials (not whether they are right).
pub fn check_credentials(c: &Credentials) -> Result<(), ApiError> {
    let name_ok = !c.user.is_empty()
        && c.user.len() <= MAX_NAME
        && c.user
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if !name_ok {
        return Err(ApiError::invalid(
            "invalid_user",
            format!("user names are 1 to {MAX_NAME} of A-Z a-z 0-9 . _ -"),
        ));
    }
    if c.password.is_empty() || c.password.len() > MAX_PASSWORD {
        return Err(ApiError::invalid(
            "invalid_password",
            format!("passwords are 1 to {MAX_PASSWORD} bytes"),
        ));
    }
    Ok(())
}

/// Creates the account. Shared by the API and the sign-up form.
pub async fn create_account(state: &AppState, c: Credentials) -> Result<(), ApiError> {
    check_credentials(&c)?;
    let hash = state.hasher.hash(c.password).await?;
    state.db.create_user(&c.user, &hash, unix_now()).await?;
    tracing::debug!(user = %c.user, "signed up");
    Ok(())
}

/// Checks the shape of `c` and the password against the database; 401 `bad_credentials`.
/// Shared by session and token sign-in.
pub async fn check_password(state: &AppState, c: Credentials) -> Result<(), ApiError> {
    check_credentials(&c)?;
    let stored = state.db.password_hash(&c.user).await?;
    if !state.hasher.verify(c.password, stored).await? {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "bad_credentials",
            "wrong user name or password",
        ));
    }
    Ok(())
}

/// Checks the password and signs the session in. Shared by the API and the sign-in form.
pub async fn sign_in(state: &AppState, session: &Session, c: Credentials) -> Result<(), ApiError> {
    let user = c.user.clone();
    check_password(state, c).await?;
    if session.user().is_some_and(|u| u != user) {
        session.logout().await?;
    }
    session.login(&user).await?;
    Ok(())
}

/// `{user, server, store}` for a signed-in session.
pub fn me_body(state: &AppState, user: &str) -> Value {
    json!({ "user": user, "server": state.id, "store": state.store_kind, "auth": state.auth.as_str() })
}

/// `POST /api/signup {user, password}` → 201 `{user, server}`; 409 `user_exists`.
pub async fn signup(
    State(state): State<AppState>,
    ApiJson(c): ApiJson<Credentials>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let user = c.user.clone();
    create_account(&state, c).await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({ "user": user, "server": state.id })),
    ))
}

/// `POST /api/login {user, password}` → `{user, server, store}`; 401 `bad_credentials`.
pub async fn login(
    State(state): State<AppState>,
    session: Session,
    ApiJson(c): ApiJson<Credentials>,
) -> Result<Json<Value>, ApiError> {
    let user = c.user.clone();
    sign_in(&state, &session, c).await?;
    Ok(Json(me_body(&state, &user)))
}

/// `GET /api/me` → `{user, server, store}`, or 401 when not signed in (including when this shop
/// does not know the session, as with `--sessions memory` behind a non-sticky balancer).
pub async fn me(State(state): State<AppState>, session: Session) -> Result<Json<Value>, ApiError> {
    let user = require_user(&session)?;
    Ok(Json(me_body(&state, &user)))
}

/// `POST /api/logout` → `{signed_out: true}`; ends this session (idempotent).
pub async fn logout(
    State(state): State<AppState>,
    session: Session,
) -> Result<Json<Value>, ApiError> {
    session.logout().await?;
    Ok(Json(json!({ "signed_out": true, "server": state.id })))
}

/// `POST /api/logout-everywhere` → `{sessions_ended: n}`; ends every session of the user.
pub async fn logout_everywhere(
    State(state): State<AppState>,
    session: Session,
) -> Result<Json<Value>, ApiError> {
    require_user(&session)?;
    let n = session.logout_everywhere().await?;
    Ok(Json(json!({ "sessions_ended": n, "server": state.id })))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(user: &str, password: &str) -> Credentials {
        Credentials {
            user: user.into(),
            password: password.into(),
        }
    }

    #[test]
    fn credential_shapes() {
        assert!(check_credentials(&c("ann.b-c_1", "x")).is_ok());
        assert!(check_credentials(&c(&"a".repeat(MAX_NAME), &"p".repeat(MAX_PASSWORD))).is_ok());
        for (u, p, code) in [
            ("", "x", "invalid_user"),
            ("a b", "x", "invalid_user"),
            ("<script>", "x", "invalid_user"),
            ("ännä", "x", "invalid_user"),
            (&"a".repeat(MAX_NAME + 1), "x", "invalid_user"),
            ("ann", "", "invalid_password"),
            ("ann", &"p".repeat(MAX_PASSWORD + 1), "invalid_password"),
        ] {
            let e = check_credentials(&c(u, p)).unwrap_err();
            assert_eq!((e.status, e.code), (StatusCode::UNPROCESSABLE_ENTITY, code));
        }
    }
}
