//! The systems under test: a direct connection to one backend, `usher lb`, HAProxy and NGINX,
//! each started with the same CPU pinning (proxy on cpu 1, or cpus 0,1 with 2 threads).

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context as _;

use crate::configs::{self, Mode};
use crate::procs::{self, Proc};

/// Backend names and addresses.
pub type Backends = Vec<(String, SocketAddr)>;

/// One of the systems measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum System {
    /// wrk straight at one backend.
    Direct,
    /// `usher lb`.
    Usher,
    /// HAProxy.
    Haproxy,
    /// NGINX.
    Nginx,
}

impl System {
    /// Every system, in the interleaving order.
    pub const ALL: [System; 4] = [
        System::Direct,
        System::Usher,
        System::Haproxy,
        System::Nginx,
    ];

    /// Name in tables and file names.
    pub fn as_str(self) -> &'static str {
        match self {
            System::Direct => "direct",
            System::Usher => "usher",
            System::Haproxy => "haproxy",
            System::Nginx => "nginx",
        }
    }

    /// Parses a name from `as_str`.
    pub fn parse(s: &str) -> Option<System> {
        System::ALL.into_iter().find(|x| x.as_str() == s)
    }
}

/// The CPUs a proxy with `threads` threads is pinned to.
pub fn proxy_cpus(threads: usize) -> &'static str {
    if threads <= 1 { "1" } else { "0,1" }
}

/// Paths and limits shared by every start.
#[derive(Debug, Clone)]
pub struct Env {
    /// The `usher` binary.
    pub usher: PathBuf,
    /// Scratch directory (logs, nginx temp files).
    pub tmp: PathBuf,
    /// Where the configs used are copied (the raw output directory).
    pub raw: PathBuf,
    /// Sealing key file for usher's cookie affinity.
    pub key_file: PathBuf,
    /// HAProxy `maxconn` that fits the fd limit.
    pub maxconn: usize,
    /// Which headers HAProxy and NGINX add.
    pub forwarding: configs::Forwarding,
}

/// Extra knobs for `usher lb` (the scaling curves).
#[derive(Debug, Clone)]
pub struct UsherOpts {
    /// `--policy`.
    pub policy: String,
    /// `--affinity`; `None` picks `none` / `cookie` from the mode.
    pub affinity: Option<String>,
    /// `--config FILE` (backends then come from the file too).
    pub config: Option<PathBuf>,
}

impl Default for UsherOpts {
    fn default() -> Self {
        Self {
            policy: "round-robin".to_owned(),
            affinity: None,
            config: None,
        }
    }
}

/// A started system: where to send traffic and the proxy process (none for `Direct`).
#[derive(Debug)]
pub struct Running {
    /// Which system.
    pub system: System,
    /// Address wrk targets.
    pub addr: SocketAddr,
    /// The proxy process tree.
    pub proc: Option<Proc>,
}

/// Starts `system` in front of `backends` and waits until it accepts connections.
pub fn start(
    env: &Env,
    system: System,
    backends: &[(String, SocketAddr)],
    threads: usize,
    mode: Mode,
    usher: &UsherOpts,
    tag: &str,
) -> anyhow::Result<Running> {
    let first = backends.first().context("no backends")?.1;
    if system == System::Direct {
        return Ok(Running {
            system,
            addr: first,
            proc: None,
        });
    }
    let port = procs::free_port()?;
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let name = format!("{}-{tag}", system.as_str());
    let log = env.raw.join(format!("{name}.log"));
    let cpus = proxy_cpus(threads);
    let mut p = match system {
        System::Usher => {
            let mut args = vec![
                "lb".to_owned(),
                "--threads".to_owned(),
                threads.to_string(),
                "--admin-listen".to_owned(),
                "off".to_owned(),
                "--policy".to_owned(),
                usher.policy.clone(),
                "--affinity".to_owned(),
                usher.affinity.clone().unwrap_or_else(|| {
                    match mode {
                        Mode::Rr => "none",
                        Mode::Sticky => "cookie",
                    }
                    .to_owned()
                }),
                "--key-file".to_owned(),
                env.key_file.display().to_string(),
                "--listen".to_owned(),
                addr.to_string(),
                "--idle-timeout".to_owned(),
                "10m".to_owned(),
            ];
            if let Some(c) = &usher.config {
                args.extend(["--config".to_owned(), c.display().to_string()]);
            } else {
                for (n, a) in backends {
                    args.extend(["--backend".to_owned(), format!("{n}={a}")]);
                }
            }
            std::fs::write(env.raw.join(format!("{name}.args")), args.join(" "))?;
            Proc::spawn(&name, cpus, &env.usher, &args, &log)?
        }
        System::Haproxy => {
            let cfg = env.raw.join(format!("{name}.cfg"));
            std::fs::write(
                &cfg,
                configs::haproxy(addr, backends, threads, mode, env.maxconn, env.forwarding),
            )?;
            let args = vec!["-f".to_owned(), cfg.display().to_string(), "-db".to_owned()];
            Proc::spawn(&name, cpus, &PathBuf::from("haproxy"), &args, &log)?
        }
        System::Nginx => {
            let dir = env.tmp.join(&name);
            std::fs::create_dir_all(&dir)?;
            let cfg = env.raw.join(format!("{name}.conf"));
            std::fs::write(
                &cfg,
                configs::nginx(addr, backends, threads, mode, &dir, env.forwarding),
            )?;
            let args = vec![
                "-c".to_owned(),
                cfg.display().to_string(),
                "-p".to_owned(),
                dir.display().to_string(),
                "-e".to_owned(),
                "stderr".to_owned(),
            ];
            Proc::spawn(&name, cpus, &PathBuf::from("nginx"), &args, &log)?
        }
        System::Direct => unreachable!("handled above"),
    };
    procs::wait_port(&mut p, addr).with_context(|| format!("see {}", log.display()))?;
    Ok(Running {
        system,
        addr,
        proc: Some(p),
    })
}
