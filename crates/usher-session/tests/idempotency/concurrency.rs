use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::http::StatusCode;
use usher_session::{SessionStore, SqliteStore, StoreConfig};

use crate::support::{App, client, clock, layer, memory, poll_replay, send, serve, wait_until};

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
