//! Talking to a node's API over HTTP/1.1, through `ureq` (ADR 020): TLS (`https://`, rustls
//! with the *ring* provider; the node's certificate must chain to a CA given with
//! [`trust_ca_file`] — the consortium's `ca.pem`, which `cairn-node dev` writes beside the
//! genesis file) or plain HTTP (`http://`, where an operator serves it so). Everything a
//! node returns is verified offline before it is believed; TLS keeps readings and records
//! private on the way (sandbox condition ⑤).
//!
//! This module only adapts `ureq` to cairn's needs: one error type that says which URL
//! failed and whether trying again may help, the status returned whatever it is (a
//! refusal's JSON body is data for the caller), a cap on answers, and `Expect:
//! 100-continue` on large bodies so a node that refuses one (413) is heard before the body
//! is sent.

use std::sync::{Arc, OnceLock, RwLock};
use std::time::Duration;

use ureq::tls::{Certificate, RootCerts, TlsConfig};

/// CAs trusted for `https://` nodes (DER).
static TRUST: RwLock<Vec<Vec<u8>>> = RwLock::new(Vec::new());

/// Trusts the CA certificates in a PEM file for `https://` nodes (added to those trusted
/// before). Call it before the first request: agents take the trusted CAs when they are
/// first used. Returns how many certificates the file held.
///
/// # Errors
/// [`HttpError::Tls`] when the file cannot be read, holds no certificate, or holds one
/// rustls cannot use as a trust anchor.
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
    // Refuse here, with the file's name, what would otherwise fail every handshake later.
    let mut roots = rustls::RootCertStore::empty();
    for c in &certs {
        roots.add(c.clone()).map_err(|e| bad(e.to_string()))?;
    }
    let mut trust = TRUST.write().unwrap_or_else(std::sync::PoisonError::into_inner);
    trust.extend(certs.iter().map(|c| c.to_vec()));
    Ok(certs.len())
}

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// The URL is not `https://HOST:PORT[/...]` or `http://HOST:PORT[/...]`.
    #[error("bad node URL {0:?}: expected https://HOST:PORT (or http:// where the node serves plain HTTP)")]
    Url(String),
    /// TLS could not be set up or failed (no trusted CA, a bad CA file, a certificate the
    /// trusted CAs do not vouch for).
    #[error("TLS: {0}")]
    Tls(String),
    /// Connecting, sending or receiving failed, or timed out (trying again may help).
    #[error("talking to {url}: {source}")]
    Io {
        /// Request URL.
        url: String,
        /// Why.
        source: std::io::Error,
    },
    /// The answer is not HTTP, or larger than 256 MiB.
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

impl HttpError {
    fn from_ureq(url: &str, e: ureq::Error) -> Self {
        match e {
            ureq::Error::Tls(_) | ureq::Error::Rustls(_) => Self::Tls(format!("{url}: {e}")),
            ureq::Error::BadUri(_) => Self::Url(url.to_string()),
            ureq::Error::Protocol(_) | ureq::Error::BodyExceedsLimit(_) | ureq::Error::TooManyRedirects => {
                Self::Malformed(url.to_string())
            }
            other => Self::Io { url: url.to_string(), source: other.into_io() },
        }
    }
}

/// Largest answer accepted (bytes).
const MAX_ANSWER: u64 = 256 << 20;

/// Bodies above this many bytes are sent with `Expect: 100-continue`.
const EXPECT_CONTINUE_ABOVE: usize = 64 << 10;

/// How long to wait for a node's answer once the request is sent (long-polls wait less).
const ANSWER_TIMEOUT: Duration = Duration::from_secs(60);

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

/// Sends one request on a fresh connection and returns the status and body.
///
/// # Errors
/// See [`HttpError`]; an error status is not an error here.
pub fn request(method: &str, url: &str, content_type: &str, body: &[u8]) -> Result<(u16, Vec<u8>), HttpError> {
    request_with(method, url, content_type, &[], body)
}

/// The path and query of a URL (what a signed request covers).
///
/// # Errors
/// [`HttpError::Url`] when the URL is not `http(s)://HOST:PORT[/...]`.
pub fn path_and_query(url: &str) -> Result<(&str, &str), HttpError> {
    let (_, _, target) = split(url)?;
    Ok(match target.split_once('?') {
        Some((p, q)) => (p, q),
        None => (target, ""),
    })
}

/// Sends one request with extra headers on a fresh connection and returns the status and
/// body.
///
/// # Errors
/// See [`HttpError`]; an error status is not an error here.
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

