//! The ledger's routes: health, readiness and metrics, transaction submission and the
//! read-only proofs that anyone holding the genesis file verifies offline
//! (`cairn verify-block`, `cairn verify-consistency`, `cairn checkpoint`).
//!
//! | Route | Answer |
//! |---|---|
//! | `GET /healthz` | `{"status":"ok","height":N}`, 503 until consensus runs |
//! | `GET /readyz` | 200 once consensus runs and enough custodians are connected |
//! | `GET /metrics` | OpenMetrics text |
//! | `POST /v1/transactions` | body: one bcs-encoded `Transaction`; 202 `{"id"}` |
//! | `GET /v1/blocks/{height}` | `CertifiedBlock` (block and commit certificate) |
//! | `GET /v1/checkpoint` | `CertifiedHeader` of the last decided block |
//! | `GET /v1/checkpoints/{height}` | `CertifiedHeader` at a height |
//! | `GET /v1/log/inclusion?leaf=HEX[&size=N]` | `{"index","size","proof"}` |
//! | `GET /v1/log/consistency?from=N&to=M` | list of hex hashes |
//! | `GET /v1/admins/{key_id}` | `{"organisation","next_nonce"}` for signing a membership change |
//! | `GET /v1/identity` | `{"chain","node","signature_version"}`: what a signed request to this node names |
//!
//!
//! Unsigned: what they serve is public (no content, no subject) or signed itself.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use cairn_proto::Hash32;
use cairn_proto::consensus::{CertifiedBlock, CertifiedHeader};
use cairn_proto::encoding::{MAX_MESSAGE_LEN, decode};
use cairn_proto::transaction::Transaction;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::ApiState;
use super::error::{ApiError, ErrorBody, Path, Query, RawBody};
use super::openapi::{CertifiedBlockDoc, CertifiedHeaderDoc};
use crate::chain::mempool::Refused;

type Api<T> = Result<Json<T>, ApiError>;

/// Health or readiness.
#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    /// `ok`, `ready`, `starting` or `waiting`.
    status: &'static str,
    /// Height of the last decided block (`/healthz`).
    #[serde(skip_serializing_if = "Option::is_none")]
    height: Option<u64>,
    /// Custodians reachable for new records (`/readyz` when ready).
    #[serde(skip_serializing_if = "Option::is_none")]
    custodians: Option<usize>,
    /// Why not ready (`/readyz` when waiting).
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
}

impl Health {
    fn new(status: &'static str) -> Self {
        Self { status, height: None, custodians: None, reason: None }
    }
}

/// Whether consensus runs here.
#[utoipa::path(get, path = "/healthz", tag = "node",
    responses((status = 200, body = Health, description = "consensus runs"), (status = 503, body = Health, description = "starting")))]
pub(super) async fn healthz(State(s): State<Arc<ApiState>>) -> Response {
    let height = Some(s.chain.ledger().height());
    if s.metrics.healthy.load(Relaxed) {
        (StatusCode::OK, Json(Health { height, ..Health::new("ok") })).into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, Json(Health { height, ..Health::new("starting") })).into_response()
    }
}

/// Ready to take readings: consensus runs and enough custodians are connected.
#[utoipa::path(get, path = "/readyz", tag = "node",
    responses((status = 200, body = Health, description = "ready for readings"), (status = 503, body = Health, description = "not ready")))]
pub(super) async fn readyz(State(s): State<Arc<ApiState>>) -> Response {
    match (s.metrics.healthy.load(Relaxed), s.records.custodians()) {
        (true, Ok(c)) => {
            (StatusCode::OK, Json(Health { custodians: Some(c.len()), ..Health::new("ready") })).into_response()
        }
        (false, _) => (StatusCode::SERVICE_UNAVAILABLE, Json(Health::new("starting"))).into_response(),
        (true, Err(e)) => {
            (StatusCode::SERVICE_UNAVAILABLE, Json(Health { reason: Some(e.to_string()), ..Health::new("waiting") }))
                .into_response()
        }
    }
}

