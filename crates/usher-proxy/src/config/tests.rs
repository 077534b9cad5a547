use super::*;

fn parse(text: &str) -> Result<LbConfig, String> {
    let raw: FileConfig = toml::from_str(text).map_err(|e| e.to_string())?;
    LbConfig::from_raw(raw, Some(text)).map_err(|e| e.to_string())
}

const GOOD: &str = r#"
listen = "127.0.0.1:8080"
policy = "least-conn"
affinity = "header:X-Session-Id"
on_failure = "strict"
trusted_proxies = ["10.0.0.0/8"]

[cookie]
name = "lb"
same_site = "strict"
max_age = "2h"
idle_timeout = "15m"

[limits]
header_read_timeout = "5s"
max_header_bytes = 32768

[[backend]]
id = "shop-0"
addr = "127.0.0.1:9001"

[[backend]]
id = "shop-1"
addr = "127.0.0.1:9002"
weight = 3
"#;

#[test]
fn a_full_file_is_read() {
    let c = parse(GOOD).expect("valid config");
    assert_eq!(c.policy, Policy::LeastConn);
    assert_eq!(c.on_failure, FailurePolicy::Strict);
    assert_eq!(c.affinity.to_string(), "header:x-session-id");
    assert_eq!(c.backends.len(), 2);
    assert_eq!(c.backends[1].weight, 3);
    assert_eq!(c.cookie.name, "lb");
    assert_eq!(c.cookie.max_age, Duration::from_secs(7200));
    assert_eq!(c.limits.header_read_timeout, Duration::from_secs(5));
    assert_eq!(c.limits.connect_timeout, Limits::default().connect_timeout);
}

#[test]
fn unknown_fields_are_named_with_their_line() {
    let err = parse("listen = \"127.0.0.1:1\"\nlisten_port = 3\n").unwrap_err();
    assert!(err.contains("listen_port"), "{err}");
    assert!(err.contains("line 2"), "{err}");
}

#[test]
fn bad_values_name_field_and_line() {
    let text = "[[backend]]\nid = \"shop-0\"\naddr = \"nowhere\"\n";
    let err = parse(text).unwrap_err();
    assert!(err.contains("addr") && err.contains("line 3"), "{err}");

    let err = parse("policy = \"random\"\n").unwrap_err();
    assert!(err.contains("policy") && err.contains("line 1"), "{err}");

    let err = parse("[limits]\nidle_timeout = \"ten\"\n").unwrap_err();
    assert!(
        err.contains("idle_timeout") && err.contains("line 2"),
        "{err}"
    );
}

#[test]
fn cross_field_errors_name_the_backend_and_line() {
    let text = "[[backend]]\nid = \"a\"\naddr = \"127.0.0.1:1\"\n\n[[backend]]\nid = \"a\"\naddr = \"127.0.0.1:2\"\n";
    let err = parse(text).unwrap_err();
    assert!(
        err.contains("backend[1].id") && err.contains("duplicate"),
        "{err}"
    );
    assert!(err.contains("line 5"), "{err}");

    let err = parse("[[backend]]\nid = \"a\"\naddr = \"127.0.0.1:1\"\nweight = 0\n").unwrap_err();
    assert!(err.contains("backend[0].weight"), "{err}");

    let err = parse("").unwrap_err();
    assert!(
        err.contains("backend") && err.contains("at least one"),
        "{err}"
    );
}

#[test]
fn limits_are_checked() {
    let base = "[[backend]]\nid = \"a\"\naddr = \"127.0.0.1:1\"\n";
    let err = parse(&format!("{base}[limits]\nmax_header_bytes = 100\n")).unwrap_err();
    assert!(err.contains("limits.max_header_bytes"), "{err}");
    let err = parse(&format!("{base}[limits]\nconnect_timeout = \"0s\"\n")).unwrap_err();
    assert!(err.contains("limits.connect_timeout"), "{err}");
    let err = parse(&format!("balance_factor = 0.5\n{base}")).unwrap_err();
    assert!(err.contains("balance_factor"), "{err}");
    let err = parse(&format!("{base}[cookie]\nname = \"a b\"\n")).unwrap_err();
    assert!(err.contains("cookie.name"), "{err}");
}

#[test]
fn the_example_config_is_valid() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/lb.toml");
    let c = LbConfig::load(&path).expect("examples/lb.toml must stay valid");
    assert!(!c.backends.is_empty());
}

#[test]
fn threads_are_read_and_zero_is_refused() {
    let c = parse(&format!("threads = 2\n{GOOD}")).expect("valid config");
    assert_eq!(c.threads, Some(2));
    assert_eq!(parse(GOOD).expect("valid config").threads, None);
    let e = parse(&format!("threads = 0\n{GOOD}")).expect_err("zero threads");
    assert!(e.contains("threads"), "{e}");
}
