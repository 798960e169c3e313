//! A small blocking HTTP/1.1 client for talking to a node's API, over TLS (`https://`,
//! rustls; the node's certificate must chain to a CA given with [`trust_ca_file`] — the
//! consortium's `ca.pem`, which `cairn-node dev` writes beside the genesis file) or plain
//! HTTP (`http://`, where an operator serves it so). Everything a node returns is
//! verified offline before it is believed; TLS keeps readings and records private on
//! the way (sandbox condition ⑤).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::{Arc, RwLock};
use std::time::Duration;

/// CAs trusted for `https://` nodes, and the TLS configuration built from them.
static TRUST: RwLock<Option<(Vec<rustls::pki_types::CertificateDer<'static>>, Arc<rustls::ClientConfig>)>> =
    RwLock::new(None);

/// Trusts the CA certificates in a PEM file for `https://` nodes (added to those trusted
/// before).
pub fn trust_ca_file(path: &std::path::Path) -> Result<usize, HttpError> {
    use rustls::pki_types::pem::PemObject as _;
    let bad = |e: String| HttpError::Tls(format!("{}: {e}", path.display()));
    let certs: Vec<rustls::pki_types::CertificateDer<'static>> = rustls::pki_types::CertificateDer::pem_file_iter(path)
        .map_err(|e| bad(e.to_string()))?
        .collect::<Result<_, _>>()
        .map_err(|e| bad(e.to_string()))?;
    if certs.is_empty() {
        return Err(bad("no certificate in the file".into()));
    }
    let mut trust = TRUST.write().unwrap_or_else(std::sync::PoisonError::into_inner);
    let mut all = trust.take().map(|(c, _)| c).unwrap_or_default();
    all.extend(certs.iter().cloned());
    let mut roots = rustls::RootCertStore::empty();
    for c in &all {
        roots.add(c.clone()).map_err(|e| bad(e.to_string()))?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| bad(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    *trust = Some((all, Arc::new(config)));
    Ok(certs.len())
}

fn tls_config(url: &str) -> Result<Arc<rustls::ClientConfig>, HttpError> {
    let trust = TRUST.read().unwrap_or_else(std::sync::PoisonError::into_inner);
    trust.as_ref().map(|(_, c)| c.clone()).ok_or_else(|| {
        HttpError::Tls(format!(
            "{url}: no CA is trusted for https nodes; give --ca FILE, CAIRN_CA, or --genesis with ca.pem beside it"
        ))
    })
}

/// A connection to a node: plain TCP or TLS over TCP.
enum Conn {
    Plain(TcpStream),
    Tls(Box<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>),
}

impl Read for Conn {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Conn::Plain(s) => s.read(buf),
            Conn::Tls(s) => s.read(buf),
        }
    }
}

impl Write for Conn {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Conn::Plain(s) => s.write(buf),
            Conn::Tls(s) => s.write(buf),
        }
    }
    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Conn::Plain(s) => s.flush(),
            Conn::Tls(s) => s.flush(),
        }
    }
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Conn::Plain(_) => "Conn::Plain",
            Conn::Tls(_) => "Conn::Tls",
        })
    }
}

/// Opens a connection to `authority`, with TLS when `tls`.
fn connect(tls: bool, authority: &str, url: &str) -> Result<Conn, HttpError> {
    let io = |source| HttpError::Io { url: url.to_string(), source };
    let stream = TcpStream::connect(authority).map_err(io)?;
    stream.set_read_timeout(Some(Duration::from_secs(60))).map_err(io)?;
    let _ = stream.set_nodelay(true);
    if !tls {
        return Ok(Conn::Plain(stream));
    }
    let host = match authority.rsplit_once(':') {
        Some((h, _)) => h.trim_start_matches('[').trim_end_matches(']'),
        None => authority,
    };
    let name = rustls::pki_types::ServerName::try_from(host.to_string())
        .map_err(|e| HttpError::Tls(format!("{url}: host {host:?}: {e}")))?;
    let session =
        rustls::ClientConnection::new(tls_config(url)?, name).map_err(|e| HttpError::Tls(format!("{url}: {e}")))?;
    Ok(Conn::Tls(Box::new(rustls::StreamOwned::new(session, stream))))
}

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// The URL is not `https://HOST:PORT[/...]` or `http://HOST:PORT[/...]`.
    #[error("bad node URL {0:?}: expected https://HOST:PORT (or http:// where the node serves plain HTTP)")]
    Url(String),
    /// TLS could not be set up (no trusted CA, a bad CA file, a bad host name).
    #[error("TLS: {0}")]
    Tls(String),
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

