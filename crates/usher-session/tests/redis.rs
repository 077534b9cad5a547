//! The conformance suite against a single-node [`RedisStore`], each test on its own throwaway
//! `redis-server` from usher-testkit (never the shared one on 6379), plus the cases only a
//! network store has. Cluster and Sentinel are in `redis_cluster.rs`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use usher_session::conformance::{self, CONFIG, T0};
use usher_session::{
    ErrorClass, Record, RedisOptions, RedisStore, SessionId, SessionKey, SessionStore, StoreError,
};
use usher_testkit::redis::RedisServer as Server;

async fn store_with_prefix(server: &Server, prefix: &str) -> RedisStore {
    let opts = RedisOptions::new(server.url()).with_prefix(prefix);
    RedisStore::connect_with(opts, CONFIG).await.unwrap()
}

async fn setup() -> (Server, RedisStore) {
    let server = Server::start();
    let store = store_with_prefix(&server, "test:").await;
    (server, store)
}

fn raw(server: &Server) -> redis::Connection {
    redis::Client::open(server.url())
        .unwrap()
        .get_connection()
        .unwrap()
}

#[tokio::test]
async fn round_trip() {
    let (_server, store) = setup().await;
    conformance::round_trip(&store).await;
}

#[tokio::test]
async fn cas_conflict() {
    let (_server, store) = setup().await;
    conformance::cas_conflict(&store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_field_updates() {
    let (_server, store) = setup().await;
    let s: Arc<dyn SessionStore> = Arc::new(store);
    conformance::concurrent_field_updates(&[s]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_field_updates_across_two_stores() {
    let (server, a) = setup().await;
    let b = store_with_prefix(&server, "test:").await;
    let a: Arc<dyn SessionStore> = Arc::new(a);
    let b: Arc<dyn SessionStore> = Arc::new(b);
    conformance::concurrent_field_updates(&[a, b]).await;
}

#[tokio::test]
async fn delete_leaves_tombstone() {
    let (_server, store) = setup().await;
    conformance::delete_leaves_tombstone(&store).await;
}

#[tokio::test]
async fn logout_during_in_flight_request() {
    let (_server, store) = setup().await;
    conformance::logout_during_in_flight_request(&store).await;
}

#[tokio::test]
async fn idle_and_absolute_expiry() {
    let (_server, store) = setup().await;
    conformance::idle_and_absolute_expiry(&store).await;
}

#[tokio::test]
async fn touch_throttling() {
    let (_server, store) = setup().await;
    conformance::touch_throttling(&store).await;
}

#[tokio::test]
async fn user_sessions() {
    let (_server, store) = setup().await;
    conformance::user_sessions(&store).await;
}

#[tokio::test]
async fn corrupt_data() {
    let (server, store) = setup().await;
    let conn = std::cell::RefCell::new(raw(&server));
    for bytes in [&b"\x01\xff\x00"[..], &b""[..]] {
        conformance::corrupt_data(&store, |key: &SessionKey| {
            let n: i64 = redis::cmd("HSET")
                .arg(store.redis_key(key))
                .arg("data")
                .arg(bytes)
                .query(&mut *conn.borrow_mut())
                .unwrap();
            assert_eq!(n, 0, "the field existed");
        })
        .await;
    }
}

#[tokio::test]
async fn corrupt_columns_are_errors() {
    let (server, store) = setup().await;
    let key = SessionId::random().key();
    let rec = Record::new(Default::default(), None, T0, 300, 3600);
    store.save(&key, &rec, None, T0).await.unwrap();
    let _: i64 = redis::cmd("HSET")
        .arg(store.redis_key(&key))
        .arg("created")
        .arg("-5")
        .query(&mut raw(&server))
        .unwrap();
    let err = store.load(&key, T0).await.unwrap_err();
    assert!(matches!(err, StoreError::Corrupt(_)), "{err:?}");
    let err = store
        .save(&key, &rec, Some(1), T0)
        .await
        .expect_err("a corrupt column is not overwritten blindly");
    assert!(matches!(err, StoreError::Corrupt(_)), "{err:?}");
}

/// The cases use fresh random keys, so they also pass one after another on one server and prefix.
#[tokio::test]
async fn all_cases_on_one_store() {
    let (_server, store) = setup().await;
    conformance::round_trip(&store).await;
    conformance::cas_conflict(&store).await;
    conformance::delete_leaves_tombstone(&store).await;
    conformance::logout_during_in_flight_request(&store).await;
    conformance::idle_and_absolute_expiry(&store).await;
    conformance::touch_throttling(&store).await;
    conformance::user_sessions(&store).await;
    conformance::purge(&store).await;
}

#[tokio::test]
async fn purge() {
    let (_server, store) = setup().await;
    conformance::purge(&store).await;
}

#[tokio::test]
async fn shared_backing_two_stores_one_server() {
    let (server, a) = setup().await;
    let b = store_with_prefix(&server, "test:").await;
    conformance::shared_backing(&a, &b).await;
}

/// Stores with different prefixes do not see each other; only hashed keys are stored, and every
/// key has a TTL (garbage collection).
#[tokio::test]
async fn prefixes_isolate_and_keys_are_hashed_with_ttls() {
    let (server, a) = setup().await;
    let b = store_with_prefix(&server, "other:").await;
    let id = SessionId::random();
    let key = id.key();
    let rec = Record::new(Default::default(), Some("zoe".into()), T0, 300, 3600);
    a.save(&key, &rec, None, T0).await.unwrap();
    assert!(b.load(&key, T0).await.unwrap().is_none());
    assert!(b.sessions_of("zoe", T0).await.unwrap().is_empty());
    assert_eq!(b.save(&key, &rec, None, T0).await.unwrap(), 1);

    let mut conn = raw(&server);
    let keys: Vec<String> = redis::cmd("KEYS").arg("*").query(&mut conn).unwrap();
    assert_eq!(keys.len(), 4, "{keys:?}");
    for k in &keys {
        assert!(!k.contains(&id.encode()), "the id itself is never stored");
        let ttl: i64 = redis::cmd("TTL").arg(k).query(&mut conn).unwrap();
        assert!(ttl > 0, "{k} has a TTL");
    }
    assert!(keys.contains(&a.redis_key(&key)));
    let ttl: i64 = redis::cmd("TTL")
        .arg(a.redis_key(&key))
        .query(&mut conn)
        .unwrap();
    assert_eq!(ttl as u64, 3600 + CONFIG.tombstone_secs);
    a.delete(&key, T0).await.unwrap();
    let ttl: i64 = redis::cmd("TTL")
        .arg(format!("test:t:{}", &a.redis_key(&key)["test:s:".len()..]))
        .query(&mut conn)
        .unwrap();
    assert_eq!(ttl as u64, CONFIG.tombstone_secs);
}

/// Redis going away is `Unavailable` (fast, with the source kept); once it is back on the same
/// port the store reconnects by itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unavailable_then_reconnects() {
    let (mut server, store) = setup().await;
    let key = SessionId::random().key();
    let rec = Record::new(Default::default(), None, T0, 300, 3600);
    store.save(&key, &rec, None, T0).await.unwrap();
    server.kill();

    let started = Instant::now();
    for _ in 0..3 {
        let err = store.load(&key, T0).await.unwrap_err();
        assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");
        assert_eq!(err.class(), ErrorClass::Unavailable);
        assert!(std::error::Error::source(&err).is_some(), "source kept");
        let err = store.save(&key, &rec, Some(1), T0).await.unwrap_err();
        assert_eq!(err.class(), ErrorClass::Unavailable, "{err:?}");
    }
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "failing operations do not hang: {:?}",
        started.elapsed()
    );

    server.restart();
    let back = Instant::now();
    let fresh = SessionId::random().key();
    loop {
        match store.save(&fresh, &rec, None, T0).await {
            Ok(v) => {
                assert_eq!(v, 1);
                break;
            }
            Err(e) => {
                assert_eq!(e.class(), ErrorClass::Unavailable, "{e:?}");
                assert!(
                    back.elapsed() < Duration::from_secs(2),
                    "not reconnected within 2 s: {e:?}"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
    assert!(store.load(&fresh, T0).await.unwrap().is_some());
}

/// Options that cannot work are refused at connect with a reason, before any network traffic.
#[tokio::test]
async fn invalid_options_are_clear_errors() {
    let cases = [
        (RedisOptions::new("http://127.0.0.1:1/"), "scheme"),
        (
            RedisOptions::new("redis+sentinel://127.0.0.1:1"),
            "master name",
        ),
        (
            RedisOptions::new("redis+cluster://127.0.0.1:x"),
            "invalid host",
        ),
        (
            RedisOptions::new("redis://127.0.0.1:1/").with_prefix("app{1}:"),
            "must not contain",
        ),
    ];
    for (opts, want) in cases {
        let err = RedisStore::connect_with(opts.clone(), CONFIG)
            .await
            .unwrap_err();
        assert_eq!(err.class(), ErrorClass::Unavailable, "{err:?}");
        let source = std::error::Error::source(&err).expect("source kept");
        let invalid = source
            .downcast_ref::<usher_session::InvalidRedisOptions>()
            .unwrap_or_else(|| panic!("{opts:?}: {source}"));
        assert!(invalid.to_string().contains(want), "{opts:?}: {invalid}");
    }
}

/// A user's index lists a session before the session is written, and only re-validated
/// entries are reported: a stale member (session gone without a delete, or moved to another
/// user) is never listed, never deletes someone else's session, and is not counted.
#[tokio::test]
async fn stale_index_members_are_revalidated() {
    let (server, store) = setup().await;
    let mut conn = raw(&server);
    let gone = SessionId::random().key();
    let moved = SessionId::random().key();
    let rec = |user: &str| Record::new(Default::default(), Some(user.into()), T0, 300, 3600);
    store.save(&gone, &rec("ann"), None, T0).await.unwrap();
    store.save(&moved, &rec("ann"), None, T0).await.unwrap();
    let mut to_bob = store.load(&moved, T0).await.unwrap().unwrap();
    to_bob.user = Some("bob".into());
    store.save(&moved, &to_bob, Some(1), T0).await.unwrap();
    let _: i64 = redis::cmd("DEL")
        .arg(store.redis_key(&gone))
        .query(&mut conn)
        .unwrap();
    let members: Vec<String> = redis::cmd("ZRANGE")
        .arg("test:u:ann")
        .arg(0)
        .arg(-1)
        .query(&mut conn)
        .unwrap();
    assert_eq!(
        members.len(),
        2,
        "both are still indexed under ann: {members:?}"
    );
    assert!(store.sessions_of("ann", T0).await.unwrap().is_empty());
    assert_eq!(store.delete_user_sessions("ann", T0).await.unwrap(), 0);
    assert!(
        store.load(&moved, T0).await.unwrap().is_some(),
        "bob's session survives ann's logout-everywhere"
    );
    assert_eq!(store.sessions_of("bob", T0).await.unwrap().len(), 1);
    // Members past their absolute expiry are dropped from the index itself.
    store
        .save(&SessionId::random().key(), &rec("cy"), None, T0)
        .await
        .unwrap();
    assert!(store.sessions_of("cy", T0 + 3600).await.unwrap().is_empty());
    let left: i64 = redis::cmd("ZCARD")
        .arg("test:u:cy")
        .query(&mut conn)
        .unwrap();
    assert_eq!(left, 0);
}
