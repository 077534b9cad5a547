//! A byte-level watch for request heads that carry both `Content-Length` and `Transfer-Encoding`.
//!
//! hyper resolves that conflict the RFC 9112 way (it drops `Content-Length`, reads the body as
//! chunked and closes the connection afterwards) and then hides the evidence, so the proxy cannot
//! answer 400 from the parsed request alone. This scanner sees the raw bytes as they are read and
//! latches when one header block (lines up to a blank line) names both fields. The proxy only
//! consults the latch for requests that arrive with `Transfer-Encoding`, which every such
//! smuggling attempt does. Hand-written because no crate exposes the raw head next to hyper's
//! parse; it is deliberately not a second HTTP parser (it never decides framing).

const CL: &[u8] = b"content-length:";
const TE: &[u8] = b"transfer-encoding:";
const PREFIX: usize = 18; // TE.len()

/// Streaming scanner state; feed it every byte read from the client, in order.
#[derive(Debug, Default)]
pub struct HeadScanner {
    prefix: [u8; PREFIX],
    line_len: usize,
    saw_cl: bool,
    saw_te: bool,
    suspicious: bool,
}

impl HeadScanner {
    /// Feeds bytes; returns whether any block so far named both fields.
    pub fn feed(&mut self, bytes: &[u8]) -> bool {
        for &b in bytes {
            if b == b'\n' {
                self.end_line();
            } else {
                if self.line_len < PREFIX {
                    self.prefix[self.line_len] = b.to_ascii_lowercase();
                }
                self.line_len = self.line_len.saturating_add(1);
            }
        }
        self.suspicious
    }

    fn end_line(&mut self) {
        let len = self.line_len.min(PREFIX);
        let line = &self.prefix[..len];
        let blank = self.line_len == 0 || (self.line_len == 1 && self.prefix[0] == b'\r');
        if blank {
            if self.saw_cl && self.saw_te {
                self.suspicious = true;
            }
            self.saw_cl = false;
            self.saw_te = false;
        } else if line.starts_with(CL) {
            self.saw_cl = true;
        } else if line.starts_with(TE) {
            self.saw_te = true;
        }
        self.line_len = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_a_block_with_both_fields_in_any_order_and_case() {
        for head in [
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n",
            "POST / HTTP/1.1\r\ntransfer-encoding: chunked\r\nCONTENT-LENGTH: 4\r\n\r\n",
        ] {
            assert!(HeadScanner::default().feed(head.as_bytes()), "{head}");
        }
    }

    #[test]
    fn works_across_read_boundaries() {
        let head = b"POST / HTTP/1.1\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n";
        for split in 0..head.len() {
            let mut s = HeadScanner::default();
            s.feed(&head[..split]);
            assert!(s.feed(&head[split..]), "split at {split}");
        }
    }

    #[test]
    fn ordinary_requests_are_not_flagged() {
        let mut s = HeadScanner::default();
        let a = b"POST / HTTP/1.1\r\nContent-Length: 4\r\n\r\nbody";
        let b = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nbody\r\n0\r\n\r\n";
        assert!(!s.feed(a));
        assert!(!s.feed(b));
        // Both names in different blocks do not count.
        assert!(!s.feed(b"GET / HTTP/1.1\r\nX-Note: content-length: 1\r\n\r\n"));
    }
}