/// `(tls, authority, path)` of a URL.
fn split(url: &str) -> Result<(bool, &str, &str), HttpError> {
    let (tls, rest) = match (url.strip_prefix("https://"), url.strip_prefix("http://")) {
        (Some(rest), _) => (true, rest),
        (None, Some(rest)) => (false, rest),
        _ => return Err(HttpError::Url(url.to_string())),
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, "/"),
    };
    if authority.is_empty() {
        return Err(HttpError::Url(url.to_string()));
    }
    Ok((tls, authority, path))
}

/// Sends one request and returns the status and body.
pub fn request(method: &str, url: &str, content_type: &str, body: &[u8]) -> Result<(u16, Vec<u8>), HttpError> {
    request_with(method, url, content_type, &[], body)
}

/// The path and query of a URL (what a signed request covers).
pub fn path_and_query(url: &str) -> Result<(&str, &str), HttpError> {
    let (_, _, target) = split(url)?;
    Ok(match target.split_once('?') {
        Some((p, q)) => (p, q),
        None => (target, ""),
    })
}

/// Sends one request with extra headers on a fresh connection and returns the status and
/// body.
pub fn request_with(
    method: &str,
    url: &str,
    content_type: &str,
    headers: &[(&str, String)],
    body: &[u8],
) -> Result<(u16, Vec<u8>), HttpError> {
    Pool::none().request_with(method, url, content_type, headers, body)
}

/// Idle connections kept per pool.
const MAX_IDLE: usize = 64;

/// A kept connection and the `scheme://host:port` it goes to.
type IdleConnection = (String, Conn);

/// Keeps connections open between requests (HTTP/1.1 keep-alive), so a gateway that sends
/// many requests pays for one TCP handshake per connection, not per request. Clones share
/// the idle connections; a pool may be used from many threads at once.
#[derive(Debug, Clone, Default)]
pub struct Pool {
    idle: Option<std::sync::Arc<std::sync::Mutex<Vec<IdleConnection>>>>,
}

impl Pool {
    /// A pool that keeps up to 64 idle connections.
    pub fn new() -> Self {
        Self { idle: Some(std::sync::Arc::default()) }
    }

    /// No pooling: every request opens a connection and asks the node to close it.
    pub fn none() -> Self {
        Self { idle: None }
    }

    fn take(&self, authority: &str) -> Option<Conn> {
        let mut idle = self.idle.as_ref()?.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let i = idle.iter().rposition(|(a, _)| a == authority)?;
        Some(idle.swap_remove(i).1)
    }

    fn give_back(&self, authority: &str, stream: Conn) {
        if let Some(idle) = &self.idle {
            let mut idle = idle.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            if idle.len() < MAX_IDLE {
                idle.push((authority.to_string(), stream));
            }
        }
    }

