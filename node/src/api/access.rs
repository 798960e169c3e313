//! The access log and the patient's view of it; the break-glass review list (DESIGN.md
//! §7; ADR 018; docs/access.md).
//!
//! | Route | Caller | Answer |
//! |---|---|---|
//! | `POST /v1/disclosures` [`SubjectBody`] | a key bound to the subject (patient or representative) | [`DisclosureList`]: every access event at every validator, with proofs |
//! | `POST /v1/export` [`SubjectBody`] | the same | a FHIR `Bundle` of everything held about the subject, with proofs, signed by this validator (`cairn_proto::export`) |
//! | `GET /v1/access-log?from_day=&to_day=` | a regulator key | [`AccessLogOut`]: this node's entries (day, outcome, leaf, proof), no content |
//! | `GET /v1/reviews` | a regulator key | [`ReviewList`]: break-glass declarations taken here and their verdicts |
//! | `POST /v1/reviews/{id}` [`VerdictBody`] | a regulator key | the closed [`ReviewOut`] |

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use cairn_proto::KeyId;
use cairn_proto::access::{AccessEntry, Outcome};
use cairn_proto::consent::Subject;
use cairn_proto::membership::Role;
use cairn_proto::record::RecordId;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::ApiState;
use super::auth::{Caller, SignedCaller};
use super::consent::SubjectBody;
use super::error::{ApiError, ErrorBody, Path, Query};
use super::openapi::{AccessEntryDoc, AccessReceiptDoc, ErasureCertificateDoc};
use crate::records::access::audit_event::audit_event;
use crate::records::access::review::{self, Closed, Verdict};
use crate::records::consent::DocumentQuery;

/// One entry of a patient's access log.
#[derive(Debug, Serialize, ToSchema)]
pub struct DisclosureOut {
    /// The node that decided and logged it.
    #[schema(value_type = String)]
    node: KeyId,
    /// Entry handle.
    #[schema(value_type = String, pattern = "^[0-9a-f]{64}$")]
    handle: cairn_proto::Hash32,
    /// `granted`, `refused` or `break_glass`.
    #[schema(value_type = String)]
    outcome: Outcome,
    /// Days since the Unix epoch.
    day: u32,
    /// The event as a FHIR R4 `AuditEvent` (none once the entry is past the log's retention).
    #[schema(value_type = Object)]
    audit_event: Option<serde_json::Value>,
    /// The entry as committed (event and salt): what the receipt proves.
    #[schema(value_type = Option<AccessEntryDoc>)]
    entry: Option<AccessEntry>,
    /// Its proof on chain (none until its batch is committed).
    #[schema(value_type = Option<AccessReceiptDoc>)]
    receipt: Option<cairn_proto::access::AccessReceipt>,
}

/// A patient's access log.
#[derive(Debug, Serialize, ToSchema)]
pub struct DisclosureList {
    /// Every entry found, oldest first.
    entries: Vec<DisclosureOut>,
    /// Validators that did not answer: their entries are missing.
    #[schema(value_type = Vec<String>)]
    missing: Vec<KeyId>,
}

fn body_error(e: serde_json::Error) -> ApiError {
    ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_body", e.to_string())
}

/// Who read a patient's records, when, why, under what, and who was refused: for a key
/// bound to the subject. The subject is in the body, so it appears in no URL.
#[utoipa::path(post, path = "/v1/disclosures", tag = "access", security(("cairnSignature" = [])),
    request_body(content = SubjectBody, content_type = "application/json"),
    responses((status = 200, body = DisclosureList), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody),
        (status = 503, body = ErrorBody)))]
