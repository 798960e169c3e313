//! A small blocking HTTP/1.1 client for talking to a node's API (plain HTTP; nodes serve
//! their API on a trusted network or behind a TLS proxy). Everything a node returns is
//! verified offline before it is believed, so the transport adds no trust.

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::time::Duration;

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// The URL is not `http://HOST:PORT[/...]`.
    #[error("bad node URL {0:?}: expected http://HOST:PORT")]
    Url(String),
    /// Connecting, sending or receiving failed.
    #[error("talking to {url}: {source}")]
    Io {
        /// Request URL.
        url: String,
        /// Why.
        source: std::io::Error,
    },
    /// The answer is not HTTP.
    #[error("malformed answer from {0}")]
    Malformed(String),
    /// The node answered with an error status.
    #[error("{url} answered {status}: {body}")]
    Status {
        /// Request URL.
        url: String,
        /// HTTP status.
        status: u16,
        /// Body (the node's JSON error).
        body: String,
    },
}

/// Largest answer accepted.
const MAX_ANSWER: u64 = 256 << 20;

fn split(url: &str) -> Result<(&str, &str), HttpError> {
    let rest = url.strip_prefix("http://").ok_or_else(|| HttpError::Url(url.to_string()))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, "/"),
    };
    if authority.is_empty() {
        return Err(HttpError::Url(url.to_string()));
    }
    Ok((authority, path))
}

/// Sends one request and returns the status and body.
pub fn request(method: &str, url: &str, content_type: &str, body: &[u8]) -> Result<(u16, Vec<u8>), HttpError> {
    request_with(method, url, content_type, &[], body)
}

/// The path and query of a URL (what a signed request covers).
pub fn path_and_query(url: &str) -> Result<(&str, &str), HttpError> {
    let (_, target) = split(url)?;
    Ok(match target.split_once('?') {
        Some((p, q)) => (p, q),
        None => (target, ""),
    })
}

/// Sends one request with extra headers and returns the status and body.
pub fn request_with(
    method: &str,
    url: &str,
    content_type: &str,
    headers: &[(&str, String)],
    body: &[u8],
) -> Result<(u16, Vec<u8>), HttpError> {
    let (authority, path) = split(url)?;
    let io = |source| HttpError::Io { url: url.to_string(), source };
    let mut stream = TcpStream::connect(authority).map_err(io)?;
    stream.set_read_timeout(Some(Duration::from_secs(60))).map_err(io)?;
    let _ = stream.set_nodelay(true);
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).and_then(|_| stream.write_all(body)).map_err(io)?;
    let mut raw = Vec::new();
    stream.take(MAX_ANSWER).read_to_end(&mut raw).map_err(io)?;
    let malformed = || HttpError::Malformed(url.to_string());
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n").ok_or_else(malformed)?;
    let head = std::str::from_utf8(raw.get(..end).ok_or_else(malformed)?).map_err(|_| malformed())?;
    let body = raw.get(end + 4..).ok_or_else(malformed)?;
    let mut lines = head.split("\r\n");
    let status: u16 =
        lines.next().and_then(|l| l.split_whitespace().nth(1)).and_then(|s| s.parse().ok()).ok_or_else(malformed)?;
    let chunked = lines.any(|l| {
        let l = l.to_ascii_lowercase();
        l.starts_with("transfer-encoding:") && l.contains("chunked")
    });
    let body = if chunked { dechunk(body).ok_or_else(malformed)? } else { body.to_vec() };
    Ok((status, body))
}

fn dechunk(mut data: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = data.windows(2).position(|w| w == b"\r\n")?;
        let size_text = std::str::from_utf8(data.get(..line_end)?).ok()?;
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        data = data.get(line_end + 2..)?;
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(data.get(..size)?);
        data = data.get(size + 2..)?;
    }
}

fn ok(url: &str, (status, body): (u16, Vec<u8>)) -> Result<Vec<u8>, HttpError> {
    if (200..300).contains(&status) {
        Ok(body)
    } else {
        Err(HttpError::Status { url: url.to_string(), status, body: String::from_utf8_lossy(&body).into_owned() })
    }
}

/// GET a JSON document.
pub fn get_json<T: serde::de::DeserializeOwned>(url: &str) -> Result<T, HttpError> {
    let body = ok(url, request("GET", url, "application/json", &[])?)?;
    serde_json::from_slice(&body).map_err(|_| HttpError::Malformed(url.to_string()))
}

/// POST bytes; returns the status and body whatever the status.
pub fn post(url: &str, content_type: &str, body: &[u8]) -> Result<(u16, Vec<u8>), HttpError> {
    request("POST", url, content_type, body)
}
