//! The system under test for one architecture: one `usher lb` and its `usher shop`s, with the
//! operations the fault timeline performs (kill, scale out, drain and remove).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, bail};
use http::Method;
use serde_json::json;

use crate::arch::Architecture;
use crate::client::{Client, Jar};
use crate::procs::Proc;

/// How long a child may take to say it is ready.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// What shops and the load balancer are started with.
#[derive(Debug, Clone)]
pub struct FleetSpec {
    /// The `usher` binary.
    pub bin: PathBuf,
    /// Where logs and the SQLite files go.
    pub dir: PathBuf,
    /// The architecture.
    pub arch: Architecture,
    /// `--sessions` for the shared store.
    pub shared_store: String,
    /// `--db` for users and orders.
    pub db: String,
    /// Extra `usher shop` flags (e.g. a cheap password hash for seeding thousands of users).
    pub shop_extra: Vec<String>,
}

/// A running load balancer and its shops.
#[derive(Debug)]
pub struct Fleet {
    spec: FleetSpec,
    lb: Proc,
    /// The load balancer's listener.
    pub lb_addr: SocketAddr,
    admin: Client,
    shops: BTreeMap<usize, (Proc, SocketAddr)>,
}

impl Fleet {
    /// Starts `shops` shops (`shop-0` …) and a load balancer in front of them.
    pub async fn start(spec: FleetSpec, shops: usize) -> anyhow::Result<Self> {
        let mut started = BTreeMap::new();
        for n in 0..shops {
            let (p, addr) = start_shop(&spec, n).await?;
            started.insert(n, (p, addr));
        }
        let mut args: Vec<String> = [
            "lb",
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        for (n, (_, addr)) in &started {
            args.extend(["--backend".to_owned(), format!("shop-{n}={addr}")]);
        }
        args.extend(spec.arch.lb_args());
        // Users come through one loopback address; their own addresses travel in
        // X-Forwarded-For, which the LB believes from loopback only.
        args.extend(
            [
                "--trusted-proxy",
                "127.0.0.1/32",
                "--health-path",
                "/healthz",
                "--health-interval",
                "500ms",
                "--slow-start",
                "2s",
                "--shutdown-grace",
                "2s",
            ]
            .iter()
            .map(|s| (*s).to_owned()),
        );
        let lb = Proc::start(
            &spec.bin,
            &args,
            "usher lb ready",
            spec.dir.join("lb.log"),
            READY_TIMEOUT,
        )
        .await?;
        let lb_addr = lb.addr("listen")?;
        let admin = Client::new(lb.addr("admin")?, Duration::from_secs(10));
        Ok(Self {
            spec,
            lb,
            lb_addr,
            admin,
            shops: started,
        })
    }

    /// Ordinals of the running shops.
    pub fn running(&self) -> Vec<usize> {
        self.shops.keys().copied().collect()
    }

    /// `kill -9` shop `n`; the load balancer is not told (it must notice).
    pub async fn kill(&mut self, n: usize) {
        if let Some((mut p, _)) = self.shops.remove(&n) {
            p.kill().await;
        }
    }

    /// Starts shop `n` and adds it to the load balancer through the admin API.
    pub async fn add(&mut self, n: usize) -> anyhow::Result<()> {
        let (p, addr) = start_shop(&self.spec, n).await?;
        self.shops.insert(n, (p, addr));
        let body = json!({ "addr": addr.to_string() });
        let r = self
            .admin
            .send(
                &mut Jar::default(),
                Method::PUT,
                &format!("/backends/shop-{n}"),
                &[],
                Some(&body),
            )
            .await;
        if !r.ok() {
            bail!(
                "admin API refused to add shop-{n}: {:?} {}",
                r.status,
                String::from_utf8_lossy(&r.body)
            );
        }
        Ok(())
    }

    /// Drains shop `n` (its clients move on within `deadline`), removes it, stops it.
    pub async fn drain_and_remove(&mut self, n: usize, deadline: Duration) -> anyhow::Result<()> {
        let body = json!({ "deadline": format!("{}ms", deadline.as_millis()) });
        let path = format!("/backends/shop-{n}/drain");
        let r = self
            .admin
            .send(&mut Jar::default(), Method::POST, &path, &[], Some(&body))
            .await;
        if !r.ok() {
            bail!("admin API refused to drain shop-{n}: {:?}", r.status);
        }
        tokio::time::sleep(deadline).await;
        let path = format!("/backends/shop-{n}");
        let r = self
            .admin
            .send(&mut Jar::default(), Method::DELETE, &path, &[], None)
            .await;
        // 404: the load balancer already let go of it once it was quiet (or the deadline passed).
        if !r.ok() && r.status != Some(http::StatusCode::NOT_FOUND) {
            bail!("admin API refused to remove shop-{n}: {:?}", r.status);
        }
        if let Some((mut p, _)) = self.shops.remove(&n) {
            p.stop(Duration::from_secs(2)).await;
        }
        Ok(())
    }

    /// Stops everything (SIGTERM, then SIGKILL after a grace period).
    pub async fn stop(mut self) {
        self.lb.stop(Duration::from_secs(3)).await;
        for (_, (mut p, _)) in std::mem::take(&mut self.shops) {
            p.stop(Duration::from_secs(3)).await;
        }
    }
}

/// Starts shop `n` (`shop-N`) as the spec says; returns it and the address it bound.
pub(crate) async fn start_shop(spec: &FleetSpec, n: usize) -> anyhow::Result<(Proc, SocketAddr)> {
    let mut args: Vec<String> = vec![
        "shop".into(),
        "--listen".into(),
        "127.0.0.1:0".into(),
        "--id".into(),
        format!("shop-{n}"),
        "--db".into(),
        spec.db.clone(),
    ];
    args.extend(spec.arch.shop_args(&spec.shared_store, &spec.dir));
    args.extend(spec.shop_extra.iter().cloned());
    let log = log_path(&spec.dir, n);
    let p = Proc::start(&spec.bin, &args, "usher shop ready", log, READY_TIMEOUT)
        .await
        .with_context(|| format!("starting shop-{n}"))?;
    let addr = p.addr("listen")?;
    Ok((p, addr))
}

fn log_path(dir: &Path, n: usize) -> PathBuf {
    // A shop started again under the same ordinal appends a suffix rather than losing the log.
    let mut path = dir.join(format!("shop-{n}.log"));
    let mut k = 1;
    while path.exists() {
        path = dir.join(format!("shop-{n}.{k}.log"));
        k += 1;
    }
    path
}
