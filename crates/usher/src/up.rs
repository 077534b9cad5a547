//! `usher up`: one architecture running live — shops, store and load balancer — with a dashboard
//! to kill, add and drain shops and restart the store while a person uses the shop.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;
use clap::Args;
use usher_lab::live::{Live, LiveOptions, api};
use usher_lab::{Architecture, StoreChoice};

/// Run one architecture live: a load balancer in front of N shops, with a dashboard (on the admin
/// listener, at /_usher/) showing each shop's state, requests/s and pinned clients, and buttons to
/// kill, add and drain shops or restart the store. Open the shop in one tab and the dashboard in
/// another, kill the shop that serves you, and see what happens to your cart.
#[derive(Debug, Args)]
#[command(
    after_help = "EXAMPLES:\n  usher up                                   # shared store, shop on :8080, dashboard on :8081/_usher/\n  usher up --architecture sticky-cookie-memory\n  usher up --store redis --shops 4           # a private redis-server you can restart\n  usher up --listen 127.0.0.1:0 --admin-listen 127.0.0.1:0   # free ports (see the ready line)"
)]
pub struct UpCommand {
    /// rr-memory | sticky-cookie-memory | sticky-ip-memory | shared | jwt | hybrid.
    #[arg(long, default_value = "shared", value_name = "NAME")]
    architecture: Architecture,
    /// Where the load balancer (the shop) listens.
    #[arg(long, default_value = "127.0.0.1:8080", value_name = "ADDR")]
    listen: SocketAddr,
    /// Where the admin API and the dashboard (/_usher/) listen; loopback only.
    #[arg(long, default_value = "127.0.0.1:8081", value_name = "ADDR")]
    admin_listen: SocketAddr,
    /// Shops at the start (shop-0 …).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u16).range(1..=8))]
    shops: u16,
    /// Session store: sqlite (embedded, default), redis (a private redis-server usher up starts
    /// and can restart), or a redis://, redis+cluster:// or postgres:// URL.
    #[arg(long, default_value = "sqlite", value_parser = StoreChoice::parse, value_name = "STORE")]
    store: StoreChoice,
    /// Keep logs and databases here (default: a temporary directory, deleted on exit).
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
}

/// Runs `usher up` until SIGINT or SIGTERM.
pub fn run(cmd: UpCommand) -> anyhow::Result<()> {
    // The dashboard has buttons that kill processes and no login: keep it off the network.
    anyhow::ensure!(
        cmd.admin_listen.ip().is_loopback(),
        "--admin-listen {}: the dashboard can kill processes and has no login, so it only \
         listens on a loopback address",
        cmd.admin_listen
    );
    let bin = std::env::current_exe().context("cannot find the usher binary")?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async move {
        // Signals first, so a Ctrl-C during start-up is not fatal; bind before starting
        // anything, so a taken port fails at once.
        let mut shutdown = Box::pin(shutdown_signal()?);
        let listener = tokio::net::TcpListener::bind(cmd.listen)
            .await
            .with_context(|| format!("cannot listen on {}", cmd.listen))?;
        let admin = tokio::net::TcpListener::bind(cmd.admin_listen)
            .await
            .with_context(|| format!("cannot listen on --admin-listen {}", cmd.admin_listen))?;
        let (listen, admin_addr) = (listener.local_addr()?, admin.local_addr()?);
        let opts = LiveOptions {
            bin,
            arch: cmd.architecture,
            shops: usize::from(cmd.shops),
            store: cmd.store,
            dir: cmd.dir,
            listen,
            shop_extra: Vec::new(),
        };
        let live = tokio::select! {
            live = Live::start(opts) => live?,
            () = &mut shutdown => anyhow::bail!("interrupted while starting; everything started was stopped"),
        };
        let ticker = tokio::spawn(Arc::clone(&live).run_ticker());
        let (admin_tx, admin_rx) = tokio::sync::oneshot::channel::<()>();
        let admin_task = tokio::spawn(api::serve(admin, Arc::clone(&live), None, async move {
            let _ = admin_rx.await;
        }));
        tracing::info!(
            listen = %listen,
            admin = %admin_addr,
            dashboard = %format!("http://{admin_addr}{}/", api::PREFIX),
            architecture = %cmd.architecture,
            dir = %live.dir().display(),
            "usher up ready"
        );
        eprintln!(
            "usher up: shop http://{listen}/  dashboard http://{admin_addr}{}/  (Ctrl-C stops everything)",
            api::PREFIX
        );
        usher_proxy::serve(listener, Arc::clone(live.lb()), shutdown).await;
        let _ = admin_tx.send(());
        ticker.abort();
        live.stop().await;
        match admin_task.await {
            Ok(Err(e)) => tracing::warn!(error = %e, "admin listener stopped with an error"),
            Err(e) => tracing::warn!(error = %e, "admin listener task failed"),
            Ok(Ok(())) => {}
        }
        tracing::info!("usher up stopped");
        anyhow::Ok(())
    })
}

/// Resolves on the first SIGINT or SIGTERM (handlers installed now).
fn shutdown_signal() -> anyhow::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
    Ok(async move {
        tokio::select! {
            _ = int.recv() => tracing::info!("SIGINT: stopping everything"),
            _ = term.recv() => tracing::info!("SIGTERM: stopping everything"),
        }
    })
}
