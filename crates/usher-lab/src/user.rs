//! One virtual user: sign in, browse, fill the cart (sometimes from two tabs at once), check out
//! (sometimes sending the checkout twice, as a client does after a timeout), sign out — in a loop
//! until the run ends, noting everything from its own point of view: a 401 while signed in is a
//! lost session, an added item missing from the cart is a lost item, a second order for one
//! checkout is a duplicate.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::header::HeaderName;
use http::{Method, StatusCode};
use rand::{Rng as _, SeedableRng as _};
use rand_chacha::ChaCha8Rng;
use serde_json::{Value, json};

use crate::client::{Client, Jar, Reply};
use crate::stats::Recorder;

/// What every user shares.
#[derive(Debug)]
pub struct Ctx {
    /// Client to the load balancer.
    pub client: Client,
    /// When the run's clock started.
    pub start: Instant,
    /// When users stop.
    pub deadline: Instant,
    /// Skus to add.
    pub skus: Vec<String>,
    /// Pause between a user's requests, milliseconds.
    pub think_ms: (u64, u64),
    /// Share of checkouts sent twice with one Idempotency-Key.
    pub retry_share: f64,
}

/// One user's identity and habits, fixed by the seed.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Account name.
    pub name: String,
    /// Password.
    pub password: String,
    /// The client address the load balancer sees (sent as a trusted `X-Forwarded-For`).
    pub ip: String,
    /// Adds items from two tabs in parallel.
    pub two_tabs: bool,
    /// The user's RNG seed.
    pub seed: u64,
}

struct User<'a> {
    ctx: &'a Ctx,
    plan: &'a Plan,
    rng: ChaCha8Rng,
    jar: Jar,
    rec: Recorder,
    signed_in: bool,
    cart: BTreeMap<String, i64>,
    orders: Option<usize>,
}

/// Runs the user until the deadline; returns what it saw.
pub async fn run(ctx: Arc<Ctx>, plan: Plan) -> Recorder {
    let mut user = User {
        ctx: &ctx,
        rng: ChaCha8Rng::seed_from_u64(plan.seed),
        plan: &plan,
        jar: Jar::default(),
        rec: Recorder::default(),
        signed_in: false,
        cart: BTreeMap::new(),
        orders: None,
    };
    // Spread the users' first requests over the first second.
    user.pause(0, 1000).await;
    let mut first_login = true;
    while Instant::now() < ctx.deadline {
        if !user.signed_in {
            if !user.login().await {
                user.think().await;
                continue;
            }
            if !first_login {
                user.rec.relogins += 1;
            }
            first_login = false;
        }
        user.cycle().await;
        if user.signed_in && user.rng.random_bool(0.3) {
            user.send(Method::POST, "/api/logout", &[], None).await;
            user.signed_in = false;
            user.cart.clear();
            user.orders = None;
            first_login = true;
        }
        user.think().await;
    }
    user.rec
}

