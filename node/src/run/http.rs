//! The node's HTTP API: health, metrics, transaction submission and the read-only proofs
//! that anyone holding the genesis file verifies offline (`cairn verify-block`,
//! `cairn verify-consistency`, `cairn checkpoint`).
//!
//! | Route | Answer |
//! |---|---|
//! | `GET /healthz` | `{"status":"ok","height":N}`, 503 until consensus runs |
//! | `GET /readyz` | 200 once consensus runs and enough custodians are connected |
//! | `GET /metrics` | Prometheus text |
//! | `POST /v1/transactions` | body: one bcs-encoded `Transaction`; 202 `{"id"}` |
//! | `GET /v1/blocks/{height}` | `CertifiedBlock` (block and commit certificate) |
//! | `GET /v1/checkpoint` | `CertifiedHeader` of the last decided block |
//! | `GET /v1/checkpoints/{height}` | `CertifiedHeader` at a height |
//! | `GET /v1/log/inclusion?leaf=HEX[&size=N]` | `{"index","size","proof"}` |
//! | `GET /v1/log/consistency?from=N&to=M` | list of hex hashes |
//! | `GET /v1/admins/{key_id}` | `{"organisation","next_nonce"}` for signing a membership change |
//!
//! The gateway API (signed requests) is in [`super::api`]. Errors are JSON
//! `{"code","message"}` with a stable code, and `"field"` where one field is at fault.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use cairn_proto::Hash32;
use cairn_proto::consensus::CertifiedHeader;
use cairn_proto::encoding::{MAX_MESSAGE_LEN, decode};
use cairn_proto::transaction::Transaction;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::Shared;
use super::mempool::Refused;

/// Marks the node healthy (consensus running) or not.
pub fn set_healthy(shared: &Shared, healthy: bool) {
    shared.metrics.healthy.store(healthy, Relaxed);
}

/// An error answer: JSON `{"code","message"}`, plus `"field"` naming the offending
/// header, parameter or field, `"items"` with one error per bad item of a batch, and
/// sometimes one value for programs (such as `"request"`).
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    field: Option<String>,
    /// `"items"` and values for programs, added to the body as they are.
    extra: serde_json::Map<String, serde_json::Value>,
    retry_after: Option<u64>,
}

impl ApiError {
    /// An error with a status, a stable code and a message.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self { status, code, message: message.into(), field: None, extra: serde_json::Map::new(), retry_after: None }
    }
    /// Names the offending field.
    pub fn field(mut self, field: impl Into<String>) -> Self {
        self.field = Some(field.into());
        self
    }
    /// Adds per-item errors.
    pub fn items(mut self, items: serde_json::Value) -> Self {
        self.extra.insert("items".into(), items);
        self
    }
    /// Adds one named value for programs (e.g. the id of the request in the way).
    pub fn detail(mut self, key: &'static str, value: serde_json::Value) -> Self {
        self.extra.insert(key.into(), value);
        self
    }
    /// 429 with `Retry-After: 1`.
    pub fn busy(message: impl Into<String>) -> Self {
        let mut e = Self::new(StatusCode::TOO_MANY_REQUESTS, "busy", message);
        e.retry_after = Some(1);
        e
    }
    /// 500.
    pub fn internal(e: impl std::fmt::Display) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string())
    }
    /// 404.
    pub fn not_found(what: String) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", what)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = serde_json::Map::new();
        body.insert("code".into(), json!(self.code));
        body.insert("message".into(), json!(self.message));
        if let Some(f) = self.field {
            body.insert("field".into(), json!(f));
        }
        body.extend(self.extra);
        let mut response = (self.status, Json(body)).into_response();
        if let Some(secs) = self.retry_after {
            response.headers_mut().insert(axum::http::header::RETRY_AFTER, axum::http::HeaderValue::from(secs));
        }
        response
    }
}

type Api<T> = Result<Json<T>, ApiError>;

/// The router.
pub fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/v1/transactions", post(submit))
        .route("/v1/blocks/{height}", get(block))
        .route("/v1/checkpoint", get(checkpoint))
        .route("/v1/checkpoints/{height}", get(checkpoint_at))
        .route("/v1/log/inclusion", get(inclusion))
        .route("/v1/log/consistency", get(consistency))
        .route("/v1/admins/{key_id}", get(admin))
        .merge(super::api::routes())
        .layer(DefaultBodyLimit::max(MAX_MESSAGE_LEN))
        .fallback(|| async { ApiError::not_found("no such route; see /v1/openapi.json".into()) })
        .with_state(shared)
}

/// Serves the API on `listener` until the process ends.
pub async fn serve(shared: Arc<Shared>, listener: tokio::net::TcpListener) -> anyhow::Result<()> {
    use axum::serve::ListenerExt as _;
    // Without TCP_NODELAY a kept-alive connection can hold an answer's last segment back
    // until the client's delayed ACK (40 ms).
    let listener = listener.tap_io(|tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!("cannot set TCP_NODELAY: {e}");
        }
    });
    axum::serve(listener, router(shared)).await?;
    Ok(())
}

