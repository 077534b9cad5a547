//! `SessionLayer` end to end through an axum router, on the real memory and SQLite stores. Store
//! outages are injected with a switchable wrapper around the memory store (the Redis-kill test with
//! a real server lives with the shop's tests).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::num::NonZeroUsize;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::routing::{get, post};
use http::{Request, Response, StatusCode, header};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tokio::sync::Notify;
use tower::ServiceExt;
use usher_session::{
    FieldOp, FieldUpdate, MemoryStore, OutagePolicy, Record, SameSite, Session, SessionError,
    SessionId, SessionInfo, SessionKey, SessionLayer, SessionStore, StoreConfig, StoreError, Touch,
};

const T0: u64 = 1_700_000_000;

/// The memory store with an off switch, to play a store outage.
#[derive(Debug)]
struct Switchable {
    inner: MemoryStore,
    down: AtomicBool,
}

impl Switchable {
    fn new() -> Arc<Self> {
        Arc::new(Self {
            // The store's idle timeout (what touch extends to) matches the layer's below.
            inner: MemoryStore::new(
                StoreConfig {
                    idle_timeout_secs: 300,
                    ..StoreConfig::default()
                },
                NonZeroUsize::new(10_000).unwrap(),
            ),
            down: AtomicBool::new(false),
        })
    }

    fn check(&self) -> Result<(), StoreError> {
        if self.down.load(Ordering::SeqCst) {
            Err(StoreError::unavailable(std::io::Error::other("store down")))
        } else {
            Ok(())
        }
    }
}

#[async_trait]
impl SessionStore for Switchable {
    async fn load(&self, key: &SessionKey, now: u64) -> Result<Option<Record>, StoreError> {
        self.check()?;
        self.inner.load(key, now).await
    }
    async fn save(
        &self,
        key: &SessionKey,
        record: &Record,
        expected: Option<u64>,
        now: u64,
    ) -> Result<u64, StoreError> {
        self.check()?;
        self.inner.save(key, record, expected, now).await
    }
    async fn update_field(
        &self,
        key: &SessionKey,
        field: &str,
        op: FieldOp,
        now: u64,
    ) -> Result<FieldUpdate, StoreError> {
        self.check()?;
        self.inner.update_field(key, field, op, now).await
    }
    async fn delete(&self, key: &SessionKey, now: u64) -> Result<bool, StoreError> {
        self.check()?;
        self.inner.delete(key, now).await
    }
    async fn touch(&self, key: &SessionKey, now: u64) -> Result<Touch, StoreError> {
        self.check()?;
        self.inner.touch(key, now).await
    }
    async fn sessions_of(&self, user: &str, now: u64) -> Result<Vec<SessionInfo>, StoreError> {
        self.check()?;
        self.inner.sessions_of(user, now).await
    }
    async fn delete_user_sessions(&self, user: &str, now: u64) -> Result<usize, StoreError> {
        self.check()?;
        self.inner.delete_user_sessions(user, now).await
    }
    async fn purge_expired(&self, now: u64) -> Result<usize, StoreError> {
        self.check()?;
        self.inner.purge_expired(now).await
    }
}

/// A test app: routes that read and change the session, a controllable clock, and a gate that
/// holds `/slow` until released.
#[derive(Clone)]
struct App {
    store: Arc<Switchable>,
    clock: Arc<AtomicU64>,
    gate: Arc<Notify>,
    entered: Arc<Notify>,
    handler_runs: Arc<AtomicUsize>,
}

impl App {
    fn new() -> Self {
        Self {
            store: Switchable::new(),
            clock: Arc::new(AtomicU64::new(T0)),
            gate: Arc::new(Notify::new()),
            entered: Arc::new(Notify::new()),
            handler_runs: Arc::new(AtomicUsize::new(0)),
        }
    }

    fn layer(&self) -> SessionLayer {
        let clock = self.clock.clone();
        SessionLayer::new(self.store.clone())
            .with_idle_timeout(Duration::from_secs(300))
            .with_absolute_timeout(Duration::from_secs(3600))
            .with_clock(Arc::new(move || clock.load(Ordering::SeqCst)))
    }

    fn router(&self, layer: SessionLayer) -> Router {
        Router::new()
            .route("/get/{field}", get(get_field))
            .route("/set/{field}/{value}", post(set_field))
            .route("/incr/{field}", post(incr))
            .route("/login/{user}", post(login))
            .route("/logout", post(logout))
            .route("/logout-everywhere", post(logout_everywhere))
            .route("/slow/{field}/{value}", post(slow_set))
            .with_state(self.clone())
            .layer(layer)
    }

