//! The gateway routes for erasure and legal holds, and the live challenge (DESIGN.md §7,
//! §8; ADR 013).
//!
//! | Route | Caller | Answer |
//! |---|---|---|
//! | `POST /v1/erasures` [`ErasureBody`] | the gateway that wrote the records | 202 [`Accepted`] once the request is stored |
//! | `GET /v1/erasures` | a gateway | [`ErasureList`]: its erasures known to this node (requested here, or by retention expiry where this node sweeps) |
//! | `GET /v1/erasures/{id}` | same | [`JobStatus`]: the request's progress at every custodian |
//! | `GET /v1/erasures/{id}/certificate` | same | 200 [`Certificates`], 202 [`JobStatus`] while custodians are still erasing |
//! | `POST /v1/holds`, `POST /v1/holds/release` [`HoldBody`] | the gateway that wrote them | [`Held`] / [`Released`] once every custodian confirmed; a held record outlives its retention |
//! | `POST /v1/challenges` [`ChallengeBody`] | anyone (a regulator) | a signed `ChallengeAnswer`: does this custodian hold the record now |

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use cairn_proto::erasure::{ErasureCertificate, ErasureScope, ErasureTrigger, SignedChallengeAnswer};
use cairn_proto::record::RecordId;
use cairn_proto::{Hash32, KeyId};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::ApiState;
use super::auth::{LimitedBody, SignedGateway};
use super::error::{ApiError, ErrorBody, Path};
use super::openapi::{ChallengeAnswerDoc, ErasureCertificateDoc};
use crate::records::erasure::{Job, MAX_RECORDS, accept, custodian};

/// The body of `POST /v1/erasures`: records by id, or one subject of the calling gateway.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ErasureBody {
    /// Record ids (1 to 10000), or leave out and name a `subject`.
    #[serde(default)]
    #[schema(value_type = Option<Vec<String>>, min_items = 1, max_items = 10000)]
    records: Option<Vec<RecordId>>,
    /// The gateway's subject reference (1 to 256 bytes), or leave out and name `records`.
    #[serde(default)]
    #[schema(min_length = 1, max_length = 256)]
    subject: Option<String>,
    /// Why: `subject_request` (default), `purpose_achieved`, `consent_withdrawn` (with a
    /// subject only) or `rectified` (one record, with `replaced_by`).
    #[serde(default)]
    #[schema(value_type = Option<TriggerName>)]
    trigger: Option<String>,
    /// With `rectified`: the record holding the corrected reading (stored first, same
    /// subject).
    #[serde(default)]
    #[schema(value_type = Option<String>, pattern = "^[0-9a-f]{32}$")]
    replaced_by: Option<RecordId>,
}

/// The erasure triggers a gateway may name (retention expiry is the node's own).
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum TriggerName {
    /// The data subject asked (GDPR art. 17).
    SubjectRequest,
    /// The purpose of collection is achieved.
    PurposeAchieved,
    /// The subject withdrew the consent the records were collected under.
    ConsentWithdrawn,
    /// The record was corrected: `replaced_by` names the corrected reading.
    Rectified,
}

/// The body of `POST /v1/holds` and `POST /v1/holds/release`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HoldBody {
    /// Record ids (1 to 10000), or leave out and name a `subject`.
    #[serde(default)]
    #[schema(value_type = Option<Vec<String>>, min_items = 1, max_items = 10000)]
    records: Option<Vec<RecordId>>,
    /// The gateway's subject reference (1 to 256 bytes).
    #[serde(default)]
    #[schema(min_length = 1, max_length = 256)]
    subject: Option<String>,
}

/// A stored erasure request.
#[derive(Debug, Serialize, ToSchema)]
pub struct Accepted {
    /// The request's id (32 hex digits), to follow it.
    id: String,
    /// Records it covers.
    records: usize,
    /// `erasing`.
    status: Progress,
}

/// Where an erasure request stands.
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Progress {
    /// Some custodian has not yet committed its receipt.
    Erasing,
    /// Every certificate exists.
    Certified,
}

/// The trigger of an erasure, as certificates name it.
fn trigger_schema() -> utoipa::openapi::schema::Object {
    utoipa::openapi::schema::ObjectBuilder::new()
        .schema_type(utoipa::openapi::schema::Type::String)
        .enum_values(Some([
            "subject_request",
            "purpose_achieved",
            "retention_expired",
            "consent_withdrawn",
            "rectified",
        ]))
        .build()
}

/// One erasure in [`ErasureList`].
#[derive(Debug, Serialize, ToSchema)]
pub struct ErasureSummary {
    /// Request id.
    id: String,
    /// Progress.
    status: Progress,
    /// Why.
    #[schema(schema_with = trigger_schema)]
    trigger: ErasureTrigger,
    /// Accepted, Unix milliseconds.
    requested_at_ms: u64,
    /// Records covered.
    records: usize,
}

