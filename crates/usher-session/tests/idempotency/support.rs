//! Shared harness: the shop-like handler, servers on free loopback ports, the layer over a
//! controllable clock, a small HTTP client and polling helpers.

use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tokio::sync::Notify;
use usher_session::idempotency::IdempotencyLayer;
use usher_session::{MemoryStore, SessionStore, StoreConfig};

const T0: u64 = 1_800_000_000;
pub(crate) const DEADLINE: Duration = Duration::from_secs(30);

/// What the shop-like handler shares with the test.
#[derive(Clone)]
pub(crate) struct App {
    pub(crate) runs: Arc<AtomicU64>,
    /// Handlers wait here until the test lets them finish.
    pub(crate) gate: Arc<Notify>,
    pub(crate) gated: bool,
    /// Fail with 500 while `runs` is at most this.
    pub(crate) fail_first: u64,
}

impl App {
    pub(crate) fn new() -> Self {
        Self {
            runs: Arc::new(AtomicU64::new(0)),
            gate: Arc::new(Notify::new()),
            gated: false,
            fail_first: 0,
        }
    }
}

async fn checkout(
    axum::extract::State(app): axum::extract::State<App>,
    body: Bytes,
) -> axum::response::Response {
    let n = app.runs.fetch_add(1, Ordering::SeqCst) + 1;
    if app.gated {
        app.gate.notified().await;
    }
    if n <= app.fail_first {
        return (StatusCode::INTERNAL_SERVER_ERROR, "database down").into_response();
    }
    let body = serde_json::json!({"order": n, "echo": String::from_utf8_lossy(&body)});
    (
        StatusCode::CREATED,
        [
            ("x-order-id", n.to_string()),
            ("set-cookie", format!("last_order={n}")),
            ("content-type", "application/json".to_owned()),
        ],
        body.to_string(),
    )
        .into_response()
}

pub(crate) struct Server {
    pub(crate) addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub(crate) async fn serve(app: App, layer: IdempotencyLayer) -> Server {
    let router = Router::new()
        .route("/api/checkout", post(checkout))
        .route(
            "/api/ping",
            get(|| async { "pong" }).post(|| async { "pong" }),
        )
        .with_state(app)
        .layer(layer.with_paths(&["/api/checkout"]));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        axum::serve(listener, router).await.unwrap();
    });
    Server { addr, task }
}

pub(crate) fn clock() -> (Arc<AtomicU64>, usher_session::idempotency::Clock) {
    let now = Arc::new(AtomicU64::new(T0));
    let n = now.clone();
    (now, Arc::new(move || n.load(Ordering::SeqCst)))
}

pub(crate) fn layer(
    store: Arc<dyn SessionStore>,
    clock: usher_session::idempotency::Clock,
) -> IdempotencyLayer {
    IdempotencyLayer::new(store)
        .with_principal(|p| {
            p.headers
                .get("x-user")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        })
        .with_lease(Duration::from_secs(30))
        .with_clock(clock)
}

pub(crate) fn memory() -> Arc<dyn SessionStore> {
    Arc::new(MemoryStore::new(
        StoreConfig::default(),
        NonZeroUsize::new(10_000).unwrap(),
    ))
}

pub(crate) type HttpClient = Client<HttpConnector, Full<Bytes>>;

pub(crate) fn client() -> HttpClient {
    Client::builder(TokioExecutor::new()).build_http()
}

#[derive(Debug)]
pub(crate) struct Reply {
    pub(crate) status: StatusCode,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Bytes,
}

pub(crate) async fn send(
    client: &HttpClient,
    addr: SocketAddr,
    path: &str,
    key: Option<&str>,
    user: Option<&str>,
    body: &str,
) -> Reply {
    let mut req = http::Request::builder()
        .method(Method::POST)
        .uri(format!("http://{addr}{path}"));
    if let Some(k) = key {
        req = req.header("idempotency-key", k);
    }
    if let Some(u) = user {
        req = req.header("x-user", u);
    }
    let req = req.body(Full::new(Bytes::from(body.to_owned()))).unwrap();
    let res = tokio::time::timeout(DEADLINE, client.request(req))
        .await
        .expect("request timed out")
        .unwrap();
    let (parts, body) = res.into_parts();
    let body = tokio::time::timeout(DEADLINE, body.collect())
        .await
        .expect("body timed out")
        .unwrap()
        .to_bytes();
    Reply {
        status: parts.status,
        headers: parts.headers,
        body,
    }
}

pub(crate) async fn wait_until(what: &str, cond: impl Fn() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < DEADLINE, "timed out waiting for {what}");
        tokio::task::yield_now().await;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// `(status, headers in wire order without Date, body)`: what a byte-identical replay must match.
pub(crate) fn wire(r: &Reply) -> (StatusCode, Vec<(String, Vec<u8>)>, Bytes) {
    let headers = r
        .headers
        .iter()
        .filter(|(n, _)| n.as_str() != "date")
        .map(|(n, v)| (n.to_string(), v.as_bytes().to_vec()))
        .collect();
    (r.status, headers, r.body.clone())
}

/// Retries `key` on `addr` until it is replayed (409s while the outcome is being written).
pub(crate) async fn poll_replay(c: &HttpClient, addr: SocketAddr, key: &str, body: &str) -> Reply {
    let start = Instant::now();
    loop {
        let r = send(c, addr, "/api/checkout", Some(key), Some("alice"), body).await;
        if r.headers.contains_key("idempotent-replayed") {
            return r;
        }
        assert_eq!(r.status, StatusCode::CONFLICT, "{:?}", r.body);
        assert_eq!(
            r.headers["retry-after"], "1",
            "fresh lease: short Retry-After"
        );
        assert!(
            start.elapsed() < DEADLINE,
            "the outcome never reached the store"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