pub(super) async fn disclosures(
    State(s): State<Arc<ApiState>>,
    signed: SignedCaller,
) -> Result<Json<DisclosureList>, ApiError> {
    let body: SubjectBody = serde_json::from_slice(&signed.body).map_err(body_error)?;
    let subject = Subject { gateway: body.gateway, reference: body.reference };
    let set = s.records.gather(DocumentQuery::Subject(subject.clone())).await?;
    let bound = matches!(&signed.caller, Caller::Person(k) if set.role_of(k).is_some());
    if !bound {
        return Err(ApiError::not_found("no access log of that subject that this key may see".into()));
    }
    let (entries, missing) = s.records.disclosures(&subject).await?;
    let entries = entries
        .into_iter()
        .map(|e| DisclosureOut {
            node: e.node,
            handle: e.handle,
            outcome: e.outcome,
            day: e.day,
            audit_event: e.entry.as_ref().map(|x| audit_event(&e.handle, &x.event)),
            entry: e.entry,
            receipt: e.receipt,
        })
        .collect();
    Ok(Json(DisclosureList { entries, missing }))
}

/// Everything held about a patient — readings byte for byte, consent-layer documents, the
/// access log — as a FHIR R4 `Bundle` (type `collection`), each item followed by its proof
/// and the whole signed by this validator (docs/access.md "Export"; `cairn verify-export`).
/// The export is logged as an access event.
#[utoipa::path(post, path = "/v1/export", tag = "access", security(("cairnSignature" = [])),
    request_body(content = SubjectBody, content_type = "application/json"),
    responses((status = 200, body = Object, content_type = "application/fhir+json", description = "a FHIR Bundle"),
        (status = 404, body = ErrorBody), (status = 422, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub(super) async fn export(
    State(s): State<Arc<ApiState>>,
    signed: SignedCaller,
) -> Result<axum::response::Response, ApiError> {
    let body: SubjectBody = serde_json::from_slice(&signed.body).map_err(body_error)?;
    let subject = Subject { gateway: body.gateway, reference: body.reference };
    let Caller::Person(caller) = &signed.caller else {
        return Err(ApiError::not_found("no export of that subject for this key".into()));
    };
    let (text, _) = s.records.export(&subject, caller, signed.now_ms).await.map_err(|e| match e {
        crate::records::consent::ConsentError::NotFound(_) => {
            ApiError::not_found("no export of that subject for this key".into())
        }
        e => e.into(),
    })?;
    Ok(axum::response::IntoResponse::into_response(([("content-type", "application/fhir+json")], text)))
}

fn regulator(signed: &SignedCaller) -> Result<(), ApiError> {
    match &signed.caller {
        Caller::Member(m) if m.role == Role::Regulator => Ok(()),
        _ => {
            Err(ApiError::new(StatusCode::FORBIDDEN, "wrong_role", "a regulator key reads the access log and reviews"))
        }
    }
}

/// Days of the access log.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DaysQuery {
    /// First day, days since the Unix epoch (default 0).
    from_day: Option<u32>,
    /// Last day, inclusive (default: every later day).
    to_day: Option<u32>,
}

/// One row of a node's access log, as a regulator sees it.
#[derive(Debug, Serialize, ToSchema)]
pub struct LogRow {
    /// Entry handle.
    #[schema(value_type = String)]
    handle: cairn_proto::Hash32,
    /// Days since the Unix epoch.
    day: u32,
    /// Outcome class.
    #[schema(value_type = String)]
    outcome: Outcome,
    /// Whether the event is still kept (false past the log's retention).
    kept: bool,
    /// The node's day key the event is sealed under, by reference (see `day_keys`).
    #[schema(value_type = String)]
    sealed_under: cairn_proto::Hash32,
    /// The entry records an erasure of the subject's records (not a disclosure).
    erasure: bool,
    /// Its proof on chain, once committed.
    #[schema(value_type = Option<AccessReceiptDoc>)]
    receipt: Option<cairn_proto::access::AccessReceipt>,
}

/// A node's access log without content: what can be counted and verified by anyone.
#[derive(Debug, Serialize, ToSchema)]
pub struct AccessLogOut {
    /// Rows in the days asked, oldest day first.
    rows: Vec<LogRow>,
    /// Granted, refused and break-glass disclosure counts over those rows (erasures
    /// written in subjects' logs are counted apart).
    granted: u64,
    /// Refused.
    refused: u64,
    /// Break-glass.
    break_glass: u64,
    /// Erasures written in subjects' logs.
    erasures: u64,
    /// The day keys of those rows (ADR 018): each day's events are sealed under one, which
    /// the retention sweep erases, with a certificate, when the day's entries expire.
    day_keys: Vec<DayKeyOut>,
}

/// One day key of the node's access log.
#[derive(Debug, Serialize, ToSchema)]
pub struct DayKeyOut {
    /// Days since the Unix epoch.
    day: u32,
    /// How rows name it: `blake3("cairn/day-key-ref/v1" || record id)`.
    #[schema(value_type = String)]
    reference: cairn_proto::Hash32,
    /// The vault record that keeps (or kept) it; null if this node no longer knows it.
    #[schema(value_type = Option<String>)]
    record: Option<RecordId>,
    /// Still held: the day's entries are within retention.
    held: bool,
    /// Once erased, its erasure certificate (trigger `retention_expired`;
    /// docs/formats/erasure-certificate.md), verifiable with `cairn verify-erasure`.
    #[schema(value_type = Option<ErasureCertificateDoc>)]
    certificate: Option<cairn_proto::erasure::ErasureCertificate>,
}

/// This node's access log in a range of days: counts and every entry's proof, no content
/// (for a regulator; it names no one, before or after an erasure).
#[utoipa::path(get, path = "/v1/access-log", tag = "access", security(("cairnSignature" = [])), params(DaysQuery),
    responses((status = 200, body = AccessLogOut), (status = 403, body = ErrorBody)))]
