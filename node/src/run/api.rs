//! The gateway API (DESIGN.md §9): signed requests under `/v1`, readings in, records and
//! receipts out, and the OpenAPI document that lists every route of the node.
//!
//! | Route | Caller | Answer |
//! |---|---|---|
//! | `POST /v1/readings?purpose=P&retention_days=D` | gateway | 200 `{"count","custodians","records":[{"rid","leaf"}]}` once every custodian holds the batch durably |
//! | `GET /v1/records/{rid}?purpose=P` | the gateway that wrote it | `{"record","receipt","served_by"}` |
//! | `GET /v1/records/{rid}/receipt[?wait_ms=N]` | same | 200 `AnchorReceipt`, 202 while not yet anchored |
//! | `POST /v1/receipts` `{"rids":[..],"wait_ms":N}` | same | `{"receipts":[AnchorReceipt or null]}` |
//! | `POST /v1/erasures` `{"records":[..]}` or `{"subject":".."}`, optional `"trigger"` (`consent_withdrawn` with a subject only) | the gateway that wrote them | 202 `{"id","records","status"}` once the request is stored |
//! | `GET /v1/erasures` | a gateway | its erasures known to this node (requested here, or by retention expiry where this node sweeps) |
//! | `GET /v1/erasures/{id}` | same | the request's progress at every custodian |
//! | `GET /v1/erasures/{id}/certificate` | same | 200 `{"certificates":[ErasureCertificate]}`, 202 while custodians are still erasing |
//! | `POST /v1/holds`, `POST /v1/holds/release` `{"records":[..]}` or `{"subject":".."}` | the gateway that wrote them | `{"held"}` / `{"released"}` once every custodian confirmed; a held record outlives its retention |
//! | `POST /v1/challenges` `{"rid","leaf","nonce"}` | anyone (a regulator) | a signed `ChallengeAnswer`: does this custodian hold the record now |
//! | `GET /v1/openapi.json` | anyone | this API as OpenAPI 3.1 |

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Json;
use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use cairn_proto::erasure::{ErasureScope, ErasureTrigger};
use cairn_proto::membership::Role;
use cairn_proto::receipt::AnchorReceipt;
use cairn_proto::record::RecordId;
use cairn_proto::{Hash32, KeyId};
use serde::{Deserialize, Serialize};
use serde_json::json;
use serde_json::value::RawValue;

use super::Shared;
use super::auth::{authenticate, now_ms};
use super::http::ApiError;
use crate::records::erasure::{self, ErasureError};
use crate::records::fhir::{self, BodyError, Format};
use crate::records::ingest::{BatchTerms, RecordView, RecordsError};
use crate::records::receipts::{for_views, read_anywhere};

/// Longest wait a caller may ask for, milliseconds.
const MAX_WAIT_MS: u64 = 30_000;
/// Longest idempotency key.
const MAX_IDEMPOTENCY_KEY: usize = 128;
/// The header carrying an idempotency key.
pub const IDEMPOTENCY_HEADER: &str = "idempotency-key";

/// The gateway routes.
pub fn routes() -> Router<Arc<Shared>> {
    Router::new()
        .route("/v1/readings", post(readings))
        .route("/v1/records/{rid}", get(record))
        .route("/v1/records/{rid}/receipt", get(receipt))
        .route("/v1/receipts", post(receipts))
        .route("/v1/erasures", post(erasures).get(erasure_list))
        .route("/v1/holds", post(place_holds))
        .route("/v1/challenges", post(challenge))
        .route("/v1/holds/release", post(release_holds))
        .route("/v1/erasures/{id}", get(erasure_status))
        .route("/v1/erasures/{id}/certificate", get(erasure_certificate))
        .route("/v1/openapi.json", get(openapi))
}

async fn read_body(shared: &Shared, body: Body) -> Result<axum::body::Bytes, ApiError> {
    let limit = shared.config.max_body_bytes;
    axum::body::to_bytes(body, limit).await.map_err(|_| {
        ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "too_large", format!("the body exceeds {limit} bytes"))
    })
}

