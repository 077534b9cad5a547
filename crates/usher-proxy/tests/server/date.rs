use std::time::{Duration, SystemTime};

use crate::client::{Conn, lb_without_backends};
use crate::support::{Backend, TestLb, config};
use crate::wire::Res;

/// Asserts `res` carries exactly one `Date`, an IMF-fixdate close to now.
fn assert_dated(res: &Res, what: &str) {
    let dates = res.all("date");
    assert_eq!(
        dates.len(),
        1,
        "{what}: want one Date, got {:?}",
        res.headers
    );
    let text = dates[0];
    assert_eq!(text.len(), 29, "{what}: {text:?}");
    assert!(text.ends_with(" GMT"), "{what}: {text:?}");
    let at = httpdate::parse_http_date(text)
        .unwrap_or_else(|e| panic!("{what}: Date {text:?} does not parse: {e}"));
    let now = SystemTime::now();
    let off = now.duration_since(at).unwrap_or_else(|e| e.duration());
    assert!(
        off < Duration::from_secs(60),
        "{what}: Date {text:?} is {off:?} off"
    );
}

#[tokio::test]
async fn every_response_carries_one_valid_date() {
    let b = Backend::start("d-0").await;
    let lb = TestLb::start(config(&[&b])).await;
    let mut c = Conn::open(lb.addr).await;
    c.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\nGET /fail HTTP/1.1\r\nHost: x\r\n\r\n")
        .await;
    let r = c.response(false).await;
    assert_eq!(r.status, 200);
    assert_dated(&r, "proxied 200");
    let r = c.response(false).await;
    assert_eq!(r.status, 500);
    assert_dated(&r, "proxied 500");

    for (case, status) in [
        (&b"GET /a b HTTP/1.1\r\n\r\n"[..], 400),
        (&b"CONNECT a:443 HTTP/1.1\r\n\r\n"[..], 501),
    ] {
        let mut c = Conn::open(lb.addr).await;
        c.send(case).await;
        let r = c.response(false).await;
        assert_eq!(r.status, status);
        assert_dated(&r, &format!("local {status}"));
    }

    let dead = lb_without_backends().await;
    let mut c = Conn::open(dead.addr).await;
    c.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;
    let r = c.response(false).await;
    assert!(r.status == 502 || r.status == 503, "{r:?}");
    assert_dated(&r, "local 5xx");
}
