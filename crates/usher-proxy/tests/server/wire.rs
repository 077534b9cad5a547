//! Reading responses off the wire: one response with its fields in wire order, chunked
//! bodies, and framing by `Content-Length`, chunks or the close.

/// One response as read off the wire.
#[derive(Debug)]
pub(crate) struct Res {
    pub(crate) status: u16,
    /// Lower-cased names and trimmed values, in wire order.
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) body: Vec<u8>,
}

impl Res {
    /// The first value of `name`.
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// Every value of `name`.
    pub(crate) fn all(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    pub(crate) fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Decodes a chunked body at the start of `buf`: the data and the bytes used, or `None` when
/// it is not complete yet.
fn dechunk(buf: &[u8]) -> Option<(Vec<u8>, usize)> {
    let mut body = Vec::new();
    let mut at = 0;
    loop {
        let line_end = at + buf[at..].windows(2).position(|w| w == b"\r\n")?;
        let line = std::str::from_utf8(&buf[at..line_end]).expect("chunk size line not ASCII");
        let size_text = line.split(';').next().unwrap().trim();
        let size = usize::from_str_radix(size_text, 16)
            .unwrap_or_else(|_| panic!("bad chunk size line {line:?}"));
        at = line_end + 2;
        if size == 0 {
            // Trailer fields (if any) up to the empty line.
            loop {
                let end = at + buf[at..].windows(2).position(|w| w == b"\r\n")?;
                let empty = end == at;
                at = end + 2;
                if empty {
                    return Some((body, at));
                }
            }
        }
        if buf.len() < at + size + 2 {
            return None;
        }
        body.extend_from_slice(&buf[at..at + size]);
        assert_eq!(
            &buf[at + size..at + size + 2],
            b"\r\n",
            "chunk not ended by CRLF"
        );
        at += size + 2;
    }
}

/// Parses one response at the start of `buf`: the response and the bytes it used, or `None`
/// when it is not complete yet. `head_request`: no body follows, whatever the fields say;
/// `eof`: the connection has closed behind `buf`.
pub(crate) fn parse_response(buf: &[u8], head_request: bool, eof: bool) -> Option<(Res, usize)> {
    let end = buf.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let head = std::str::from_utf8(&buf[..end - 4]).expect("response head not ASCII");
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap();
    assert!(
        status_line.starts_with("HTTP/1.1 ") && status_line.len() >= 12,
        "bad status line {status_line:?}"
    );
    let status: u16 = status_line[9..12].parse().unwrap();
    let headers = lines
        .map(|l| {
            let (n, v) = l
                .split_once(':')
                .unwrap_or_else(|| panic!("field without a colon: {l:?}"));
            (n.to_ascii_lowercase(), v.trim().to_owned())
        })
        .collect();
    let mut res = Res {
        status,
        headers,
        body: Vec::new(),
    };
    if head_request || (100..200).contains(&status) || status == 204 || status == 304 {
        return Some((res, end));
    }
    if res
        .header("transfer-encoding")
        .is_some_and(|v| v.eq_ignore_ascii_case("chunked"))
    {
        let (body, used) = dechunk(&buf[end..])?;
        res.body = body;
        return Some((res, end + used));
    }
    let Some(len) = res.header("content-length") else {
        // Delimited by the close (an HTTP/1.0 client, a length not known in advance).
        if !eof {
            return None;
        }
        res.body = buf[end..].to_vec();
        return Some((res, buf.len()));
    };
    let len: usize = len.parse().unwrap();
    if buf.len() < end + len {
        return None;
    }
    res.body = buf[end..end + len].to_vec();
    Some((res, end + len))
}
