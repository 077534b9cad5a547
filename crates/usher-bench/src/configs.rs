//! HAProxy and NGINX configurations for the comparison: round-robin with keep-alive on both
//! sides, or cookie-sticky; no logging.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::Path;

/// Round-robin or cookie-sticky.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// No affinity.
    Rr,
    /// Cookie affinity.
    Sticky,
}

impl Mode {
    /// Short name used in tables and file names.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Rr => "rr",
            Mode::Sticky => "sticky",
        }
    }
}

/// `haproxy -f` configuration: `nbthread`, `balance roundrobin`, `http-reuse always`,
/// keep-alive both sides, and with `Sticky` `cookie SRV insert indirect nocache`.
pub fn haproxy(
    listen: SocketAddr,
    backends: &[(String, SocketAddr)],
    threads: usize,
    mode: Mode,
    maxconn: usize,
) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "global\n    nbthread {threads}\n    maxconn {maxconn}\n");
    s.push_str(
        "defaults\n    mode http\n    option http-keep-alive\n    http-reuse always\n    \
         timeout connect 2s\n    timeout client 30s\n    timeout server 30s\n    \
         timeout http-keep-alive 30s\n\n",
    );
    let _ = writeln!(
        s,
        "frontend fe\n    bind {listen}\n    default_backend be\n"
    );
    s.push_str("backend be\n    balance roundrobin\n");
    if mode == Mode::Sticky {
        s.push_str("    cookie SRV insert indirect nocache\n");
    }
    for (name, addr) in backends {
        let _ = write!(s, "    server {name} {addr}");
        if mode == Mode::Sticky {
            let _ = write!(s, " cookie {name}");
        }
        s.push('\n');
    }
    s
}

/// `nginx -c` configuration: `worker_processes`, `upstream { keepalive 512; }`, HTTP/1.1 to the
/// upstream, and with `Sticky` `hash $cookie_sid consistent;` (OSS 1.22 has no `sticky`).
/// Everything nginx writes (pid, error log, temp files) stays in `tmp`.
pub fn nginx(
    listen: SocketAddr,
    backends: &[(String, SocketAddr)],
    workers: usize,
    mode: Mode,
    tmp: &Path,
) -> String {
    let t = tmp.display();
    let mut s = String::new();
    let _ = writeln!(
        s,
        "daemon off;\nmaster_process on;\nworker_processes {workers};\npid {t}/nginx.pid;\n\
         error_log {t}/error.log warn;\nworker_rlimit_nofile 16384;\n\
         events {{\n    worker_connections 8192;\n}}\n"
    );
    s.push_str("http {\n    access_log off;\n    keepalive_requests 1000000;\n    keepalive_timeout 60s;\n");
    for d in ["client_body", "proxy", "fastcgi", "uwsgi", "scgi"] {
        let _ = writeln!(s, "    {d}_temp_path {t}/{d}_temp;");
    }
    s.push_str("    upstream be {\n");
    if mode == Mode::Sticky {
        s.push_str("        hash $cookie_sid consistent;\n");
    }
    for (_, addr) in backends {
        let _ = writeln!(s, "        server {addr};");
    }
    s.push_str("        keepalive 512;\n        keepalive_requests 1000000;\n    }\n");
    let _ = writeln!(
        s,
        "    server {{\n        listen {listen};\n        location / {{\n            \
         proxy_pass http://be;\n            proxy_http_version 1.1;\n            \
         proxy_set_header Connection \"\";\n        }}\n    }}\n}}"
    );
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backends() -> Vec<(String, SocketAddr)> {
        (0..3)
            .map(|i| {
                (
                    format!("b{i}"),
                    SocketAddr::from(([127, 0, 0, 1], 9000 + i)),
                )
            })
            .collect()
    }

    #[test]
    fn haproxy_sticky_and_rr() {
        let l = SocketAddr::from(([127, 0, 0, 1], 8000));
        let c = haproxy(l, &backends(), 2, Mode::Sticky, 5000);
        for s in [
            "nbthread 2",
            "maxconn 5000",
            "balance roundrobin",
            "http-reuse always",
            "option http-keep-alive",
            "cookie SRV insert indirect nocache",
            "server b1 127.0.0.1:9001 cookie b1",
            "bind 127.0.0.1:8000",
        ] {
            assert!(c.contains(s), "{s} in {c}");
        }
        assert!(!c.contains(" log"));
        let c = haproxy(l, &backends(), 1, Mode::Rr, 5000);
        assert!(!c.contains("cookie"));
        assert!(c.contains("server b2 127.0.0.1:9002\n"));
    }

    #[test]
    fn nginx_sticky_and_rr() {
        let l = SocketAddr::from(([127, 0, 0, 1], 8000));
        let c = nginx(l, &backends(), 2, Mode::Sticky, Path::new("/tmp/x"));
        for s in [
            "worker_processes 2;",
            "daemon off;",
            "master_process on;",
            "pid /tmp/x/nginx.pid;",
            "client_body_temp_path /tmp/x/client_body_temp;",
            "keepalive 512;",
            "proxy_http_version 1.1;",
            "proxy_set_header Connection \"\";",
            "hash $cookie_sid consistent;",
            "access_log off;",
            "server 127.0.0.1:9001;",
            "listen 127.0.0.1:8000;",
        ] {
            assert!(c.contains(s), "{s} in {c}");
        }
        let c = nginx(l, &backends(), 1, Mode::Rr, Path::new("/tmp/x"));
        assert!(!c.contains("hash"));
        assert_eq!(c.matches('{').count(), c.matches('}').count());
    }
}
