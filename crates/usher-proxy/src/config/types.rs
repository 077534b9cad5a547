//! Small typed values of the configuration, each parsed from one string.

use std::fmt;
use std::net::{SocketAddr, ToSocketAddrs};
use std::str::FromStr;

use http::HeaderName;
use serde::Deserialize;

/// How a request is tied to a backend.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(try_from = "String")]
pub enum AffinityMode {
    /// Every request is balanced on its own.
    #[default]
    None,
    /// The load balancer's own sealed cookie.
    Cookie,
    /// Consistent hash of the client address.
    SourceIp,
    /// Consistent hash of a request header's value.
    Header(HeaderName),
    /// Consistent hash of a query parameter's value.
    Query(String),
    /// Learn the application's own session cookie from `Set-Cookie`.
    AppCookie(String),
}

/// An affinity mode string that cannot be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid affinity {0:?}: expected none, cookie, source-ip, header:NAME, query:NAME or app-cookie:NAME"
)]
pub struct InvalidAffinity(pub String);

impl FromStr for AffinityMode {
    type Err = InvalidAffinity;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || InvalidAffinity(s.to_owned());
        let valid_name = |n: &str| {
            !n.is_empty()
                && n.bytes()
                    .all(|b| b.is_ascii_graphic() && !matches!(b, b';' | b',' | b'=' | b'"'))
        };
        Ok(match s.split_once(':') {
            None => match s {
                "none" => Self::None,
                "cookie" => Self::Cookie,
                "source-ip" => Self::SourceIp,
                _ => return Err(bad()),
            },
            Some(("header", name)) => {
                Self::Header(HeaderName::from_bytes(name.as_bytes()).map_err(|_| bad())?)
            }
            Some(("query", name)) if valid_name(name) => Self::Query(name.to_owned()),
            Some(("app-cookie", name)) if valid_name(name) => Self::AppCookie(name.to_owned()),
            Some(_) => return Err(bad()),
        })
    }
}

impl TryFrom<String> for AffinityMode {
    type Error = InvalidAffinity;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl fmt::Display for AffinityMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::None => f.write_str("none"),
            Self::Cookie => f.write_str("cookie"),
            Self::SourceIp => f.write_str("source-ip"),
            Self::Header(n) => write!(f, "header:{n}"),
            Self::Query(n) => write!(f, "query:{n}"),
            Self::AppCookie(n) => write!(f, "app-cookie:{n}"),
        }
    }
}

/// What happens when a request's pinned backend is down or gone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(try_from = "String")]
pub enum FailurePolicy {
    /// Choose another backend, re-issue the binding, count the move.
    #[default]
    Repin,
    /// Answer 503 with `Retry-After`; the client keeps its binding.
    Strict,
}

/// An `on_failure` value that is neither `repin` nor `strict`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid on-failure policy {0:?}: expected repin or strict")]
pub struct InvalidFailurePolicy(pub String);

impl FromStr for FailurePolicy {
    type Err = InvalidFailurePolicy;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "repin" => Ok(Self::Repin),
            "strict" => Ok(Self::Strict),
            _ => Err(InvalidFailurePolicy(s.to_owned())),
        }
    }
}

impl TryFrom<String> for FailurePolicy {
    type Error = InvalidFailurePolicy;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

/// The affinity cookie's `SameSite` attribute.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(try_from = "String")]
pub enum SameSite {
    /// `SameSite=Lax` (default).
    #[default]
    Lax,
    /// `SameSite=Strict`.
    Strict,
    /// `SameSite=None` (browsers require `Secure` with it; the cookie is then always `Secure`).
    None,
}

/// A `same_site` value that is not `lax`, `strict` or `none`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid same-site {0:?}: expected lax, strict or none")]
pub struct InvalidSameSite(pub String);

impl FromStr for SameSite {
    type Err = InvalidSameSite;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "lax" => Ok(Self::Lax),
            "strict" => Ok(Self::Strict),
            "none" => Ok(Self::None),
            _ => Err(InvalidSameSite(s.to_owned())),
        }
    }
}

impl TryFrom<String> for SameSite {
    type Error = InvalidSameSite;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

/// A backend address, `host:port`, resolved to a socket address when the config is loaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct BackendAddr(pub SocketAddr);

/// A backend address that does not parse or resolve.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid backend address {0:?}: expected host:port, e.g. 127.0.0.1:9001")]
pub struct InvalidBackendAddr(pub String);

impl FromStr for BackendAddr {
    type Err = InvalidBackendAddr;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Ok(addr) = s.parse() {
            return Ok(Self(addr));
        }
        // Names are resolved once, at load; the first address wins.
        s.to_socket_addrs()
            .ok()
            .and_then(|mut it| it.next())
            .map(Self)
            .ok_or_else(|| InvalidBackendAddr(s.to_owned()))
    }
}

impl TryFrom<String> for BackendAddr {
    type Error = InvalidBackendAddr;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn affinity_modes_parse_and_print() {
        for s in [
            "none",
            "cookie",
            "source-ip",
            "header:x-session-id",
            "query:sid",
            "app-cookie:JSESSIONID",
        ] {
            let mode: AffinityMode = s.parse().expect(s);
            assert_eq!(mode.to_string(), s);
        }
        for bad in [
            "",
            "cookies",
            "header:",
            "header:bad name",
            "query:",
            "app-cookie:a;b",
            "x:y",
        ] {
            assert!(bad.parse::<AffinityMode>().is_err(), "{bad}");
        }
    }

    #[test]
    fn small_enums_parse() {
        assert_eq!("strict".parse(), Ok(FailurePolicy::Strict));
        assert!("sometimes".parse::<FailurePolicy>().is_err());
        assert_eq!("Lax".parse(), Ok(SameSite::Lax));
        assert!("loose".parse::<SameSite>().is_err());
        assert_eq!(
            "127.0.0.1:9001".parse::<BackendAddr>().map(|a| a.0.port()),
            Ok(9001)
        );
        assert!("127.0.0.1".parse::<BackendAddr>().is_err());
    }
}
