//! What every handler shares: who this shop is, the database, the password hasher and, in jwt
//! mode, the token service.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use usher_session::Session;

use crate::auth::JwtAuth;
use crate::config::AuthMode;
use crate::db::Db;
use crate::error::ApiError;
use crate::password::Hasher;

/// Shared handler state. Cheap to clone.
#[derive(Debug, Clone)]
pub struct AppState(Arc<Inner>);

/// The contents of [`AppState`].
#[derive(Debug)]
pub struct Inner {
    /// This shop's id (`X-Served-By`).
    pub id: String,
    /// The session store's kind, as `/api/me` reports it.
    pub store_kind: &'static str,
    /// Users and orders.
    pub db: Db,
    /// Password hashing.
    pub hasher: Hasher,
    /// Session cookies or JWTs.
    pub auth: AuthMode,
    /// The token service (jwt mode only).
    pub jwt: Option<Arc<JwtAuth>>,
    /// Test only: checkout waits this long before writing the order.
    pub checkout_delay: Duration,
}

impl AppState {
    /// Shared state for one shop.
    pub fn new(inner: Inner) -> Self {
        Self(Arc::new(inner))
    }

    /// The token service, or 500 if this shop is not in jwt mode (a routing bug).
    pub fn jwt(&self) -> Result<&JwtAuth, ApiError> {
        self.jwt.as_deref().ok_or_else(|| {
            ApiError::internal(
                "jwt route without a token service",
                &std::io::Error::other("shop not in jwt mode"),
            )
        })
    }

    /// Waits the test-only checkout delay, if one is set.
    pub async fn checkout_pause(&self) {
        if !self.checkout_delay.is_zero() {
            tracing::info!(delay = ?self.checkout_delay, "test checkout delay: holding this checkout");
            tokio::time::sleep(self.checkout_delay).await;
        }
    }
}

impl std::ops::Deref for AppState {
    type Target = Inner;

    fn deref(&self) -> &Inner {
        &self.0
    }
}

/// The signed-in user, or 401.
pub fn require_user(session: &Session) -> Result<String, ApiError> {
    session.user().ok_or_else(ApiError::not_signed_in)
}

/// Now, Unix seconds.
pub fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}
