//! The gateway routes for readings, records and receipts (DESIGN.md §9): signed
//! requests ([`SignedGateway`]) under `/v1`.
//!
//! | Route | Caller | Answer |
//! |---|---|---|
//! | `POST /v1/readings?purpose=P&retention_days=D` | gateway | 200 [`Stored`] once every custodian holds the batch durably |
//! | `GET /v1/records/{rid}?purpose=P` | the gateway that wrote it | [`RecordAnswer`] |
//! | `GET /v1/records/{rid}/receipt[?wait_ms=N]` | same | 200 `AnchorReceipt`, 202 [`RecordPending`] while not yet anchored |
//! | `POST /v1/receipts` [`ReceiptsRequest`] | same | [`ReceiptsAnswer`] |

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use cairn_proto::receipt::AnchorReceipt;
use cairn_proto::record::{Manifest, RecordId};
use cairn_proto::{Hash32, KeyId};
use serde::{Deserialize, Serialize};
use serde_json::json;
use serde_json::value::RawValue;
use utoipa::{IntoParams, ToSchema};

use super::ApiState;
use super::auth::SignedGateway;
use super::error::{ApiError, ErrorBody, Path, Query};
use super::idempotency::{self, IDEMPOTENCY_HEADER};
use super::openapi::AnchorReceiptDoc;
use crate::records::RecordsError;
use crate::records::claims::{Claimed, claim_id};
use crate::records::fhir::{self, BodyError, Format};
use crate::records::ingest::{BatchTerms, Ingested};
use crate::records::read::RecordView;

/// Longest wait a caller may ask for, milliseconds.
pub const MAX_WAIT_MS: u64 = 30_000;
/// Longest idempotency key.
const MAX_IDEMPOTENCY_KEY: usize = 128;
/// Most records in one receipts request.
pub const MAX_RECEIPTS: usize = 10_000;

/// The query of `POST /v1/readings`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ReadingsQuery {
    /// Purpose-of-use code the readings are collected for (v3 PurposeOfUse, e.g. `TREAT`):
    /// 1 to 64 printable ASCII characters.
    #[param(required = true, min_length = 1, max_length = 64)]
    purpose: Option<String>,
    /// Retention, whole days from 1 to 36500.
    #[param(required = true, value_type = u32, minimum = 1, maximum = 36500)]
    retention_days: Option<String>,
}

/// One stored reading.
#[derive(Debug, Serialize, ToSchema)]
pub struct StoredRecord {
    /// Record id (32 hex digits).
    #[schema(value_type = String, pattern = "^[0-9a-f]{32}$")]
    rid: RecordId,
    /// Record leaf (64 hex digits).
    #[schema(value_type = String, pattern = "^[0-9a-f]{64}$")]
    leaf: Hash32,
}

/// The answer to `POST /v1/readings`: every reading is durable at every custodian.
#[derive(Debug, Serialize, ToSchema)]
pub struct Stored {
    /// Readings stored.
    count: usize,
    /// Key ids of the custodians (the manifest), 32 hex digits each.
    #[schema(value_type = Vec<String>)]
    custodians: Vec<KeyId>,
    /// One per reading, in the order sent.
    records: Vec<StoredRecord>,
}

fn check_purpose(purpose: Option<&str>) -> Result<String, ApiError> {
    let p = purpose.ok_or_else(|| {
        ApiError::new(StatusCode::BAD_REQUEST, "missing_purpose", "declare a purpose-of-use code (e.g. TREAT)")
            .field("purpose")
    })?;
    if !crate::vault::valid_purpose(p) {
        return Err(ApiError::new(StatusCode::BAD_REQUEST, "bad_purpose", "1 to 64 printable ASCII characters")
            .field("purpose"));
    }
    Ok(p.to_owned())
}

/// Refuses a purpose outside the consortium's policy (sandbox condition ⑥): 403
/// `purpose_not_in_policy`, for collection and for every read.
fn in_policy(s: &ApiState, purpose: &str) -> Result<(), ApiError> {
    let ledger = s.chain.ledger();
    let (policy, _) = ledger.policy();
    if policy.permits(purpose) {
        return Ok(());
    }
    Err(ApiError::new(
        StatusCode::FORBIDDEN,
        "purpose_not_in_policy",
        format!("{purpose} is not among the purposes the consortium permits ({})", policy.purposes.join(", ")),
    )
    .field("purpose"))
}

