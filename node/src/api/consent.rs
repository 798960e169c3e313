//! Consent, purpose and access routes (DESIGN.md §7; ADR 017; docs/consent.md).
//!
//! | Route | Caller | Answer |
//! |---|---|---|
//! | `GET /v1/policy` | anyone | [`PolicyOut`]: the purposes reads may name, and the policy version |
//! | `POST /v1/documents` [`DocumentBody`] | a signer of the document | 201 [`DocumentCreated`] once n − f validators hold it |
//! | `POST /v1/documents/search` [`SubjectBody`] | the subject's gateway or a key bound to it | [`DocumentList`] |
//! | `GET /v1/documents/{id}` | a signer, or the subject's gateway | [`DocumentOut`], the JSON byte for byte |
//! | `GET /v1/documents/{id}/receipt` | same, at the node that took it | [`DocumentReceiptDoc`] or 202 pending |
//! | `GET /v1/documents/{id}/certificate` | same (agreements) | [`AgreementCertificateDoc`] or 202 pending |
//! | `GET /v1/access/records?purpose=&basis=` | an accessor (consent) or a family member (grant) | [`AccessList`] |
//! | `GET /v1/access/records/{rid}?purpose=&basis=` | same | [`AccessRecord`] |
//!
//! Every refusal of a read is 403 with a reason code (`no_purpose`, `purpose_not_in_policy`,
//! `no_consent`, `no_grant`, `revoked`, `expired`, `not_grantee`, `purpose_not_consented`,
//! `category_not_covered`, `agreement_not_executed`, …) and the decision trace.

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use cairn_proto::consent::{AgreementCertificate, Document, DocumentKind, DocumentReceipt, PartySignature, Subject};
use cairn_proto::membership::Role;
use cairn_proto::record::RecordId;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use utoipa::{IntoParams, ToSchema};

use super::ApiState;
use super::auth::{Caller, SignedCaller};
use super::error::{ApiError, ErrorBody, Path, Query};
use super::gateway::{MAX_WAIT_MS, WaitQuery};
use super::openapi::{AgreementCertificateDoc, DocumentReceiptDoc};
use crate::records::access::read::{AccessRequest, Released};
use crate::records::consent::decide::Reader;
use crate::records::consent::{ConsentError, DocumentQuery, StoredDocument};
use cairn_proto::access::Accessor;

impl From<ConsentError> for ApiError {
    fn from(e: ConsentError) -> Self {
        match e {
            ConsentError::Invalid { field, problem } => {
                ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_document", problem).field(field)
            }
            ConsentError::Refused { code, message, trace } => {
                ApiError::new(StatusCode::FORBIDDEN, code, message).detail("trace", serde_json::json!(trace))
            }
            ConsentError::NotFound(id) => {
                ApiError::not_found(format!("no document or record {id} that this key may see"))
            }
            ConsentError::Unavailable(m) => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "validators_unavailable", m),
            e @ ConsentError::TakenElsewhere { node, .. } => {
                ApiError::new(StatusCode::CONFLICT, "taken_elsewhere", e.to_string())
                    .detail("taken_by", serde_json::json!(node))
            }
            ConsentError::Records(e) => e.into(),
        }
    }
}

/// The purpose policy in force.
#[derive(Debug, Serialize, ToSchema)]
pub struct PolicyOut {
    /// Permitted v3 PurposeOfUse codes.
    purposes: Vec<String>,
    /// Organisations whose admins must sign a change.
    change_quorum: u32,
    /// 0 for the genesis policy, then one more per committed change.
    version: u64,
}

/// The purposes reads may name (the genesis policy and committed changes).
#[utoipa::path(get, path = "/v1/policy", tag = "consent", responses((status = 200, body = PolicyOut)))]
pub(super) async fn policy(State(s): State<Arc<ApiState>>) -> Json<PolicyOut> {
    let ledger = s.chain.ledger();
    let (p, version) = ledger.policy();
    Json(PolicyOut { purposes: p.purposes.clone(), change_quorum: p.change_quorum, version })
}

