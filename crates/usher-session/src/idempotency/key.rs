//! The `Idempotency-Key` header value and the request fingerprint.

use http::HeaderValue;
use sha2::{Digest as _, Sha256};

/// Longest key accepted (the draft sets no limit; UUIDs are 36 characters).
pub const MAX_KEY_LEN: usize = 255;

/// Parses an `Idempotency-Key` value. The draft defines it as a Structured Field string
/// (`"8e03978e-40d5-43e8-bc93-6894a57f9324"`, RFC 8941 §3.3.3), which is accepted with its escapes;
/// a bare token of visible ASCII without quotes, backslashes or commas is accepted too because
/// most clients send UUIDs unquoted. Empty, longer than [`MAX_KEY_LEN`], control characters or
/// broken quoting → `None` (400).
pub(crate) fn parse(value: &HeaderValue) -> Option<String> {
    let raw = value.to_str().ok()?.trim_matches(' ');
    let key = if let Some(inner) = raw.strip_prefix('"') {
        let inner = inner.strip_suffix('"')?;
        let mut out = String::with_capacity(inner.len());
        let mut chars = inner.chars();
        while let Some(c) = chars.next() {
            match c {
                '\\' => match chars.next()? {
                    e @ ('"' | '\\') => out.push(e),
                    _ => return None,
                },
                '"' => return None,
                ' '..='~' => out.push(c),
                _ => return None,
            }
        }
        out
    } else {
        if !raw
            .bytes()
            .all(|b| b.is_ascii_graphic() && !matches!(b, b'"' | b'\\' | b','))
        {
            return None;
        }
        raw.to_owned()
    };
    (!key.is_empty() && key.len() <= MAX_KEY_LEN).then_some(key)
}

/// SHA-256 over the method, the request target (path and query) and the body, each
/// length-prefixed so no two different requests share an encoding.
pub(crate) fn fingerprint(method: &str, target: &str, body: &[u8]) -> String {
    let mut h = Sha256::new();
    for part in [method.as_bytes(), target.as_bytes(), body] {
        h.update((part.len() as u64).to_be_bytes());
        h.update(part);
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Option<String> {
        parse(&HeaderValue::from_str(s).unwrap())
    }

    #[test]
    fn keys() {
        assert_eq!(p("\"abc-123\"").as_deref(), Some("abc-123"));
        assert_eq!(p("abc-123").as_deref(), Some("abc-123"));
        assert_eq!(p(" \"a b\" ").as_deref(), Some("a b"));
        assert_eq!(p(r#""a\"b\\c""#).as_deref(), Some(r#"a"b\c"#));
        for bad in [
            "",
            "\"\"",
            "\"abc",
            "abc\"",
            "a b",
            "a,b",
            r#""a\x""#,
            r#""a"b""#,
            "\"a\"\"b\"",
        ] {
            assert_eq!(p(bad), None, "{bad:?}");
        }
        assert!(p(&"k".repeat(MAX_KEY_LEN)).is_some());
        assert_eq!(p(&"k".repeat(MAX_KEY_LEN + 1)), None);
        assert_eq!(parse(&HeaderValue::from_bytes(b"\xffabc").unwrap()), None);
    }

    #[test]
    fn fingerprints_separate_fields() {
        let a = fingerprint("POST", "/a", b"xy");
        assert_eq!(a, fingerprint("POST", "/a", b"xy"));
        assert_ne!(a, fingerprint("POST", "/ax", b"y"));
        assert_ne!(a, fingerprint("PUT", "/a", b"xy"));
        assert_ne!(a, fingerprint("POST", "/a?q=1", b"xy"));
        assert_eq!(a.len(), 64);
    }
}
