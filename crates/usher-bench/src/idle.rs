//! `usher-bench idle`: opens N keep-alive connections, sends one GET on each, reads the
//! response and holds them open until killed (the "10 000 idle clients" curve). Source
//! addresses rotate through 127.0.0.1, 127.0.0.2, … every 20 000 connections so ephemeral
//! ports never run short.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use tokio::task::JoinSet;

use crate::client::Conn;

/// Connections per loopback source address.
const PER_SOURCE: usize = 20_000;

/// What `usher-bench idle` opens.
#[derive(Debug, Clone, clap::Args)]
pub struct IdleArgs {
    /// Address to connect to.
    #[arg(long)]
    pub connect: SocketAddr,
    /// Number of connections.
    #[arg(long, default_value_t = 10_000)]
    pub conns: usize,
    /// Connections being opened at the same time.
    #[arg(long, default_value_t = 64)]
    pub parallel: usize,
}

/// Source address for connection `i` (only for loopback targets).
pub fn source_for(i: usize, target: SocketAddr) -> Option<IpAddr> {
    if !target.ip().is_loopback() || !target.is_ipv4() {
        return None;
    }
    let n = u8::try_from(i / PER_SOURCE + 1).unwrap_or(u8::MAX);
    Some(IpAddr::V4(Ipv4Addr::new(127, 0, 0, n)))
}

/// Opens and holds the connections; prints `holding OK ADDR` when all are open, then waits for
/// ever (the runner kills it).
pub fn run(a: IdleArgs) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let mut held = Vec::with_capacity(a.conns);
        let mut failed = 0usize;
        let mut next = 0usize;
        let mut set = JoinSet::new();
        while next < a.conns || !set.is_empty() {
            while next < a.conns && set.len() < a.parallel.max(1) {
                let src = source_for(next, a.connect);
                let target = a.connect;
                set.spawn(async move {
                    let mut c = Conn::connect_from(src, target).await?;
                    let r = c.get(None).await?;
                    anyhow::ensure!(r.status == 200, "status {}", r.status);
                    anyhow::Ok(c)
                });
                next += 1;
            }
            match set.join_next().await {
                Some(Ok(Ok(c))) => held.push(c),
                Some(Ok(Err(e))) => {
                    failed += 1;
                    if failed <= 5 {
                        eprintln!("idle: connection failed: {e:#}");
                    }
                }
                Some(Err(e)) => eprintln!("idle: task failed: {e}"),
                None => {}
            }
        }
        eprintln!("idle: {} open, {failed} failed", held.len());
        println!("holding {} {}", held.len(), a.connect);
        std::future::pending::<()>().await;
        drop(held);
        anyhow::Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_rotate_on_loopback_only() {
        let lo = SocketAddr::from(([127, 0, 0, 1], 80));
        assert_eq!(
            source_for(0, lo),
            Some(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1)))
        );
        assert_eq!(
            source_for(20_000, lo),
            Some(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2)))
        );
        assert_eq!(source_for(5, SocketAddr::from(([10, 0, 0, 1], 80))), None);
    }
}