/// Counters, gauges and histograms in the OpenMetrics text format (ADR 020); the review,
/// queue and erasure-job gauges are read as the request is answered.
#[utoipa::path(get, path = "/metrics", tag = "node",
    responses((status = 200, body = String, content_type = "application/openmetrics-text", description = "OpenMetrics text format 1.0.0")))]
pub(super) async fn metrics(State(s): State<Arc<ApiState>>) -> impl IntoResponse {
    let (r, now) = (&s.records, crate::clock::now_ms());
    let c = &r.counters;
    if let Ok((open, overdue)) = r.review_counts(now).await {
        c.reviews_open.store(open, Relaxed);
        c.reviews_overdue.store(overdue, Relaxed);
    }
    let mut q = crate::metrics::Queues::default();
    let batchers = [
        ("anchors", &r.anchors),
        ("consent_events", &r.consents),
        ("access_events", &r.access.batches),
        ("erasure_receipts", &r.erasures.batches),
    ];
    for (name, handle) in batchers {
        let (pending, inflight) = handle.depth();
        q.anchor_pending.push((name.to_string(), pending));
        q.anchor_inflight.push((name.to_string(), inflight));
    }
    let store = r.erasures.store.clone();
    if let Ok(Ok(jobs)) = tokio::task::spawn_blocking(move || store.open_jobs()).await {
        let open: Vec<_> = jobs.iter().filter(|j| !j.complete()).collect();
        q.erasure_jobs_open = open.len() as u64;
        q.erasure_jobs_overdue = open.iter().filter(|j| j.deadline_ms < now).count() as u64;
    }
    ([("content-type", crate::metrics::CONTENT_TYPE)], s.metrics.render(c, &q))
}

/// A transaction admitted to the mempool.
#[derive(Debug, Serialize, ToSchema)]
pub struct Submitted {
    /// Its hash.
    #[schema(value_type = String, pattern = "^[0-9a-f]{64}$")]
    id: Hash32,
}

/// Submit a bcs-encoded `Transaction` (a membership change signed by an organisation
/// admin, or a node's batch commitment).
#[utoipa::path(post, path = "/v1/transactions", tag = "ledger",
    request_body(content = Vec<u8>, content_type = "application/octet-stream", description = "one bcs-encoded Transaction"),
    responses((status = 202, body = Submitted, description = "admitted"), (status = 400, body = ErrorBody),
        (status = 409, body = ErrorBody), (status = 413, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub(super) async fn submit(
    State(s): State<Arc<ApiState>>,
    RawBody(body): RawBody,
) -> Result<(StatusCode, Json<Submitted>), ApiError> {
    let tx: Transaction = decode(&body, MAX_MESSAGE_LEN).map_err(|e| {
        s.metrics.rejected_txs.fetch_add(1, Relaxed);
        ApiError::new(StatusCode::BAD_REQUEST, "malformed_transaction", format!("body is not a bcs Transaction: {e}"))
    })?;
    match s.chain.submit(tx, true) {
        Ok(id) => Ok((StatusCode::ACCEPTED, Json(Submitted { id }))),
        Err(Refused::Duplicate) => {
            Err(ApiError::new(StatusCode::CONFLICT, "duplicate_transaction", "this transaction is already pending"))
        }
        Err(Refused::Full(n)) => {
            Err(ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "mempool_full", format!("{n} transactions wait")))
        }
        Err(Refused::Invalid(e)) => Err(ApiError::new(StatusCode::BAD_REQUEST, "invalid_transaction", e.to_string())),
    }
}

/// A decided block with its commit certificate.
#[utoipa::path(get, path = "/v1/blocks/{height}", tag = "ledger",
    params(("height" = u64, Path, minimum = 0, description = "block height")),
    responses((status = 200, body = CertifiedBlockDoc), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 500, body = ErrorBody)))]
