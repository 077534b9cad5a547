//! Issue #4: Redis killed under load. Two `usher shop` processes on one private redis-server,
//! behind `usher lb --affinity none`, with four users adding to their carts in a bounded loop.
//! While Redis is down every answer is a 503 with `Retry-After` (no 500, no request served as
//! an anonymous session); after Redis is back the first success comes within 2 s; and no cart
//! lost an acknowledged add or gained one nobody made.
//!
//! The server is started here rather than with `usher_testkit::redis::RedisServer` because that
//! one never persists, and this test needs the data to survive the kill: it runs with
//! `appendonly yes, appendfsync always`, so every write Redis acknowledged is on disk when it is
//! killed, and a restart on the same port and directory brings it back.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod process;
mod shop_support;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http::{Method, StatusCode};
use serde_json::json;
use shop_support::{Browser, LbProc, ShopProc};
use usher_testkit::redis::{command, free_port};

/// A redis-server persisting every write, killable and restartable on the same port.
struct PersistentRedis {
    port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl PersistentRedis {
    fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        for _ in 0..5 {
            let port = free_port();
            if let Some(child) = spawn(port, dir.path()) {
                return Self {
                    port,
                    dir,
                    child: Some(child),
                };
            }
        }
        panic!("could not start redis-server on a free port");
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill(); // SIGKILL
            let _ = c.wait();
        }
    }

    fn restart(&mut self) {
        self.kill();
        let child = spawn(self.port, self.dir.path());
        assert!(
            child.is_some(),
            "redis-server restarts on port {}",
            self.port
        );
        self.child = child;
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }
}

