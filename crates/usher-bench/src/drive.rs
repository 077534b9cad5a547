//! `usher-bench drive`: exactly N requests (no cookie) over C keep-alive connections, for the
//! learned app-cookie curve where each response teaches the LB one entry.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use crate::client::Conn;

/// What `usher-bench drive` sends.
#[derive(Debug, Clone, clap::Args)]
pub struct DriveArgs {
    /// Address to send to.
    #[arg(long)]
    pub connect: SocketAddr,
    /// Number of requests.
    #[arg(long)]
    pub requests: usize,
    /// Connections.
    #[arg(long, default_value_t = 64)]
    pub conns: usize,
}

/// Sends the requests and prints `driven OK ERRORS SECONDS`.
pub fn run(a: DriveArgs) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let start = Instant::now();
    let (ok, errors) = rt.block_on(drive(a.connect, a.requests, a.conns));
    println!("driven {ok} {errors} {:.3}", start.elapsed().as_secs_f64());
    Ok(())
}

/// Sends `n` requests over `conns` connections; returns (200 responses, failures).
pub async fn drive(addr: SocketAddr, n: usize, conns: usize) -> (usize, usize) {
    let left = Arc::new(AtomicUsize::new(n));
    let ok = Arc::new(AtomicUsize::new(0));
    let err = Arc::new(AtomicUsize::new(0));
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..conns.clamp(1, n.max(1)) {
        let (left, ok, err) = (Arc::clone(&left), Arc::clone(&ok), Arc::clone(&err));
        set.spawn(async move {
            let mut conn: Option<Conn> = None;
            while left
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| v.checked_sub(1))
                .is_ok()
            {
                if conn.is_none() {
                    conn = Conn::connect(addr).await.ok();
                }
                let Some(c) = conn.as_mut() else {
                    err.fetch_add(1, Ordering::Relaxed);
                    continue;
                };
                match c.get(None).await {
                    Ok(r) if r.status == 200 => {
                        ok.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(_) => {
                        err.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(_) => {
                        err.fetch_add(1, Ordering::Relaxed);
                        conn = None;
                    }
                }
            }
        });
    }
    while set.join_next().await.is_some() {}
    (ok.load(Ordering::Relaxed), err.load(Ordering::Relaxed))
}
