//! The conformance suite against [`RedisStore`] on a private 3-master Redis Cluster and through a
//! private Sentinel, both from usher-testkit. A cluster takes seconds to form, so each test
//! function starts one deployment and runs every case on it (the cases use fresh random keys).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::cell::RefCell;
use std::sync::Arc;
use std::time::{Duration, Instant};

use usher_session::conformance::{self, CONFIG, T0};
use usher_session::{
    ErrorClass, Record, RedisOptions, RedisStore, SessionId, SessionKey, SessionStore,
};
use usher_testkit::redis::{RedisCluster, Sentinel};

async fn connect(url: &str, prefix: &str) -> RedisStore {
    RedisStore::connect_with(RedisOptions::new(url).with_prefix(prefix), CONFIG)
        .await
        .unwrap()
}

/// Every conformance case on `a` (with `b` a second store on the same deployment), except
/// `corrupt_data`, which needs raw access and is run by the callers.
async fn suite(a: RedisStore, b: RedisStore) {
    conformance::round_trip(&a).await;
    conformance::cas_conflict(&a).await;
    conformance::delete_leaves_tombstone(&a).await;
    conformance::logout_during_in_flight_request(&a).await;
    conformance::idle_and_absolute_expiry(&a).await;
    conformance::touch_throttling(&a).await;
    conformance::user_sessions(&a).await;
    conformance::shared_backing(&a, &b).await;
    conformance::purge(&a).await;
    let a: Arc<dyn SessionStore> = Arc::new(a);
    let b: Arc<dyn SessionStore> = Arc::new(b);
    conformance::concurrent_field_updates(std::slice::from_ref(&a)).await;
    conformance::concurrent_field_updates(&[a, b]).await;
}

