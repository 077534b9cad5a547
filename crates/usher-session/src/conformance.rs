//! The conformance suite every [`SessionStore`] must pass (feature `conformance`).
//!
//! Each case is a plain async function over a store built with [`CONFIG`]; a store's test file
//! calls each one from its own `#[tokio::test]` (multi-threaded for
//! [`concurrent_field_updates`]). Cases use fresh random keys, so they can share one store.
//! Failures panic with a message, as tests do.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeSet;
use std::sync::Arc;

use serde_json::json;

use crate::{
    FieldOp, Record, SessionData, SessionId, SessionKey, SessionStore, StoreConfig, StoreError,
    Touch,
};

/// The configuration stores under test must be built with.
pub const CONFIG: StoreConfig = StoreConfig {
    tombstone_secs: 600,
    touch_interval_secs: 60,
    idle_timeout_secs: 300,
};

/// Absolute lifetime of the sessions the suite creates.
pub const ABSOLUTE_SECS: u64 = 3600;

/// The suite's "now": an arbitrary recent Unix time.
pub const T0: u64 = 1_700_000_000;

/// Tasks in [`concurrent_field_updates`].
pub const TASKS: usize = 32;
/// Updates per task in [`concurrent_field_updates`].
pub const UPDATES_PER_TASK: usize = 100;

fn record(user: Option<&str>, now: u64) -> Record {
    let mut data = SessionData::new();
    data.insert("theme", json!("dark"));
    Record::new(
        data,
        user.map(str::to_owned),
        now,
        CONFIG.idle_timeout_secs,
        ABSOLUTE_SECS,
    )
}

async fn create(store: &dyn SessionStore, user: Option<&str>, now: u64) -> SessionKey {
    let key = SessionId::random().key();
    let v = store.save(&key, &record(user, now), None, now).await;
    assert_eq!(v.unwrap(), 1, "a new session has version 1");
    key
}

/// Create, load, update, reload; creating twice conflicts; updating a missing session fails.
pub async fn round_trip(store: &dyn SessionStore) {
    let key = create(store, Some("alice"), T0).await;
    let mut rec = store.load(&key, T0 + 1).await.unwrap().expect("created");
    assert_eq!(rec.version, 1);
    assert_eq!(rec.user.as_deref(), Some("alice"));
    assert_eq!(rec.data.get("theme"), Some(&json!("dark")));
    assert_eq!(rec.created_at, T0);
    assert_eq!(rec.expires_at, T0 + ABSOLUTE_SECS);

    rec.data.insert("cart", json!([{"sku": "a", "qty": 1}]));
    rec.data.remove("theme");
    assert_eq!(store.save(&key, &rec, Some(1), T0 + 2).await.unwrap(), 2);
    let back = store.load(&key, T0 + 3).await.unwrap().unwrap();
    assert_eq!(back.version, 2);
    assert_eq!(back.data, rec.data);
    assert_eq!(back.created_at, T0, "created_at is kept");

    let err = store.save(&key, &rec, None, T0 + 4).await.unwrap_err();
    assert!(
        matches!(err, StoreError::Conflict { current: 2 }),
        "{err:?}"
    );

    let missing = SessionId::random().key();
    assert!(store.load(&missing, T0).await.unwrap().is_none());
    let err = store.save(&missing, &rec, Some(1), T0).await.unwrap_err();
    assert!(matches!(err, StoreError::NotFound), "{err:?}");
    let err = store
        .update_field(&missing, "n", FieldOp::Increment(1), T0)
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::NotFound), "{err:?}");
}

/// Two writers from the same version: the second loses with the current version.
pub async fn cas_conflict(store: &dyn SessionStore) {
    let key = create(store, None, T0).await;
    let mut a = store.load(&key, T0).await.unwrap().unwrap();
    let mut b = a.clone();
    a.data.insert("who", json!("a"));
    b.data.insert("who", json!("b"));
    assert_eq!(store.save(&key, &a, Some(1), T0).await.unwrap(), 2);
    let err = store.save(&key, &b, Some(1), T0).await.unwrap_err();
    assert!(
        matches!(err, StoreError::Conflict { current: 2 }),
        "{err:?}"
    );
    let err = store.save(&key, &b, Some(7), T0).await.unwrap_err();
    assert!(
        matches!(err, StoreError::Conflict { current: 2 }),
        "{err:?}"
    );
    let now = store.load(&key, T0).await.unwrap().unwrap();
    assert_eq!(now.data.get("who"), Some(&json!("a")));

    // A field update bumps the version, so a save from before it conflicts.
    store
        .update_field(&key, "n", FieldOp::Increment(1), T0)
        .await
        .unwrap();
    let err = store.save(&key, &now, Some(2), T0).await.unwrap_err();
    assert!(
        matches!(err, StoreError::Conflict { current: 3 }),
        "{err:?}"
    );
}

