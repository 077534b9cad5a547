//! Upgraded connections (WebSocket and any other HTTP/1.1 `Upgrade`): recognising an upgrade
//! request, the hop-by-hop headers that must survive the proxy for it, and the tunnel that copies
//! bytes both ways once client and backend have both switched protocols.
//!
//! The proxy builds a [`Tunnel`] when the backend answers `101 Switching Protocols` and hands it
//! to the client connection's own task (`ConnState::hand_over_tunnel`), which runs it on the
//! client socket once it has written the 101: the connection's header and idle timers no longer
//! apply, and shutdown treats the tunnel like any open connection (closed after the grace). The
//! tunnel keeps the backend's in-flight guard until it ends. It ends when either side closes, when
//! an upgrade fails, or when the backend's close signal (`pool::TunnelClose`: the drain deadline,
//! or removal from the pool) plus this tunnel's own random jitter in [0, [`CLOSE_JITTER`]) comes.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use http::header::{self, HeaderMap, HeaderValue};
use http::{Request, Version};
use tokio::io::AsyncWriteExt;
use tokio::sync::watch;

use crate::pool::{BackendSlot, InflightGuard, TunnelClose};
use crate::server::Upgraded;
use crate::upstream::Switched;

/// The tunnels of a draining or removed backend close spread over this window after the
/// deadline, so that their clients do not all reconnect at once.
pub const CLOSE_JITTER: Duration = Duration::from_secs(2);

/// How long closing both sides of a tunnel may take before they are simply dropped.
const SHUTDOWN_LIMIT: Duration = Duration::from_secs(1);

/// A client's request to switch protocols: HTTP/1.1 with `Connection: upgrade` and `Upgrade`.
#[derive(Debug)]
pub struct UpgradeRequest {
    protocols: Vec<HeaderValue>,
}

impl UpgradeRequest {
    /// The client's upgrade request, when `req` asks for one.
    pub fn take<B>(req: &Request<B>) -> Option<Self> {
        if req.version() != Version::HTTP_11 || !connection_has_upgrade(req.headers()) {
            return None;
        }
        let protocols = protocols(req.headers());
        if protocols.is_empty() {
            return None;
        }
        Some(Self { protocols })
    }

    /// Puts `Connection: upgrade` and the client's `Upgrade` back on the upstream request
    /// (hop-by-hop removal took them off).
    pub fn restore_request_headers(&self, headers: &mut HeaderMap) {
        set_upgrade_headers(headers, &self.protocols);
    }

    /// Accepts a backend's `101`: puts `Connection: upgrade` and `Upgrade` back on the response
    /// to the client (`offered`: the backend's `Upgrade` values, read before hop-by-hop removal;
    /// the client's own when the backend named none) and returns the tunnel to run once the 101
    /// has been written. The tunnel holds `guard`, so the backend counts it as in flight.
    pub fn accept(
        self,
        response_headers: &mut HeaderMap,
        offered: Vec<HeaderValue>,
        upstream: Switched,
        slot: &Arc<BackendSlot>,
        guard: InflightGuard,
    ) -> Tunnel {
        let offered = if offered.is_empty() {
            self.protocols
        } else {
            offered
        };
        set_upgrade_headers(response_headers, &offered);
        // Subscribe now, so the tunnel counts as open from the 101 on.
        let close = slot.tunnel_close();
        let jitter = Duration::from_millis(rand::random_range(0..millis(CLOSE_JITTER).max(1)));
        let slot = Arc::clone(slot);
        Tunnel(Box::new(move |client| {
            Box::pin(run(client, upstream, slot, guard, close, jitter))
        }))
    }
}

/// The non-empty `Upgrade` values in `headers`.
pub fn protocols(headers: &HeaderMap) -> Vec<HeaderValue> {
    headers
        .get_all(header::UPGRADE)
        .iter()
        .filter(|v| !v.is_empty())
        .cloned()
        .collect()
}

fn connection_has_upgrade(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
}

