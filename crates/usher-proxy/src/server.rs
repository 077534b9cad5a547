//! The accept loop and graceful shutdown. The accept loop only accepts: TLS handshakes run in
//! each connection's own task.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::runtime::Handle;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::Lb;
use crate::conn::{ConnEnd, ConnIo, ConnState, drive};

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
        return serve_http(lb, stream, peer, stop).await;
    };
    let limit = lb.live.load().config.limits.header_read_timeout;
    let tls_stream = tokio::select! {
        res = tls.handshake(stream, limit) => match res {
            Ok(s) => s,
            Err(e) => {
                tracing::debug!(%peer, error = %e, "closed: TLS handshake failed");
                return;
            }
        },
        _ = stop.wait_for(|stopping| *stopping) => return,
    };
    serve_http(Arc::clone(&lb), tls_stream, peer, stop).await;
}

/// Serves HTTP/1.1 on `io` (a plain or TLS stream): activity tracking, timers and graceful
/// shutdown as described in `conn.rs`; then, if a request switched protocols, its tunnel.
async fn serve_http<T>(lb: Arc<Lb>, io: T, peer: SocketAddr, stop: watch::Receiver<bool>)
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let limits = &lb.live.load().config.limits;
    let state = ConnState::new(limits.header_read_timeout, limits.idle_timeout, peer.ip());
    let io = TokioIo::new(ConnIo::new(io, Arc::clone(&state)));
    let svc_lb = Arc::clone(&lb);
    let svc_state = Arc::clone(&state);
    let service = service_fn(move |req| {
        let lb = Arc::clone(&svc_lb);
        let state = Arc::clone(&svc_state);
        async move { Ok::<_, Infallible>(crate::proxy::handle(&lb, req, peer, &state).await) }
    });
    let end = {
        let conn = http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(None)
            .max_header_size(limits.max_header_bytes)
            .keep_alive(true)
            .serve_connection(io, service)
            .with_upgrades();
        tokio::pin!(conn);
        drive(Arc::clone(&state), conn.as_mut(), stop).await
        // hyper's connection is dropped here, so a pending client upgrade resolves either way.
    };
    match end {
        ConnEnd::HeaderTimeout => {
            tracing::debug!(%peer, "closed: request head not received in time")
        }
        ConnEnd::Idle => tracing::trace!(%peer, "closed: idle keep-alive connection"),
        ConnEnd::Closed => {}
    }
    // After a 101 the socket belongs to the tunnel; it runs here, in the connection's task, so
    // shutdown waits for it (up to the grace) and then aborts it with the other connections.
    if let Some(tunnel) = state.take_tunnel() {
        tunnel.await;
    }
}