    fn set_now(&self, t: u64) {
        self.clock.store(t, Ordering::SeqCst);
    }
}

async fn get_field(
    State(app): State<App>,
    session: Session,
    axum::extract::Path(field): axum::extract::Path<String>,
) -> axum::Json<Value> {
    app.handler_runs.fetch_add(1, Ordering::SeqCst);
    axum::Json(json!({
        "value": session.get(&field),
        "user": session.user(),
        "read_only": session.is_read_only(),
    }))
}

async fn set_field(
    State(app): State<App>,
    session: Session,
    axum::extract::Path((field, value)): axum::extract::Path<(String, String)>,
) -> Result<&'static str, SessionError> {
    app.handler_runs.fetch_add(1, Ordering::SeqCst);
    session.insert(&field, value)?;
    Ok("ok")
}

async fn incr(
    session: Session,
    axum::extract::Path(field): axum::extract::Path<String>,
) -> Result<axum::Json<Value>, SessionError> {
    let v = session.update(&field, FieldOp::Increment(1)).await?;
    Ok(axum::Json(v))
}

async fn login(
    session: Session,
    axum::extract::Path(user): axum::extract::Path<String>,
) -> Result<&'static str, SessionError> {
    session.login(&user).await?;
    Ok("ok")
}

async fn logout(session: Session) -> Result<&'static str, SessionError> {
    session.logout().await?;
    Ok("ok")
}

async fn logout_everywhere(session: Session) -> Result<String, SessionError> {
    Ok(session.logout_everywhere().await?.to_string())
}

async fn slow_set(
    State(app): State<App>,
    session: Session,
    axum::extract::Path((field, value)): axum::extract::Path<(String, String)>,
) -> Result<&'static str, SessionError> {
    app.entered.notify_one();
    app.gate.notified().await;
    session.insert(&field, value)?;
    Ok("ok")
}

async fn call(router: &Router, method: &str, uri: &str, cookie: Option<&str>) -> Response<Body> {
    let mut req = Request::builder().method(method).uri(uri);
    if let Some(c) = cookie {
        req = req.header(header::COOKIE, c);
    }
    router
        .clone()
        .oneshot(req.body(Body::empty()).unwrap())
        .await
        .unwrap()
}

fn set_cookie(res: &Response<Body>) -> Option<String> {
    res.headers()
        .get(header::SET_COOKIE)
        .map(|v| v.to_str().unwrap().to_owned())
}

/// `usher_sid=VALUE` from a response's Set-Cookie, for the next request's Cookie header.
fn cookie_pair(res: &Response<Body>) -> String {
    let sc = set_cookie(res).expect("a Set-Cookie");
    sc.split(';').next().unwrap().to_owned()
}

async fn json_body(res: Response<Body>) -> Value {
    let bytes = res.into_body().collect().await.unwrap().to_bytes();
    serde_json::from_slice(&bytes).unwrap()
}

#[tokio::test]
async fn a_session_is_created_on_first_write_with_safe_cookie_attributes() {
    let app = App::new();
    let r = app.router(app.layer());

    let res = call(&r, "GET", "/get/x", None).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert!(set_cookie(&res).is_none(), "reading creates nothing");
    assert!(app.store.inner.is_empty());

    let res = call(&r, "POST", "/set/theme/dark", None).await;
    assert_eq!(res.status(), StatusCode::OK);
    let sc = set_cookie(&res).unwrap();
    for attr in ["HttpOnly", "SameSite=Lax", "Path=/", "Max-Age=3600"] {
        assert!(sc.contains(attr), "{sc} lacks {attr}");
    }
    assert!(!sc.contains("Secure"), "{sc}");
    let cookie = cookie_pair(&res);

    let res = call(&r, "GET", "/get/theme", Some(&cookie)).await;
    assert!(
        set_cookie(&res).is_none(),
        "a known session needs no new cookie"
    );
    assert_eq!(json_body(res).await["value"], json!("dark"));
}

