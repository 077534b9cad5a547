//! Header hygiene on the way through: hop-by-hop removal (RFC 9110 §7.6.1), forwarding headers,
//! request ids, and finding the real client address behind trusted proxies.

use std::net::{IpAddr, SocketAddr};

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use ipnet::IpNet;

/// `X-Request-Id`.
pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
static PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

/// Removes hop-by-hop headers: those named in `Connection`, plus the fixed set
/// (`Connection`, `Keep-Alive`, `Proxy-Connection`, `TE`, `Trailer`, `Transfer-Encoding`, `Upgrade`).
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // Most messages carry none of them: one pass over the names, no lookups.
    let hop = |n: &HeaderName| {
        n == header::CONNECTION
            || n == KEEP_ALIVE
            || n == PROXY_CONNECTION
            || n == header::TE
            || n == header::TRAILER
            || n == header::TRANSFER_ENCODING
            || n == header::UPGRADE
    };
    if !headers.keys().any(hop) {
        return;
    }
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in [
        &header::CONNECTION,
        &KEEP_ALIVE,
        &PROXY_CONNECTION,
        &header::TE,
        &header::TRAILER,
        &header::TRANSFER_ENCODING,
        &header::UPGRADE,
    ] {
        headers.remove(name);
    }
}

/// The client's address: the peer, or — when the peer is a trusted proxy — the right-most
/// `X-Forwarded-For` entry that is not itself a trusted proxy.
pub fn client_ip(peer: IpAddr, headers: &HeaderMap, trusted: &[IpNet]) -> IpAddr {
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|net| net.contains(ip));
    if !is_trusted(&peer) {
        return peer;
    }
    let mut client = peer;
    let hops = headers
        .get_all(&X_FORWARDED_FOR)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .collect::<Vec<_>>();
    for hop in hops.iter().rev() {
        match parse_hop(hop) {
            Some(ip) => {
                client = ip;
                if !is_trusted(&ip) {
                    break;
                }
            }
            // Garbage in a header we trust to be appended to: stop at the last good hop.
            None => break,
        }
    }
    client
}

fn parse_hop(hop: &str) -> Option<IpAddr> {
    let hop = hop.trim();
    hop.parse::<IpAddr>()
        .ok()
        .or_else(|| hop.parse::<SocketAddr>().ok().map(|s| s.ip()))
}

/// A peer address as the forwarding headers write it, formatted once per connection.
#[derive(Debug, Clone)]
pub struct PeerText {
    /// The address alone (`X-Forwarded-For`).
    xff: HeaderValue,
    /// `for=1.2.3.4` or `for="[::1]"` (`Forwarded`).
    for_token: String,
}

impl PeerText {
    /// The texts for `peer`.
    pub fn new(peer: IpAddr) -> Self {
        let text = peer.to_string();
        let for_token = match peer {
            IpAddr::V4(_) => format!("for={text}"),
            IpAddr::V6(_) => format!("for=\"[{text}]\""),
        };
        Self {
            xff: HeaderValue::from_str(&text)
                .unwrap_or_else(|_| HeaderValue::from_static("unknown")),
            for_token,
        }
    }
}

/// What the forwarding headers describe.
#[derive(Debug, Clone, Copy)]
pub struct Forwarding<'a> {
    /// The direct peer.
    pub peer: IpAddr,
    /// `peer` already formatted (per connection); formatted here when `None`.
    pub peer_text: Option<&'a PeerText>,
    /// Whether the peer is a trusted proxy (its forwarding headers are kept and appended to).
    pub peer_trusted: bool,
    /// `http` or `https`: the scheme the client used on our listener.
    pub proto: &'a str,
}

