//! The conformance suite against [`MemoryStore`].
#![allow(clippy::unwrap_used)]

use std::num::NonZeroUsize;
use std::sync::Arc;

use usher_session::conformance::{self, CONFIG};
use usher_session::{MemoryStore, SessionStore};

fn store() -> Arc<MemoryStore> {
    Arc::new(MemoryStore::new(CONFIG, NonZeroUsize::new(10_000).unwrap()))
}

#[tokio::test]
async fn round_trip() {
    conformance::round_trip(&*store()).await;
}

#[tokio::test]
async fn cas_conflict() {
    conformance::cas_conflict(&*store()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_field_updates() {
    let s: Arc<dyn SessionStore> = store();
    conformance::concurrent_field_updates(&[s]).await;
}

#[tokio::test]
async fn delete_leaves_tombstone() {
    conformance::delete_leaves_tombstone(&*store()).await;
}

#[tokio::test]
async fn logout_during_in_flight_request() {
    conformance::logout_during_in_flight_request(&*store()).await;
}

#[tokio::test]
async fn idle_and_absolute_expiry() {
    conformance::idle_and_absolute_expiry(&*store()).await;
}

#[tokio::test]
async fn touch_throttling() {
    conformance::touch_throttling(&*store()).await;
}

#[tokio::test]
async fn user_sessions() {
    conformance::user_sessions(&*store()).await;
}

#[tokio::test]
async fn corrupt_data() {
    let s = store();
    conformance::corrupt_data(&*s, |key| {
        assert!(s.overwrite_raw_data(key, vec![0x01, 0xff, 0x00]));
    })
    .await;
    conformance::corrupt_data(&*s, |key| {
        assert!(s.overwrite_raw_data(key, vec![0x7f]));
    })
    .await;
}

#[tokio::test]
async fn purge() {
    conformance::purge(&*store()).await;
}

#[tokio::test]
async fn shared_backing() {
    let s = store();
    conformance::shared_backing(&*s, &*s).await;
}

#[tokio::test]
async fn all_cases_on_one_store() {
    let s = store();
    conformance::round_trip(&*s).await;
    conformance::cas_conflict(&*s).await;
    conformance::delete_leaves_tombstone(&*s).await;
    conformance::logout_during_in_flight_request(&*s).await;
    conformance::idle_and_absolute_expiry(&*s).await;
    conformance::touch_throttling(&*s).await;
    conformance::user_sessions(&*s).await;
    conformance::purge(&*s).await;
}
