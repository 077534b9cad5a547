//! Health: active HTTP checks per backend (rise/fall thresholds) and passive ejection from what
//! the request path sees (consecutive 5xx or timed-out responses; a refused connection ejects at
//! once, see `Pool::mark_down`). Every state change is logged once, with its reason.

use std::collections::HashMap;
use std::sync::Arc;

use http::{Request, StatusCode, Uri, header};
use tokio::task::JoinSet;
use usher_balancer::BackendId;

use crate::Lb;
use crate::body::AttemptBody;
use crate::pool::BackendSlot;

/// Runs active checks until the task is dropped; returns at once when no check path is set.
/// Runs active checks until the task is dropped. Settings are re-read every round, so a reload
/// can turn checks on, off or change them.
pub async fn run_checks(lb: Arc<Lb>) {
    let mut streaks: HashMap<BackendId, Streak> = HashMap::new();
    loop {
        let h = lb.config().health.clone();
        tokio::time::sleep(h.interval).await;
        let Some(path) = h.path.clone() else {
            streaks.clear();
            continue;
        };
        let snap = lb.pool.snapshot();
        let mut probes = JoinSet::new();
        for slot in &snap.slots {
            let (lb, slot, path) = (Arc::clone(&lb), Arc::clone(slot), path.clone());
            probes.spawn(async move {
                let verdict = probe(&lb, &slot, &path).await;
                (slot, verdict)
            });
        }
        while let Some(Ok((slot, verdict))) = probes.join_next().await {
            let streak = streaks.entry(slot.id.clone()).or_default();
            match verdict {
                Ok(()) => {
                    streak.ok += 1;
                    streak.failed = 0;
                    if streak.ok >= h.rise && slot.set_check_ok(true) {
                        slot.start_ramp(lb.pool.now_ms());
                        tracing::info!(backend = %slot.id, checks = streak.ok, "backend up: health checks pass");
                    }
                }
                Err(reason) => {
                    streak.failed += 1;
                    streak.ok = 0;
                    if streak.failed >= h.fall && slot.set_check_ok(false) {
                        tracing::warn!(backend = %slot.id, checks = streak.failed, %reason, "backend down: health checks fail");
                    }
                }
            }
        }
        // Forget backends that left the pool.
        streaks.retain(|id, _| snap.index_of(id).is_some());
    }
}

#[derive(Debug, Default)]
struct Streak {
    ok: u32,
    failed: u32,
}

/// One check: `GET path` with the configured timeout and expected status.
async fn probe(lb: &Lb, slot: &BackendSlot, path: &str) -> Result<(), String> {
    let uri = Uri::builder()
        .scheme("http")
        .authority(slot.authority.clone())
        .path_and_query(path)
        .build()
        .map_err(|e| format!("bad check URI: {e}"))?;
    let req = Request::get(uri)
        .header(header::HOST, slot.authority.as_str())
        .header(header::USER_AGENT, "usher-health")
        .body(AttemptBody::Empty)
        .map_err(|e| format!("bad check request: {e}"))?;
    let live = lb.live();
    let h = &live.config.health;
    let res = tokio::time::timeout(h.timeout, live.client.request(req))
        .await
        .map_err(|_| format!("no response within {:?}", h.timeout))?
        .map_err(|e| format!("request failed: {e}"))?;
    let status = res.status();
    let ok = match h.expect_status {
        Some(code) => status.as_u16() == code,
        None => status.is_success() || status.is_redirection(),
    };
    if ok {
        Ok(())
    } else {
        Err(format!("status {status}"))
    }
}

/// Feeds one response (or timeout) into passive ejection: `ok == false` for a 5xx or a timeout.
pub fn passive(lb: &Lb, slot: &BackendSlot, ok: bool) {
    let live = lb.live.load();
    let limit = live.config.health.passive_failures;
    if ok {
        slot.passive_success();
    } else if limit > 0 && slot.passive_failure() >= limit {
        if !ejection_leaves_enough(lb) {
            tracing::debug!(backend = %slot.id, "not ejected: half the backends are out already");
            return;
        }
        let reason = format!("{limit} failed responses in a row");
        lb.pool
            .eject(slot, live.config.health.passive_backoff, &reason);
    }
}

/// Whether one more passive ejection still leaves at least half of the backends that could serve
/// (not draining, passing active checks) taking new work.
///
/// When most backends fail at once, the fault is almost always something they share — the session
/// store or database is down — not the backends. Ejecting them all would turn the app's own 503s
/// (with their `Retry-After`) into the balancer's, and keep refusing traffic for the whole back-off
/// after the dependency is back (measured: about 10 s instead of well under one). So passive
/// ejection stops at half, like Envoy's `max_ejection_percent`. A backend that refuses
/// connections is not passive ejection: it is taken out regardless (`Pool::eject` from the
/// forwarding path), and active health checks are not capped either.
fn ejection_leaves_enough(lb: &Lb) -> bool {
    let snap = lb.pool.snapshot();
    let now = lb.pool.now_ms();
    let could_serve = snap
        .slots
        .iter()
        .filter(|s| s.state(now) != crate::BackendState::Draining && s.check_ok())
        .count();
    let serving = snap.slots.iter().filter(|s| s.takes_new(now)).count();
    serving > could_serve.div_ceil(2)
}

/// Whether a status counts as a failure for passive ejection.
pub fn is_failure(status: StatusCode) -> bool {
    status.is_server_error()
}
