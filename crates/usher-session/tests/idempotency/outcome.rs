use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::http::StatusCode;
use usher_session::{
    FieldOp, FieldUpdate, Record, SessionInfo, SessionKey, SessionStore, StoreConfig, StoreError,
    Touch,
};

use crate::support::{App, DEADLINE, client, clock, layer, memory, poll_replay, send, serve, wire};

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
