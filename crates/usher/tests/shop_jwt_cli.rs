//! `usher shop keygen` and the `--auth jwt` flags as a user runs them.
#![allow(clippy::unwrap_used)]

mod process;

use process::{Running, usher};

#[test]
fn keygen_creates_then_rotates_and_refuses_unknown_algorithms() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("jwt.json");
    let p = path.to_str().unwrap();
    let out = usher()
        .args(["shop", "keygen", "--out", p])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("created"));
    let out = usher()
        .args(["shop", "keygen", "--out", p, "--alg", "ES256"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("rotated"));
    let file: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    let keys = file["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 2, "the old key stays for verification");
    assert_eq!(keys[1]["alg"], "ES256");
    assert_eq!(file["signing_kid"], keys[1]["kid"]);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "private keys are not world-readable");
    }

    let out = usher()
        .args(["shop", "keygen", "--out", p, "--alg", "none"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown algorithm"));
}

#[test]
fn jwt_flags_fail_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite:{}", dir.path().join("shop.db").display());
    let garbage = dir.path().join("garbage.json");
    std::fs::write(&garbage, b"{not a key file").unwrap();
    let garbage = garbage.to_str().unwrap();
    let cases: [(&[&str], &str); 4] = [
        (&["--db", &db, "--auth", "cookie"], "--auth"),
        (
            &["--db", &db, "--jwt-revocation", "sometimes"],
            "--jwt-revocation",
        ),
        (
            &["--db", &db, "--auth", "jwt", "--jwt-keys", garbage],
            "JWT keys",
        ),
        (&[], "--db is required"),
    ];
    for (args, needle) in cases {
        let out = usher()
            .args(["shop", "--listen", "127.0.0.1:0", "--password-cost", "low"])
            .args(args)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} should fail");
        assert!(stderr.contains(needle), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
}

#[test]
fn jwt_shop_without_a_key_file_warns_and_with_one_creates_it() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite:{}", dir.path().join("shop.db").display());
    let mut shop = Running::start(&[
        "shop",
        "--listen",
        "127.0.0.1:0",
        "--db",
        &db,
        "--auth",
        "jwt",
    ]);
    shop.wait_for("no --jwt-keys");
    let ready = shop.wait_for("usher shop ready");
    assert!(
        ready.contains("auth=\"jwt\"") || ready.contains("auth=jwt"),
        "{ready}"
    );
    drop(shop);

    let keys = dir.path().join("jwt.json");
    let mut shop = Running::start(&[
        "shop",
        "--listen",
        "127.0.0.1:0",
        "--db",
        &db,
        "--auth",
        "jwt",
        "--jwt-keys",
        keys.to_str().unwrap(),
    ]);
    shop.wait_for("created JWT key file");
    shop.wait_for("usher shop ready");
    assert!(keys.exists());
}
