//! The HTML side as a browser uses it: forms posting to the form routes, 303 back to `/`, and the
//! page showing who is signed in, the cart, orders, preferences and which server answered.
#![allow(clippy::unwrap_used)]

mod support;

use http::StatusCode;
use support::{Reply, TestShop};
use usher_shop::SessionsSpec;

fn location(r: &Reply) -> &str {
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.text());
    r.headers["location"].to_str().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_can_sign_up_shop_check_out_and_change_preferences() {
    let dir = tempfile::tempdir().unwrap();
    let shop = TestShop::start("shop-7", SessionsSpec::Memory, &dir.path().join("db")).await;
    let mut b = shop.client();

    let page = b.get("/").await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(
        page.headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    assert_eq!(page.headers["cache-control"], "no-store");
    let html = page.text();
    assert!(html.contains("<span class=\"srv\">shop-7</span>"));
    assert!(html.contains("action=\"/login\"") && html.contains("action=\"/signup\""));
    assert!(html.contains("Stoneware mug"));

    let r = b.form("/signup", "user=ann&password=pw%20123").await;
    assert_eq!(location(&r), "/?m=signed_up");
    let r = b.form("/signup", "user=ann&password=x").await;
    assert_eq!(location(&r), "/?e=user_exists");
    let html = b.get("/?m=signed_up").await.text();
    assert!(html.contains("Signed in as <b>ann</b>"), "{html}");
    assert!(html.contains("account created"));

    assert_eq!(
        location(&b.form("/cart/add", "sku=mug&qty=2").await),
        "/?m=added"
    );
    assert_eq!(
        location(&b.form("/cart/add", "sku=nope&qty=1").await),
        "/?e=unknown_sku"
    );
    assert_eq!(
        location(&b.form("/cart/add", "sku=mug&qty=0").await),
        "/?e=invalid_qty"
    );
    let html = b.get("/").await.text();
    assert!(
        html.contains("2 × Stoneware mug") && html.contains("29.00"),
        "{html}"
    );

    assert_eq!(location(&b.form("/checkout", "").await), "/?m=ordered");
    assert_eq!(location(&b.form("/checkout", "").await), "/?e=cart_empty");
    let html = b.get("/").await.text();
    assert!(html.contains("Order #1"), "{html}");

    let r = b.form("/prefs", "theme=dark&language=de").await;
    assert_eq!(location(&r), "/?m=saved");
    let html = b.get("/").await.text();
    assert!(html.contains("lang=\"de\"") && html.contains("Angemeldet als"));
    assert!(html.contains("<option value=\"dark\" selected>"));
    // An error code that is not ours is not reflected.
    let html = b.get("/?e=%3Cscript%3E").await.text();
    assert!(!html.contains("<script>"));

    assert_eq!(location(&b.form("/logout", "").await), "/?m=signed_out");
    let html = b.get("/").await.text();
    assert!(html.contains("action=\"/login\""));
    assert_eq!(
        location(&b.form("/login", "user=ann&password=bad").await),
        "/?e=bad_credentials"
    );
    assert_eq!(
        location(&b.form("/login", "user=ann&password=pw+123").await),
        "/?m=signed_in"
    );
    assert_eq!(
        location(&b.form("/cart/remove", "sku=mug").await),
        "/?m=removed"
    );
}
