//! `--auth jwt` end to end on real shops: login, bearer and cookie auth, refresh rotation, reuse
//! and logout revoking, two shops sharing a key file, the JWKS endpoint, the database-backed
//! cart and the idempotent checkout.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::Path;

use http::{Method, StatusCode};
use serde_json::{Value, json};
use support::{Client, Reply, TestShop, new_key, parallel_adds};
use usher_shop::{AuthMode, DbSpec, PasswordCost, RevocationCheck, SessionsSpec, ShopConfig};

/// An unsigned token (`alg: none`) with otherwise perfect claims.
const ALG_NONE: &str = "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.eyJzdWIiOiJhbm4iLCJleHAiOjk5OTk5OTk5OTksImlzcyI6InVzaGVyLXNob3AiLCJhdWQiOiJ1c2hlci1zaG9wLWFwaSJ9.";

fn jwt_config(id: &str, dir: &Path, keys: &str, revocation: RevocationCheck) -> ShopConfig {
    let mut c = ShopConfig::new(
        id,
        SessionsSpec::Sqlite(dir.join("sessions.db")),
        DbSpec::Sqlite(dir.join("shop.db")),
    );
    c.password_cost = PasswordCost::LOW;
    c.auth = AuthMode::Jwt;
    c.jwt.keys = Some(dir.join(keys));
    c.jwt.revocation = revocation;
    c
}

async fn jwt_shop(id: &str, dir: &Path) -> TestShop {
    TestShop::start_with(jwt_config(id, dir, "jwt.json", RevocationCheck::Never)).await
}

/// Signs up and logs in; returns the login body.
async fn login(c: &mut Client, user: &str, signup: bool) -> Value {
    let creds = json!({"user": user, "password": "pw"});
    if signup {
        let r = c.post("/api/signup", creds.clone()).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    }
    let r = c.post("/api/login", creds).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    r.json()
}

async fn bearer(
    c: &mut Client,
    method: Method,
    path: &str,
    token: &str,
    body: Option<Value>,
) -> Reply {
    let auth = format!("Bearer {token}");
    let (ct, body) = match body {
        Some(b) => (Some("application/json"), b.to_string()),
        None => (None, String::new()),
    };
    c.send(method, path, &[("authorization", auth.as_str())], ct, body)
        .await
}