    /// Sends one request with extra headers and returns the status and body. A kept
    /// connection that the node closed while idle is replaced by a new one once.
    pub fn request_with(
        &self,
        method: &str,
        url: &str,
        content_type: &str,
        headers: &[(&str, String)],
        body: &[u8],
    ) -> Result<(u16, Vec<u8>), HttpError> {
        let (tls, authority, path) = split(url)?;
        let origin = format!("{}://{authority}", if tls { "https" } else { "http" });
        let keep = self.idle.is_some();
        let mut head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: {}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n",
            if keep { "keep-alive" } else { "close" },
            body.len()
        );
        for (name, value) in headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        head.push_str("\r\n");
        if let Some(mut stream) = self.take(&origin) {
            match exchange(&mut stream, head.as_bytes(), body, url) {
                Ok((status, answer, reusable)) => {
                    if reusable {
                        self.give_back(&origin, stream);
                    }
                    return Ok((status, answer));
                }
                // The node closed the idle connection before reading the request: nothing
                // was done, so send it again on a new connection.
                Err(Exchange::Closed(_)) => {}
                Err(Exchange::Failed(e)) => return Err(e),
            }
        }
        let mut stream = connect(tls, authority, url)?;
        match exchange(&mut stream, head.as_bytes(), body, url) {
            Ok((status, answer, reusable)) => {
                if reusable && keep {
                    self.give_back(&origin, stream);
                }
                Ok((status, answer))
            }
            Err(Exchange::Closed(e) | Exchange::Failed(e)) => Err(e),
        }
    }
}

enum Exchange {
    /// The connection ended before any byte of an answer arrived.
    Closed(HttpError),
    /// Anything else.
    Failed(HttpError),
}

