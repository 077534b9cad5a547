//! A private PostgreSQL server for tests: its own data directory in a temp dir, its own free
//! loopback port, trust authentication, killed on drop.
//!
//! Why a real server per test rather than the machine's shared one on 5432: tests then cannot
//! see (or break) each other's data or anyone's real database, and a test may crash and restart
//! its server to check what a store does when the database goes away.
//!
//! * Binaries are found by globbing `/usr/lib/postgresql/<version>/bin/` (Debian keeps them off
//!   `PATH`), newest version first, then on `PATH`. Missing → a panic naming the apt package.
//! * PostgreSQL refuses to run as root. When this process is root, the data directory is handed
//!   to the `postgres` OS user and `initdb`/`postgres` run as that user via
//!   [`CommandExt::uid`]/[`CommandExt::gid`] (std drops root's supplementary groups on the way),
//!   so the child we hold *is* the postmaster and can be signalled directly.
//! * The server runs with `fsync=off` (`-F`): a crash of the process still loses no committed
//!   transaction (the WAL is in the kernel's page cache), only a crash of the machine would.
//! * Readiness is polled (with a deadline) from `postmaster.pid`, whose first line must be our
//!   child's pid and whose status line must say `ready`, so a server that some other process
//!   started on the same port is never mistaken for ours.
//! * [`external_url`] lets a developer point the tests at a server of their own through
//!   `USHER_TEST_POSTGRES_URL` (loopback only); tests that must stop the server still start a
//!   private one.

use std::fs;
use std::io;
use std::net::TcpListener;
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

/// The environment variable naming an external server tests may use instead of a private one.
pub const EXTERNAL_URL_ENV: &str = "USHER_TEST_POSTGRES_URL";

/// How long a start (or restart, which may include crash recovery) may take.
const START_DEADLINE: Duration = Duration::from_secs(30);
/// How long a shutdown may take before the postmaster is killed outright.
const STOP_DEADLINE: Duration = Duration::from_secs(10);
/// Attempts at finding a port nobody else grabs between our probe and the server's bind.
const PORT_ATTEMPTS: usize = 5;

/// A private PostgreSQL server. See the module docs.
#[derive(Debug)]
pub struct PgServer {
    bin: PathBuf,
    /// Holds the data directory and the Unix socket; removed on drop.
    dir: TempDir,
    run_as: Option<(u32, u32)>,
    port: u16,
    child: Option<Child>,
}

impl PgServer {
    /// Initializes a data directory and starts a server on a free loopback port, waiting until it
    /// accepts connections. Panics with a clear message if PostgreSQL is not installed or does
    /// not come up.
    pub fn start() -> Self {
        let bin = bin_dir();
        let dir = tempfile::Builder::new()
            .prefix("usher-pg-")
            .tempdir()
            .expect("create a temp dir for PostgreSQL");
        let run_as = if running_as_root() {
            let ids = postgres_user();
            std::os::unix::fs::chown(dir.path(), Some(ids.0), Some(ids.1))
                .expect("hand the temp dir to the postgres user");
            Some(ids)
        } else {
            None
        };
        let mut server = Self {
            bin,
            dir,
            run_as,
            port: 0,
            child: None,
        };
        server.initdb();
        for _ in 0..PORT_ATTEMPTS {
            server.port = free_port();
            if server.spawn_and_wait() {
                return server;
            }
        }
        panic!(
            "PostgreSQL did not start on any of {PORT_ATTEMPTS} free ports; see {}",
            server.log_path().display()
        );
    }

