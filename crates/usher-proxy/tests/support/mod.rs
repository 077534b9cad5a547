//! Shared harness for the load balancer's integration tests: real backends and a real load
//! balancer on ephemeral loopback ports, a small HTTP client, and raw-socket helpers.
#![allow(dead_code, clippy::unwrap_used)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};
use usher_balancer::{AffinityKey, KeyRing};
use usher_proxy::{BackendAddr, BackendSection, FileConfig, Lb, LbConfig};

/// What a backend saw of one request.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: http::Method,
    pub uri: http::Uri,
    pub headers: HeaderMap,
}

/// A real HTTP backend on an ephemeral port.
///
/// Routes: `/slow?ms=N` answers after N ms; `/echo` streams the request body back; `/fail` answers
/// 500; `/ws` with a WebSocket handshake answers 101 and echoes every text and binary message;
/// every other path answers 200 with the backend id as body. A request without a `JSESSIONID` cookie gets one
/// (`Set-Cookie: JSESSIONID=<id>-<n>`), like a Java app server would.
pub struct Backend {
    pub id: String,
    pub addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    task: JoinHandle<()>,
}

impl Backend {
    pub async fn start(id: &str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        Self::serve_on(id, listener)
    }

    /// Starts again on the same address after [`Backend::kill`].
    pub async fn restart(&mut self) {
        let listener = TcpListener::bind(self.addr).await.unwrap();
        let fresh = Self::serve_on(&self.id, listener);
        self.task.abort();
        *self = fresh;
    }

    fn serve_on(id: &str, listener: TcpListener) -> Self {
        let addr = listener.local_addr().unwrap();
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let sessions = Arc::new(AtomicU64::new(0));
        let (id_owned, seen2) = (id.to_owned(), Arc::clone(&seen));
        let task = tokio::spawn(async move {
            // Dropping this set (when the task is aborted) aborts every connection: a dead process.
            let mut conns = JoinSet::new();
            // Likewise for WebSocket sessions (held here and by live connections only).
            let websockets: WebSockets = Arc::default();
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let (id, seen, sessions) =
                    (id_owned.clone(), Arc::clone(&seen2), Arc::clone(&sessions));
                let websockets = Arc::clone(&websockets);
                conns.spawn(async move {
                    let svc = service_fn(move |req| {
                        let ws = Arc::clone(&websockets);
                        backend_route(
                            id.clone(),
                            Arc::clone(&seen),
                            Arc::clone(&sessions),
                            ws,
                            req,
                        )
                    });
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .with_upgrades()
                        .await;
                });
                while conns.try_join_next().is_some() {}
            }
        });
        Self {
            id: id.to_owned(),
            addr,
            seen,
            task,
        }
    }

    /// Requests this backend has seen.
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    pub fn count(&self) -> usize {
        self.seen.lock().unwrap().len()
    }

    /// Stops listening and drops every open connection, like a killed process.
    pub fn kill(&self) {
        self.task.abort();
    }

    pub fn section(&self) -> BackendSection {
        BackendSection {
            id: self.id.parse().unwrap(),
            addr: BackendAddr(self.addr),
            weight: None,
        }
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

type BoxBody = http_body_util::combinators::BoxBody<Bytes, hyper::Error>;

/// A backend's running WebSocket echo sessions.
type WebSockets = Arc<Mutex<JoinSet<()>>>;

async fn backend_route(
    id: String,
    seen: Arc<Mutex<Vec<Seen>>>,
    sessions: Arc<AtomicU64>,
    websockets: WebSockets,
    req: Request<Incoming>,
) -> Result<Response<BoxBody>, Infallible> {
    seen.lock().unwrap().push(Seen {
        method: req.method().clone(),
        uri: req.uri().clone(),
        headers: req.headers().clone(),
    });
    let has_session = req
        .headers()
        .get_all(http::header::COOKIE)
        .iter()
        .any(|v| v.to_str().unwrap_or("").contains("JSESSIONID="));
    let path = req.uri().path().to_owned();
    let mut res = if path == "/ws" && req.headers().contains_key("sec-websocket-key") {
        websocket_echo(req, &websockets)
    } else if path == "/echo" {
        Response::new(req.into_body().boxed())
    } else {
        if path == "/slow" {
            let ms: u64 = req
                .uri()
                .query()
                .and_then(|q| q.strip_prefix("ms="))
                .and_then(|v| v.parse().ok())
                .unwrap_or(100);
            tokio::time::sleep(Duration::from_millis(ms)).await;
        }
        Response::new(
            Full::new(Bytes::from(id.clone()))
                .map_err(|n| match n {})
                .boxed(),
        )
    };
    if path == "/fail" {
        *res.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
    }
    res.headers_mut()
        .insert("x-backend", HeaderValue::from_str(&id).unwrap());
    if !has_session {
        let n = sessions.fetch_add(1, Ordering::Relaxed);
        let v = format!("JSESSIONID={id}-{n}; Path=/; HttpOnly");
        res.headers_mut()
            .insert(http::header::SET_COOKIE, HeaderValue::from_str(&v).unwrap());
    }
    Ok(res)
}

/// Answers a WebSocket handshake with 101 and, once upgraded, echoes every text and binary
/// message until the peer closes.
fn websocket_echo(mut req: Request<Incoming>, websockets: &WebSockets) -> Response<BoxBody> {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::WebSocketStream;
    use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
    use tokio_tungstenite::tungstenite::protocol::Role;

    let key = req.headers().get("sec-websocket-key").unwrap().as_bytes();
    let accept = derive_accept_key(key);
    let on_upgrade = hyper::upgrade::on(&mut req);
    let mut set = websockets.lock().unwrap();
    while set.try_join_next().is_some() {}
    set.spawn(async move {
        let Ok(upgraded) = on_upgrade.await else {
            return;
        };
        let mut ws =
            WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None).await;
        while let Some(Ok(msg)) = ws.next().await {
            if (msg.is_text() || msg.is_binary()) && ws.send(msg).await.is_err() {
                break;
            }
        }
    });
    let mut res = Response::new(Full::default().map_err(|n| match n {}).boxed());
    *res.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = res.headers_mut();
    h.insert(
        http::header::CONNECTION,
        HeaderValue::from_static("upgrade"),
    );
    h.insert(http::header::UPGRADE, HeaderValue::from_static("websocket"));
    h.insert(
        "sec-websocket-accept",
        HeaderValue::from_str(&accept).unwrap(),
    );
    res
}

