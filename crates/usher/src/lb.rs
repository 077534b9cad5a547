//! `usher lb`: run the load balancer, or make affinity keys (`usher lb keygen`).

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, Subcommand};
use ipnet::IpNet;
use usher_balancer::Policy;
use usher_proxy::{
    AffinityMode, BackendAddr, BackendSection, FailurePolicy, FileConfig, LbConfig, SameSite,
    TlsSection,
};

/// `usher lb`.
#[derive(Debug, Args)]
#[command(
    args_conflicts_with_subcommands = true,
    after_help = "EXAMPLES:\n  usher lb --listen 127.0.0.1:8080 --backend shop-0=127.0.0.1:9001 \\\n           --backend shop-1=127.0.0.1:9002 --policy least-conn --affinity cookie --on-failure repin\n  usher lb --config examples/lb.toml --key-file keys.txt\n  usher lb keygen --out keys.txt        # create, or append a new sealing key to rotate\n\nFlags override the config file; --backend flags replace its backends.\nDurations are written like 500ms, 30s, 2h."
)]
pub struct LbCommand {
    #[command(subcommand)]
    sub: Option<LbSub>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Debug, Subcommand)]
enum LbSub {
    /// Make a new affinity cookie key. With --out, appends it to the file (creating it): the
    /// newest key seals, older keys keep opening cookies they sealed (rotation).
    Keygen {
        /// Key file to append to; without it the key line is printed.
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

#[derive(Debug, Clone, Args)]
struct RunArgs {
    /// TOML config file (see examples/lb.toml).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Address to listen on [default: 127.0.0.1:8080].
    #[arg(long, value_name = "ADDR")]
    listen: Option<SocketAddr>,
    /// A backend, ID=HOST:PORT or ID=HOST:PORT,weight=N (repeat for each).
    #[arg(long = "backend", value_name = "ID=ADDR[,weight=N]", value_parser = parse_backend)]
    backends: Vec<BackendSection>,
    /// Worker threads serving clients [default: one per available CPU].
    #[arg(long, value_name = "N")]
    threads: Option<usize>,
    /// Selection policy: round-robin | least-conn | p2c | maglev [default: round-robin].
    #[arg(long)]
    policy: Option<Policy>,
    /// Bounded-load factor c for consistent hashing: no backend above c x mean in-flight [default: 1.25].
    #[arg(long, value_name = "C")]
    balance_factor: Option<f64>,
    /// Affinity: none | cookie | source-ip | header:NAME | query:NAME | app-cookie:NAME [default: none].
    #[arg(long)]
    affinity: Option<AffinityMode>,
    /// When a pinned backend is unavailable: repin | strict [default: repin].
    #[arg(long, value_name = "POLICY")]
    on_failure: Option<FailurePolicy>,
    /// Affinity cookie key file (from `usher lb keygen`); without one a random key is used.
    #[arg(long, value_name = "FILE")]
    key_file: Option<PathBuf>,
    /// Trust X-Forwarded-For from this CIDR (repeat for each).
    #[arg(long = "trusted-proxy", value_name = "CIDR")]
    trusted_proxies: Vec<IpNet>,
    /// Affinity cookie name [default: usher].
    #[arg(long)]
    cookie_name: Option<String>,
    /// Affinity cookie SameSite: lax | strict | none [default: lax].
    #[arg(long)]
    cookie_same_site: Option<SameSite>,
    /// Mark the affinity cookie Secure (always on TLS listeners).
    #[arg(long)]
    cookie_secure: bool,
    /// Absolute lifetime of a cookie binding, also its Max-Age [default: 24h].
    #[arg(long, value_parser = humantime::parse_duration, value_name = "DURATION")]
    cookie_max_age: Option<Duration>,
    /// A cookie binding unused this long expires (sliding) [default: 30m].
    #[arg(long, value_parser = humantime::parse_duration, value_name = "DURATION")]
    cookie_idle_timeout: Option<Duration>,
    /// A client must send its whole request head within this [default: 10s].
    #[arg(long, value_parser = humantime::parse_duration, value_name = "DURATION")]
    header_read_timeout: Option<Duration>,
    /// Largest request head; larger gets 431 [default: 16384].
    #[arg(long, value_name = "BYTES")]
    max_header_bytes: Option<usize>,
    /// Backend connect timeout [default: 2s].
    #[arg(long, value_parser = humantime::parse_duration, value_name = "DURATION")]
    connect_timeout: Option<Duration>,
    /// Time for a backend to send its response head [default: 30s].
    #[arg(long, value_parser = humantime::parse_duration, value_name = "DURATION")]
    response_timeout: Option<Duration>,
    /// Idle keep-alive client connections are closed after this [default: 60s].
    #[arg(long, value_parser = humantime::parse_duration, value_name = "DURATION")]
    idle_timeout: Option<Duration>,
    /// On SIGTERM/SIGINT, wait this long for in-flight requests [default: 30s].
    #[arg(long, value_parser = humantime::parse_duration, value_name = "DURATION")]
    shutdown_grace: Option<Duration>,
    /// Terminate TLS with this PEM certificate chain (needs --tls-key).
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1) for --tls-cert.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Active health checks: GET this path on every backend (e.g. /healthz) [default: off].
    #[arg(long, value_name = "PATH")]
    health_path: Option<String>,
    /// Time between health checks [default: 2s].
    #[arg(long, value_parser = humantime::parse_duration, value_name = "DURATION")]
    health_interval: Option<Duration>,
    /// Slow-start window for added or recovered backends; 0s turns it off [default: 30s].
    #[arg(long, value_parser = humantime::parse_duration, value_name = "DURATION")]
    slow_start: Option<Duration>,
    /// Log one line per request (method, path, status, backend, affinity outcome, durations) on
    /// stderr, target `usher::access`; JSON with `--log-format json`.
    #[arg(long)]
    access_log: bool,
    /// Admin API address, or "off" [default: 127.0.0.1:8081]. A non-loopback address needs a
    /// token (--admin-token-file or the USHER_ADMIN_TOKEN variable).
    #[arg(long, value_name = "ADDR|off", env = "USHER_ADMIN_LISTEN")]
    admin_listen: Option<String>,
    /// File holding the admin API bearer token.
    #[arg(long, value_name = "FILE")]
    admin_token_file: Option<PathBuf>,
}

fn parse_backend(s: &str) -> Result<BackendSection, String> {
    let (id, rest) = s
        .split_once('=')
        .ok_or("expected ID=HOST:PORT[,weight=N]")?;
    let (addr, weight) = match rest.split_once(',') {
        None => (rest, None),
        Some((addr, w)) => {
            let n = w
                .strip_prefix("weight=")
                .and_then(|n| n.parse::<u32>().ok())
                .ok_or("expected ,weight=N after the address")?;
            (addr, Some(n))
        }
    };
    Ok(BackendSection {
        id: id.parse().map_err(|e| format!("{e}"))?,
        addr: addr.parse::<BackendAddr>().map_err(|e| format!("{e}"))?,
        weight,
    })
}

/// Runs `usher lb`.
pub fn run(cmd: LbCommand) -> anyhow::Result<()> {
    match cmd.sub {
        Some(LbSub::Keygen { out }) => keygen(out.as_deref()),
        None => serve(cmd.run),
    }
}

fn keygen(out: Option<&Path>) -> anyhow::Result<()> {
    let key = usher_proxy::generate_key(rand::random());
    let line = key.to_line();
    let Some(path) = out else {
        println!("{line}");
        return Ok(());
    };
    let mut opts = std::fs::OpenOptions::new();
    opts.create(true).append(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    let mut file = opts
        .open(path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    writeln!(file, "{line}").with_context(|| format!("cannot write {}", path.display()))?;
    eprintln!(
        "usher: appended sealing key {} to {}",
        key.id(),
        path.display()
    );
    Ok(())
}

fn config_from(args: RunArgs) -> anyhow::Result<LbConfig> {
    let (mut raw, text) = match &args.config {
        Some(path) => {
            let (raw, text) = FileConfig::read(path)?;
            (raw, Some(text))
        }
        None => (FileConfig::default(), None),
    };
    set(&mut raw.listen, args.listen);
    set(&mut raw.policy, args.policy);
    set(&mut raw.threads, args.threads);
    set(&mut raw.balance_factor, args.balance_factor);
    set(&mut raw.affinity, args.affinity);
    set(&mut raw.on_failure, args.on_failure);
    set(&mut raw.key_file, args.key_file);
    if !args.trusted_proxies.is_empty() {
        raw.trusted_proxies = Some(args.trusted_proxies);
    }
    set(&mut raw.cookie.name, args.cookie_name);
    set(&mut raw.cookie.same_site, args.cookie_same_site);
    if args.cookie_secure {
        raw.cookie.secure = Some(true);
    }
    set(&mut raw.cookie.max_age, args.cookie_max_age);
    set(&mut raw.cookie.idle_timeout, args.cookie_idle_timeout);
    let l = &mut raw.limits;
    set(&mut l.header_read_timeout, args.header_read_timeout);
    set(&mut l.max_header_bytes, args.max_header_bytes);
    set(&mut l.connect_timeout, args.connect_timeout);
    set(&mut l.response_timeout, args.response_timeout);
    set(&mut l.idle_timeout, args.idle_timeout);
    set(&mut l.shutdown_grace, args.shutdown_grace);
    // clap makes the two flags go together; they replace a file's [tls] section.
    set(&mut raw.health.path, args.health_path);
    set(&mut raw.health.interval, args.health_interval);
    set(&mut raw.slow_start, args.slow_start);
    if args.access_log {
        raw.access_log = Some(true);
    }
    set(&mut raw.admin.listen, args.admin_listen);
    set(&mut raw.admin.token_file, args.admin_token_file);
    if let (Some(cert), Some(key)) = (args.tls_cert, args.tls_key) {
        raw.tls = Some(TlsSection { cert, key });
    }
    let text = if args.backends.is_empty() {
        text
    } else {
        // Flag backends have no line in any file.
        raw.backends = args
            .backends
            .into_iter()
            .map(|b| toml::Spanned::new(0..0, b))
            .collect();
        None
    };
    let config = LbConfig::from_raw(raw, text.as_deref())?;
    Ok(config)
}

fn set<T>(slot: &mut Option<T>, flag: Option<T>) {
    if flag.is_some() {
        *slot = flag;
    }
}

fn serve(args: RunArgs) -> anyhow::Result<()> {
    let args_for_reload = args.clone();
    let mut config = config_from(args)?;
    let cookie_mode = config.affinity == AffinityMode::Cookie;
    let keys = usher_proxy::load_keys(config.key_file.as_deref(), cookie_mode)?;
    // Thread-per-core: this thread's runtime is worker 0; `--threads N` adds N - 1 more
    // (see usher_proxy::Workers). Default: one per CPU this process may run on.
    let threads = config.threads.unwrap_or_else(|| {
        std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
    });
    config.threads = Some(threads);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("cannot listen on {}", config.listen))?;
        let local = listener.local_addr()?;
        let shutdown = shutdown_signal()?;
        let (backends, policy, affinity) = (
            config.backends.len(),
            config.policy,
            config.affinity.clone(),
        );
        let admin = bind_admin(&config.admin).await?;
        // Built before "ready" is logged: a bad TLS certificate or key ends the process here.
        let lb = usher_proxy::Lb::new(config, keys)?;
        let source = args_for_reload.clone();
        lb.set_reloader(Box::new(move || {
            config_from(source.clone()).map_err(|e| format!("{e:#}"))
        }));
        let hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
            .context("cannot handle SIGHUP")?;
        tokio::spawn(reload_on_sighup(std::sync::Arc::clone(&lb), hup));
        let (admin_addr, admin_stop) = match admin {
            Some((listener, token)) => {
                let addr = listener.local_addr()?;
                let (tx, rx) = tokio::sync::oneshot::channel::<()>();
                let admin_lb = std::sync::Arc::clone(&lb);
                tokio::spawn(async move {
                    let stop = async move {
                        let _ = rx.await;
                    };
                    if let Err(e) = usher_proxy::serve_admin(listener, admin_lb, token, stop).await
                    {
                        tracing::error!(error = %e, "admin API stopped");
                    }
                });
                (Some(addr), Some(tx))
            }
            None => (None, None),
        };
        tracing::info!(
            listen = %local,
            admin = %admin_addr.map_or_else(|| "off".to_owned(), |a| a.to_string()),
            backends,
            policy = policy.as_str(),
            affinity = %affinity,
            tls = lb.is_tls(),
            "usher lb ready"
        );
        let workers =
            usher_proxy::Workers::start(threads).context("cannot start worker threads")?;
        usher_proxy::serve_on(listener, lb, shutdown, workers.handles()).await;
        workers.stop();
        if let Some(stop) = admin_stop {
            let _ = stop.send(());
        }
        anyhow::Ok(())
    })
}

