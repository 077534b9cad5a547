//! The conformance suite against [`PostgresStore`], each test on its own private PostgreSQL
//! (never the shared one on 5432) in its own schema, plus the cases only a shared database has:
//! a server crash mid-run, corrupt rows, two stores on one table, racing schema creation.
//!
//! With `USHER_TEST_POSTGRES_URL` set (loopback only), tests use that server instead, each in a
//! fresh schema it drops at the end; the crash test always starts a private server.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::json;
use tokio_postgres::NoTls;
use usher_session::conformance::{self, CONFIG, T0};
use usher_session::{
    ErrorClass, FieldOp, InvalidPostgresOptions, PostgresOptions, PostgresStore, Record,
    SessionData, SessionId, SessionKey, SessionStore, StoreError, Touch,
};
use usher_testkit::postgres::{PgServer, external_url};

/// A database to test in: a private server (or the external one) and a schema of our own.
struct Db {
    server: Option<PgServer>,
    /// The server's URL as given.
    base: String,
    /// `base`, tagged with the test's `application_name`.
    url: String,
    schema: String,
}

impl Db {
    fn new() -> Self {
        match external_url() {
            Some(url) => Self::with(None, url),
            None => Self::private(),
        }
    }

    /// Always a private server, for tests that stop it.
    fn private() -> Self {
        let server = PgServer::start();
        let url = server.url();
        Self::with(Some(server), url)
    }

    /// Every connection of the test is tagged with its schema's name as `application_name`, so
    /// cleanup on an external server can end exactly the test's own connections.
    fn with(server: Option<PgServer>, base: String) -> Self {
        let schema = format!("t_{}", hex(&SessionId::random().key().as_bytes()[..6]));
        let sep = if base.contains('?') { '&' } else { '?' };
        Self {
            server,
            url: format!("{base}{sep}application_name={schema}"),
            base,
            schema,
        }
    }

    fn options(&self) -> PostgresOptions {
        PostgresOptions::new(&self.url).with_schema(&self.schema)
    }

    async fn store(&self) -> PostgresStore {
        PostgresStore::connect_with(self.options(), CONFIG)
            .await
            .unwrap()
    }

    /// A plain client for poking at the table behind the store's back.
    async fn raw(&self) -> tokio_postgres::Client {
        let (client, conn) = tokio_postgres::connect(&self.url, NoTls).await.unwrap();
        tokio::spawn(conn);
        client
    }

    async fn raw_update(&self, store: &PostgresStore, key: &SessionKey, set: &str) {
        let sql = format!("UPDATE {} SET {set} WHERE id_hash = $1", store.table());
        let n = self
            .raw()
            .await
            .execute(&sql, &[&key.as_bytes().as_slice()])
            .await
            .unwrap();
        assert_eq!(n, 1, "{sql}");
    }
}

impl Drop for Db {
    /// On an external server, drop the test's schema (a private server vanishes on its own).
    /// The test's own connections may still be open (this runs on the runtime the pool's
    /// connection tasks need, so it cannot wait for them to close): they are ended first, and
    /// the drop gives up rather than wait on a lock for long.
    fn drop(&mut self) {
        if self.server.is_some() {
            return;
        }
        let (url, schema) = (self.base.clone(), self.schema.clone());
        let cleanup = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                if let Ok((client, conn)) = tokio_postgres::connect(&url, NoTls).await {
                    tokio::spawn(conn);
                    let _ = client
                        .execute(
                            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
                             WHERE application_name = $1 AND pid <> pg_backend_pid()",
                            &[&schema],
                        )
                        .await;
                    let _ = client
                        .batch_execute(&format!(
                            "SET lock_timeout = '10s'; DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"
                        ))
                        .await;
                }
            });
        });
        let _ = cleanup.join();
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

async fn setup() -> (Db, PostgresStore) {
    let db = Db::new();
    let store = db.store().await;
    (db, store)
}

fn record(user: Option<&str>) -> Record {
    let mut data = SessionData::new();
    data.insert("theme", json!("dark"));
    Record::new(data, user.map(str::to_owned), T0, 300, 3600)
}

#[tokio::test]
async fn round_trip() {
    let (_db, store) = setup().await;
    conformance::round_trip(&store).await;
}

