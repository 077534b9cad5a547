//! [`SessionService`]: load before the handler, save before the response.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::header::{CONTENT_TYPE, RETRY_AFTER, SET_COOKIE};
use http::{HeaderMap, HeaderValue, Request, Response};
use tower_service::Service;

use super::Config;
use super::cookie::{self, Presented};
use super::error::{SessionError, retry_after_secs};
use super::session::{CookieAction, Session, State, apply_pending};
use crate::error::StoreError;
use crate::store::Touch;

/// The service [`super::SessionLayer`] wraps around an inner service.
#[derive(Debug, Clone)]
pub struct SessionService<S> {
    inner: S,
    config: Arc<Config>,
}

impl<S> SessionService<S> {
    pub(crate) fn new(inner: S, config: Arc<Config>) -> Self {
        Self { inner, config }
    }
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for SessionService<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    ReqBody: Send + 'static,
    ResBody: From<String> + Send + 'static,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<ReqBody>) -> Self::Future {
        // The clone that was polled ready is the one that gets the request (tower's rule).
        let fresh = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, fresh);
        let config = self.config.clone();
        Box::pin(async move {
            let state = match load(&config, req.headers()).await {
                Ok(state) => state,
                Err(err) => return Ok(error_response(&err)),
            };
            let session = Session::new(config.clone(), state);
            req.extensions_mut().insert(session.clone());
            let mut res = inner.call(req).await?;
            match finish(&session).await {
                Ok(()) => set_cookie(&config, &session, res.headers_mut()),
                Err(err) => res = error_response(&err),
            }
            Ok(res)
        })
    }
}

/// The request's session as the store has it. Errors only for an outage the policy cannot cover.
async fn load(config: &Config, headers: &HeaderMap) -> Result<State, SessionError> {
    let id = match cookie::presented(headers, &config.cookie_name) {
        Presented::None => return Ok(State::empty(CookieAction::Keep)),
        Presented::Malformed => return Ok(State::empty(CookieAction::Clear)),
        Presented::Id(id) => id,
    };
    let key = id.key();
    let now = config.now();
    match config.store.load(&key, now).await {
        Ok(Some(record)) => {
            if let Some(cache) = &config.cache {
                cache.put(key, &record, now);
            }
            Ok(State::loaded(id, record, false))
        }
        Ok(None) => Ok(State::empty(CookieAction::Clear)),
        Err(StoreError::Corrupt(e)) => {
            // Undecodable bytes will never load; treating the client as signed out (and clearing
            // its cookie) is the only way forward, and is logged loudly.
            tracing::error!(error = %e, "session data is corrupt; treating it as signed out");
            Ok(State::empty(CookieAction::Clear))
        }
        Err(source) => match config.cache.as_ref().and_then(|c| c.get(&key, now)) {
            Some(record) => {
                tracing::warn!(error = %source, "session store down; serving the session read-only from cache");
                Ok(State::loaded(id, record, true))
            }
            None => {
                tracing::warn!(error = %source, "session store down; answering 503");
                Err(SessionError::Unavailable {
                    source,
                    retry_after: config.outage.retry_after(),
                })
            }
        },
    }
}

/// Writes what the handler changed, or touches an unchanged session. A session found gone (logged
/// out by a concurrent request) is not an error: its writes are dropped and its cookie cleared.
async fn finish(session: &Session) -> Result<(), SessionError> {
    let config = &session.config;
    let (id, record, pending) = {
        let state = session.lock();
        if state.read_only {
            return Ok(());
        }
        (
            state.id.clone(),
            state.record.clone(),
            state.pending.clone(),
        )
    };
    let now = config.now();
    let (id, mut base) = match (id, record) {
        (Some(id), Some(record)) => (id, record),
        _ if pending.is_empty() => return Ok(()),
        _ => {
            let mut data = Default::default();
            apply_pending(&mut data, &pending);
            let (id, record) = session
                .create(data, None, now)
                .await
                .map_err(|e| session.store_failed(e))?;
            let mut state = session.lock();
            *state = State::loaded(id, record, false);
            state.cookie = CookieAction::Issue;
            return Ok(());
        }
    };
    let key = id.key();
    if pending.is_empty() {
        if now >= base.last_seen_at.saturating_add(config.touch_secs) {
            match config.store.touch(&key, now).await {
                Ok(Touch::Missing) => session.lock().reset(),
                Ok(_) => {}
                // A missed touch costs at most one interval of idle time; not worth failing for.
                Err(e) => tracing::warn!(error = %e, "session touch failed"),
            }
        }
        return Ok(());
    }
    for _ in 0..config.save_attempts {
        let mut next = base.clone();
        apply_pending(&mut next.data, &pending);
        next.last_seen_at = next.last_seen_at.max(now);
        let idle = now.saturating_add(config.idle_secs).min(next.expires_at);
        next.idle_expires_at = next.idle_expires_at.max(idle);
        let result = config
            .store
            .save(&key, &next, Some(base.version), now)
            .await;
        match result {
            Ok(version) => {
                next.version = version;
                if let Some(cache) = &config.cache {
                    cache.put(key, &next, now);
                }
                let mut state = session.lock();
                state.record = Some(next);
                state.pending.clear();
                return Ok(());
            }
            Err(StoreError::Conflict { .. }) => match config.store.load(&key, now).await {
                Ok(Some(fresh)) => base = fresh,
                Ok(None) => return gone(session),
                Err(e) => return Err(session.store_failed(e)),
            },
            Err(e) => {
                return match session.store_failed(e) {
                    SessionError::Gone => Ok(()),
                    other => Err(other),
                };
            }
        }
    }
    Err(SessionError::Conflict {
        attempts: config.save_attempts,
    })
}

fn gone(session: &Session) -> Result<(), SessionError> {
    session.lock().reset();
    Ok(())
}

fn set_cookie(config: &Config, session: &Session, headers: &mut HeaderMap) {
    let state = session.lock();
    let value = match (state.cookie, &state.id) {
        (CookieAction::Issue, Some(id)) => cookie::issue(config, id),
        (CookieAction::Clear, _) | (CookieAction::Issue, None) => cookie::clear(config),
        (CookieAction::Keep, _) => None,
    };
    if let Some(value) = value {
        headers.append(SET_COOKIE, value);
    }
}

/// The layer's own error response: status, `Retry-After` when the store is at fault, JSON body.
pub(crate) fn error_response<B: From<String>>(err: &SessionError) -> Response<B> {
    let body = serde_json::json!({ "error": err.code(), "message": err.to_string() });
    let mut res = Response::new(B::from(body.to_string()));
    *res.status_mut() = err.status();
    let headers = res.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    if let Some(after) = err.retry_after() {
        headers.insert(RETRY_AFTER, HeaderValue::from(retry_after_secs(after)));
    }
    res
}
