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

pub mod auth;
pub mod erasures;
pub mod error;
pub mod gateway;
pub mod idempotency;
pub mod ledger;
pub mod openapi;

#[cfg(test)]
mod tests;

use std::sync::{Arc, Mutex, MutexGuard};

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
    /// Idempotency keys remembered (the oldest are forgotten first).
    pub idempotency_keys: usize,
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
    nonces: Mutex<auth::NonceCache>,
    idempotency: Mutex<idempotency::Idempotency>,
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
    pub fn new(chain: Arc<Chain>, records: Arc<Records>, limits: Limits) -> Arc<Self> {
        Arc::new(ApiState {
            metrics: chain.metrics.clone(),
            chain,
            records,
            limits,
            nonces: Mutex::default(),
            idempotency: Mutex::default(),
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
    fn nonces(&self) -> MutexGuard<'_, auth::NonceCache> {
        self.nonces.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
    fn idempotency(&self) -> MutexGuard<'_, idempotency::Idempotency> {
        self.idempotency.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Every route, with the JSON error body for unknown routes, wrong methods and
/// oversized bodies.
pub fn router(state: Arc<ApiState>) -> Router {
    openapi::routes()
        .layer(DefaultBodyLimit::max(MAX_MESSAGE_LEN))
        .method_not_allowed_fallback(error::method_not_allowed)
        .fallback(error::no_route)
        .with_state(state)
}

/// Serves the API on `listener` until the process ends.
pub async fn serve(state: Arc<ApiState>, listener: tokio::net::TcpListener) -> std::io::Result<()> {
    use axum::serve::ListenerExt as _;
    // Without TCP_NODELAY a kept-alive connection can hold an answer's last segment back
    // until the client's delayed ACK (40 ms).
    let listener = listener.tap_io(|tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!("cannot set TCP_NODELAY: {e}");
        }
    });
    axum::serve(listener, router(state)).await
}
