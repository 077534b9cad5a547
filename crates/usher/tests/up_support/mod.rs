//! Helpers for tests/up.rs: a running `usher up` (ready line, dashboard calls, process scans)
//! and a chromedriver with its own Chromium profile.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::Full;
use serde_json::{Value, json};

use super::support::{Client, Reply};

/// A running `usher up` in its own run directory (which every child's command line names).
pub struct Up {
    child: Child,
    _dir: tempfile::TempDir,
    run: PathBuf,
    pub listen: String,
    pub admin: String,
}

impl Up {
    pub fn start(extra: &[&str]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let run = dir.path().join("run");
        let mut child = Command::new(env!("CARGO_BIN_EXE_usher"))
            .args(["--log-format", "json", "up"])
            .args(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
            .arg("--dir")
            .arg(&run)
            .args(extra)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut seen = Vec::new();
        let fields = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = rx
                .recv_timeout(left)
                .unwrap_or_else(|_| panic!("usher up not ready; saw:\n{}", seen.join("\n")));
            if let Ok(v) = serde_json::from_str::<Value>(&line)
                && v["fields"]["message"] == "usher up ready"
            {
                break v["fields"].clone();
            }
            seen.push(line);
        };
        let field = |k: &str| fields[k].as_str().unwrap().to_owned();
        let (listen, admin) = (field("listen"), field("admin"));
        assert!(
            !listen.ends_with(":0") && !admin.ends_with(":0"),
            "{fields}"
        );
        assert_eq!(field("dashboard"), format!("http://{admin}/_usher/"));
        // Keep draining stderr so the process never blocks on a full pipe.
        std::thread::spawn(move || while rx.recv().is_ok() {});
        Self {
            child,
            _dir: dir,
            run,
            listen,
            admin,
        }
    }

    pub fn shop(&self, path: &str) -> String {
        format!("http://{}{path}", self.listen)
    }

    pub fn dash(&self, path: &str) -> String {
        format!("http://{}/_usher{path}", self.admin)
    }

    /// Processes other than `usher up` itself whose command line names the run directory and,
    /// if given, `also` (e.g. a shop id).
    pub fn children(&self, also: &str) -> Vec<u32> {
        processes_mentioning(self.run.to_str().unwrap(), also)
            .into_iter()
            .filter(|pid| *pid != self.child.id())
            .collect()
    }

    /// SIGTERM; `usher up` must exit successfully and leave no child behind.
    pub fn stop_and_check_clean(mut self) {
        let ok = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(ok.success());
        let deadline = Instant::now() + Duration::from_secs(20);
        let status = loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                break s;
            }
            assert!(Instant::now() < deadline, "usher up ignored SIGTERM");
            std::thread::sleep(Duration::from_millis(50));
        };
        assert!(status.success(), "usher up exited with {status}");
        // Its children were stopped before it exited: nothing may be left, not even briefly.
        let left = processes_mentioning(self.run.to_str().unwrap(), "");
        assert!(left.is_empty(), "children outlived usher up: {left:?}");
    }
}

impl Drop for Up {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Pids of live (non-zombie) processes whose command line contains both needles.
pub fn processes_mentioning(needle: &str, also: &str) -> Vec<u32> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let state = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
        let zombie = state
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'));
        let words: Vec<String> = cmdline
            .split(|b| *b == 0)
            .map(|w| String::from_utf8_lossy(w).into_owned())
            .collect();
        let has = |n: &str| n.is_empty() || words.iter().any(|w| w == n || w.contains(n));
        if !zombie && words.iter().any(|w| w.contains(needle)) && has(also) {
            out.push(pid);
        }
    }
    out
}

pub async fn send(c: &mut Client, method: Method, url: &str, body: Option<Value>) -> Reply {
    let mut req = Request::builder().method(method).uri(url);
    if body.is_some() {
        req = req.header("content-type", "application/json");
    }
    let body = body.map_or(Bytes::new(), |b| Bytes::from(b.to_string()));
    c.send(req.body(Full::new(body)).unwrap()).await
}

pub fn json_of(r: &Reply) -> Value {
    serde_json::from_str(&r.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", r.body))
}

pub async fn state(up: &Up) -> Value {
    let r = Client::default().get(&up.dash("/api/state")).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    json_of(&r)
}

pub fn shop<'a>(state: &'a Value, id: &str) -> Option<&'a Value> {
    state["shops"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == id)
}

