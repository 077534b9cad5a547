//! The [`SessionStore`] contract and the values it trades in.

use std::fmt;

use async_trait::async_trait;
use serde_json::Value;

use crate::data::{FieldOp, SessionData};
use crate::error::StoreError;
use crate::id::SessionKey;

/// Settings every store shares. Times are whole seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreConfig {
    /// How long a deleted session's tombstone keeps rejecting late writes. Must outlive the
    /// slowest in-flight request; default one hour.
    pub tombstone_secs: u64,
    /// [`SessionStore::touch`] writes at most once per this many seconds per session; default 60.
    pub touch_interval_secs: u64,
    /// Idle timeout [`SessionStore::touch`] extends to (capped at the absolute expiry); default
    /// 30 minutes. Should match what [`Record::new`] is given.
    pub idle_timeout_secs: u64,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            tombstone_secs: 3600,
            touch_interval_secs: 60,
            idle_timeout_secs: 1800,
        }
    }
}

/// A stored session. Times are Unix seconds.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    /// The session's fields.
    pub data: SessionData,
    /// Version for compare-and-swap: 1 after creation, +1 per successful write of data.
    /// [`SessionStore::touch`] does not change it. Ignored by [`SessionStore::save`], which takes
    /// the expected version as an argument.
    pub version: u64,
    /// The logged-in user, for [`SessionStore::sessions_of`].
    pub user: Option<String>,
    /// When the session was created (kept from the store on update).
    pub created_at: u64,
    /// Last activity seen, as of the last write or touch.
    pub last_seen_at: u64,
    /// The session is dead from this instant unless touched before.
    pub idle_expires_at: u64,
    /// The session is dead from this instant regardless of activity.
    pub expires_at: u64,
}

impl Record {
    /// A fresh record created at `now` that dies after `idle_secs` without activity or
    /// `absolute_secs` in any case.
    pub fn new(
        data: SessionData,
        user: Option<String>,
        now: u64,
        idle_secs: u64,
        absolute_secs: u64,
    ) -> Self {
        let expires_at = now.saturating_add(absolute_secs);
        Self {
            data,
            version: 0,
            user,
            created_at: now,
            last_seen_at: now,
            idle_expires_at: now.saturating_add(idle_secs).min(expires_at),
            expires_at,
        }
    }

    /// Whether the session is alive at `now` (neither idle nor absolute expiry reached).
    pub fn is_live(&self, now: u64) -> bool {
        now < self.idle_expires_at && now < self.expires_at
    }
}

/// Metadata of one live session of a user, as listed by [`SessionStore::sessions_of`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionInfo {
    /// The session's key (the id itself is never stored).
    pub key: SessionKey,
    /// Creation time.
    pub created_at: u64,
    /// Last activity seen.
    pub last_seen_at: u64,
    /// Idle expiry.
    pub idle_expires_at: u64,
    /// Absolute expiry.
    pub expires_at: u64,
}

/// The outcome of [`SessionStore::touch`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Touch {
    /// The idle expiry was extended and written.
    Written,
    /// The last touch is recent (within [`StoreConfig::touch_interval_secs`]); nothing written.
    Skipped,
    /// No live session: absent, expired or deleted.
    Missing,
}

/// The outcome of a successful [`SessionStore::update_field`].
#[derive(Debug, Clone, PartialEq)]
pub struct FieldUpdate {
    /// The session's version after the update.
    pub version: u64,
    /// The field's new value (`Null` if removed).
    pub value: Value,
}

/// Where sessions live. See the crate docs for the full contract.
///
/// The trait uses `#[async_trait]` (boxed futures) so a layer can hold an
/// `Arc<dyn SessionStore>` chosen at run time. Every method takes `now` (Unix seconds) so expiry
/// is decided by the caller's clock and tests control time.
#[async_trait]
pub trait SessionStore: Send + Sync + fmt::Debug {
    /// The live session under `key`, or `None` if absent, expired (idle or absolute) or deleted.
    async fn load(&self, key: &SessionKey, now: u64) -> Result<Option<Record>, StoreError>;

    /// Compare-and-swap write of a whole record; returns the new version.
    ///
    /// * `expected_version: None` creates: fails with [`StoreError::Conflict`] if a live session
    ///   exists and [`StoreError::Deleted`] if the key is tombstoned. The new version is 1.
    /// * `Some(v)` updates only if the stored version is `v` (else `Conflict { current }`);
    ///   [`StoreError::NotFound`] if there is no live session, `Deleted` if tombstoned.
    ///
    /// On update `created_at` is kept, and `last_seen_at` / `idle_expires_at` never move backwards
    /// (a concurrent [`SessionStore::touch`] is not undone by a save from an older load).
    async fn save(
        &self,
        key: &SessionKey,
        record: &Record,
        expected_version: Option<u64>,
        now: u64,
    ) -> Result<u64, StoreError>;

    /// Atomically applies `op` to one field of a live session (no version check: concurrent
    /// updates are serialized by the store and none is lost). Bumps the version.
    /// Errors: `NotFound`, `Deleted`, `InvalidOp`, `Corrupt`, `Unavailable`.
    async fn update_field(
        &self,
        key: &SessionKey,
        field: &str,
        op: FieldOp,
        now: u64,
    ) -> Result<FieldUpdate, StoreError>;

    /// Deletes the session and leaves a tombstone for [`StoreConfig::tombstone_secs`], so a late
    /// `save`/`update_field` fails with `Deleted`. Tombstones even unknown keys. Returns whether a
    /// live session was deleted.
    async fn delete(&self, key: &SessionKey, now: u64) -> Result<bool, StoreError>;

    /// Marks activity: extends the idle expiry to `now + idle_timeout_secs` (capped at the absolute
    /// expiry), but writes only if the last write/touch is at least `touch_interval_secs` old.
    async fn touch(&self, key: &SessionKey, now: u64) -> Result<Touch, StoreError>;

    /// The live sessions of `user`.
    async fn sessions_of(&self, user: &str, now: u64) -> Result<Vec<SessionInfo>, StoreError>;

    /// Deletes (with tombstones) every session of `user` — "log out everywhere". Returns how
    /// many live sessions were deleted.
    async fn delete_user_sessions(&self, user: &str, now: u64) -> Result<usize, StoreError>;

    /// Removes expired sessions and lapsed tombstones; returns how many entries were removed.
    /// Stores also purge lazily; this is for a periodic sweep.
    async fn purge_expired(&self, now: u64) -> Result<usize, StoreError>;
}