#[tokio::test]
async fn cookie_attributes_are_configurable() {
    let app = App::new();
    let layer = app
        .layer()
        .with_cookie_name("sid")
        .with_same_site(SameSite::None)
        .with_path("/shop")
        .with_domain("example.test");
    let r = app.router(layer);
    let sc = set_cookie(&call(&r, "POST", "/set/a/b", None).await).unwrap();
    assert!(sc.starts_with("sid="), "{sc}");
    for attr in [
        "SameSite=None",
        "Secure",
        "Path=/shop",
        "Domain=example.test",
    ] {
        assert!(sc.contains(attr), "{sc} lacks {attr}");
    }
}

#[tokio::test]
async fn tampered_and_unknown_ids_are_ignored_and_cleared_never_adopted() {
    let app = App::new();
    let r = app.router(app.layer());

    let res = call(&r, "GET", "/get/x", Some("usher_sid=forged-by-hand")).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert!(set_cookie(&res).unwrap().contains("Max-Age=0"), "cleared");

    // A well-formed id the server never issued (fixation attempt): not adopted.
    let planted = SessionId::random().encode();
    let res = call(
        &r,
        "POST",
        "/set/a/b",
        Some(&format!("usher_sid={planted}")),
    )
    .await;
    let issued = cookie_pair(&res);
    assert_ne!(
        issued,
        format!("usher_sid={planted}"),
        "a fresh id is issued"
    );
    assert!(
        app.store
            .inner
            .load(&SessionId::parse(&planted).unwrap().key(), T0)
            .await
            .unwrap()
            .is_none()
    );
}

#[tokio::test]
async fn login_rotates_the_id_and_keeps_the_data() {
    let app = App::new();
    let r = app.router(app.layer());
    let before = cookie_pair(&call(&r, "POST", "/set/cart/3", None).await);
    let res = call(&r, "POST", "/login/alice", Some(&before)).await;
    assert_eq!(res.status(), StatusCode::OK);
    let after = cookie_pair(&res);
    assert_ne!(before, after, "login rotates the id");

    let v = json_body(call(&r, "GET", "/get/cart", Some(&after)).await).await;
    assert_eq!(v["value"], json!("3"));
    assert_eq!(v["user"], json!("alice"));
    let old = call(&r, "GET", "/get/cart", Some(&before)).await;
    assert!(set_cookie(&old).unwrap().contains("Max-Age=0"));
    assert_eq!(
        json_body(old).await["user"],
        Value::Null,
        "the old id is dead"
    );
}

#[tokio::test]
async fn logout_during_an_in_flight_request_stays_logged_out() {
    let app = App::new();
    let r = app.router(app.layer());
    let res = call(&r, "POST", "/login/bob", None).await;
    let cookie = cookie_pair(&res);

    let slow = {
        let (r, cookie) = (r.clone(), cookie.clone());
        tokio::spawn(async move { call(&r, "POST", "/slow/cart/9", Some(&cookie)).await })
    };
    app.entered.notified().await; // the slow request has loaded the session
    assert_eq!(
        call(&r, "POST", "/logout", Some(&cookie)).await.status(),
        StatusCode::OK
    );
    app.gate.notify_one();
    let res = slow.await.unwrap();
    assert_eq!(
        res.status(),
        StatusCode::OK,
        "the handler's response stands"
    );
    assert!(
        set_cookie(&res).unwrap().contains("Max-Age=0"),
        "but the cookie is cleared"
    );

    let v = json_body(call(&r, "GET", "/get/cart", Some(&cookie)).await).await;
    assert_eq!(v["user"], Value::Null, "still logged out");
    assert_eq!(
        v["value"],
        Value::Null,
        "the late write did not resurrect it"
    );
}

