//! Interop with PyJWT (tests/interop/pyjwt_check.py).

use serde_json::{Value, json};
use usher_session::jwt::{Algorithm, Claims};

use super::{options, ring_of_all};

/// Tokens issued here verify with PyJWT against our JWKS, and tokens PyJWT signs with keys in
/// our JWKS (and our HS256 secret) verify here. Skipped, loudly, only if python3 lacks PyJWT or
/// cryptography (scripts/test installs them).
#[test]
fn pyjwt_interop() {
    use std::io::Write as _;
    use std::process::{Command, Stdio};
    use usher_session::jwt::KeyMaterial;

    let probe = Command::new("python3")
        .args(["-c", "import jwt, cryptography"])
        .output();
    if !probe.is_ok_and(|o| o.status.success()) {
        eprintln!(
            "\n!!!!!!!! SKIPPED pyjwt_interop: python3 with the `jwt` (PyJWT) and `cryptography` \
             modules is not available; run `python3 -m pip install pyjwt cryptography` !!!!!!!!\n"
        );
        return;
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let (file, _) = ring_of_all(Algorithm::EdDSA);
    let mut c = Claims::new("alice", now, 300);
    c.iss = Some("usher".into());
    c.aud = vec!["shop".into()];
    let mut tokens = Vec::new();
    let mut signers = Vec::new();
    for entry in &file.keys {
        let mut f = file.clone();
        f.signing_kid = entry.kid.clone();
        let ring = f.ring(options()).unwrap();
        match &entry.material {
            KeyMaterial::PrivateKeyPem(pem) => {
                tokens.push(json!({"alg": entry.alg.name(), "kid": entry.kid, "token": ring.sign(&c).unwrap()}));
                signers.push(json!({"alg": entry.alg.name(), "kid": entry.kid, "pem": pem}));
            }
            KeyMaterial::Secret(s) => {
                signers.push(json!({"alg": "HS256", "kid": entry.kid, "secret_b64url": s}));
            }
            KeyMaterial::PublicJwk(_) => unreachable!(),
        }
    }
    let ring = file.ring(options()).unwrap();
    let input = json!({
        "jwks": ring.jwks(),
        "issuer": "usher",
        "audience": "shop",
        "tokens": tokens,
        "signers": signers,
        "claims": Value::Object(c.to_json()),
    });
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/interop/pyjwt_check.py");
    let mut child = Command::new("python3")
        .arg(script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "pyjwt_check.py failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let result: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(result["verified"].as_array().unwrap().len(), 3, "{result}");
    let signed = result["signed"].as_array().unwrap();
    assert_eq!(signed.len(), 4);
    for s in signed {
        let token = s["token"].as_str().unwrap();
        let back = ring
            .verify(token, now)
            .unwrap_or_else(|r| panic!("{}: {r}", s["alg"]));
        assert_eq!(back.sub.as_deref(), Some("alice"));
        assert_eq!(back.exp, now + 300);
    }
    eprintln!(
        "pyjwt_interop: PyJWT {} verified 3 and signed 4",
        result["pyjwt"]
    );
}