/// Starts redis-server and polls (bounded) until it answers as our child; `None` if it exits
/// first (the port was taken).
fn spawn(port: u16, dir: &Path) -> Option<Child> {
    let mut child = Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args([
            "--save",
            "",
            "--appendonly",
            "yes",
            "--appendfsync",
            "always",
        ])
        .args(["--daemonize", "no", "--dir"])
        .arg(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("redis-server is installed (scripts/test installs it)");
    let pid = format!("process_id:{}\r\n", child.id());
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if command(port, &["INFO", "server"], |t| t.contains(&pid))
            .is_some_and(|t| t.contains(&pid))
        {
            return Some(child);
        }
        if child.try_wait().unwrap().is_some() {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("redis-server did not answer on {port}");
}

impl Drop for PersistentRedis {
    fn drop(&mut self) {
        self.kill();
    }
}

const BEFORE: u8 = 0;
const KILLING: u8 = 1;
const DOWN: u8 = 2;
const RESTARTING: u8 = 3;
const BACK: u8 = 4;
/// A request that ran while the phase changed.
const CHANGING: u8 = 255;

#[derive(Debug, Clone)]
struct Sample {
    phase: u8,
    at: Instant,
    what: &'static str,
    status: u16,
    retry_after: bool,
    user_ok: bool,
}

#[derive(Default)]
struct Tally {
    attempted: i64,
    acked: i64,
}

fn count(samples: &Mutex<Vec<Sample>>, phase: u8) -> usize {
    samples
        .lock()
        .unwrap()
        .iter()
        .filter(|s| s.phase == phase)
        .count()
}

async fn wait_samples(samples: &Mutex<Vec<Sample>>, phase: u8, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while count(samples, phase) < n {
        assert!(Instant::now() < deadline, "load stalled in phase {phase}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_under_load_503s_then_recovers_within_2s_with_carts_intact() {
    let redis = tokio::task::spawn_blocking(PersistentRedis::start)
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite:{}", dir.path().join("shop.db").display());
    let url = redis.url();
    let args = ["--sessions", url.as_str(), "--db", db.as_str()];
    let a = ShopProc::start("shop-a", &args);
    let b = ShopProc::start("shop-b", &args);
    // The balancer's defaults: passive ejection after 5 straight 5xx for 10 s, but never more
    // than half the backends. A session-store outage makes *every* shop answer 503, so one shop
    // may sit out while the other keeps answering, and recovery is the shops' own (the direct
    // probe below bypasses the balancer to measure that too).
    let lb = LbProc::start_with(&[&a, &b], &[]);

    let users = ["u0", "u1", "u2", "u3"];
    let mut browsers = Vec::new();
    for u in users {
        let mut c = Browser::default();
        c.sign_in(&lb.url(""), u, true).await;
        browsers.push(c);
    }

    let mut probe = browsers[0].clone();
    let phase = Arc::new(AtomicU8::new(BEFORE));
    let stop = Arc::new(AtomicBool::new(false));
    let samples = Arc::new(Mutex::new(Vec::<Sample>::new()));
    let mut tasks = Vec::new();
    for (user, mut c) in users.into_iter().zip(browsers) {
        let (phase, stop, samples, base) =
            (phase.clone(), stop.clone(), samples.clone(), lb.url(""));
        tasks.push(tokio::spawn(async move {
            let mut tally = Tally::default();
            for _ in 0..5_000 {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                tally.attempted += 1;
                let p0 = phase.load(Ordering::SeqCst);
                let add = c
                    .try_send(
                        Method::POST,
                        &format!("{base}/api/cart/items"),
                        &[],
                        Some(&json!({"sku": "mug", "qty": 1})),
                    )
                    .await
                    .expect("the balancer always answers");
                let p1 = phase.load(Ordering::SeqCst);
                if add.status == StatusCode::OK {
                    tally.acked += 1;
                }
                let me = c.get(&format!("{base}/api/me")).await;
                let p2 = phase.load(Ordering::SeqCst);
                let user_ok = me.status != StatusCode::OK || me.json()["user"] == user;
                // A request belongs to a phase only if the phase held while it ran.
                let during = |a: u8, b: u8| if a == b { a } else { CHANGING };
                let new: Vec<Sample> = [
                    ("add", &add, true, during(p0, p1)),
                    ("me", &me, user_ok, during(p1, p2)),
                ]
                .into_iter()
                .map(|(what, r, ok, p)| Sample {
                    phase: p,
                    at: Instant::now(),
                    what,
                    status: r.status.as_u16(),
                    retry_after: r.header("retry-after").is_some(),
                    user_ok: ok,
                })
                .collect();
                samples.lock().unwrap().extend(new);
                tokio::time::sleep(Duration::from_millis(5)).await; // pacing, not readiness
            }
            (user, tally, c)
        }));
    }

    wait_samples(&samples, BEFORE, 40).await;
    phase.store(KILLING, Ordering::SeqCst);
    let mut redis = tokio::task::spawn_blocking(move || {
        let mut redis = redis;
        redis.kill();
        redis
    })
    .await
    .unwrap();
    phase.store(DOWN, Ordering::SeqCst);
    wait_samples(&samples, DOWN, 60).await;
    phase.store(RESTARTING, Ordering::SeqCst);
    redis = tokio::task::spawn_blocking(move || {
        redis.restart();
        redis
    })
    .await
    .unwrap();
    let back_at = Instant::now();
    phase.store(BACK, Ordering::SeqCst);
    // Straight to a shop: its own recovery, without the balancer in between.
    let direct = loop {
        let r = probe.get(&a.url("/api/me")).await;
        if r.status == StatusCode::OK {
            assert_eq!(r.json()["user"], "u0");
            break back_at.elapsed();
        }
        assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{}", r.text());
        assert!(
            back_at.elapsed() < Duration::from_secs(10),
            "shop-a never recovered"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert!(
        direct <= Duration::from_secs(2),
        "shop-a recovered after {direct:?}"
    );
    // Bounded: wait for the first success after the restart, then a little more load.
    let deadline = back_at + Duration::from_secs(10);
    let first_ok = loop {
        let ok = samples
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s.phase == BACK && s.status == 200)
            .map(|s| s.at)
            .min();
        if let Some(at) = ok {
            break at;
        }
        assert!(Instant::now() < deadline, "no success after the restart");
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    wait_samples(&samples, BACK, 40).await;
    stop.store(true, Ordering::SeqCst);
    let mut tallies = Vec::new();
    for t in tasks {
        tallies.push(t.await.unwrap());
    }

    let samples = samples.lock().unwrap().clone();
    let recovery = first_ok.duration_since(back_at);
    assert!(
        recovery <= Duration::from_secs(2),
        "first success {recovery:?} after the restart"
    );
    for s in &samples {
        assert!(s.status != 500, "a 500 on {}: {s:?}", s.what);
        assert!(
            s.status == 200 || s.status == 503,
            "only successes or 503s: {s:?}"
        );
        if s.status == 503 {
            assert!(s.retry_after, "503 without Retry-After: {s:?}");
        }
        // Never someone else, never signed out: the session was not replaced by an empty one.
        assert!(s.user_ok, "wrong user: {s:?}");
    }
    let down: Vec<&Sample> = samples.iter().filter(|s| s.phase == DOWN).collect();
    assert!(
        down.iter().all(|s| s.status == 503),
        "served while Redis was down: {down:?}"
    );
    let outage_503s = down.len();

    // Carts: every acknowledged add is there and nothing more than was attempted.
    for (user, tally, mut c) in tallies {
        let cart = c.get(&lb.url("/api/cart")).await.json();
        let items = cart["items"].as_array().unwrap();
        assert_eq!(items.len(), 1, "{user}: {cart}");
        let qty = items[0]["qty"].as_i64().unwrap();
        assert!(
            tally.acked <= qty && qty <= tally.attempted,
            "{user}: {} acked, {} attempted, cart has {qty}",
            tally.acked,
            tally.attempted
        );
    }
    eprintln!(
        "outage: {outage_503s} answers, all 503; recovery after restart: {recovery:?} through the balancer, {direct:?} direct"
    );
    drop(redis);
}
