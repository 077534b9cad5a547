//! The request path: hygiene → affinity → selection → forward (with at most one retry) → response.
//!
//! Retry safety: a request that failed after it was sent to a backend is resent elsewhere only if
//! its method is idempotent (`GET`, `HEAD`, `PUT`, `DELETE`, `OPTIONS`, `TRACE`) or it carries an
//! `Idempotency-Key` header. The header is what makes a `POST` safe to resend: a backend that
//! honours it (draft-ietf-httpapi-idempotency-key-header; e.g. `usher shop`'s checkout) runs the
//! request once and answers the copy with 409 or a replay, never a second effect. Refused
//! connections (nothing was sent) are retried for any method.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};

use crate::Lb;
use crate::access::{self, Served};
use crate::affinity::{Choice, Key, unix_now};
use crate::body::{RequestBody, ResponseBody};
use crate::headers::{self, Forwarding, X_REQUEST_ID};
use crate::pool::{BackendSlot, Excluding};
use crate::server::{ClientBody, ConnState};
use crate::stats::Outcome;
use crate::tunnel::{self, UpgradeRequest};
use crate::upstream::{Outgoing, SendError, SwitchedSlot, UpstreamBody};

/// Handles one client request. Never fails: every error becomes a clean 4xx/5xx response that
/// names no backend.
pub async fn handle(
    lb: &Lb,
    req: Request<ClientBody>,
    peer: SocketAddr,
    conn: &Arc<ConnState>,
) -> Response<ResponseBody> {
    let started = Instant::now();
    // Kept for the access log only when it is on (the request is consumed below).
    let logged = lb
        .live
        .load()
        .config
        .access_log
        .then(|| (req.method().clone(), req.uri().clone()));
    let (parts, body) = proxy(lb, req, peer, conn).await.into_parts();
    let total = started.elapsed();
    lb.stats.latency.observe(total);
    if let Some((method, uri)) = logged {
        let path = uri.path_and_query().map_or("/", |p| p.as_str());
        let id = parts
            .headers
            .get(&X_REQUEST_ID)
            .and_then(|v| v.to_str().ok());
        access::log(
            &method,
            path,
            parts.status,
            parts.extensions.get::<Served>(),
            total,
            id,
        );
    }
    Response::from_parts(parts, body)
}