/// The answer to `GET /v1/erasures`.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErasureList {
    /// The calling gateway's erasures known to this node.
    erasures: Vec<ErasureSummary>,
}

/// What one custodian did for one record.
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum CustodianState {
    /// Not erased yet (or not answered).
    Pending,
    /// Erased; receipt signed, not yet committed.
    Erased,
    /// Erased; receipt committed on chain.
    Committed,
}

/// One custodian's progress on one record.
#[derive(Debug, Serialize, ToSchema)]
pub struct CustodianStatus {
    /// Key id of the custodian.
    #[schema(value_type = String, pattern = "^[0-9a-f]{32}$")]
    custodian: KeyId,
    /// Its state.
    state: CustodianState,
    /// Its last refusal or failure, if any.
    last_error: Option<String>,
}

/// One record's progress.
#[derive(Debug, Serialize, ToSchema)]
pub struct RecordStatus {
    /// Record id.
    #[schema(value_type = String, pattern = "^[0-9a-f]{32}$")]
    rid: RecordId,
    /// Record leaf.
    #[schema(value_type = String, pattern = "^[0-9a-f]{64}$")]
    leaf: Hash32,
    /// Every custodian of the record's manifest.
    custodians: Vec<CustodianStatus>,
}

/// An erasure request's progress at every custodian.
#[derive(Debug, Serialize, ToSchema)]
pub struct JobStatus {
    /// Request id.
    id: String,
    /// Progress.
    status: Progress,
    /// Why.
    #[schema(schema_with = trigger_schema)]
    trigger: ErasureTrigger,
    /// Hash of the request (what receipts and certificates name).
    #[schema(value_type = String, pattern = "^[0-9a-f]{64}$")]
    request_hash: Hash32,
    /// Accepted, Unix milliseconds.
    requested_at_ms: u64,
    /// Deadline, Unix milliseconds.
    deadline_ms: u64,
    /// Per record.
    records: Vec<RecordStatus>,
}

/// The answer to `GET /v1/erasures/{id}/certificate` once complete.
#[derive(Debug, Serialize, ToSchema)]
pub struct Certificates {
    /// One per record, verifiable offline (`cairn verify-erasure`).
    #[schema(value_type = Vec<ErasureCertificateDoc>)]
    certificates: Vec<ErasureCertificate>,
}

/// Legal holds placed.
#[derive(Debug, Serialize, ToSchema)]
pub struct Held {
    /// Records now held at every custodian.
    held: usize,
}

/// Legal holds lifted.
#[derive(Debug, Serialize, ToSchema)]
pub struct Released {
    /// Records released at every custodian.
    released: usize,
}

fn progress(job: &Job) -> Progress {
    if job.complete() { Progress::Certified } else { Progress::Erasing }
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
        (None, Some(subject)) => match crate::records::fhir::requested_subject(&subject) {
            Ok(local) => Ok(ErasureScope::Subject { gateway, local }),
            Err(why) => Err(ApiError::new(StatusCode::BAD_REQUEST, "bad_subject", why).field("subject")),
        },
        _ => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_scope",
            "name either \"records\" or a \"subject\", not both",
        )),
    }
}

/// Ask every custodian to erase records, or every record of a subject.
#[utoipa::path(post, path = "/v1/erasures", tag = "erasure", security(("cairnSignature" = [])),
    request_body(content = ErasureBody, content_type = "application/json"),
    responses((status = 202, body = Accepted, description = "request stored; id to follow it"),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 413, body = ErrorBody),
        (status = 429, body = ErrorBody), (status = 503, body = ErrorBody), (status = 500, body = ErrorBody)))]