fn records_error(e: RecordsError) -> ApiError {
    match e {
        RecordsError::NotFound(rid) => ApiError::not_found(format!("no record {rid} for this gateway")),
        RecordsError::Unavailable(m) => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "custodians_unavailable", m),
        RecordsError::Vault(crate::vault::VaultError::Invalid(m)) => {
            ApiError::new(StatusCode::BAD_REQUEST, "invalid_record", m)
        }
        RecordsError::Vault(e) => ApiError::internal(e),
    }
}

/// Remembered idempotency keys, per gateway, oldest forgotten first.
#[derive(Debug, Default)]
pub struct Idempotency {
    entries: HashMap<(KeyId, String), (Hash32, Option<serde_json::Value>)>,
    order: VecDeque<(KeyId, String)>,
}

enum Idem {
    Fresh,
    Replay(serde_json::Value),
}

impl Idempotency {
    fn begin(&mut self, key: (KeyId, String), body: Hash32, cap: usize) -> Result<Idem, ApiError> {
        match self.entries.get(&key) {
            Some((h, _)) if *h != body => Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "idempotency_key_reused",
                "this idempotency key was used for a different body",
            )
            .field(IDEMPOTENCY_HEADER)),
            Some((_, Some(answer))) => Ok(Idem::Replay(answer.clone())),
            Some((_, None)) => Err(ApiError::new(
                StatusCode::CONFLICT,
                "idempotency_in_progress",
                "a request with this idempotency key is still being stored",
            )
            .field(IDEMPOTENCY_HEADER)),
            None => {
                while self.order.len() >= cap {
                    if let Some(old) = self.order.pop_front() {
                        self.entries.remove(&old);
                    }
                }
                self.entries.insert(key.clone(), (body, None));
                self.order.push_back(key);
                Ok(Idem::Fresh)
            }
        }
    }
    fn finish(&mut self, key: &(KeyId, String), answer: Option<serde_json::Value>) {
        match answer {
            Some(a) => {
                if let Some(e) = self.entries.get_mut(key) {
                    e.1 = Some(a);
                }
            }
            None => {
                self.entries.remove(key);
                self.order.retain(|k| k != key);
            }
        }
    }
}