async fn healthz(State(s): State<Arc<Shared>>) -> Response {
    let height = s.ledger().height();
    if s.metrics.healthy.load(Relaxed) {
        (StatusCode::OK, Json(json!({"status": "ok", "height": height}))).into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, Json(json!({"status": "starting", "height": height}))).into_response()
    }
}

/// Ready to take readings: consensus runs and enough custodians are connected.
async fn readyz(State(s): State<Arc<Shared>>) -> Response {
    match (s.metrics.healthy.load(Relaxed), s.records.custodians()) {
        (true, Ok(c)) => (StatusCode::OK, Json(json!({"status": "ready", "custodians": c.len()}))).into_response(),
        (false, _) => (StatusCode::SERVICE_UNAVAILABLE, Json(json!({"status": "starting"}))).into_response(),
        (true, Err(e)) => {
            (StatusCode::SERVICE_UNAVAILABLE, Json(json!({"status": "waiting", "reason": e.to_string()})))
                .into_response()
        }
    }
}

async fn metrics(State(s): State<Arc<Shared>>) -> impl IntoResponse {
    ([("content-type", "text/plain; version=0.0.4")], s.metrics.render())
}

#[derive(Serialize)]
struct Submitted {
    id: Hash32,
}

async fn submit(State(s): State<Arc<Shared>>, body: Bytes) -> Result<(StatusCode, Json<Submitted>), ApiError> {
    let tx: Transaction = decode(&body, MAX_MESSAGE_LEN).map_err(|e| {
        s.metrics.rejected_txs.fetch_add(1, Relaxed);
        ApiError::new(StatusCode::BAD_REQUEST, "malformed_transaction", format!("body is not a bcs Transaction: {e}"))
    })?;
    match s.submit(tx, true) {
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

async fn block(State(s): State<Arc<Shared>>, Path(height): Path<u64>) -> Api<cairn_proto::consensus::CertifiedBlock> {
    s.certified_block(height)
        .map_err(ApiError::internal)?
        .map(Json)
        .ok_or_else(|| ApiError::not_found(format!("no block at height {height}")))
}

fn header_at(s: &Shared, height: u64) -> Api<CertifiedHeader> {
    let cb = s.certified_block(height).map_err(ApiError::internal)?;
    cb.map(|cb| Json(CertifiedHeader { header: cb.block.header, certificate: cb.certificate }))
        .ok_or_else(|| ApiError::not_found(format!("no block at height {height}")))
}

async fn checkpoint(State(s): State<Arc<Shared>>) -> Api<CertifiedHeader> {
    let height = s.ledger().height();
    if height == 0 {
        return Err(ApiError::not_found("no block decided yet".into()));
    }
    header_at(&s, height)
}

async fn checkpoint_at(State(s): State<Arc<Shared>>, Path(height): Path<u64>) -> Api<CertifiedHeader> {
    header_at(&s, height)
}

#[derive(Deserialize)]
struct InclusionQuery {
    leaf: String,
    size: Option<u64>,
}

/// An inclusion proof of a log leaf.
#[derive(Debug, Serialize, Deserialize)]
pub struct InclusionAnswer {
    /// Position of the leaf.
    pub index: u64,
    /// Log size the proof is for.
    pub size: u64,
    /// Audit path.
    pub proof: Vec<Hash32>,
}

async fn inclusion(State(s): State<Arc<Shared>>, Query(q): Query<InclusionQuery>) -> Api<InclusionAnswer> {
    let leaf: [u8; 32] = hex::decode(&q.leaf)
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| ApiError::new(StatusCode::BAD_REQUEST, "bad_leaf", "leaf must be 64 hex digits"))?;
    let ledger = s.ledger();
    let size = q.size.unwrap_or_else(|| ledger.log_size());
    let index = ledger.find_leaf(&leaf).ok_or_else(|| ApiError::not_found("no such leaf in the log".into()))?;
    let proof = ledger
        .log_inclusion(index, size)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "bad_size", e.to_string()))?;
    Ok(Json(InclusionAnswer { index, size, proof: proof.into_iter().map(Hash32).collect() }))
}

#[derive(Deserialize)]
struct ConsistencyQuery {
    from: u64,
    to: u64,
}

async fn consistency(State(s): State<Arc<Shared>>, Query(q): Query<ConsistencyQuery>) -> Api<Vec<Hash32>> {
    let ledger = s.ledger();
    if q.from == 0 {
        return Ok(Json(Vec::new()));
    }
    let proof = ledger
        .log_consistency(q.from, q.to)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "bad_size", e.to_string()))?;
    Ok(Json(proof.into_iter().map(Hash32).collect()))
}

async fn admin(State(s): State<Arc<Shared>>, Path(key_id): Path<String>) -> Result<Json<serde_json::Value>, ApiError> {
    let id: cairn_proto::KeyId = key_id.parse().map_err(|_| {
        ApiError::new(StatusCode::BAD_REQUEST, "bad_key_id", "a key id is 32 hex digits").field("key_id")
    })?;
    let ledger = s.ledger();
    let org = ledger
        .membership()
        .admin_of(&id)
        .map(|o| o.name.clone())
        .ok_or_else(|| ApiError::not_found(format!("{id} is not an organisation admin")))?;
    Ok(Json(json!({"organisation": org, "next_nonce": ledger.next_admin_nonce(&id)})))
}
