//! The `usher` binary as a user runs it: flags, config files, key files, signals.
#![allow(clippy::unwrap_used)]

#[path = "../../usher-proxy/tests/support/mod.rs"]
mod support;

mod process;

use process::{Running, usher};
use support::{Backend, Client};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lb_from_flags_serves_pins_and_shuts_down_on_sigterm_with_a_summary() {
    let b0 = Backend::start("shop-0").await;
    let b1 = Backend::start("shop-1").await;
    let (a0, a1) = (format!("shop-0={}", b0.addr), format!("shop-1={}", b1.addr));
    let mut lb = Running::start(&[
        "lb",
        "--listen",
        "127.0.0.1:0",
        "--backend",
        &a0,
        "--backend",
        &a1,
        "--policy",
        "least-conn",
        "--affinity",
        "cookie",
        "--on-failure",
        "repin",
    ]);
    let addr = lb.listen_addr();
    let mut c = Client::default();
    let first = c.get(&format!("http://{addr}/")).await;
    assert_eq!(first.status, 200);
    for _ in 0..10 {
        assert_eq!(
            c.get(&format!("http://{addr}/")).await.backend(),
            first.backend()
        );
    }
    lb.wait_for("random affinity key"); // no --key-file: warned
    lb.signal("-TERM");
    lb.wait_for("summary: affinity outcomes new=1 hit=10");
    assert!(lb.wait_exit().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_sharing_a_key_file_read_each_others_cookies() {
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys.txt");
    let keys_s = keys.to_str().unwrap();
    for _ in 0..2 {
        let out = usher()
            .args(["lb", "keygen", "--out", keys_s])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let text = std::fs::read_to_string(&keys).unwrap();
    assert_eq!(text.lines().count(), 2, "keygen appends: {text}");
    let printed = usher().args(["lb", "keygen"]).output().unwrap();
    assert_eq!(String::from_utf8_lossy(&printed.stdout).lines().count(), 1);

    let bs = [
        Backend::start("shop-0").await,
        Backend::start("shop-1").await,
        Backend::start("shop-2").await,
    ];
    let backends: Vec<String> = bs.iter().map(|b| format!("{}={}", b.id, b.addr)).collect();
    let start = || {
        let mut args = vec![
            "lb",
            "--listen",
            "127.0.0.1:0",
            "--affinity",
            "cookie",
            "--key-file",
            keys_s,
        ];
        for b in &backends {
            args.extend(["--backend", b.as_str()]);
        }
        Running::start(&args)
    };
    let (mut r1, mut r2) = (start(), start());
    let (addr1, addr2) = (r1.listen_addr(), r2.listen_addr());
    // Pin clients on replica 1, then send them to replica 2: same backend, no new cookie.
    for _ in 0..3 {
        let mut c = Client::default();
        let home = c
            .get(&format!("http://{addr1}/"))
            .await
            .backend()
            .to_owned();
        for _ in 0..5 {
            let r = c.get(&format!("http://{addr2}/")).await;
            assert_eq!(r.backend(), home);
            assert!(r.set_cookie("usher").is_none());
        }
    }
}

#[test]
fn config_errors_name_the_field_and_line_and_exit_nonzero() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("lb.toml");
    std::fs::write(&path, "listen = \"127.0.0.1:0\"\n\n[[backend]]\nid = \"shop-0\"\naddr = \"127.0.0.1:1\"\nweigth = 2\n").unwrap();
    let out = usher()
        .args(["lb", "--config", path.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("weigth") && err.contains("line 6"), "{err}");

    let out = usher()
        .args([
            "lb",
            "--backend",
            "shop-0=127.0.0.1:1",
            "--affinity",
            "cookies",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--affinity"));

    let out = usher()
        .args(["lb", "--backend", "bad id=127.0.0.1:1"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--backend"));

    std::fs::write(&path, "1 tooshort\n").unwrap();
    let out = usher()
        .args([
            "lb",
            "--backend",
            "shop-0=127.0.0.1:1",
            "--key-file",
            path.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("line 1") && !err.contains("tooshort"), "{err}");
}

#[test]
fn the_example_config_starts() {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/lb.toml");
    let mut lb = Running::start(&["lb", "--config", example, "--listen", "127.0.0.1:0"]);
    lb.listen_addr();
    lb.signal("-INT");
    assert!(lb.wait_exit().success());
}

#[test]
fn help_documents_every_mode() {
    let out = usher().args(["lb", "--help"]).output().unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    for needle in [
        "--affinity",
        "header:NAME",
        "app-cookie:NAME",
        "--on-failure",
        "maglev",
        "--key-file",
        "keygen",
        "--trusted-proxy",
    ] {
        assert!(help.contains(needle), "{needle} missing from --help");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_log_lines_are_json_with_the_decision() {
    let b0 = Backend::start("shop-0").await;
    let backend = format!("shop-0={}", b0.addr);
    let mut lb = Running::start(&[
        "--log-format",
        "json",
        "lb",
        "--listen",
        "127.0.0.1:0",
        "--backend",
        &backend,
        "--affinity",
        "cookie",
        "--access-log",
    ]);
    let line = lb.wait_for("usher lb ready");
    let ready: serde_json::Value = serde_json::from_str(&line).unwrap();
    let addr = ready["fields"]["listen"].as_str().unwrap().to_owned();
    let mut c = Client::default();
    c.get(&format!("http://{addr}/cart?x=1")).await;
    let line = lb.wait_for("\"target\":\"usher::access\"");
    let v: serde_json::Value = serde_json::from_str(&line).unwrap();
    let f = &v["fields"];
    assert_eq!(f["method"], "GET");
    assert_eq!(f["path"], "/cart?x=1");
    assert_eq!(f["status"], 200);
    assert_eq!(f["backend"], "shop-0");
    assert_eq!(f["affinity"], "new");
    assert!(f["total_ms"].as_f64().unwrap() >= 0.0);
    assert!(f["upstream_ms"].as_f64().is_some());
    assert_eq!(f["request_id"].as_str().unwrap().len(), 32);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_config_file_and_a_bad_file_keeps_the_old_one() {
    let b0 = Backend::start("shop-0").await;
    let b1 = Backend::start("shop-1").await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("lb.toml");
    let one = format!(
        "listen = \"127.0.0.1:0\"\n[[backend]]\nid = \"shop-0\"\naddr = \"{}\"\n",
        b0.addr
    );
    std::fs::write(&path, &one).unwrap();
    let mut lb = Running::start(&["lb", "--config", path.to_str().unwrap()]);
    let ready = lb.wait_for("usher lb ready");
    let admin = ready
        .split("admin=")
        .nth(1)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned();
    let count = || {
        let admin = admin.clone();
        async move {
            let r = Client::default()
                .get(&format!("http://{admin}/backends"))
                .await;
            serde_json::from_str::<serde_json::Value>(&r.body)
                .unwrap()
                .as_array()
                .unwrap()
                .len()
        }
    };
    assert_eq!(count().await, 1);

    std::fs::write(
        &path,
        format!(
            "{one}[[backend]]\nid = \"shop-1\"\naddr = \"{}\"\n",
            b1.addr
        ),
    )
    .unwrap();
    lb.signal("-HUP");
    lb.wait_for("configuration reloaded");
    assert_eq!(count().await, 2);

    std::fs::write(&path, "this is not toml").unwrap();
    lb.signal("-HUP");
    lb.wait_for("SIGHUP reload failed");
    assert_eq!(count().await, 2, "the running configuration stays");
    lb.signal("-TERM");
    assert!(lb.wait_exit().success());
}

#[test]
fn an_exposed_admin_api_needs_a_token() {
    let out = usher()
        .args([
            "lb",
            "--listen",
            "127.0.0.1:0",
            "--backend",
            "shop-0=127.0.0.1:1",
            "--admin-listen",
            "0.0.0.0:0",
        ])
        .env_remove("USHER_ADMIN_TOKEN")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("admin.listen") && err.contains("token"),
        "{err}"
    );
}