#[derive(Deserialize)]
struct ReadingsQuery {
    purpose: Option<String>,
    retention_days: Option<String>,
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

async fn readings(
    State(s): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    Query(q): Query<ReadingsQuery>,
    body: Body,
) -> Result<Response, ApiError> {
    let body = read_body(&s, body).await?;
    let now = now_ms();
    let caller = authenticate(&s, &method, &uri, &headers, &body, Role::Gateway, now)?;
    let gateway = caller.public_key.key_id();
    let purpose = check_purpose(q.purpose.as_deref())?;
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
    let content_type = headers.get(axum::http::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    let format = match content_type.split(';').next().unwrap_or("").trim() {
        "application/x-ndjson" | "application/jsonl" | "application/json-lines" => Format::JsonLines,
        "application/fhir+json" | "application/json" => Format::Bundle,
        other => {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                format!("{other:?}: send application/x-ndjson (one Observation per line) or application/fhir+json (a Bundle)"),
            )
            .field("content-type"));
        }
    };
    let readings = match fhir::parse(&body, format, crate::vault::VaultConfig::default().max_payload) {
        Err(BodyError::Malformed(m)) => return Err(ApiError::new(StatusCode::BAD_REQUEST, "malformed_json", m)),
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
    let max = s.config.max_batch_readings;
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
            Ok(k) if !k.is_empty() && k.len() <= MAX_IDEMPOTENCY_KEY => Some((gateway, k.to_owned())),
            _ => {
                return Err(ApiError::new(StatusCode::BAD_REQUEST, "bad_header", "1 to 128 ASCII characters")
                    .field(IDEMPOTENCY_HEADER));
            }
        },
    };
    let request_hash =
        cairn_proto::hash::hash_parts("cairn/idempotency/v1", &[uri.query().unwrap_or("").as_bytes(), &body]);
    if let Some(key) = &idem_key {
        let cap = s.config.idempotency_keys;
        if let Idem::Replay(answer) = s.idempotency().begin(key.clone(), request_hash, cap)? {
            return Ok((StatusCode::OK, [("idempotent-replayed", "true")], Json(answer)).into_response());
        }
    }
    let permits = match s.ingest_permits.clone().try_acquire_many_owned(readings.len() as u32) {
        Ok(p) => p,
        Err(_) => {
            if let Some(key) = &idem_key {
                s.idempotency().finish(key, None);
            }
            s.metrics.busy_refusals.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            return Err(ApiError::busy("the node is storing as many readings as it may; retry shortly"));
        }
    };
    let terms = BatchTerms { gateway, purpose, now_ms: now, retention_ms: days * 86_400_000 };
    let result = s.records.ingest(terms, readings).await;
    drop(permits);
    match result {
        Ok((manifest, stored)) => {
            s.metrics.readings.fetch_add(stored.len() as u64, std::sync::atomic::Ordering::Relaxed);
            let answer = json!({"count": stored.len(), "custodians": manifest.custodians, "records": stored});
            if let Some(key) = &idem_key {
                s.idempotency().finish(key, Some(answer.clone()));
            }
            Ok((StatusCode::OK, Json(answer)).into_response())
        }
        Err(e) => {
            if let Some(key) = &idem_key {
                s.idempotency().finish(key, None);
            }
            Err(records_error(e))
        }
    }
}

fn parse_rid(rid: &str) -> Result<RecordId, ApiError> {
    rid.parse()
        .map_err(|_| ApiError::new(StatusCode::BAD_REQUEST, "bad_rid", "a record id is 32 hex digits").field("rid"))
}

#[derive(Deserialize)]
struct RecordQuery {
    purpose: Option<String>,
}

#[derive(Serialize)]
struct RecordOut<'a> {
    rid: RecordId,
    gateway: KeyId,
    purpose: &'a str,
    received_at_ms: u64,
    retain_until_ms: u64,
    subject: Option<&'a str>,
    resource: &'a RawValue,
    manifest: &'a cairn_proto::record::Manifest,
    commitment: Hash32,
    leaf: Hash32,
}

async fn record(
    State(s): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    Path(rid): Path<String>,
    Query(q): Query<RecordQuery>,
) -> Result<Response, ApiError> {
    let caller = authenticate(&s, &method, &uri, &headers, b"", Role::Gateway, now_ms())?;
    let rid = parse_rid(&rid)?;
    let purpose = check_purpose(q.purpose.as_deref())?;
    let (answer, here) = read_anywhere(&s, rid, caller.public_key.key_id()).await.map_err(records_error)?;
    let r = &answer.record;
    if r.purpose != purpose {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "purpose_mismatch",
            format!("the record was collected for {:?}; a read for {purpose:?} is refused", r.purpose),
        )
        .field("purpose"));
    }
    let resource = RawValue::from_string(r.resource.clone()).map_err(ApiError::internal)?;
    let out = RecordOut {
        rid: r.rid,
        gateway: r.gateway,
        purpose: &r.purpose,
        received_at_ms: r.received_at_ms,
        retain_until_ms: r.retain_until_ms,
        subject: r.subject.as_deref(),
        resource: &resource,
        manifest: &r.manifest,
        commitment: r.commitment,
        leaf: r.leaf,
    };
    let served_by = if here { "custodian" } else { "forwarded" };
    Ok(Json(json!({"record": out, "receipt": answer.receipt, "served_by": served_by})).into_response())
}

#[derive(Deserialize)]
struct WaitQuery {
    wait_ms: Option<u64>,
}