fn set_cookies(r: &Reply) -> Vec<String> {
    r.headers
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_gives_tokens_in_body_and_cookies_and_both_authenticate() {
    let dir = tempfile::tempdir().unwrap();
    let shop = jwt_shop("shop-a", dir.path()).await;
    let mut browser = shop.client();
    let creds = json!({"user": "ann", "password": "pw"});
    browser.post("/api/signup", creds.clone()).await;
    let r = browser.post("/api/login", creds).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.headers["cache-control"], "no-store");
    let body = r.json();
    assert_eq!(body["expires_in"], 300);
    assert_eq!(body["user"], "ann");
    let access = body["access_token"].as_str().unwrap().to_owned();
    assert_eq!(access.split('.').count(), 3, "a compact JWS");
    assert!(body["refresh_token"].as_str().unwrap().starts_with("urt1."));
    let cookies = set_cookies(&r);
    let at = cookies.iter().find(|c| c.starts_with("usher_at=")).unwrap();
    assert!(at.contains("Path=/;") && at.contains("HttpOnly") && at.contains("Max-Age=300"));
    assert!(
        at.contains(&access),
        "the cookie carries the same access token"
    );
    let rt = cookies.iter().find(|c| c.starts_with("usher_rt=")).unwrap();
    assert!(
        rt.contains("Path=/api/token;") && rt.contains("HttpOnly"),
        "{rt}"
    );

    // The cookie jar alone authenticates…
    let me = browser.get("/api/me").await;
    assert_eq!(me.status, StatusCode::OK, "{}", me.text());
    assert_eq!(
        me.json(),
        json!({"user": "ann", "server": "shop-a", "store": "sqlite", "auth": "jwt", "revocation": "never"})
    );
    // …and so does the bearer header alone.
    let mut api = shop.client();
    let r = bearer(&mut api, Method::GET, "/api/me", &access, None).await;
    assert_eq!(r.json()["user"], "ann");

    // No token, a garbage token, an unsigned token: 401, and the bad ones say so.
    api.get("/api/me").await.expect_error(401, "not_signed_in");
    bearer(&mut api, Method::GET, "/api/me", "not.a.token", None)
        .await
        .expect_error(401, "invalid_token");
    bearer(&mut api, Method::GET, "/api/me", ALG_NONE, None)
        .await
        .expect_error(401, "invalid_token");
    bearer(
        &mut api,
        Method::POST,
        "/api/cart/items",
        ALG_NONE,
        Some(json!({"sku": "mug", "qty": 1})),
    )
    .await
    .expect_error(401, "invalid_token");
    // A stale cookie does not stand in the way of signing in again.
    let mut stale = shop.client();
    stale.jar.insert("usher_at".into(), "garbage".into());
    login(&mut stale, "ann", false).await;
    assert_eq!(stale.get("/api/me").await.json()["user"], "ann");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refresh_rotates_and_a_reused_refresh_token_revokes_the_family() {
    let dir = tempfile::tempdir().unwrap();
    let shop = jwt_shop("shop-a", dir.path()).await;
    let mut c = shop.client();
    let first = login(&mut c, "ann", true).await;
    let rt1 = first["refresh_token"].as_str().unwrap().to_owned();

    // Body form.
    let mut api = shop.client();
    let r = api
        .post("/api/token/refresh", json!({"refresh_token": rt1}))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let second = r.json();
    let rt2 = second["refresh_token"].as_str().unwrap().to_owned();
    assert_ne!(rt2, rt1, "every refresh rotates");
    assert_eq!(second["user"], "ann");
    let at2 = second["access_token"].as_str().unwrap();
    assert_eq!(
        bearer(&mut api, Method::GET, "/api/me", at2, None)
            .await
            .status,
        200
    );

    // Cookie form: the browser's jar still holds rt1 (spent by the body refresh above), so use a
    // jar holding the current token.
    let mut jar = shop.client();
    jar.jar.insert("usher_rt".into(), rt2.clone());
    let r = jar.raw(Method::POST, "/api/token/refresh", None, "").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let rt3 = jar.jar["usher_rt"].clone();
    assert_ne!(rt3, rt2);
    assert_eq!(
        jar.get("/api/me").await.json()["user"],
        "ann",
        "new access cookie"
    );

    // Replaying rt1 (already rotated away) is reuse: refused, and the family is revoked, so
    // even the current rt3 stops working.
    let r = api
        .post("/api/token/refresh", json!({"refresh_token": rt1}))
        .await;
    r.expect_error(401, "invalid_token");
    assert!(
        set_cookies(&r).iter().any(|c| c.starts_with("usher_rt=;")),
        "cookies cleared"
    );
    let r = api
        .post("/api/token/refresh", json!({"refresh_token": rt3}))
        .await;
    r.expect_error(401, "invalid_token");

    // Bad inputs are clear errors.
    api.post("/api/token/refresh", json!({"refresh_token": "urt1.short"}))
        .await
        .expect_error(401, "invalid_token");
    api.post("/api/token/refresh", json!({"token": "x"}))
        .await
        .expect_error(422, "invalid_body");
    shop.client()
        .raw(Method::POST, "/api/token/refresh", None, "")
        .await
        .expect_error(401, "no_refresh_token");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logout_revokes_the_family_and_logout_everywhere_all_of_them() {
    let dir = tempfile::tempdir().unwrap();
    let config = jwt_config("shop-a", dir.path(), "jwt.json", RevocationCheck::Always);
    let shop = TestShop::start_with(config).await;
    let mut tab = shop.client();
    let one = login(&mut tab, "ann", true).await;
    let r = tab.post("/api/logout", json!({})).await;
    assert_eq!(r.json()["signed_out"], true);
    assert!(tab.jar.is_empty(), "cookies cleared: {:?}", tab.jar);
    // With --jwt-revocation always, the access token dies at once; the refresh token too.
    let mut api = shop.client();
    let at = one["access_token"].as_str().unwrap();
    bearer(&mut api, Method::GET, "/api/me", at, None)
        .await
        .expect_error(401, "invalid_token");
    api.post(
        "/api/token/refresh",
        json!({"refresh_token": one["refresh_token"]}),
    )
    .await
    .expect_error(401, "invalid_token");

    // Two devices, then log out everywhere from a third.
    let (mut d1, mut d2, mut d3) = (shop.client(), shop.client(), shop.client());
    let p1 = login(&mut d1, "ann", false).await;
    let p2 = login(&mut d2, "ann", false).await;
    login(&mut d3, "ann", false).await;
    let r = d3.post("/api/logout-everywhere", json!({})).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.json()["sessions_ended"], 3);
    for (c, p) in [(&mut d1, &p1), (&mut d2, &p2)] {
        c.get("/api/me").await.expect_error(401, "invalid_token");
        api.post(
            "/api/token/refresh",
            json!({"refresh_token": p["refresh_token"]}),
        )
        .await
        .expect_error(401, "invalid_token");
    }
    d3.post("/api/logout-everywhere", json!({}))
        .await
        .expect_error(401, "not_signed_in");

    // Without the revocation check a logged-out access token lives out its (short) lifetime,
    // but its refresh token is dead at once.
    let lax = TestShop::start_with(jwt_config(
        "shop-b",
        dir.path(),
        "jwt.json",
        RevocationCheck::Never,
    ))
    .await;
    let mut c = lax.client();
    let p = login(&mut c, "ann", false).await;
    let at = p["access_token"].as_str().unwrap().to_owned();
    c.post("/api/logout", json!({})).await;
    let mut api = lax.client();
    assert_eq!(
        bearer(&mut api, Method::GET, "/api/me", &at, None)
            .await
            .status,
        200
    );
    api.post(
        "/api/token/refresh",
        json!({"refresh_token": p["refresh_token"]}),
    )
    .await
    .expect_error(401, "invalid_token");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shops_sharing_a_key_file_accept_each_others_tokens_and_others_do_not() {
    let dir = tempfile::tempdir().unwrap();
    // Started together on a key file that does not exist yet: one creates it, both use it.
    let (a, b) = tokio::join!(
        jwt_shop("shop-a", dir.path()),
        jwt_shop("shop-b", dir.path())
    );
    assert!(dir.path().join("jwt.json").exists());
    let mut on_a = a.client();
    let p = login(&mut on_a, "ann", true).await;
    on_a.post("/api/cart/items", json!({"sku": "mug", "qty": 2}))
        .await;
    // The same cookie jar on the other shop: same user, same cart (rows in the database).
    let mut on_b = on_a.to(&b);
    assert_eq!(on_b.get("/api/me").await.json()["server"], "shop-b");
    let cart = on_b.get("/api/cart").await.json();
    assert_eq!(cart["items"][0]["sku"], "mug");
    assert_eq!(cart["items"][0]["qty"], 2);
    // A refresh token from shop-a refreshes on shop-b.
    let mut api_b = b.client();
    let r = api_b
        .post(
            "/api/token/refresh",
            json!({"refresh_token": p["refresh_token"]}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());

    // A shop with other keys refuses them.
    let other = TestShop::start_with(jwt_config(
        "shop-x",
        dir.path(),
        "other.json",
        RevocationCheck::Never,
    ))
    .await;
    let mut on_x = on_a.to(&other);
    on_x.get("/api/me").await.expect_error(401, "invalid_token");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwks_endpoint_publishes_the_public_key_and_verifies_issued_tokens() {
    use usher_session::jwt::{JwksSource, JwksVerifier, VerifyOptions, read_key_file};

    let dir = tempfile::tempdir().unwrap();
    let shop = jwt_shop("shop-a", dir.path()).await;
    let mut c = shop.client();
    let r = c.get("/.well-known/jwks.json").await;
    assert_eq!(r.status, StatusCode::OK);
    let jwks = r.json();
    let file = read_key_file(&dir.path().join("jwt.json")).unwrap();
    let keys = jwks["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 1);
    assert_eq!(keys[0]["kid"], file.signing_kid.as_str());
    assert_eq!(keys[0]["kty"], "OKP");
    assert!(keys[0].get("d").is_none(), "no private material: {jwks}");

    // A third party verifying through the JWKS URL accepts the shop's tokens.
    let p = login(&mut c, "ann", true).await;
    let url = format!("http://{}/.well-known/jwks.json", shop.addr);
    let verifier = JwksVerifier::load(
        JwksSource::url(&url).unwrap(),
        VerifyOptions::default()
            .with_issuer("usher-shop")
            .with_audience("usher-shop-api"),
    )
    .await
    .unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let claims = verifier
        .verify(p["access_token"].as_str().unwrap(), now)
        .await
        .unwrap();
    assert_eq!(claims.sub.as_deref(), Some("ann"));

    // Session-mode shops have no JWKS.
    let plain = TestShop::start("shop-s", SessionsSpec::Memory, &dir.path().join("db2")).await;
    plain
        .client()
        .get("/.well-known/jwks.json")
        .await
        .expect_error(404, "not_found");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_users_keep_cart_prefs_and_progress_in_the_database() {
    let dir = tempfile::tempdir().unwrap();
    let shop = jwt_shop("shop-a", dir.path()).await;
    rows_flow(&shop).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_users_rows_in_postgres() {
    let pg = tokio::task::spawn_blocking(usher_testkit::postgres::PgServer::start)
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut config = jwt_config("shop-pg", dir.path(), "jwt.json", RevocationCheck::Always);
    config.sessions = SessionsSpec::Postgres(pg.url());
    config.db = DbSpec::Postgres(pg.url());
    let shop = TestShop::start_with(config).await;
    rows_flow(&shop).await;
}

/// Cart, prefs, progress, checkout and orders of one token user on `shop` (a fresh database).
async fn rows_flow(shop: &TestShop) {
    let mut c = shop.client();
    login(&mut c, "ann", true).await;
    // Two tabs adding in parallel lose nothing.
    parallel_adds(&[c.clone()], 20, "kettle", 3).await;
    let cart = c.get("/api/cart").await.json();
    assert_eq!(cart["items"][0]["qty"], 60);
    assert_eq!(cart["count"], 60);
    c.post("/api/cart/items", json!({"sku": "kettle", "qty": 100}))
        .await;
    c.post("/api/cart/items", json!({"sku": "nope", "qty": 1}))
        .await
        .expect_error(422, "unknown_sku");
    c.post("/api/cart/items", json!({"sku": "mug", "qty": 0}))
        .await
        .expect_error(422, "invalid_qty");
    c.post("/api/cart/items", json!({"sku": "mug", "qty": 1}))
        .await;
    let r = c.json(Method::DELETE, "/api/cart/items/mug", None).await;
    assert_eq!(r.json()["qty"], 0);

    // Prefs: two keys changed separately both stick.
    c.json(Method::PUT, "/api/prefs", Some(json!({"theme": "dark"})))
        .await;
    let r = c
        .json(Method::PUT, "/api/prefs", Some(json!({"language": "fr"})))
        .await;
    assert_eq!(r.json(), json!({"theme": "dark", "language": "fr"}));
    assert_eq!(
        c.get("/api/prefs").await.json(),
        json!({"theme": "dark", "language": "fr"})
    );
    c.json(Method::PUT, "/api/prefs", Some(json!({"theme": "pink"})))
        .await
        .expect_error(422, "invalid_body");
    let r = c
        .json(
            Method::PUT,
            "/api/progress/intro",
            Some(json!({"seconds": 42.5})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(c.get("/api/progress/intro").await.json()["seconds"], 42.5);
    // Anonymous callers see defaults and cannot write.
    let mut anon = shop.client();
    assert_eq!(anon.get("/api/cart").await.json()["items"], json!([]));
    anon.json(Method::PUT, "/api/prefs", Some(json!({"theme": "dark"})))
        .await
        .expect_error(401, "not_signed_in");

    // Checkout: one transaction, the cart emptied; a replay is the stored answer.
    let key = new_key();
    let r = c.checkout_with(&key).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    let order = r.json();
    assert_eq!(order["items"][0]["qty"], 160);
    assert_eq!(c.get("/api/cart").await.json()["items"], json!([]));
    let again = c.checkout_with(&key).await;
    assert_eq!(again.body, r.body);
    assert_eq!(again.headers["idempotent-replayed"], "true");
    assert_eq!(again.headers["idempotency-key-window"], "86400");
    // The same key with another body is refused; no key is refused; an empty cart is 409.
    let r = c
        .send(
            Method::POST,
            "/api/checkout",
            &[("idempotency-key", key.as_str())],
            Some("application/json"),
            "{}",
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text());
    let r = c.send(Method::POST, "/api/checkout", &[], None, "").await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    c.checkout().await.expect_error(409, "cart_empty");
    anon.checkout().await.expect_error(401, "not_signed_in");
    let orders = c.get("/api/orders").await.json();
    assert_eq!(orders["count"], 1);
    assert_eq!(orders["orders"][0]["id"], order["id"]);
}