/// A subject: the gateway's key id and its subject key.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SubjectBody {
    /// The gateway's key id.
    #[schema(value_type = String, pattern = "^[0-9a-f]{32}$")]
    pub(super) gateway: cairn_proto::KeyId,
    /// The subject key readings are filed under (ADR 015), 1 to 256 bytes.
    #[schema(min_length = 1, max_length = 256)]
    pub(super) reference: String,
}

/// A party's signature.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SignatureBody {
    /// Public key, 64 hex digits.
    #[schema(value_type = String, pattern = "^[0-9a-f]{64}$")]
    key: cairn_proto::PublicKey,
    /// Signature, 128 hex digits.
    #[schema(value_type = String, pattern = "^[0-9a-f]{128}$")]
    signature: cairn_proto::Signature,
}

/// The body of `POST /v1/documents` (docs/consent.md): the document's JSON as `resource`
/// (kept byte for byte), its kind, subject and signatures.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DocumentBody {
    /// `subject_binding`, `consent`, `family_grant`, `agreement` or `revocation`.
    #[schema(value_type = String)]
    kind: DocumentKind,
    /// Whose records.
    subject: SubjectBody,
    /// The document's JSON (a FHIR `Consent` for `consent`).
    #[schema(value_type = Object)]
    resource: Box<RawValue>,
    /// The parties' signatures over `"cairn/sig/document/v1" || bcs(DocumentToSign)`.
    signatures: Vec<SignatureBody>,
}

/// A document taken.
#[derive(Debug, Serialize, ToSchema)]
pub struct DocumentCreated {
    /// Its id (32 hex digits).
    #[schema(value_type = String, pattern = "^[0-9a-f]{32}$")]
    id: RecordId,
    /// Its kind.
    #[schema(value_type = String)]
    kind: DocumentKind,
    /// The node that took it: ask it for the receipt.
    #[schema(value_type = String, pattern = "^[0-9a-f]{32}$")]
    taken_by: cairn_proto::KeyId,
}

fn body_error(e: impl std::fmt::Display) -> ApiError {
    ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_document", e.to_string())
}

/// Give a document: a gateway's binding, a patient's consent, a family grant, an
/// agreement signed by all its parties, or a revocation. Checked against the subject's
/// documents, the membership and the purpose policy; stored at every reachable validator.
#[utoipa::path(post, path = "/v1/documents", tag = "consent", security(("cairnSignature" = [])),
    request_body(content = DocumentBody, content_type = "application/json"),
    responses((status = 201, body = DocumentCreated), (status = 403, body = ErrorBody),
        (status = 422, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub(super) async fn submit(State(s): State<Arc<ApiState>>, signed: SignedCaller) -> Result<Response, ApiError> {
    let body: DocumentBody = serde_json::from_slice(&signed.body).map_err(body_error)?;
    let json = body.resource.get().to_string();
    if let Err(e) = crate::records::fhir::check_unique_keys(json.as_bytes()) {
        return Err(ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "duplicate_key", e).field("resource"));
    }
    let doc = Document {
        kind: body.kind,
        subject: Subject { gateway: body.subject.gateway, reference: body.subject.reference },
        json,
        signatures: body
            .signatures
            .into_iter()
            .map(|s| PartySignature { key: s.key, signature: s.signature })
            .collect(),
    };
    let kind = doc.kind;
    let id = s.records.submit_document(&signed.caller.public_key(), doc, signed.now_ms).await?;
    Ok((StatusCode::CREATED, Json(DocumentCreated { id, kind, taken_by: s.records.me })).into_response())
}

/// A stored document as served: the JSON byte for byte in `resource`.
#[derive(Debug, Serialize, ToSchema)]
pub struct DocumentOut {
    /// Its id.
    #[schema(value_type = String, pattern = "^[0-9a-f]{32}$")]
    id: RecordId,
    /// Its kind.
    #[schema(value_type = String)]
    kind: DocumentKind,
    /// Whose records.
    #[schema(value_type = Object)]
    subject: Subject,
    /// The JSON as it was given.
    #[schema(value_type = Object)]
    resource: Box<RawValue>,
    /// The signatures.
    #[schema(value_type = Vec<Object>)]
    signatures: Vec<PartySignature>,
}

fn out(id: RecordId, d: Document) -> Result<DocumentOut, ApiError> {
    Ok(DocumentOut {
        id,
        kind: d.kind,
        resource: RawValue::from_string(d.json).map_err(ApiError::internal)?,
        subject: d.subject,
        signatures: d.signatures,
    })
}

/// Whether `caller` may see the documents of `subject`: its gateway, or a key bound to it.
fn may_see(caller: &Caller, subject: &Subject, set: &crate::records::consent::decide::DocSet) -> bool {
    match caller {
        Caller::Member(m) => m.role == Role::Gateway && m.public_key.key_id() == subject.gateway,
        Caller::Person(k) => set.role_of(k).is_some(),
    }
}

/// The documents of a subject.
#[derive(Debug, Serialize, ToSchema)]
pub struct DocumentList {
    /// Every document, oldest id first.
    documents: Vec<DocumentOut>,
}

/// List the documents of one subject (for its gateway, or a key bound to it). The
/// subject is in the body, not the URL, so it appears in no access log.
#[utoipa::path(post, path = "/v1/documents/search", tag = "consent", security(("cairnSignature" = [])),
    request_body(content = SubjectBody, content_type = "application/json"),
    responses((status = 200, body = DocumentList), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody),
        (status = 503, body = ErrorBody)))]