/// Sets `key`'s stored data to undecodable bytes through `conn`.
fn corrupt_with(conn: &RefCell<impl redis::ConnectionLike>, store: &RedisStore, key: &SessionKey) {
    let n: i64 = redis::cmd("HSET")
        .arg(store.redis_key(key))
        .arg("data")
        .arg(&b"\x01\xff\x00"[..])
        .query(&mut *conn.borrow_mut())
        .unwrap();
    assert_eq!(n, 0, "the field existed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn conformance_on_a_three_master_cluster() {
    let cluster = RedisCluster::start(3);
    let a = connect(&cluster.url(), "test:").await;
    assert!(a.is_cluster());
    // A single seed is enough: the rest of the topology is discovered.
    let one_seed = format!("redis+cluster://127.0.0.1:{}", cluster.ports()[1]);
    let b = connect(&one_seed, "test:").await;

    let raw = redis::cluster::ClusterClient::new(
        cluster
            .ports()
            .iter()
            .map(|p| format!("redis://127.0.0.1:{p}/"))
            .collect::<Vec<_>>(),
    )
    .unwrap();
    let conn = RefCell::new(raw.get_connection().unwrap());
    conformance::corrupt_data(&a, |key: &SessionKey| corrupt_with(&conn, &a, key)).await;

    // Sessions spread over every master, and each session's keys share one slot.
    let spread = connect(&cluster.url(), "spread:").await;
    let rec = Record::new(Default::default(), Some("sam".into()), T0, 300, 3600);
    let keys: Vec<SessionKey> = (0..48).map(|_| SessionId::random().key()).collect();
    for key in &keys {
        spread.save(key, &rec, None, T0).await.unwrap();
    }
    for node in cluster.nodes() {
        let mut c = redis::Client::open(node.url())
            .unwrap()
            .get_connection()
            .unwrap();
        let held: Vec<String> = redis::cmd("KEYS").arg("spread:s:*").query(&mut c).unwrap();
        assert!(
            !held.is_empty(),
            "master {} holds none of the 48 sessions",
            node.port()
        );
    }
    {
        let mut c = conn.borrow_mut();
        for key in keys.iter().take(4) {
            let session = spread.redis_key(key);
            let tombstone = session.replacen("spread:s:", "spread:t:", 1);
            let mut slot = |k: &str| -> i64 {
                redis::cmd("CLUSTER")
                    .arg("KEYSLOT")
                    .arg(k)
                    .query(&mut *c)
                    .unwrap()
            };
            assert_eq!(slot(&session), slot(&tombstone), "{session}");
        }
    }
    assert_eq!(spread.sessions_of("sam", T0).await.unwrap().len(), 48);
    assert_eq!(spread.delete_user_sessions("sam", T0).await.unwrap(), 48);
    assert!(spread.sessions_of("sam", T0).await.unwrap().is_empty());
    assert_eq!(
        spread
            .purge_expired(T0 + 10 * CONFIG.tombstone_secs)
            .await
            .unwrap(),
        48
    );

    suite(a, b).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn conformance_via_sentinel() {
    let mut sentinel = Sentinel::start();
    let a = connect(&sentinel.url(), "test:").await;
    assert!(!a.is_cluster());
    let conn = RefCell::new(
        redis::Client::open(sentinel.master().url())
            .unwrap()
            .get_connection()
            .unwrap(),
    );
    conformance::corrupt_data(&a, |key: &SessionKey| corrupt_with(&conn, &a, key)).await;
    drop(conn);

    // The master restarting (empty) on its port: requests fail as Unavailable, then recover.
    let key = SessionId::random().key();
    let rec = Record::new(Default::default(), None, T0, 300, 3600);
    a.save(&key, &rec, None, T0).await.unwrap();
    sentinel.master_mut().kill();
    let err = a.load(&key, T0).await.unwrap_err();
    assert_eq!(err.class(), ErrorClass::Unavailable, "{err:?}");
    sentinel.master_mut().restart();
    let back = Instant::now();
    let fresh = SessionId::random().key();
    while let Err(e) = a.save(&fresh, &rec, None, T0).await {
        assert_eq!(e.class(), ErrorClass::Unavailable, "{e:?}");
        assert!(
            back.elapsed() < Duration::from_secs(5),
            "not back within 5 s: {e:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // A second store connected after the restart, sharing the same master.
    let b = connect(&sentinel.url(), "test:").await;
    suite(a, b).await;
}

/// A master going away makes the sessions in its slots `Unavailable` (fast, not a hang) while the
/// other masters keep serving theirs; once it is back on its port the store recovers by itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_master_restart() {
    let mut cluster = RedisCluster::start(3);
    let store = connect(&cluster.url(), "test:").await;
    let rec = Record::new(Default::default(), None, T0, 300, 3600);
    let keys: Vec<SessionKey> = (0..24).map(|_| SessionId::random().key()).collect();
    for key in &keys {
        store.save(key, &rec, None, T0).await.unwrap();
    }
    cluster.nodes_mut()[0].kill();

    let started = Instant::now();
    let mut lost = Vec::new();
    for key in &keys {
        match store.load(key, T0).await {
            Ok(found) => assert!(found.is_some(), "a session on a live master is still there"),
            Err(e) => {
                assert_eq!(e.class(), ErrorClass::Unavailable, "{e:?}");
                lost.push(*key);
            }
        }
    }
    assert!(
        !lost.is_empty() && lost.len() < keys.len(),
        "only the dead master's share fails: {} of {}",
        lost.len(),
        keys.len()
    );
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "failing operations do not hang: {:?}",
        started.elapsed()
    );

    cluster.nodes_mut()[0].restart();
    cluster.wait_ok();
    let back = Instant::now();
    for key in &lost {
        // The restarted master is empty: the session is gone, and may be created again.
        loop {
            match store.save(key, &rec, None, T0).await {
                Ok(v) => {
                    assert_eq!(v, 1);
                    break;
                }
                Err(e) => {
                    assert_eq!(e.class(), ErrorClass::Unavailable, "{e:?}");
                    assert!(
                        back.elapsed() < Duration::from_secs(10),
                        "not recovered within 10 s: {e:?}"
                    );
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }
}

/// After a Sentinel failover the store finds the new master by itself: writes to the demoted
/// one fail (`READONLY` → `Unavailable`) and trigger a Sentinel look-up, after which they land on
/// the promoted replica.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sentinel_failover_is_followed() {
    let mut sentinel = Sentinel::start_with_replica();
    let store = connect(&sentinel.url(), "test:").await;
    let rec = Record::new(Default::default(), Some("ann".into()), T0, 300, 3600);
    let before = SessionId::random().key();
    store.save(&before, &rec, None, T0).await.unwrap();

    sentinel.failover();
    let promoted = sentinel.replica().unwrap().url();
    let moved = Instant::now();
    let key = SessionId::random().key();
    loop {
        match store.save(&key, &rec, None, T0).await {
            Ok(v) => {
                assert_eq!(v, 1);
                break;
            }
            Err(e) => {
                assert_eq!(e.class(), ErrorClass::Unavailable, "{e:?}");
                assert!(
                    moved.elapsed() < Duration::from_secs(10),
                    "still writing to the old master after 10 s: {e:?}"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    let mut c = redis::Client::open(promoted)
        .unwrap()
        .get_connection()
        .unwrap();
    let on_new: bool = redis::cmd("EXISTS")
        .arg(store.redis_key(&key))
        .query(&mut c)
        .unwrap();
    assert!(on_new, "the write landed on the promoted replica");
    assert!(
        store.load(&before, T0).await.unwrap().is_some(),
        "replicated before the failover"
    );
    assert_eq!(store.sessions_of("ann", T0).await.unwrap().len(), 2);
}
