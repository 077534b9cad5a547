//! The one wrk Lua script every system is measured with, and running it pinned to cpu 0.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context as _, bail};

use crate::stats::{WrkRun, parse_wrk_line};

/// The traffic script. `init()` builds K requests (30 identical ones without a cookie, or one per
/// line of the file named by `BENCH_COOKIES`), `request()` cycles through them, `done()` appends
/// one JSON line to the file named by `BENCH_OUT`.
pub const LUA: &str = r#"-- usher-bench traffic script (same for every system)
local reqs = {}
local i = 0
function init(args)
  local host = wrk.host
  if wrk.port then host = host .. ":" .. wrk.port end
  local cookies = {}
  local path = os.getenv("BENCH_COOKIES")
  if path and path ~= "" then
    for line in io.lines(path) do
      if line ~= "" then cookies[#cookies + 1] = line end
    end
  end
  if #cookies == 0 then
    for k = 1, 30 do reqs[k] = wrk.format("GET", "/", { ["Host"] = host }) end
  else
    for k, c in ipairs(cookies) do
      reqs[k] = wrk.format("GET", "/", { ["Host"] = host, ["Cookie"] = c })
    end
  end
end
function request()
  i = i % #reqs + 1
  return reqs[i]
end
function done(summary, latency, requests)
  local e = summary.errors
  local line = string.format(
    '{"requests":%d,"duration_us":%d,"errors":{"connect":%d,"read":%d,"write":%d,"timeout":%d},"non2xx":%d,"p50_us":%d,"p99_us":%d,"max_us":%d}\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.timeout, e.status,
    latency:percentile(50), latency:percentile(99), latency.max)
  local f = assert(io.open(os.getenv("BENCH_OUT"), "a"))
  f:write(line)
  f:close()
end
"#;

/// Where wrk and its inputs live.
#[derive(Debug, Clone)]
pub struct Wrk {
    /// The Lua script file.
    pub script: PathBuf,
    /// CPU list wrk is pinned to.
    pub cpus: String,
}

impl Wrk {
    /// Writes the script into `dir`.
    pub fn new(dir: &Path) -> anyhow::Result<Self> {
        let script = dir.join("bench.lua");
        std::fs::write(&script, LUA)?;
        Ok(Self {
            script,
            cpus: "0".to_owned(),
        })
    }

    /// One run: `taskset -c 0 wrk -t1 -cC -dD` at `addr`, requests from `cookies` (a file of
    /// cookie lines, or `None` for no cookie), result appended to `out` and returned.
    pub fn run(
        &self,
        addr: SocketAddr,
        conns: usize,
        duration: Duration,
        cookies: Option<&Path>,
        out: &Path,
    ) -> anyhow::Result<WrkRun> {
        let before = std::fs::read_to_string(out).unwrap_or_default().len();
        let secs = duration.as_secs().max(1);
        let o = Command::new("taskset")
            .args(["-c", &self.cpus, "wrk", "-t1"])
            .arg(format!("-c{conns}"))
            .arg(format!("-d{secs}s"))
            .arg("-s")
            .arg(&self.script)
            .arg(format!("http://{addr}/"))
            .env("BENCH_OUT", out)
            .env(
                "BENCH_COOKIES",
                cookies
                    .map(|p| p.as_os_str().to_owned())
                    .unwrap_or_default(),
            )
            .stdin(Stdio::null())
            .output()
            .context("cannot run wrk")?;
        let text = std::fs::read_to_string(out).unwrap_or_default();
        if !o.status.success() || text.len() <= before {
            bail!(
                "wrk failed ({}): {}{}",
                o.status,
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            );
        }
        parse_wrk_line(&text[before..])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn script_has_the_three_hooks_and_the_env_vars() {
        for s in [
            "function init(",
            "function request()",
            "function done(",
            "BENCH_OUT",
            "BENCH_COOKIES",
            "percentile(99)",
        ] {
            assert!(LUA.contains(s), "{s}");
        }
    }
}