pub(super) async fn erasures(State(s): State<Arc<ApiState>>, signed: SignedGateway) -> Result<Response, ApiError> {
    let SignedGateway { gateway, body, now_ms } = signed;
    let req: ErasureBody = scoped_body(&body)?;
    let bad_trigger = |why: String| ApiError::new(StatusCode::BAD_REQUEST, "bad_trigger", why).field("trigger");
    let trigger = match (req.trigger.as_deref(), req.replaced_by) {
        (Some("rectified"), Some(replaced_by)) => ErasureTrigger::Rectified { replaced_by },
        (Some("rectified"), None) => {
            return Err(bad_trigger("a rectification names the corrected record in \"replaced_by\"".into()));
        }
        (_, Some(_)) => {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "bad_scope",
                "\"replaced_by\" goes with trigger rectified",
            )
            .field("replaced_by"));
        }
        (None | Some("subject_request"), None) => ErasureTrigger::SubjectRequest,
        (Some("purpose_achieved"), None) => ErasureTrigger::PurposeAchieved,
        (Some("consent_withdrawn"), None) => ErasureTrigger::ConsentWithdrawn,
        (Some(other), None) => {
            return Err(bad_trigger(format!(
                "{other:?}: a gateway asks for subject_request, purpose_achieved, consent_withdrawn or rectified (retention expiry is the node's)"
            )));
        }
    };
    let scope = scope_of(req.records, req.subject, gateway)?;
    let job = match (trigger, scope) {
        (ErasureTrigger::Rectified { replaced_by }, ErasureScope::Records(rids)) => match rids.as_slice() {
            [old] => accept::rectified(&s.records, gateway, *old, replaced_by, now_ms).await,
            _ => return Err(bad_trigger("a rectification erases exactly one record".into())),
        },
        (ErasureTrigger::Rectified { .. }, ErasureScope::Subject { .. }) => {
            return Err(bad_trigger("a rectification names the one record it replaces, not a subject".into()));
        }
        (ErasureTrigger::ConsentWithdrawn, ErasureScope::Subject { local, .. }) => {
            accept::consent_withdrawn(&s.records, gateway, gateway, local, now_ms).await
        }
        (ErasureTrigger::ConsentWithdrawn, ErasureScope::Records(_)) => {
            return Err(bad_trigger("a subject withdraws consent: name the \"subject\", not records".into()));
        }
        (trigger, scope) => accept::accept(&s.records, gateway, scope, trigger, now_ms).await,
    }
    .map_err(|e| s.erasure_error(e))?;
    let accepted = Accepted { id: job.id_hex(), records: job.records.len(), status: Progress::Erasing };
    Ok((StatusCode::ACCEPTED, Json(accepted)).into_response())
}

async fn holds(s: &ApiState, signed: SignedGateway, on: bool) -> Result<usize, ApiError> {
    let SignedGateway { gateway, body, now_ms } = signed;
    let req: HoldBody = scoped_body(&body)?;
    let scope = scope_of(req.records, req.subject, gateway)?;
    if let ErasureScope::Records(rids) = &scope
        && (rids.is_empty() || rids.len() > MAX_RECORDS)
    {
        return Err(ApiError::new(StatusCode::BAD_REQUEST, "bad_scope", format!("1 to {MAX_RECORDS} records")));
    }
    accept::hold(&s.records, gateway, &scope, on, now_ms).await.map_err(|e| s.erasure_error(e))
}

/// Place a legal hold on records or a subject's records, at every custodian.
#[utoipa::path(post, path = "/v1/holds", tag = "erasure", security(("cairnSignature" = [])),
    request_body(content = HoldBody, content_type = "application/json"),
    responses((status = 200, body = Held, description = "held at every custodian"),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 413, body = ErrorBody), (status = 429, body = ErrorBody),
        (status = 503, body = ErrorBody), (status = 500, body = ErrorBody)))]
pub(super) async fn place_holds(State(s): State<Arc<ApiState>>, signed: SignedGateway) -> Result<Json<Held>, ApiError> {
    Ok(Json(Held { held: holds(&s, signed, true).await? }))
}

/// Lift a legal hold, at every custodian.
#[utoipa::path(post, path = "/v1/holds/release", tag = "erasure", security(("cairnSignature" = [])),
    request_body(content = HoldBody, content_type = "application/json"),
    responses((status = 200, body = Released, description = "released at every custodian"),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 413, body = ErrorBody), (status = 429, body = ErrorBody),
        (status = 503, body = ErrorBody), (status = 500, body = ErrorBody)))]
pub(super) async fn release_holds(
    State(s): State<Arc<ApiState>>,
    signed: SignedGateway,
) -> Result<Json<Released>, ApiError> {
    Ok(Json(Released { released: holds(&s, signed, false).await? }))
}

/// The calling gateway's erasures known to this node.
#[utoipa::path(get, path = "/v1/erasures", tag = "erasure", security(("cairnSignature" = [])),
    responses((status = 200, body = ErasureList), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 429, body = ErrorBody), (status = 500, body = ErrorBody)))]
pub(super) async fn erasure_list(
    State(s): State<Arc<ApiState>>,
    signed: SignedGateway,
) -> Result<Json<ErasureList>, ApiError> {
    let gateway = signed.gateway;
    let jobs = s.records.erasures.store.jobs(|j| j.owner == gateway).map_err(ApiError::internal)?;
    let erasures = jobs
        .iter()
        .map(|j| ErasureSummary {
            id: j.id_hex(),
            status: progress(j),
            trigger: j.trigger,
            requested_at_ms: j.requested_at_ms,
            records: j.records.len(),
        })
        .collect();
    Ok(Json(ErasureList { erasures }))
}

