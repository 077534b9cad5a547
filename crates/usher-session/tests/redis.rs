//! The conformance suite against [`RedisStore`], each test on its own throwaway `redis-server`
//! (never the shared one on 6379), plus the cases only a network store has.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use usher_session::conformance::{self, CONFIG, T0};
use usher_session::{
    ErrorClass, Record, RedisOptions, RedisStore, SessionId, SessionKey, SessionStore, StoreError,
};

/// A `redis-server` child on a loopback port, killed on drop. Nothing is persisted.
struct Server {
    child: Child,
    port: u16,
}

fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// Whether the server on `port` answers and is the process `pid` (not another test's server
/// that grabbed the port first).
fn ping(port: u16, pid: u32) -> bool {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
    if s.write_all(b"INFO server\r\n").is_err() {
        return false;
    }
    let mut reply = Vec::new();
    let mut buf = [0u8; 4096];
    while let Ok(n @ 1..) = s.read(&mut buf) {
        reply.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&reply);
        if let Some((_, rest)) = text.split_once("process_id:")
            && let Some((id, _)) = rest.split_once("\r\n")
        {
            return id == pid.to_string();
        }
    }
    false
}

impl Server {
    /// Starts a server on a free port (retrying if another process grabbed it).
    fn start() -> Self {
        for _ in 0..5 {
            if let Some(s) = Self::start_on(free_port()) {
                return s;
            }
        }
        panic!("could not start redis-server on a free port");
    }

    /// Starts a server on `port`; `None` if it exits (port taken) before answering.
    fn start_on(port: u16) -> Option<Self> {
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        let child = match child {
            Ok(c) => c,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
                "redis-server is not installed (not on PATH); the Redis store tests need it. \
                 Install it (`apt-get install redis-server`; scripts/test does this)."
            ),
            Err(e) => panic!("cannot start redis-server: {e}"),
        };
        let mut server = Self { child, port };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if ping(port, server.child.id()) {
                return Some(server);
            }
            if server.child.try_wait().unwrap().is_some() {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("redis-server on port {port} did not answer within 10 s");
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

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
    let port = server.port;
    server.stop();

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

    let _server = Server::start_on(port).expect("restart on the same port");
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
