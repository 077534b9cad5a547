//! `usher lb --tls-cert/--tls-key` as a user runs it, checked with `curl` when it is installed.
#![allow(clippy::unwrap_used)]

mod process;
#[path = "../../usher-proxy/tests/support/mod.rs"]
mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use process::{Running, usher};
use support::Backend;

/// Writes a self-signed certificate for `localhost` and its key; returns their paths.
fn write_cert(dir: &Path) -> (PathBuf, PathBuf) {
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert, ck.cert.pem()).unwrap();
    std::fs::write(&key, ck.key_pair.serialize_pem()).unwrap();
    (cert, key)
}

/// Starts `usher` and returns it with its "usher lb ready" line.
fn start_ready(args: &[&str]) -> (Running, String) {
    let mut running = Running::start(args);
    let line = running.wait_for("usher lb ready");
    (running, line)
}

fn failing(args: &[&str]) -> String {
    let out: Output = usher().args(args).output().unwrap();
    assert!(!out.status.success(), "{args:?} should fail");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_flags_serve_https_that_curl_accepts() {
    if Command::new("curl").arg("--version").output().is_err() {
        eprintln!("curl not installed: skipping");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = write_cert(dir.path());
    let b = Backend::start("shop-0").await;
    let backend = format!("shop-0={}", b.addr);
    let (_lb, ready) = start_ready(&[
        "lb",
        "--listen",
        "127.0.0.1:0",
        "--backend",
        &backend,
        "--affinity",
        "cookie",
        "--tls-cert",
        cert.to_str().unwrap(),
        "--tls-key",
        key.to_str().unwrap(),
    ]);
    assert!(ready.contains("tls=true"), "{ready}");
    let start = ready.find("listen=").unwrap() + "listen=".len();
    let addr = ready[start..].split_whitespace().next().unwrap().to_owned();
    let port = addr.rsplit(':').next().unwrap().to_owned();
    let out = tokio::task::spawn_blocking(move || {
        Command::new("curl")
            .args(["-sS", "-i", "--max-time", "10", "--cacert"])
            .arg(&cert)
            .args(["--resolve", &format!("localhost:{port}:127.0.0.1")])
            .arg(format!("https://localhost:{port}/"))
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(text.ends_with("shop-0"), "{text}");
    let cookie = text
        .lines()
        .find(|l| l.to_ascii_lowercase().starts_with("set-cookie: usher="))
        .unwrap_or_else(|| panic!("no affinity cookie in {text}"));
    assert!(cookie.contains("Secure"), "{cookie}");
    assert_eq!(b.seen()[0].headers["x-forwarded-proto"], "https");
}

#[test]
fn tls_flags_go_together_and_bad_files_are_named() {
    let base = ["lb", "--backend", "shop-0=127.0.0.1:1"];
    let err = failing(&[&base[..], &["--tls-cert", "c.pem"]].concat());
    assert!(err.contains("--tls-key"), "{err}");
    let err = failing(&[&base[..], &["--tls-key", "k.pem"]].concat());
    assert!(err.contains("--tls-cert"), "{err}");

    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.pem");
    let missing = missing.to_str().unwrap();
    let args = [
        "--listen",
        "127.0.0.1:0",
        "--tls-cert",
        missing,
        "--tls-key",
        missing,
    ];
    let err = failing(&[&base[..], &args].concat());
    assert!(
        err.contains("cannot read TLS certificate file") && err.contains(missing),
        "{err}"
    );
    assert!(!err.contains("usher lb ready"), "{err}");

    // The same from a config file's [tls] section.
    let config = dir.path().join("lb.toml");
    let text = format!(
        "listen = \"127.0.0.1:0\"\n[tls]\ncert = {missing:?}\nkey = {missing:?}\n\n[[backend]]\nid = \"shop-0\"\naddr = \"127.0.0.1:1\"\n"
    );
    std::fs::write(&config, text).unwrap();
    let err = failing(&["lb", "--config", config.to_str().unwrap()]);
    assert!(err.contains(missing), "{err}");
}