    /// `postgres://postgres@127.0.0.1:PORT/postgres`: the superuser, trust auth, over TCP.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// The server's TCP port (kept across [`PgServer::stop`] / [`PgServer::start_again`]).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Whether the server process is running.
    pub fn is_running(&mut self) -> bool {
        match &mut self.child {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Clean ("fast") shutdown: clients are disconnected, a checkpoint is written, and this
    /// returns once the postmaster has exited. No-op if already stopped.
    pub fn stop(&mut self) {
        self.shut_down("INT");
    }

    /// Crash-like ("immediate") shutdown: every backend is killed at once with no checkpoint,
    /// as after a power cut of the process; the next start runs crash recovery from the WAL.
    /// Returns once the postmaster has exited. No-op if already stopped.
    pub fn crash(&mut self) {
        self.shut_down("QUIT");
    }

    /// Starts the server again on the same port and data directory, waiting until it accepts
    /// connections. Panics if it is running, or if it cannot come back (e.g. the port was taken
    /// meanwhile).
    pub fn start_again(&mut self) {
        assert!(!self.is_running(), "start_again: the server is running");
        assert!(
            self.spawn_and_wait(),
            "PostgreSQL could not start again on port {} (taken meanwhile?); see {}",
            self.port,
            self.log_path().display()
        );
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("postgres.log")
    }

    /// A command for one of the server's binaries, as the `postgres` user when we are root.
    fn command(&self, name: &str) -> Command {
        let mut cmd = Command::new(self.bin.join(name));
        cmd.current_dir(self.dir.path())
            .env("LC_ALL", "C")
            .env_remove("PGDATA")
            .stdin(Stdio::null());
        if let Some((uid, gid)) = self.run_as {
            cmd.uid(uid).gid(gid);
        }
        cmd
    }

    fn initdb(&self) {
        let out = self
            .command("initdb")
            .arg("-D")
            .arg(self.data_dir())
            .args(["-U", "postgres", "-A", "trust", "-E", "UTF8", "--locale=C"])
            .args(["--no-sync", "--no-instructions"])
            .output()
            .expect("run initdb");
        assert!(
            out.status.success(),
            "initdb failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Spawns the postmaster on `self.port` and waits for it; `false` if it exited first (the
    /// port was taken), after which another port may be tried.
    fn spawn_and_wait(&mut self) -> bool {
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("open the PostgreSQL log");
        let log_err = log.try_clone().expect("clone the log handle");
        let child = self
            .command("postgres")
            .arg("-D")
            .arg(self.data_dir())
            .args(["-p", &self.port.to_string()])
            .arg("-k")
            .arg(self.dir.path())
            .args(["-c", "listen_addresses=127.0.0.1", "-F", "-c", "fsync=off"])
            .args(["-c", "full_page_writes=off", "-c", "max_connections=200"])
            .stdout(log)
            .stderr(log_err)
            .spawn()
            .expect("spawn postgres");
        let pid = child.id();
        self.child = Some(child);
        let deadline = Instant::now() + START_DEADLINE;
        while Instant::now() < deadline {
            if let Some(child) = &mut self.child
                && child.try_wait().expect("poll postgres").is_some()
            {
                self.child = None;
                return false;
            }
            if ready(&self.data_dir(), pid) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!(
            "PostgreSQL on port {} was not ready within {START_DEADLINE:?}; see {}",
            self.port,
            self.log_path().display()
        );
    }

    fn shut_down(&mut self, signal: &str) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if matches!(child.try_wait(), Ok(None)) {
            // std can only SIGKILL; PostgreSQL's shutdown modes are chosen by signal.
            let _ = Command::new("kill")
                .args(["-s", signal, &child.id().to_string()])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
            let deadline = Instant::now() + STOP_DEADLINE;
            while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        // Immediate shutdown also takes the backends down; a plain SIGKILL of the postmaster
        // would leave them running until they notice.
        self.crash();
    }
}

/// The URL in `USHER_TEST_POSTGRES_URL`, if set and non-empty. Panics if it names a host other
/// than loopback or a Unix socket directory: tests only ever talk to this machine.
pub fn external_url() -> Option<String> {
    let url = std::env::var(EXTERNAL_URL_ENV).ok()?;
    let url = url.trim().to_owned();
    if url.is_empty() {
        return None;
    }
    let host = url_host(&url).unwrap_or_else(|| {
        panic!("{EXTERNAL_URL_ENV} must be a postgres:// or postgresql:// URL, got {url:?}")
    });
    assert!(
        is_local_host(&host),
        "{EXTERNAL_URL_ENV} names host {host:?}; tests only connect to loopback or a Unix socket"
    );
    Some(url)
}

/// The host part of a `postgres://` URL (empty if none), or `None` if it is not such a URL.
fn url_host(url: &str) -> Option<String> {
    let rest = url
        .strip_prefix("postgres://")
        .or_else(|| url.strip_prefix("postgresql://"))?;
    let authority = rest.split(['/', '?']).next().unwrap_or("");
    let hosts = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    // Several comma-separated hosts are possible; every one must be local.
    let mut all = Vec::new();
    for host in hosts.split(',') {
        let name = if let Some(v6) = host.strip_prefix('[') {
            v6.split(']').next().unwrap_or("")
        } else {
            host.split(':').next().unwrap_or("")
        };
        all.push(name.to_owned());
    }
    // A `host=` query parameter overrides the authority (typically a socket directory).
    if let Some((_, query)) = rest.split_once('?') {
        for pair in query.split('&') {
            if let Some(h) = pair.strip_prefix("host=") {
                all.push(h.to_owned());
            }
        }
    }
    Some(all.join(","))
}

fn is_local_host(hosts: &str) -> bool {
    hosts.split(',').all(|h| {
        h.is_empty()
            || h.starts_with('/')
            || h.starts_with("%2F")
            || h.starts_with("%2f")
            || h.eq_ignore_ascii_case("localhost")
            || h == "::1"
            || h.parse::<std::net::Ipv4Addr>()
                .is_ok_and(|ip| ip.is_loopback())
    })
}

/// Whether `postmaster.pid` in `data` belongs to `pid` and says the server accepts connections.
fn ready(data: &Path, pid: u32) -> bool {
    let Ok(text) = fs::read_to_string(data.join("postmaster.pid")) else {
        return false;
    };
    let lines: Vec<&str> = text.lines().collect();
    lines.first().map(|l| l.trim()) == Some(pid.to_string().as_str())
        && lines.get(7).map(|l| l.trim()) == Some("ready")
}

fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a probe socket");
    listener.local_addr().expect("probe address").port()
}

/// The directory holding `initdb` and `postgres`: the newest `/usr/lib/postgresql/*/bin`, else
/// wherever `initdb` is on `PATH`.
fn bin_dir() -> PathBuf {
    let mut found: Vec<(u32, PathBuf)> = fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let bin = entry.path().join("bin");
            let version = entry
                .file_name()
                .to_str()?
                .split('.')
                .next()?
                .parse()
                .ok()?;
            bin.join("initdb").is_file().then_some((version, bin))
        })
        .collect();
    found.sort();
    if let Some((_, bin)) = found.pop() {
        return bin;
    }
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .find(|dir| dir.join("initdb").is_file() && dir.join("postgres").is_file());
    on_path.unwrap_or_else(|| {
        panic!(
            "PostgreSQL is not installed: no initdb under /usr/lib/postgresql/*/bin or on PATH. \
             The PostgreSQL store tests need it: `apt-get install postgresql` (scripts/test does \
             this)."
        )
    })
}

/// Whether this process runs as root (effective uid 0): `/proc/self` is owned by the euid.
fn running_as_root() -> bool {
    match fs::metadata("/proc/self") {
        Ok(meta) => meta.uid() == 0,
        Err(_) => id_output(&["-u"]) == "0",
    }
}

/// The `postgres` OS user's uid and gid (the Debian package creates it).
fn postgres_user() -> (u32, u32) {
    let parse = |flag: &str| -> u32 {
        id_output(&[flag, "postgres"]).parse().unwrap_or_else(|_| {
            panic!(
                "running as root, but there is no `postgres` OS user to run PostgreSQL as \
                 (it refuses to run as root); `apt-get install postgresql` creates it"
            )
        })
    };
    (parse("-u"), parse("-g"))
}

fn id_output(args: &[&str]) -> String {
    Command::new("id")
        .args(args)
        .stderr(Stdio::null())
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_else(|e: io::Error| panic!("run `id`: {e}"))
}

#[cfg(test)]
mod tests {
    use std::net::TcpStream;

    use super::*;

    fn accepts(port: u16) -> bool {
        TcpStream::connect(("127.0.0.1", port)).is_ok()
    }

    #[test]
    fn starts_stops_crashes_and_restarts_on_the_same_port() {
        let mut pg = PgServer::start();
        let port = pg.port();
        assert_ne!(port, 5432, "never the shared server's port");
        assert!(pg.url().contains(&format!("127.0.0.1:{port}/")));
        assert!(accepts(port));
        pg.stop();
        assert!(!pg.is_running());
        assert!(!accepts(port), "nothing listens once stopped");
        pg.start_again();
        assert_eq!(pg.port(), port);
        assert!(accepts(port));
        pg.crash();
        assert!(!accepts(port));
        pg.start_again();
        assert!(accepts(port), "comes back after crash recovery");
        let data = pg.data_dir();
        drop(pg);
        assert!(!data.exists(), "the data directory is removed on drop");
        assert!(!accepts(port));
    }

    #[test]
    fn url_hosts_are_checked_for_loopback() {
        for ok in [
            "postgres://postgres@127.0.0.1:5433/db",
            "postgresql://u:p@localhost/db",
            "postgres://[::1]:5555/x",
            "postgres:///db?host=/var/run/postgresql",
            "postgres://127.0.0.2,localhost:7/db",
        ] {
            assert!(is_local_host(&url_host(ok).unwrap()), "{ok}");
        }
        for bad in [
            "postgres://db.example.com/x",
            "postgres://10.0.0.5:5432/x",
            "postgres://localhost,192.168.1.2/x",
            "postgres://127.0.0.1/x?host=db.example.com",
        ] {
            assert!(!is_local_host(&url_host(bad).unwrap()), "{bad}");
        }
        assert!(url_host("host=localhost").is_none());
    }
}
