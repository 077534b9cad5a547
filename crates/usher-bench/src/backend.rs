//! The tiny backend the comparison runs behind every proxy: a hyper HTTP/1.1 server on one
//! thread that answers every request with a 3-byte body and an `X-Backend` header naming itself,
//! so a stickiness check can see which backend served a request. One process can listen on many
//! ports (the 3 → 300 backends curve) and, with `--set-cookie`, hands out a new app session
//! cookie on every response (the learned app-cookie table curve).
//!
//! Written by hand because it is the measuring instrument: it must do nearly nothing per request.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use http::{HeaderValue, Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

/// What `usher-bench backend` serves.
#[derive(Debug, Clone, clap::Args)]
pub struct BackendArgs {
    /// First address to listen on (port 0: any free port).
    #[arg(long, default_value = "127.0.0.1:0")]
    pub listen: SocketAddr,
    /// Name sent in `X-Backend`; with `--ports N > 1`, `NAME-<i>`.
    #[arg(long, default_value = "b0")]
    pub name: String,
    /// How many ports to listen on (consecutive from `--listen`'s port, or free ports when it is 0).
    #[arg(long, default_value_t = 1)]
    pub ports: usize,
    /// Set a fresh `NAME=<unique>` cookie on every response (an app's session cookie; values are
    /// unique across backend processes too).
    #[arg(long, value_name = "NAME")]
    pub set_cookie: Option<String>,
}

/// Binds every port, prints `listening NAME ADDR` per port on stdout, then serves forever on
/// one thread.
pub fn run(args: BackendArgs) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let counter = Arc::new(AtomicU64::new(0));
        let mut listeners = Vec::with_capacity(args.ports);
        for i in 0..args.ports {
            let addr = match args.listen.port() {
                0 => args.listen,
                p => SocketAddr::new(args.listen.ip(), p + u16::try_from(i)?),
            };
            let l = TcpListener::bind(addr).await?;
            let name = if args.ports == 1 {
                args.name.clone()
            } else {
                format!("{}-{i}", args.name)
            };
            println!("listening {name} {}", l.local_addr()?);
            listeners.push((l, name));
        }
        let mut tasks = tokio::task::JoinSet::new();
        for (l, name) in listeners {
            let name = HeaderValue::from_str(&name)?;
            tasks.spawn(accept(
                l,
                name,
                args.set_cookie.clone(),
                Arc::clone(&counter),
            ));
        }
        while tasks.join_next().await.is_some() {}
        Ok(())
    })
}

async fn accept(l: TcpListener, name: HeaderValue, cookie: Option<String>, n: Arc<AtomicU64>) {
    loop {
        let Ok((stream, _)) = l.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let (name, cookie, n) = (name.clone(), cookie.clone(), Arc::clone(&n));
        tokio::spawn(async move {
            let svc = service_fn(move |_req: Request<Incoming>| {
                let mut res = Response::new(Full::new(Bytes::from_static(b"ok\n")));
                res.headers_mut().insert("x-backend", name.clone());
                if let Some(c) = &cookie {
                    // The pid keeps values distinct across backend processes.
                    let v = format!(
                        "{c}={:08x}{:016x}; Path=/",
                        std::process::id(),
                        n.fetch_add(1, Ordering::Relaxed)
                    );
                    if let Ok(v) = HeaderValue::from_str(&v) {
                        res.headers_mut().insert(http::header::SET_COOKIE, v);
                    }
                }
                async move { Ok::<_, Infallible>(res) }
            });
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}