impl User<'_> {
    async fn pause(&mut self, lo: u64, hi: u64) {
        let ms = self.rng.random_range(lo..=hi);
        let until = (Instant::now() + Duration::from_millis(ms)).min(self.ctx.deadline);
        tokio::time::sleep_until(until.into()).await;
    }

    async fn think(&mut self) {
        let (lo, hi) = self.ctx.think_ms;
        self.pause(lo, hi).await;
    }

    fn xff(&self) -> (HeaderName, String) {
        (
            HeaderName::from_static("x-forwarded-for"),
            self.plan.ip.clone(),
        )
    }

    async fn send(
        &mut self,
        method: Method,
        path: &str,
        extra: &[(HeaderName, String)],
        body: Option<&Value>,
    ) -> Reply {
        let mut headers = vec![self.xff()];
        headers.extend_from_slice(extra);
        let reply = self
            .ctx
            .client
            .send(&mut self.jar, method, path, &headers, body)
            .await;
        self.rec.record(self.ctx.start.elapsed(), &reply);
        self.check_session(&reply);
        reply
    }

    /// A 401 to a signed-in user is a lost session: its cart is lost with it.
    fn check_session(&mut self, reply: &Reply) {
        if self.signed_in && reply.status == Some(StatusCode::UNAUTHORIZED) {
            self.rec.sessions_lost += 1;
            self.rec.cart_items_lost += self.cart.values().map(|q| q.unsigned_abs()).sum::<u64>();
            self.cart.clear();
            self.signed_in = false;
            self.orders = None;
        }
    }

    /// Signs in from the same browser: the jar keeps its cookies (the load balancer's affinity
    /// cookie among them), as a real browser does across a sign-out.
    async fn login(&mut self) -> bool {
        let body = json!({ "user": self.plan.name, "password": self.plan.password });
        let reply = self
            .send(Method::POST, "/api/login", &[], Some(&body))
            .await;
        self.signed_in = reply.ok();
        if reply.status.is_some_and(|s| s.is_client_error()) {
            self.rec.error("login-rejected");
        }
        self.signed_in
    }

    async fn cycle(&mut self) {
        self.send(Method::GET, "/api/me", &[], None).await;
        if !self.signed_in {
            return;
        }
        self.think().await;
        if self.rng.random_bool(0.3) {
            self.send(Method::GET, "/", &[], None).await;
            self.think().await;
        }
        let n = self.rng.random_range(1..=4);
        if self.plan.two_tabs {
            self.add_from_two_tabs(n).await;
        } else {
            for _ in 0..n {
                self.add_item().await;
                if !self.signed_in {
                    return;
                }
                self.think().await;
            }
        }
        if !self.signed_in {
            return;
        }
        self.view_cart().await;
        if self.signed_in && !self.cart.is_empty() {
            self.think().await;
            self.checkout().await;
        }
    }

    fn pick_item(&mut self) -> (String, i64) {
        let i = self.rng.random_range(0..self.ctx.skus.len());
        (self.ctx.skus[i].clone(), self.rng.random_range(1..=3))
    }

    async fn add_item(&mut self) {
        let (sku, qty) = self.pick_item();
        let body = json!({ "sku": sku, "qty": qty });
        let reply = self
            .send(Method::POST, "/api/cart/items", &[], Some(&body))
            .await;
        if reply.ok() {
            *self.cart.entry(sku).or_default() += qty;
            self.rec.cart_items_added += qty.unsigned_abs();
        }
    }

    /// Two tabs of one browser (one cookie jar) add items at the same moment.
    async fn add_from_two_tabs(&mut self, n: usize) {
        let items: Vec<_> = (0..2 * n).map(|_| self.pick_item()).collect();
        let (a, b) = items.split_at(n);
        let headers = vec![self.xff()];
        let tab = |items: Vec<(String, i64)>, mut jar: Jar| {
            let client = self.ctx.client.clone();
            let headers = headers.clone();
            async move {
                let mut replies = Vec::new();
                for (sku, qty) in items {
                    let body = json!({ "sku": sku, "qty": qty });
                    let reply = client
                        .send(
                            &mut jar,
                            Method::POST,
                            "/api/cart/items",
                            &headers,
                            Some(&body),
                        )
                        .await;
                    replies.push((sku, qty, reply));
                }
                (replies, jar)
            }
        };
        let ((ra, jar), (rb, _)) = tokio::join!(
            tab(a.to_vec(), self.jar.clone()),
            tab(b.to_vec(), self.jar.clone())
        );
        self.jar = jar;
        let at = self.ctx.start.elapsed();
        for (sku, qty, reply) in ra.into_iter().chain(rb) {
            self.rec.record(at, &reply);
            if reply.ok() && self.signed_in {
                *self.cart.entry(sku).or_default() += qty;
                self.rec.cart_items_added += qty.unsigned_abs();
            }
            self.check_session(&reply);
        }
    }

    async fn view_cart(&mut self) {
        let reply = self.send(Method::GET, "/api/cart", &[], None).await;
        let Some(seen) = reply
            .ok()
            .then(|| reply.json())
            .flatten()
            .map(|v| cart_items(&v))
        else {
            return;
        };
        let lost: i64 = self
            .cart
            .iter()
            .map(|(sku, &want)| (want - seen.get(sku).copied().unwrap_or(0)).max(0))
            .sum();
        self.rec.cart_items_lost += lost.unsigned_abs();
        self.cart = seen;
    }

    async fn order_count(&mut self) -> Option<usize> {
        let reply = self.send(Method::GET, "/api/orders", &[], None).await;
        reply
            .ok()
            .then(|| reply.json())
            .flatten()
            .map(|v| order_count(&v))
    }

    async fn checkout(&mut self) {
        if self.orders.is_none() {
            self.orders = self.order_count().await;
        }
        let Some(before) = self.orders else { return };
        let key = format!("{:032x}", self.rng.random::<u128>());
        let headers = [(HeaderName::from_static("idempotency-key"), key)];
        let reply = if self.rng.random_bool(self.ctx.retry_share) {
            // The first attempt "times out" from the client's view: the retry goes out while it
            // is still in flight, with the same key.
            self.rec.retried_checkouts += 1;
            let first = {
                let client = self.ctx.client.clone();
                let mut jar = self.jar.clone();
                let mut headers = headers.to_vec();
                headers.push(self.xff());
                async move {
                    client
                        .send(&mut jar, Method::POST, "/api/checkout", &headers, None)
                        .await
                }
            };
            let retry = async {
                tokio::time::sleep(Duration::from_millis(5)).await;
                self.send(Method::POST, "/api/checkout", &headers, None)
                    .await
            };
            let (first, reply) = tokio::join!(first, retry);
            self.rec.record(self.ctx.start.elapsed(), &first);
            reply
        } else {
            self.send(Method::POST, "/api/checkout", &headers, None)
                .await
        };
        if !self.signed_in {
            return;
        }
        self.cart.clear();
        let Some(after) = self.order_count().await else {
            return;
        };
        if reply.ok() {
            self.rec.checkouts += 1;
        }
        self.rec.duplicate_orders += after.saturating_sub(before + 1) as u64;
        self.orders = Some(after);
    }
}

/// sku → quantity from a cart response: `{"items": [{"sku", "qty"}, …]}`.
pub fn cart_items(v: &Value) -> BTreeMap<String, i64> {
    let mut out = BTreeMap::new();
    let items = v.get("items").and_then(Value::as_array);
    for item in items.into_iter().flatten() {
        if let (Some(sku), Some(qty)) = (
            item.get("sku").and_then(Value::as_str),
            item.get("qty").and_then(Value::as_i64),
        ) {
            *out.entry(sku.to_owned()).or_default() += qty;
        }
    }
    out
}

/// The number of orders in an orders response: a JSON array or `{"orders": [...]}`.
pub fn order_count(v: &Value) -> usize {
    v.as_array()
        .or_else(|| v.get("orders").and_then(Value::as_array))
        .map_or(0, Vec::len)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_carts_and_orders() {
        let cart = json!({"items": [{"sku": "a", "qty": 2}, {"sku": "b", "qty": 1}, {"sku": "a", "qty": 1}]});
        let items = cart_items(&cart);
        assert_eq!(items["a"], 3);
        assert_eq!(items["b"], 1);
        assert!(cart_items(&json!({})).is_empty());
        assert_eq!(order_count(&json!([1, 2])), 2);
        assert_eq!(order_count(&json!({"orders": [1]})), 1);
        assert_eq!(order_count(&json!(null)), 0);
    }
}
