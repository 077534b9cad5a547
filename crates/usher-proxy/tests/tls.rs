//! TLS termination: a self-signed certificate, the load balancer in front of a harness backend,
//! and a rustls client speaking HTTP/1.1 to it.
#![allow(clippy::unwrap_used)]

mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use rustls::pki_types::{CertificateDer, ServerName};
use support::{Backend, Reply, TestLb, config, raw_exchange, test_keys};
use tempfile::TempDir;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use usher_proxy::{FileConfig, Lb, LbConfig, LbError, TlsConfig, TlsError};

/// A self-signed certificate for `localhost` and 127.0.0.1, written as PEM into a tempdir.
struct Cert {
    dir: TempDir,
    der: CertificateDer<'static>,
}

impl Cert {
    fn new() -> Self {
        let names = vec!["localhost".to_owned(), "127.0.0.1".to_owned()];
        let ck = rcgen::generate_simple_self_signed(names).unwrap();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("cert.pem"), ck.cert.pem()).unwrap();
        std::fs::write(dir.path().join("key.pem"), ck.key_pair.serialize_pem()).unwrap();
        Self {
            dir,
            der: ck.cert.der().clone(),
        }
    }

    fn tls(&self) -> TlsConfig {
        TlsConfig {
            cert: self.dir.path().join("cert.pem"),
            key: self.dir.path().join("key.pem"),
        }
    }

    /// A client that trusts only this certificate and offers `alpn`.
    fn connector(&self, alpn: &[&[u8]]) -> TlsConnector {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.der.clone()).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        TlsConnector::from(Arc::new(cfg))
    }
}

async fn tls_lb(cert: &Cert, backend: &Backend, affinity: &str) -> TestLb {
    let mut cfg = config(&[backend]);
    cfg.tls = Some(cert.tls());
    cfg.affinity = affinity.parse().unwrap();
    TestLb::start(cfg).await
}

async fn connect(connector: &TlsConnector, addr: SocketAddr) -> TlsStream<TcpStream> {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let name = ServerName::try_from("localhost").unwrap();
    connector.connect(name, tcp).await.unwrap()
}

/// One keep-alive HTTP/1.1 connection over TLS.
struct Conn {
    sender: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
}

impl Conn {
    async fn open(stream: TlsStream<TcpStream>) -> Self {
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .unwrap();
        tokio::spawn(conn);
        Self { sender }
    }

    async fn get(&mut self, path: &str) -> Reply {
        let req = Request::get(path)
            .header("host", "localhost")
            .body(Full::default())
            .unwrap();
        let res = tokio::time::timeout(Duration::from_secs(10), self.sender.send_request(req))
            .await
            .unwrap()
            .unwrap();
        let (parts, body) = res.into_parts();
        let body = body.collect().await.unwrap().to_bytes();
        Reply {
            status: parts.status,
            headers: parts.headers,
            body: String::from_utf8_lossy(&body).into_owned(),
        }
    }
}

#[tokio::test]
async fn requests_over_tls_reach_the_backend_as_https() {
    let cert = Cert::new();
    let b = Backend::start("shop-0").await;
    let lb = tls_lb(&cert, &b, "none").await;
    assert!(lb.lb.is_tls());
    let stream = connect(&cert.connector(&[b"http/1.1"]), lb.addr).await;
    let mut conn = Conn::open(stream).await;
    for _ in 0..2 {
        let r = conn.get("/hello").await;
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(r.body, "shop-0");
    }
    let seen = b.seen();
    assert_eq!(
        seen.len(),
        2,
        "both requests on one kept-alive TLS connection"
    );
    let h = &seen[0].headers;
    assert_eq!(h["x-forwarded-proto"], "https");
    assert_eq!(
        h["forwarded"],
        "for=127.0.0.1;host=\"localhost\";proto=https"
    );
}

