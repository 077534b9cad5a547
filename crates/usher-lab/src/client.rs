//! The virtual users' HTTP client: one pooled hyper client for everyone, a cookie jar per user.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{CONTENT_TYPE, COOKIE, HeaderName, SET_COOKIE};
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt as _, Full};
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

/// The header every shop response carries.
pub const SERVED_BY: &str = "x-served-by";

/// A pooled HTTP/1.1 client to one address (the load balancer, or a shop for seeding).
#[derive(Debug, Clone)]
pub struct Client {
    inner: HyperClient<HttpConnector, Full<Bytes>>,
    base: String,
    timeout: Duration,
}

/// A user's cookies, kept like a browser keeps them (name → value; Max-Age=0 deletes).
#[derive(Debug, Clone, Default)]
pub struct Jar(BTreeMap<String, String>);

impl Jar {
    fn header(&self) -> Option<String> {
        (!self.0.is_empty()).then(|| {
            self.0
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join("; ")
        })
    }

    fn absorb(&mut self, set_cookie: &str) {
        let mut parts = set_cookie.split(';');
        let Some((name, value)) = parts.next().and_then(|p| p.trim().split_once('=')) else {
            return;
        };
        let expired = parts.any(|a| a.trim().eq_ignore_ascii_case("max-age=0"));
        if expired || value.is_empty() {
            self.0.remove(name);
        } else {
            self.0.insert(name.to_owned(), value.to_owned());
        }
    }
}

/// What one request got back.
#[derive(Debug)]
pub struct Reply {
    /// The status, or `None` for a transport failure (refused, reset, timed out).
    pub status: Option<StatusCode>,
    /// The shop that served it (`X-Served-By`).
    pub served_by: Option<String>,
    /// The response body (empty on failure).
    pub body: Bytes,
    /// Time from sending to the end of the body.
    pub latency: Duration,
}

impl Reply {
    /// The body as JSON, if it is.
    pub fn json(&self) -> Option<serde_json::Value> {
        serde_json::from_slice(&self.body).ok()
    }

    /// Whether the status is 2xx.
    pub fn ok(&self) -> bool {
        self.status.is_some_and(|s| s.is_success())
    }
}

impl Client {
    /// A client for `http://addr`, every request bounded by `timeout`.
    pub fn new(addr: SocketAddr, timeout: Duration) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(Duration::from_secs(2)));
        let inner = HyperClient::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .pool_max_idle_per_host(4096)
            .build(connector);
        Self {
            inner,
            base: format!("http://{addr}"),
            timeout,
        }
    }

    /// Sends one request with the jar's cookies and `headers`, absorbing `Set-Cookie` into it.
    pub async fn send(
        &self,
        jar: &mut Jar,
        method: Method,
        path: &str,
        headers: &[(HeaderName, String)],
        body: Option<&serde_json::Value>,
    ) -> Reply {
        let start = Instant::now();
        let failed = |start: Instant| Reply {
            status: None,
            served_by: None,
            body: Bytes::new(),
            latency: start.elapsed(),
        };
        let mut req = Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base));
        if let Some(c) = jar.header() {
            req = req.header(COOKIE, c);
        }
        for (name, value) in headers {
            req = req.header(name, value);
        }
        let payload = match body {
            Some(v) => {
                req = req.header(CONTENT_TYPE, "application/json");
                Bytes::from(v.to_string())
            }
            None => Bytes::new(),
        };
        let Ok(req) = req.body(Full::new(payload)) else {
            return failed(start);
        };
        let exchange = async {
            let res = self.inner.request(req).await.ok()?;
            let (parts, body) = res.into_parts();
            let body = body.collect().await.ok()?.to_bytes();
            Some((parts, body))
        };
        let Ok(Some((parts, body))) = tokio::time::timeout(self.timeout, exchange).await else {
            return failed(start);
        };
        for v in parts.headers.get_all(SET_COOKIE) {
            if let Ok(v) = v.to_str() {
                jar.absorb(v);
            }
        }
        Reply {
            status: Some(parts.status),
            served_by: parts
                .headers
                .get(SERVED_BY)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned),
            body,
            latency: start.elapsed(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jar_keeps_and_deletes_like_a_browser() {
        let mut jar = Jar::default();
        jar.absorb("usher_sid=abc; HttpOnly; Path=/; Max-Age=3600");
        jar.absorb("usher=tok; Path=/");
        assert_eq!(jar.header().unwrap(), "usher=tok; usher_sid=abc");
        jar.absorb("usher_sid=; Max-Age=0; Path=/");
        assert_eq!(jar.header().unwrap(), "usher=tok");
        jar.absorb("garbage");
        jar.absorb("usher=; Max-Age=0");
        assert!(jar.header().is_none());
    }
}
