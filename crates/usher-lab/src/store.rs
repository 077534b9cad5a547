//! The shared store the `shared`, `jwt` and `hybrid` architectures use.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use tokio::process::{Child, Command};

/// Which shared store to use (`--store`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreChoice {
    /// One SQLite file per architecture run in the lab's directory: the embedded default.
    Sqlite,
    /// A `redis://…`, `redis+cluster://…` or `postgres://…` URL of a server the user runs.
    Url(String),
    /// A private `redis-server` the lab starts (needs redis-server installed).
    PrivateRedis,
}

impl StoreChoice {
    /// Parses `--store`: `sqlite`, `redis` (private server), or a URL.
    pub fn parse(s: &str) -> Result<Self, String> {
        match s {
            "sqlite" => Ok(Self::Sqlite),
            "redis" => Ok(Self::PrivateRedis),
            url if url.starts_with("redis://")
                || url.starts_with("redis+cluster://")
                || url.starts_with("redis+sentinel://")
                || url.starts_with("postgres://")
                || url.starts_with("postgresql://") =>
            {
                Ok(Self::Url(url.to_owned()))
            }
            other => Err(format!(
                "unknown store {other:?}: expected sqlite, redis, redis://…, redis+cluster://… or postgres://…"
            )),
        }
    }

    /// The kind, for reports.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Sqlite => "sqlite",
            Self::PrivateRedis => "redis",
            Self::Url(u) if u.starts_with("redis+cluster") => "redis-cluster",
            Self::Url(u) if u.starts_with("redis") => "redis",
            Self::Url(_) => "postgres",
        }
    }
}

/// A private `redis-server`, stopped when this handle drops, and also when the lab process dies
/// by any means, `kill -9` included.
///
/// The lab cannot make `redis-server` watch it the way its own children do (they exit when their
/// stdin closes, see `procs.rs`), and asking the kernel for a parent-death signal needs
/// `unsafe`. So the server runs under a small supervising `sh` (`SUPERVISOR`) whose stdin is a
/// pipe only the lab holds open: when the lab exits, crashes or is killed, the kernel closes that
/// pipe, the supervisor reads end-of-file at once and SIGKILLs `redis-server`. Nothing polls, and
/// nothing depends on the lab running again (unlike a pidfile swept at the next start). Dropping
/// the handle closes the pipe the same way. If `redis-server` exits by itself, the supervisor
/// exits with its status. What remains uncovered: someone SIGKILLing the supervisor itself.
#[derive(Debug)]
pub struct PrivateRedis {
    child: Child,
    port: u16,
    dir: PathBuf,
    /// `redis://127.0.0.1:PORT`.
    pub url: String,
}

/// The supervisor (`sh -c`, the `redis-server` arguments as `$@`). The watcher keeps the lab's
/// pipe as fd 3 (asynchronous commands get `/dev/null` as stdin); `redis-server` gets neither.
/// When the watcher's `read` ends (the lab closed the pipe or died), it kills the server; when
/// the server ends first, the watcher is killed and the supervisor exits with the server's status.
const SUPERVISOR: &str = r#"exec 3<&0
redis-server "$@" </dev/null 3<&- &
r=$!
( read -r _ <&3; kill -KILL "$r" 2>/dev/null ) &
w=$!
exec 3<&- 0</dev/null
wait "$r"
s=$?
kill "$w" 2>/dev/null
exit "$s""#;

/// How long [`PrivateRedis::stop`] waits for the supervisor to end the server.
const STOP_LIMIT: Duration = Duration::from_secs(10);

impl PrivateRedis {
    /// Starts `redis-server` on a free loopback port with nothing persisted, in `dir`.
    pub async fn start(dir: &Path) -> anyhow::Result<Self> {
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let child = spawn_on(dir, port).await?;
        Ok(Self {
            child,
            port,
            dir: dir.to_path_buf(),
            url: format!("redis://127.0.0.1:{port}"),
        })
    }

    /// Stops the server (SIGKILL: an outage, not a shutdown) and starts a new one on the same
    /// port, so clients holding the URL reconnect to it. Nothing is persisted, so every session
    /// it held is gone: this is what a store outage costs a memory-only Redis.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.stop().await;
        self.child = spawn_on(&self.dir, self.port).await?;
        Ok(())
    }

    /// Stops the server (SIGKILL, by its supervisor) and waits for the supervisor to exit.
    pub async fn stop(&mut self) {
        // Closing the pipe is the stop signal.
        drop(self.child.stdin.take());
        if tokio::time::timeout(STOP_LIMIT, self.child.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                port = self.port,
                "redis-server supervisor did not exit; killing it"
            );
            let _ = self.child.start_kill();
            let _ = self.child.wait().await;
        }
    }
}

/// Starts `redis-server` on `port` under `SUPERVISOR` and waits (bounded) until it accepts
/// connections.
async fn spawn_on(dir: &Path, port: u16) -> anyhow::Result<Child> {
    // No `kill_on_drop`: SIGKILL to the supervisor would orphan the server. Dropping the `Child`
    // drops its stdin, which stops the server (and tokio reaps the supervisor).
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(SUPERVISOR)
        .arg("usher-lab-redis")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no"])
        .current_dir(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("cannot start sh to supervise redis-server")?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            bail!(
                "redis-server exited at once ({status}); is it installed (apt-get install \
                 redis-server), or is port {port} taken?"
            );
        }
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return Ok(child);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(child.stdin.take());
    bail!("redis-server did not accept connections on port {port} within 10 s")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_store_choices() {
        assert_eq!(StoreChoice::parse("sqlite").unwrap(), StoreChoice::Sqlite);
        assert_eq!(
            StoreChoice::parse("redis").unwrap(),
            StoreChoice::PrivateRedis
        );
        assert_eq!(
            StoreChoice::parse("postgres://x/y").unwrap().kind(),
            "postgres"
        );
        assert_eq!(
            StoreChoice::parse("redis+cluster://a:1").unwrap().kind(),
            "redis-cluster"
        );
        assert!(
            StoreChoice::parse("mysql://x")
                .unwrap_err()
                .contains("expected sqlite")
        );
    }
}
