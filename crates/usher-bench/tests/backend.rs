//! The tiny backend over real sockets: it names itself in `X-Backend`, listens on several ports
//! with `--ports`, and `--set-cookie` hands out a distinct cookie on every response.

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

struct Backend(Child);

impl Drop for Backend {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `usher-bench backend ARGS` and returns the `(name, addr)` of each listening line.
fn start(args: &[&str], ports: usize) -> (Backend, Vec<(String, SocketAddr)>) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_usher-bench"))
        .arg("backend")
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start usher-bench backend");
    let stdout = child.stdout.take().expect("stdout");
    let b = Backend(child);
    let mut out = Vec::new();
    // Bounded: the process prints one line per port, or exits (EOF ends the loop).
    for line in BufReader::new(stdout).lines().take(ports) {
        let line = line.expect("read line");
        let f: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(f[0], "listening", "{line}");
        out.push((f[1].to_owned(), f[2].parse().expect("addr")));
    }
    assert_eq!(out.len(), ports, "backend printed {out:?}");
    (b, out)
}

/// One GET on a keep-alive connection; returns the response head (lower-cased).
fn get(conn: &mut TcpStream) -> String {
    conn.write_all(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        .expect("write");
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    // Bounded by the read timeout and the size check.
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        assert!(buf.len() < 65536, "head too large");
        let n = conn.read(&mut chunk).expect("read");
        assert!(n > 0, "closed");
        buf.extend_from_slice(&chunk[..n]);
    }
    let end = buf.windows(4).position(|w| w == b"\r\n\r\n").expect("end") + 4;
    let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
    let body_have = buf.len() - end;
    let mut rest = vec![0u8; 3usize.saturating_sub(body_have)];
    conn.read_exact(&mut rest).expect("body");
    head
}

fn connect(addr: SocketAddr) -> TcpStream {
    let c = TcpStream::connect(addr).expect("connect");
    c.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    c
}

fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
        .map(str::trim)
}

#[test]
fn backends_name_themselves() {
    let (_a, a) = start(&["--listen", "127.0.0.1:0", "--name", "b0"], 1);
    let (_b, b) = start(&["--listen", "127.0.0.1:0", "--name", "b1"], 1);
    for (name, addr) in a.iter().chain(b.iter()) {
        let mut c = connect(*addr);
        for _ in 0..3 {
            let head = get(&mut c);
            assert!(head.starts_with("http/1.1 200"), "{head}");
            assert_eq!(header(&head, "x-backend"), Some(name.as_str()));
            assert_eq!(header(&head, "set-cookie"), None);
        }
    }
}

#[test]
fn many_ports_and_distinct_cookies() {
    let (_p, addrs) = start(
        &[
            "--listen",
            "127.0.0.1:0",
            "--name",
            "m",
            "--ports",
            "3",
            "--set-cookie",
            "JSESSIONID",
        ],
        3,
    );
    let names: Vec<&str> = addrs.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["m-0", "m-1", "m-2"]);
    let mut cookies = std::collections::BTreeSet::new();
    for (name, addr) in &addrs {
        let mut c = connect(*addr);
        for _ in 0..4 {
            let head = get(&mut c);
            assert_eq!(header(&head, "x-backend"), Some(name.as_str()));
            let v = header(&head, "set-cookie").expect("set-cookie");
            assert!(v.starts_with("jsessionid="), "{v}");
            assert!(cookies.insert(v.to_owned()), "repeated cookie {v}");
        }
    }
    assert_eq!(cookies.len(), 12);
}
