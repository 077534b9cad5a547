//! The client side: the accept loop, graceful shutdown, and a hand-written HTTP/1.1 server.
//!
//! The accept loop only accepts: TLS handshakes run in each connection's own task. Each
//! connection then runs `conn.rs` on its socket's two halves.
//!
//! The HTTP/1.1 server is written by hand (on `httparse`, as the backend client in `upstream/`
//! is) rather than taken from hyper for what hyper could not be made to do: it keeps an 8 KiB
//! read and a write buffer on every connection, idle ones included (185 MiB for 10 000 idle
//! clients, where this holds no buffer while idle); it starts its header timer while a
//! keep-alive connection is merely idle; and it resolves a request carrying both
//! `Content-Length` and `Transfer-Encoding` silently instead of refusing it. (Not for speed:
//! swapped one for one it ran about as many instructions per request as hyper's.) Everything else it did is done here too: request smuggling checks and 400 /
//! 431 answers, `Expect: 100-continue`, `Date`, HTTP/1.0 keep-alive, pipelined requests,
//! upgrades, and graceful shutdown.

mod body;
mod conn;
mod io;
mod request;
mod response;

pub use body::{ClientBody, ClientBodyError};
pub use conn::ConnState;
pub use io::Upgraded;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::runtime::Handle;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::Lb;

/// Serves clients on an already-bound `listener` until `shutdown` resolves; then stops accepting,
/// lets in-flight requests finish (up to `limits.shutdown_grace`), closes the rest and logs the
/// outcome summary. Connections run on the caller's runtime.
pub async fn serve(listener: TcpListener, lb: Arc<Lb>, shutdown: impl Future<Output = ()>) {
    serve_on(listener, lb, shutdown, &[]).await;
}

/// [`serve`], handing accepted connections to `workers` in turn (see [`crate::Workers`]; the
/// first handle should be the caller's own runtime). With no workers, like [`serve`].
pub async fn serve_on(
    listener: TcpListener,
    lb: Arc<Lb>,
    shutdown: impl Future<Output = ()>,
    workers: &[Handle],
) {
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut conns = JoinSet::new();
    tokio::pin!(shutdown);
    // Drains end (deadline passed or bound clients gone) on this tick.
    let checks = tokio::spawn(crate::health::run_checks(Arc::clone(&lb)));
    let mut next_worker = 0usize;
    let mut housekeeping = tokio::time::interval(Duration::from_millis(250));
    housekeeping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            _ = housekeeping.tick() => {
                lb.pool.reap_drained(lb.live.load().config.cookie.idle_timeout);
                lb.upstreams.prune();
            }
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let (lb, stop) = (Arc::clone(&lb), stop_rx.clone());
                    next_worker = (next_worker + 1) % workers.len().max(1);
                    match workers.get(next_worker).filter(|_| next_worker != 0) {
                        None => {
                            conns.spawn(connection(lb, stream, peer, stop));
                        }
                        Some(handle) => match stream.into_std() {
                            // Re-registered with the worker's own reactor on arrival.
                            Ok(std) => {
                                conns.spawn_on(adopt(lb, std, peer, stop), handle);
                            }
                            Err(e) => tracing::warn!(error = %e, "cannot hand a connection over"),
                        },
                    }
                }
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
    drop(listener);
    checks.abort();
    let open = conns.len();
    tracing::info!(
        open_connections = open,
        "shutting down: no longer accepting"
    );
    let _ = stop_tx.send(true);
    let grace = lb.live.load().config.limits.shutdown_grace;
    let drained =
        tokio::time::timeout(grace, async { while conns.join_next().await.is_some() {} }).await;
    if drained.is_err() {
        tracing::warn!(
            remaining = conns.len(),
            ?grace,
            "shutdown grace expired; closing remaining connections"
        );
        conns.shutdown().await;
    }
    lb.log_summary();
}

/// A connection accepted on another thread, registered with this worker's reactor.
async fn adopt(
    lb: Arc<Lb>,
    stream: std::net::TcpStream,
    peer: SocketAddr,
    stop: watch::Receiver<bool>,
) {
    match TcpStream::from_std(stream) {
        Ok(stream) => connection(lb, stream, peer, stop).await,
        Err(e) => tracing::warn!(error = %e, "cannot adopt a connection"),
    }
}

/// One accepted connection: the TLS handshake when the listener terminates TLS (bounded by the
/// header read timeout, abandoned on shutdown), then the same HTTP serving as a plain socket.
async fn connection(
    lb: Arc<Lb>,
    stream: TcpStream,
    peer: SocketAddr,
    mut stop: watch::Receiver<bool>,
) {
    let _ = stream.set_nodelay(true);
    // Cloned out so the connection does not pin this configuration generation.
    let Some(tls) = lb.live().tls.clone() else {
        // A plain socket splits without a lock.
        let (rd, wr) = stream.into_split();
        return conn::serve(lb, Box::new(rd), Box::new(wr), peer, stop).await;
    };
    let limit = lb.live.load().config.limits.header_read_timeout;
    let tls_stream = tokio::select! {
        res = Box::pin(tls.handshake(stream, limit)) => match res {
            Ok(s) => s,
            Err(e) => {
                tracing::debug!(%peer, error = %e, "closed: TLS handshake failed");
                return;
            }
        },
        _ = stop.wait_for(|stopping| *stopping) => return,
    };
    // Boxed, like the handshake, so that a plain connection's task holds neither.
    Box::pin(serve_http(Arc::clone(&lb), tls_stream, peer, stop)).await;
}

/// Serves HTTP/1.1 on a TLS stream.
async fn serve_http<T>(lb: Arc<Lb>, io: T, peer: SocketAddr, stop: watch::Receiver<bool>)
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (rd, wr) = tokio::io::split(io);
    conn::serve(lb, Box::new(rd), Box::new(wr), peer, stop).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{BackendAddr, BackendSection, FileConfig, LbConfig};

    /// What an idle client connection's task holds is this future: the request path, the
    /// response writer and the TLS handshake are boxed only while they run, so 10 000 idle
    /// clients cost about 16 MiB here instead of the 60 MiB they did inline.
    #[tokio::test]
    async fn an_idle_connection_task_stays_small() {
        let raw = FileConfig {
            backends: vec![toml::Spanned::new(
                0..0,
                BackendSection {
                    id: "a".parse().expect("id"),
                    addr: BackendAddr(SocketAddr::from(([127, 0, 0, 1], 9))),
                    weight: None,
                },
            )],
            ..FileConfig::default()
        };
        let keys = usher_balancer::KeyRing::new(vec![usher_balancer::AffinityKey::from_bytes(
            1, [7u8; 32],
        )])
        .expect("keys");
        let lb = Lb::new(LbConfig::from_raw(raw, None).expect("config"), keys).expect("lb");
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let stream = TcpStream::connect(listener.local_addr().expect("addr"))
            .await
            .expect("connect");
        let (_stop_tx, stop) = watch::channel(false);
        let task = connection(lb, stream, SocketAddr::from(([127, 0, 0, 1], 1)), stop);
        let size = std::mem::size_of_val(&task);
        assert!(size <= 2048, "a connection's task holds {size} bytes");
    }
}