/// Waits until a block is decided or a batch of this node is committed, or `deadline`.
async fn wait_for_progress(s: &Shared, deadline: Instant) -> bool {
    let mut decided = s.subscribe_decided();
    let mut anchored = s.records.anchors.subscribe();
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

async fn receipt(
    State(s): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    Path(rid): Path<String>,
    Query(q): Query<WaitQuery>,
) -> Result<Response, ApiError> {
    let caller = authenticate(&s, &method, &uri, &headers, b"", Role::Gateway, now_ms())?;
    let rid = parse_rid(&rid)?;
    let deadline = Instant::now() + Duration::from_millis(q.wait_ms.unwrap_or(0).min(MAX_WAIT_MS));
    match wait_for_receipts(&s, &[rid], caller.public_key.key_id(), deadline).await?.pop().flatten() {
        Some(r) => Ok(Json(r).into_response()),
        None => Ok((StatusCode::ACCEPTED, Json(json!({"status": "pending", "rid": rid}))).into_response()),
    }
}

/// Receipts of `rids` (for `gateway`), waiting until all exist or `deadline`. A record
/// held here is read (decrypted) once; later rounds only look its leaf up again. A
/// record held elsewhere is asked for again each round.
async fn wait_for_receipts(
    s: &Shared,
    rids: &[RecordId],
    gateway: KeyId,
    deadline: Instant,
) -> Result<Vec<Option<AnchorReceipt>>, ApiError> {
    let mut found: Vec<Option<AnchorReceipt>> = vec![None; rids.len()];
    let mut held: Vec<Option<RecordView>> = vec![None; rids.len()];
    loop {
        for ((slot, view), rid) in found.iter_mut().zip(held.iter_mut()).zip(rids) {
            if slot.is_some() || view.is_some() {
                continue;
            }
            match read_anywhere(s, *rid, gateway).await {
                Ok((answer, here)) => match answer.receipt {
                    Some(r) => *slot = Some(r),
                    None if here => *view = Some(answer.record),
                    None => {}
                },
                Err(RecordsError::NotFound(_)) => {}
                Err(e) => return Err(records_error(e)),
            }
        }
        let waiting: Vec<RecordView> =
            found.iter().zip(&held).filter(|(f, _)| f.is_none()).filter_map(|(_, v)| v.clone()).collect();
        if !waiting.is_empty() {
            let mut located = for_views(s, &waiting).await.map_err(ApiError::internal)?.into_iter();
            for (slot, view) in found.iter_mut().zip(&held) {
                if slot.is_none() && view.is_some() {
                    *slot = located.next().flatten();
                }
            }
        }
        if found.iter().all(Option::is_some) || !wait_for_progress(s, deadline).await {
            return Ok(found);
        }
    }
}

#[derive(Deserialize)]
struct ReceiptsRequest {
    rids: Vec<RecordId>,
    #[serde(default)]
    wait_ms: u64,
}

/// Most records in one receipts request.
const MAX_RECEIPTS: usize = 10_000;

async fn receipts(
    State(s): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let body = read_body(&s, body).await?;
    let caller = authenticate(&s, &method, &uri, &headers, &body, Role::Gateway, now_ms())?;
    let req: ReceiptsRequest = serde_json::from_slice(&body).map_err(|e| {
        ApiError::new(StatusCode::BAD_REQUEST, "malformed_json", format!("expected {{\"rids\":[..]}}: {e}"))
    })?;
    if req.rids.len() > MAX_RECEIPTS {
        return Err(ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "too_many_rids", format!("at most {MAX_RECEIPTS}"))
            .field("rids"));
    }
    let gateway = caller.public_key.key_id();
    let deadline = Instant::now() + Duration::from_millis(req.wait_ms.min(MAX_WAIT_MS));
    let found = wait_for_receipts(&s, &req.rids, gateway, deadline).await?;
    Ok(Json(json!({"receipts": found})).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ErasureBody {
    #[serde(default)]
    records: Option<Vec<RecordId>>,
    #[serde(default)]
    subject: Option<String>,
    #[serde(default)]
    trigger: Option<String>,
}

fn erasure_error(e: ErasureError) -> ApiError {
    match e {
        ErasureError::NotFound(rid) => ApiError::not_found(format!("no record {rid} for this gateway")),
        ErasureError::NoRecords => {
            ApiError::new(StatusCode::NOT_FOUND, "no_records", "this gateway holds no record of that subject")
        }
        ErasureError::Invalid(m) => ApiError::new(StatusCode::BAD_REQUEST, "bad_erasure", m),
        ErasureError::Unavailable(m) => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "custodians_unavailable", m),
        ErasureError::InProgress(id) => ApiError::new(
            StatusCode::CONFLICT,
            "already_erasing",
            format!("a record is already being erased by request {id}; follow GET /v1/erasures/{id}, then ask again for what remains"),
        )
        .detail("request", json!(id)),
        ErasureError::Internal(m) => ApiError::internal(m),
    }
}

async fn erasures(
    State(s): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let body = read_body(&s, body).await?;
    let now = now_ms();
    let caller = authenticate(&s, &method, &uri, &headers, &body, Role::Gateway, now)?;
    let gateway = caller.public_key.key_id();
    let req: ErasureBody = scoped_body(&body)?;
    let bad_trigger = |why: String| ApiError::new(StatusCode::BAD_REQUEST, "bad_trigger", why).field("trigger");
    let trigger = match req.trigger.as_deref() {
        None | Some("subject_request") => ErasureTrigger::SubjectRequest,
        Some("purpose_achieved") => ErasureTrigger::PurposeAchieved,
        Some("consent_withdrawn") => ErasureTrigger::ConsentWithdrawn,
        Some(other) => {
            return Err(bad_trigger(format!(
                "{other:?}: a gateway asks for subject_request, purpose_achieved or consent_withdrawn (retention expiry is the node's)"
            )));
        }
    };
    let scope = scope_of(req.records, req.subject, gateway)?;
    let job = match (trigger, scope) {
        (ErasureTrigger::ConsentWithdrawn, ErasureScope::Subject { local, .. }) => {
            erasure::consent_withdrawn(&s, gateway, gateway, local, now).await
        }
        (ErasureTrigger::ConsentWithdrawn, ErasureScope::Records(_)) => {
            return Err(bad_trigger("a subject withdraws consent: name the \"subject\", not records".into()));
        }
        (trigger, scope) => erasure::accept(&s, gateway, scope, trigger, now).await,
    }
    .map_err(erasure_error)?;
    Ok((StatusCode::ACCEPTED, Json(json!({"id": job.id_hex(), "records": job.records.len(), "status": "erasing"})))
        .into_response())
}

/// A body naming records or a subject (erasures, holds).
fn scoped_body<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "malformed_json",
            format!("expected {{\"records\":[..]}} or {{\"subject\":\"..\"}}: {e}"),
        )
    })
}