#[tokio::test]
async fn cas_conflict() {
    let (_db, store) = setup().await;
    conformance::cas_conflict(&store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_field_updates() {
    let (_db, store) = setup().await;
    let s: Arc<dyn SessionStore> = Arc::new(store);
    conformance::concurrent_field_updates(&[s]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_field_updates_across_two_stores() {
    let (db, a) = setup().await;
    let a: Arc<dyn SessionStore> = Arc::new(a);
    let b: Arc<dyn SessionStore> = Arc::new(db.store().await);
    conformance::concurrent_field_updates(&[a, b]).await;
}

#[tokio::test]
async fn delete_leaves_tombstone() {
    let (_db, store) = setup().await;
    conformance::delete_leaves_tombstone(&store).await;
}

#[tokio::test]
async fn logout_during_in_flight_request() {
    let (_db, store) = setup().await;
    conformance::logout_during_in_flight_request(&store).await;
}

#[tokio::test]
async fn idle_and_absolute_expiry() {
    let (_db, store) = setup().await;
    conformance::idle_and_absolute_expiry(&store).await;
}

#[tokio::test]
async fn touch_throttling() {
    let (_db, store) = setup().await;
    conformance::touch_throttling(&store).await;
}

#[tokio::test]
async fn user_sessions() {
    let (_db, store) = setup().await;
    conformance::user_sessions(&store).await;
}

#[tokio::test]
async fn purge() {
    let (_db, store) = setup().await;
    conformance::purge(&store).await;
}

/// The cases use fresh random keys, so they also pass one after another on one table.
#[tokio::test]
async fn all_cases_on_one_store() {
    let (_db, store) = setup().await;
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
async fn shared_backing_two_stores_one_database() {
    let (db, a) = setup().await;
    let b = db.store().await;
    conformance::shared_backing(&a, &b).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_data() {
    let (db, store) = setup().await;
    let handle = tokio::runtime::Handle::current();
    for bytes in ["'\\x01ff00'", "'\\x'", "'\\x02'"] {
        // The suite's callback is synchronous; run the raw update on the runtime from a
        // blocking-capable thread.
        conformance::corrupt_data(&store, |key: &SessionKey| {
            tokio::task::block_in_place(|| {
                handle.block_on(db.raw_update(&store, key, &format!("data = {bytes}")))
            });
        })
        .await;
    }
}

/// A number column out of range is `Corrupt` for reads and saves (never overwritten blindly),
/// and the row can still be deleted.
#[tokio::test]
async fn corrupt_columns_are_errors() {
    let (db, store) = setup().await;
    let key = SessionId::random().key();
    let rec = record(Some("ivan"));
    store.save(&key, &rec, None, T0).await.unwrap();
    db.raw_update(&store, &key, "created_at = -5").await;
    let err = store.load(&key, T0).await.unwrap_err();
    assert!(matches!(err, StoreError::Corrupt(_)), "{err:?}");
    let err = store.save(&key, &rec, Some(1), T0).await.unwrap_err();
    assert!(matches!(err, StoreError::Corrupt(_)), "{err:?}");
    let err = store.save(&key, &rec, None, T0).await.unwrap_err();
    assert!(matches!(err, StoreError::Corrupt(_)), "{err:?}");
    let err = store
        .update_field(&key, "n", FieldOp::Increment(1), T0)
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Corrupt(_)), "{err:?}");
    assert!(matches!(
        store.touch(&key, T0 + 100).await,
        Err(StoreError::Corrupt(_))
    ));
    assert!(
        store.delete(&key, T0).await.unwrap(),
        "a corrupt row is removable"
    );
    assert!(store.load(&key, T0).await.unwrap().is_none());

    // A session key of the wrong length is corrupt too, not a panic.
    let other = SessionId::random().key();
    store.save(&other, &rec, None, T0).await.unwrap();
    db.raw_update(&store, &other, "id_hash = '\\x0102'").await;
    let err = store.sessions_of("ivan", T0).await.unwrap_err();
    assert!(matches!(err, StoreError::Corrupt(_)), "{err:?}");
}

/// Several processes starting at once against an empty database all create-or-find the same
/// schema, table and index without an error, and then share it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_schema_creation() {
    let db = Db::new();
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let options = db.options();
        tasks.push(tokio::spawn(async move {
            PostgresStore::connect_with(options, CONFIG).await
        }));
    }
    let mut stores = Vec::new();
    for t in tasks {
        stores.push(t.await.unwrap().expect("every concurrent connect succeeds"));
    }
    let key = SessionId::random().key();
    stores[0].save(&key, &record(None), None, T0).await.unwrap();
    for s in &stores {
        assert!(s.load(&key, T0).await.unwrap().is_some());
    }
    let raw = db.raw().await;
    let tables: i64 = raw
        .query_one(
            "SELECT count(*) FROM pg_tables WHERE schemaname = $1",
            &[&db.schema],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(tables, 1);
    let indexes: Vec<String> = raw
        .query(
            "SELECT indexdef FROM pg_indexes WHERE schemaname = $1",
            &[&db.schema],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(
        indexes.len(),
        3,
        "primary key, user index and purge index: {indexes:?}"
    );
    assert!(
        indexes.iter().any(|i| i.contains("(user_name)")),
        "{indexes:?}"
    );
}

/// The purge of expired rows has an index to scan: it exists (`pg_indexes`), is created on a
/// table laid out before it existed, and the planner uses it for the purge's predicate (the
/// statement in `postgres/schema.rs` compares this same expression, which its unit test checks).
#[tokio::test]
async fn purge_has_an_index() {
    const DEAD_AT: &str = "COALESCE(deleted_until, LEAST(idle_expires_at, expires_at))";
    let (db, store) = setup().await;
    let raw = db.raw().await;
    let purge_index = |raw: tokio_postgres::Client, schema: String| async move {
        let defs: Vec<String> = raw
            .query(
                "SELECT indexdef FROM pg_indexes WHERE schemaname = $1 AND indexname = $2",
                &[&schema, &"usher_sessions_dead"],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        (raw, defs)
    };
    let (raw, defs) = purge_index(raw, db.schema.clone()).await;
    assert_eq!(defs.len(), 1, "{defs:?}");
    assert!(defs[0].contains(DEAD_AT), "{}", defs[0]);

    // A table from before the index: the next store to start adds it.
    raw.batch_execute(&format!("DROP INDEX \"{}\".usher_sessions_dead", db.schema))
        .await
        .unwrap();
    let (raw, defs) = purge_index(raw, db.schema.clone()).await;
    assert!(defs.is_empty(), "{defs:?}");
    let again = db.store().await;
    let (raw, defs) = purge_index(raw, db.schema.clone()).await;
    assert_eq!(defs.len(), 1, "{defs:?}");

    // The planner can answer the purge's predicate from the index (seq scans priced out, as an
    // empty test table would otherwise be read whole).
    let plan: Vec<String> = raw
        .simple_query(&format!(
            "SET enable_seqscan = off; EXPLAIN DELETE FROM {} WHERE {DEAD_AT} <= 5",
            store.table()
        ))
        .await
        .unwrap()
        .into_iter()
        .filter_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_owned),
            _ => None,
        })
        .collect();
    assert!(
        plan.iter().any(|l| l.contains("usher_sessions_dead")),
        "{plan:#?}"
    );
    assert_eq!(again.purge_expired(T0).await.unwrap(), 0);
}

/// Tables isolate stores; only the SHA-256 of a session id is stored, never the id.
#[tokio::test]
async fn tables_isolate_and_only_hashes_are_stored() {
    let (db, a) = setup().await;
    let b = PostgresStore::connect_with(db.options().with_table("other_sessions"), CONFIG)
        .await
        .unwrap();
    let id = SessionId::random();
    let key = id.key();
    a.save(&key, &record(Some("zoe")), None, T0).await.unwrap();
    assert!(b.load(&key, T0).await.unwrap().is_none());
    assert!(b.sessions_of("zoe", T0).await.unwrap().is_empty());
    assert_eq!(b.save(&key, &record(None), None, T0).await.unwrap(), 1);

    let raw = db.raw().await;
    let rows = raw
        .query(&format!("SELECT id_hash FROM {}", a.table()), &[])
        .await
        .unwrap();
    assert_eq!(rows.len(), 1);
    let stored: &[u8] = rows[0].get(0);
    assert_eq!(stored, key.as_bytes().as_slice());
    assert_ne!(stored, id.encode().as_bytes());
}

/// A table laid out by a newer build is refused rather than misread.
#[tokio::test]
async fn newer_schema_is_refused() {
    let (db, store) = setup().await;
    db.raw()
        .await
        .batch_execute(&format!(
            "COMMENT ON TABLE {} IS 'usher-session sessions, schema 99'",
            store.table()
        ))
        .await
        .unwrap();
    let err = PostgresStore::connect_with(db.options(), CONFIG)
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");
    assert!(
        std::error::Error::source(&err)
            .unwrap()
            .to_string()
            .contains("schema version"),
        "{err:?}"
    );
}

/// Bad options and unreachable servers are clear, quick errors, never panics.
#[tokio::test]
async fn bad_options_and_no_server_are_unavailable() {
    for options in [
        PostgresOptions::new("postgres://postgres@127.0.0.1:1/db").with_table("no-dashes"),
        PostgresOptions::new("postgres://postgres@127.0.0.1:1/db").with_schema("x\"y"),
        PostgresOptions::new("postgres://postgres@127.0.0.1:1/db").with_pool_size(0),
        PostgresOptions::new("not a url at all = ="),
    ] {
        let err = PostgresStore::connect_with(options, CONFIG)
            .await
            .unwrap_err();
        let source = std::error::Error::source(&err).expect("source kept");
        assert!(source.is::<InvalidPostgresOptions>(), "{err:?}: {source}");
    }

    // Nothing listens on a port we just freed.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let started = Instant::now();
    let err = PostgresStore::connect(&format!("postgres://postgres@127.0.0.1:{port}/x"), CONFIG)
        .await
        .unwrap_err();
    assert_eq!(err.class(), ErrorClass::Unavailable, "{err:?}");
    assert!(std::error::Error::source(&err).is_some(), "source kept");
    assert!(started.elapsed() < Duration::from_secs(10));
}

/// The server crashes (immediate shutdown) while a writer is busy: every operation is
/// `Unavailable` (quickly, with the source kept) while it is down, the store recovers by itself
/// once it is back on the same port, and every acknowledged write survived.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_crash_and_restart_mid_run() {
    let mut db = Db::private();
    let store = Arc::new(db.store().await);
    let saved = SessionId::random().key();
    let mut rec = record(Some("kim"));
    rec.data.insert("cart", json!(["book"]));
    store.save(&saved, &rec, None, T0).await.unwrap();
    let counter = SessionId::random().key();
    store.save(&counter, &record(None), None, T0).await.unwrap();

    // A writer incrementing as fast as it can, counting attempts and acknowledgements.
    let stop = Arc::new(AtomicBool::new(false));
    let (attempts, acks) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let writer = {
        let (store, stop) = (Arc::clone(&store), Arc::clone(&stop));
        let (attempts, acks) = (Arc::clone(&attempts), Arc::clone(&acks));
        tokio::spawn(async move {
            let deadline = Instant::now() + Duration::from_secs(40);
            while !stop.load(Ordering::SeqCst) && Instant::now() < deadline {
                attempts.fetch_add(1, Ordering::SeqCst);
                match store
                    .update_field(&counter, "n", FieldOp::Increment(1), T0)
                    .await
                {
                    Ok(_) => {
                        acks.fetch_add(1, Ordering::SeqCst);
                    }
                    Err(e) => {
                        assert_eq!(e.class(), ErrorClass::Unavailable, "{e:?}");
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                }
            }
        })
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while acks.load(Ordering::SeqCst) < 50 {
        assert!(Instant::now() < deadline, "the writer made no progress");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }

    let server = db.server.as_mut().unwrap();
    server.crash();
    let down = Instant::now();
    let other = SessionId::random().key();
    for _ in 0..3 {
        let results = [
            store.load(&saved, T0).await.map(|_| ()),
            store.save(&saved, &rec, Some(1), T0).await.map(|_| ()),
            store.save(&other, &rec, None, T0).await.map(|_| ()),
            store
                .update_field(&saved, "n", FieldOp::Increment(1), T0)
                .await
                .map(|_| ()),
            store.delete(&other, T0).await.map(|_| ()),
            store.touch(&saved, T0 + 100).await.map(|_| ()),
            store.sessions_of("kim", T0).await.map(|_| ()),
            store.delete_user_sessions("nobody", T0).await.map(|_| ()),
            store.purge_expired(T0).await.map(|_| ()),
        ];
        for (i, r) in results.into_iter().enumerate() {
            let err = r.expect_err("the server is down");
            assert!(matches!(err, StoreError::Unavailable(_)), "op {i}: {err:?}");
            assert!(std::error::Error::source(&err).is_some(), "source kept");
        }
    }
    assert!(
        down.elapsed() < Duration::from_secs(15),
        "failing operations do not hang: {:?}",
        down.elapsed()
    );
    let acked_before_restart = acks.load(Ordering::SeqCst);

    server.start_again();
    let back = Instant::now();
    loop {
        match store.load(&saved, T0).await {
            Ok(found) => {
                let found = found.expect("the acknowledged session survived the crash");
                assert_eq!(found.data, rec.data);
                assert_eq!(found.user.as_deref(), Some("kim"));
                break;
            }
            Err(e) => {
                assert_eq!(e.class(), ErrorClass::Unavailable, "{e:?}");
                assert!(
                    back.elapsed() < Duration::from_secs(10),
                    "not recovered within 10 s: {e:?}"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
    // The writer gets going again too.
    let deadline = Instant::now() + Duration::from_secs(10);
    while acks.load(Ordering::SeqCst) < acked_before_restart + 20 {
        assert!(Instant::now() < deadline, "the writer did not resume");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    stop.store(true, Ordering::SeqCst);
    writer.await.unwrap();

    let n = store.load(&counter, T0).await.unwrap().unwrap();
    let n = n.data.get("n").and_then(|v| v.as_u64()).unwrap();
    let (acked, tried) = (acks.load(Ordering::SeqCst), attempts.load(Ordering::SeqCst));
    // An update whose commit raced the crash may have landed unacknowledged, never the reverse.
    assert!(
        acked <= n && n <= tried,
        "acked {acked} <= stored {n} <= tried {tried}"
    );
    assert_eq!(store.touch(&saved, T0 + 100).await.unwrap(), Touch::Written);
}
