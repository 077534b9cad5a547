//! The Idempotency-Key layer on real axum servers (loopback, free ports) over MemoryStore,
//! SqliteStore (also shared by two servers) and a private redis-server for the outage case.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

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
use usher_session::idempotency::{Anonymous, IdempotencyLayer};
use usher_session::{MemoryStore, SessionStore, SqliteStore, StoreConfig};

const T0: u64 = 1_800_000_000;
const DEADLINE: Duration = Duration::from_secs(30);

/// What the shop-like handler shares with the test.
#[derive(Clone)]
struct App {
    runs: Arc<AtomicU64>,
    /// Handlers wait here until the test lets them finish.
    gate: Arc<Notify>,
    gated: bool,
    /// Fail with 500 while `runs` is at most this.
    fail_first: u64,
}

impl App {
    fn new() -> Self {
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

struct Server {
    addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(app: App, layer: IdempotencyLayer) -> Server {
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

fn clock() -> (Arc<AtomicU64>, usher_session::idempotency::Clock) {
    let now = Arc::new(AtomicU64::new(T0));
    let n = now.clone();
    (now, Arc::new(move || n.load(Ordering::SeqCst)))
}

fn layer(
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

fn memory() -> Arc<dyn SessionStore> {
    Arc::new(MemoryStore::new(
        StoreConfig::default(),
        NonZeroUsize::new(10_000).unwrap(),
    ))
}

type HttpClient = Client<HttpConnector, Full<Bytes>>;

fn client() -> HttpClient {
    Client::builder(TokioExecutor::new()).build_http()
}

#[derive(Debug)]
struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

async fn send(
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

async fn wait_until(what: &str, cond: impl Fn() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < DEADLINE, "timed out waiting for {what}");
        tokio::task::yield_now().await;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// 50 identical requests with one key, spread over `servers` sharing one store: the handler runs
/// once, 49 get 409 while it runs, the winner gets 201; afterwards the key replays.
async fn fifty_concurrent(stores: Vec<Arc<dyn SessionStore>>) {
    let (_now, clock) = clock();
    let mut app = App::new();
    app.gated = true;
    let mut servers = Vec::new();
    for store in stores {
        servers.push(serve(app.clone(), layer(store, clock.clone())).await);
    }
    let client = client();
    let addrs: Vec<SocketAddr> = servers.iter().map(|s| s.addr).collect();
    let tasks: Vec<_> = (0..50)
        .map(|i| {
            let (client, addr) = (client.clone(), addrs[i % addrs.len()]);
            tokio::spawn(async move {
                send(
                    &client,
                    addr,
                    "/api/checkout",
                    Some("\"order-1\""),
                    Some("alice"),
                    "{\"sku\":1}",
                )
                .await
            })
        })
        .collect();
    // Everyone but the winner is answered while the winner's handler is parked at the gate.
    let done = Arc::new(AtomicU64::new(0));
    let mut pending = Vec::new();
    for t in tasks {
        let done = done.clone();
        pending.push(tokio::spawn(async move {
            let r = t.await.unwrap();
            done.fetch_add(1, Ordering::SeqCst);
            r
        }));
    }
    wait_until("49 early answers", || done.load(Ordering::SeqCst) == 49).await;
    assert_eq!(app.runs.load(Ordering::SeqCst), 1, "the handler runs once");
    app.gate.notify_one();
    let mut created = 0;
    let mut conflicts = 0;
    for p in pending {
        let r = p.await.unwrap();
        match r.status {
            StatusCode::CREATED => created += 1,
            StatusCode::CONFLICT => {
                conflicts += 1;
                assert_eq!(r.headers["retry-after"], "1");
            }
            other => panic!("unexpected {other}: {:?}", r.body),
        }
        assert_eq!(r.headers["idempotency-key-window"], "86400");
    }
    assert_eq!((created, conflicts), (1, 49));
    assert_eq!(app.runs.load(Ordering::SeqCst), 1);
    // After completion every server replays.
    for addr in &addrs {
        let r = send(
            &client,
            *addr,
            "/api/checkout",
            Some("\"order-1\""),
            Some("alice"),
            "{\"sku\":1}",
        )
        .await;
        assert_eq!(r.status, StatusCode::CREATED);
        assert_eq!(r.headers["idempotent-replayed"], "true");
    }
    assert_eq!(app.runs.load(Ordering::SeqCst), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_concurrent_memory() {
    fifty_concurrent(vec![memory()]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_concurrent_sqlite_two_servers() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("idem.db");
    let open = || -> Arc<dyn SessionStore> {
        Arc::new(SqliteStore::open(&path, StoreConfig::default()).unwrap())
    };
    fifty_concurrent(vec![open(), open()]).await;
}

#[tokio::test]
async fn replay_is_byte_identical_and_scoped_per_user() {
    let (_now, clock) = clock();
    let app = App::new();
    let server = serve(app.clone(), layer(memory(), clock)).await;
    let c = client();
    let first = send(
        &c,
        server.addr,
        "/api/checkout",
        Some("k-1"),
        Some("alice"),
        "cart=3",
    )
    .await;
    assert_eq!(first.status, StatusCode::CREATED);
    assert!(first.headers.get("idempotent-replayed").is_none());
    assert!(first.headers.get("set-cookie").is_some());
    let again = send(
        &c,
        server.addr,
        "/api/checkout",
        Some("k-1"),
        Some("alice"),
        "cart=3",
    )
    .await;
    assert_eq!(again.status, first.status);
    assert_eq!(again.body, first.body, "body byte for byte");
    assert_eq!(again.headers["idempotent-replayed"], "true");
    let strip = |h: &HeaderMap| {
        let mut v: Vec<(String, Vec<u8>)> = h
            .iter()
            .filter(|(n, _)| !matches!(n.as_str(), "date" | "idempotent-replayed" | "set-cookie"))
            .map(|(n, v)| (n.to_string(), v.as_bytes().to_vec()))
            .collect();
        v.sort();
        v
    };
    assert_eq!(strip(&again.headers), strip(&first.headers));
    assert!(
        again.headers.get("set-cookie").is_none(),
        "cookies are not replayed"
    );
    assert_eq!(app.runs.load(Ordering::SeqCst), 1);

    // The same key from another user is another request; a quoted key equals the bare one.
    let bob = send(
        &c,
        server.addr,
        "/api/checkout",
        Some("k-1"),
        Some("bob"),
        "cart=3",
    )
    .await;
    assert_eq!(bob.status, StatusCode::CREATED);
    assert!(bob.headers.get("idempotent-replayed").is_none());
    let quoted = send(
        &c,
        server.addr,
        "/api/checkout",
        Some("\"k-1\""),
        Some("bob"),
        "cart=3",
    )
    .await;
    assert_eq!(quoted.headers["idempotent-replayed"], "true");
    assert_eq!(quoted.body, bob.body);
    assert_eq!(app.runs.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn key_rules() {
    let (_now, clock) = clock();
    let app = App::new();
    let server = serve(app.clone(), layer(memory(), clock.clone())).await;
    let c = client();
    let ok = send(
        &c,
        server.addr,
        "/api/checkout",
        Some("k-2"),
        Some("alice"),
        "a",
    )
    .await;
    assert_eq!(ok.status, StatusCode::CREATED);
    let other = send(
        &c,
        server.addr,
        "/api/checkout",
        Some("k-2"),
        Some("alice"),
        "b",
    )
    .await;
    assert_eq!(other.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(other.headers["content-type"], "application/problem+json");
    let missing = send(&c, server.addr, "/api/checkout", None, Some("alice"), "a").await;
    assert_eq!(missing.status, StatusCode::BAD_REQUEST);
    assert!(String::from_utf8_lossy(&missing.body).contains("idempotency_key_missing"));
    for bad in ["\"unterminated", "has space", "\"\"", &"x".repeat(300)] {
        let r = send(
            &c,
            server.addr,
            "/api/checkout",
            Some(bad),
            Some("alice"),
            "a",
        )
        .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{bad:.20}");
    }
    // Routes the layer does not cover need no key.
    let ping = send(&c, server.addr, "/api/ping", None, None, "").await;
    assert_eq!(ping.status, StatusCode::OK);
    assert!(ping.headers.get("idempotency-key-window").is_none());
    assert_eq!(
        app.runs.load(Ordering::SeqCst),
        1,
        "no rejected request reached the handler"
    );

    // Size limit and anonymous policy.
    let strict = serve(
        app.clone(),
        layer(memory(), clock)
            .with_max_body(16)
            .with_anonymous(Anonymous::Reject),
    )
    .await;
    let big = send(
        &c,
        strict.addr,
        "/api/checkout",
        Some("k-3"),
        Some("alice"),
        &"x".repeat(17),
    )
    .await;
    assert_eq!(big.status, StatusCode::PAYLOAD_TOO_LARGE);
    let anon = send(&c, strict.addr, "/api/checkout", Some("k-3"), None, "a").await;
    assert_eq!(anon.status, StatusCode::UNAUTHORIZED);
    assert_eq!(app.runs.load(Ordering::SeqCst), 1);
}

/// Server A takes the key and never finishes (it "crashed" mid-request); the retry on server B
/// is refused while A's lease runs, and executes once the lease has expired.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_lease_is_taken_over() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("idem.db");
    let open = || -> Arc<dyn SessionStore> {
        Arc::new(SqliteStore::open(&path, StoreConfig::default()).unwrap())
    };
    let (now, clock) = clock();
    let mut hung = App::new();
    hung.gated = true;
    let mut healthy = App::new();
    healthy.runs = hung.runs.clone();
    let a = serve(hung.clone(), layer(open(), clock.clone())).await;
    let b = serve(healthy, layer(open(), clock)).await;
    let c = client();
    let (c2, addr_a) = (c.clone(), a.addr);
    let stuck = tokio::spawn(async move {
        send(
            &c2,
            addr_a,
            "/api/checkout",
            Some("k-9"),
            Some("alice"),
            "pay",
        )
        .await
    });
    wait_until("server A running the handler", || {
        hung.runs.load(Ordering::SeqCst) == 1
    })
    .await;
    let early = send(
        &c,
        b.addr,
        "/api/checkout",
        Some("k-9"),
        Some("alice"),
        "pay",
    )
    .await;
    assert_eq!(early.status, StatusCode::CONFLICT);
    now.fetch_add(31, Ordering::SeqCst);
    let retry = send(
        &c,
        b.addr,
        "/api/checkout",
        Some("k-9"),
        Some("alice"),
        "pay",
    )
    .await;
    assert_eq!(retry.status, StatusCode::CREATED);
    assert_eq!(hung.runs.load(Ordering::SeqCst), 2, "the retry executed");
    let replay = send(
        &c,
        b.addr,
        "/api/checkout",
        Some("k-9"),
        Some("alice"),
        "pay",
    )
    .await;
    assert_eq!(replay.headers["idempotent-replayed"], "true");
    assert_eq!(replay.body, retry.body);
    stuck.abort();
    drop(a);

    // The window: a day later the key is new again.
    now.fetch_add(86_400, Ordering::SeqCst);
    let later = send(
        &c,
        b.addr,
        "/api/checkout",
        Some("k-9"),
        Some("alice"),
        "pay",
    )
    .await;
    assert_eq!(later.status, StatusCode::CREATED);
    assert!(later.headers.get("idempotent-replayed").is_none());
    assert_eq!(hung.runs.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn server_errors_release_the_key() {
    let (_now, clock) = clock();
    let mut app = App::new();
    app.fail_first = 1;
    let server = serve(app.clone(), layer(memory(), clock)).await;
    let c = client();
    let failed = send(
        &c,
        server.addr,
        "/api/checkout",
        Some("k-5"),
        Some("alice"),
        "x",
    )
    .await;
    assert_eq!(failed.status, StatusCode::INTERNAL_SERVER_ERROR);
    let retry = send(
        &c,
        server.addr,
        "/api/checkout",
        Some("k-5"),
        Some("alice"),
        "x",
    )
    .await;
    assert_eq!(
        retry.status,
        StatusCode::CREATED,
        "a 5xx is not replayed: the retry runs"
    );
    let replay = send(
        &c,
        server.addr,
        "/api/checkout",
        Some("k-5"),
        Some("alice"),
        "x",
    )
    .await;
    assert_eq!(replay.headers["idempotent-replayed"], "true");
    assert_eq!(app.runs.load(Ordering::SeqCst), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_down_answers_503_without_running_the_handler() {
    let mut redis = usher_testkit::redis::RedisServer::start();
    let opts = usher_session::RedisOptions::new(redis.url());
    let store: Arc<dyn SessionStore> = Arc::new(
        usher_session::RedisStore::connect_with(opts, StoreConfig::default())
            .await
            .unwrap(),
    );
    let (_now, clock) = clock();
    let app = App::new();
    let server = serve(app.clone(), layer(store, clock)).await;
    let c = client();
    let ok = send(
        &c,
        server.addr,
        "/api/checkout",
        Some("k-7"),
        Some("alice"),
        "x",
    )
    .await;
    assert_eq!(ok.status, StatusCode::CREATED);
    let replay = send(
        &c,
        server.addr,
        "/api/checkout",
        Some("k-7"),
        Some("alice"),
        "x",
    )
    .await;
    assert_eq!(replay.headers["idempotent-replayed"], "true");
    redis.kill();
    let down = send(
        &c,
        server.addr,
        "/api/checkout",
        Some("k-8"),
        Some("alice"),
        "x",
    )
    .await;
    assert_eq!(down.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(down.headers["retry-after"], "1");
    assert_eq!(app.runs.load(Ordering::SeqCst), 1);
}