fn body_format(headers: &HeaderMap) -> Result<Format, ApiError> {
    let content_type = headers.get(axum::http::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    match content_type.split(';').next().unwrap_or("").trim() {
        "application/x-ndjson" | "application/jsonl" | "application/json-lines" => Ok(Format::JsonLines),
        "application/fhir+json" | "application/json" => Ok(Format::Bundle),
        other => Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            format!(
                "{other:?}: send application/x-ndjson (one Observation per line) or application/fhir+json (a Bundle)"
            ),
        )
        .field("content-type")),
    }
}

/// Store readings (FHIR Observations) at every custodian.
#[utoipa::path(post, path = "/v1/readings", tag = "gateway", security(("cairnSignature" = [])),
    params(ReadingsQuery, ("idempotency-key" = Option<String>, Header, max_length = 128,
        description = "a retry with the same key and body gets the first answer")),
    request_body(description = "one Observation per line, or a FHIR Bundle of Observations", content(
        (String = "application/x-ndjson"), (String = "application/fhir+json"))),
    responses((status = 200, body = Stored, description = "stored at every custodian"),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 409, body = ErrorBody), (status = 413, body = ErrorBody), (status = 415, body = ErrorBody),
        (status = 422, body = ErrorBody), (status = 429, body = ErrorBody), (status = 503, body = ErrorBody),
        (status = 500, body = ErrorBody)))]
pub(super) async fn readings(
    State(s): State<Arc<ApiState>>,
    uri: Uri,
    headers: HeaderMap,
    Query(q): Query<ReadingsQuery>,
    signed: SignedGateway,
) -> Result<Response, ApiError> {
    let SignedGateway { gateway, body, now_ms } = signed;
    let purpose = check_purpose(q.purpose.as_deref())?;
    in_policy(&s, &purpose)?;
    let days: u64 =
        q.retention_days.as_deref().and_then(|d| d.parse().ok()).filter(|d| (1..=36_500).contains(d)).ok_or_else(
            || {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "bad_retention",
                    "retention_days must be a whole number from 1 to 36500",
                )
                .field("retention_days")
            },
        )?;
    let format = body_format(&headers)?;
    let readings = match fhir::parse(&body, format, crate::vault::VaultConfig::default().max_payload) {
        Err(BodyError::Malformed(m)) => return Err(ApiError::new(StatusCode::BAD_REQUEST, "malformed_json", m)),
        Err(BodyError::DuplicateKey(path)) => {
            let message = BodyError::DuplicateKey(path.clone()).to_string();
            return Err(ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "duplicate_key", message).field(path));
        }
        Err(BodyError::NotABundle(m)) => {
            return Err(ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "not_a_bundle", m).field("resourceType"));
        }
        Ok(Err(items)) => {
            let n = items.len();
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_fhir",
                format!("{n} item(s) are not acceptable Observations; nothing was stored"),
            )
            .items(json!(items)));
        }
        Ok(Ok(r)) => r,
    };
    if readings.is_empty() {
        return Err(ApiError::new(StatusCode::BAD_REQUEST, "empty_batch", "the batch holds no reading"));
    }
    let max = s.limits.max_batch_readings;
    if readings.len() > max {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_many_readings",
            format!("{} readings in one request; at most {max}", readings.len()),
        ));
    }
    let idem_key = match headers.get(IDEMPOTENCY_HEADER) {
        None => None,
        Some(v) => match v.to_str() {
            Ok(k) if !k.is_empty() && k.len() <= MAX_IDEMPOTENCY_KEY => Some(k.to_owned()),
            _ => {
                return Err(ApiError::new(StatusCode::BAD_REQUEST, "bad_header", "1 to 128 ASCII characters")
                    .field(IDEMPOTENCY_HEADER));
            }
        },
    };
    // What a retry must repeat: the query and the body (after decompression).
    let request_hash =
        cairn_proto::hash::hash_parts("cairn/idempotency-request/v1", &[uri.query().unwrap_or("").as_bytes(), &body]);
    let terms = BatchTerms { gateway, purpose, now_ms, retention_ms: days * 86_400_000 };
    // From the claim to its settlement the work runs in a task of its own: a client that
    // disconnects (a timeout, then a retry elsewhere) does not leave its claim unsettled
    // while the batch is stored anyway.
    let work = tokio::spawn(store(s.clone(), idem_key, request_hash, terms, readings));
    work.await.map_err(ApiError::internal)?
}

