//! The Idempotency-Key layer on real axum servers (loopback, free ports) over MemoryStore,
//! SqliteStore (also shared by two servers) and a private redis-server (outage, and the outcome
//! reaching another server). Two layers over one store stand for two replicas.
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
use usher_session::{
    FieldOp, FieldUpdate, MemoryStore, Record, SessionInfo, SessionKey, SessionStore, SqliteStore,
    StoreConfig, StoreError, Touch,
};

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
    // After completion every server replays (another server once the outcome write has landed).
    for addr in &addrs {
        let r = poll_replay(&client, *addr, "\"order-1\"", "{\"sku\":1}").await;
        assert_eq!(r.status, StatusCode::CREATED);
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

/// A 5xx releases the key in the background: a retry on the same server waits for its own
/// release and runs; another server sees the key free within a deadline and runs it too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_errors_release_the_key() {
    let (_now, clock) = clock();
    let mut app = App::new();
    app.fail_first = 2;
    let store = memory();
    let a = serve(app.clone(), layer(store.clone(), clock.clone())).await;
    let b = serve(app.clone(), layer(store, clock)).await;
    let c = client();
    let checkout = |addr| send(&c, addr, "/api/checkout", Some("k-5"), Some("alice"), "x");
    let failed = checkout(a.addr).await;
    assert_eq!(failed.status, StatusCode::INTERNAL_SERVER_ERROR);
    let again = checkout(a.addr).await;
    assert_eq!(
        again.status,
        StatusCode::INTERNAL_SERVER_ERROR,
        "a 5xx is not replayed: the retry on the same server runs at once"
    );
    assert_eq!(app.runs.load(Ordering::SeqCst), 2);
    let start = Instant::now();
    let retry = loop {
        let r = checkout(b.addr).await;
        if r.status != StatusCode::CONFLICT {
            break r;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "the release never reached the store"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    assert_eq!(
        retry.status,
        StatusCode::CREATED,
        "the retry on another server runs"
    );
    for addr in [a.addr, b.addr] {
        let replay = poll_replay(&c, addr, "k-5", "x").await;
        assert_eq!(replay.body, retry.body);
    }
    assert_eq!(app.runs.load(Ordering::SeqCst), 3);
}

/// `(status, headers in wire order without Date, body)`: what a byte-identical replay must match.
fn wire(r: &Reply) -> (StatusCode, Vec<(String, Vec<u8>)>, Bytes) {
    let headers = r
        .headers
        .iter()
        .filter(|(n, _)| n.as_str() != "date")
        .map(|(n, v)| (n.to_string(), v.as_bytes().to_vec()))
        .collect();
    (r.status, headers, r.body.clone())
}

/// Retries `key` on `addr` until it is replayed (409s while the outcome is being written).
async fn poll_replay(c: &HttpClient, addr: SocketAddr, key: &str, body: &str) -> Reply {
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

/// A store whose outcome writes (`save` over an existing version) wait until the test opens it.
#[derive(Debug)]
struct HeldWrites {
    inner: Arc<dyn SessionStore>,
    open: tokio::sync::watch::Receiver<bool>,
}

#[async_trait::async_trait]
impl SessionStore for HeldWrites {
    async fn load(&self, key: &SessionKey, now: u64) -> Result<Option<Record>, StoreError> {
        self.inner.load(key, now).await
    }
    async fn save(
        &self,
        key: &SessionKey,
        record: &Record,
        expected: Option<u64>,
        now: u64,
    ) -> Result<u64, StoreError> {
        if expected.is_some() {
            let _ = self.open.clone().wait_for(|open| *open).await;
        }
        self.inner.save(key, record, expected, now).await
    }
    async fn update_field(
        &self,
        key: &SessionKey,
        field: &str,
        op: FieldOp,
        now: u64,
    ) -> Result<FieldUpdate, StoreError> {
        self.inner.update_field(key, field, op, now).await
    }
    async fn delete(&self, key: &SessionKey, now: u64) -> Result<bool, StoreError> {
        self.inner.delete(key, now).await
    }
    async fn touch(&self, key: &SessionKey, now: u64) -> Result<Touch, StoreError> {
        self.inner.touch(key, now).await
    }
    async fn sessions_of(&self, user: &str, now: u64) -> Result<Vec<SessionInfo>, StoreError> {
        self.inner.sessions_of(user, now).await
    }
    async fn delete_user_sessions(&self, user: &str, now: u64) -> Result<usize, StoreError> {
        self.inner.delete_user_sessions(user, now).await
    }
    async fn purge_expired(&self, now: u64) -> Result<usize, StoreError> {
        self.inner.purge_expired(now).await
    }
}

/// The response does not wait for the outcome write: with that write held, the first request is
/// answered, a retry on the same server is replayed from its cache, and another server sees the
/// key running (409, `Retry-After: 1`). Once the write lands (`flushed`), the other server
/// replays the very same bytes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_outcome_is_written_after_the_response() {
    let (_now, clock) = clock();
    let app = App::new();
    let (open, held) = tokio::sync::watch::channel(false);
    let store: Arc<dyn SessionStore> = Arc::new(HeldWrites {
        inner: memory(),
        open: held,
    });
    let layer_a = layer(store.clone(), clock.clone());
    let a = serve(app.clone(), layer_a.clone()).await;
    let b = serve(app.clone(), layer(store, clock)).await;
    let c = client();
    let checkout = |addr| send(&c, addr, "/api/checkout", Some("k-10"), Some("alice"), "y");
    let first = checkout(a.addr).await;
    assert_eq!(first.status, StatusCode::CREATED);
    let local = checkout(a.addr).await;
    assert_eq!(
        local.headers["idempotent-replayed"], "true",
        "from the cache"
    );
    assert_eq!(local.body, first.body);
    let elsewhere = checkout(b.addr).await;
    assert_eq!(elsewhere.status, StatusCode::CONFLICT);
    assert_eq!(elsewhere.headers["retry-after"], "1");
    open.send_replace(true);
    tokio::time::timeout(DEADLINE, layer_a.flushed())
        .await
        .expect("the outcome write finished");
    let stored = checkout(b.addr).await;
    assert_eq!(wire(&stored), wire(&local), "cache and store replay alike");
    assert_eq!(app.runs.load(Ordering::SeqCst), 1);
}

/// Redis, two servers: the outcome reaches the other server within a deadline after the first
/// response, and its replay is byte-identical to the first server's (cached) replay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_outcome_reaches_another_server_on_redis() {
    let redis = usher_testkit::redis::RedisServer::start();
    let connect = || async {
        let opts = usher_session::RedisOptions::new(redis.url());
        let store = usher_session::RedisStore::connect_with(opts, StoreConfig::default());
        Arc::new(store.await.unwrap()) as Arc<dyn SessionStore>
    };
    let (_now, clock) = clock();
    let app = App::new();
    let a = serve(app.clone(), layer(connect().await, clock.clone())).await;
    let b = serve(app.clone(), layer(connect().await, clock)).await;
    let c = client();
    for i in 0..5 {
        let key = format!("k-r{i}");
        let first = send(&c, a.addr, "/api/checkout", Some(&key), Some("alice"), "z").await;
        assert_eq!(first.status, StatusCode::CREATED);
        let local = send(&c, a.addr, "/api/checkout", Some(&key), Some("alice"), "z").await;
        assert_eq!(local.headers["idempotent-replayed"], "true");
        let remote = poll_replay(&c, b.addr, &key, "z").await;
        assert_eq!(wire(&remote), wire(&local));
        assert_eq!(remote.body, first.body);
    }
    assert_eq!(app.runs.load(Ordering::SeqCst), 5);
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
