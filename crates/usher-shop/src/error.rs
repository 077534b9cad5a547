//! Errors: [`ApiError`] (one request went wrong: a status and a JSON body) and [`ShopError`] (the
//! shop could not start).
//!
//! Every API error has the same shape, `{"error": "<stable code>", "message": "<for humans>"}`,
//! plus optional details, so clients branch on `error` and people read `message`. Session errors
//! map through [`usher_session::SessionError::status`] (the session tier's one mapping), keeping
//! `Retry-After` when the store is down. Server-side failures are logged with their source
//! chain here, once, and the client only sees a code.

use std::time::Duration;

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};
use usher_session::jwt::TokenError;
use usher_session::{SessionError, StoreError};

use crate::db::DbError;
use crate::password::PasswordError;

/// A failed request.
#[derive(Debug)]
pub struct ApiError {
    /// The response status.
    pub status: StatusCode,
    /// Stable machine-readable code (`error` in the body).
    pub code: &'static str,
    /// Human-readable explanation (`message` in the body).
    pub message: String,
    /// Extra fields merged into the body.
    pub details: Map<String, Value>,
    /// `Retry-After`, for 503s.
    pub retry_after: Option<Duration>,
}

impl ApiError {
    /// An error with `status`, `code` and `message`.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            details: Map::new(),
            retry_after: None,
        }
    }

    /// Adds a field to the body.
    pub fn with(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.details.insert(key.to_owned(), value.into());
        self
    }

    /// 400 `bad_request`.
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    /// 422 with `code`.
    pub fn invalid(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, code, message)
    }

    /// 401 `not_signed_in`.
    pub fn not_signed_in() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "not_signed_in",
            "sign in first (POST /api/login)",
        )
    }

    /// 404 `not_found`.
    pub fn not_found() -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", "no such route")
    }

    /// 405 `method_not_allowed`.
    pub fn method_not_allowed() -> Self {
        Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "this route does not accept that method",
        )
    }

    /// 500 `internal_error`, logging `err` with its source chain.
    pub fn internal(what: &str, err: &(dyn std::error::Error + 'static)) -> Self {
        tracing::error!(error = %chain(err), "{what}");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal_error",
            "internal error",
        )
    }

    fn unavailable(
        code: &'static str,
        message: &str,
        err: &(dyn std::error::Error + 'static),
    ) -> Self {
        tracing::warn!(error = %chain(err), "{message}");
        let mut e = Self::new(StatusCode::SERVICE_UNAVAILABLE, code, message);
        e.retry_after = Some(Duration::from_secs(1));
        e
    }
}

/// `err: source: source…` on one line.
pub fn chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut out = err.to_string();
    let mut cur = err.source();
    while let Some(e) = cur {
        out.push_str(": ");
        out.push_str(&e.to_string());
        cur = e.source();
    }
    out
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = json!({ "error": self.code, "message": self.message });
        if let Some(obj) = body.as_object_mut() {
            obj.extend(self.details);
        }
        let mut res = (self.status, Json(body)).into_response();
        if let Some(after) = self.retry_after {
            let secs = after.as_secs().max(1);
            res.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        res
    }
}

impl From<SessionError> for ApiError {
    fn from(e: SessionError) -> Self {
        let status = e.status();
        if status.is_server_error() {
            tracing::warn!(error = %chain(&e), "session error");
        }
        let mut api = Self::new(status, e.code(), e.to_string());
        api.retry_after = e.retry_after();
        api
    }
}

impl From<DbError> for ApiError {
    fn from(e: DbError) -> Self {
        match e {
            DbError::UserExists => Self::new(
                StatusCode::CONFLICT,
                "user_exists",
                "that user name is taken",
            ),
            DbError::Unavailable(_) => {
                Self::unavailable("database_unavailable", "database unavailable", &e)
            }
            DbError::Corrupt { .. } => Self::internal("database holds corrupt data", &e),
        }
    }
}

impl From<PasswordError> for ApiError {
    fn from(e: PasswordError) -> Self {
        Self::internal("password hashing failed", &e)
    }
}

impl From<TokenError> for ApiError {
    fn from(e: TokenError) -> Self {
        match e {
            TokenError::Rejected(r) => {
                tracing::info!(reason = r.code(), "token rejected");
                crate::auth::invalid_token()
            }
            TokenError::Store(_) => {
                Self::unavailable("session_store_unavailable", "token store unavailable", &e)
            }
            _ => Self::internal("token issuing failed", &e),
        }
    }
}

/// Why the shop could not start.
#[derive(Debug, thiserror::Error)]
pub enum ShopError {
    /// A flag value is invalid.
    #[error(transparent)]
    Config(#[from] crate::config::SpecError),
    /// The password hasher could not be set up.
    #[error("password hashing")]
    Password(#[from] PasswordError),
    /// The database could not be opened.
    #[error("cannot open the database ({spec})")]
    Db {
        /// Which database (no password).
        spec: String,
        /// Why.
        #[source]
        source: DbError,
    },
    /// The session store could not be opened.
    #[error("cannot open the session store ({spec})")]
    Sessions {
        /// Which store (no password).
        spec: String,
        /// Why.
        #[source]
        source: StoreError,
    },
    /// The session store kind is not available in this build.
    #[error("{0}")]
    SessionsUnsupported(String),
    /// The JWT key file could not be read, created or used.
    #[error("JWT keys ({path})")]
    Keys {
        /// The key file.
        path: String,
        /// Why.
        #[source]
        source: usher_session::jwt::JwtError,
    },
    /// The listener failed.
    #[error("serving HTTP failed")]
    Serve(#[source] std::io::Error),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn errors_render_as_json_with_retry_after_for_outages() {
        let e: ApiError = SessionError::Unavailable {
            source: StoreError::unavailable(std::io::Error::other("down")),
            retry_after: Duration::from_secs(2),
        }
        .into();
        let res = e.into_response();
        assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(res.headers()[header::RETRY_AFTER], "2");
        let body = axum::body::to_bytes(res.into_body(), 1024).await.unwrap();
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["error"], "session_store_unavailable");

        let res = ApiError::from(DbError::UserExists).into_response();
        assert_eq!(res.status(), StatusCode::CONFLICT);
        let res = ApiError::invalid("invalid_qty", "no")
            .with("max", 5)
            .into_response();
        let body = axum::body::to_bytes(res.into_body(), 1024).await.unwrap();
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            v,
            json!({"error": "invalid_qty", "message": "no", "max": 5})
        );
    }

    #[test]
    fn chains_sources() {
        let e = DbError::unavailable(std::io::Error::other("disk on fire"));
        assert_eq!(chain(&e), "database unavailable: disk on fire");
    }
}
