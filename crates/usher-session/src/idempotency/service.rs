//! [`IdempotencyService`]: acquire the key, run or replay, hand the outcome to the writer.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::header::{CONTENT_LENGTH, SET_COOKIE};
use http::{HeaderMap, HeaderName, HeaderValue, Request, Response};
use http_body::Body;
use http_body_util::{BodyExt as _, LengthLimitError, Limited};
use tower_service::Service;

use super::error::IdempotencyError;
use super::key::{fingerprint, parse};
use super::recent::Hit;
use super::record::{State, Stored};
use super::writer::record_outcome;
use super::{Anonymous, Config, IDEMPOTENCY_KEY, IDEMPOTENCY_KEY_WINDOW, IDEMPOTENT_REPLAYED};
use crate::error::StoreError;
use crate::id::SessionKey;
use crate::store::Record;

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// How many create/take-over races one request tries before answering 409.
const ACQUIRE_ATTEMPTS: usize = 3;

/// A `running` record whose lease began at most this many seconds ago is probably a quick request
/// whose outcome is being written: its 409 says `Retry-After: 1`.
const FRESH_LEASE_SECS: u64 = 2;

/// Hop-by-hop and framing headers, never stored (plus `Set-Cookie`, see the module docs).
const NOT_STORED: [&str; 7] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "te",
    "trailer",
    "upgrade",
];

/// The service [`super::IdempotencyLayer`] wraps around an inner service.
#[derive(Debug, Clone)]
pub struct IdempotencyService<S> {
    inner: S,
    config: Arc<Config>,
}

impl<S> IdempotencyService<S> {
    pub(crate) fn new(inner: S, config: Arc<Config>) -> Self {
        Self { inner, config }
    }
}

/// A stored record that does not decode.
#[derive(Debug, thiserror::Error)]
#[error("undecodable idempotency record")]
struct CorruptRecord;

enum Acquired {
    Run { version: u64, record: Record },
    Replay(Stored),
}

enum Failure<E> {
    Answer(IdempotencyError),
    Inner(E),
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for IdempotencyService<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ReqBody: Body + From<Bytes> + Send + 'static,
    ReqBody::Data: Send,
    ReqBody::Error: Into<BoxError>,
    ResBody: Body + From<Bytes> + Send + 'static,
    ResBody::Data: Send,
    ResBody::Error: Into<BoxError>,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        let fresh = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, fresh);
        if !self.config.covers(req.method(), req.uri().path()) {
            return Box::pin(inner.call(req));
        }
        let config = self.config.clone();
        Box::pin(async move {
            let mut res = match handle(&config, inner, req).await {
                Ok(res) => res,
                Err(Failure::Answer(err)) => {
                    if let IdempotencyError::Unavailable { source, .. } = &err {
                        tracing::warn!(error = %source, "idempotency store unavailable; answering 503");
                    }
                    err.to_response()
                }
                Err(Failure::Inner(e)) => return Err(e),
            };
            res.headers_mut().insert(
                IDEMPOTENCY_KEY_WINDOW,
                HeaderValue::from(config.window_secs),
            );
            Ok(res)
        })
    }
}