async fn proxy(
    lb: &Lb,
    req: Request<ClientBody>,
    peer: SocketAddr,
    conn: &ConnState,
) -> Response<ResponseBody> {
    let live = lb.live();
    // WebSocket and other upgrades.
    let mut upgrade = UpgradeRequest::take(&req);
    let (mut parts, body) = req.into_parts();
    let peer_trusted = live
        .config
        .trusted_proxies
        .iter()
        .any(|n| n.contains(&peer.ip()));
    let client = headers::client_ip(peer.ip(), &parts.headers, &live.config.trusted_proxies);
    let (now, at) = (unix_now(), Instant::now());
    let key = live.affinity.read(
        &parts.headers,
        &parts.uri,
        client,
        now,
        at,
        &conn.opened_token,
    );

    if let Some(name) = live.affinity.own_cookie() {
        headers::strip_cookie(&mut parts.headers, name);
    }
    headers::strip_hop_by_hop(&mut parts.headers);
    if let Some(u) = &upgrade {
        u.restore_request_headers(&mut parts.headers);
    }
    if !parts.headers.contains_key(header::HOST)
        && let Some(v) = parts
            .uri
            .authority()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
    {
        parts.headers.insert(header::HOST, v);
    }
    headers::set_forwarding(
        &mut parts.headers,
        Forwarding {
            peer: peer.ip(),
            peer_text: Some(&conn.peer_text),
            peer_trusted,
            proto: live.scheme(),
        },
    );
    let request_id = headers::ensure_request_id(&mut parts.headers, rand::random());

    let body = match RequestBody::from_client(body, live.config.limits.retry_buffer_bytes).await {
        Ok(b) => b,
        Err(_) => {
            return local(
                lb,
                StatusCode::BAD_REQUEST,
                "request body could not be read\n",
                Some(&request_id),
            );
        }
    };
    // An upgrade request is never replayed once sent (the backend may have switched already).
    let replay_after_send = upgrade.is_none()
        && (is_idempotent(&parts.method) || parts.headers.contains_key("idempotency-key"));
    let uri = parts.uri.clone();
    let path = uri.path_and_query().map_or("/", |p| p.as_str());

    // The snapshot is only borrowed for the pick (no reference count taken); the request keeps
    // the chosen slot, and a retry picks from the snapshot current at that time.
    let (mut choice, mut picked) = {
        let snap = lb.pool.current();
        let choice =
            live.affinity
                .choose(&key, &snap, &snap.view(lb.pool.now_ms()), rand::random());
        let slot = choice.index.and_then(|i| snap.slots.get(i)).cloned();
        (choice, slot)
    };
    let mut retried = false;
    loop {
        let Some(slot) = picked.take() else {
            return refuse(lb, choice.outcome, &request_id);
        };
        let slot = &slot;
        let Some(attempt_body) = body.attempt() else {
            lb.stats.outcome(choice.outcome);
            return local(
                lb,
                StatusCode::BAD_GATEWAY,
                "bad gateway\n",
                Some(&request_id),
            );
        };
        let guard = slot.begin();
        let sent_at = Instant::now();
        if !parts.headers.contains_key(header::HOST)
            && let Ok(v) = HeaderValue::from_str(slot.authority.as_str())
        {
            // An HTTP/1.0 client may send no Host; the backend still gets one.
            parts.headers.insert(header::HOST, v);
        }
        let outgoing = Outgoing {
            method: &parts.method,
            path,
            headers: &parts.headers,
            replay_safe: replay_after_send,
        };
        let sent = tokio::time::timeout(
            live.config.limits.response_timeout,
            lb.upstreams.send(
                slot.addr,
                live.config.limits.connect_timeout,
                &outgoing,
                attempt_body,
            ),
        )
        .await;
        let failure = match sent {
            Ok(Ok(res)) => {
                let served = Served {
                    backend: Some(slot.id.clone()),
                    outcome: choice.outcome,
                    upstream: Some(sent_at.elapsed()),
                };
                let upgrade = Upgrade {
                    request: upgrade.take(),
                    conn,
                };
                let mut res = respond(
                    lb,
                    res,
                    &key,
                    choice,
                    slot,
                    guard,
                    now,
                    at,
                    &request_id,
                    upgrade,
                );
                note_served(lb, &mut res, served);
                return res;
            }
            Err(_elapsed) => {
                crate::health::passive(lb, slot, false);
                Failure::Timeout
            }
            Ok(Err(SendError::Connect(e))) => {
                tracing::debug!(backend = %slot.id, error = %e, "upstream connect failed");
                lb.pool.mark_down(slot, live.config.limits.down_backoff);
                Failure::Connect
            }
            Ok(Err(e)) => {
                tracing::debug!(backend = %slot.id, error = %e, "upstream request failed");
                Failure::AfterSend
            }
        };
        drop(guard);
        let retry = !retried
            && match failure {
                Failure::Connect => true,
                Failure::AfterSend => replay_after_send,
                Failure::Timeout => false,
            };
        if !retry {
            return failed(lb, &failure, choice.outcome, slot, &request_id);
        }
        let snap = lb.pool.current();
        let view = Excluding {
            view: snap.view(lb.pool.now_ms()),
            skip: snap.index_of(&slot.id).unwrap_or(usize::MAX),
        };
        let again = live.affinity.choose(&key, &snap, &view, rand::random());
        picked = again.index.and_then(|i| snap.slots.get(i)).cloned();
        drop(snap);
        if again.index.is_none() && again.outcome != Outcome::StrictReject {
            // Nowhere else to go: the client learns what actually happened, not "unavailable".
            return failed(lb, &failure, choice.outcome, slot, &request_id);
        }
        retried = true;
        lb.stats.retry();
        // A client that was on its bound backend has now been moved (or refused, if strict).
        choice = match (choice.outcome, again.outcome) {
            (Outcome::Hit, Outcome::Hit) => Choice {
                outcome: Outcome::Moved,
                ..again
            },
            (prev, Outcome::Hit | Outcome::New | Outcome::Unpinned) => Choice {
                outcome: prev,
                ..again
            },
            (_, other) => Choice {
                outcome: other,
                ..again
            },
        };
    }
}

/// The error response for an attempt that failed and is not retried.
fn failed(
    lb: &Lb,
    failure: &Failure,
    outcome: Outcome,
    slot: &BackendSlot,
    request_id: &HeaderValue,
) -> Response<ResponseBody> {
    lb.stats.outcome(outcome);
    let (status, text) = match failure {
        Failure::Timeout => (StatusCode::GATEWAY_TIMEOUT, "gateway timeout\n"),
        _ => (StatusCode::BAD_GATEWAY, "bad gateway\n"),
    };
    let mut res = local(lb, status, text, Some(request_id));
    let served = Served {
        backend: Some(slot.id.clone()),
        outcome,
        upstream: None,
    };
    note_served(lb, &mut res, served);
    res
}

