//! The shared bench setup: scratch and raw directories, three backends, the sealing key, the
//! wrk script, and one measured run (wrk plus the proxy's CPU and memory).

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, bail};
use serde::Serialize;

use crate::configs::Mode;
use crate::procs::Proc;
use crate::stats::WrkRun;
use crate::systems::{Backends, Env, Running, System};
use crate::wrk::Wrk;
use crate::{checks, machine, procstat};

/// Cookies per sticky run (K different clients).
pub const K_COOKIES: usize = 30;

/// The shared state of one benchmark invocation.
#[derive(Debug)]
pub struct Bench {
    /// Paths and limits for starting systems.
    pub env: Env,
    /// The wrk runner.
    pub wrk: Wrk,
    /// The async runtime the checks and the driver use.
    pub rt: tokio::runtime::Runtime,
    /// Clock ticks per second.
    pub tck: u64,
    /// The `usher-bench` binary itself (for backends, the idle holder, the driver).
    pub me: PathBuf,
}

/// One measured run.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Measured {
    /// What wrk reported.
    pub wrk: WrkRun,
    /// Proxy tree CPU over the run, % of one core.
    pub cpu_pct: Option<f64>,
    /// Proxy tree VmRSS at the end of the run, KiB.
    pub rss_kib: Option<u64>,
    /// Proxy tree VmHWM at the end of the run, KiB.
    pub hwm_kib: Option<u64>,
}

impl Bench {
    /// Creates the scratch dir, the raw dir `raw`, the key file and the wrk script.
    pub fn new(usher: &Path, raw: &Path) -> anyhow::Result<Self> {
        if !usher.exists() {
            bail!(
                "no usher binary at {} (build it: cargo build --release -p usher)",
                usher.display()
            );
        }
        for tool in ["wrk", "taskset"] {
            if procs_missing(tool) {
                bail!("`{tool}` is not installed (scripts/bench-compare.sh installs it)");
            }
        }
        let tmp = std::env::temp_dir().join(format!("usher-bench-{}", std::process::id()));
        std::fs::create_dir_all(&tmp)?;
        std::fs::create_dir_all(raw)?;
        // Absolute: nginx resolves a relative -c path against its -p prefix.
        let raw = &std::path::absolute(raw)?;
        let key_file = tmp.join("keys.txt");
        let st = std::process::Command::new(usher)
            .args(["lb", "keygen", "--out"])
            .arg(&key_file)
            .stderr(std::process::Stdio::null())
            .status()
            .context("cannot run usher lb keygen")?;
        if !st.success() {
            bail!("usher lb keygen failed");
        }
        let fds = machine::fd_limit();
        let env = Env {
            usher: usher.to_path_buf(),
            tmp: tmp.clone(),
            raw: raw.to_path_buf(),
            key_file,
            maxconn: (fds.saturating_sub(200) / 2).clamp(256, 20_000),
            forwarding: crate::configs::Forwarding::default(),
        };
        Ok(Self {
            wrk: Wrk::new(&tmp)?,
            env,
            rt: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?,
            tck: procstat::clk_tck(),
            me: std::env::current_exe()?,
        })
    }

    /// Starts backends: `procs` processes of `ports` ports each (names b0, b1, … or bI-J),
    /// one thread each, floating on cpus 0,1.
    pub fn backends(
        &self,
        procs: usize,
        ports: usize,
        set_cookie: Option<&str>,
    ) -> anyhow::Result<(Vec<Proc>, Backends)> {
        let mut ps = Vec::new();
        let mut addrs = Vec::new();
        for i in 0..procs {
            let mut args = vec![
                "backend".to_owned(),
                "--listen".to_owned(),
                "127.0.0.1:0".to_owned(),
                "--name".to_owned(),
                format!("b{i}"),
                "--ports".to_owned(),
                ports.to_string(),
            ];
            if let Some(c) = set_cookie {
                args.extend(["--set-cookie".to_owned(), c.to_owned()]);
            }
            let log = self.env.tmp.join(format!("backend-b{i}.log"));
            let (p, a) = Proc::spawn_reading(
                &format!("backend b{i}"),
                "0,1",
                &self.me,
                &args,
                &log,
                "listening",
                ports,
            )?;
            ps.push(p);
            for (n, a) in a {
                addrs.push((n, a.parse()?));
            }
        }
        Ok((ps, addrs))
    }

