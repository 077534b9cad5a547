//! The lab's private `redis-server` never outlives the lab: not when its handle drops, and not
//! when the lab process is killed with SIGKILL (the server must be gone within a deadline).
//!
//! The SIGKILL case runs the store helper in a child process: this test binary itself, started
//! again to run only [`helper_holds_a_private_redis`] with [`HELPER_ENV`] set. The helper starts
//! the server, prints its URL and waits (bounded) to be killed.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufRead as _, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use usher_lab::PrivateRedis;

/// Set (to a directory) in the helper child.
const HELPER_ENV: &str = "USHER_LAB_TEST_REDIS_HELPER_DIR";
/// The helper's line announcing the server.
const URL_PREFIX: &str = "private-redis-url ";
/// How long a killed server may take to disappear.
const GONE_WITHIN: Duration = Duration::from_secs(10);

/// The port of a `redis://127.0.0.1:PORT` URL.
fn port_of(url: &str) -> u16 {
    url.rsplit(':').next().unwrap().parse().unwrap()
}

fn accepts(port: u16) -> bool {
    std::net::TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_millis(500))
        .is_ok()
}

/// Polls until nothing accepts connections on `port`, or panics after [`GONE_WITHIN`].
async fn assert_gone(port: u16, what: &str) {
    let deadline = Instant::now() + GONE_WITHIN;
    while accepts(port) {
        assert!(
            Instant::now() < deadline,
            "{what}: redis-server still accepts on port {port} after {GONE_WITHIN:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Not a test on its own: the child-process half of `sigkill_of_the_lab_kills_its_redis`.
#[tokio::test]
async fn helper_holds_a_private_redis() {
    let Some(dir) = std::env::var_os(HELPER_ENV) else {
        return;
    };
    let redis = PrivateRedis::start(std::path::Path::new(&dir))
        .await
        .unwrap();
    println!("{URL_PREFIX}{}", redis.url);
    // Wait to be killed (bounded, in case the parent test died first).
    tokio::time::sleep(Duration::from_secs(60)).await;
    drop(redis);
}

#[tokio::test]
async fn sigkill_of_the_lab_kills_its_redis() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "helper_holds_a_private_redis", "--nocapture"])
        .env(HELPER_ENV, dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // The helper's stdout ends at the latest when it exits (within its own 60 s bound).
    let stdout = child.stdout.take().unwrap();
    let url = BufReader::new(stdout)
        .lines()
        .map_while(Result::ok)
        .find_map(|l| l.strip_prefix(URL_PREFIX).map(str::to_owned));
    let Some(url) = url else {
        let _ = child.kill();
        panic!("the helper printed no URL: {:?}", child.wait());
    };
    let port = port_of(&url);
    assert!(accepts(port), "the helper's redis-server is up");
    child.kill().unwrap(); // SIGKILL: no destructor runs in the helper.
    child.wait().unwrap();
    assert_gone(port, "after SIGKILL of its owner").await;
}

#[tokio::test]
async fn drop_and_restart_stop_the_old_server() {
    let dir = tempfile::tempdir().unwrap();
    let mut redis = PrivateRedis::start(dir.path()).await.unwrap();
    let port = port_of(&redis.url);
    assert!(accepts(port));
    redis.restart().await.unwrap();
    assert!(accepts(port), "restarted on the same port");
    redis.stop().await;
    assert_gone(port, "after stop").await;
    redis.restart().await.unwrap();
    assert!(accepts(port), "started again after a stop");
    drop(redis);
    assert_gone(port, "after drop").await;
}
