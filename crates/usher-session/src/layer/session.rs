//! [`Session`]: the per-request handle a handler reads and changes the session through.
//!
//! Plain `insert`/`remove` calls are recorded and written by the layer before the response leaves
//! (one compare-and-swap save, re-applied to a fresh load when another request won the race, so a
//! concurrent change to a *different* field is never lost). [`Session::update`], [`Session::login`]
//! and the logouts go to the store at once, because their result matters to the handler.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::Config;
use super::error::SessionError;
use crate::data::{FieldOp, SessionData};
use crate::error::{ErrorClass, StoreError};
use crate::id::{SessionId, SessionKey};
use crate::store::Record;

/// What the response's `Set-Cookie` must do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CookieAction {
    /// Nothing: the client's cookie is right.
    Keep,
    /// Send the current id (a session was created or its id rotated).
    Issue,
    /// Remove the client's cookie (its session is gone).
    Clear,
}

/// The request's view of its session. Everything the layer decides at the end reads this.
#[derive(Debug)]
pub(crate) struct State {
    /// The current session's id; `None` while the request has no session.
    pub(crate) id: Option<SessionId>,
    /// The record as last loaded or written (its `version` is the CAS base).
    pub(crate) record: Option<Record>,
    /// Deferred writes, in call order: `Some` sets, `None` removes.
    pub(crate) pending: Vec<(String, Option<Value>)>,
    /// Served from the read-only cache during a store outage.
    pub(crate) read_only: bool,
    pub(crate) cookie: CookieAction,
}

impl State {
    pub(crate) fn empty(cookie: CookieAction) -> Self {
        Self {
            id: None,
            record: None,
            pending: Vec::new(),
            read_only: false,
            cookie,
        }
    }

    pub(crate) fn loaded(id: SessionId, record: Record, read_only: bool) -> Self {
        Self {
            id: Some(id),
            record: Some(record),
            pending: Vec::new(),
            read_only,
            cookie: CookieAction::Keep,
        }
    }

    /// The data as the handler sees it: the record with the deferred writes applied.
    pub(crate) fn view(&self) -> SessionData {
        let mut data = self
            .record
            .as_ref()
            .map(|r| r.data.clone())
            .unwrap_or_default();
        apply_pending(&mut data, &self.pending);
        data
    }

    /// Forgets the session (logged out, or found gone): no id, nothing to save, cookie cleared.
    pub(crate) fn reset(&mut self) {
        *self = Self::empty(CookieAction::Clear);
    }
}

pub(crate) fn apply_pending(data: &mut SessionData, pending: &[(String, Option<Value>)]) {
    for (field, value) in pending {
        match value {
            Some(v) => data.insert(field.clone(), v.clone()),
            None => data.remove(field),
        };
    }
}

/// The session of the current request: an axum extractor (feature `axum`) or
/// `request.extensions().get::<Session>()`. Cheap to clone; clones share the state.
#[derive(Debug, Clone)]
pub struct Session {
    pub(crate) config: Arc<Config>,
    pub(crate) state: Arc<Mutex<State>>,
}