pub(super) async fn search(
    State(s): State<Arc<ApiState>>,
    signed: SignedCaller,
) -> Result<Json<DocumentList>, ApiError> {
    let body: SubjectBody = serde_json::from_slice(&signed.body).map_err(body_error)?;
    let subject = Subject { gateway: body.gateway, reference: body.reference };
    let set = s.records.gather(DocumentQuery::Subject(subject.clone())).await?;
    if !may_see(&signed.caller, &subject, &set) {
        return Err(ApiError::not_found("no documents of that subject that this key may see".into()));
    }
    let documents = set.docs.into_iter().map(|d| out(d.id, d.document)).collect::<Result<_, _>>()?;
    Ok(Json(DocumentList { documents }))
}

fn parse_id(id: &str) -> Result<RecordId, ApiError> {
    id.parse()
        .map_err(|_| ApiError::new(StatusCode::BAD_REQUEST, "bad_id", "a document id is 32 hex digits").field("id"))
}

/// One document (for a signer of it, or the subject's gateway).
#[utoipa::path(get, path = "/v1/documents/{id}", tag = "consent", security(("cairnSignature" = [])),
    params(("id" = String, Path, pattern = "^[0-9a-f]{32}$", description = "document id")),
    responses((status = 200, body = DocumentOut), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 503, body = ErrorBody)))]
pub(super) async fn document(
    State(s): State<Arc<ApiState>>,
    Path(id): Path<String>,
    signed: SignedCaller,
) -> Result<Json<DocumentOut>, ApiError> {
    let id = parse_id(&id)?;
    let set = s.records.gather(DocumentQuery::Containing(id)).await?;
    let Some(doc) = set.get(&id) else { return Err(ConsentError::NotFound(id).into()) };
    let caller = signed.caller.public_key();
    if !doc.document.signed_by(&caller) && !may_see(&signed.caller, &doc.document.subject, &set) {
        return Err(ConsentError::NotFound(id).into());
    }
    Ok(Json(out(id, doc.document.clone())?))
}

/// Not committed yet.
#[derive(Debug, Serialize, ToSchema)]
pub struct DocumentPending {
    /// Always `pending`.
    status: String,
    /// The document.
    #[schema(value_type = String)]
    id: RecordId,
}

