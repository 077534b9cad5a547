//! HAProxy and NGINX configurations for the comparison: round-robin with keep-alive on both
//! sides, or cookie-sticky; no logging. With [`Forwarding::Same`] (the default) they also add the
//! request headers `usher lb` adds by default, so every proxy does the same work per request.

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

/// Which request headers HAProxy and NGINX add on the way to a backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Forwarding {
    /// What `usher lb` adds by default: `X-Forwarded-For`, `X-Forwarded-Proto`,
    /// `X-Forwarded-Host`, `Forwarded` and an `X-Request-Id` (the client's, else a fresh random
    /// one) that is also echoed on the response; the client's `Host` is passed through.
    #[default]
    Same,
    /// Nothing added (their defaults: less work per request than usher does).
    Bare,
}

impl Forwarding {
    /// Parses `same` or `bare`.
    pub fn parse(s: &str) -> anyhow::Result<Self> {
        match s {
            "same" => Ok(Self::Same),
            "bare" => Ok(Self::Bare),
            _ => anyhow::bail!("unknown forwarding {s:?} (same, bare)"),
        }
    }

    /// What the report says about it.
    pub fn describe(self) -> &'static str {
        match self {
            Self::Same => {
                "HAProxy and NGINX add the request headers usher lb adds by default \
                 (X-Forwarded-For, X-Forwarded-Proto, X-Forwarded-Host, Forwarded, and an \
                 X-Request-Id kept from the client or made fresh and echoed on the response), so \
                 every proxy does the same work per request"
            }
            Self::Bare => {
                "HAProxy and NGINX run without forwarding headers or request ids (their \
                 defaults), while usher lb adds its five: the others do less work per request"
            }
        }
    }
}

/// HAProxy frontend lines that add usher's default request headers (`uuid()` is a random
/// 128-bit id, as usher's is).
const HAPROXY_SAME: &str = "    unique-id-format %[uuid()]\n    \
    http-request set-header X-Request-Id %[unique-id] unless { req.hdr(x-request-id) -m found }\n    \
    http-request set-var(txn.rid) req.hdr(x-request-id)\n    \
    http-after-response set-header X-Request-Id %[var(txn.rid)]\n    \
    option forwardfor\n    \
    http-request set-header X-Forwarded-Proto http\n    \
    http-request set-header X-Forwarded-Host %[req.hdr(host)]\n    \
    http-request set-header Forwarded 'for=%[src];host=\"%[req.hdr(host)]\";proto=http'\n";

/// NGINX location lines that add usher's default request headers (`$request_id`: 32 random
/// hex digits, as usher's is). NGINX sends `Host: <upstream name>` unless told otherwise.
const NGINX_SAME: &str = "            proxy_set_header Host $http_host;\n            \
    proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;\n            \
    proxy_set_header X-Forwarded-Proto $scheme;\n            \
    proxy_set_header X-Forwarded-Host $http_host;\n            \
    proxy_set_header Forwarded \"for=$remote_addr;host=\\\"$http_host\\\";proto=$scheme\";\n            \
    proxy_set_header X-Request-Id $usher_rid;\n            \
    add_header X-Request-Id $usher_rid always;\n";

/// `haproxy -f` configuration: `nbthread`, `balance roundrobin`, `http-reuse always`,
/// keep-alive both sides, and with `Sticky` `cookie SRV insert indirect nocache`.
pub fn haproxy(
    listen: SocketAddr,
    backends: &[(String, SocketAddr)],
    threads: usize,
    mode: Mode,
    maxconn: usize,
    fwd: Forwarding,
) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "global\n    nbthread {threads}\n    maxconn {maxconn}\n");
    s.push_str(
        "defaults\n    mode http\n    option http-keep-alive\n    http-reuse always\n    \
         timeout connect 2s\n    timeout client 30s\n    timeout server 30s\n    \
         timeout http-keep-alive 30s\n\n",
    );
    let _ = writeln!(s, "frontend fe\n    bind {listen}");
    if fwd == Forwarding::Same {
        s.push_str(HAPROXY_SAME);
    }
    s.push_str("    default_backend be\n\n");
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
    fwd: Forwarding,
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
    if fwd == Forwarding::Same {
        s.push_str(
            "    map $http_x_request_id $usher_rid {\n        default $http_x_request_id;\n        \
             \"\" $request_id;\n    }\n",
        );
    }
    let _ = write!(
        s,
        "    server {{\n        listen {listen};\n        location / {{\n            \
         proxy_pass http://be;\n            proxy_http_version 1.1;\n            \
         proxy_set_header Connection \"\";\n"
    );
    if fwd == Forwarding::Same {
        s.push_str(NGINX_SAME);
    }
    s.push_str("        }\n    }\n}\n");
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
        let c = haproxy(l, &backends(), 2, Mode::Sticky, 5000, Forwarding::Same);
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
        for s in [
            "option forwardfor",
            "unique-id-format %[uuid()]",
            "http-request set-header X-Forwarded-Proto http",
            "http-request set-header X-Forwarded-Host %[req.hdr(host)]",
            "http-request set-header Forwarded 'for=%[src];host=\"%[req.hdr(host)]\";proto=http'",
            "http-after-response set-header X-Request-Id %[var(txn.rid)]",
        ] {
            assert!(c.contains(s), "{s} in {c}");
        }
        let c = haproxy(l, &backends(), 1, Mode::Rr, 5000, Forwarding::Bare);
        assert!(!c.contains("forwardfor") && !c.contains("X-Request-Id"));
        assert!(!c.contains("cookie"));
        assert!(c.contains("server b2 127.0.0.1:9002\n"));
    }

    #[test]
    fn nginx_sticky_and_rr() {
        let l = SocketAddr::from(([127, 0, 0, 1], 8000));
        let c = nginx(
            l,
            &backends(),
            2,
            Mode::Sticky,
            Path::new("/tmp/x"),
            Forwarding::Same,
        );
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
            "proxy_set_header Host $http_host;",
            "proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;",
            "proxy_set_header Forwarded \"for=$remote_addr;host=\\\"$http_host\\\";proto=$scheme\";",
            "\"\" $request_id;",
            "add_header X-Request-Id $usher_rid always;",
        ] {
            assert!(c.contains(s), "{s} in {c}");
        }
        assert_eq!(c.matches('{').count(), c.matches('}').count());
        let c = nginx(
            l,
            &backends(),
            1,
            Mode::Rr,
            Path::new("/tmp/x"),
            Forwarding::Bare,
        );
        assert!(!c.contains("hash"));
        assert!(!c.contains("X-Forwarded") && !c.contains("usher_rid"));
        assert_eq!(c.matches('{').count(), c.matches('}').count());
    }
}