/// Claims the idempotency key (if any), stores the readings, settles the claim.
async fn store(
    s: Arc<ApiState>,
    idem_key: Option<String>,
    request_hash: Hash32,
    terms: BatchTerms,
    readings: Vec<fhir::Reading>,
) -> Result<Response, ApiError> {
    let gateway = terms.gateway;
    let claim = match &idem_key {
        None => None,
        Some(key) => {
            let id = claim_id(gateway, key);
            match s.records.claim(id, request_hash).await {
                Claimed::Fresh => Some(id),
                Claimed::Replay(answer) => {
                    let json = [(axum::http::header::CONTENT_TYPE, "application/json")];
                    return Ok((StatusCode::OK, [("idempotent-replayed", "true")], json, answer).into_response());
                }
                Claimed::Reused => return Err(idempotency::reused()),
                Claimed::InProgress => return Err(idempotency::in_progress()),
                Claimed::Unavailable(m) => {
                    return Err(ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "custodians_unavailable", m)
                        .field(IDEMPOTENCY_HEADER));
                }
            }
        }
    };
    let release = async |s: &ApiState| {
        if let Some(id) = claim {
            s.records.settle(id, request_hash, None).await;
        }
    };
    let Ok(permits) = s.ingest_permits.clone().try_acquire_many_owned(readings.len() as u32) else {
        release(&s).await;
        s.metrics.busy_refusals.fetch_add(1, Relaxed);
        return Err(ApiError::busy("the node is storing as many readings as it may; retry shortly"));
    };
    let result = s.records.ingest(terms, readings).await;
    drop(permits);
    match result {
        Ok((manifest, stored)) => {
            s.metrics.readings.fetch_add(stored.len() as u64, Relaxed);
            let records: Vec<StoredRecord> =
                stored.into_iter().map(|Ingested { rid, leaf }| StoredRecord { rid, leaf }).collect();
            let answer = Stored { count: records.len(), custodians: manifest.custodians, records };
            let answer = match serde_json::to_vec(&answer) {
                Ok(answer) => answer,
                Err(e) => {
                    release(&s).await;
                    return Err(ApiError::internal(e));
                }
            };
            if let Some(id) = claim {
                s.records.settle(id, request_hash, Some(answer.clone())).await;
            }
            Ok((StatusCode::OK, [(axum::http::header::CONTENT_TYPE, "application/json")], answer).into_response())
        }
        Err(e) => {
            release(&s).await;
            Err(s.records.note(e).into())
        }
    }
}

fn parse_rid(rid: &str) -> Result<RecordId, ApiError> {
    rid.parse()
        .map_err(|_| ApiError::new(StatusCode::BAD_REQUEST, "bad_rid", "a record id is 32 hex digits").field("rid"))
}

/// The query of `GET /v1/records/{rid}`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RecordQuery {
    /// The purpose of this read; it must be the one the record was collected for.
    #[param(required = true, min_length = 1, max_length = 64)]
    purpose: Option<String>,
}

/// A stored record as its gateway sees it.
#[derive(Debug, Serialize, ToSchema)]
pub struct RecordOut {
    /// Record id.
    #[schema(value_type = String, pattern = "^[0-9a-f]{32}$")]
    rid: RecordId,
    /// The gateway that wrote it (key id).
    #[schema(value_type = String, pattern = "^[0-9a-f]{32}$")]
    gateway: KeyId,
    /// Purpose it was collected for.
    purpose: String,
    /// Received, Unix milliseconds.
    received_at_ms: u64,
    /// Erased on its own after, Unix milliseconds.
    retain_until_ms: u64,
    /// The gateway's subject reference.
    subject: Option<String>,
    /// The FHIR resource as it was sent.
    #[schema(value_type = Object)]
    resource: Box<RawValue>,
    /// Custodians (`{"version":1,"custodians":[key ids]}`).
    #[schema(value_type = Object)]
    manifest: Manifest,
    /// Content commitment `C`.
    #[schema(value_type = String, pattern = "^[0-9a-f]{64}$")]
    commitment: Hash32,
    /// Record leaf.
    #[schema(value_type = String, pattern = "^[0-9a-f]{64}$")]
    leaf: Hash32,
}

/// Who answered a read.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ServedBy {
    /// This node holds the record.
    Custodian,
    /// A custodian answered through this node.
    Forwarded,
}

/// The answer to `GET /v1/records/{rid}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct RecordAnswer {
    /// The record.
    record: RecordOut,
    /// Its anchor receipt, `null` until anchored.
    #[schema(value_type = Option<AnchorReceiptDoc>)]
    receipt: Option<AnchorReceipt>,
    /// Who answered.
    served_by: ServedBy,
}