fn set_upgrade_headers(headers: &mut HeaderMap, protocols: &[HeaderValue]) {
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    headers.remove(header::UPGRADE);
    for p in protocols {
        headers.append(header::UPGRADE, p.clone());
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// One upgraded connection's byte copy, run to its end by the client connection's task on the
/// client socket.
pub struct Tunnel(Box<dyn FnOnce(Upgraded) -> TunnelRun + Send>);

/// A running tunnel.
type TunnelRun = Pin<Box<dyn Future<Output = ()> + Send>>;

impl fmt::Debug for Tunnel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Tunnel")
    }
}

impl Tunnel {
    /// Copies bytes between `client` and the backend until either side closes or the backend's
    /// close signal comes.
    pub async fn run(self, client: Upgraded) {
        (self.0)(client).await;
    }
}

async fn run(
    mut client: Upgraded,
    upstream: Switched,
    slot: Arc<BackendSlot>,
    guard: InflightGuard,
    mut close: watch::Receiver<TunnelClose>,
    jitter: Duration,
) {
    // In flight on the backend until the tunnel ends.
    let _guard = guard;
    let backend = &slot.id;
    let mut upstream_io = upstream.stream;
    // Bytes the backend sent right behind its 101 go first.
    if !upstream_early(&mut client, &upstream.early).await {
        return;
    }
    tokio::select! {
        res = tokio::io::copy_bidirectional(&mut client, &mut upstream_io) => {
            match res {
                Ok((to_backend, to_client)) => {
                    tracing::trace!(%backend, to_backend, to_client, "tunnel closed");
                }
                Err(e) => tracing::debug!(%backend, error = %e, "tunnel ended with an error"),
            }
            return;
        }
        () = closed(&mut close, jitter) => {
            tracing::debug!(%backend, ?jitter, "closing tunnel: backend drained or removed");
        }
    }
    let _ = tokio::time::timeout(SHUTDOWN_LIMIT, async {
        let _ = tokio::join!(client.shutdown(), upstream_io.shutdown());
    })
    .await;
}

/// Writes what the backend sent after its 101 to the client; false if the client is gone.
async fn upstream_early<T: tokio::io::AsyncWrite + Unpin>(client: &mut T, early: &[u8]) -> bool {
    if early.is_empty() {
        return true;
    }
    client.write_all(early).await.is_ok() && client.flush().await.is_ok()
}

