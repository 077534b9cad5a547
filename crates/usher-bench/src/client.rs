//! A minimal HTTP/1.1 keep-alive client over tokio for the checks, the idle-connection holder
//! and the request driver: GET `/` with an optional cookie, read the head and a
//! `Content-Length` or chunked body. Enough for the tiny backends and the proxies in front of
//! them; not a general client.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use anyhow::{Context as _, bail};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpSocket, TcpStream};

/// Largest response head accepted.
const MAX_HEAD: usize = 64 * 1024;
/// Per-request deadline.
const TIMEOUT: Duration = Duration::from_secs(10);

/// A parsed response head.
#[derive(Debug, Clone)]
pub struct Resp {
    /// Status code.
    pub status: u16,
    /// Header names (lower-cased) and values, in order.
    pub headers: Vec<(String, String)>,
}

impl Resp {
    /// First value of header `name` (lower-case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The backend that answered (`X-Backend`).
    pub fn backend(&self) -> Option<&str> {
        self.header("x-backend")
    }

    /// The `name=value` part of every `Set-Cookie`.
    pub fn set_cookies(&self) -> Vec<String> {
        self.headers
            .iter()
            .filter(|(n, _)| n == "set-cookie")
            .filter_map(|(_, v)| v.split(';').next().map(|s| s.trim().to_owned()))
            .collect()
    }
}

/// Parses a response head (everything before the blank line).
pub fn parse_head(head: &str) -> anyhow::Result<Resp> {
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let mut parts = status_line.split_whitespace();
    if !parts.next().is_some_and(|v| v.starts_with("HTTP/1.")) {
        bail!("not an HTTP/1 status line: {status_line:?}");
    }
    let status = parts
        .next()
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("bad status line {status_line:?}"))?;
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    Ok(Resp { status, headers })
}

/// One keep-alive connection.
#[derive(Debug)]
pub struct Conn {
    stream: TcpStream,
    host: String,
    buf: Vec<u8>,
}

impl Conn {
    /// Connects to `addr`.
    pub async fn connect(addr: SocketAddr) -> anyhow::Result<Self> {
        Self::connect_from(None, addr).await
    }

    /// Connects to `addr` from source address `src` (any port) when given.
    pub async fn connect_from(src: Option<IpAddr>, addr: SocketAddr) -> anyhow::Result<Self> {
        let sock = match addr {
            SocketAddr::V4(_) => TcpSocket::new_v4()?,
            SocketAddr::V6(_) => TcpSocket::new_v6()?,
        };
        if let Some(ip) = src {
            sock.bind(SocketAddr::new(ip, 0))?;
        }
        let stream = tokio::time::timeout(TIMEOUT, sock.connect(addr))
            .await
            .context("connect timed out")?
            .with_context(|| format!("cannot connect to {addr}"))?;
        stream.set_nodelay(true)?;
        Ok(Self {
            stream,
            host: addr.to_string(),
            buf: Vec::with_capacity(1024),
        })
    }

    /// Sends `GET /` (with `Cookie: cookie` when given) and reads the response.
    pub async fn get(&mut self, cookie: Option<&str>) -> anyhow::Result<Resp> {
        tokio::time::timeout(TIMEOUT, self.get_inner(cookie))
            .await
            .context("request timed out")?
    }

    async fn get_inner(&mut self, cookie: Option<&str>) -> anyhow::Result<Resp> {
        let mut req = format!("GET / HTTP/1.1\r\nHost: {}\r\n", self.host);
        if let Some(c) = cookie {
            req.push_str(&format!("Cookie: {c}\r\n"));
        }
        req.push_str("\r\n");
        self.stream.write_all(req.as_bytes()).await?;
        let end = loop {
            if let Some(i) = find(&self.buf, b"\r\n\r\n") {
                break i;
            }
            if self.buf.len() > MAX_HEAD {
                bail!("response head larger than {MAX_HEAD} bytes");
            }
            self.fill().await?;
        };
        let head = String::from_utf8_lossy(&self.buf[..end]).into_owned();
        self.buf.drain(..end + 4);
        let resp = parse_head(&head)?;
        if resp
            .header("transfer-encoding")
            .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"))
        {
            let end = loop {
                if let Some(i) = find(&self.buf, b"0\r\n\r\n") {
                    break i + 5;
                }
                self.fill().await?;
            };
            self.buf.drain(..end);
        } else {
            let len: usize = resp
                .header("content-length")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            while self.buf.len() < len {
                self.fill().await?;
            }
            self.buf.drain(..len);
        }
        Ok(resp)
    }

    async fn fill(&mut self) -> anyhow::Result<()> {
        let mut chunk = [0u8; 4096];
        let n = self.stream.read(&mut chunk).await?;
        if n == 0 {
            bail!("connection closed by the server");
        }
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(())
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn head_parsing() {
        let r = parse_head(
            "HTTP/1.1 200 OK\r\nX-Backend: b1\r\nSet-Cookie: SRV=b1; path=/\r\nset-cookie: usher=abc\r\ncontent-length: 3",
        )
        .unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(r.backend(), Some("b1"));
        assert_eq!(r.set_cookies(), vec!["SRV=b1", "usher=abc"]);
        assert!(parse_head("garbage").is_err());
    }
}
