use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use usher_session::{SessionStore, SqliteStore, StoreConfig};

use crate::support::{
    App, DEADLINE, client, clock, layer, memory, poll_replay, send, serve, wait_until,
};

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
