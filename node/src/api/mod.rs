//! The node's HTTP API (DESIGN.md §9): the ledger's read-only proofs, health and metrics
//! ([`ledger`]), the signed gateway routes for readings, records and receipts
//! ([`gateway`]) and for erasures, holds and live challenges ([`erasures`]), request
//! authentication ([`auth`], one extractor: [`auth::SignedGateway`]), idempotency keys
//! ([`idempotency`]), the one error → HTTP mapping ([`error`]) and the OpenAPI document
//! generated from the handlers' types ([`openapi`]).
//!
//! The API owns its caches (seen nonces, idempotency keys, ingest permits) in
//! [`ApiState`]; it reaches the chain through [`Chain`] and the record lifecycle through
//! [`Records`]. Every answer to a documented operation is listed in the OpenAPI document,
//! errors with the JSON `ErrorBody`, including the framework's own rejections; a method a
//! path does not serve gets 405 and an unknown path 404, with the same body.

pub mod access;
pub mod auth;
pub mod consent;
pub mod erasures;
pub mod error;
pub mod gateway;
pub mod idempotency;
pub mod ledger;
pub mod nonces;
pub mod openapi;
pub mod tls;

#[cfg(test)]
mod metrics_tests;
#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use cairn_proto::encoding::MAX_MESSAGE_LEN;

use crate::chain::Chain;
use crate::metrics::Metrics;
use crate::records::Records;

/// The API's limits (from `node.toml`'s `[custody]`).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Readings being stored at once; beyond this the API answers 429.
    pub max_pending_readings: usize,
    /// Readings in one request.
    pub max_batch_readings: usize,
    /// Largest request body, bytes.
    pub max_body_bytes: usize,
    /// How far a signed request's timestamp may be from the node's clock, milliseconds.
    pub request_skew_ms: u64,
}

/// What the handlers share.
pub struct ApiState {
    /// Ledger, block store, mempool.
    pub chain: Arc<Chain>,
    /// The record lifecycle.
    pub records: Arc<Records>,
    /// Limits.
    pub limits: Limits,
    /// Metrics (the chain's).
    pub metrics: Arc<Metrics>,
    /// The chain's genesis hash: the chain signed requests are bound to.
    pub chain_hash: cairn_proto::Hash32,
    /// Seen request nonces.
    pub nonces: Arc<nonces::NonceStore>,
    /// Readings being stored at once (429 when none is free).
    ingest_permits: Arc<tokio::sync::Semaphore>,
}

impl std::fmt::Debug for ApiState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiState").field("limits", &self.limits).finish_non_exhaustive()
    }
}

impl ApiState {
    /// Puts the parts together.
    pub fn new(chain: Arc<Chain>, records: Arc<Records>, limits: Limits, nonces: Arc<nonces::NonceStore>) -> Arc<Self> {
        Arc::new(ApiState {
            metrics: chain.metrics.clone(),
            chain_hash: records.ledger.chain(),
            chain,
            records,
            limits,
            nonces,
            ingest_permits: Arc::new(tokio::sync::Semaphore::new(limits.max_pending_readings)),
        })
    }
    /// The answer to an erasure error; a fatal one also stops the node
    /// (`Records::note_fatal`).
    fn erasure_error(&self, e: crate::records::erasure::ErasureError) -> error::ApiError {
        if let crate::records::erasure::ErasureError::Fatal(what) = &e {
            self.records.note_fatal(what.clone());
        }
        e.into()
    }
}

/// Longest wait for a request's head (request line and headers), from the moment a
/// connection is accepted or the previous answer was sent: a connection that sends no
/// complete head within it — partial headers, or idle between kept-alive requests — is
/// closed (hyper's `header_read_timeout`).
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest wait for the next piece of a request body: a stalled body ends the request
/// with 408 and the connection (`tower_http::timeout::RequestBodyTimeoutLayer`).
pub const BODY_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Most HTTP connections open at once; past it new connections wait in the listen queue.
pub const MAX_CONNECTIONS: usize = 512;

/// Every route, with the JSON error body for unknown routes, wrong methods and
/// oversized bodies; requests without exactly one `Host` or with a content coding other
/// than gzip are refused before any route sees them, gzip bodies are decompressed, and a
/// stalled body times out.
pub fn router(state: Arc<ApiState>) -> Router {
    let metrics = state.metrics.clone();
    openapi::routes()
        .route_layer(axum::middleware::from_fn(crate::metrics::tag_route))
        .layer(DefaultBodyLimit::max(MAX_MESSAGE_LEN))
        .method_not_allowed_fallback(error::method_not_allowed)
        .fallback(error::no_route)
        .with_state(state)
        .layer(tower_http::decompression::RequestDecompressionLayer::new())
        .layer(tower_http::timeout::RequestBodyTimeoutLayer::new(BODY_READ_TIMEOUT))
        .layer(axum::middleware::from_fn(error::request_checks))
        .layer(axum::middleware::from_fn_with_state(metrics, crate::metrics::track))
}

/// Serves the API on `listener` until the process ends: HTTPS with `tls` (plain HTTP
/// without), HTTP/1.1 through hyper with [`HEADER_READ_TIMEOUT`] (which also bounds the
/// TLS handshake), [`BODY_READ_TIMEOUT`] and at most [`MAX_CONNECTIONS`] connections at
/// once.
pub async fn serve(
    state: Arc<ApiState>,
    listener: tokio::net::TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
) -> std::io::Result<()> {
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    let app = router(state);
    let permits = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(hyper_util::rt::TokioTimer::new()).header_read_timeout(HEADER_READ_TIMEOUT).keep_alive(true);
    loop {
        let Ok(permit) = permits.clone().acquire_owned().await else { return Ok(()) };
        let (tcp, _) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of file descriptors and the like: wait a little, keep serving.
                tracing::warn!("accepting an HTTP connection failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        // Without TCP_NODELAY a kept-alive connection can hold an answer's last segment
        // back until the client's delayed ACK (40 ms).
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!("cannot set TCP_NODELAY: {e}");
        }
        let service = hyper_util::service::TowerToHyperService::new(app.clone());
        let (http, acceptor) = (http.clone(), acceptor.clone());
        tokio::spawn(async move {
            let ended = match acceptor {
                None => http.serve_connection(hyper_util::rt::TokioIo::new(tcp), service).await,
                Some(acceptor) => match tokio::time::timeout(HEADER_READ_TIMEOUT, acceptor.accept(tcp)).await {
                    Ok(Ok(stream)) => http.serve_connection(hyper_util::rt::TokioIo::new(stream), service).await,
                    Ok(Err(e)) => {
                        tracing::debug!("TLS handshake failed: {e}");
                        Ok(())
                    }
                    Err(_) => {
                        tracing::debug!("TLS handshake timed out");
                        Ok(())
                    }
                },
            };
            if let Err(e) = ended {
                tracing::debug!("HTTP connection ended: {e}");
            }
            drop(permit);
        });
    }
}