/// The receipt of document `id`'s event with the document as stored, waiting up to
/// `wait_ms` (at most [`MAX_WAIT_MS`]) for it to be committed; `None` while pending.
async fn committed(
    s: &ApiState,
    signed: &SignedCaller,
    id: RecordId,
    wait_ms: Option<u64>,
) -> Result<Option<(DocumentReceipt, StoredDocument)>, ApiError> {
    let who = signed.caller.public_key().key_id();
    let deadline = tokio::time::Instant::now() + Duration::from_millis(wait_ms.unwrap_or(0).min(MAX_WAIT_MS));
    loop {
        let mut decided = s.chain.subscribe_decided();
        if let Some(found) = s.records.document_receipt(&who, id).await? {
            return Ok(Some(found));
        }
        tokio::select! {
            _ = decided.changed() => {}
            _ = tokio::time::sleep_until(deadline) => return Ok(None),
        }
    }
}

fn pending(id: RecordId) -> Response {
    (StatusCode::ACCEPTED, Json(DocumentPending { status: "pending".into(), id })).into_response()
}

/// The receipt of a document's event (at the node that took it).
#[utoipa::path(get, path = "/v1/documents/{id}/receipt", tag = "consent", security(("cairnSignature" = [])),
    params(("id" = String, Path, pattern = "^[0-9a-f]{32}$"), WaitQuery),
    responses((status = 200, body = DocumentReceiptDoc), (status = 202, body = DocumentPending), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub(super) async fn receipt(
    State(s): State<Arc<ApiState>>,
    Path(id): Path<String>,
    Query(q): Query<WaitQuery>,
    signed: SignedCaller,
) -> Result<Response, ApiError> {
    let id = parse_id(&id)?;
    Ok(match committed(&s, &signed, id, q.wait_ms).await? {
        Some((receipt, _)) => Json(receipt).into_response(),
        None => pending(id),
    })
}

/// The certificate of an executed agreement (at the node that took it): the agreement,
/// the salt of its event commitment and the receipt.
#[utoipa::path(get, path = "/v1/documents/{id}/certificate", tag = "consent", security(("cairnSignature" = [])),
    params(("id" = String, Path, pattern = "^[0-9a-f]{32}$"), WaitQuery),
    responses((status = 200, body = AgreementCertificateDoc), (status = 202, body = DocumentPending),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub(super) async fn certificate(
    State(s): State<Arc<ApiState>>,
    Path(id): Path<String>,
    Query(q): Query<WaitQuery>,
    signed: SignedCaller,
) -> Result<Response, ApiError> {
    let id = parse_id(&id)?;
    Ok(match committed(&s, &signed, id, q.wait_ms).await? {
        Some((_, stored)) if stored.document.kind != DocumentKind::Agreement => {
            return Err(ConsentError::NotFound(id).into());
        }
        Some((receipt, stored)) => {
            Json(AgreementCertificate { version: 1, document: stored.document, salt: stored.salt, receipt })
                .into_response()
        }
        None => pending(id),
    })
}

/// The query of an access read.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AccessQuery {
    /// The v3 PurposeOfUse code of this read; it must be in the policy and consented.
    #[param(required = true, min_length = 2, max_length = 16)]
    purpose: Option<String>,
    /// The document the read relies on: a consent (accessor) or a family grant.
    #[param(required = true, pattern = "^[0-9a-f]{32}$")]
    basis: Option<String>,
}

/// The decision behind an answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct DecisionOut {
    /// The document relied on.
    #[schema(value_type = String)]
    basis: RecordId,
    /// The purpose.
    purpose: String,
    /// Documents and rules used.
    trace: Vec<String>,
    /// Whether the read relied on a break-glass declaration (flagged, reviewed).
    break_glass: bool,
    /// The access-log entry of this read (its handle): logged before the answer.
    #[schema(value_type = String, pattern = "^[0-9a-f]{64}$")]
    entry: cairn_proto::Hash32,
}

/// A record released to an accessor or family member.
#[derive(Debug, Serialize, ToSchema)]
pub struct AccessRecord {
    /// Record id.
    #[schema(value_type = String)]
    rid: RecordId,
    /// Received, Unix milliseconds.
    received_at_ms: u64,
    /// The FHIR resource as it was sent.
    #[schema(value_type = Object)]
    resource: Box<RawValue>,
    /// Why it was released.
    decision: DecisionOut,
}

