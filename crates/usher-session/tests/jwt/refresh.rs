//! Refresh families: rotation, reuse detection, logout, expiry, two servers on one SQLite file.

use std::num::NonZeroUsize;
use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Map, json};
use usher_session::jwt::{
    Algorithm, KeyFile, KeyRing, Rejection, RevocationCheck, TokenError, TokenService,
};
use usher_session::{MemoryStore, SessionStore, SqliteStore, StoreConfig};

use super::{NOW, options};

pub fn memory() -> Arc<dyn SessionStore> {
    Arc::new(MemoryStore::new(
        StoreConfig::default(),
        NonZeroUsize::new(1000).unwrap(),
    ))
}

pub fn service(store: Arc<dyn SessionStore>, ring: Arc<KeyRing>) -> TokenService {
    TokenService::new(ring, store)
        .with_issuer("usher")
        .with_audience("shop")
}

pub fn rejected(r: Result<impl std::fmt::Debug, TokenError>) -> Rejection {
    match r {
        Err(TokenError::Rejected(reason)) => reason,
        other => panic!("expected a rejection, got {other:?}"),
    }
}

#[tokio::test]
async fn refresh_rotates_and_reuse_revokes_the_family() {
    let ring = Arc::new(
        KeyFile::generate(Algorithm::EdDSA)
            .unwrap()
            .ring(options())
            .unwrap(),
    );
    let svc = service(memory(), ring).with_revocation_check(RevocationCheck::Always);
    let mut extra = Map::new();
    extra.insert("role".into(), json!("customer"));
    let first = svc.login("alice", extra, NOW).await.unwrap();
    assert_eq!(first.expires_in, 300);
    let c = svc.verify_access(&first.access_token, NOW).await.unwrap();
    assert_eq!(c.sub.as_deref(), Some("alice"));
    assert_eq!(c.sid.as_deref(), Some(first.family.as_str()));
    assert_eq!(c.extra["role"], json!("customer"));
    assert_eq!(c.exp, NOW + 300);

    let second = svc.refresh(&first.refresh_token, NOW + 100).await.unwrap();
    assert_ne!(second.refresh_token, first.refresh_token);
    assert_eq!(second.family, first.family);
    let third = svc.refresh(&second.refresh_token, NOW + 200).await.unwrap();
    assert_eq!(
        svc.verify_access(&third.access_token, NOW + 200)
            .await
            .unwrap()
            .extra["role"],
        json!("customer")
    );

    // The thief replays the first token: the whole family dies.
    assert_eq!(
        rejected(svc.refresh(&first.refresh_token, NOW + 210).await),
        Rejection::RefreshReused
    );
    assert_eq!(
        rejected(svc.refresh(&third.refresh_token, NOW + 220).await),
        Rejection::Revoked
    );
    assert_eq!(
        rejected(svc.verify_access(&third.access_token, NOW + 220).await),
        Rejection::Revoked
    );
    // Without the store check the access token lives out its 5 minutes.
    let lax = svc.clone().with_revocation_check(RevocationCheck::Never);
    assert!(
        lax.verify_access(&third.access_token, NOW + 220)
            .await
            .is_ok()
    );

    // Garbage and forged secrets for a live family are refused without revoking it.
    let other = svc.login("bob", Map::new(), NOW).await.unwrap();
    assert_eq!(
        rejected(svc.refresh("urt1.nope", NOW).await),
        Rejection::Malformed
    );
    let mut raw = URL_SAFE_NO_PAD.decode(&other.refresh_token[5..]).unwrap();
    raw[40] ^= 1;
    let forged = format!("urt1.{}", URL_SAFE_NO_PAD.encode(&raw));
    assert_eq!(
        rejected(svc.refresh(&forged, NOW).await),
        Rejection::UnknownRefreshToken
    );
    assert!(svc.refresh(&other.refresh_token, NOW + 1).await.is_ok());
}