impl Session {
    pub(crate) fn new(config: Arc<Config>, state: State) -> Self {
        Self {
            config,
            state: Arc::new(Mutex::new(state)),
        }
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        // No code panics while holding this lock mid-update.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The signed-in user, if any.
    pub fn user(&self) -> Option<String> {
        self.lock().record.as_ref().and_then(|r| r.user.clone())
    }

    /// Whether the request carries a live session (or has created one).
    pub fn exists(&self) -> bool {
        self.lock().id.is_some()
    }

    /// Whether the store is down and this session is served from the local cache: reads work,
    /// changes fail with [`SessionError::ReadOnly`].
    pub fn is_read_only(&self) -> bool {
        self.lock().read_only
    }

    /// The value of `field`, including this request's own pending writes.
    pub fn get(&self, field: &str) -> Option<Value> {
        let state = self.lock();
        for (f, v) in state.pending.iter().rev() {
            if f == field {
                return v.clone();
            }
        }
        state.record.as_ref()?.data.get(field).cloned()
    }

    /// The value of `field` deserialized as `T`; `Ok(None)` if unset.
    pub fn get_as<T: DeserializeOwned>(&self, field: &str) -> Result<Option<T>, SessionError> {
        self.get(field)
            .map(|v| {
                serde_json::from_value(v).map_err(|source| SessionError::Decode {
                    field: field.to_owned(),
                    source,
                })
            })
            .transpose()
    }

    /// Every field, including this request's pending writes (e.g. to list `cart:*` fields).
    pub fn snapshot(&self) -> SessionData {
        self.lock().view()
    }

    /// Sets `field`; written before the response is sent (creating the session if there is none).
    pub fn insert(&self, field: &str, value: impl Serialize) -> Result<(), SessionError> {
        let value = serde_json::to_value(value).map_err(|source| SessionError::Encode {
            field: field.to_owned(),
            source,
        })?;
        self.defer(field, Some(value))
    }

    /// Removes `field`; written before the response is sent.
    pub fn remove(&self, field: &str) -> Result<(), SessionError> {
        self.defer(field, None)
    }

    fn defer(&self, field: &str, value: Option<Value>) -> Result<(), SessionError> {
        let mut state = self.lock();
        if state.read_only {
            return Err(self.read_only());
        }
        state.pending.push((field.to_owned(), value));
        Ok(())
    }

    /// Applies `op` to `field` atomically in the store, now, and returns the field's new value.
    /// Concurrent updates from other requests (two tabs adding to one cart) are all kept. Creates
    /// the session first if the request has none.
    pub async fn update(&self, field: &str, op: FieldOp) -> Result<Value, SessionError> {
        let key = self.ensure_created().await?;
        let now = self.config.now();
        match self.config.store.update_field(&key, field, op, now).await {
            Ok(done) => {
                let mut state = self.lock();
                if let Some(rec) = state.record.as_mut() {
                    rec.data.insert(field, done.value.clone());
                    rec.version = done.version;
                    rec.last_seen_at = rec.last_seen_at.max(now);
                }
                Ok(done.value)
            }
            Err(e) => Err(self.store_failed(e)),
        }
    }

    /// Signs `user` in: the session moves to a fresh id (defeating session fixation), keeps its
    /// data, and the old id is deleted with a tombstone.
    pub async fn login(&self, user: &str) -> Result<(), SessionError> {
        let (old, data) = {
            let state = self.lock();
            if state.read_only {
                return Err(self.read_only());
            }
            (state.id.as_ref().map(SessionId::key), state.view())
        };
        let now = self.config.now();
        let (id, record) = self
            .create(data, Some(user.to_owned()), now)
            .await
            .map_err(|e| self.store_failed(e))?;
        if let Some(old) = old {
            if let Err(e) = self.config.store.delete(&old, now).await {
                // The new session exists; the old one (held only by this client) just expires.
                tracing::warn!(error = %e, "could not delete the pre-login session");
            }
            self.forget_cached(&old);
        }
        let mut state = self.lock();
        *state = State::loaded(id, record, false);
        state.cookie = CookieAction::Issue;
        Ok(())
    }

    /// Ends this session: deleted with a tombstone (a request still in flight cannot bring it
    /// back) and the cookie cleared.
    pub async fn logout(&self) -> Result<(), SessionError> {
        let key = self.lock().id.as_ref().map(SessionId::key);
        if let Some(key) = key {
            let now = self.config.now();
            self.config
                .store
                .delete(&key, now)
                .await
                .map_err(|e| self.store_failed(e))?;
            self.forget_cached(&key);
        }
        self.lock().reset();
        Ok(())
    }

    /// Ends every session of the signed-in user ("log out everywhere"), this one included.
    /// Returns how many sessions were ended; 0 if nobody is signed in.
    pub async fn logout_everywhere(&self) -> Result<usize, SessionError> {
        let (key, user) = {
            let state = self.lock();
            let user = state.record.as_ref().and_then(|r| r.user.clone());
            (state.id.as_ref().map(SessionId::key), user)
        };
        let now = self.config.now();
        let Some(user) = user else {
            self.logout().await?;
            return Ok(0);
        };
        let n = self
            .config
            .store
            .delete_user_sessions(&user, now)
            .await
            .map_err(|e| self.store_failed(e))?;
        if let Some(key) = key {
            self.forget_cached(&key);
        }
        self.lock().reset();
        Ok(n)
    }

    /// The current session's key, creating the session (with any pending writes) if none.
    async fn ensure_created(&self) -> Result<SessionKey, SessionError> {
        let data = {
            let state = self.lock();
            if state.read_only {
                return Err(self.read_only());
            }
            if let Some(id) = &state.id {
                return Ok(id.key());
            }
            state.view()
        };
        let now = self.config.now();
        let (id, record) = self
            .create(data, None, now)
            .await
            .map_err(|e| self.store_failed(e))?;
        let key = id.key();
        let mut state = self.lock();
        *state = State::loaded(id, record, false);
        state.cookie = CookieAction::Issue;
        Ok(key)
    }

    /// Creates a session under a fresh id. A create can only collide with an existing id by a
    /// 2^-256 chance; the loop is for that, bounded.
    pub(crate) async fn create(
        &self,
        data: SessionData,
        user: Option<String>,
        now: u64,
    ) -> Result<(SessionId, Record), StoreError> {
        let c = &self.config;
        let mut record = Record::new(data, user, now, c.idle_secs, c.absolute_secs);
        let mut last = None;
        for _ in 0..3 {
            let id = SessionId::random();
            match c.store.save(&id.key(), &record, None, now).await {
                Ok(version) => {
                    record.version = version;
                    if let Some(cache) = &c.cache {
                        cache.put(id.key(), &record, now);
                    }
                    return Ok((id, record));
                }
                Err(e @ (StoreError::Conflict { .. } | StoreError::Deleted)) => last = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or(StoreError::Conflict { current: 0 }))
    }

    fn forget_cached(&self, key: &SessionKey) {
        if let Some(cache) = &self.config.cache {
            cache.forget(key);
        }
    }

    fn read_only(&self) -> SessionError {
        SessionError::ReadOnly {
            retry_after: self.config.outage.retry_after(),
        }
    }

    /// Maps a store error for the handler; a session found gone is forgotten (cookie cleared).
    pub(crate) fn store_failed(&self, e: StoreError) -> SessionError {
        match (&e, e.class()) {
            (StoreError::InvalidOp { .. }, _) => SessionError::InvalidOp(e),
            (_, ErrorClass::Client) => {
                self.lock().reset();
                SessionError::Gone
            }
            (_, ErrorClass::Conflict) => SessionError::Conflict { attempts: 1 },
            (_, ErrorClass::Unavailable) => SessionError::Unavailable {
                source: e,
                retry_after: self.config.outage.retry_after(),
            },
        }
    }
}