/// The records released under one decision.
#[derive(Debug, Serialize, ToSchema)]
pub struct AccessList {
    /// Records the permit covers, with content.
    records: Vec<AccessRecord>,
    /// Records of the subject the permit does not cover (category, data period, a deny).
    withheld: usize,
    /// Why.
    decision: DecisionOut,
}

/// The access request of a signed read: who reads, for the decision and for the log.
fn access_request(signed: &SignedCaller, q: &AccessQuery, rid: Option<RecordId>) -> Result<AccessRequest, ApiError> {
    let purpose = q.purpose.clone().filter(|p| !p.is_empty()).ok_or_else(|| {
        ApiError::new(StatusCode::FORBIDDEN, "no_purpose", "every read names its purpose of use (e.g. purpose=TREAT)")
            .field("purpose")
    })?;
    let basis = parse_id(q.basis.as_deref().unwrap_or("")).map_err(|e| e.field("basis"))?;
    let (reader, accessor) = match &signed.caller {
        Caller::Member(m) if m.role == Role::Accessor => (
            Reader::Organisation(m.organisation.clone()),
            Accessor::Organisation { name: m.organisation.clone(), key: m.public_key.key_id() },
        ),
        Caller::Member(m) => {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "wrong_role",
                format!("a {:?} key does not read through consents; accessors and family members do", m.role),
            ));
        }
        Caller::Person(k) => (Reader::Person(*k), Accessor::FamilyMember { key: k.key_id() }),
    };
    Ok(AccessRequest { reader, accessor, purpose, basis, rid, now_ms: signed.now_ms })
}

fn decision(released: &Released, purpose: &str) -> DecisionOut {
    DecisionOut {
        basis: released.permit.basis,
        purpose: purpose.to_string(),
        trace: released.permit.trace.clone(),
        break_glass: released.permit.break_glass,
        entry: released.entry,
    }
}

fn released(a: crate::records::read::ReadAnswer, decision: DecisionOut) -> Result<AccessRecord, ApiError> {
    Ok(AccessRecord {
        rid: a.record.rid,
        received_at_ms: a.record.received_at_ms,
        resource: RawValue::from_string(a.record.resource).map_err(ApiError::internal)?,
        decision,
    })
}

/// Read a patient's records as an accessor (relying on a consent) or a family member
/// (relying on a grant), for a named purpose.
#[utoipa::path(get, path = "/v1/access/records", tag = "consent", security(("cairnSignature" = [])),
    params(AccessQuery),
    responses((status = 200, body = AccessList), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 503, body = ErrorBody)))]
pub(super) async fn access_list(
    State(s): State<Arc<ApiState>>,
    Query(q): Query<AccessQuery>,
    signed: SignedCaller,
) -> Result<Json<AccessList>, ApiError> {
    let req = access_request(&signed, &q, None)?;
    let out = s.records.access(req.clone()).await?;
    let records =
        out.records.iter().map(|a| released(a.clone(), decision(&out, &req.purpose))).collect::<Result<_, _>>()?;
    Ok(Json(AccessList { records, withheld: out.withheld, decision: decision(&out, &req.purpose) }))
}

/// Read one record of a patient as an accessor or family member.
#[utoipa::path(get, path = "/v1/access/records/{rid}", tag = "consent", security(("cairnSignature" = [])),
    params(("rid" = String, Path, pattern = "^[0-9a-f]{32}$"), AccessQuery),
    responses((status = 200, body = AccessRecord), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub(super) async fn access_record(
    State(s): State<Arc<ApiState>>,
    Path(rid): Path<String>,
    Query(q): Query<AccessQuery>,
    signed: SignedCaller,
) -> Result<Json<AccessRecord>, ApiError> {
    let rid = parse_id(&rid).map_err(|e| e.field("rid"))?;
    let req = access_request(&signed, &q, Some(rid))?;
    let mut out = s.records.access(req.clone()).await?;
    let d = decision(&out, &req.purpose);
    let answer = out.records.pop().ok_or_else(|| ApiError::not_found(format!("no record {rid}")))?;
    Ok(Json(released(answer, d)?))
}