/// Resolves when the backend's close signal, plus `jitter`, says this tunnel must close. Waits on
/// the signal; a drain called off (back to `Open`) keeps the tunnel open.
async fn closed(close: &mut watch::Receiver<TunnelClose>, jitter: Duration) {
    loop {
        let at = close
            .borrow_and_update()
            .at()
            .and_then(|at| at.checked_add(jitter));
        let Some(at) = at else {
            if close.changed().await.is_err() {
                // The slot is gone without a signal (cannot happen while the tunnel holds it).
                std::future::pending::<()>().await;
            }
            continue;
        };
        tokio::select! {
            () = tokio::time::sleep_until(tokio::time::Instant::from_std(at)) => return,
            changed = close.changed() => {
                if changed.is_err() {
                    tokio::time::sleep_until(tokio::time::Instant::from_std(at)).await;
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::time::Instant;

    use usher_balancer::SelectorConfig;

    use super::*;
    use crate::config::BackendConfig;
    use crate::pool::Pool;

    fn pool(ids: &[&str]) -> Pool {
        let backends: Vec<BackendConfig> = ids
            .iter()
            .zip(1u16..)
            .map(|(id, port)| BackendConfig {
                id: id.parse().expect("id"),
                addr: SocketAddr::from(([127, 0, 0, 1], port)),
                weight: 1,
            })
            .collect();
        Pool::new(&backends, SelectorConfig::default()).expect("pool")
    }

    fn request(version: Version, headers: &[(&str, &str)]) -> Request<()> {
        let mut b = Request::get("/ws").version(version);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(()).expect("request")
    }

    #[test]
    fn only_http11_requests_with_connection_upgrade_and_an_upgrade_header_upgrade() {
        let upgrade = [
            ("connection", "keep-alive, Upgrade"),
            ("upgrade", "websocket"),
        ];
        let req = request(Version::HTTP_11, &upgrade);
        let u = UpgradeRequest::take(&req).expect("an upgrade");
        let mut headers = HeaderMap::new();
        u.restore_request_headers(&mut headers);
        assert_eq!(headers[header::CONNECTION], "upgrade");
        assert_eq!(headers[header::UPGRADE], "websocket");
        for (version, headers) in [
            (Version::HTTP_10, &upgrade[..]),
            (Version::HTTP_11, &upgrade[1..]),
            (Version::HTTP_11, &upgrade[..1]),
            (
                Version::HTTP_11,
                &[("connection", "upgrade"), ("upgrade", "")][..],
            ),
        ] {
            let req = request(version, headers);
            assert!(
                UpgradeRequest::take(&req).is_none(),
                "{version:?} {headers:?}"
            );
        }
    }

    #[test]
    fn drain_activate_and_removal_publish_when_tunnels_close() {
        let pool = pool(&["a", "b"]);
        let a: usher_balancer::BackendId = "a".parse().expect("id");
        let slot = Arc::clone(&pool.snapshot().slots[0]);
        let rx = slot.tunnel_close();
        assert_eq!(slot.open_tunnels(), 1);
        assert_eq!(*rx.borrow(), TunnelClose::Open);

        let before = Instant::now();
        pool.drain(&a, Duration::from_secs(30)).expect("drain");
        let deadline = rx.borrow().at().expect("a deadline");
        assert!(deadline >= before + Duration::from_secs(29));
        assert!(matches!(*rx.borrow(), TunnelClose::Deadline(_)));
        pool.activate(&a).expect("activate");
        assert_eq!(*rx.borrow(), TunnelClose::Open);

        // Removal closes now, or at an earlier drain deadline.
        pool.drain(&a, Duration::ZERO).expect("drain");
        let drained_at = rx.borrow().at().expect("deadline");
        pool.remove(&a).expect("remove");
        assert_eq!(*rx.borrow(), TunnelClose::Removed(drained_at));

        // A new address for `b` retires the old slot, and with it its tunnels.
        let b_slot = Arc::clone(&pool.snapshot().slots[0]);
        let b_rx = b_slot.tunnel_close();
        pool.upsert(&BackendConfig {
            id: "b".parse().expect("id"),
            addr: SocketAddr::from(([127, 0, 0, 1], 9)),
            weight: 1,
        })
        .expect("move b");
        assert!(matches!(*b_rx.borrow(), TunnelClose::Removed(_)));
        drop(b_rx);
        assert_eq!(b_slot.open_tunnels(), 0);
    }

    #[tokio::test]
    async fn a_tunnel_closes_at_the_deadline_plus_its_jitter_unless_the_drain_is_called_off() {
        let pool = pool(&["a"]);
        let a: usher_balancer::BackendId = "a".parse().expect("id");
        let slot = Arc::clone(&pool.snapshot().slots[0]);
        let jitter = Duration::from_millis(100);

        // Called off before the deadline: stays open.
        let mut rx = slot.tunnel_close();
        pool.drain(&a, Duration::from_millis(100)).expect("drain");
        pool.activate(&a).expect("activate");
        let limit = Duration::from_millis(400);
        assert!(
            tokio::time::timeout(limit, closed(&mut rx, jitter))
                .await
                .is_err()
        );

        let start = Instant::now();
        pool.drain(&a, Duration::from_millis(100)).expect("drain");
        tokio::time::timeout(Duration::from_secs(5), closed(&mut rx, jitter))
            .await
            .expect("closes");
        assert!(
            start.elapsed() >= Duration::from_millis(195),
            "{:?}",
            start.elapsed()
        );
    }
}
