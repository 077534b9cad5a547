//! Child processes of the runner (backends, proxies, wrk, the idle holder): started under
//! `taskset`, output to a log file, stopped with SIGTERM then SIGKILL on the whole tree.

use std::fs::File;
use std::io::{BufRead as _, BufReader};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

use crate::procstat;

/// A running child; stopped (tree and all) when dropped.
#[derive(Debug)]
pub struct Proc {
    child: Child,
    name: String,
}

impl Proc {
    /// Starts `program args` pinned to `cpus` (e.g. "1" or "0,1"), stdout and stderr to `log`.
    pub fn spawn(
        name: &str,
        cpus: &str,
        program: &Path,
        args: &[String],
        log: &Path,
    ) -> anyhow::Result<Self> {
        let out = File::create(log).with_context(|| format!("cannot create {}", log.display()))?;
        let child = Command::new("taskset")
            .arg("-c")
            .arg(cpus)
            .arg(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .with_context(|| format!("cannot start {name} ({})", program.display()))?;
        Ok(Self {
            child,
            name: name.to_owned(),
        })
    }

    /// Starts a child whose stdout is read for lines `WORD A B` until `count` were seen (the
    /// backend tool prints `listening NAME ADDR`, the idle holder `holding N ADDR`); returns
    /// the `(A, B)` pairs. stderr goes to `log`.
    pub fn spawn_reading(
        name: &str,
        cpus: &str,
        program: &Path,
        args: &[String],
        log: &Path,
        word: &str,
        count: usize,
    ) -> anyhow::Result<(Self, Vec<(String, String)>)> {
        let err = File::create(log).with_context(|| format!("cannot create {}", log.display()))?;
        let mut child = Command::new("taskset")
            .arg("-c")
            .arg(cpus)
            .arg(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(err)
            .spawn()
            .with_context(|| format!("cannot start {name}"))?;
        let stdout = child.stdout.take().context("no stdout")?;
        let me = Self {
            child,
            name: name.to_owned(),
        };
        let mut found = Vec::with_capacity(count);
        for line in BufReader::new(stdout).lines() {
            let line = line?;
            let mut f = line.split_whitespace();
            if f.next() == Some(word)
                && let (Some(n), Some(a)) = (f.next(), f.next())
            {
                found.push((n.to_owned(), a.to_owned()));
                if found.len() == count {
                    return Ok((me, found));
                }
            }
        }
        bail!(
            "{name} exited before printing `{word}` (see {})",
            log.display()
        )
    }

    /// Process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether the process is still running.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// SIGTERM, up to 3 s to exit, then SIGKILL for every process left in the tree.
    pub fn stop(&mut self) {
        if !self.alive() {
            return;
        }
        let tree = procstat::tree(self.pid());
        signal("TERM", self.pid());
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline && self.alive() {
            std::thread::sleep(Duration::from_millis(20));
        }
        for pid in tree {
            if std::path::Path::new(&format!("/proc/{pid}")).exists() {
                signal("KILL", pid);
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Name given at start.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.stop();
    }
}

fn signal(sig: &str, pid: u32) {
    let _ = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .stderr(Stdio::null())
        .status();
}

/// A free loopback port (bound, read, released).
pub fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Waits until `addr` accepts connections (deadline 15 s) while `p` is alive.
pub fn wait_port(p: &mut Proc, addr: SocketAddr) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        if !p.alive() {
            bail!("{} exited at start", p.name());
        }
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    bail!("{} did not listen on {addr} within 15 s", p.name())
}

/// Runs a command and returns its stdout and stderr together, trimmed ("?" when it fails).
pub fn capture(program: &str, args: &[&str]) -> String {
    match Command::new(program).args(args).output() {
        Ok(o) => {
            let mut s = String::from_utf8_lossy(&o.stdout).into_owned();
            s.push_str(&String::from_utf8_lossy(&o.stderr));
            s.trim().to_owned()
        }
        Err(_) => "?".to_owned(),
    }
}
