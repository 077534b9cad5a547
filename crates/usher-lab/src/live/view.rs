//! What the dashboard polls: `GET /_usher/api/state`, built from the balancer's pool (state,
//! in-flight, pinned clients, request counters) and the supervisor's own knowledge (which
//! processes it killed or saw exit). The two views are reported side by side because their
//! difference is the point: right after a kill the process is dead while the balancer still
//! calls it active, until its health checks catch up.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use serde::Serialize;

use super::{Fate, Live, Store, ordinal, rates, restart_refusal};

/// The whole system, as the dashboard shows it.
#[derive(Debug, Serialize)]
pub struct StateView {
    /// `shared`, `sticky-cookie-memory`, …
    pub architecture: &'static str,
    /// Where sessions live, in words.
    pub sessions: &'static str,
    /// Balancer policy, e.g. `least-conn`.
    pub policy: &'static str,
    /// Balancer affinity, e.g. `cookie`.
    pub affinity: String,
    /// The shop through the balancer: `http://<listen>/`.
    pub shop_url: String,
    /// The session store.
    pub store: StoreView,
    /// Seconds of rate history a shop's `history` covers at most.
    pub window_s: usize,
    /// Sum of the shops' current rates.
    pub total_rps: f64,
    /// Every shop the supervisor runs or the balancer routes to, by ordinal.
    pub shops: Vec<ShopView>,
}

/// The session store.
#[derive(Debug, Serialize)]
pub struct StoreView {
    /// `sqlite`, `redis`, `redis-cluster`, `postgres`.
    pub kind: &'static str,
    /// Whether `POST /_usher/api/store/restart` can do anything.
    pub restartable: bool,
    /// Why not, when it cannot.
    pub reason: Option<&'static str>,
    /// Restarts so far.
    pub restarts: u32,
    /// Whether the architecture uses the store at all (memory architectures do not).
    pub used: bool,
    /// The private server's URL (loopback, no credentials); `None` for other stores, whose
    /// URLs may carry passwords.
    pub url: Option<String>,
}

/// One shop.
#[derive(Debug, Serialize)]
pub struct ShopView {
    /// `shop-N`.
    pub id: String,
    /// Its address.
    pub addr: String,
    /// `killed` (by the dashboard), `down` (exited, or the balancer finds it failing),
    /// `draining` or `active`.
    pub state: &'static str,
    /// The balancer's own view, `None` once it left the pool.
    pub lb_state: Option<&'static str>,
    /// `running`, `killed`, `exited`, or `external` (a backend added through the admin API).
    pub process: &'static str,
    /// Requests in flight to it.
    pub inflight: u64,
    /// Distinct clients pinned to it recently (affinity architectures).
    pub pinned_clients: usize,
    /// Requests forwarded to it so far.
    pub requests: u64,
    /// Requests per second over the last second.
    pub rps: f64,
    /// Requests per second, one a second, oldest first.
    pub history: Vec<f64>,
}

impl Live {
    /// The current state.
    pub async fn state(&self) -> StateView {
        let snapshot = self.lb.pool().snapshot();
        let now = self.lb.pool().now_ms();
        let config = self.lb.config();
        let window = u64::try_from(config.cookie.idle_timeout.as_millis()).unwrap_or(u64::MAX);
        // Ordered by ordinal (shop-10 after shop-9); ids that are not shop-N go last.
        let mut rows: BTreeMap<(usize, String), ShopView> = BTreeMap::new();
        let procs: BTreeMap<usize, (Fate, SocketAddr)> = {
            let shops = self.shops.lock().await;
            shops
                .map
                .iter()
                .map(|(n, s)| (*n, (s.fate, s.addr)))
                .collect()
        };
        {
            let rates = self.lock_rates();
            for slot in &snapshot.slots {
                let id = slot.id.as_str().to_owned();
                let n = ordinal(&id);
                let fate = n.and_then(|n| procs.get(&n)).map(|(f, _)| *f);
                let lb_state = slot.state(now).as_str();
                rows.insert(
                    (n.unwrap_or(usize::MAX), id.clone()),
                    ShopView {
                        addr: slot.addr.to_string(),
                        state: overall(fate, Some(lb_state)),
                        lb_state: Some(lb_state),
                        process: fate.map_or("external", Fate::as_str),
                        inflight: slot.inflight(),
                        pinned_clients: slot.pinned_clients(now, window),
                        requests: slot.requests(),
                        rps: rates.current(&id),
                        history: rates.history(&id),
                        id,
                    },
                );
            }
        }
        // Supervised shops the pool no longer holds (until the next tick stops them).
        for (n, (fate, addr)) in procs {
            let id = super::shop_id(n);
            rows.entry((n, id.clone())).or_insert_with(|| ShopView {
                id,
                addr: addr.to_string(),
                state: overall(Some(fate), None),
                lb_state: None,
                process: fate.as_str(),
                inflight: 0,
                pinned_clients: 0,
                requests: 0,
                rps: 0.0,
                history: Vec::new(),
            });
        }
        let shops: Vec<ShopView> = rows.into_values().collect();
        let store = self.store.lock().await;
        let (restartable, url) = match &store.store {
            Store::Private(r) => (true, Some(r.url.clone())),
            Store::Embedded | Store::External => (false, None),
        };
        StateView {
            architecture: self.arch.as_str(),
            sessions: sessions_in_words(self.arch),
            policy: config.policy.as_str(),
            affinity: config.affinity.to_string(),
            shop_url: format!("http://{}/", self.listen),
            store: StoreView {
                kind: self.store_kind,
                restartable,
                reason: (!restartable).then(|| restart_refusal(&store.store)),
                restarts: store.restarts,
                used: !self.arch.memory_sessions(),
                url,
            },
            window_s: rates::WINDOW,
            total_rps: shops.iter().map(|s| s.rps).sum(),
            shops,
        }
    }
}

/// One word for a shop: what the supervisor did to it wins over what the balancer believes.
fn overall(fate: Option<Fate>, lb_state: Option<&'static str>) -> &'static str {
    match (fate, lb_state) {
        (Some(Fate::Killed), _) => "killed",
        (Some(Fate::Exited), _) => "down",
        (_, Some(s)) => s,
        // Out of the pool, process still up: its drain ended and it is being stopped.
        (_, None) => "removed",
    }
}

fn sessions_in_words(arch: crate::Architecture) -> &'static str {
    use crate::Architecture as A;
    match arch {
        A::RrMemory | A::StickyCookieMemory | A::StickyIpMemory => {
            "in each shop's memory: a shop that dies takes its sessions with it"
        }
        A::Shared | A::Hybrid => "in the shared store: any shop can serve any user",
        A::Jwt => "in signed tokens the client holds; carts in the database",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_supervisor_knows_first() {
        assert_eq!(overall(Some(Fate::Killed), Some("active")), "killed");
        assert_eq!(overall(Some(Fate::Exited), Some("active")), "down");
        assert_eq!(overall(Some(Fate::Running), Some("draining")), "draining");
        assert_eq!(overall(None, Some("down")), "down");
        assert_eq!(overall(Some(Fate::Running), None), "removed");
    }
}
