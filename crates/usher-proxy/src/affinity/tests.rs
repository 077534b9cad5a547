//! Reading cookies through the per-connection memo, and the nonce counter.

use super::*;
use usher_balancer::AffinityKey;

fn ring(secret: u8) -> KeyRing {
    KeyRing::new(vec![AffinityKey::from_bytes(1, [secret; 32])]).expect("ring")
}

/// Cookie-mode affinity sealing with `ring(secret)`.
fn cookie_affinity(secret: u8) -> Affinity {
    let raw = crate::FileConfig {
        backends: vec![toml::Spanned::new(
            0..0,
            crate::BackendSection {
                id: "b0".parse().expect("id"),
                addr: "127.0.0.1:9".parse().expect("addr"),
                weight: None,
            },
        )],
        ..crate::FileConfig::default()
    };
    let mut config = LbConfig::from_raw(raw, None).expect("config");
    config.affinity = AffinityMode::Cookie;
    Affinity::new(&config, ring(secret), false)
}

fn with_cookie(name: &str, token: &str) -> HeaderMap {
    let mut h = HeaderMap::new();
    let v = HeaderValue::from_str(&format!("{name}={token}")).expect("value");
    h.insert(http::header::COOKIE, v);
    h
}

/// Claims pinning to `b0` (idle expiry 2 000, absolute 3 000) and their token under `ring(7)`.
fn sealed_b0() -> (Claims, String) {
    let claims = Claims {
        backend: BackendId::new("b0").expect("id"),
        issued_at: 1_000,
        idle_expires_at: 2_000,
        expires_at: 3_000,
    };
    let token = ring(7).seal(&claims, [3; NONCE_LEN]);
    (claims, token)
}

/// The key `a` reads from `headers` at Unix time `now` through `memo`.
fn read_key(a: &Affinity, headers: &HeaderMap, now: u64, memo: &OpenedToken) -> Key {
    let ip = IpAddr::from([127, 0, 0, 1]);
    a.read(
        headers,
        &Uri::from_static("/"),
        ip,
        now,
        Instant::now(),
        memo,
    )
}

/// [`read_key`] as (outcome, pinned backend).
fn read(a: &Affinity, headers: &HeaderMap, now: u64, memo: &OpenedToken) -> (Outcome, String) {
    let key = read_key(a, headers, now, memo);
    let pinned = match key.binding {
        Binding::Pinned { id, .. } => id.as_str().to_owned(),
        _ => String::new(),
    };
    (key.outcome, pinned)
}

#[test]
fn a_remembered_token_reads_as_when_first_opened_and_still_expires() {
    let a = cookie_affinity(7);
    let (claims, token) = sealed_b0();
    let headers = with_cookie(&a.cookie.name, &token);
    let memo = OpenedToken::new();
    let first = read_key(&a, &headers, 1_500, &memo);
    assert_eq!(first.identity, Some(hash_key(token.as_bytes())));
    assert_eq!(memo.get(a.generation, &token).map(|(c, _)| c), Some(claims));
    let again = read_key(&a, &headers, 1_500, &memo);
    assert_eq!(again.identity, first.identity);
    assert_eq!(
        read(&a, &headers, 1_999, &memo),
        (Outcome::Hit, "b0".into())
    );
    // Past the idle expiry the remembered claims are expired too.
    assert_eq!(
        read(&a, &headers, 2_000, &memo),
        (Outcome::Expired, String::new())
    );
}

#[test]
fn a_token_remembered_under_other_keys_is_checked_again() {
    let old = cookie_affinity(7);
    let (_, token) = sealed_b0();
    let headers = with_cookie(&old.cookie.name, &token);
    let memo = OpenedToken::new();
    assert_eq!(
        read(&old, &headers, 1_500, &memo),
        (Outcome::Hit, "b0".into())
    );
    // A reload builds a new Affinity; with another secret the old verdict must not carry over.
    let reloaded = cookie_affinity(8);
    assert_eq!(
        read(&reloaded, &headers, 1_500, &memo),
        (Outcome::Invalid, String::new())
    );
    // A tampered token on the same connection is not served from the memo either.
    let mut bytes = token.into_bytes();
    bytes[20] = if bytes[20] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(bytes).expect("ascii");
    let h = with_cookie(&old.cookie.name, &tampered);
    assert_eq!(
        read(&old, &h, 1_500, &memo),
        (Outcome::Invalid, String::new())
    );
}

#[test]
fn nonces_count_up_from_a_random_start_and_wrap_within_96_bits() {
    let n = Nonces::new(u128::MAX);
    assert_eq!(n.next(), [0xff; NONCE_LEN]);
    assert_eq!(n.next(), [0; NONCE_LEN], "wraps at 2^96");
    let mut third = [0; NONCE_LEN];
    third[NONCE_LEN - 1] = 1;
    assert_eq!(n.next(), third);
    let m = Nonces::new(5);
    let a = m.next();
    assert_ne!(a, m.next());
}