    /// Checks a system before measuring and returns the cookie file wrk should send (none in
    /// rr mode) with a description of the check.
    pub fn prepare(
        &self,
        r: &Running,
        mode: Mode,
        backends: usize,
        tag: &str,
    ) -> anyhow::Result<(Option<PathBuf>, String)> {
        let name = r.system.as_str();
        let want = if r.system == System::Direct {
            1
        } else {
            backends
        };
        let fail = || format!("{name} ({tag}) failed its check before measuring");
        if mode == Mode::Rr {
            let d = self
                .rt
                .block_on(checks::check_rr(r.addr, want))
                .with_context(fail)?;
            return Ok((None, d));
        }
        let (cookies, desc) = match r.system {
            System::Direct => {
                let c = checks::random_sids(K_COOKIES, seed());
                let d = self
                    .rt
                    .block_on(checks::check_sticky(r.addr, &c, 1))
                    .with_context(fail)?;
                (c, d)
            }
            System::Usher | System::Haproxy => {
                let cname = if r.system == System::Usher {
                    "usher"
                } else {
                    "SRV"
                };
                let c = self
                    .rt
                    .block_on(checks::learn_cookies(r.addr, cname, K_COOKIES))
                    .with_context(fail)?;
                let d = self
                    .rt
                    .block_on(checks::check_sticky(r.addr, &c, want))
                    .with_context(fail)?;
                (c, d)
            }
            System::Nginx => {
                // Random sids: retry a few seeds until they cover every backend.
                let mut last = None;
                let mut found = None;
                for attempt in 0..10u64 {
                    let c = checks::random_sids(K_COOKIES, seed() ^ attempt);
                    match self.rt.block_on(checks::check_sticky(r.addr, &c, want)) {
                        Ok(d) => {
                            found = Some((c, d));
                            break;
                        }
                        Err(e) => last = Some(e),
                    }
                }
                match (found, last) {
                    (Some(f), _) => f,
                    (None, Some(e)) => return Err(e).with_context(fail),
                    (None, None) => bail!(fail()),
                }
            }
        };
        let file = self.env.raw.join(format!("cookies-{name}-{tag}.txt"));
        std::fs::write(&file, cookies.join("\n") + "\n")?;
        Ok((Some(file), desc))
    }

    /// One wrk run against `r`, with the proxy's CPU over the run and memory at its end.
    pub fn measure(
        &self,
        r: &Running,
        conns: usize,
        duration: Duration,
        cookies: Option<&Path>,
        out: &Path,
    ) -> anyhow::Result<Measured> {
        let pid = r.proc.as_ref().map(Proc::pid);
        let t0 = pid.map(procstat::tree_ticks);
        let wrk = self.wrk.run(r.addr, conns, duration, cookies, out)?;
        let t1 = pid.map(procstat::tree_ticks);
        let mem = pid.map(procstat::tree_mem);
        let cpu_pct = match (t0, t1) {
            (Some(a), Some(b)) if wrk.duration_us > 0 => Some(
                (b.saturating_sub(a)) as f64 / self.tck as f64 / (wrk.duration_us as f64 / 1e6)
                    * 100.0,
            ),
            _ => None,
        };
        Ok(Measured {
            wrk,
            cpu_pct,
            rss_kib: mem.map(|m| m.rss_kib),
            hwm_kib: mem.map(|m| m.hwm_kib),
        })
    }
}

impl Drop for Bench {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.env.tmp);
    }
}

fn procs_missing(tool: &str) -> bool {
    std::process::Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .stdout(std::process::Stdio::null())
        .status()
        .map_or(true, |s| !s.success())
}

fn seed() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.as_nanos() as u64)
}