#[tokio::test]
async fn concurrent_deferred_writes_to_different_fields_both_survive() {
    let app = App::new();
    let r = app.router(app.layer());
    let cookie = cookie_pair(&call(&r, "POST", "/set/a/0", None).await);

    // Both requests load version 1 before either saves: the second save conflicts, reloads and
    // re-applies only its own field.
    let first = {
        let (r, cookie) = (r.clone(), cookie.clone());
        tokio::spawn(async move { call(&r, "POST", "/slow/left/L", Some(&cookie)).await })
    };
    app.entered.notified().await;
    assert_eq!(
        call(&r, "POST", "/set/right/R", Some(&cookie))
            .await
            .status(),
        StatusCode::OK
    );
    app.gate.notify_one();
    assert_eq!(first.await.unwrap().status(), StatusCode::OK);

    for (field, want) in [("left", "L"), ("right", "R"), ("a", "0")] {
        let v = json_body(call(&r, "GET", &format!("/get/{field}"), Some(&cookie)).await).await;
        assert_eq!(v["value"], json!(want), "{field}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn parallel_atomic_updates_lose_nothing() {
    let app = App::new();
    let r = app.router(app.layer());
    let cookie = cookie_pair(&call(&r, "POST", "/set/x/y", None).await);
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let (r, cookie) = (r.clone(), cookie.clone());
        tasks.push(tokio::spawn(async move {
            for _ in 0..25 {
                let res = call(&r, "POST", "/incr/n", Some(&cookie)).await;
                assert_eq!(res.status(), StatusCode::OK);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let v = json_body(call(&r, "GET", "/get/n", Some(&cookie)).await).await;
    assert_eq!(v["value"], json!(400));
}

#[tokio::test]
async fn update_creates_a_session_when_there_is_none() {
    let app = App::new();
    let r = app.router(app.layer());
    let res = call(&r, "POST", "/incr/n", None).await;
    assert_eq!(res.status(), StatusCode::OK);
    let cookie = cookie_pair(&res);
    let res = call(&r, "POST", "/incr/n", Some(&cookie)).await;
    assert!(set_cookie(&res).is_none());
    assert_eq!(json_body(res).await, json!(2));
}

#[tokio::test]
async fn reads_extend_the_idle_expiry_at_most_once_per_interval() {
    let app = App::new();
    let r = app.router(app.layer());
    let res = call(&r, "POST", "/set/a/1", None).await;
    let cookie = cookie_pair(&res);
    let key = SessionId::parse(cookie.trim_start_matches("usher_sid="))
        .unwrap()
        .key();
    let idle = |app: &App| {
        let store = app.store.clone();
        async move {
            store
                .inner
                .load(&key, T0)
                .await
                .unwrap()
                .unwrap()
                .idle_expires_at
        }
    };
    assert_eq!(idle(&app).await, T0 + 300);

    app.set_now(T0 + 30); // within the touch interval: nothing written
    call(&r, "GET", "/get/a", Some(&cookie)).await;
    assert_eq!(idle(&app).await, T0 + 300);

    // Reading only, every 200 s, keeps a 300 s idle session alive well past 300 s.
    for t in [200, 400, 600] {
        app.set_now(T0 + t);
        let v = json_body(call(&r, "GET", "/get/a", Some(&cookie)).await).await;
        assert_eq!(v["value"], json!("1"), "alive at +{t}s");
    }
    app.set_now(T0 + 600 + 301);
    let res = call(&r, "GET", "/get/a", Some(&cookie)).await;
    assert!(
        set_cookie(&res).unwrap().contains("Max-Age=0"),
        "idle-expired"
    );
}

#[tokio::test]
async fn logout_everywhere_ends_every_session_of_the_user() {
    let app = App::new();
    let r = app.router(app.layer());
    let a = cookie_pair(&call(&r, "POST", "/login/carol", None).await);
    let b = cookie_pair(&call(&r, "POST", "/login/carol", None).await);
    let other = cookie_pair(&call(&r, "POST", "/login/dave", None).await);
    let res = call(&r, "POST", "/logout-everywhere", Some(&a)).await;
    assert!(set_cookie(&res).unwrap().contains("Max-Age=0"));
    let body = res.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(&body[..], b"2");
    for (c, user) in [
        (&a, Value::Null),
        (&b, Value::Null),
        (&other, json!("dave")),
    ] {
        let v = json_body(call(&r, "GET", "/get/x", Some(c)).await).await;
        assert_eq!(v["user"], user);
    }
}

#[tokio::test]
async fn an_outage_at_load_is_a_503_and_the_handler_never_runs() {
    let app = App::new();
    let r = app.router(app.layer());
    let cookie = cookie_pair(&call(&r, "POST", "/login/erin", None).await);
    app.store.down.store(true, Ordering::SeqCst);
    let runs = app.handler_runs.load(Ordering::SeqCst);
    let res = call(&r, "POST", "/set/cart/1", Some(&cookie)).await;
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(res.headers()[header::RETRY_AFTER], "1");
    assert!(set_cookie(&res).is_none(), "the client keeps its cookie");
    assert_eq!(
        app.handler_runs.load(Ordering::SeqCst),
        runs,
        "handler not run"
    );
    assert_eq!(
        json_body(res).await["error"],
        json!("session_store_unavailable")
    );

    app.store.down.store(false, Ordering::SeqCst);
    let v = json_body(call(&r, "GET", "/get/x", Some(&cookie)).await).await;
    assert_eq!(
        v["user"],
        json!("erin"),
        "nothing lost: the session is back"
    );
}

#[tokio::test]
async fn an_outage_at_save_is_a_503_not_a_500() {
    let app = App::new();
    let r = app.router(app.layer());
    let cookie = cookie_pair(&call(&r, "POST", "/set/a/1", None).await);
    // /slow loads the session, then the store goes down before it saves.
    let slow = {
        let (r, cookie) = (r.clone(), cookie.clone());
        tokio::spawn(async move { call(&r, "POST", "/slow/a/2", Some(&cookie)).await })
    };
    app.entered.notified().await;
    app.store.down.store(true, Ordering::SeqCst);
    app.gate.notify_one();
    let res = slow.await.unwrap();
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(res.headers().contains_key(header::RETRY_AFTER));
    app.store.down.store(false, Ordering::SeqCst);
    let v = json_body(call(&r, "GET", "/get/a", Some(&cookie)).await).await;
    assert_eq!(
        v["value"],
        json!("1"),
        "the failed write had no partial effect"
    );
}

#[tokio::test]
async fn read_only_cache_serves_known_sessions_during_an_outage() {
    let app = App::new();
    let policy = OutagePolicy::read_only_cache(
        NonZeroUsize::new(100).unwrap(),
        Duration::from_secs(60),
        Duration::from_secs(2),
    );
    let r = app.router(app.layer().with_outage_policy(policy));
    let cookie = cookie_pair(&call(&r, "POST", "/login/frank", None).await);
    let v = json_body(call(&r, "GET", "/get/x", Some(&cookie)).await).await;
    assert_eq!(v["user"], json!("frank"));

    app.store.down.store(true, Ordering::SeqCst);
    let v = json_body(call(&r, "GET", "/get/x", Some(&cookie)).await).await;
    assert_eq!(v["user"], json!("frank"), "served from the cache");
    assert_eq!(v["read_only"], json!(true));
    let res = call(&r, "POST", "/set/a/1", Some(&cookie)).await;
    assert_eq!(
        res.status(),
        StatusCode::SERVICE_UNAVAILABLE,
        "writes refused"
    );
    assert_eq!(res.headers()[header::RETRY_AFTER], "2");
    let stranger = format!("usher_sid={}", SessionId::random().encode());
    let res = call(&r, "GET", "/get/x", Some(&stranger)).await;
    assert_eq!(
        res.status(),
        StatusCode::SERVICE_UNAVAILABLE,
        "uncached: no guess"
    );

    app.set_now(T0 + 61);
    let res = call(&r, "GET", "/get/x", Some(&cookie)).await;
    assert_eq!(
        res.status(),
        StatusCode::SERVICE_UNAVAILABLE,
        "too stale to serve"
    );
}

#[tokio::test]
async fn corrupt_session_data_reads_as_signed_out() {
    let app = App::new();
    let r = app.router(app.layer());
    let cookie = cookie_pair(&call(&r, "POST", "/login/gina", None).await);
    let key = SessionId::parse(cookie.trim_start_matches("usher_sid="))
        .unwrap()
        .key();
    assert!(app.store.inner.overwrite_raw_data(&key, vec![0xff, 0x00]));
    let res = call(&r, "GET", "/get/x", Some(&cookie)).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert!(set_cookie(&res).unwrap().contains("Max-Age=0"));
    assert_eq!(json_body(res).await["user"], Value::Null);
}

#[tokio::test]
async fn sqlite_sessions_are_shared_by_two_apps_on_one_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sessions.db");
    let config = StoreConfig::default();
    let mk = |path: &std::path::Path| {
        let store: Arc<dyn SessionStore> =
            Arc::new(usher_session::SqliteStore::open(path, config).unwrap());
        Router::new()
            .route(
                "/set",
                post(|s: Session| async move { s.insert("k", "v").map(|()| "ok") }),
            )
            .route(
                "/get",
                get(|s: Session| async move { axum::Json(s.get("k")) }),
            )
            .layer(SessionLayer::new(store))
    };
    let (a, b) = (mk(&path), mk(&path));
    let cookie = cookie_pair(&call(&a, "POST", "/set", None).await);
    let v = json_body(call(&b, "GET", "/get", Some(&cookie)).await).await;
    assert_eq!(v, json!("v"), "another process's app sees the session");
}