/// Sets `X-Forwarded-For`, `X-Forwarded-Proto`, `X-Forwarded-Host` and `Forwarded`.
///
/// From an untrusted peer any forwarding headers it sent are replaced (they could be forged);
/// from a trusted proxy the chain is extended.
pub fn set_forwarding(headers: &mut HeaderMap, fwd: Forwarding<'_>) {
    let owned;
    let text = match fwd.peer_text {
        Some(t) => t,
        None => {
            owned = PeerText::new(fwd.peer);
            &owned
        }
    };
    let host = headers.get(header::HOST).cloned();
    // Only a trusted peer's chain is read (and extended); anyone else's is replaced unread.
    let chain = |headers: &HeaderMap, name: &HeaderName| {
        fwd.peer_trusted.then(|| joined(headers, name)).flatten()
    };

    match (fwd.peer_trusted, chain(headers, &X_FORWARDED_FOR)) {
        (true, Some(prev)) => {
            let xff = format!("{prev}, {}", text.xff.to_str().unwrap_or("unknown"));
            insert(headers, &X_FORWARDED_FOR, &xff);
        }
        _ => {
            headers.insert(X_FORWARDED_FOR.clone(), text.xff.clone());
        }
    }

    if !(fwd.peer_trusted && headers.contains_key(&X_FORWARDED_PROTO)) {
        let proto = match fwd.proto {
            "https" => HeaderValue::from_static("https"),
            "http" => HeaderValue::from_static("http"),
            other => HeaderValue::from_str(other).unwrap_or(HeaderValue::from_static("http")),
        };
        headers.insert(X_FORWARDED_PROTO.clone(), proto);
    }
    if !(fwd.peer_trusted && headers.contains_key(&X_FORWARDED_HOST)) {
        match &host {
            Some(h) => {
                headers.insert(X_FORWARDED_HOST.clone(), h.clone());
            }
            None => {
                headers.remove(&X_FORWARDED_HOST);
            }
        }
    }

    // The element is built at its exact size: `Bytes` takes a full `Vec` over as is, where a
    // spare capacity would cost a second allocation per request.
    let host_text = host.as_ref().map(HeaderValue::as_bytes).filter(|h| {
        h.iter()
            .all(|&b| b.is_ascii_graphic() && b != b'"' && b != b'\\')
    });
    let (open, host_text, close): (&[u8], &[u8], &[u8]) = match host_text {
        Some(h) => (b";host=\"", h, b"\""),
        None => (b"", b"", b""),
    };
    let parts: [&[u8]; 6] = [
        text.for_token.as_bytes(),
        open,
        host_text,
        close,
        b";proto=",
        fwd.proto.as_bytes(),
    ];
    let forwarded = match (fwd.peer_trusted, chain(headers, &header::FORWARDED)) {
        (true, Some(prev)) => [prev.as_bytes(), b", "]
            .into_iter()
            .chain(parts)
            .collect::<Vec<&[u8]>>()
            .concat(),
        _ => parts.concat(),
    };
    match HeaderValue::from_maybe_shared(bytes::Bytes::from(forwarded)) {
        Ok(v) => {
            headers.insert(header::FORWARDED, v);
        }
        Err(_) => {
            headers.remove(header::FORWARDED);
        }
    }
}

fn joined(headers: &HeaderMap, name: &HeaderName) -> Option<String> {
    let parts: Vec<&str> = headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    (!parts.is_empty()).then(|| parts.join(", "))
}

fn insert(headers: &mut HeaderMap, name: &HeaderName, value: &str) {
    match HeaderValue::from_str(value) {
        Ok(v) => {
            headers.insert(name.clone(), v);
        }
        Err(_) => {
            headers.remove(name);
        }
    }
}

/// Keeps a client's `X-Request-Id` when it is sane (1–128 visible ASCII characters), else sets
/// a fresh random one. Returns the id in use.
pub fn ensure_request_id(headers: &mut HeaderMap, random: u128) -> HeaderValue {
    if let Some(v) = headers.get(&X_REQUEST_ID) {
        let b = v.as_bytes();
        if (1..=128).contains(&b.len()) && b.iter().all(u8::is_ascii_graphic) {
            return v.clone();
        }
    }
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut text = [0u8; 32];
    for (i, b) in text.iter_mut().enumerate() {
        *b = HEX[((random >> (124 - 4 * i)) & 0xf) as usize];
    }
    // Owned by a shared allocation from the start, so the copy echoed on the response is a
    // reference count, not a second allocation.
    let id = HeaderValue::from_maybe_shared(bytes::Bytes::from_owner(text))
        .unwrap_or_else(|_| HeaderValue::from_static("0"));
    headers.insert(X_REQUEST_ID.clone(), id.clone());
    id
}