#[tokio::test]
async fn logout_and_logout_everywhere() {
    let ring = Arc::new(
        KeyFile::generate(Algorithm::ES256)
            .unwrap()
            .ring(options())
            .unwrap(),
    );
    let svc = service(memory(), ring).with_revocation_check(RevocationCheck::Always);
    let phone = svc.login("alice", Map::new(), NOW).await.unwrap();
    let laptop = svc.login("alice", Map::new(), NOW).await.unwrap();
    let bob = svc.login("bob", Map::new(), NOW).await.unwrap();
    assert!(svc.logout(&phone.refresh_token, NOW).await.unwrap());
    assert_eq!(
        rejected(svc.refresh(&phone.refresh_token, NOW).await),
        Rejection::Revoked
    );
    assert!(svc.refresh(&laptop.refresh_token, NOW).await.is_ok());
    assert_eq!(svc.logout_everywhere("alice", NOW).await.unwrap(), 1);
    assert_eq!(
        rejected(svc.verify_access(&laptop.access_token, NOW).await),
        Rejection::Revoked
    );
    assert!(svc.verify_access(&bob.access_token, NOW).await.is_ok());
    assert!(svc.logout_family(&bob.family, NOW).await.unwrap());
    assert_eq!(
        rejected(svc.verify_access(&bob.access_token, NOW).await),
        Rejection::Revoked
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn refresh_reuse_across_two_servers_on_one_sqlite_file() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("tokens.db");
    let file = KeyFile::generate(Algorithm::EdDSA).unwrap();
    // Two "servers": their own ring (same key file) and their own store handle on one file.
    let server = || {
        let store: Arc<dyn SessionStore> =
            Arc::new(SqliteStore::open(&db, StoreConfig::default()).unwrap());
        service(store, Arc::new(file.ring(options()).unwrap()))
            .with_revocation_check(RevocationCheck::Always)
    };
    let (a, b) = (server(), server());
    let login = a.login("alice", Map::new(), NOW).await.unwrap();
    let next = b.refresh(&login.refresh_token, NOW + 1).await.unwrap();
    assert!(a.verify_access(&next.access_token, NOW + 1).await.is_ok());
    assert_eq!(
        rejected(a.refresh(&login.refresh_token, NOW + 2).await),
        Rejection::RefreshReused
    );
    assert_eq!(
        rejected(b.refresh(&next.refresh_token, NOW + 3).await),
        Rejection::Revoked
    );
    assert_eq!(
        rejected(b.verify_access(&next.access_token, NOW + 3).await),
        Rejection::Revoked
    );

    // Two servers racing with the same token: exactly one wins, and the race is a reuse.
    let login = a.login("carol", Map::new(), NOW).await.unwrap();
    let (ra, rb) = tokio::join!(
        a.refresh(&login.refresh_token, NOW + 5),
        b.refresh(&login.refresh_token, NOW + 5)
    );
    let wins = [ra.is_ok(), rb.is_ok()].iter().filter(|w| **w).count();
    assert_eq!(wins, 1, "one token, one rotation");
    let loser = if ra.is_ok() { rb } else { ra };
    assert!(matches!(
        loser,
        Err(TokenError::Rejected(
            Rejection::RefreshReused | Rejection::Revoked
        ))
    ));
}

#[tokio::test]
async fn refresh_families_expire() {
    let ring = Arc::new(
        KeyFile::generate(Algorithm::HS256)
            .unwrap()
            .ring(options())
            .unwrap(),
    );
    let svc = service(memory(), ring)
        .with_refresh_ttl(100)
        .with_family_ttl(1000);
    let p = svc.login("alice", Map::new(), NOW).await.unwrap();
    let p = svc.refresh(&p.refresh_token, NOW + 90).await.unwrap();
    let p = svc.refresh(&p.refresh_token, NOW + 180).await.unwrap();
    assert_eq!(
        rejected(svc.refresh(&p.refresh_token, NOW + 281).await),
        Rejection::Revoked
    );
    let p = svc.login("alice", Map::new(), NOW).await.unwrap();
    let mut t = p.refresh_token;
    for i in 1..=9 {
        t = svc.refresh(&t, NOW + i * 99).await.unwrap().refresh_token;
    }
    assert_eq!(
        rejected(svc.refresh(&t, NOW + 1000).await),
        Rejection::Revoked
    );
}