/// Notes who served the request on the response, for the access log (only when it is on:
/// the first extension costs two allocations).
fn note_served(lb: &Lb, res: &mut Response<ResponseBody>, served: Served) {
    if lb.live.load().config.access_log {
        res.extensions_mut().insert(served);
    }
}

enum Failure {
    Connect,
    AfterSend,
    Timeout,
}

/// The client's upgrade request (if any) and its connection, for a backend's `101`.
struct Upgrade<'a> {
    request: Option<UpgradeRequest>,
    conn: &'a ConnState,
}

#[allow(clippy::too_many_arguments)]
fn respond(
    lb: &Lb,
    mut res: Response<UpstreamBody>,
    key: &Key,
    choice: Choice,
    slot: &Arc<BackendSlot>,
    guard: crate::pool::InflightGuard,
    now: u64,
    at: Instant,
    request_id: &HeaderValue,
    upgrade: Upgrade<'_>,
) -> Response<ResponseBody> {
    lb.stats.outcome(choice.outcome);
    slot.statuses.record(res.status());
    crate::health::passive(lb, slot, !crate::health::is_failure(res.status()));
    let switching = res.status() == StatusCode::SWITCHING_PROTOCOLS;
    if switching && upgrade.request.is_none() {
        tracing::debug!(backend = %slot.id, "101 to a request that asked for no upgrade");
        return local(
            lb,
            StatusCode::BAD_GATEWAY,
            "bad gateway\n",
            Some(request_id),
        );
    }
    let upstream_upgrade = switching
        .then(|| res.extensions_mut().get_mut::<SwitchedSlot>()?.0.take())
        .flatten();
    let (mut parts, body) = res.into_parts();
    let offered = if switching {
        tunnel::protocols(&parts.headers)
    } else {
        Vec::new()
    };
    lb.live.load().affinity.learn(&parts.headers, &slot.id, at);
    headers::strip_hop_by_hop(&mut parts.headers);
    let mut identity = key.identity;
    if let Some(cookie) = lb
        .live
        .load()
        .affinity
        .set_cookie(key, choice.outcome, &slot.id, now)
    {
        // The same identity a later request carrying this cookie gets: a hash of the token.
        let token = cookie
            .to_str()
            .ok()
            .and_then(|c| c.split(';').next()?.split_once('='));
        identity = token.map(|(_, t)| usher_balancer::hash_key(t.trim().as_bytes()));
        parts.headers.append(header::SET_COOKIE, cookie);
    }
    if let Some(identity) = identity {
        slot.saw_binding(identity, lb.pool.now_ms());
    }
    if !parts.headers.contains_key(&X_REQUEST_ID) {
        parts
            .headers
            .insert(X_REQUEST_ID.clone(), request_id.clone());
    }
    if let (Some(client), Some(upstream)) = (upgrade.request, upstream_upgrade) {
        // The tunnel keeps the in-flight guard; the 101 itself has no body.
        let tunnel = client.accept(&mut parts.headers, offered, upstream, slot, guard);
        upgrade.conn.hand_over_tunnel(tunnel);
        return Response::from_parts(parts, ResponseBody::local(bytes::Bytes::new()));
    }
    Response::from_parts(parts, ResponseBody::upstream(body).with_inflight(guard))
}

/// No backend could take the request (none available, or strict affinity refused a move).
fn refuse(lb: &Lb, outcome: Outcome, request_id: &HeaderValue) -> Response<ResponseBody> {
    lb.stats.outcome(outcome);
    let mut res = local(
        lb,
        StatusCode::SERVICE_UNAVAILABLE,
        "service unavailable\n",
        Some(request_id),
    );
    let secs = lb.live.load().config.limits.down_backoff.as_secs().max(1);
    res.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(secs));
    let served = Served {
        backend: None,
        outcome,
        upstream: None,
    };
    note_served(lb, &mut res, served);
    res
}

/// A response made by the load balancer; counted, and never naming a backend.
pub fn local(
    lb: &Lb,
    status: StatusCode,
    text: &'static str,
    request_id: Option<&HeaderValue>,
) -> Response<ResponseBody> {
    lb.stats.local.record(status);
    let mut res = Response::new(ResponseBody::local(text));
    *res.status_mut() = status;
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if let Some(id) = request_id {
        h.insert(X_REQUEST_ID.clone(), id.clone());
    }
    res
}

fn is_idempotent(m: &Method) -> bool {
    matches!(
        *m,
        Method::GET | Method::HEAD | Method::PUT | Method::DELETE | Method::OPTIONS | Method::TRACE
    )
}
