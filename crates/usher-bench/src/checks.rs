//! Checks before measuring: round-robin reaches every backend, and in sticky mode each cookie
//! pins one backend and the cookies together cover every backend. Also how the cookies are
//! obtained: learned from the proxy's `Set-Cookie` (usher, HAProxy) or made up (NGINX's
//! `hash $cookie_sid`).

use std::collections::BTreeSet;
use std::net::SocketAddr;

use anyhow::{Context as _, bail, ensure};

use crate::client::Conn;

/// Requests sent with one cookie in the stickiness check.
const STICKY_REQUESTS: usize = 20;
/// Cookies checked with `STICKY_REQUESTS` each.
const STICKY_COOKIES: usize = 5;

/// Sends `k` requests without a cookie and keeps each response's `name=…` cookie.
pub async fn learn_cookies(addr: SocketAddr, name: &str, k: usize) -> anyhow::Result<Vec<String>> {
    let mut conn = Conn::connect(addr).await?;
    let mut out = Vec::with_capacity(k);
    let prefix = format!("{name}=");
    for _ in 0..k {
        let r = conn.get(None).await?;
        ensure!(r.status == 200, "status {} from {addr}", r.status);
        let c = r
            .set_cookies()
            .into_iter()
            .find(|c| c.starts_with(&prefix))
            .with_context(|| format!("{addr} set no {name} cookie"))?;
        out.push(c);
    }
    Ok(out)
}

/// `k` cookies `sid=<random hex>`, from a seed (splitmix64).
pub fn random_sids(k: usize, seed: u64) -> Vec<String> {
    let mut x = seed;
    (0..k)
        .map(|_| {
            x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = x;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            format!("sid={:016x}", z ^ (z >> 31))
        })
        .collect()
}

/// The backend each cookie lands on (one request each).
pub async fn backends_of(addr: SocketAddr, cookies: &[String]) -> anyhow::Result<BTreeSet<String>> {
    let mut conn = Conn::connect(addr).await?;
    let mut seen = BTreeSet::new();
    for c in cookies {
        let r = conn.get(Some(c)).await?;
        seen.insert(r.backend().context("no X-Backend")?.to_owned());
    }
    Ok(seen)
}

/// Stickiness: 20 requests with each of the first cookies reach one backend, and all cookies
/// together reach `want` backends. Returns a one-line description.
pub async fn check_sticky(
    addr: SocketAddr,
    cookies: &[String],
    want: usize,
) -> anyhow::Result<String> {
    for c in cookies.iter().take(STICKY_COOKIES) {
        let mut conn = Conn::connect(addr).await?;
        let mut seen = BTreeSet::new();
        for _ in 0..STICKY_REQUESTS {
            let r = conn.get(Some(c)).await?;
            ensure!(r.status == 200, "status {} with cookie {c}", r.status);
            seen.insert(r.backend().context("no X-Backend")?.to_owned());
        }
        if seen.len() != 1 {
            bail!("cookie {c} is not sticky: {STICKY_REQUESTS} requests reached {seen:?}");
        }
    }
    let all = backends_of(addr, cookies).await?;
    ensure!(
        all.len() == want,
        "the {} cookies reach {all:?}, not all {want} backends",
        cookies.len()
    );
    Ok(format!(
        "{} cookies × {STICKY_REQUESTS} requests each stayed on one backend; {} cookies cover {all:?}",
        STICKY_COOKIES.min(cookies.len()),
        cookies.len()
    ))
}

/// Round-robin: 30 requests without a cookie reach `want` backends.
pub async fn check_rr(addr: SocketAddr, want: usize) -> anyhow::Result<String> {
    let mut conn = Conn::connect(addr).await?;
    let mut seen = BTreeSet::new();
    for _ in 0..30 {
        let r = conn.get(None).await?;
        ensure!(r.status == 200, "status {} from {addr}", r.status);
        seen.insert(r.backend().context("no X-Backend")?.to_owned());
    }
    ensure!(
        seen.len() == want,
        "30 requests reached {seen:?}, not {want} backends"
    );
    Ok(format!("30 requests reached {seen:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sids_are_distinct_hex() {
        let s = random_sids(30, 7);
        assert_eq!(s.iter().collect::<BTreeSet<_>>().len(), 30);
        assert!(s.iter().all(|c| c.starts_with("sid=") && c.len() == 20));
        assert_eq!(random_sids(3, 7), random_sids(3, 7));
        assert_ne!(random_sids(3, 7), random_sids(3, 8));
    }
}
