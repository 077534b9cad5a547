//! `JwksVerifier` over a file and over a real loopback HTTP server.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use serde_json::Value;
use usher_session::jwt::{Algorithm, JwksSource, JwksVerifier, KeyFile, Rejection};

use super::{NOW, claims, options};

#[tokio::test]
async fn jwks_file_refetches_on_unknown_kid_rate_limited() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("jwks.json");
    let mut file = KeyFile::generate(Algorithm::EdDSA).unwrap();
    let ring = file.ring(options()).unwrap();
    std::fs::write(&path, ring.jwks().to_string()).unwrap();
    let verifier = JwksVerifier::load(JwksSource::File(path.clone()), options())
        .await
        .unwrap()
        .with_min_refetch_interval(Duration::ZERO);
    assert!(
        verifier
            .verify(&ring.sign(&claims()).unwrap(), NOW)
            .await
            .is_ok()
    );
    assert_eq!(verifier.fetches().await, 1);

    // The issuer rotates and republishes: the first token with the new kid triggers a refetch.
    file.rotate(Algorithm::ES256).unwrap();
    let ring = file.ring(options()).unwrap();
    std::fs::write(&path, ring.jwks().to_string()).unwrap();
    let fresh = ring.sign(&claims()).unwrap();
    assert!(verifier.verify(&fresh, NOW).await.is_ok());
    assert_eq!(verifier.fetches().await, 2);
    assert!(verifier.verify(&fresh, NOW).await.is_ok());
    assert_eq!(verifier.fetches().await, 2, "known kid: no refetch");

    // Rate limit: unknown kids within the interval cost no fetch.
    let limited = JwksVerifier::load(JwksSource::File(path), options())
        .await
        .unwrap()
        .with_min_refetch_interval(Duration::from_secs(3600));
    let stranger = KeyFile::generate(Algorithm::EdDSA)
        .unwrap()
        .ring(options())
        .unwrap();
    let unknown = stranger.sign(&claims()).unwrap();
    for _ in 0..20 {
        assert_eq!(
            limited.verify(&unknown, NOW).await,
            Err(Rejection::UnknownKid)
        );
    }
    assert_eq!(limited.fetches().await, 1);
    // Every other rule applies to JWKS keys too.
    let mut c = claims();
    c.aud = vec!["bank".into()];
    assert_eq!(
        limited.verify(&ring.sign(&c).unwrap(), NOW).await,
        Err(Rejection::WrongAudience)
    );
}

struct JwksServer {
    addr: std::net::SocketAddr,
    doc: Arc<RwLock<Value>>,
    hits: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

async fn jwks_server(doc: Value) -> JwksServer {
    let doc = Arc::new(RwLock::new(doc));
    let hits = Arc::new(AtomicU64::new(0));
    let (d, h) = (doc.clone(), hits.clone());
    let app = axum::Router::new().route(
        "/.well-known/jwks.json",
        axum::routing::get(move || {
            let (d, h) = (d.clone(), h.clone());
            async move {
                h.fetch_add(1, Ordering::SeqCst);
                axum::Json(d.read().unwrap().clone())
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    JwksServer {
        addr,
        doc,
        hits,
        task,
    }
}

#[tokio::test]
async fn jwks_over_http_follows_rotation() {
    let mut file = KeyFile::generate(Algorithm::RS256).unwrap();
    let ring = file.ring(options()).unwrap();
    let server = jwks_server(ring.jwks()).await;
    let url = format!("http://{}/.well-known/jwks.json", server.addr);
    let verifier = JwksVerifier::load(JwksSource::url(&url).unwrap(), options())
        .await
        .unwrap()
        .with_min_refetch_interval(Duration::from_millis(0));
    assert!(
        verifier
            .verify(&ring.sign(&claims()).unwrap(), NOW)
            .await
            .is_ok()
    );
    file.rotate(Algorithm::EdDSA).unwrap();
    let ring = file.ring(options()).unwrap();
    *server.doc.write().unwrap() = ring.jwks();
    assert!(
        verifier
            .verify(&ring.sign(&claims()).unwrap(), NOW)
            .await
            .is_ok()
    );
    assert_eq!(server.hits.load(Ordering::SeqCst), 2);

    // Concurrent unknown-kid tokens collapse into one refetch per interval.
    let limited = Arc::new(
        JwksVerifier::load(JwksSource::url(&url).unwrap(), options())
            .await
            .unwrap()
            .with_min_refetch_interval(Duration::from_secs(3600)),
    );
    let stranger = KeyFile::generate(Algorithm::EdDSA)
        .unwrap()
        .ring(options())
        .unwrap();
    let unknown = stranger.sign(&claims()).unwrap();
    let before = server.hits.load(Ordering::SeqCst);
    let tasks: Vec<_> = (0..32)
        .map(|_| {
            let (v, t) = (limited.clone(), unknown.clone());
            tokio::spawn(async move { v.verify(&t, NOW).await })
        })
        .collect();
    for t in tasks {
        assert_eq!(t.await.unwrap(), Err(Rejection::UnknownKid));
    }
    assert_eq!(
        server.hits.load(Ordering::SeqCst),
        before,
        "no refetch within the interval"
    );
    server.task.abort();
    // A JWKS URL that does not answer fails to load, promptly.
    let dead = JwksVerifier::load(JwksSource::url(&url).unwrap(), options()).await;
    assert!(dead.is_err());
}