/// [`TASKS`] tasks × [`UPDATES_PER_TASK`] field updates to one session, spread round-robin over
/// `stores` (several handles on the same backing store): none is lost.
pub async fn concurrent_field_updates(stores: &[Arc<dyn SessionStore>]) {
    assert!(!stores.is_empty());
    let key = create(&*stores[0], Some("carol"), T0).await;
    let mut tasks = Vec::new();
    for t in 0..TASKS {
        let store = Arc::clone(&stores[t % stores.len()]);
        tasks.push(tokio::spawn(async move {
            for i in 0..UPDATES_PER_TASK {
                store
                    .update_field(&key, "cart_items", FieldOp::Increment(1), T0)
                    .await
                    .unwrap();
                if i % 10 == 0 {
                    store
                        .update_field(&key, "cart", FieldOp::Push(json!(format!("{t}-{i}"))), T0)
                        .await
                        .unwrap();
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let rec = stores[0].load(&key, T0).await.unwrap().unwrap();
    let total = TASKS * UPDATES_PER_TASK;
    let pushes = TASKS * UPDATES_PER_TASK.div_ceil(10);
    assert_eq!(rec.data.get("cart_items"), Some(&json!(total)));
    let cart: BTreeSet<String> = rec
        .data
        .get("cart")
        .unwrap()
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect();
    assert_eq!(cart.len(), pushes, "every pushed item is present once");
    assert_eq!(rec.version, 1 + (total + pushes) as u64);
    assert_eq!(
        rec.data.get("theme"),
        Some(&json!("dark")),
        "other fields untouched"
    );
}

/// Delete leaves a tombstone: loads are `None`, late writes fail with `Deleted`, until the
/// tombstone lapses.
pub async fn delete_leaves_tombstone(store: &dyn SessionStore) {
    let key = create(store, None, T0).await;
    let rec = store.load(&key, T0).await.unwrap().unwrap();
    assert!(
        store.delete(&key, T0 + 1).await.unwrap(),
        "a live session was deleted"
    );
    assert!(store.load(&key, T0 + 1).await.unwrap().is_none());
    for (expected, when) in [(Some(1), T0 + 2), (None, T0 + 2), (Some(1), T0 + 600)] {
        let err = store.save(&key, &rec, expected, when).await.unwrap_err();
        assert!(matches!(err, StoreError::Deleted), "{expected:?}: {err:?}");
    }
    let err = store
        .update_field(&key, "n", FieldOp::Increment(1), T0 + 2)
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Deleted), "{err:?}");
    assert_eq!(store.touch(&key, T0 + 100).await.unwrap(), Touch::Missing);
    assert!(
        !store.delete(&key, T0 + 3).await.unwrap(),
        "deleting twice finds nothing"
    );

    // Deleting an unknown key tombstones it too.
    let unknown = SessionId::random().key();
    assert!(!store.delete(&unknown, T0).await.unwrap());
    let err = store.save(&unknown, &rec, None, T0 + 1).await.unwrap_err();
    assert!(matches!(err, StoreError::Deleted), "{err:?}");

    // After the tombstone lapses (delete at T0 + 3 extended it) the key is free again.
    let late = T0 + 3 + CONFIG.tombstone_secs;
    let fresh = record(None, late);
    assert_eq!(store.save(&key, &fresh, None, late).await.unwrap(), 1);
}

/// Logout while a slow request holds the old version: the request's save, field update and a
/// "create" retry all fail, and the session stays gone. Same for "log out everywhere".
pub async fn logout_during_in_flight_request(store: &dyn SessionStore) {
    let key = create(store, Some("dave"), T0).await;
    let mut in_flight = store.load(&key, T0).await.unwrap().unwrap();
    assert!(store.delete(&key, T0 + 1).await.unwrap());
    in_flight.data.insert("cart", json!(["x"]));
    let err = store
        .save(&key, &in_flight, Some(1), T0 + 5)
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Deleted), "{err:?}");
    let err = store
        .save(&key, &in_flight, None, T0 + 5)
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Deleted), "{err:?}");
    let err = store
        .update_field(&key, "cart", FieldOp::Push(json!("y")), T0 + 5)
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Deleted), "{err:?}");
    assert!(store.load(&key, T0 + 6).await.unwrap().is_none());

    let key = create(store, Some("dave"), T0).await;
    let in_flight = store.load(&key, T0).await.unwrap().unwrap();
    assert_eq!(store.delete_user_sessions("dave", T0 + 1).await.unwrap(), 1);
    let err = store
        .save(&key, &in_flight, Some(1), T0 + 5)
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Deleted), "{err:?}");
    assert!(store.load(&key, T0 + 6).await.unwrap().is_none());
}

