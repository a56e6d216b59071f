//! A minimal HTTP/1.1 client (one request per connection) for the publish API and
//! `/metrics`: the bench has no HTTP client library, and needs only this.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::conn::Endpoint;

/// An HTTP base URL: where to connect, the Host header, and the path prefix.
#[derive(Debug, Clone)]
pub(super) struct Base {
    /// The resolved address.
    pub addr: SocketAddr,
    /// `host:port`, for the Host header.
    pub host: String,
    /// The path prefix without a trailing slash (often empty).
    pub prefix: String,
    /// The URL as given.
    pub url: String,
}

impl Base {
    /// Parses `http://HOST:PORT[/prefix]`.
    pub(super) fn parse(url: &str) -> anyhow::Result<Base> {
        let ep = Endpoint::parse(url)?;
        Ok(Base {
            addr: ep.addr,
            host: ep.origin.trim_start_matches("ws://").to_owned(),
            prefix: ep.path.trim_end_matches('/').to_owned(),
            url: url.to_owned(),
        })
    }
}

/// An answer: status and body.
#[derive(Debug)]
pub(super) struct Answer {
    /// The status code.
    pub status: u16,
    /// The body (chunked encoding undone).
    pub body: String,
}

/// Sends one request (`Connection: close`) and reads the whole answer, within `timeout`.
/// Errors are short kinds (`tcp`, `timeout`, `bad_answer`), for counting.
pub(super) async fn request(
    base: &Base,
    method: &str,
    path: &str,
    key: Option<&str>,
    body: Option<&str>,
    timeout: Duration,
) -> Result<Answer, String> {
    let mut req = format!(
        "{method} {}{path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n",
        base.prefix, base.host
    );
    if let Some(k) = key {
        req.push_str(&format!("Authorization: Bearer {k}\r\n"));
    }
    if let Some(b) = body {
        req.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{b}",
            b.len()
        ));
    } else {
        req.push_str("\r\n");
    }
    let io = async {
        let mut s = TcpStream::connect(base.addr)
            .await
            .map_err(|_| "tcp".to_owned())?;
        let _ = s.set_nodelay(true);
        s.write_all(req.as_bytes())
            .await
            .map_err(|_| "tcp".to_owned())?;
        let mut buf = Vec::with_capacity(4096);
        s.read_to_end(&mut buf)
            .await
            .map_err(|_| "tcp".to_owned())?;
        parse(&buf).ok_or_else(|| "bad_answer".to_owned())
    };
    tokio::time::timeout(timeout, io)
        .await
        .unwrap_or_else(|_| Err("timeout".into()))
}

/// Splits a whole HTTP/1.1 answer into status and body.
fn parse(raw: &[u8]) -> Option<Answer> {
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&raw[..end]).ok()?;
    let mut rest = &raw[end + 4..];
    let status: u16 = head.split(' ').nth(1)?.parse().ok()?;
    let chunked = head.lines().any(|l| {
        let l = l.to_ascii_lowercase();
        l.starts_with("transfer-encoding:") && l.contains("chunked")
    });
    let body = if chunked {
        let mut out = Vec::new();
        loop {
            let nl = rest.windows(2).position(|w| w == b"\r\n")?;
            let size_text = std::str::from_utf8(&rest[..nl]).ok()?;
            let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
            rest = &rest[nl + 2..];
            if size == 0 {
                break;
            }
            out.extend_from_slice(rest.get(..size)?);
            rest = rest.get(size + 2..)?;
        }
        out
    } else {
        rest.to_vec()
    };
    Some(Answer {
        status,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_and_chunked_answers() {
        let a = parse(b"HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\n{\"id\":1}").unwrap();
        assert_eq!((a.status, a.body.as_str()), (200, "{\"id\":1}"));
        let a = parse(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nabcd\r\n3\r\nefg\r\n0\r\n\r\n",
        )
        .unwrap();
        assert_eq!((a.status, a.body.as_str()), (200, "abcdefg"));
        assert_eq!(parse(b"HTTP/1.1 503 x\r\n\r\n").unwrap().status, 503);
        assert!(parse(b"garbage").is_none());
    }
}
