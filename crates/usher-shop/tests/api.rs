//! The shop's JSON API end to end over real HTTP: real shops on ephemeral loopback ports, real
//! SQLite files, real session stores. Every reply is checked for `X-Served-By` by the client.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use http::{Method, StatusCode};
use serde_json::{Value, json};
use support::{TestShop, cart_qty, parallel_adds};
use usher_shop::SessionsSpec;
use usher_shop::db::Db;

/// Path, content type, body, expected status and error code.
type RawCase = (
    &'static str,
    Option<&'static str>,
    Vec<u8>,
    u16,
    &'static str,
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signup_login_me_and_logout() {
    let dir = tempfile::tempdir().unwrap();
    let shop = TestShop::start("shop-a", SessionsSpec::Memory, &dir.path().join("db")).await;
    let mut c = shop.client();

    let r = c.get("/healthz").await;
    assert_eq!(r.json(), json!({"status": "ok", "server": "shop-a"}));
    c.get("/api/me").await.expect_error(401, "not_signed_in");

    let creds = json!({"user": "ann", "password": "s3cret!"});
    let r = c.post("/api/signup", creds.clone()).await;
    assert_eq!(r.status, StatusCode::CREATED);
    assert_eq!(r.json()["user"], "ann");
    assert!(c.jar.is_empty(), "signing up does not create a session");
    c.post("/api/signup", creds.clone())
        .await
        .expect_error(409, "user_exists");
    c.post("/api/login", json!({"user": "ann", "password": "wrong"}))
        .await
        .expect_error(401, "bad_credentials");
    c.post("/api/login", json!({"user": "nobody", "password": "x"}))
        .await
        .expect_error(401, "bad_credentials");

    let r = c.post("/api/login", creds).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(
        r.json(),
        json!({"user": "ann", "server": "shop-a", "store": "memory", "auth": "session"})
    );
    let cookie = r.headers["set-cookie"].to_str().unwrap().to_owned();
    assert!(cookie.starts_with("usher_sid="), "{cookie}");
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Lax"),
        "{cookie}"
    );
    let me = c.get("/api/me").await;
    assert_eq!(me.json()["user"], "ann");

    let r = c.post("/api/logout", json!({})).await;
    assert_eq!(r.json()["signed_out"], true);
    c.get("/api/me").await.expect_error(401, "not_signed_in");
    // Logging out again is harmless.
    assert_eq!(
        c.post("/api/logout", json!({})).await.status,
        StatusCode::OK
    );
    shop.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn old_session_ids_stop_working_after_login_rotates_them() {
    let dir = tempfile::tempdir().unwrap();
    let shop = TestShop::start("shop-a", SessionsSpec::Memory, &dir.path().join("db")).await;
    let mut c = shop.client();
    // An anonymous session (a theme preference), then sign in: the id changes, data stays.
    let r = c
        .json(Method::PUT, "/api/prefs", Some(json!({"theme": "dark"})))
        .await;
    assert_eq!(r.json(), json!({"theme": "dark", "language": "en"}));
    let before = c.jar.clone();
    c.sign_in("ann", "pw", true).await;
    assert_ne!(before, c.jar, "the session id is rotated on login");
    assert_eq!(c.get("/api/prefs").await.json()["theme"], "dark");
    let mut old = shop.client();
    old.jar = before;
    old.get("/api/me").await.expect_error(401, "not_signed_in");
    // Signing in as someone else ends ann's session first: her data does not carry over.
    c.post("/api/cart/items", json!({"sku": "mug", "qty": 1}))
        .await;
    c.sign_in("bob", "pw", true).await;
    assert_eq!(c.get("/api/me").await.json()["user"], "bob");
    assert_eq!(cart_qty(&c.get("/api/cart").await.json(), "mug"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cart_add_remove_and_two_tabs_adding_in_parallel_lose_nothing() {
    let dir = tempfile::tempdir().unwrap();
    for (n, sessions) in [
        SessionsSpec::Memory,
        SessionsSpec::Sqlite(dir.path().join("sessions.db")),
    ]
    .into_iter()
    .enumerate()
    {
        let shop = TestShop::start("shop-a", sessions, &dir.path().join(format!("db{n}"))).await;
        let mut c = shop.client();
        let r = c.get("/api/cart").await;
        assert_eq!(r.json()["items"], json!([]), "anonymous carts are empty");
        c.post("/api/cart/items", json!({"sku": "mug", "qty": 1}))
            .await
            .expect_error(401, "not_signed_in");
        c.sign_in("ann", "pw", true).await;

        let r = c
            .post("/api/cart/items", json!({"sku": "mug", "qty": 2}))
            .await;
        assert_eq!(r.json()["qty"], 2);
        c.post("/api/cart/items", json!({"sku": "tea-green", "qty": 3}))
            .await;
        let cart = c.get("/api/cart").await.json();
        assert_eq!(cart_qty(&cart, "mug"), 2);
        assert_eq!(cart_qty(&cart, "tea-green"), 3);
        assert_eq!(cart["count"], 5);
        let r = c
            .json(Method::DELETE, "/api/cart/items/tea-green", None)
            .await;
        assert_eq!(r.json()["qty"], 0);
        let cart = c.get("/api/cart").await.json();
        assert_eq!(cart_qty(&cart, "tea-green"), 0);
        assert_eq!(cart["items"].as_array().unwrap().len(), 1);

        // Two tabs (same cookie), 50 adds each, all 100 in flight together.
        parallel_adds(&[c.clone(), c.clone()], 50, "kettle", 1).await;
        let cart = c.get("/api/cart").await.json();
        assert_eq!(cart_qty(&cart, "kettle"), 100, "no add is lost");
        assert_eq!(cart_qty(&cart, "mug"), 2, "other lines untouched");
        shop.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkout_writes_the_order_and_empties_the_cart() {
    let dir = tempfile::tempdir().unwrap();
    let db_path = dir.path().join("shop.db");
    let shop = TestShop::start("shop-a", SessionsSpec::Memory, &db_path).await;
    let mut c = shop.client();
    c.checkout().await.expect_error(401, "not_signed_in");
    c.get("/api/orders")
        .await
        .expect_error(401, "not_signed_in");
    c.sign_in("ann", "pw", true).await;
    c.checkout().await.expect_error(409, "cart_empty");
    assert_eq!(c.get("/api/orders").await.json()["orders"], json!([]));

    c.post("/api/cart/items", json!({"sku": "mug", "qty": 2}))
        .await;
    c.post("/api/cart/items", json!({"sku": "honey", "qty": 1}))
        .await;
    // Checkout requires an Idempotency-Key.
    let r = c.send(Method::POST, "/api/checkout", &[], None, "").await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text());
    let r = c.checkout_with("0123456789abcdef").await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    let order = r.json();
    assert_eq!(order["user"], "ann");
    assert_eq!(order["server"], "shop-a");
    assert_eq!(order["total_cents"], 2 * 1450 + 890);
    assert_eq!(order["items"].as_array().unwrap().len(), 2);
    assert_eq!(c.get("/api/cart").await.json()["items"], json!([]));

    let orders = c.get("/api/orders").await.json();
    assert_eq!(orders["count"], 1);
    assert_eq!(orders["orders"][0]["id"], order["id"]);
    // And it is really in the database, where another process would see it.
    let db = Db::open(&usher_shop::DbSpec::Sqlite(db_path))
        .await
        .unwrap();
    let stored = db.orders("ann", 10).await.unwrap();
    assert_eq!(stored.len(), 1);
    assert_eq!(json!(stored[0].id), order["id"]);
    assert_eq!(stored[0].total_cents, 2 * 1450 + 890);

    // The same key again: the stored answer, byte for byte, not a second order.
    let again = c.checkout_with("0123456789abcdef").await;
    assert_eq!(again.status, StatusCode::CREATED);
    assert_eq!(again.body, r.body);
    assert_eq!(again.headers["idempotent-replayed"], "true");
    assert_eq!(c.get("/api/orders").await.json()["count"], 1);

    // A second checkout right after: nothing left to order.
    c.checkout().await.expect_error(409, "cart_empty");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_checkouts_of_one_cart_never_leave_negative_lines() {
    let dir = tempfile::tempdir().unwrap();
    let shop = TestShop::start("shop-a", SessionsSpec::Memory, &dir.path().join("db")).await;
    let mut c = shop.client();
    c.sign_in("ann", "pw", true).await;
    c.post("/api/cart/items", json!({"sku": "mug", "qty": 2}))
        .await;
    let (mut a, mut b) = (c.clone(), c.clone());
    let (ra, rb) = tokio::join!(a.checkout(), b.checkout());
    assert!(ra.status.is_success() || rb.status.is_success());
    assert_eq!(c.get("/api/cart").await.json()["items"], json!([]));
    // Whatever interleaving happened, a new add counts from zero.
    let r = c
        .post("/api/cart/items", json!({"sku": "mug", "qty": 1}))
        .await;
    assert_eq!(r.json()["qty"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prefs_and_video_progress() {
    let dir = tempfile::tempdir().unwrap();
    let shop = TestShop::start("shop-a", SessionsSpec::Memory, &dir.path().join("db")).await;
    let mut c = shop.client();
    assert_eq!(
        c.get("/api/prefs").await.json(),
        json!({"theme": "light", "language": "en"})
    );
    let r = c
        .json(Method::PUT, "/api/prefs", Some(json!({"language": "fr"})))
        .await;
    assert_eq!(r.json(), json!({"theme": "light", "language": "fr"}));
    c.json(Method::PUT, "/api/prefs", Some(json!({"theme": "dark"})))
        .await;
    assert_eq!(
        c.get("/api/prefs").await.json(),
        json!({"theme": "dark", "language": "fr"})
    );
    c.json(Method::PUT, "/api/prefs", Some(json!({"theme": "pink"})))
        .await
        .expect_error(422, "invalid_body");
    c.json(Method::PUT, "/api/prefs", Some(json!({})))
        .await
        .expect_error(422, "invalid_body");

    let r = c
        .json(
            Method::PUT,
            "/api/progress/intro-1",
            Some(json!({"seconds": 42.5})),
        )
        .await;
    assert_eq!(r.json()["seconds"], 42.5);
    c.json(
        Method::PUT,
        "/api/progress/other",
        Some(json!({"seconds": 7})),
    )
    .await;
    assert_eq!(c.get("/api/progress/intro-1").await.json()["seconds"], 42.5);
    assert_eq!(c.get("/api/progress/other").await.json()["seconds"], 7.0);
    assert_eq!(c.get("/api/progress/never").await.json()["seconds"], 0.0);
    c.json(Method::PUT, "/api/progress/x", Some(json!({"seconds": -1})))
        .await
        .expect_error(422, "invalid_seconds");
    c.json(
        Method::PUT,
        "/api/progress/bad%20id",
        Some(json!({"seconds": 1})),
    )
    .await
    .expect_error(422, "invalid_video");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logout_everywhere_ends_the_other_clients_session() {
    let dir = tempfile::tempdir().unwrap();
    let shop = TestShop::start("shop-a", SessionsSpec::Memory, &dir.path().join("db")).await;
    let (mut phone, mut laptop, mut other) = (shop.client(), shop.client(), shop.client());
    phone.sign_in("ann", "pw", true).await;
    laptop.sign_in("ann", "pw", false).await;
    other.sign_in("bob", "pw", true).await;
    laptop
        .post("/api/cart/items", json!({"sku": "mug", "qty": 1}))
        .await;
    let r = phone.post("/api/logout-everywhere", json!({})).await;
    assert_eq!(r.json()["sessions_ended"], 2);
    phone
        .get("/api/me")
        .await
        .expect_error(401, "not_signed_in");
    laptop
        .get("/api/me")
        .await
        .expect_error(401, "not_signed_in");
    assert_eq!(laptop.get("/api/cart").await.json()["items"], json!([]));
    laptop
        .post("/api/cart/items", json!({"sku": "mug", "qty": 1}))
        .await
        .expect_error(401, "not_signed_in");
    assert_eq!(other.get("/api/me").await.json()["user"], "bob");
    phone
        .post("/api/logout-everywhere", json!({}))
        .await
        .expect_error(401, "not_signed_in");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_a_4xx_json_error_never_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let shop = TestShop::start("shop-a", SessionsSpec::Memory, &dir.path().join("db")).await;
    let mut c = shop.client();
    c.sign_in("ann", "pw", true).await;
    let add = "/api/cart/items";
    let cases: Vec<(Value, u16, &str)> = vec![
        (json!({"sku": "mug", "qty": 1, "x": 1}), 422, "invalid_body"),
        (json!({"sku": "mug"}), 422, "invalid_body"),
        (json!({"sku": "mug", "qty": "1"}), 422, "invalid_body"),
        (json!({"sku": "mug", "qty": 1.5}), 422, "invalid_body"),
        (json!({"sku": "mug", "qty": 1e30}), 422, "invalid_body"),
        (json!({"sku": "mug", "qty": -1}), 422, "invalid_qty"),
        (json!({"sku": "mug", "qty": 0}), 422, "invalid_qty"),
        (json!({"sku": "mug", "qty": 101}), 422, "invalid_qty"),
        (json!({"sku": "mug", "qty": i64::MAX}), 422, "invalid_qty"),
        (json!({"sku": "nope", "qty": 1}), 422, "unknown_sku"),
        (json!([1, 2]), 422, "invalid_body"),
    ];
    for (body, status, code) in cases {
        let r = c.post(add, body.clone()).await;
        assert_eq!(r.status.as_u16(), status, "{body}: {}", r.text());
        assert_eq!(r.json()["error"], code, "{body}");
    }
    let raw: Vec<RawCase> = vec![
        (
            add,
            Some("application/json"),
            b"{\"sku\": ".to_vec(),
            400,
            "bad_json",
        ),
        (add, Some("application/json"), b"".to_vec(), 400, "bad_json"),
        (
            add,
            Some("application/json"),
            b"{\"sku\": \"\xff\", \"qty\": 1}".to_vec(),
            400,
            "not_utf8",
        ),
        (
            add,
            Some("text/plain"),
            b"{}".to_vec(),
            415,
            "unsupported_media_type",
        ),
        (add, None, b"{}".to_vec(), 415, "unsupported_media_type"),
        (
            "/api/login",
            Some("application/json"),
            vec![b' '; 1 << 20],
            413,
            "body_too_large",
        ),
        (
            add,
            Some("application/json"),
            vec![b'1'; 1 << 20],
            413,
            "body_too_large",
        ),
        (
            "/api/signup",
            Some("application/json"),
            br#"{"user":"a b","password":"x"}"#.to_vec(),
            422,
            "invalid_user",
        ),
        (
            "/api/signup",
            Some("application/json"),
            br#"{"user":"ok","password":""}"#.to_vec(),
            422,
            "invalid_password",
        ),
        (
            "/api/login",
            Some("application/json"),
            br#"{"user":"ann","password":"pw","extra":true}"#.to_vec(),
            422,
            "invalid_body",
        ),
    ];
    for (path, ct, body, status, code) in raw {
        let r = c.raw(Method::POST, path, ct, body).await;
        r.expect_error(status, code);
    }
    let r = c.json(Method::DELETE, "/api/cart/items/nope", None).await;
    r.expect_error(404, "unknown_sku");
    c.get("/no/such/route").await.expect_error(404, "not_found");
    c.get("/api/cart/items")
        .await
        .expect_error(405, "method_not_allowed");
    c.json(Method::DELETE, "/api/me", None)
        .await
        .expect_error(405, "method_not_allowed");
    // A form route with a broken form redirects with an error code (the page shows it).
    let r = c.form("/cart/add", "sku=mug&qty=lots").await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    assert_eq!(r.headers["location"], "/?e=bad_form");
    // The session survived all of it.
    assert_eq!(c.get("/api/me").await.json()["user"], "ann");
    assert_eq!(c.get("/api/cart").await.json()["items"], json!([]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shared_store_follows_the_user_and_memory_does_not() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("shop.db");
    // Shared: both shops use one SQLite session file.
    let shared = SessionsSpec::Sqlite(dir.path().join("sessions.db"));
    let a = TestShop::start("shop-a", shared.clone(), &db).await;
    let b = TestShop::start("shop-b", shared, &db).await;
    let mut on_a = a.client();
    on_a.sign_in("ann", "pw", true).await;
    on_a.post("/api/cart/items", json!({"sku": "mug", "qty": 3}))
        .await;
    let mut on_b = on_a.to(&b);
    let me = on_b.get("/api/me").await.json();
    assert_eq!(
        me,
        json!({"user": "ann", "server": "shop-b", "store": "sqlite", "auth": "session"})
    );
    assert_eq!(cart_qty(&on_b.get("/api/cart").await.json(), "mug"), 3);
    let r = on_b.checkout().await;
    assert_eq!(r.status, StatusCode::CREATED);
    assert_eq!(on_a.get("/api/orders").await.json()["count"], 1);

    // Memory: the other shop does not know the session.
    let c = TestShop::start("shop-c", SessionsSpec::Memory, &db).await;
    let d = TestShop::start("shop-d", SessionsSpec::Memory, &db).await;
    let mut on_c = c.client();
    on_c.sign_in("ann", "pw", false).await;
    on_c.post("/api/cart/items", json!({"sku": "mug", "qty": 1}))
        .await;
    let mut on_d = on_c.to(&d);
    on_d.get("/api/me").await.expect_error(401, "not_signed_in");
    assert_eq!(on_d.get("/api/cart").await.json()["items"], json!([]));
    // Accounts are in the shared database, so signing in again on shop-d works.
    on_d.sign_in("ann", "pw", false).await;
    assert_eq!(on_d.get("/api/orders").await.json()["count"], 1);
}
