use super::*;

fn map(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in pairs {
        h.append(
            HeaderName::from_bytes(k.as_bytes()).expect("name"),
            HeaderValue::from_str(v).expect("value"),
        );
    }
    h
}

#[test]
fn hop_by_hop_headers_are_removed() {
    let mut h = map(&[
        ("connection", "keep-alive, x-private"),
        ("keep-alive", "timeout=5"),
        ("x-private", "secret"),
        ("te", "trailers"),
        ("transfer-encoding", "chunked"),
        ("upgrade", "h2c"),
        ("proxy-connection", "close"),
        ("trailer", "x"),
        ("x-kept", "1"),
    ]);
    strip_hop_by_hop(&mut h);
    assert_eq!(h.len(), 1);
    assert_eq!(h["x-kept"], "1");
}

#[test]
fn client_ip_believes_only_trusted_proxies() {
    let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().expect("net")];
    let h = map(&[("x-forwarded-for", "203.0.113.9, 10.1.1.1")]);
    let untrusted_peer: IpAddr = "198.51.100.7".parse().expect("ip");
    assert_eq!(client_ip(untrusted_peer, &h, &trusted), untrusted_peer);
    let proxy: IpAddr = "10.0.0.2".parse().expect("ip");
    assert_eq!(
        client_ip(proxy, &h, &trusted),
        "203.0.113.9".parse::<IpAddr>().expect("ip")
    );
    // Spoofed left-most entries are never reached: the right-most untrusted hop wins.
    let h = map(&[
        ("x-forwarded-for", "1.2.3.4"),
        ("x-forwarded-for", "203.0.113.9"),
    ]);
    assert_eq!(
        client_ip(proxy, &h, &trusted),
        "203.0.113.9".parse::<IpAddr>().expect("ip")
    );
    // Garbage stops the walk at the last good hop.
    let h = map(&[("x-forwarded-for", "203.0.113.9, nonsense, 10.2.2.2")]);
    assert_eq!(
        client_ip(proxy, &h, &trusted),
        "10.2.2.2".parse::<IpAddr>().expect("ip")
    );
    // No header: the proxy itself.
    assert_eq!(client_ip(proxy, &HeaderMap::new(), &trusted), proxy);
}

#[test]
fn forwarding_headers_replace_untrusted_and_extend_trusted() {
    let mut h = map(&[
        ("host", "shop.example"),
        ("x-forwarded-for", "6.6.6.6"),
        ("x-forwarded-proto", "https"),
        ("forwarded", "for=6.6.6.6"),
    ]);
    let peer: IpAddr = "198.51.100.7".parse().expect("ip");
    set_forwarding(
        &mut h,
        Forwarding {
            peer,
            peer_text: None,
            peer_trusted: false,
            proto: "http",
        },
    );
    assert_eq!(h["x-forwarded-for"], "198.51.100.7");
    assert_eq!(h["x-forwarded-proto"], "http");
    assert_eq!(h["x-forwarded-host"], "shop.example");
    assert_eq!(
        h["forwarded"],
        "for=198.51.100.7;host=\"shop.example\";proto=http"
    );

    let mut h = map(&[
        ("x-forwarded-for", "203.0.113.9"),
        ("x-forwarded-proto", "https"),
    ]);
    let v6: IpAddr = "::1".parse().expect("ip");
    set_forwarding(
        &mut h,
        Forwarding {
            peer: v6,
            peer_text: None,
            peer_trusted: true,
            proto: "http",
        },
    );
    assert_eq!(h["x-forwarded-for"], "203.0.113.9, ::1");
    assert_eq!(h["x-forwarded-proto"], "https");
    assert_eq!(h["forwarded"], "for=\"[::1]\";proto=http");
}

#[test]
fn request_ids_are_kept_or_made() {
    let mut h = map(&[("x-request-id", "abc-123")]);
    assert_eq!(ensure_request_id(&mut h, 7), "abc-123");
    let mut h = map(&[("x-request-id", "")]);
    let id = ensure_request_id(&mut h, 0xff);
    assert_eq!(id, "000000000000000000000000000000ff");
    assert_eq!(h["x-request-id"], id);
    let mut h = HeaderMap::new();
    assert_eq!(ensure_request_id(&mut h, 1).len(), 32);
}

#[test]
fn cookies_are_found_and_stripped_verbatim() {
    let mut h = map(&[
        ("cookie", "a=1; usher=TOKEN; b=\"2\""),
        ("cookie", "usher2=x"),
    ]);
    assert_eq!(find_cookie(&h, "usher"), Some("TOKEN"));
    assert_eq!(find_cookie(&h, "usher2"), Some("x"));
    assert_eq!(find_cookie(&h, "b"), Some("2"));
    assert_eq!(find_cookie(&h, "c"), None);
    strip_cookie(&mut h, "usher");
    assert_eq!(h.get_all("cookie").iter().count(), 1);
    assert_eq!(h["cookie"], "a=1; b=\"2\"; usher2=x");
    let mut h = map(&[("cookie", "usher=only")]);
    strip_cookie(&mut h, "usher");
    assert!(h.get("cookie").is_none());
    let mut h = map(&[("cookie", " usher = v ")]);
    strip_cookie(&mut h, "usher");
    assert!(
        h.get("cookie").is_none(),
        "a lone pair with spaces is still ours"
    );
    // One pair that is not ours (another name, a longer name, our name as a value, no `=`):
    // the field stays byte for byte.
    for other in ["other=1", "usherx=1", "a=usher", "usher", ""] {
        let mut h = map(&[("cookie", other)]);
        strip_cookie(&mut h, "usher");
        assert_eq!(h["cookie"], other, "{other:?}");
    }
}

#[test]
fn query_values_are_found() {
    assert_eq!(find_query(Some("a=1&sid=xyz&b"), "sid"), Some("xyz"));
    assert_eq!(find_query(Some("sid="), "sid"), None);
    assert_eq!(find_query(Some("b"), "sid"), None);
    assert_eq!(find_query(None, "sid"), None);
}

#[test]
fn cookie_edges_spaces_quotes_and_junk() {
    let h = map(&[("cookie", " a = 1 ;;usher=\"\"T\"\" ; =x; noeq")]);
    assert_eq!(find_cookie(&h, "a"), Some("1"));
    assert_eq!(find_cookie(&h, "usher"), Some("T"));
    assert_eq!(find_cookie(&h, "noeq"), None);
    assert_eq!(find_cookie(&h, ""), Some("x"));
    let mut stripped = h.clone();
    strip_cookie(&mut stripped, "usher");
    assert_eq!(stripped["cookie"], "a = 1; =x; noeq");
    // A value that is not UTF-8 is never returned as a match.
    let mut odd = HeaderMap::new();
    odd.insert(
        "cookie",
        HeaderValue::from_bytes(b"usher=\xff\xfe").expect("obs-text is a valid value"),
    );
    assert_eq!(find_cookie(&odd, "usher"), None);
}