/// A fixed key ring, so tests can seal and open cookies the load balancer accepts.
pub fn test_keys() -> KeyRing {
    KeyRing::new(vec![AffinityKey::from_bytes(7, [42u8; 32])]).unwrap()
}

/// A default configuration over `backends` (listen address unused: tests bind port 0).
pub fn config(backends: &[&Backend]) -> LbConfig {
    let raw = FileConfig {
        backends: backends
            .iter()
            .map(|b| toml::Spanned::new(0..0, b.section()))
            .collect(),
        ..FileConfig::default()
    };
    LbConfig::from_raw(raw, None).unwrap()
}

/// A load balancer running in this process on an ephemeral port.
pub struct TestLb {
    pub addr: SocketAddr,
    pub lb: Arc<Lb>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl TestLb {
    pub async fn start(config: LbConfig) -> Self {
        Self::start_with_keys(config, test_keys()).await
    }

    pub async fn start_with_keys(config: LbConfig, keys: KeyRing) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let lb = Lb::new(config, keys).unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(usher_proxy::serve(listener, Arc::clone(&lb), async move {
            let _ = rx.await;
        }));
        Self {
            addr,
            lb,
            stop: Some(tx),
            task: Some(task),
        }
    }

    /// Starts the admin API for this load balancer on an ephemeral port.
    pub async fn start_admin(&self, token: Option<&str>) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let lb = Arc::clone(&self.lb);
        let token = token.map(str::to_owned);
        tokio::spawn(async move {
            let _ = usher_proxy::serve_admin(listener, lb, token, std::future::pending()).await;
        });
        addr
    }

    /// Triggers graceful shutdown; the returned handle completes when the server has stopped.
    pub fn shutdown(&mut self) -> JoinHandle<()> {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        self.task.take().unwrap()
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }
}

/// One HTTP response, fully read.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: String,
}

impl Reply {
    pub fn backend(&self) -> &str {
        self.headers
            .get("x-backend")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    /// `name=value` of the first `Set-Cookie` for `name`.
    pub fn set_cookie(&self, name: &str) -> Option<String> {
        self.headers
            .get_all(http::header::SET_COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find(|v| v.starts_with(&format!("{name}=")))
            .map(str::to_owned)
    }
}

/// A keep-alive HTTP client with a one-cookie-per-name jar.
pub struct Client {
    inner: HyperClient<HttpConnector, Full<Bytes>>,
    pub cookies: Vec<(String, String)>,
}

impl Default for Client {
    fn default() -> Self {
        Self {
            inner: HyperClient::builder(TokioExecutor::new()).build_http(),
            cookies: Vec::new(),
        }
    }
}

impl Client {
    pub async fn get(&mut self, url: &str) -> Reply {
        self.send(Request::get(url).body(Full::default()).unwrap())
            .await
    }

    pub async fn send(&mut self, req: Request<Full<Bytes>>) -> Reply {
        self.try_send(req).await.expect("request failed")
    }

    /// Like `get` but returns a transport error instead of panicking.
    pub async fn try_get(&mut self, url: &str) -> Result<Reply, String> {
        self.try_send(Request::get(url).body(Full::default()).unwrap())
            .await
    }

    pub async fn try_send(&mut self, mut req: Request<Full<Bytes>>) -> Result<Reply, String> {
        if !self.cookies.is_empty() && !req.headers().contains_key(http::header::COOKIE) {
            let jar: Vec<String> = self
                .cookies
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            req.headers_mut().insert(
                http::header::COOKIE,
                HeaderValue::from_str(&jar.join("; ")).unwrap(),
            );
        }
        let res = match tokio::time::timeout(Duration::from_secs(10), self.inner.request(req)).await
        {
            Ok(Ok(res)) => res,
            Ok(Err(e)) => return Err(e.to_string()),
            Err(_) => return Err("timed out".into()),
        };
        let (parts, body) = res.into_parts();
        let body = body.collect().await.map_err(|e| e.to_string())?.to_bytes();
        for v in parts.headers.get_all(http::header::SET_COOKIE) {
            let Ok(s) = v.to_str() else { continue };
            let pair = s.split(';').next().unwrap_or("");
            if let Some((k, v)) = pair.split_once('=') {
                self.cookies.retain(|(name, _)| name != k);
                self.cookies.push((k.to_owned(), v.to_owned()));
            }
        }
        Ok(Reply {
            status: parts.status,
            headers: parts.headers,
            body: String::from_utf8_lossy(&body).into_owned(),
        })
    }
}

/// Sends raw bytes on a fresh connection and reads until the server closes it or `limit` passes.
pub async fn raw_exchange(addr: SocketAddr, bytes: &[u8], limit: Duration) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(bytes).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(limit, s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

/// Polls `cond` until it holds or `limit` passes.
pub async fn eventually(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if cond() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    cond()
}