async fn handle<S, ReqBody, ResBody>(
    config: &Arc<Config>,
    mut inner: S,
    req: Request<ReqBody>,
) -> Result<Response<ResBody>, Failure<S::Error>>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    ReqBody: Body + From<Bytes>,
    ReqBody::Error: Into<BoxError>,
    ResBody: Body + From<Bytes>,
    ResBody::Error: Into<BoxError>,
{
    let answer = Failure::Answer;
    let (parts, body) = req.into_parts();
    let mut values = parts.headers.get_all(IDEMPOTENCY_KEY).iter();
    let key = match (values.next(), values.next()) {
        (None, _) => return Err(answer(IdempotencyError::MissingKey)),
        (Some(v), None) => parse(v).ok_or(answer(IdempotencyError::MalformedKey))?,
        (Some(_), Some(_)) => return Err(answer(IdempotencyError::MalformedKey)),
    };
    let store_key = match ((config.principal)(&parts), config.anonymous) {
        (Some(user), _) => SessionKey::derive("idem", &[b"user", user.as_bytes(), key.as_bytes()]),
        (None, Anonymous::KeyOnly) => SessionKey::derive("idem", &[b"anonymous", key.as_bytes()]),
        (None, Anonymous::Reject) => return Err(answer(IdempotencyError::Anonymous)),
    };
    let bytes = match Limited::new(body, config.max_body).collect().await {
        Ok(c) => c.to_bytes(),
        Err(e) if e.is::<LengthLimitError>() => {
            return Err(answer(IdempotencyError::BodyTooLarge));
        }
        Err(e) => return Err(answer(IdempotencyError::BodyRead(e))),
    };
    let target = parts
        .uri
        .path_and_query()
        .map_or_else(|| parts.uri.path(), |pq| pq.as_str());
    let fp = fingerprint(parts.method.as_str(), target, &bytes);
    let now = (config.clock)();

    match config.recent.lookup(&store_key, &fp, now) {
        Hit::Replay(stored) => return Ok(replay(stored)),
        // This process released the key a moment ago: let the release land before the claim.
        Hit::Releasing(mut written) => drop(written.wait_for(|w| *w).await),
        Hit::Miss => {}
    }
    let (version, record) = match acquire(config, &store_key, &fp, now)
        .await
        .map_err(answer)?
    {
        Acquired::Replay(stored) => return Ok(replay(stored)),
        Acquired::Run { version, record } => (version, record),
    };
    let release =
        |record: Record| record_outcome(config, store_key, record, version, fp.clone(), None);
    let res = match inner
        .call(Request::from_parts(parts, ReqBody::from(bytes)))
        .await
    {
        Ok(res) => res,
        Err(e) => {
            release(record).await;
            return Err(Failure::Inner(e));
        }
    };
    let (rparts, rbody) = res.into_parts();
    if rparts.status.is_server_error() {
        // Released, not stored: see the module docs. The body streams through untouched.
        release(record).await;
        return Ok(Response::from_parts(rparts, rbody));
    }
    let collected = rbody.collect().await.map_err(Into::<BoxError>::into);
    let body = match collected {
        Ok(c) => c.to_bytes(),
        Err(e) => {
            tracing::warn!(error = %e, "response body failed; releasing the idempotency key");
            release(record).await;
            let mut res = Response::from_parts(rparts, ResBody::from(Bytes::new()));
            *res.status_mut() = http::StatusCode::INTERNAL_SERVER_ERROR;
            return Ok(res);
        }
    };
    if body.len() > config.max_response {
        tracing::warn!(
            len = body.len(),
            "response too large to store; releasing the idempotency key"
        );
        release(record).await;
    } else {
        let stored = Stored {
            status: rparts.status,
            headers: storable(&rparts.headers),
            body: body.clone(),
        };
        record_outcome(config, store_key, record, version, fp.clone(), Some(stored)).await;
    }
    Ok(Response::from_parts(rparts, ResBody::from(body)))
}

fn unavailable(config: &Config, source: StoreError) -> IdempotencyError {
    IdempotencyError::Unavailable {
        source,
        retry_after: config.retry_after,
    }
}