/// Records by id, or a subject of the calling gateway.
fn scope_of(records: Option<Vec<RecordId>>, subject: Option<String>, gateway: KeyId) -> Result<ErasureScope, ApiError> {
    match (records, subject) {
        (Some(rids), None) => Ok(ErasureScope::Records(rids)),
        (None, Some(local)) if !local.is_empty() && local.len() <= 256 => Ok(ErasureScope::Subject { gateway, local }),
        (None, Some(_)) => {
            Err(ApiError::new(StatusCode::BAD_REQUEST, "bad_subject", "1 to 256 bytes").field("subject"))
        }
        _ => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_scope",
            "name either \"records\" or a \"subject\", not both",
        )),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HoldBody {
    #[serde(default)]
    records: Option<Vec<RecordId>>,
    #[serde(default)]
    subject: Option<String>,
}

async fn holds(
    s: Arc<Shared>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
    on: bool,
) -> Result<Response, ApiError> {
    let body = read_body(&s, body).await?;
    let now = now_ms();
    let caller = authenticate(&s, &method, &uri, &headers, &body, Role::Gateway, now)?;
    let gateway = caller.public_key.key_id();
    let req: HoldBody = scoped_body(&body)?;
    let scope = scope_of(req.records, req.subject, gateway)?;
    if let ErasureScope::Records(rids) = &scope
        && (rids.is_empty() || rids.len() > erasure::MAX_RECORDS)
    {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_scope",
            format!("1 to {} records", erasure::MAX_RECORDS),
        ));
    }
    let n = erasure::hold(&s, gateway, &scope, on, now).await.map_err(erasure_error)?;
    let key = if on { "held" } else { "released" };
    Ok(Json(json!({ key: n })).into_response())
}