/// Writes a request and reads one answer: status, body, and whether the connection may
/// carry another request.
fn exchange(stream: &mut Conn, head: &[u8], body: &[u8], url: &str) -> Result<(u16, Vec<u8>, bool), Exchange> {
    let io = |source| HttpError::Io { url: url.to_string(), source };
    let malformed = || Exchange::Failed(HttpError::Malformed(url.to_string()));
    // A node may answer before it has read the whole body (413 on a too-large body) and
    // close the connection, which fails the write; its answer is still there to read.
    let unwritten = stream.write_all(head).and_then(|_| stream.write_all(body)).err();
    let mut raw = Vec::with_capacity(4096);
    let mut chunk = [0u8; 16 * 1024];
    let end = loop {
        if let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            break end;
        }
        match stream.read(&mut chunk) {
            Ok(0) if raw.is_empty() => {
                let eof = std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "connection closed");
                return Err(Exchange::Closed(io(unwritten.unwrap_or(eof))));
            }
            Ok(0) => return Err(malformed()),
            Ok(n) => raw.extend_from_slice(chunk.get(..n).unwrap_or_default()),
            Err(e) if raw.is_empty() && e.kind() != std::io::ErrorKind::WouldBlock => {
                return Err(Exchange::Closed(io(unwritten.unwrap_or(e))));
            }
            Err(e) => return Err(Exchange::Failed(io(e))),
        }
        if raw.len() as u64 > MAX_ANSWER {
            return Err(malformed());
        }
    };
    let head = std::str::from_utf8(raw.get(..end).ok_or_else(malformed)?).map_err(|_| malformed())?;
    let mut lines = head.split("\r\n");
    let status: u16 =
        lines.next().and_then(|l| l.split_whitespace().nth(1)).and_then(|s| s.parse().ok()).ok_or_else(malformed)?;
    let (mut length, mut chunked, mut close) = (None, false, false);
    for line in lines {
        let Some((name, value)) = line.split_once(':') else { continue };
        let (name, value) = (name.trim().to_ascii_lowercase(), value.trim().to_ascii_lowercase());
        match name.as_str() {
            "content-length" => length = Some(value.parse::<u64>().map_err(|_| malformed())?),
            "transfer-encoding" => chunked = value.contains("chunked"),
            "connection" => close = value.contains("close"),
            _ => {}
        }
    }
    let mut body = raw.split_off(end + 4);
    let mut more = |body: &mut Vec<u8>| -> Result<bool, Exchange> {
        let n = stream.read(&mut chunk).map_err(|e| Exchange::Failed(io(e)))?;
        body.extend_from_slice(chunk.get(..n).unwrap_or_default());
        if body.len() as u64 > MAX_ANSWER {
            return Err(malformed());
        }
        Ok(n > 0)
    };
    if chunked {
        loop {
            if let Some(out) = dechunk(&body) {
                // The trailer may still be in flight: do not reuse the connection.
                return Ok((status, out, false));
            }
            if !more(&mut body)? {
                return Err(malformed());
            }
        }
    }
    if let Some(length) = length {
        if length > MAX_ANSWER {
            return Err(malformed());
        }
        while (body.len() as u64) < length {
            if !more(&mut body)? {
                return Err(malformed());
            }
        }
        body.truncate(length as usize);
        return Ok((status, body, !close && unwritten.is_none()));
    }
    // No length: the answer ends with the connection.
    while more(&mut body)? {}
    Ok((status, body, false))
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use std::io::{BufRead as _, BufReader};
    use std::net::TcpListener;

    use super::*;

    /// Serves `per_connection` answers on each accepted connection, then closes it;
    /// returns the URL and a counter of accepted connections.
    fn server(per_connection: usize, connections: usize) -> (String, std::thread::JoinHandle<usize>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/x", listener.local_addr().unwrap());
        let handle = std::thread::spawn(move || {
            let mut served = 0;
            for stream in listener.incoming().take(connections) {
                let stream = stream.unwrap();
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut writer = stream;
                for _ in 0..per_connection {
                    let mut length = 0;
                    loop {
                        let mut line = String::new();
                        if reader.read_line(&mut line).unwrap() == 0 {
                            return served;
                        }
                        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                            length = v.trim().parse().unwrap();
                        }
                        if line == "\r\n" {
                            break;
                        }
                    }
                    let mut body = vec![0; length];
                    reader.read_exact(&mut body).unwrap();
                    served += 1;
                    let answer = format!("answer {served} to {}", String::from_utf8_lossy(&body));
                    write!(writer, "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{answer}", answer.len()).unwrap();
                }
            }
            served
        });
        (url, handle)
    }

    #[test]
    fn a_pool_reuses_its_connection_and_replaces_one_the_server_closed() {
        // Two answers per connection, two connections: the third request finds its kept
        // connection closed by the server and is sent again on a new one.
        let (url, server) = server(2, 2);
        let pool = Pool::new();
        for (i, expected) in ["answer 1 to a", "answer 2 to b", "answer 3 to c"].iter().enumerate() {
            let body = [b'a' + i as u8];
            let (status, answer) = pool.request_with("POST", &url, "text/plain", &[], &body).unwrap();
            assert_eq!((status, String::from_utf8(answer).unwrap().as_str()), (200, *expected));
        }
        drop(pool);
        assert_eq!(server.join().unwrap(), 3, "three answers on two connections");
    }

    #[test]
    fn an_answer_sent_before_the_body_was_read_is_returned() {
        // Like a node refusing a too-large body: it reads the head, answers 413 and closes
        // with most of the body unread, so the client's write fails.
        for pool in [Pool::none(), Pool::new()] {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            let url = format!("http://{}/x", listener.local_addr().unwrap());
            let server = std::thread::spawn(move || {
                let (stream, _) = listener.accept().unwrap();
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut line = String::new();
                while line != "\r\n" {
                    line.clear();
                    reader.read_line(&mut line).unwrap();
                }
                let mut writer = stream;
                writer.write_all(b"HTTP/1.1 413 Payload Too Large\r\nContent-Length: 9\r\n\r\ntoo large").unwrap();
            });
            let huge = vec![b' '; 32 << 20];
            let (status, answer) = pool.request_with("POST", &url, "text/plain", &[], &huge).unwrap();
            assert_eq!((status, answer.as_slice()), (413, b"too large".as_slice()));
            server.join().unwrap();
        }
    }

    #[test]
    fn without_a_pool_every_request_has_its_own_connection() {
        let (url, server) = server(1, 2);
        for body in [b"a", b"b"] {
            let (status, answer) = request_with("POST", &url, "text/plain", &[], body).unwrap();
            assert_eq!(status, 200);
            assert!(String::from_utf8(answer).unwrap().starts_with("answer"));
        }
        assert_eq!(server.join().unwrap(), 2);
    }
}