/// Creates the record, or decides from the existing one: replay, 409, 422, or take it over.
async fn acquire(
    config: &Config,
    key: &SessionKey,
    fp: &str,
    now: u64,
) -> Result<Acquired, IdempotencyError> {
    let running = State::Running {
        fingerprint: fp.to_owned(),
        lease_until: now.saturating_add(config.lease_secs),
    };
    for _ in 0..ACQUIRE_ATTEMPTS {
        let fresh = Record::new(
            running.encode(),
            None,
            now,
            config.window_secs,
            config.window_secs,
        );
        match config.store.save(key, &fresh, None, now).await {
            Ok(version) => {
                return Ok(Acquired::Run {
                    version,
                    record: fresh,
                });
            }
            Err(StoreError::Conflict { .. } | StoreError::Deleted) => {}
            Err(e) => return Err(unavailable(config, e)),
        }
        let Some(existing) = config
            .store
            .load(key, now)
            .await
            .map_err(|e| unavailable(config, e))?
        else {
            continue; // expired between our create and our load: try creating again
        };
        let state = State::decode(&existing.data)
            .ok_or_else(|| unavailable(config, StoreError::unavailable(CorruptRecord)))?;
        if state.fingerprint() != fp {
            return Err(IdempotencyError::KeyReused);
        }
        match state {
            State::Done { response, .. } => return Ok(Acquired::Replay(response)),
            State::Running { lease_until, .. } if lease_until > now => {
                return Err(IdempotencyError::InFlight {
                    retry_after: in_flight_retry_after(config, lease_until, now),
                });
            }
            State::Running { .. } | State::Released { .. } => {
                let mut next = existing.clone();
                next.data = running.encode();
                match config
                    .store
                    .save(key, &next, Some(existing.version), now)
                    .await
                {
                    Ok(version) => {
                        tracing::info!(
                            "idempotency key taken over (expired lease or released); running the request"
                        );
                        return Ok(Acquired::Run {
                            version,
                            record: next,
                        });
                    }
                    Err(
                        StoreError::Conflict { .. } | StoreError::Deleted | StoreError::NotFound,
                    ) => {}
                    Err(e) => return Err(unavailable(config, e)),
                }
            }
        }
    }
    Err(IdempotencyError::InFlight {
        retry_after: config.retry_after,
    })
}

/// `Retry-After` for a key held by a live lease: 1 s while the lease is fresh (the holder is
/// probably a quick request whose outcome is being written right now), else the configured one.
fn in_flight_retry_after(config: &Config, lease_until: u64, now: u64) -> Duration {
    let started = lease_until.saturating_sub(config.lease_secs);
    if now.saturating_sub(started) <= FRESH_LEASE_SECS {
        Duration::from_secs(1)
    } else {
        config.retry_after
    }
}

fn storable(headers: &HeaderMap) -> HeaderMap {
    let mut out = HeaderMap::with_capacity(headers.len());
    for (name, value) in headers {
        if *name == SET_COOKIE
            || *name == CONTENT_LENGTH
            || name.as_str() == IDEMPOTENCY_KEY_WINDOW
            || NOT_STORED.contains(&name.as_str())
        {
            continue;
        }
        out.append(name.clone(), value.clone());
    }
    out
}

fn replay<B: From<Bytes>>(stored: Stored) -> Response<B> {
    let mut res = Response::new(B::from(stored.body));
    *res.status_mut() = stored.status;
    *res.headers_mut() = stored.headers;
    res.headers_mut().insert(
        HeaderName::from_static(IDEMPOTENT_REPLAYED),
        HeaderValue::from_static("true"),
    );
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_and_cookies_are_not_stored() {
        let mut h = HeaderMap::new();
        h.insert("content-type", HeaderValue::from_static("application/json"));
        h.append("x-order", HeaderValue::from_static("1"));
        h.append("x-order", HeaderValue::from_static("2"));
        for name in NOT_STORED {
            h.insert(HeaderName::from_static(name), HeaderValue::from_static("x"));
        }
        h.insert(SET_COOKIE, HeaderValue::from_static("sid=1"));
        h.insert(CONTENT_LENGTH, HeaderValue::from_static("5"));
        let s = storable(&h);
        assert_eq!(s.len(), 3);
        assert_eq!(s.get_all("x-order").iter().count(), 2);
        assert!(s.get(SET_COOKIE).is_none());
    }
}