async fn place_holds(
    State(s): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    holds(s, method, uri, headers, body, true).await
}

async fn release_holds(
    State(s): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    holds(s, method, uri, headers, body, false).await
}

async fn erasure_list(
    State(s): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let caller = authenticate(&s, &method, &uri, &headers, b"", Role::Gateway, now_ms())?;
    let gateway = caller.public_key.key_id();
    let jobs = s.records.erasures.store.jobs(|j| j.owner == gateway).map_err(ApiError::internal)?;
    let list: Vec<serde_json::Value> = jobs
        .iter()
        .map(|j| {
            json!({"id": j.id_hex(), "status": if j.complete() { "certified" } else { "erasing" },
                "trigger": j.trigger, "requested_at_ms": j.requested_at_ms, "records": j.records.len()})
        })
        .collect();
    Ok(Json(json!({"erasures": list})).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ChallengeBody {
    rid: RecordId,
    leaf: Hash32,
    nonce: String,
}

/// A live challenge (anyone may ask): does this custodian hold the record? Signed answer.
async fn challenge(State(s): State<Arc<Shared>>, body: Body) -> Result<Response, ApiError> {
    let body = read_body(&s, body).await?;
    let req: ChallengeBody = serde_json::from_slice(&body).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "malformed_json",
            format!("expected {{\"rid\",\"leaf\",\"nonce\"}}: {e}"),
        )
    })?;
    let nonce: [u8; 16] = hex::decode(&req.nonce).ok().and_then(|b| b.try_into().ok()).ok_or_else(|| {
        ApiError::new(StatusCode::BAD_REQUEST, "bad_nonce", "a nonce is 32 hex digits").field("nonce")
    })?;
    let answer = erasure::answer_challenge(&s, req.rid, req.leaf, nonce).await.map_err(ApiError::internal)?;
    Ok(Json(answer).into_response())
}

/// The job `id` if it erases records of `gateway`.
fn own_job(s: &Shared, id: &str, gateway: KeyId) -> Result<erasure::Job, ApiError> {
    let missing = || ApiError::not_found(format!("no erasure request {id} from this gateway"));
    let bytes: [u8; 16] = hex::decode(id).ok().and_then(|b| b.try_into().ok()).ok_or_else(|| {
        ApiError::new(StatusCode::BAD_REQUEST, "bad_id", "an erasure id is 32 hex digits").field("id")
    })?;
    match s.records.erasures.store.job(&bytes).map_err(ApiError::internal)? {
        Some(job) if job.owner == gateway => Ok(job),
        _ => Err(missing()),
    }
}

