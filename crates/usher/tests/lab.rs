//! `usher lab` end to end: the quick run's JSON shows the claims the lab exists to test, and no
//! process it started outlives it (normal exit, SIGINT, or kill -9 of the lab itself).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

fn usher() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_usher"));
    c.env("RUST_LOG", "warn");
    c
}

/// Pids of live processes whose command line mentions `needle` (the lab's run directory, which
/// every child it starts gets in its arguments).
fn processes_mentioning(needle: &str) -> Vec<u32> {
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
        if !zombie && String::from_utf8_lossy(&cmdline).contains(needle) {
            out.push(pid);
        }
    }
    out
}

fn wait_until(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn arch<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["architectures"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["architecture"] == name)
        .unwrap_or_else(|| panic!("{name} missing from the report"))
}

fn num(a: &Value, field: &str) -> f64 {
    a[field]
        .as_f64()
        .unwrap_or_else(|| panic!("{field} missing in {a}"))
}

#[test]
fn quick_lab_shows_the_claims() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("lab.json");
    let html = dir.path().join("lab.html");
    let run = dir.path().join("run");
    let out = usher()
        // Fewer users than --quick's 500: the rest of the suite runs beside it on two cores.
        .args(["lab", "--quick", "--users", "200", "--json"])
        .arg(&json)
        .arg("--html")
        .arg(&html)
        .arg("--dir")
        .arg(&run)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "lab failed:\n{stdout}\n{stderr}");
    assert!(
        stdout.contains("sessions lost") || stdout.contains("sess lost"),
        "{stdout}"
    );

    let report: Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    assert_eq!(report["schema"], "usher-lab/1");
    for a in report["architectures"].as_array().unwrap() {
        assert!(
            a["error"].is_null(),
            "{} did not run: {}",
            a["architecture"],
            a["error"]
        );
        assert!(num(a, "requests") > 500.0, "{a}");
    }
    let rr = arch(&report, "rr-memory");
    let cookie = arch(&report, "sticky-cookie-memory");
    let ip = arch(&report, "sticky-ip-memory");
    let shared = arch(&report, "shared");

    // Round robin over in-memory sessions: users keep landing on shops that never saw them.
    assert!(
        num(rr, "sessions_lost") > num(cookie, "sessions_lost"),
        "{rr}\n{cookie}"
    );
    // Sticky in memory: only the killed shop's users lose their sessions.
    assert!(
        num(cookie, "sessions_lost") > 0.0,
        "the kill must cost sticky users: {cookie}"
    );
    assert!(num(ip, "sessions_lost") > 0.0, "{ip}");
    // ... which is about a third of them (the others were on the surviving shops), not everyone.
    let users = num(cookie, "users");
    assert!(num(cookie, "sessions_lost") < 0.6 * users, "{cookie}");
    // A shared store, or signed tokens, lose nothing; the Idempotency-Key makes retried
    // checkouts safe.
    for a in [shared, arch(&report, "jwt"), arch(&report, "hybrid")] {
        assert_eq!(num(a, "sessions_lost"), 0.0, "{a}");
        assert_eq!(num(a, "cart_items_lost"), 0.0, "{a}");
        assert!(num(a, "retried_checkouts") > 0.0, "{a}");
        assert_eq!(num(a, "duplicate_orders"), 0.0, "{a}");
    }
    // 30 % of users behind one NAT address pile onto one shop under source-IP hashing.
    assert!(
        ip["imbalance"]["max_over_mean"].as_f64().unwrap()
            > cookie["imbalance"]["max_over_mean"].as_f64().unwrap(),
        "{ip}\n{cookie}"
    );
    assert!(!report["verdicts"].as_array().unwrap().is_empty());

    let page = std::fs::read_to_string(&html).unwrap();
    assert!(page.contains("<svg") && page.contains("sticky-ip-memory"));
    assert!(
        processes_mentioning(run.to_str().unwrap()).is_empty(),
        "a child outlived the lab"
    );
}

fn start_lab(run: &Path) -> std::process::Child {
    usher()
        .args([
            "lab",
            "--architectures",
            "shared",
            "--duration",
            "60s",
            "--users",
            "20",
        ])
        .arg("--dir")
        .arg(run)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

#[test]
fn sigint_stops_every_child() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    let needle = run.to_str().unwrap().to_owned();
    let mut lab = start_lab(&run);
    // Children are up once the lb has logged (it starts after the shops).
    wait_until("the lab's processes", Duration::from_secs(30), || {
        processes_mentioning(&needle).len() >= 3 && run.join("shared/lb.log").exists()
    });
    let status = Command::new("kill")
        .args(["-INT", &lab.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let code = lab.wait().unwrap();
    assert!(!code.success(), "an interrupted lab reports failure");
    wait_until("children to exit", Duration::from_secs(10), || {
        processes_mentioning(&needle).is_empty()
    });
}

#[test]
fn children_exit_when_the_lab_is_killed() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    let needle = run.to_str().unwrap().to_owned();
    let mut lab = start_lab(&run);
    wait_until("the lab's processes", Duration::from_secs(30), || {
        processes_mentioning(&needle).len() >= 3
    });
    lab.kill().unwrap(); // SIGKILL: no clean-up code runs in the lab
    lab.wait().unwrap();
    wait_until("orphans to exit", Duration::from_secs(10), || {
        processes_mentioning(&needle).is_empty()
    });
}

#[test]
fn bad_lab_options_are_refused_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let scenario = dir.path().join("s.toml");
    std::fs::write(&scenario, "kill = 2.0\n").unwrap();
    for (args, want) in [
        (vec!["lab", "--store-outage"], "needs --store redis"),
        (
            vec!["lab", "--scenario", scenario.to_str().unwrap()],
            "kill",
        ),
        (
            vec!["lab", "--architectures", "rr-memory,nope"],
            "unknown architecture",
        ),
        (vec!["lab", "--store", "mysql://x"], "unknown store"),
    ] {
        let out = usher().args(&args).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} succeeded");
        assert!(stderr.contains(want), "{args:?}: {stderr}");
    }
}
