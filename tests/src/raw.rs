//! Raw HTTP/1.1 on a TCP socket: for requests no well-behaved client would
//! send (smuggling, obs-fold, bare LF, pipelining), and a small parser for
//! the responses that come back.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Writes `bytes` on a new connection, then reads until the gateway closes
/// it or `wait` passes without data (bounded: at most 30 s in all).
pub async fn exchange(addr: SocketAddr, bytes: &[u8], wait: Duration) -> Vec<u8> {
    let mut tcp = tokio::net::TcpStream::connect(addr)
        .await
        .expect("connect to the gateway");
    let _ = tcp.write_all(bytes).await;
    read_until_quiet(&mut tcp, wait).await
}

/// Reads until EOF, an error, or `wait` without data (30 s at most).
pub async fn read_until_quiet(tcp: &mut tokio::net::TcpStream, wait: Duration) -> Vec<u8> {
    let mut out = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let mut buf = [0u8; 16 * 1024];
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match tokio::time::timeout(wait.min(left), tcp.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => return out,
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
        }
    }
}

/// One parsed response.
#[derive(Debug)]
pub struct RawResponse {
    /// Status code.
    pub status: u16,
    /// Headers, names lower case.
    pub headers: Vec<(String, String)>,
    /// Body (de-chunked).
    pub body: Vec<u8>,
}

impl RawResponse {
    /// A header's first value.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Parses consecutive HTTP/1.1 responses (Content-Length or chunked
/// bodies). Returns what parsed, and the bytes left over that did not
/// (garbage after a desync shows up there).
pub fn parse(mut bytes: &[u8]) -> (Vec<RawResponse>, Vec<u8>) {
    let mut out = Vec::new();
    loop {
        if bytes.is_empty() {
            return (out, Vec::new());
        }
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut resp = httparse::Response::new(&mut headers);
        let head_len = match resp.parse(bytes) {
            Ok(httparse::Status::Complete(n)) => n,
            _ => return (out, bytes.to_vec()),
        };
        let status = resp.code.unwrap_or(0);
        let hs: Vec<(String, String)> = resp
            .headers
            .iter()
            .map(|h| {
                (
                    h.name.to_ascii_lowercase(),
                    String::from_utf8_lossy(h.value).into_owned(),
                )
            })
            .collect();
        let rest = &bytes[head_len..];
        let get = |n: &str| hs.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
        let (body, used) = if get("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
            match dechunk(rest) {
                Some(x) => x,
                None => return (out, bytes.to_vec()),
            }
        } else if let Some(cl) = get("content-length").and_then(|v| v.trim().parse::<usize>().ok())
        {
            if rest.len() < cl {
                return (out, bytes.to_vec());
            }
            (rest[..cl].to_vec(), cl)
        } else if status == 204 || status == 304 || (100..200).contains(&status) {
            (Vec::new(), 0)
        } else {
            (rest.to_vec(), rest.len())
        };
        out.push(RawResponse {
            status,
            headers: hs,
            body,
        });
        bytes = &rest[used..];
    }
}

fn dechunk(mut b: &[u8]) -> Option<(Vec<u8>, usize)> {
    let start = b.len();
    let mut body = Vec::new();
    loop {
        let line_end = b.windows(2).position(|w| w == b"\r\n")?;
        let size_text = std::str::from_utf8(&b[..line_end]).ok()?;
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        b = &b[line_end + 2..];
        if size == 0 {
            // Trailers (none expected), then the final CRLF.
            let end = b.windows(2).position(|w| w == b"\r\n")?;
            b = &b[end + 2..];
            return Some((body, start - b.len()));
        }
        if b.len() < size + 2 {
            return None;
        }
        body.extend_from_slice(&b[..size]);
        b = &b[size + 2..];
    }
}