/// Idle and absolute expiry, decided by the `now` passed in.
pub async fn idle_and_absolute_expiry(store: &dyn SessionStore) {
    let idle = CONFIG.idle_timeout_secs;
    let key = create(store, Some("erin"), T0).await;
    assert!(store.load(&key, T0 + idle - 1).await.unwrap().is_some());
    assert!(
        store.load(&key, T0 + idle).await.unwrap().is_none(),
        "idle expiry"
    );
    let err = store
        .update_field(&key, "n", FieldOp::Increment(1), T0 + idle)
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::NotFound), "{err:?}");
    let rec = record(Some("erin"), T0);
    let err = store
        .save(&key, &rec, Some(1), T0 + idle)
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::NotFound), "{err:?}");
    assert_eq!(store.touch(&key, T0 + idle).await.unwrap(), Touch::Missing);
    assert!(
        store
            .sessions_of("erin", T0 + idle)
            .await
            .unwrap()
            .is_empty()
    );

    // Kept alive by touches, it still dies at the absolute expiry.
    let key = create(store, None, T0).await;
    let mut now = T0;
    while now + 200 < T0 + ABSOLUTE_SECS {
        now += 200;
        assert_eq!(
            store.touch(&key, now).await.unwrap(),
            Touch::Written,
            "at {now}"
        );
        assert!(store.load(&key, now).await.unwrap().is_some());
    }
    let rec = store
        .load(&key, T0 + ABSOLUTE_SECS - 1)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        rec.idle_expires_at,
        T0 + ABSOLUTE_SECS,
        "idle expiry capped at absolute"
    );
    assert!(
        store
            .load(&key, T0 + ABSOLUTE_SECS)
            .await
            .unwrap()
            .is_none(),
        "absolute expiry"
    );
}

/// Touch writes at most once per interval, extends idle expiry, and does not bump the version;
/// a save from an older load does not undo it.
pub async fn touch_throttling(store: &dyn SessionStore) {
    let every = CONFIG.touch_interval_secs;
    let key = create(store, None, T0).await;
    let old = store.load(&key, T0).await.unwrap().unwrap();
    assert_eq!(store.touch(&key, T0 + 1).await.unwrap(), Touch::Skipped);
    assert_eq!(
        store.touch(&key, T0 + every - 1).await.unwrap(),
        Touch::Skipped
    );
    assert_eq!(store.touch(&key, T0 + every).await.unwrap(), Touch::Written);
    assert_eq!(
        store.touch(&key, T0 + every + 1).await.unwrap(),
        Touch::Skipped
    );
    let rec = store.load(&key, T0 + every + 1).await.unwrap().unwrap();
    assert_eq!(rec.version, 1, "touch does not bump the version");
    assert_eq!(rec.last_seen_at, T0 + every);
    assert_eq!(rec.idle_expires_at, T0 + every + CONFIG.idle_timeout_secs);

    assert_eq!(
        store
            .save(&key, &old, Some(1), T0 + every + 2)
            .await
            .unwrap(),
        2
    );
    let rec = store.load(&key, T0 + every + 2).await.unwrap().unwrap();
    assert_eq!(
        rec.idle_expires_at,
        T0 + every + CONFIG.idle_timeout_secs,
        "not moved back"
    );
    assert_eq!(rec.last_seen_at, T0 + every);
    // Alive past the original idle expiry thanks to the touch.
    assert!(
        store
            .load(&key, T0 + CONFIG.idle_timeout_secs + 1)
            .await
            .unwrap()
            .is_some()
    );

    assert_eq!(
        store.touch(&SessionId::random().key(), T0).await.unwrap(),
        Touch::Missing
    );
}