pub(super) async fn access_log(
    State(s): State<Arc<ApiState>>,
    Query(q): Query<DaysQuery>,
    signed: SignedCaller,
) -> Result<Json<AccessLogOut>, ApiError> {
    regulator(&signed)?;
    let (from, to) = (q.from_day.unwrap_or(0), q.to_day.unwrap_or(u32::MAX));
    let mut rows: Vec<_> =
        s.records.access_rows().await?.into_iter().filter(|(_, r)| (from..=to).contains(&r.day)).collect();
    rows.sort_by_key(|(h, r)| (r.day, *h));
    let receipts = s.records.access_receipts(&rows).await?;
    let day_keys = s
        .records
        .day_key_states(&rows)
        .await?
        .into_iter()
        .map(|d| DayKeyOut {
            day: d.day,
            reference: d.reference,
            record: d.record,
            held: d.held,
            certificate: d.certificate,
        })
        .collect();
    let mut out = AccessLogOut {
        rows: Vec::with_capacity(rows.len()),
        granted: 0,
        refused: 0,
        break_glass: 0,
        erasures: 0,
        day_keys,
    };
    for ((handle, row), receipt) in rows.into_iter().zip(receipts) {
        match row.outcome {
            _ if row.erasure => out.erasures += 1,
            Outcome::Granted => out.granted += 1,
            Outcome::Refused => out.refused += 1,
            Outcome::BreakGlass => out.break_glass += 1,
        }
        let kept = row.sealed.is_some();
        out.rows.push(LogRow {
            handle,
            day: row.day,
            outcome: row.outcome,
            kept,
            sealed_under: row.sealed_under,
            erasure: row.erasure,
            receipt,
        });
    }
    Ok(Json(out))
}