pub(super) async fn block(State(s): State<Arc<ApiState>>, Path(height): Path<u64>) -> Api<CertifiedBlock> {
    s.chain
        .certified_block(height)
        .map_err(ApiError::internal)?
        .map(Json)
        .ok_or_else(|| ApiError::not_found(format!("no block at height {height}")))
}

fn header_at(s: &ApiState, height: u64) -> Api<CertifiedHeader> {
    let cb = s.chain.certified_block(height).map_err(ApiError::internal)?;
    cb.map(|cb| Json(CertifiedHeader { header: cb.block.header, certificate: cb.certificate }))
        .ok_or_else(|| ApiError::not_found(format!("no block at height {height}")))
}

/// The certified header of the last decided block (a checkpoint).
#[utoipa::path(get, path = "/v1/checkpoint", tag = "ledger",
    responses((status = 200, body = CertifiedHeaderDoc), (status = 404, body = ErrorBody), (status = 500, body = ErrorBody)))]
pub(super) async fn checkpoint(State(s): State<Arc<ApiState>>) -> Api<CertifiedHeader> {
    let height = s.chain.ledger().height();
    if height == 0 {
        return Err(ApiError::not_found("no block decided yet".into()));
    }
    header_at(&s, height)
}

/// The certified header at a height.
#[utoipa::path(get, path = "/v1/checkpoints/{height}", tag = "ledger",
    params(("height" = u64, Path, minimum = 0, description = "block height")),
    responses((status = 200, body = CertifiedHeaderDoc), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 500, body = ErrorBody)))]
pub(super) async fn checkpoint_at(State(s): State<Arc<ApiState>>, Path(height): Path<u64>) -> Api<CertifiedHeader> {
    header_at(&s, height)
}

/// The query of `GET /v1/log/inclusion`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct InclusionQuery {
    /// The log leaf (64 hex digits).
    #[param(pattern = "^[0-9a-fA-F]{64}$")]
    leaf: String,
    /// Log size the proof is for (default: the current size).
    #[param(minimum = 0)]
    size: Option<u64>,
}

/// An inclusion proof of a log leaf (RFC 9162 §2.1.3).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct InclusionAnswer {
    /// Position of the leaf.
    pub index: u64,
    /// Log size the proof is for.
    pub size: u64,
    /// Audit path.
    #[schema(value_type = Vec<String>)]
    pub proof: Vec<Hash32>,
}

/// Inclusion proof of a batch commitment in the global log.
#[utoipa::path(get, path = "/v1/log/inclusion", tag = "ledger", params(InclusionQuery),
    responses((status = 200, body = InclusionAnswer), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(super) async fn inclusion(State(s): State<Arc<ApiState>>, Query(q): Query<InclusionQuery>) -> Api<InclusionAnswer> {
    let leaf: [u8; 32] = hex::decode(&q.leaf)
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| ApiError::new(StatusCode::BAD_REQUEST, "bad_leaf", "leaf must be 64 hex digits"))?;
    let ledger = s.chain.ledger();
    let size = q.size.unwrap_or_else(|| ledger.log_size());
    let (index, proof) = ledger
        .log_inclusion_of(&leaf, size)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "bad_size", e.to_string()))?
        .ok_or_else(|| ApiError::not_found("no such leaf in the log".into()))?;
    Ok(Json(InclusionAnswer { index, size, proof }))
}

/// The query of `GET /v1/log/consistency`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ConsistencyQuery {
    /// The older log size.
    #[param(minimum = 0)]
    from: u64,
    /// The newer log size.
    #[param(minimum = 0)]
    to: u64,
}

/// Consistency proof between two sizes of the global log (RFC 9162 §2.1.4).
#[utoipa::path(get, path = "/v1/log/consistency", tag = "ledger", params(ConsistencyQuery),
    responses((status = 200, body = Vec<String>, description = "the proof, hex hashes"), (status = 400, body = ErrorBody)))]
pub(super) async fn consistency(State(s): State<Arc<ApiState>>, Query(q): Query<ConsistencyQuery>) -> Api<Vec<Hash32>> {
    let ledger = s.chain.ledger();
    if q.from == 0 {
        return Ok(Json(Vec::new()));
    }
    let proof = ledger
        .log_consistency(q.from, q.to)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "bad_size", e.to_string()))?;
    Ok(Json(proof.into_iter().map(Hash32).collect()))
}

