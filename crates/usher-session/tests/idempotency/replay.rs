use std::sync::atomic::Ordering;

use axum::http::{HeaderMap, StatusCode};
use usher_session::idempotency::Anonymous;

use crate::support::{App, client, clock, layer, memory, send, serve};

#[tokio::test]
async fn replay_is_byte_identical_and_scoped_per_user() {
    let (_now, clock) = clock();
    let app = App::new();
    let server = serve(app.clone(), layer(memory(), clock)).await;
    let c = client();
    let first = send(
        &c,
        server.addr,
        "/api/checkout",
        Some("k-1"),
        Some("alice"),
        "cart=3",
    )
    .await;
    assert_eq!(first.status, StatusCode::CREATED);
    assert!(first.headers.get("idempotent-replayed").is_none());
    assert!(first.headers.get("set-cookie").is_some());
    let again = send(
        &c,
        server.addr,
        "/api/checkout",
        Some("k-1"),
        Some("alice"),
        "cart=3",
    )
    .await;
    assert_eq!(again.status, first.status);
    assert_eq!(again.body, first.body, "body byte for byte");
    assert_eq!(again.headers["idempotent-replayed"], "true");
    let strip = |h: &HeaderMap| {
        let mut v: Vec<(String, Vec<u8>)> = h
            .iter()
            .filter(|(n, _)| !matches!(n.as_str(), "date" | "idempotent-replayed" | "set-cookie"))
            .map(|(n, v)| (n.to_string(), v.as_bytes().to_vec()))
            .collect();
        v.sort();
        v
    };
    assert_eq!(strip(&again.headers), strip(&first.headers));
    assert!(
        again.headers.get("set-cookie").is_none(),
        "cookies are not replayed"
    );
    assert_eq!(app.runs.load(Ordering::SeqCst), 1);

    // The same key from another user is another request; a quoted key equals the bare one.
    let bob = send(
        &c,
        server.addr,
        "/api/checkout",
        Some("k-1"),
        Some("bob"),
        "cart=3",
    )
    .await;
    assert_eq!(bob.status, StatusCode::CREATED);
    assert!(bob.headers.get("idempotent-replayed").is_none());
    let quoted = send(
        &c,
        server.addr,
        "/api/checkout",
        Some("\"k-1\""),
        Some("bob"),
        "cart=3",
    )
    .await;
    assert_eq!(quoted.headers["idempotent-replayed"], "true");
    assert_eq!(quoted.body, bob.body);
    assert_eq!(app.runs.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn key_rules() {
    let (_now, clock) = clock();
    let app = App::new();
    let server = serve(app.clone(), layer(memory(), clock.clone())).await;
    let c = client();
    let ok = send(
        &c,
        server.addr,
        "/api/checkout",
        Some("k-2"),
        Some("alice"),
        "a",
    )
    .await;
    assert_eq!(ok.status, StatusCode::CREATED);
    let other = send(
        &c,
        server.addr,
        "/api/checkout",
        Some("k-2"),
        Some("alice"),
        "b",
    )
    .await;
    assert_eq!(other.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(other.headers["content-type"], "application/problem+json");
    let missing = send(&c, server.addr, "/api/checkout", None, Some("alice"), "a").await;
    assert_eq!(missing.status, StatusCode::BAD_REQUEST);
    assert!(String::from_utf8_lossy(&missing.body).contains("idempotency_key_missing"));
    for bad in ["\"unterminated", "has space", "\"\"", &"x".repeat(300)] {
        let r = send(
            &c,
            server.addr,
            "/api/checkout",
            Some(bad),
            Some("alice"),
            "a",
        )
        .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{bad:.20}");
    }
    // Routes the layer does not cover need no key.
    let ping = send(&c, server.addr, "/api/ping", None, None, "").await;
    assert_eq!(ping.status, StatusCode::OK);
    assert!(ping.headers.get("idempotency-key-window").is_none());
    assert_eq!(
        app.runs.load(Ordering::SeqCst),
        1,
        "no rejected request reached the handler"
    );

    // Size limit and anonymous policy.
    let strict = serve(
        app.clone(),
        layer(memory(), clock)
            .with_max_body(16)
            .with_anonymous(Anonymous::Reject),
    )
    .await;
    let big = send(
        &c,
        strict.addr,
        "/api/checkout",
        Some("k-3"),
        Some("alice"),
        &"x".repeat(17),
    )
    .await;
    assert_eq!(big.status, StatusCode::PAYLOAD_TOO_LARGE);
    let anon = send(&c, strict.addr, "/api/checkout", Some("k-3"), None, "a").await;
    assert_eq!(anon.status, StatusCode::UNAUTHORIZED);
    assert_eq!(app.runs.load(Ordering::SeqCst), 1);
}