/// A job's progress as JSON.
fn job_status(job: &erasure::Job) -> serde_json::Value {
    let records: Vec<serde_json::Value> = job
        .records
        .iter()
        .map(|r| {
            let custodians: Vec<serde_json::Value> = r
                .anchor
                .manifest
                .custodians
                .iter()
                .enumerate()
                .map(|(i, c)| {
                    let state =
                        match (r.committed.get(i).and_then(Option::as_ref), r.receipts.get(i).and_then(Option::as_ref))
                        {
                            (Some(_), _) => "committed",
                            (None, Some(_)) => "erased",
                            (None, None) => "pending",
                        };
                    json!({"custodian": c, "state": state, "last_error": r.errors.get(i).cloned().flatten()})
                })
                .collect();
            json!({"rid": r.anchor.rid, "leaf": r.anchor.leaf, "custodians": custodians})
        })
        .collect();
    json!({
        "id": job.id_hex(),
        "status": if job.complete() { "certified" } else { "erasing" },
        "trigger": job.trigger,
        "request_hash": job.request_hash,
        "requested_at_ms": job.requested_at_ms,
        "deadline_ms": job.deadline_ms,
        "records": records,
    })
}

async fn erasure_status(
    State(s): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let caller = authenticate(&s, &method, &uri, &headers, b"", Role::Gateway, now_ms())?;
    let job = own_job(&s, &id, caller.public_key.key_id())?;
    Ok(Json(job_status(&job)).into_response())
}

async fn erasure_certificate(
    State(s): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let caller = authenticate(&s, &method, &uri, &headers, b"", Role::Gateway, now_ms())?;
    let job = own_job(&s, &id, caller.public_key.key_id())?;
    match job.certificates() {
        Some(certificates) => Ok(Json(json!({"certificates": certificates})).into_response()),
        None => Ok((StatusCode::ACCEPTED, Json(job_status(&job))).into_response()),
    }
}

async fn openapi() -> impl IntoResponse {
    Json(openapi_document())
}