/// Read a record, for the purpose it was collected for.
#[utoipa::path(get, path = "/v1/records/{rid}", tag = "gateway", security(("cairnSignature" = [])),
    params(("rid" = String, Path, pattern = "^[0-9a-f]{32}$", description = "record id"), RecordQuery),
    responses((status = 200, body = RecordAnswer), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 429, body = ErrorBody), (status = 503, body = ErrorBody), (status = 500, body = ErrorBody)))]
pub(super) async fn record(
    State(s): State<Arc<ApiState>>,
    Path(rid): Path<String>,
    Query(q): Query<RecordQuery>,
    signed: SignedGateway,
) -> Result<Json<RecordAnswer>, ApiError> {
    let rid = parse_rid(&rid)?;
    let purpose = check_purpose(q.purpose.as_deref())?;
    in_policy(&s, &purpose)?;
    let (answer, here) = s.records.read_anywhere(rid, signed.gateway).await.map_err(|e| s.records.note(e))?;
    let r = answer.record;
    if !r.kind.is_reading() {
        // A consent-layer document is read through /v1/documents, by its parties.
        return Err(crate::records::RecordsError::NotFound(rid).into());
    }
    if r.purpose != purpose {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "purpose_mismatch",
            format!("the record was collected for {:?}; a read for {purpose:?} is refused", r.purpose),
        )
        .field("purpose"));
    }
    let resource = RawValue::from_string(r.resource).map_err(ApiError::internal)?;
    let record = RecordOut {
        rid: r.rid,
        gateway: r.gateway,
        purpose: r.purpose,
        received_at_ms: r.received_at_ms,
        retain_until_ms: r.retain_until_ms,
        subject: r.subject,
        resource,
        manifest: r.manifest,
        commitment: r.commitment,
        leaf: r.leaf,
    };
    let served_by = if here { ServedBy::Custodian } else { ServedBy::Forwarded };
    Ok(Json(RecordAnswer { record, receipt: answer.receipt, served_by }))
}

/// The query of `GET /v1/records/{rid}/receipt`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct WaitQuery {
    /// Longest wait for the receipt, milliseconds; a longer wait is cut to 30000 (a
    /// long-poll: ask again on 202).
    #[param(minimum = 0)]
    pub(super) wait_ms: Option<u64>,
}

/// A receipt not there yet.
#[derive(Debug, Serialize, ToSchema)]
pub struct RecordPending {
    /// Always `pending`.
    #[schema(example = "pending")]
    status: String,
    /// The record.
    #[schema(value_type = String, pattern = "^[0-9a-f]{32}$")]
    rid: RecordId,
}

/// Waits until a block is decided or a batch of this node is committed, or `deadline`.
/// Waits for a decided block or an anchored batch seen by `decided`/`anchored` since
/// they were subscribed, until `deadline`; false when the deadline passed.
async fn wait_for_progress(
    decided: &mut tokio::sync::watch::Receiver<u64>,
    anchored: &mut tokio::sync::watch::Receiver<u64>,
    deadline: Instant,
) -> bool {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return false;
    }
    tokio::select! {
        _ = decided.changed() => true,
        _ = anchored.changed() => true,
        _ = tokio::time::sleep(left) => false,
    }
}

/// A record's anchor receipt, waiting for it up to `wait_ms`.
#[utoipa::path(get, path = "/v1/records/{rid}/receipt", tag = "gateway", security(("cairnSignature" = [])),
    params(("rid" = String, Path, pattern = "^[0-9a-f]{32}$", description = "record id"), WaitQuery),
    responses((status = 200, body = AnchorReceiptDoc), (status = 202, body = RecordPending, description = "not yet anchored"),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 429, body = ErrorBody), (status = 503, body = ErrorBody),
        (status = 500, body = ErrorBody)))]
pub(super) async fn receipt(
    State(s): State<Arc<ApiState>>,
    Path(rid): Path<String>,
    Query(q): Query<WaitQuery>,
    signed: SignedGateway,
) -> Result<Response, ApiError> {
    let rid = parse_rid(&rid)?;
    let deadline = Instant::now() + Duration::from_millis(q.wait_ms.unwrap_or(0).min(MAX_WAIT_MS));
    match wait_for_receipts(&s, &[rid], signed.gateway, deadline).await?.pop().flatten() {
        Some(r) => Ok(Json(r).into_response()),
        None => Ok((StatusCode::ACCEPTED, Json(RecordPending { status: "pending".into(), rid })).into_response()),
    }
}