/// Finds cookie `name` in the `Cookie` header(s).
///
/// Works on the bytes (no `to_str` pass, no allocation): it runs on every request in cookie and
/// app-cookie affinity, where the text version cost about 1 000 instructions a call.
pub fn find_cookie<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers.get_all(header::COOKIE).iter().find_map(|v| {
        let value = cookie_pairs(v.as_bytes())
            .find(|(k, _)| *k == name.as_bytes())?
            .1;
        std::str::from_utf8(trim_quotes(value)).ok()
    })
}

/// Removes cookie `name` from the `Cookie` header(s), keeping every other pair verbatim.
/// Drops the header altogether when nothing else is left.
pub fn strip_cookie(headers: &mut HeaderMap, name: &str) {
    // Cheap pre-checks on a single `Cookie` field, no allocation: with one pair (the common
    // sticky request carries only this cookie) it is either ours, and the field goes, or not,
    // and nothing changes; with several, a name that appears nowhere changes nothing. The
    // one-pair test comes first because it needs no substring search (a `memmem` finder is
    // built per call and cost more than the rest of this function).
    let mut values = headers.get_all(header::COOKIE).iter();
    match (values.next(), values.next()) {
        (None, _) => return,
        (Some(v), None) if memchr::memchr(b';', v.as_bytes()).is_none() => {
            if cookie_pairs(v.as_bytes())
                .next()
                .is_some_and(|(k, _)| k == name.as_bytes())
            {
                headers.remove(header::COOKIE);
            }
            return;
        }
        (Some(v), None) if memchr::memmem::find(v.as_bytes(), name.as_bytes()).is_none() => return,
        _ => {}
    }
    if find_cookie(headers, name).is_none() {
        return;
    }
    let mut kept: Vec<u8> = Vec::new();
    for v in headers.get_all(header::COOKIE) {
        for pair in split_semicolons(v.as_bytes()) {
            let pair = pair.trim_ascii();
            let key = memchr::memchr(b'=', pair).map_or(pair, |eq| pair[..eq].trim_ascii());
            if pair.is_empty() || key == name.as_bytes() {
                continue;
            }
            if !kept.is_empty() {
                kept.extend_from_slice(b"; ");
            }
            kept.extend_from_slice(pair);
        }
    }
    headers.remove(header::COOKIE);
    if !kept.is_empty()
        && let Ok(v) = HeaderValue::from_maybe_shared(bytes::Bytes::from(kept))
    {
        headers.insert(header::COOKIE, v);
    }
}

/// The `;`-separated parts of `line` (found with `memchr`: a sealed cookie is ~90 bytes, and a
/// byte-by-byte split of it was most of the cookie handling's cost).
fn split_semicolons(line: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut rest = Some(line);
    std::iter::from_fn(move || {
        let cur = rest?;
        match memchr::memchr(b';', cur) {
            Some(i) => {
                rest = cur.get(i + 1..);
                cur.get(..i)
            }
            None => {
                rest = None;
                Some(cur)
            }
        }
    })
}

/// The `name=value` pairs of one `Cookie` field value, names and values trimmed of spaces.
fn cookie_pairs(line: &[u8]) -> impl Iterator<Item = (&[u8], &[u8])> {
    split_semicolons(line).filter_map(|pair| {
        let eq = memchr::memchr(b'=', pair)?;
        Some((pair[..eq].trim_ascii(), pair[eq + 1..].trim_ascii()))
    })
}

/// A cookie value without the double quotes around it, if any.
fn trim_quotes(v: &[u8]) -> &[u8] {
    let start = v.iter().position(|&b| b != b'"').unwrap_or(v.len());
    let end = v.iter().rposition(|&b| b != b'"').map_or(start, |e| e + 1);
    &v[start..end.max(start)]
}

/// Finds query parameter `name` in a query string (raw, not percent-decoded).
pub fn find_query<'q>(query: Option<&'q str>, name: &str) -> Option<&'q str> {
    query?.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (k == name && !v.is_empty()).then_some(v)
    })
}

#[cfg(test)]
mod tests;
