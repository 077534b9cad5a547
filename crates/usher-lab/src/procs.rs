//! Child processes: `usher lb` and `usher shop` started from the lab's own binary.
//!
//! Readiness is the child's own "ready" log line (JSON logs), which carries the addresses it
//! bound — so every child listens on port 0 and no port is ever guessed. Children are killed when
//! their handle drops (also on a panic unwinding through the lab), and each watches its stdin: the
//! lab holds the write end, so if the lab dies by any means (even `kill -9`), the pipe closes and
//! the child exits (`USHER_EXIT_WITH_PARENT`, handled in the `usher` binary's `main`).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context as _, anyhow, bail};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::process::{Child, Command};

/// The environment variable that makes a child exit when its stdin closes.
pub const EXIT_WITH_PARENT_ENV: &str = "USHER_EXIT_WITH_PARENT";

/// A running child and the addresses its ready line announced.
#[derive(Debug)]
pub struct Proc {
    child: Child,
    /// The ready line's `fields` (e.g. `listen`, `admin`).
    pub ready: serde_json::Map<String, Value>,
}

impl Proc {
    /// Starts `bin args…` with JSON logs, waits up to `timeout` for the log line whose message is
    /// exactly `ready_message` (a library's log line that merely mentions "ready" must not
    /// count), and copies every stderr line to `log`.
    pub async fn start(
        bin: &Path,
        args: &[String],
        ready_message: &str,
        log: PathBuf,
        timeout: Duration,
    ) -> anyhow::Result<Self> {
        let mut child = Command::new(bin)
            .arg("--log-format")
            .arg("json")
            .args(args)
            .env(EXIT_WITH_PARENT_ENV, "1")
            .env("RUST_LOG", "info")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("cannot start {}", bin.display()))?;
        let stderr = child.stderr.take().context("child stderr")?;
        let mut lines = BufReader::new(stderr).lines();
        let mut out = tokio::fs::File::create(&log)
            .await
            .with_context(|| format!("cannot create {}", log.display()))?;
        let wait_ready = async {
            while let Some(line) = lines.next_line().await? {
                out.write_all(line.as_bytes()).await?;
                out.write_all(b"\n").await?;
                if let Some(fields) = ready_fields(&line, ready_message) {
                    return Ok::<_, anyhow::Error>(Some(fields));
                }
            }
            Ok(None)
        };
        let ready = match tokio::time::timeout(timeout, wait_ready).await {
            Ok(Ok(Some(fields))) => fields,
            Ok(Ok(None)) => {
                let status = child.wait().await.ok();
                bail!(
                    "`{} {}` exited before it was ready ({status:?}); see {}",
                    bin.display(),
                    args.join(" "),
                    log.display()
                )
            }
            Ok(Err(e)) => return Err(e),
            Err(_) => bail!(
                "`{} {}` not ready within {timeout:?}; see {}",
                bin.display(),
                args.join(" "),
                log.display()
            ),
        };
        // Keep copying the log (and keep the pipe drained so the child never blocks on it).
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                if out.write_all(line.as_bytes()).await.is_err()
                    || out.write_all(b"\n").await.is_err()
                {
                    break;
                }
            }
        });
        Ok(Self { child, ready })
    }

    /// A socket address from the ready line, e.g. `addr("listen")`.
    pub fn addr(&self, field: &str) -> anyhow::Result<SocketAddr> {
        let v = self
            .ready
            .get(field)
            .and_then(Value::as_str)
            .ok_or_else(|| anyhow!("ready line has no `{field}` field: {:?}", self.ready))?;
        v.parse()
            .with_context(|| format!("ready line field `{field}` is not an address: {v}"))
    }

    /// Whether the process has exited (by itself or by a signal), without waiting.
    pub fn exited(&mut self) -> bool {
        !matches!(self.child.try_wait(), Ok(None))
    }

    /// `kill -9`: the process gets no chance to clean up (a crashed server).
    pub async fn kill(&mut self) {
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
    }

    /// SIGTERM, then SIGKILL if it has not exited within `grace`.
    pub async fn stop(&mut self, grace: Duration) {
        if let Some(pid) = self.child.id() {
            // `kill` is the portable way to send SIGTERM without unsafe code.
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(pid.to_string())
                .status()
                .await;
            if tokio::time::timeout(grace, self.child.wait()).await.is_ok() {
                return;
            }
        }
        self.kill().await;
    }
}

/// The `fields` of a JSON log line whose message is `needle`.
fn ready_fields(line: &str, needle: &str) -> Option<serde_json::Map<String, Value>> {
    let v: Value = serde_json::from_str(line).ok()?;
    let fields = v.get("fields")?.as_object()?;
    let msg = fields.get("message")?.as_str()?;
    (msg == needle).then(|| fields.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_ready_line() {
        let line = r#"{"timestamp":"x","level":"INFO","fields":{"message":"usher lb ready","listen":"127.0.0.1:4000","admin":"127.0.0.1:4001"},"target":"usher::lb"}"#;
        let f = ready_fields(line, "usher lb ready").unwrap();
        assert_eq!(f["listen"], "127.0.0.1:4000");
        assert!(
            ready_fields(line, "ready").is_none(),
            "the whole message must match"
        );
        assert!(ready_fields(line, "usher shop ready").is_none());
        assert!(ready_fields("not json", "usher lb ready").is_none());
    }
}