/// The body of `POST /v1/challenges`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChallengeBody {
    /// Record id.
    #[schema(value_type = String, pattern = "^[0-9a-f]{32}$")]
    rid: RecordId,
    /// Its leaf.
    #[schema(value_type = String, pattern = "^[0-9a-f]{64}$")]
    leaf: Hash32,
    /// The challenger's nonce, 32 hex digits (signed back).
    #[schema(pattern = "^[0-9a-f]{32}$")]
    nonce: String,
}

/// A live challenge (anyone may ask): does this custodian hold the record? Signed answer.
#[utoipa::path(post, path = "/v1/challenges", tag = "erasure",
    request_body(content = ChallengeBody, content_type = "application/json"),
    responses((status = 200, body = ChallengeAnswerDoc), (status = 400, body = ErrorBody),
        (status = 413, body = ErrorBody), (status = 500, body = ErrorBody)))]
pub(super) async fn challenge(
    State(s): State<Arc<ApiState>>,
    LimitedBody(body): LimitedBody,
) -> Result<Json<SignedChallengeAnswer>, ApiError> {
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
    let answer = custodian::answer_challenge(&s.records, req.rid, req.leaf, nonce).await.map_err(ApiError::internal)?;
    Ok(Json(answer))
}

/// The job `id` if it erases records of `gateway`.
fn own_job(s: &ApiState, id: &str, gateway: KeyId) -> Result<Job, ApiError> {
    let missing = || ApiError::not_found(format!("no erasure request {id} from this gateway"));
    let bytes: [u8; 16] = hex::decode(id).ok().and_then(|b| b.try_into().ok()).ok_or_else(|| {
        ApiError::new(StatusCode::BAD_REQUEST, "bad_id", "an erasure id is 32 hex digits").field("id")
    })?;
    match s.records.erasures.store.job(&bytes).map_err(ApiError::internal)? {
        Some(job) if job.owner == gateway => Ok(job),
        _ => Err(missing()),
    }
}

/// A job's progress.
fn job_status(job: &Job) -> JobStatus {
    let records = job
        .records
        .iter()
        .map(|r| RecordStatus {
            rid: r.anchor.rid,
            leaf: r.anchor.leaf,
            custodians: r
                .anchor
                .manifest
                .custodians
                .iter()
                .enumerate()
                .map(|(i, c)| CustodianStatus {
                    custodian: *c,
                    state: match (
                        r.committed.get(i).and_then(Option::as_ref),
                        r.receipts.get(i).and_then(Option::as_ref),
                    ) {
                        (Some(_), _) => CustodianState::Committed,
                        (None, Some(_)) => CustodianState::Erased,
                        (None, None) => CustodianState::Pending,
                    },
                    last_error: r.errors.get(i).cloned().flatten(),
                })
                .collect(),
        })
        .collect();
    JobStatus {
        id: job.id_hex(),
        status: progress(job),
        trigger: job.trigger,
        request_hash: job.request_hash,
        requested_at_ms: job.requested_at_ms,
        deadline_ms: job.deadline_ms,
        records,
    }
}

/// An erasure request's progress at every custodian.
#[utoipa::path(get, path = "/v1/erasures/{id}", tag = "erasure", security(("cairnSignature" = [])),
    params(("id" = String, Path, pattern = "^[0-9a-f]{32}$", description = "erasure request id")),
    responses((status = 200, body = JobStatus), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 429, body = ErrorBody),
        (status = 500, body = ErrorBody)))]
pub(super) async fn erasure_status(
    State(s): State<Arc<ApiState>>,
    Path(id): Path<String>,
    signed: SignedGateway,
) -> Result<Json<JobStatus>, ApiError> {
    Ok(Json(job_status(&own_job(&s, &id, signed.gateway)?)))
}

/// The erasure certificates of a request, once every custodian committed its receipt.
#[utoipa::path(get, path = "/v1/erasures/{id}/certificate", tag = "erasure", security(("cairnSignature" = [])),
    params(("id" = String, Path, pattern = "^[0-9a-f]{32}$", description = "erasure request id")),
    responses((status = 200, body = Certificates), (status = 202, body = JobStatus, description = "custodians still erasing"),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 429, body = ErrorBody), (status = 500, body = ErrorBody)))]
pub(super) async fn erasure_certificate(
    State(s): State<Arc<ApiState>>,
    Path(id): Path<String>,
    signed: SignedGateway,
) -> Result<Response, ApiError> {
    let job = own_job(&s, &id, signed.gateway)?;
    match job.certificates() {
        Some(certificates) => Ok(Json(Certificates { certificates }).into_response()),
        None => Ok((StatusCode::ACCEPTED, Json(job_status(&job))).into_response()),
    }
}
