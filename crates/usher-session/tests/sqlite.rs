//! The conformance suite against [`SqliteStore`], plus the cases only a shared file has.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tempfile::TempDir;
use usher_session::conformance::{self, CONFIG};
use usher_session::{SessionKey, SessionStore, SqliteStore, StoreError};

fn db() -> (TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sessions.db");
    (dir, path)
}

fn open(path: &Path) -> SqliteStore {
    SqliteStore::open(path, CONFIG).unwrap()
}

fn raw_update(path: &Path, key: &SessionKey, sql: &str) {
    let conn = rusqlite::Connection::open(path).unwrap();
    conn.busy_timeout(std::time::Duration::from_secs(5))
        .unwrap();
    let n = conn.execute(sql, [key.as_bytes().as_slice()]).unwrap();
    assert_eq!(n, 1);
}

#[tokio::test]
async fn round_trip() {
    let (_dir, path) = db();
    conformance::round_trip(&open(&path)).await;
}

#[tokio::test]
async fn cas_conflict() {
    let (_dir, path) = db();
    conformance::cas_conflict(&open(&path)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_field_updates() {
    let (_dir, path) = db();
    let s: Arc<dyn SessionStore> = Arc::new(open(&path));
    conformance::concurrent_field_updates(&[s]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_field_updates_across_two_stores() {
    let (_dir, path) = db();
    let a: Arc<dyn SessionStore> = Arc::new(open(&path));
    let b: Arc<dyn SessionStore> = Arc::new(open(&path));
    conformance::concurrent_field_updates(&[a, b]).await;
}

#[tokio::test]
async fn delete_leaves_tombstone() {
    let (_dir, path) = db();
    conformance::delete_leaves_tombstone(&open(&path)).await;
}

#[tokio::test]
async fn logout_during_in_flight_request() {
    let (_dir, path) = db();
    conformance::logout_during_in_flight_request(&open(&path)).await;
}

#[tokio::test]
async fn idle_and_absolute_expiry() {
    let (_dir, path) = db();
    conformance::idle_and_absolute_expiry(&open(&path)).await;
}

#[tokio::test]
async fn touch_throttling() {
    let (_dir, path) = db();
    conformance::touch_throttling(&open(&path)).await;
}

#[tokio::test]
async fn user_sessions() {
    let (_dir, path) = db();
    conformance::user_sessions(&open(&path)).await;
}

#[tokio::test]
async fn corrupt_data() {
    let (_dir, path) = db();
    let store = open(&path);
    conformance::corrupt_data(&store, |key| {
        raw_update(
            &path,
            key,
            "UPDATE sessions SET data = x'01ff00' WHERE id_hash = ?1",
        );
    })
    .await;
    conformance::corrupt_data(&store, |key| {
        raw_update(
            &path,
            key,
            "UPDATE sessions SET data = x'' WHERE id_hash = ?1",
        );
    })
    .await;
}

#[tokio::test]
async fn corrupt_columns_are_errors() {
    let (_dir, path) = db();
    let store = open(&path);
    let key = usher_session::SessionId::random().key();
    let rec = usher_session::Record::new(Default::default(), None, conformance::T0, 300, 3600);
    store.save(&key, &rec, None, conformance::T0).await.unwrap();
    raw_update(
        &path,
        &key,
        "UPDATE sessions SET created_at = -5 WHERE id_hash = ?1",
    );
    let err = store.load(&key, conformance::T0).await.unwrap_err();
    assert!(matches!(err, StoreError::Corrupt(_)), "{err:?}");
}

#[tokio::test]
async fn purge() {
    let (_dir, path) = db();
    conformance::purge(&open(&path)).await;
}

#[tokio::test]
async fn shared_backing_two_stores_one_file() {
    let (_dir, path) = db();
    let a = open(&path);
    let b = open(&path);
    conformance::shared_backing(&a, &b).await;
}

#[tokio::test]
async fn data_survives_reopen_and_file_is_wal() {
    let (_dir, path) = db();
    let key = usher_session::SessionId::random().key();
    {
        let store = open(&path);
        let rec = usher_session::Record::new(Default::default(), None, conformance::T0, 300, 3600);
        store.save(&key, &rec, None, conformance::T0).await.unwrap();
    }
    let store = open(&path);
    assert!(store.load(&key, conformance::T0).await.unwrap().is_some());
    let conn = rusqlite::Connection::open(&path).unwrap();
    let mode: String = conn
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
    // Only the hash of the id is stored.
    let n: i64 = conn
        .query_row(
            "SELECT count(*) FROM sessions WHERE length(id_hash) = 32",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(n, 1);
}

#[tokio::test]
async fn newer_schema_is_refused() {
    let (_dir, path) = db();
    drop(open(&path));
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.pragma_update(None, "user_version", 99).unwrap();
    drop(conn);
    let err = SqliteStore::open(&path, CONFIG).unwrap_err();
    assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");
}
