//! Test harness for the shop: real shops on ephemeral loopback ports (in this process) and a small
//! HTTP client with a cookie jar per "browser". Every response is checked for `X-Served-By`.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use http::header::{CONTENT_TYPE, COOKIE, SET_COOKIE};
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt as _, Full};
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use usher_shop::{DbSpec, PasswordCost, SessionsSpec, Shop, ShopConfig, ShopError};

/// Every request is bounded by this.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(20);

/// A shop serving on an ephemeral loopback port until dropped.
pub struct TestShop {
    pub id: String,
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), ShopError>>>,
}

impl TestShop {
    /// A shop `id` with sessions in `sessions` and users/orders in the SQLite file `db`.
    pub async fn start(id: &str, sessions: SessionsSpec, db: &Path) -> Self {
        let mut config = ShopConfig::new(id, sessions, DbSpec::Sqlite(db.to_owned()));
        config.password_cost = PasswordCost::LOW;
        Self::start_with(config).await
    }

    pub async fn start_with(config: ShopConfig) -> Self {
        let id = config.id.clone();
        // Bound before serving: connections queue in the backlog, so no readiness wait is needed.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shop = Shop::open(config).await.unwrap();
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(shop.serve(listener, async {
            let _ = rx.await;
        }));
        Self {
            id,
            addr,
            stop: Some(tx),
            task: Some(task),
        }
    }

    /// A client ("browser") for this shop with an empty jar.
    pub fn client(&self) -> Client {
        Client::new(self.addr, &self.id)
    }

    /// Graceful stop; waits (bounded) for the server to finish.
    pub async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            tokio::time::timeout(Duration::from_secs(10), task)
                .await
                .expect("shop did not stop")
                .unwrap()
                .unwrap();
        }
    }
}

impl Drop for TestShop {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

/// The quantity of `sku` in a `GET /api/cart` response (0 if absent).
pub fn cart_qty(cart: &Value, sku: &str) -> i64 {
    cart["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["sku"] == sku)
        .map_or(0, |i| i["qty"].as_i64().unwrap())
}

/// From each of `clients` (tabs or browsers), `adds` cart adds of `qty` × `sku`, all in flight
/// together; every one must answer 200.
pub async fn parallel_adds(clients: &[Client], adds: usize, sku: &str, qty: i64) {
    let mut tasks = tokio::task::JoinSet::new();
    for client in clients {
        for _ in 0..adds {
            let mut c = client.clone();
            let body = serde_json::json!({ "sku": sku, "qty": qty });
            tasks.spawn(async move {
                let r = c.post("/api/cart/items", body).await;
                assert_eq!(r.status, StatusCode::OK, "{}", r.text());
            });
        }
    }
    while let Some(done) = tasks.join_next().await {
        done.unwrap();
    }
}

/// A fresh, unguessable Idempotency-Key.
pub fn new_key() -> String {
    format!("{:032x}", rand::random::<u128>())
}

/// One response.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "not JSON ({e}): {} {:?}",
                self.status,
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// Asserts a 4xx JSON error with `code` and returns the body.
    pub fn expect_error(&self, status: u16, code: &str) -> Value {
        assert_eq!(self.status.as_u16(), status, "{}", self.text());
        let v = self.json();
        assert_eq!(v["error"], code, "{v}");
        assert!(v["message"].is_string(), "{v}");
        v
    }
}

/// A client with a cookie jar, talking to one address; checks `X-Served-By` on every reply.
#[derive(Clone)]
pub struct Client {
    inner: HyperClient<HttpConnector, Full<Bytes>>,
    base: String,
    served_by: String,
    pub jar: BTreeMap<String, String>,
}

impl Client {
    pub fn new(addr: SocketAddr, served_by: &str) -> Self {
        Self {
            inner: HyperClient::builder(TokioExecutor::new()).build_http(),
            base: format!("http://{addr}"),
            served_by: served_by.to_owned(),
            jar: BTreeMap::new(),
        }
    }

    /// The same browser (cookies) talking to another shop.
    pub fn to(&self, shop: &TestShop) -> Self {
        let mut c = shop.client();
        c.jar = self.jar.clone();
        c
    }

    pub async fn raw(
        &mut self,
        method: Method,
        path: &str,
        content_type: Option<&str>,
        body: impl Into<Bytes>,
    ) -> Reply {
        self.send(method, path, &[], content_type, body).await
    }

    /// A request with extra headers.
    pub async fn send(
        &mut self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        content_type: Option<&str>,
        body: impl Into<Bytes>,
    ) -> Reply {
        let mut req = Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        if !self.jar.is_empty() {
            let c: Vec<String> = self.jar.iter().map(|(k, v)| format!("{k}={v}")).collect();
            req = req.header(COOKIE, c.join("; "));
        }
        if let Some(ct) = content_type {
            req = req.header(CONTENT_TYPE, ct);
        }
        let req = req.body(Full::new(body.into())).unwrap();
        let res = tokio::time::timeout(REQUEST_TIMEOUT, self.inner.request(req))
            .await
            .expect("request timed out")
            .expect("request failed");
        let (parts, body) = res.into_parts();
        let body = tokio::time::timeout(REQUEST_TIMEOUT, body.collect())
            .await
            .expect("body timed out")
            .unwrap()
            .to_bytes();
        for v in parts.headers.get_all(SET_COOKIE) {
            let v = v.to_str().unwrap();
            let (pair, attrs) = v.split_once(';').unwrap_or((v, ""));
            let (name, value) = pair.split_once('=').unwrap();
            if value.is_empty() || attrs.to_ascii_lowercase().contains("max-age=0") {
                self.jar.remove(name.trim());
            } else {
                self.jar.insert(name.trim().to_owned(), value.to_owned());
            }
        }
        assert_eq!(
            parts
                .headers
                .get("x-served-by")
                .map(|v| v.to_str().unwrap()),
            Some(self.served_by.as_str()),
            "X-Served-By on {} {path}",
            parts.status
        );
        Reply {
            status: parts.status,
            headers: parts.headers,
            body,
        }
    }

    pub async fn json(&mut self, method: Method, path: &str, body: Option<Value>) -> Reply {
        match body {
            Some(b) => {
                self.raw(method, path, Some("application/json"), b.to_string())
                    .await
            }
            None => self.raw(method, path, None, Bytes::new()).await,
        }
    }

    pub async fn get(&mut self, path: &str) -> Reply {
        self.json(Method::GET, path, None).await
    }

    pub async fn post(&mut self, path: &str, body: Value) -> Reply {
        self.json(Method::POST, path, Some(body)).await
    }

    pub async fn form(&mut self, path: &str, body: &str) -> Reply {
        self.raw(
            Method::POST,
            path,
            Some("application/x-www-form-urlencoded"),
            body.to_owned(),
        )
        .await
    }

    /// `POST /api/checkout` with a fresh Idempotency-Key.
    pub async fn checkout(&mut self) -> Reply {
        let key = new_key();
        self.checkout_with(&key).await
    }

    /// `POST /api/checkout` with Idempotency-Key `key` and no body.
    pub async fn checkout_with(&mut self, key: &str) -> Reply {
        self.send(
            Method::POST,
            "/api/checkout",
            &[("idempotency-key", key)],
            None,
            "",
        )
        .await
    }

    /// Signs up (if `signup`) and signs in; asserts success.
    pub async fn sign_in(&mut self, user: &str, password: &str, signup: bool) {
        let creds = serde_json::json!({"user": user, "password": password});
        if signup {
            let r = self.post("/api/signup", creds.clone()).await;
            assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
        }
        let r = self.post("/api/login", creds).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    }
}