/// The OpenAPI 3.1 document of every route the node serves.
pub fn openapi_document() -> serde_json::Value {
    let err = json!({"description": "error", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}});
    let signed = json!([{"cairnSignature": []}]);
    let rid = json!({"name": "rid", "in": "path", "required": true, "schema": {"type": "string", "pattern": "^[0-9a-f]{32}$"}});
    let purpose = json!({"name": "purpose", "in": "query", "required": true, "schema": {"type": "string"}});
    let erasure_id = json!({"name": "id", "in": "path", "required": true, "schema": {"type": "string", "pattern": "^[0-9a-f]{32}$"}});
    let height = json!({"name": "height", "in": "path", "required": true, "schema": {"type": "integer"}});
    let ok = |d: &str| json!({"description": d, "content": {"application/json": {}}});
    json!({
        "openapi": "3.1.0",
        "info": {"title": "cairn node API", "version": "1"},
        "components": {
            "securitySchemes": {"cairnSignature": {"type": "apiKey", "in": "header", "name": "x-cairn-signature",
                "description": "ed25519 signature over \"cairn/sig/request/v1\" || bcs(RequestToSign{version 1, method, path, query, blake3(body), key id, timestamp ms, nonce}); also send x-cairn-key, x-cairn-timestamp and x-cairn-nonce"}},
            "schemas": {"Error": {"type": "object", "required": ["code", "message"], "properties": {
                "code": {"type": "string"}, "message": {"type": "string"}, "field": {"type": "string"},
                "items": {"type": "array", "items": {"type": "object", "properties": {"index": {"type": "integer"}, "field": {"type": "string"}, "message": {"type": "string"}}}}}}}
        },
        "paths": {
            "/healthz": {"get": {"responses": {"200": ok("consensus runs"), "503": ok("starting")}}},
            "/readyz": {"get": {"responses": {"200": ok("ready for readings"), "503": ok("not ready")}}},
            "/metrics": {"get": {"responses": {"200": {"description": "Prometheus text"}}}},
            "/v1/openapi.json": {"get": {"responses": {"200": ok("this document")}}},
            "/v1/readings": {"post": {"security": signed,
                "parameters": [purpose, {"name": "retention_days", "in": "query", "required": true, "schema": {"type": "integer", "minimum": 1, "maximum": 36500}},
                    {"name": "idempotency-key", "in": "header", "schema": {"type": "string", "maxLength": 128}}],
                "requestBody": {"required": true, "content": {"application/x-ndjson": {}, "application/fhir+json": {}}},
                "responses": {"200": ok("stored at every custodian"), "400": err, "401": err, "403": err, "409": err, "413": err, "415": err, "422": err, "429": err, "503": err}}},
            "/v1/records/{rid}": {"get": {"security": signed, "parameters": [rid, purpose],
                "responses": {"200": ok("record, receipt and who served it"), "400": err, "401": err, "403": err, "404": err}}},
            "/v1/records/{rid}/receipt": {"get": {"security": signed,
                "parameters": [rid, {"name": "wait_ms", "in": "query", "schema": {"type": "integer", "maximum": MAX_WAIT_MS}}],
                "responses": {"200": ok("AnchorReceipt"), "202": ok("not yet anchored"), "401": err, "404": err}}},
            "/v1/receipts": {"post": {"security": signed, "requestBody": {"required": true, "content": {"application/json": {}}},
                "responses": {"200": ok("receipts in request order, null if pending"), "400": err, "401": err}}},
            "/v1/erasures": {"post": {"security": signed, "requestBody": {"required": true, "content": {"application/json": {}}},
                "responses": {"202": ok("request stored; id to follow it"), "400": err, "401": err, "404": err, "503": err}},
                "get": {"security": signed, "responses": {"200": ok("this gateway's erasures known here"), "401": err}}},
            "/v1/challenges": {"post": {"requestBody": {"required": true, "content": {"application/json": {}}},
                "responses": {"200": ok("SignedChallengeAnswer"), "400": err}}},
            "/v1/holds": {"post": {"security": signed, "requestBody": {"required": true, "content": {"application/json": {}}},
                "responses": {"200": ok("held at every custodian"), "400": err, "401": err, "404": err, "503": err}}},
            "/v1/holds/release": {"post": {"security": signed, "requestBody": {"required": true, "content": {"application/json": {}}},
                "responses": {"200": ok("released at every custodian"), "400": err, "401": err, "404": err, "503": err}}},
            "/v1/erasures/{id}": {"get": {"security": signed, "parameters": [erasure_id],
                "responses": {"200": ok("progress at every custodian"), "400": err, "401": err, "404": err}}},
            "/v1/erasures/{id}/certificate": {"get": {"security": signed, "parameters": [erasure_id],
                "responses": {"200": ok("one ErasureCertificate per record"), "202": ok("custodians still erasing"), "400": err, "401": err, "404": err}}},
            "/v1/transactions": {"post": {"requestBody": {"content": {"application/octet-stream": {}}},
                "responses": {"202": ok("admitted"), "400": err, "409": err, "503": err}}},
            "/v1/blocks/{height}": {"get": {"parameters": [height], "responses": {"200": ok("CertifiedBlock"), "404": err}}},
            "/v1/checkpoint": {"get": {"responses": {"200": ok("CertifiedHeader"), "404": err}}},
            "/v1/checkpoints/{height}": {"get": {"parameters": [height], "responses": {"200": ok("CertifiedHeader"), "404": err}}},
            "/v1/log/inclusion": {"get": {"parameters": [{"name": "leaf", "in": "query", "required": true, "schema": {"type": "string"}},
                {"name": "size", "in": "query", "schema": {"type": "integer"}}], "responses": {"200": ok("index, size, proof"), "400": err, "404": err}}},
            "/v1/admins/{key_id}": {"get": {"parameters": [{"name": "key_id", "in": "path", "required": true, "schema": {"type": "string"}}],
                "responses": {"200": ok("organisation and next nonce"), "400": err, "404": err}}},
            "/v1/log/consistency": {"get": {"parameters": [{"name": "from", "in": "query", "required": true, "schema": {"type": "integer"}},
                {"name": "to", "in": "query", "required": true, "schema": {"type": "integer"}}], "responses": {"200": ok("proof"), "400": err}}}
        }
    })
}