#[tokio::test]
async fn the_negotiated_protocol_is_http_1_1() {
    let cert = Cert::new();
    let b = Backend::start("shop-0").await;
    let lb = tls_lb(&cert, &b, "none").await;
    // A browser-like client offers h2 first; HTTP/1.1 is chosen.
    let stream = connect(&cert.connector(&[b"h2", b"http/1.1"]), lb.addr).await;
    let (_, session) = stream.get_ref();
    assert_eq!(session.alpn_protocol(), Some(&b"http/1.1"[..]));
    assert_eq!(
        Conn::open(stream).await.get("/").await.status,
        StatusCode::OK
    );
    // A client that offers no ALPN at all is served too.
    let stream = connect(&cert.connector(&[]), lb.addr).await;
    assert_eq!(stream.get_ref().1.alpn_protocol(), None);
    assert_eq!(
        Conn::open(stream).await.get("/").await.status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn the_affinity_cookie_is_secure_on_a_tls_listener() {
    let cert = Cert::new();
    let b = Backend::start("shop-0").await;
    let lb = tls_lb(&cert, &b, "cookie").await;
    let stream = connect(&cert.connector(&[b"http/1.1"]), lb.addr).await;
    let r = Conn::open(stream).await.get("/").await;
    let set = r.set_cookie("usher").expect("affinity cookie issued");
    let attrs: Vec<String> = set.split(';').map(|a| a.trim().to_lowercase()).collect();
    assert!(attrs.iter().any(|a| a == "secure"), "{set}");
    assert!(attrs.iter().any(|a| a == "httponly"), "{set}");
}

#[tokio::test]
async fn plain_http_on_the_tls_port_fails_cleanly_and_tls_still_works() {
    let cert = Cert::new();
    let b = Backend::start("shop-0").await;
    let lb = tls_lb(&cert, &b, "none").await;
    let out = raw_exchange(
        lb.addr,
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
        Duration::from_secs(5),
    )
    .await;
    assert!(!out.starts_with("HTTP/"), "{out:?}");
    assert_eq!(b.count(), 0);
    let stream = connect(&cert.connector(&[b"http/1.1"]), lb.addr).await;
    assert_eq!(
        Conn::open(stream).await.get("/").await.status,
        StatusCode::OK
    );
    assert_eq!(b.count(), 1);
}

#[tokio::test]
async fn a_stalled_handshake_is_cut_off_at_the_header_timeout() {
    let cert = Cert::new();
    let b = Backend::start("shop-0").await;
    let mut cfg = config(&[&b]);
    cfg.tls = Some(cert.tls());
    cfg.limits.header_read_timeout = Duration::from_millis(400);
    cfg.limits.idle_timeout = Duration::from_secs(30);
    let lb = TestLb::start(cfg).await;
    let start = Instant::now();
    // Connect and never send a ClientHello.
    let mut s = TcpStream::connect(lb.addr).await.unwrap();
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
        .await
        .expect("the load balancer never closed the stalled connection");
    assert!(matches!(n, Ok(0) | Err(_)), "{n:?}");
    let t = start.elapsed();
    assert!(
        t >= Duration::from_millis(350) && t < Duration::from_secs(3),
        "{t:?}"
    );
}

#[tokio::test]
async fn idle_tls_connections_close_and_shutdown_finishes_in_flight_requests() {
    let cert = Cert::new();
    let b = Backend::start("shop-0").await;
    let mut cfg = config(&[&b]);
    cfg.tls = Some(cert.tls());
    cfg.limits.idle_timeout = Duration::from_millis(300);
    let mut lb = TestLb::start(cfg).await;
    let connector = cert.connector(&[b"http/1.1"]);

    // Idle after a response: the server closes the TLS connection.
    let mut idle = Conn::open(connect(&connector, lb.addr).await).await;
    assert_eq!(idle.get("/").await.status, StatusCode::OK);
    let start = Instant::now();
    assert!(support::eventually(Duration::from_secs(3), || idle.sender.is_closed()).await);
    assert!(start.elapsed() < Duration::from_secs(2));

    // A slow request in flight when shutdown starts still completes.
    let mut slow = Conn::open(connect(&connector, lb.addr).await).await;
    let inflight = tokio::spawn(async move { slow.get("/slow?ms=500").await });
    assert!(support::eventually(Duration::from_secs(5), || b.count() == 2).await);
    let stopped = lb.shutdown();
    assert_eq!(inflight.await.unwrap().status, StatusCode::OK);
    tokio::time::timeout(Duration::from_secs(5), stopped)
        .await
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn bad_certificate_files_are_clear_errors_from_lb_new() {
    let cert = Cert::new();
    let b = Backend::start("shop-0").await;
    let mut cfg = config(&[&b]);
    let missing = cert.dir.path().join("missing.pem");
    cfg.tls = Some(TlsConfig {
        cert: missing.clone(),
        key: cert.tls().key,
    });
    let err = Lb::new(cfg.clone(), test_keys()).unwrap_err();
    assert!(
        matches!(err, LbError::Tls(TlsError::Read { .. })),
        "{err:?}"
    );
    let msg = err.to_string();
    assert!(msg.contains(missing.to_str().unwrap()), "{msg}");
    assert!(msg.contains("certificate"), "{msg}");

    // Certificate and key swapped: neither file holds what it should.
    cfg.tls = Some(TlsConfig {
        cert: cert.tls().key,
        key: cert.tls().cert,
    });
    let err = Lb::new(cfg, test_keys()).unwrap_err();
    assert!(
        matches!(err, LbError::Tls(TlsError::NoCertificate { .. })),
        "{err:?}"
    );
    assert!(err.to_string().contains("key.pem"), "{err}");
}

#[test]
fn the_tls_section_is_read_from_a_config_file() {
    let parse = |text: &str| {
        let raw: FileConfig = toml::from_str(text).map_err(|e| e.to_string())?;
        LbConfig::from_raw(raw, Some(text)).map_err(|e| e.to_string())
    };
    let base = "[[backend]]\nid = \"a\"\naddr = \"127.0.0.1:1\"\n";
    assert!(parse(base).unwrap().tls.is_none());
    let c = parse(&format!("{base}[tls]\ncert = \"c.pem\"\nkey = \"k.pem\"\n")).unwrap();
    let tls = c.tls.unwrap();
    assert_eq!(
        (tls.cert.to_str(), tls.key.to_str()),
        (Some("c.pem"), Some("k.pem"))
    );

    let err = parse(&format!("{base}[tls]\ncert = \"c.pem\"\n")).unwrap_err();
    assert!(err.contains("key"), "{err}");
    let err = parse(&format!(
        "{base}[tls]\ncert = \"c.pem\"\nkey = \"k.pem\"\nca = \"x\"\n"
    ))
    .unwrap_err();
    assert!(err.contains("ca") && err.contains("line 7"), "{err}");
    let err = parse(&format!("{base}[tls]\ncert = \"\"\nkey = \"k.pem\"\n")).unwrap_err();
    assert!(err.contains("tls.cert"), "{err}");
}
