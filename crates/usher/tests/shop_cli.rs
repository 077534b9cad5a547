//! `usher shop` as the lab runs it: a real process on a free port, found through its ready line,
//! answering over HTTP, stopping cleanly on SIGTERM; and bad flags failing with a clear message.
#![allow(clippy::unwrap_used)]

#[path = "../../usher-proxy/tests/support/mod.rs"]
mod support;

mod process;

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use process::{Running, usher};
use support::Client;

/// The `listen` field of the JSON ready line, as the lab reads it.
fn listen_addr(line: &str) -> String {
    let v: serde_json::Value = serde_json::from_str(line).unwrap();
    assert_eq!(v["fields"]["message"], "usher shop ready", "{line}");
    assert_eq!(v["fields"]["id"], "shop-cli", "{line}");
    v["fields"]["listen"].as_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shop_starts_answers_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite:{}", dir.path().join("shop.db").display());
    let sessions = format!("sqlite:{}", dir.path().join("sessions.db").display());
    let mut shop = Running::start(&[
        "--log-format",
        "json",
        "shop",
        "--listen",
        "127.0.0.1:0",
        "--id",
        "shop-cli",
        "--sessions",
        &sessions,
        "--db",
        &db,
        "--password-cost",
        "low",
    ]);
    let line = shop.wait_for("usher shop ready");
    let addr = listen_addr(&line);
    assert!(
        addr.starts_with("127.0.0.1:") && !addr.ends_with(":0"),
        "{line}"
    );

    let mut c = Client::default();
    let health = c.get(&format!("http://{addr}/healthz")).await;
    assert_eq!(health.status, 200);
    assert_eq!(health.headers["x-served-by"], "shop-cli");
    assert!(health.body.contains("\"ok\""), "{}", health.body);

    // The store flags took effect: sign up and in, and `me` reports the session store.
    for path in ["/api/signup", "/api/login"] {
        let req = Request::post(format!("http://{addr}{path}"))
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from_static(
                br#"{"user":"ann","password":"pw"}"#,
            )))
            .unwrap();
        let r = c.send(req).await;
        assert!(r.status.is_success(), "{path}: {} {}", r.status, r.body);
    }
    let me = c.get(&format!("http://{addr}/api/me")).await;
    assert_eq!(me.status, 200, "{}", me.body);
    assert!(me.body.contains("\"store\":\"sqlite\""), "{}", me.body);
    let page = c.get(&format!("http://{addr}/")).await;
    assert!(page.body.contains("shop-cli") && page.body.contains("ann"));

    shop.signal("-TERM");
    shop.wait_for("SIGTERM");
    assert!(shop.wait_exit().success());
    shop.wait_for("usher shop stopped");
}

#[test]
fn bad_flags_fail_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite:{}", dir.path().join("shop.db").display());
    let cases: [(&[&str], &str); 5] = [
        (&["--db", "mysql://x"], "--db"),
        (&["--db", &db, "--sessions", "memcached://x"], "--sessions"),
        (&["--db", &db, "--id", "has space"], "--id"),
        (&["--db", &db, "--password-cost", "free"], "password cost"),
        (&["--db", &db, "--argon2-m-kib", "1"], "argon2"),
    ];
    for (args, needle) in cases {
        let out = usher()
            .args(["shop", "--listen", "127.0.0.1:0"])
            .args(args)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} should fail");
        assert!(stderr.contains(needle), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
}
