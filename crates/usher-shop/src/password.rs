//! Password hashing: argon2id with a configurable cost.
//!
//! The cost is a knob because the lab seeds thousands of users and signs them in over and over:
//! at the recommended cost (19 MiB, 2 passes) that alone would swamp a 2-core machine and hide
//! what the lab measures. Hashes are PHC strings that carry their own parameters, so a shop
//! started with another cost still verifies every stored hash.
//!
//! Hashing is CPU-bound for milliseconds, so both operations run on tokio's blocking pool, at most
//! two per CPU at a time: each holds `m_kib` of memory while it runs, and a burst of sign-ins must
//! queue rather than start hundreds of 19 MiB hashes at once. A login for an unknown user still
//! verifies against a dummy hash, so response time does not reveal which user names exist.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher as _, PasswordVerifier as _, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use tokio::sync::Semaphore;

/// Argon2id parameters: memory in KiB and passes (one lane).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PasswordCost {
    /// Memory per hash, KiB (at least 8).
    pub m_kib: u32,
    /// Passes over the memory (at least 1).
    pub t: u32,
}

impl PasswordCost {
    /// The recommended cost (OWASP's argon2id minimum): 19 MiB, 2 passes.
    pub const DEFAULT: Self = Self {
        m_kib: 19_456,
        t: 2,
    };
    /// A cheap cost for load tests that seed many users: 64 KiB, 1 pass. Not for real users.
    pub const LOW: Self = Self { m_kib: 64, t: 1 };
}

impl Default for PasswordCost {
    fn default() -> Self {
        Self::DEFAULT
    }
}

impl FromStr for PasswordCost {
    type Err = String;

    /// `low` or `default`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "low" => Ok(Self::LOW),
            "default" => Ok(Self::DEFAULT),
            other => Err(format!(
                "unknown password cost {other:?}; expected low or default"
            )),
        }
    }
}

/// Why hashing could not be set up or done.
#[derive(Debug, thiserror::Error)]
pub enum PasswordError {
    /// The cost is outside what argon2 accepts.
    #[error("invalid argon2 parameters (m={m_kib} KiB, t={t})")]
    Params {
        /// Memory asked for.
        m_kib: u32,
        /// Passes asked for.
        t: u32,
        /// argon2's reason.
        #[source]
        source: argon2::Error,
    },
    /// Hashing failed.
    #[error("password hashing failed")]
    Hash(#[source] argon2::password_hash::Error),
    /// The blocking task running the hash died.
    #[error("password hashing task failed")]
    Task(#[source] tokio::task::JoinError),
    /// The hashing queue was closed (cannot happen while the hasher lives).
    #[error("password hashing queue closed")]
    Closed(#[source] tokio::sync::AcquireError),
}

/// Hashes and verifies passwords. Cheap to clone.
#[derive(Clone)]
pub struct Hasher {
    argon: Arc<Argon2<'static>>,
    /// Verified against when the user does not exist, to spend the same time.
    dummy: Arc<str>,
    /// Bounds how many hashes run at once (and so the memory they hold).
    slots: Arc<Semaphore>,
}

impl fmt::Debug for Hasher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Hasher")
            .field("params", self.argon.params())
            .finish_non_exhaustive()
    }
}

impl Hasher {
    /// A hasher with `cost`. Computes one hash (the dummy), so it takes as long as a login.
    pub fn new(cost: PasswordCost) -> Result<Self, PasswordError> {
        let params =
            Params::new(cost.m_kib, cost.t, 1, None).map_err(|source| PasswordError::Params {
                m_kib: cost.m_kib,
                t: cost.t,
                source,
            })?;
        let argon = Argon2::new(Algorithm::Argon2id, Version::V0x13, params);
        let dummy = hash_with(&argon, "usher dummy password")?;
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        Ok(Self {
            argon: Arc::new(argon),
            dummy: dummy.into(),
            slots: Arc::new(Semaphore::new(2 * cpus)),
        })
    }

    async fn slot(&self) -> Result<tokio::sync::OwnedSemaphorePermit, PasswordError> {
        Arc::clone(&self.slots)
            .acquire_owned()
            .await
            .map_err(PasswordError::Closed)
    }

    /// A PHC-format argon2id hash of `password` with a fresh random salt.
    pub async fn hash(&self, password: String) -> Result<String, PasswordError> {
        let slot = self.slot().await?;
        let argon = Arc::clone(&self.argon);
        tokio::task::spawn_blocking(move || {
            let _slot = slot; // held until the hash is done, even if the request is dropped
            hash_with(&argon, &password)
        })
        .await
        .map_err(PasswordError::Task)?
    }

    /// Whether `password` matches `stored` (a PHC hash). `None` (no such user) verifies against
    /// the dummy hash and answers `false`. A malformed stored hash is `false`, logged.
    pub async fn verify(
        &self,
        password: String,
        stored: Option<String>,
    ) -> Result<bool, PasswordError> {
        let slot = self.slot().await?;
        let argon = Arc::clone(&self.argon);
        let dummy = Arc::clone(&self.dummy);
        tokio::task::spawn_blocking(move || {
            let _slot = slot;
            let known = stored.is_some();
            let hash = stored.as_deref().unwrap_or(&dummy);
            let Ok(parsed) = PasswordHash::new(hash) else {
                tracing::error!("a stored password hash is not a valid PHC string");
                return false;
            };
            known && argon.verify_password(password.as_bytes(), &parsed).is_ok()
        })
        .await
        .map_err(PasswordError::Task)
    }
}

fn hash_with(argon: &Argon2<'_>, password: &str) -> Result<String, PasswordError> {
    let salt = SaltString::generate(&mut OsRng);
    argon
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(PasswordError::Hash)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn hashes_verify_and_carry_their_cost() {
        let h = Hasher::new(PasswordCost::LOW).unwrap();
        let a = h.hash("correct horse".into()).await.unwrap();
        let b = h.hash("correct horse".into()).await.unwrap();
        assert_ne!(a, b, "salted");
        assert!(a.starts_with("$argon2id$v=19$m=64,t=1,p=1$"), "{a}");
        assert!(
            h.verify("correct horse".into(), Some(a.clone()))
                .await
                .unwrap()
        );
        assert!(!h.verify("wrong".into(), Some(a.clone())).await.unwrap());
        assert!(!h.verify("x".into(), None).await.unwrap());
        assert!(
            !h.verify("x".into(), Some("not a hash".into()))
                .await
                .unwrap()
        );
        // A shop with another cost still verifies old hashes: parameters travel in the hash.
        let other = Hasher::new(PasswordCost { m_kib: 128, t: 2 }).unwrap();
        assert!(other.verify("correct horse".into(), Some(a)).await.unwrap());
    }

    #[test]
    fn costs() {
        assert_eq!("low".parse(), Ok(PasswordCost::LOW));
        assert_eq!("default".parse(), Ok(PasswordCost::DEFAULT));
        assert!("cheap".parse::<PasswordCost>().is_err());
        assert!(matches!(
            Hasher::new(PasswordCost { m_kib: 1, t: 1 }),
            Err(PasswordError::Params { .. })
        ));
        assert!(Hasher::new(PasswordCost { m_kib: 64, t: 0 }).is_err());
    }
}