/// Receipts of `rids` (for `gateway`), waiting until all exist or `deadline`. A record
/// held here is read (decrypted) once; later rounds only look its leaf up again. A
/// record held elsewhere is asked for again each round.
async fn wait_for_receipts(
    s: &ApiState,
    rids: &[RecordId],
    gateway: KeyId,
    deadline: Instant,
) -> Result<Vec<Option<AnchorReceipt>>, ApiError> {
    let mut found: Vec<Option<AnchorReceipt>> = vec![None; rids.len()];
    let mut held: Vec<Option<RecordView>> = vec![None; rids.len()];
    loop {
        // Subscribed before looking, so a block decided while we look is not missed (an
        // idle chain may decide the next one only much later, ADR 019).
        let (mut decided, mut anchored) = (s.chain.subscribe_decided(), s.records.anchors.subscribe());
        for ((slot, view), rid) in found.iter_mut().zip(held.iter_mut()).zip(rids) {
            if slot.is_some() || view.is_some() {
                continue;
            }
            match s.records.read_anywhere(*rid, gateway).await {
                // Documents are not the record routes' (their receipts: /v1/documents).
                Ok((answer, _)) if !answer.record.kind.is_reading() => {}
                Ok((answer, here)) => match answer.receipt {
                    Some(r) => *slot = Some(r),
                    None if here => *view = Some(answer.record),
                    None => {}
                },
                Err(RecordsError::NotFound(_)) => {}
                Err(e) => return Err(s.records.note(e).into()),
            }
        }
        let waiting: Vec<RecordView> =
            found.iter().zip(&held).filter(|(f, _)| f.is_none()).filter_map(|(_, v)| v.clone()).collect();
        if !waiting.is_empty() {
            let mut located = s.records.receipts_for(&waiting).await.map_err(|e| s.records.note(e))?.into_iter();
            for (slot, view) in found.iter_mut().zip(&held) {
                if slot.is_none() && view.is_some() {
                    *slot = located.next().flatten();
                }
            }
        }
        if found.iter().all(Option::is_some) || !wait_for_progress(&mut decided, &mut anchored, deadline).await {
            return Ok(found);
        }
    }
}

/// The body of `POST /v1/receipts`.
#[derive(Debug, Deserialize, ToSchema)]
pub struct ReceiptsRequest {
    /// Record ids, at most 10000.
    #[schema(value_type = Vec<String>, max_items = 10000)]
    rids: Vec<RecordId>,
    /// Longest wait for all of them, milliseconds; a longer wait is cut to 30000.
    #[serde(default)]
    #[schema(minimum = 0)]
    wait_ms: u64,
}

/// The answer to `POST /v1/receipts`.
#[derive(Debug, Serialize, ToSchema)]
pub struct ReceiptsAnswer {
    /// In request order; `null` while a record is not yet anchored or not found.
    #[schema(value_type = Vec<Option<AnchorReceiptDoc>>)]
    receipts: Vec<Option<AnchorReceipt>>,
}

/// Anchor receipts of several records, waiting for them up to `wait_ms`.
#[utoipa::path(post, path = "/v1/receipts", tag = "gateway", security(("cairnSignature" = [])),
    request_body(content = ReceiptsRequest, content_type = "application/json"),
    responses((status = 200, body = ReceiptsAnswer), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 413, body = ErrorBody),
        (status = 429, body = ErrorBody), (status = 503, body = ErrorBody), (status = 500, body = ErrorBody)))]
pub(super) async fn receipts(
    State(s): State<Arc<ApiState>>,
    signed: SignedGateway,
) -> Result<Json<ReceiptsAnswer>, ApiError> {
    let req: ReceiptsRequest = serde_json::from_slice(&signed.body).map_err(|e| {
        ApiError::new(StatusCode::BAD_REQUEST, "malformed_json", format!("expected {{\"rids\":[..]}}: {e}"))
    })?;
    if req.rids.len() > MAX_RECEIPTS {
        return Err(ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "too_many_rids", format!("at most {MAX_RECEIPTS}"))
            .field("rids"));
    }
    let deadline = Instant::now() + Duration::from_millis(req.wait_ms.min(MAX_WAIT_MS));
    let receipts = wait_for_receipts(&s, &req.rids, signed.gateway, deadline).await?;
    Ok(Json(ReceiptsAnswer { receipts }))
}