/// One break-glass declaration on the review list.
#[derive(Debug, Serialize, ToSchema)]
pub struct ReviewOut {
    /// The declaration's document id.
    #[schema(value_type = String)]
    declaration: RecordId,
    /// The declaring organisation.
    organisation: String,
    /// `ETREAT` or `BTG`.
    purpose: String,
    /// Taken, Unix milliseconds.
    declared_ms: u64,
    /// End of its time box, Unix milliseconds.
    ends_ms: u64,
    /// Review due, Unix milliseconds.
    due_ms: u64,
    /// Open and past due.
    overdue: bool,
    /// The verdict, once given.
    verdict: Option<Verdict>,
    /// The key that gave it.
    #[schema(value_type = Option<String>)]
    closed_by: Option<KeyId>,
    /// The reviewer's note.
    note: Option<String>,
}

fn review_out(r: review::Review, now_ms: u64) -> ReviewOut {
    ReviewOut {
        declaration: r.declaration,
        organisation: r.organisation,
        purpose: r.purpose,
        declared_ms: r.declared_ms,
        ends_ms: r.ends_ms,
        due_ms: r.due_ms,
        overdue: r.closed.is_none() && r.due_ms <= now_ms,
        verdict: r.closed.as_ref().map(|c| c.verdict),
        closed_by: r.closed.as_ref().map(|c| c.by),
        note: r.closed.map(|c| c.note),
    }
}

/// The review list.
#[derive(Debug, Serialize, ToSchema)]
pub struct ReviewList {
    /// Every declaration this node took, open ones first.
    reviews: Vec<ReviewOut>,
}

/// The break-glass declarations this node took, with their reviews.
#[utoipa::path(get, path = "/v1/reviews", tag = "access", security(("cairnSignature" = [])),
    responses((status = 200, body = ReviewList), (status = 403, body = ErrorBody)))]
pub(super) async fn reviews(
    State(s): State<Arc<ApiState>>,
    signed: SignedCaller,
) -> Result<Json<ReviewList>, ApiError> {
    regulator(&signed)?;
    let mut reviews: Vec<ReviewOut> =
        s.records.reviews().await?.into_iter().map(|r| review_out(r, signed.now_ms)).collect();
    reviews.sort_by_key(|r| (r.verdict.is_some(), r.due_ms));
    Ok(Json(ReviewList { reviews }))
}

/// A reviewer's verdict.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VerdictBody {
    /// `reviewed` (justified) or `unjustified`.
    verdict: Verdict,
    /// Why, in words (1 to 4096 bytes).
    note: String,
}

/// Close the review of a break-glass declaration taken here.
#[utoipa::path(post, path = "/v1/reviews/{id}", tag = "access", security(("cairnSignature" = [])),
    params(("id" = String, Path, pattern = "^[0-9a-f]{32}$", description = "declaration id")),
    request_body(content = VerdictBody, content_type = "application/json"),
    responses((status = 200, body = ReviewOut), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub(super) async fn close_review(
    State(s): State<Arc<ApiState>>,
    Path(id): Path<String>,
    signed: SignedCaller,
) -> Result<Json<ReviewOut>, ApiError> {
    regulator(&signed)?;
    let id: RecordId = id.parse().map_err(|_| {
        ApiError::new(StatusCode::BAD_REQUEST, "bad_id", "a declaration id is 32 hex digits").field("id")
    })?;
    let body: VerdictBody = serde_json::from_slice(&signed.body).map_err(body_error)?;
    if body.note.trim().is_empty() || body.note.len() > 4096 {
        return Err(
            ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_body", "a note of 1 to 4096 bytes").field("note")
        );
    }
    let closed = Closed {
        verdict: body.verdict,
        by: signed.caller.public_key().key_id(),
        at_ms: signed.now_ms,
        note: body.note,
    };
    match s.records.close_review(id, closed).await {
        Ok(r) => Ok(Json(review_out(r, signed.now_ms))),
        Err(e @ review::CloseError::NotFound(_)) => Err(ApiError::not_found(e.to_string())),
        Err(e @ review::CloseError::Closed(_)) => Err(ApiError::new(StatusCode::CONFLICT, "closed", e.to_string())),
        Err(review::CloseError::Store(e)) => Err(s.records.note(e.into()).into()),
    }
}