/// A `ureq` agent: with [`Pool::new`] it keeps up to 64 connections open between requests
/// (HTTP/1.1 keep-alive), so a gateway that sends many requests pays for one TCP and TLS
/// handshake per connection, not per request. Clones share the agent and its idle
/// connections; a pool may be used from many threads at once.
#[derive(Debug, Clone)]
pub struct Pool {
    keep: usize,
    agent: Arc<OnceLock<ureq::Agent>>,
}

impl Default for Pool {
    fn default() -> Self {
        Self::new()
    }
}

impl Pool {
    /// A pool that keeps up to 64 idle connections.
    pub fn new() -> Self {
        Self { keep: MAX_IDLE, agent: Arc::default() }
    }

    /// No pooling: every request opens a connection of its own.
    pub fn none() -> Self {
        Self { keep: 0, agent: Arc::default() }
    }

    /// The agent, built on first use with the CAs trusted then.
    fn agent(&self, tls: bool, url: &str) -> Result<&ureq::Agent, HttpError> {
        let built = self.agent.get_or_init(|| {
            let trust = TRUST.read().unwrap_or_else(std::sync::PoisonError::into_inner);
            let roots: Vec<Certificate<'static>> =
                trust.iter().map(|der| Certificate::from_der(der).to_owned()).collect();
            let tls_config = TlsConfig::builder()
                .root_certs(RootCerts::Specific(Arc::new(roots)))
                .unversioned_rustls_crypto_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .build();
            let config = ureq::Agent::config_builder()
                .http_status_as_error(false)
                .max_redirects(0)
                .max_idle_connections(self.keep)
                .max_idle_connections_per_host(self.keep)
                .timeout_connect(Some(Duration::from_secs(10)))
                .timeout_recv_response(Some(ANSWER_TIMEOUT))
                .timeout_recv_body(Some(ANSWER_TIMEOUT))
                .user_agent(concat!("cairn/", env!("CARGO_PKG_VERSION")))
                .tls_config(tls_config)
                .build();
            config.new_agent()
        });
        if tls && TRUST.read().unwrap_or_else(std::sync::PoisonError::into_inner).is_empty() {
            return Err(HttpError::Tls(format!(
                "{url}: no CA is trusted for https nodes; give --ca FILE, CAIRN_CA, or --genesis with ca.pem beside it"
            )));
        }
        Ok(built)
    }

    /// Sends one request with extra headers and returns the status and body, whatever
    /// the status. A kept connection that the node closed while idle is replaced by a new
    /// one (`ureq` retries a request that was not sent).
    ///
    /// # Errors
    /// See [`HttpError`]; an error status is not an error here.
    pub fn request_with(
        &self,
        method: &str,
        url: &str,
        content_type: &str,
        headers: &[(&str, String)],
        body: &[u8],
    ) -> Result<(u16, Vec<u8>), HttpError> {
        let (tls, _, _) = split(url)?;
        let agent = self.agent(tls, url)?;
        let mut builder = ureq::http::Request::builder().method(method).uri(url);
        if !content_type.is_empty() {
            builder = builder.header("Content-Type", content_type);
        }
        if body.len() > EXPECT_CONTINUE_ABOVE {
            builder = builder.header("Expect", "100-continue");
        }
        for (name, value) in headers {
            builder = builder.header(*name, value.as_str());
        }
        let bad = |_| HttpError::Url(url.to_string());
        // No body at all (not an empty one) when there is nothing to send: ureq refuses a
        // body on GET.
        let sent = if body.is_empty() {
            agent.run(builder.body(()).map_err(bad)?)
        } else {
            agent.run(builder.body(body).map_err(bad)?)
        };
        let mut answer = sent.map_err(|e| HttpError::from_ureq(url, e))?;
        let status = answer.status().as_u16();
        let bytes = answer
            .body_mut()
            .with_config()
            .limit(MAX_ANSWER)
            .read_to_vec()
            .map_err(|e| HttpError::from_ureq(url, e))?;
        Ok((status, bytes))
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
///
/// # Errors
/// [`HttpError::Status`] for a non-2xx answer, [`HttpError::Malformed`] when it is not the
/// expected JSON, and the transport errors of [`request`].
pub fn get_json<T: serde::de::DeserializeOwned>(url: &str) -> Result<T, HttpError> {
    let body = ok(url, request("GET", url, "application/json", &[])?)?;
    serde_json::from_slice(&body).map_err(|_| HttpError::Malformed(url.to_string()))
}

/// POST bytes; returns the status and body whatever the status.
///
/// # Errors
/// The transport errors of [`request`].
pub fn post(url: &str, content_type: &str, body: &[u8]) -> Result<(u16, Vec<u8>), HttpError> {
    request("POST", url, content_type, body)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use std::io::{BufRead as _, BufReader, Read as _, Write as _};
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