/// `sessions_of` lists a user's live sessions; `delete_user_sessions` logs out everywhere.
pub async fn user_sessions(store: &dyn SessionStore) {
    let user = format!("user-{}", SessionId::random().encode());
    let other = format!("other-{}", SessionId::random().encode());
    let mut mine = BTreeSet::new();
    for _ in 0..3 {
        mine.insert(create(store, Some(&user), T0).await);
    }
    let theirs = create(store, Some(&other), T0).await;
    let anonymous = create(store, None, T0).await;
    // Expired sessions are not listed.
    let old = SessionId::random().key();
    let rec = Record::new(SessionData::new(), Some(user.clone()), T0 - 100, 50, 100);
    store.save(&old, &rec, None, T0 - 100).await.unwrap();

    let listed: BTreeSet<SessionKey> = store
        .sessions_of(&user, T0 + 1)
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.key)
        .collect();
    assert_eq!(listed, mine);
    let info = store.sessions_of(&other, T0 + 1).await.unwrap();
    assert_eq!(info.len(), 1);
    assert_eq!(info[0].key, theirs);
    assert_eq!(info[0].created_at, T0);
    assert_eq!(info[0].expires_at, T0 + ABSOLUTE_SECS);

    // A session that changes user moves between lists.
    let mut moved = store.load(&anonymous, T0).await.unwrap().unwrap();
    moved.user = Some(user.clone());
    store
        .save(&anonymous, &moved, Some(1), T0 + 1)
        .await
        .unwrap();
    mine.insert(anonymous);
    assert_eq!(store.sessions_of(&user, T0 + 2).await.unwrap().len(), 4);

    assert_eq!(store.delete_user_sessions(&user, T0 + 3).await.unwrap(), 4);
    assert!(store.sessions_of(&user, T0 + 3).await.unwrap().is_empty());
    for key in &mine {
        assert!(store.load(key, T0 + 4).await.unwrap().is_none());
        let err = store.save(key, &moved, Some(2), T0 + 4).await.unwrap_err();
        assert!(matches!(err, StoreError::Deleted), "{err:?}");
    }
    assert!(
        store.load(&theirs, T0 + 4).await.unwrap().is_some(),
        "others untouched"
    );
    assert_eq!(store.delete_user_sessions(&user, T0 + 5).await.unwrap(), 0);
}

/// `corrupt` overwrites the stored data of the given session with undecodable bytes; reads and
/// field updates then fail with `Corrupt` (not a panic), and delete still works.
pub async fn corrupt_data(store: &dyn SessionStore, corrupt: impl Fn(&SessionKey)) {
    let key = create(store, None, T0).await;
    corrupt(&key);
    let err = store.load(&key, T0).await.unwrap_err();
    assert!(matches!(err, StoreError::Corrupt(_)), "{err:?}");
    assert_eq!(err.class(), crate::ErrorClass::Unavailable);
    let err = store
        .update_field(&key, "n", FieldOp::Increment(1), T0)
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Corrupt(_)), "{err:?}");
    // A whole-record save replaces the bad bytes.
    let rec = record(None, T0);
    assert_eq!(store.save(&key, &rec, Some(1), T0).await.unwrap(), 2);
    assert!(store.load(&key, T0).await.unwrap().is_some());
    corrupt(&key);
    assert!(store.delete(&key, T0).await.unwrap());
    assert!(store.load(&key, T0).await.unwrap().is_none());
}

/// `purge_expired` removes expired sessions and lapsed tombstones, and nothing live.
pub async fn purge(store: &dyn SessionStore) {
    // Other cases may share the store; measure from a time after all of theirs have lapsed.
    let base = T0 + 100 * ABSOLUTE_SECS;
    store.purge_expired(base).await.unwrap();
    let live = create(store, None, base).await;
    let idle = create(store, None, base - CONFIG.idle_timeout_secs).await;
    let deleted = create(store, None, base).await;
    store
        .delete(&deleted, base - CONFIG.tombstone_secs)
        .await
        .unwrap();
    let fresh_tomb = create(store, None, base).await;
    store.delete(&fresh_tomb, base).await.unwrap();
    assert_eq!(store.purge_expired(base).await.unwrap(), 2);
    assert!(store.load(&live, base).await.unwrap().is_some());
    assert!(store.load(&idle, base).await.unwrap().is_none());
    let err = store
        .save(&fresh_tomb, &record(None, base), None, base)
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Deleted), "{err:?}");
}

/// Two handles on the same backing store (two processes sharing a file) see each other's writes,
/// conflicts and tombstones.
pub async fn shared_backing(a: &dyn SessionStore, b: &dyn SessionStore) {
    let key = create(a, Some("frank"), T0).await;
    let mut rec = b.load(&key, T0).await.unwrap().expect("b sees a's create");
    rec.data.insert("from", json!("b"));
    assert_eq!(b.save(&key, &rec, Some(1), T0).await.unwrap(), 2);
    let seen = a.load(&key, T0).await.unwrap().unwrap();
    assert_eq!(seen.data.get("from"), Some(&json!("b")));
    let err = a.save(&key, &rec, Some(1), T0).await.unwrap_err();
    assert!(
        matches!(err, StoreError::Conflict { current: 2 }),
        "{err:?}"
    );
    assert_eq!(b.sessions_of("frank", T0).await.unwrap().len(), 1);
    assert!(a.delete(&key, T0).await.unwrap());
    let err = b.save(&key, &rec, Some(2), T0).await.unwrap_err();
    assert!(matches!(err, StoreError::Deleted), "{err:?}");
}
