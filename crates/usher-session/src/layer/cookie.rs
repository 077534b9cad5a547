//! Reading the session id from `Cookie` headers and writing `Set-Cookie`.

use cookie::{Cookie, SameSite};
use http::HeaderValue;
use http::header::{COOKIE, HeaderMap};

use super::Config;
use crate::id::SessionId;

/// What the request's cookies say about the session.
#[derive(Debug)]
pub(crate) enum Presented {
    /// No cookie by our name.
    None,
    /// A cookie by our name that is not a well-formed id (tampered, truncated, an old format):
    /// ignored, never trusted, and cleared in the response.
    Malformed,
    /// A well-formed id (which may still name no live session).
    Id(SessionId),
}

/// Finds the session cookie. Several `Cookie` headers and several cookies by our name (e.g. set
/// for different paths) are allowed; the first well-formed id wins.
pub(crate) fn presented(headers: &HeaderMap, name: &str) -> Presented {
    let mut seen = false;
    for header in headers.get_all(COOKIE) {
        let Ok(text) = header.to_str() else { continue };
        for c in Cookie::split_parse(text).flatten() {
            if c.name() != name {
                continue;
            }
            seen = true;
            if let Ok(id) = SessionId::parse(c.value()) {
                return Presented::Id(id);
            }
        }
    }
    if seen {
        Presented::Malformed
    } else {
        Presented::None
    }
}

/// `Set-Cookie` carrying `id`.
pub(crate) fn issue(config: &Config, id: &SessionId) -> Option<HeaderValue> {
    let max_age = i64::try_from(config.absolute_secs).unwrap_or(i64::MAX);
    render(
        config,
        id.encode(),
        cookie::time::Duration::seconds(max_age),
    )
}

/// `Set-Cookie` that removes the client's cookie.
pub(crate) fn clear(config: &Config) -> Option<HeaderValue> {
    render(config, String::new(), cookie::time::Duration::ZERO)
}

fn render(config: &Config, value: String, max_age: cookie::time::Duration) -> Option<HeaderValue> {
    let mut c = Cookie::build((config.cookie_name.clone(), value))
        .http_only(config.http_only)
        .secure(config.secure || config.same_site == SameSite::None)
        .same_site(config.same_site)
        .path(config.path.clone())
        .max_age(max_age)
        .build();
    if let Some(domain) = &config.domain {
        c.set_domain(domain.clone());
    }
    // Names and attributes are validated when the layer is built, and ids are base64url, so this
    // only fails on a bug; the caller then sends no cookie rather than a malformed header.
    HeaderValue::from_str(&c.to_string()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(COOKIE, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn finds_the_id_among_other_cookies_and_headers() {
        let id = SessionId::random();
        let h = headers(&["a=1; usher=xyz", &format!("b=2; usher_sid={}", id.encode())]);
        assert!(matches!(presented(&h, "usher_sid"), Presented::Id(got) if got == id));
        assert!(matches!(presented(&h, "other"), Presented::None));
    }

    #[test]
    fn malformed_ids_are_flagged_not_trusted() {
        let h = headers(&["usher_sid=not-an-id"]);
        assert!(matches!(presented(&h, "usher_sid"), Presented::Malformed));
        let id = SessionId::random();
        let h = headers(&[&format!("usher_sid=junk; usher_sid={}", id.encode())]);
        assert!(matches!(presented(&h, "usher_sid"), Presented::Id(_)));
        let mut h = HeaderMap::new();
        h.append(COOKIE, HeaderValue::from_bytes(b"usher_sid=\xff").unwrap());
        assert!(matches!(presented(&h, "usher_sid"), Presented::None));
    }
}