/// An organisation admin, for signing a membership change.
#[derive(Debug, Serialize, ToSchema)]
pub struct Admin {
    /// The admin's organisation.
    organisation: String,
    /// The nonce its next membership change must carry.
    next_nonce: u64,
}

/// The organisation of an admin key and the nonce of its next membership change.
#[utoipa::path(get, path = "/v1/admins/{key_id}", tag = "ledger",
    params(("key_id" = String, Path, pattern = "^[0-9a-f]{32}$", description = "admin key id")),
    responses((status = 200, body = Admin), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(super) async fn admin(State(s): State<Arc<ApiState>>, Path(key_id): Path<String>) -> Api<Admin> {
    let id: cairn_proto::KeyId = key_id.parse().map_err(|_| {
        ApiError::new(StatusCode::BAD_REQUEST, "bad_key_id", "a key id is 32 hex digits").field("key_id")
    })?;
    let ledger = s.chain.ledger();
    let organisation = ledger
        .membership()
        .admin_of(&id)
        .map(|o| o.name.clone())
        .ok_or_else(|| ApiError::not_found(format!("{id} is not an organisation admin")))?;
    Ok(Json(Admin { organisation, next_nonce: ledger.next_admin_nonce(&id) }))
}

/// Who this node is: what a signed request is bound to (ADR 015).
#[derive(Debug, Serialize, ToSchema)]
pub struct Identity {
    /// The chain's genesis hash (64 hex digits).
    #[schema(value_type = String, pattern = "^[0-9a-f]{64}$")]
    chain: Hash32,
    /// This node's validator key id (32 hex digits).
    #[schema(value_type = String, pattern = "^[0-9a-f]{32}$")]
    node: cairn_proto::KeyId,
    /// The signature format this node checks (`x-cairn-signature-version`).
    signature_version: u8,
    /// With `nonce`: the validator's public key (64 hex digits), whose key id is `node`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, pattern = "^[0-9a-f]{64}$")]
    public_key: Option<String>,
    /// With `nonce`: its ed25519 signature (128 hex digits) over
    /// `"cairn/sig/identity/v1" ‖ chain ‖ node ‖ nonce`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, pattern = "^[0-9a-f]{128}$")]
    signature: Option<String>,
}

/// The query of `GET /v1/identity`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct IdentityQuery {
    /// 16 random bytes (32 hex digits): the node signs its identity with them.
    #[param(pattern = "^[0-9a-fA-F]{32}$")]
    nonce: Option<String>,
}

/// The chain and node a signed request to this node must name, proven with the node's
/// validator key when the caller gives a nonce.
#[utoipa::path(get, path = "/v1/identity", tag = "node", params(IdentityQuery),
    responses((status = 200, body = Identity), (status = 400, body = ErrorBody)))]
pub(super) async fn identity(State(s): State<Arc<ApiState>>, Query(q): Query<IdentityQuery>) -> Api<Identity> {
    let me = s.records.me;
    let (public_key, signature) = match q.nonce.as_deref() {
        None => (None, None),
        Some(hex_nonce) => {
            let nonce: [u8; 16] = hex::decode(hex_nonce)
                .ok()
                .and_then(|b| b.try_into().ok())
                .ok_or_else(|| ApiError::new(StatusCode::BAD_REQUEST, "bad_nonce", "32 hex digits").field("nonce"))?;
            let statement = cairn_proto::request::identity_statement(&s.chain_hash, &me, &nonce);
            let (public, signature) = s.records.erasures.sign_identity(&statement);
            (Some(public.to_string()), Some(hex::encode(signature.0)))
        }
    };
    Ok(Json(Identity {
        chain: s.chain_hash,
        node: me,
        signature_version: cairn_proto::request::VERSION,
        public_key,
        signature,
    }))
}