/// Binds the admin listener (if enabled) and reads its token: from `USHER_ADMIN_TOKEN`, else the
/// token file. Refuses a non-loopback address without a token.
async fn bind_admin(
    admin: &usher_proxy::AdminConfig,
) -> anyhow::Result<Option<(tokio::net::TcpListener, Option<String>)>> {
    let Some(addr) = admin.listen else {
        return Ok(None);
    };
    let token = match (std::env::var("USHER_ADMIN_TOKEN").ok(), &admin.token_file) {
        (Some(t), _) if !t.trim().is_empty() => Some(t.trim().to_owned()),
        (_, Some(path)) => {
            let t = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read admin.token_file {}", path.display()))?;
            let t = t.trim().to_owned();
            anyhow::ensure!(
                !t.is_empty(),
                "admin.token_file {} is empty",
                path.display()
            );
            Some(t)
        }
        _ => None,
    };
    usher_proxy::check_admin_bind(addr, token.as_deref())?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on admin.listen {addr}"))?;
    Ok(Some((listener, token)))
}

/// Re-reads the configuration (file and the same flags) on every SIGHUP; a bad one is reported
/// and the running one kept.
async fn reload_on_sighup(
    lb: std::sync::Arc<usher_proxy::Lb>,
    mut hup: tokio::signal::unix::Signal,
) {
    while hup.recv().await.is_some() {
        let lb = std::sync::Arc::clone(&lb);
        match tokio::task::spawn_blocking(move || lb.reload_from_source()).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                tracing::error!(error = %e, "SIGHUP reload failed; the previous configuration stays in force");
            }
            Err(e) => tracing::error!(error = %e, "SIGHUP reload task failed"),
        }
    }
}

/// Installs SIGTERM/SIGINT handlers now (so a signal that arrives before the server runs is not
/// fatal) and returns a future that resolves on the first of them.
fn shutdown_signal() -> anyhow::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
    Ok(async move {
        tokio::select! {
            _ = int.recv() => tracing::info!("SIGINT: shutting down"),
            _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
        }
    })
}