/// Polls the dashboard state until `cond` holds (bounded).
pub async fn state_until(up: &Up, what: &str, cond: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let s = state(up).await;
        if cond(&s) {
            return s;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}: {s}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub fn served_by(r: &Reply) -> String {
    r.headers
        .get("x-served-by")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned()
}

/// Signs a new user up and in through the balancer and puts two mugs in their cart.
pub async fn signed_in_user(up: &Up) -> Client {
    let mut c = Client::default();
    let creds = json!({ "user": "ann", "password": "correct horse" });
    for path in ["/api/signup", "/api/login"] {
        let r = send(&mut c, Method::POST, &up.shop(path), Some(creds.clone())).await;
        assert!(r.status.is_success(), "{path}: {} {}", r.status, r.body);
    }
    let item = json!({ "sku": "mug", "qty": 2 });
    let r = send(
        &mut c,
        Method::POST,
        &up.shop("/api/cart/items"),
        Some(item),
    )
    .await;
    assert!(
        r.status.is_success(),
        "add to cart: {} {}",
        r.status,
        r.body
    );
    c
}

/// The user is still signed in and still has two mugs, served by any shop but `dead`.
pub async fn cart_survives(c: &mut Client, up: &Up, dead: &str) {
    for _ in 0..6 {
        let me = c.get(&up.shop("/api/me")).await;
        assert_eq!(
            me.status,
            StatusCode::OK,
            "signed out after the kill: {}",
            me.body
        );
        assert_eq!(json_of(&me)["user"], "ann");
        let cart = c.get(&up.shop("/api/cart")).await;
        assert_eq!(cart.status, StatusCode::OK, "{}", cart.body);
        let cart = json_of(&cart);
        let mugs = cart["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["sku"] == "mug");
        assert_eq!(mugs.map(|m| m["qty"].clone()), Some(json!(2)), "{cart}");
        assert_ne!(served_by(&me), dead);
    }
}

/// A chromedriver the test started, with its own Chromium profile; both die with the guard.
pub struct Driver {
    child: Child,
    port: u16,
    profile: tempfile::TempDir,
}

impl Driver {
    pub async fn start() -> Self {
        let bin = Path::new("/usr/bin/chromedriver");
        assert!(
            bin.exists() && Path::new("/usr/bin/chromium").exists(),
            "the dashboard test needs headless Chromium and its WebDriver: install the Debian \
             packages `chromium` and `chromium-driver` (scripts/test does)"
        );
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new(bin)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let driver = Self {
            child,
            port,
            profile: tempfile::tempdir().unwrap(),
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut c = Client::default();
        loop {
            let status = c.try_get(&format!("http://127.0.0.1:{port}/status")).await;
            if status.is_ok_and(|r| r.body.contains("\"ready\":true")) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "chromedriver not ready on port {port}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        driver
    }

    pub async fn browser(&self) -> fantoccini::Client {
        let profile = format!("--user-data-dir={}", self.profile.path().display());
        let caps = json!({
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": "/usr/bin/chromium",
                "args": [
                    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                    "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync",
                    "--disable-dev-shm-usage", profile,
                ],
            },
        });
        let Value::Object(caps) = caps else {
            unreachable!()
        };
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        fantoccini::ClientBuilder::new(connector)
            .capabilities(caps)
            .connect(&format!("http://127.0.0.1:{}", self.port))
            .await
            .unwrap()
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // A browser left by a failed test: its command line names this test's own profile.
        for pid in processes_mentioning(self.profile.path().to_str().unwrap(), "") {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
        }
    }
}

/// Polls the page until `f` returns `Some` (bounded).
pub async fn page_until<T, F, Fut>(what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for the page to show {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The text of `css` inside the row of shop `id`, if the row exists.
pub async fn row_text(b: &fantoccini::Client, id: &str, css: &str) -> Option<String> {
    let sel = format!("tr[data-shop=\"{id}\"] {css}");
    let el = b.find(fantoccini::Locator::Css(&sel)).await.ok()?;
    el.text().await.ok()
}
