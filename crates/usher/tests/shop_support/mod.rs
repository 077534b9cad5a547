//! Shops and load balancers as real `usher` processes on free loopback ports, and a small HTTP
//! client with a cookie jar that does not care which shop answers (the `X-Served-By` of each
//! reply is kept for the test to check).
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use http::header::{CONTENT_TYPE, COOKIE, SET_COOKIE};
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt as _, Full};
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

use crate::process::Running;

/// Every request is bounded by this.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);

/// The `listen=` field of a text-format ready line.
pub fn listen_of(line: &str) -> String {
    let start = line.find("listen=").expect("listen= in the ready line") + "listen=".len();
    line[start..].split_whitespace().next().unwrap().to_owned()
}

/// A running `usher shop` process and its address.
pub struct ShopProc {
    pub id: String,
    pub addr: String,
    pub proc: Running,
}

impl ShopProc {
    /// Starts `usher shop --id id` with `args` (plus a free port and a cheap password cost) and
    /// waits (bounded) for its ready line.
    pub fn start(id: &str, args: &[&str]) -> Self {
        let mut all = vec![
            "shop",
            "--listen",
            "127.0.0.1:0",
            "--id",
            id,
            "--password-cost",
            "low",
        ];
        all.extend_from_slice(args);
        let mut proc = Running::start(&all);
        let addr = listen_of(&proc.wait_for("usher shop ready"));
        Self {
            id: id.to_owned(),
            addr,
            proc,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// `kill -9`.
    pub fn kill9(&mut self) {
        self.proc.signal("-KILL");
        let _ = self.proc.wait_exit();
    }
}

/// A running `usher lb --affinity none --policy round-robin` over `shops`.
pub struct LbProc {
    pub addr: String,
    pub proc: Running,
}

impl LbProc {
    pub fn start(shops: &[&ShopProc]) -> Self {
        Self::start_with(shops, &[])
    }

    /// With extra flags (e.g. `--config FILE`).
    pub fn start_with(shops: &[&ShopProc], extra: &[&str]) -> Self {
        let backends: Vec<String> = shops
            .iter()
            .map(|s| format!("{}={}", s.id, s.addr))
            .collect();
        let mut args = vec![
            "lb",
            "--listen",
            "127.0.0.1:0",
            "--affinity",
            "none",
            "--policy",
            "round-robin",
        ];
        for b in &backends {
            args.extend(["--backend", b.as_str()]);
        }
        args.extend_from_slice(extra);
        let mut proc = Running::start(&args);
        let addr = proc.listen_addr();
        Self { addr, proc }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

/// One response.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {} {:?}", self.status, self.text()))
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// `X-Served-By`, or "" if missing (the balancer's own answers have none).
    pub fn served_by(&self) -> String {
        self.headers
            .get("x-served-by")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned()
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// A "browser": an HTTP client with a cookie jar (no path scoping: every cookie is sent).
#[derive(Clone)]
pub struct Browser {
    inner: HyperClient<HttpConnector, Full<Bytes>>,
    pub jar: BTreeMap<String, String>,
}

impl Default for Browser {
    fn default() -> Self {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(Duration::from_secs(5)));
        Self {
            inner: HyperClient::builder(TokioExecutor::new()).build(connector),
            jar: BTreeMap::new(),
        }
    }
}

impl Browser {
    /// Sends a request; `Err` for transport failures and timeouts.
    pub async fn try_send(
        &mut self,
        method: Method,
        url: &str,
        headers: &[(&str, &str)],
        body: Option<&Value>,
    ) -> Result<Reply, String> {
        let mut req = Request::builder().method(method).uri(url);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        if !self.jar.is_empty() {
            let c: Vec<String> = self.jar.iter().map(|(k, v)| format!("{k}={v}")).collect();
            req = req.header(COOKIE, c.join("; "));
        }
        let bytes = match body {
            Some(v) => {
                req = req.header(CONTENT_TYPE, "application/json");
                Bytes::from(v.to_string())
            }
            None => Bytes::new(),
        };
        let req = req.body(Full::new(bytes)).map_err(|e| e.to_string())?;
        let res = tokio::time::timeout(REQUEST_TIMEOUT, self.inner.request(req))
            .await
            .map_err(|_| "request timed out".to_owned())?
            .map_err(|e| format!("request failed: {e}"))?;
        let (parts, body) = res.into_parts();
        let body = tokio::time::timeout(REQUEST_TIMEOUT, body.collect())
            .await
            .map_err(|_| "body timed out".to_owned())?
            .map_err(|e| format!("body failed: {e}"))?
            .to_bytes();
        for v in parts.headers.get_all(SET_COOKIE) {
            let Ok(v) = v.to_str() else { continue };
            let (pair, attrs) = v.split_once(';').unwrap_or((v, ""));
            let Some((name, value)) = pair.split_once('=') else {
                continue;
            };
            if value.is_empty() || attrs.to_ascii_lowercase().contains("max-age=0") {
                self.jar.remove(name.trim());
            } else {
                self.jar.insert(name.trim().to_owned(), value.to_owned());
            }
        }
        Ok(Reply {
            status: parts.status,
            headers: parts.headers,
            body,
        })
    }

    /// Sends a request; panics on transport failures.
    pub async fn send(
        &mut self,
        method: Method,
        url: &str,
        headers: &[(&str, &str)],
        body: Option<&Value>,
    ) -> Reply {
        self.try_send(method, url, headers, body)
            .await
            .unwrap_or_else(|e| panic!("{url}: {e}"))
    }

    pub async fn get(&mut self, url: &str) -> Reply {
        self.send(Method::GET, url, &[], None).await
    }

    pub async fn post(&mut self, url: &str, body: &Value) -> Reply {
        self.send(Method::POST, url, &[], Some(body)).await
    }

    /// Signs up (`base` is a shop or the balancer) and signs in; asserts success.
    pub async fn sign_in(&mut self, base: &str, user: &str, signup: bool) -> Reply {
        let creds = serde_json::json!({"user": user, "password": "pw"});
        if signup {
            let r = self.post(&format!("{base}/api/signup"), &creds).await;
            assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
        }
        let r = self.post(&format!("{base}/api/login"), &creds).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text());
        r
    }

    /// `POST base/api/checkout` with `Idempotency-Key: key` and no body.
    pub async fn checkout(&mut self, base: &str, key: &str) -> Result<Reply, String> {
        self.try_send(
            Method::POST,
            &format!("{base}/api/checkout"),
            &[("idempotency-key", key)],
            None,
        )
        .await
    }
}
