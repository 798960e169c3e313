//! Consent, family grants, three-party agreements and reads through them (DESIGN.md §7;
//! ADR 017; docs/consent.md): building the documents, signing them, giving them to a
//! node, and reading a patient's records as an accessor or a family member.
//!
//! A document travels as a [`DocumentFile`]: the JSON a node takes at
//! `POST /v1/documents`, kept in a file while its parties sign it one after another.

use cairn_proto::consent::{
    Agreement, BreachNotice, Document, DocumentKind, FamilyGrant, FamilyMember, Institution, PartySignature, Period,
    PersonRole, RelationshipVerification, Revocation, Subject, SubjectBinding,
};
use cairn_proto::record::RecordId;
use cairn_proto::{Hash32, KeyId, Keypair, PublicKey};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::gateway::{Gateway, GatewayError};

/// The v3 ActReason code system (PurposeOfUse).
pub const ACT_REASON: &str = "http://terminology.hl7.org/CodeSystem/v3-ActReason";

/// A document with its signatures so far, as a node takes it.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DocumentFile {
    /// What it states.
    pub kind: DocumentKind,
    /// Whose records.
    pub subject: Subject,
    /// The document's JSON, kept byte for byte.
    pub resource: Box<RawValue>,
    /// Signatures so far.
    pub signatures: Vec<PartySignature>,
}

fn local(e: impl std::fmt::Display) -> GatewayError {
    GatewayError::Local(e.to_string())
}

impl DocumentFile {
    /// A new, unsigned document.
    pub fn new(kind: DocumentKind, subject: Subject, json: String) -> Result<Self, GatewayError> {
        Ok(Self { kind, subject, resource: RawValue::from_string(json).map_err(local)?, signatures: Vec::new() })
    }

    /// The document as signed.
    pub fn document(&self) -> Document {
        Document {
            kind: self.kind,
            subject: self.subject.clone(),
            json: self.resource.get().to_string(),
            signatures: self.signatures.clone(),
        }
    }

    /// Adds `key`'s signature for chain `chain` (the genesis hash).
    pub fn sign(&mut self, chain: &Hash32, key: &Keypair) -> Result<(), GatewayError> {
        let mut doc = self.document();
        doc.sign(chain, key).map_err(local)?;
        self.signatures = doc.signatures;
        Ok(())
    }

    /// Reads a document file.
    pub fn parse(text: &str) -> Result<Self, GatewayError> {
        serde_json::from_str(text).map_err(|e| GatewayError::Local(format!("not a cairn document file: {e}")))
    }

    /// The file's text.
    pub fn render(&self) -> Result<String, GatewayError> {
        serde_json::to_string_pretty(self).map_err(local)
    }
}

/// Unix milliseconds of an RFC 3339 date-time with an offset.
pub fn instant_ms(text: &str) -> Result<u64, GatewayError> {
    let t: jiff::Timestamp = text
        .parse()
        .map_err(|e| GatewayError::Local(format!("{text:?} is not an RFC 3339 date-time with an offset: {e}")))?;
    u64::try_from(t.as_millisecond()).map_err(|_| GatewayError::Local(format!("{text:?} is before 1970")))
}

/// What a patient consents to.
#[derive(Debug, Clone)]
pub struct ConsentSpec {
    /// The subject key readings are filed under.
    pub subject: String,
    /// The organisation that may read (genesis name).
    pub organisation: String,
    /// v3 PurposeOfUse codes.
    pub purposes: Vec<String>,
    /// Record categories as `system|code` (none: all).
    pub categories: Vec<String>,
    /// Consent period, RFC 3339.
    pub start: String,
    /// End of the consent period, RFC 3339.
    pub end: String,
    /// Data period, RFC 3339 (records whose time is inside).
    pub data_start: Option<String>,
    /// End of the data period.
    pub data_end: Option<String>,
    /// Purposes denied as nested provisions (exceptions).
    pub deny_purposes: Vec<String>,
}

/// A FHIR R4 `Consent` for `spec`, pretty-printed.
pub fn consent_json(spec: &ConsentSpec) -> Result<String, GatewayError> {
    let coding = |p: &String| serde_json::json!({"system": ACT_REASON, "code": p});
    let mut provision = serde_json::json!({
        "type": "permit",
        "period": {"start": spec.start, "end": spec.end},
        "actor": [{
            "role": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType", "code": "IRCP"}]},
            "reference": {"reference": format!("Organization/{}", spec.organisation)}
        }],
        "purpose": spec.purposes.iter().map(coding).collect::<Vec<_>>(),
    });
    if !spec.categories.is_empty() {
        let mut codes = Vec::new();
        for c in &spec.categories {
            let (system, code) =
                c.split_once('|').ok_or_else(|| GatewayError::Local(format!("category {c:?} is not system|code")))?;
            codes.push(serde_json::json!({"coding": [{"system": system, "code": code}]}));
        }
        provision.as_object_mut().map(|m| m.insert("code".into(), codes.into()));
    }
    if spec.data_start.is_some() || spec.data_end.is_some() {
        let mut p = serde_json::Map::new();
        if let Some(s) = &spec.data_start {
            p.insert("start".into(), s.clone().into());
        }
        if let Some(e) = &spec.data_end {
            p.insert("end".into(), e.clone().into());
        }
        provision.as_object_mut().map(|m| m.insert("dataPeriod".into(), p.into()));
    }
    if !spec.deny_purposes.is_empty() {
        let nested =
            serde_json::json!([{"type": "deny", "purpose": spec.deny_purposes.iter().map(coding).collect::<Vec<_>>()}]);
        provision.as_object_mut().map(|m| m.insert("provision".into(), nested));
    }
    let consent = serde_json::json!({
        "resourceType": "Consent",
        "status": "active",
        "scope": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope", "code": "patient-privacy"}]},
        "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}],
        "patient": {"reference": spec.subject},
        "dateTime": jiff::Timestamp::now().to_string(),
        "provision": provision,
    });
    serde_json::to_string_pretty(&consent).map_err(local)
}

/// The JSON of a binding of `key` (as `role`) by a gateway.
pub fn binding_json(key: PublicKey, role: PersonRole) -> Result<String, GatewayError> {
    let b = SubjectBinding { key, role, issued_ms: cairn_proto::time::now_ms() };
    serde_json::to_string_pretty(&b).map_err(local)
}

/// The terms of a family grant.
#[derive(Debug, Clone)]
pub struct GrantSpec {
    /// The patient's key.
    pub patient: PublicKey,
    /// A representative signing for the patient, if any.
    pub representative: Option<PublicKey>,
    /// The family member's key.
    pub family: PublicKey,
    /// v3 RoleCode of the relationship.
    pub relationship: String,
    /// blake3 of the evidence document.
    pub evidence_hash: Hash32,
    /// The verifying organisation.
    pub verified_by: String,
    /// The verifier's key.
    pub verifier: PublicKey,
    /// The executed agreement.
    pub agreement: RecordId,
    /// Purposes (FAMRQT and care purposes).
    pub purposes: Vec<String>,
    /// Categories or `*`.
    pub categories: Vec<String>,
    /// Period.
    pub period: Period,
}

/// The JSON of a family grant.
pub fn grant_json(g: &GrantSpec) -> Result<String, GatewayError> {
    let grant = FamilyGrant {
        patient: g.patient,
        family: FamilyMember { key: g.family, relationship: g.relationship.clone() },
        signed_as: if g.representative.is_some() { PersonRole::Representative } else { PersonRole::Patient },
        representative: g.representative,
        verification: RelationshipVerification {
            evidence_hash: g.evidence_hash,
            verified_by: g.verified_by.clone(),
            verifier: g.verifier,
        },
        agreement: g.agreement,
        purposes: g.purposes.clone(),
        categories: g.categories.clone(),
        period: g.period,
    };
    let json = serde_json::to_string_pretty(&grant).map_err(local)?;
    FamilyGrant::parse(&json).map_err(local)?;
    Ok(json)
}

/// The terms of a three-party agreement.
#[derive(Debug, Clone)]
pub struct AgreementSpec {
    /// blake3 of the contract text.
    pub text_hash: Hash32,
    /// The institution's organisation.
    pub organisation: String,
    /// The key signing for it.
    pub institution_key: PublicKey,
    /// The patient's key.
    pub patient: PublicKey,
    /// Family members and relationships.
    pub family: Vec<(PublicKey, String)>,
    /// Purposes.
    pub purposes: Vec<String>,
    /// Categories or `*`.
    pub categories: Vec<String>,
    /// Retention, days.
    pub retention_days: u32,
    /// Liability clause.
    pub liability: String,
    /// Breach notice, hours.
    pub breach_hours: u32,
    /// Breach-notice duties.
    pub breach_duties: String,
    /// Period.
    pub period: Period,
    /// The agreement it amends.
    pub replaces: Option<RecordId>,
}

/// The JSON of an agreement.
pub fn agreement_json(a: &AgreementSpec) -> Result<String, GatewayError> {
    let agreement = Agreement {
        text_hash: a.text_hash,
        institution: Institution { organisation: a.organisation.clone(), key: a.institution_key },
        patient: a.patient,
        family: a
            .family
            .iter()
            .map(|(key, relationship)| FamilyMember { key: *key, relationship: relationship.clone() })
            .collect(),
        purposes: a.purposes.clone(),
        categories: a.categories.clone(),
        retention_days: a.retention_days,
        liability: a.liability.clone(),
        breach_notice: BreachNotice { within_hours: a.breach_hours, duties: a.breach_duties.clone() },
        period: a.period,
        replaces: a.replaces,
    };
    let json = serde_json::to_string_pretty(&agreement).map_err(local)?;
    Agreement::parse(&json).map_err(local)?;
    Ok(json)
}

/// The JSON of a revocation of `id`.
pub fn revocation_json(id: RecordId) -> Result<String, GatewayError> {
    serde_json::to_string_pretty(&Revocation { revokes: id, at_ms: cairn_proto::time::now_ms() }).map_err(local)
}

/// A document taken by a node.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct Created {
    /// Its id.
    pub id: RecordId,
    /// Its kind.
    pub kind: DocumentKind,
    /// The node that took it (its receipt is there).
    pub taken_by: KeyId,
}

fn parse<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, GatewayError> {
    serde_json::from_slice(bytes).map_err(|e| GatewayError::Unexpected(e.to_string()))
}

impl Gateway {
    /// Gives a document to the node (the caller must be one of its signers).
    pub fn give(&self, file: &DocumentFile) -> Result<Created, GatewayError> {
        let body = serde_json::to_vec(file).map_err(local)?;
        let (_, answer) = self.call("POST", "/v1/documents", "application/json", &[], &body)?;
        parse(&answer)
    }

    /// The documents of a subject: `{"documents":[...]}` as the node answers.
    pub fn documents(&self, subject: &Subject) -> Result<serde_json::Value, GatewayError> {
        let body = serde_json::to_vec(subject).map_err(local)?;
        let (_, answer) = self.call("POST", "/v1/documents/search", "application/json", &[], &body)?;
        parse(&answer)
    }

    /// One document, as the node's answer bytes (its `resource` is the JSON byte for byte).
    pub fn document_bytes(&self, id: &RecordId) -> Result<Vec<u8>, GatewayError> {
        Ok(self.call("GET", &format!("/v1/documents/{id}"), "application/json", &[], b"")?.1)
    }

    /// The receipt of a document's event, waiting up to `wait_ms`; `None` while pending.
    pub fn document_receipt(&self, id: &RecordId, wait_ms: u64) -> Result<Option<serde_json::Value>, GatewayError> {
        let (status, answer) =
            self.call("GET", &format!("/v1/documents/{id}/receipt?wait_ms={wait_ms}"), "application/json", &[], b"")?;
        if status == 202 { Ok(None) } else { parse(&answer).map(Some) }
    }

    /// The certificate of an executed agreement, waiting up to `wait_ms`.
    pub fn agreement_certificate(
        &self,
        id: &RecordId,
        wait_ms: u64,
    ) -> Result<Option<cairn_proto::consent::AgreementCertificate>, GatewayError> {
        let target = format!("/v1/documents/{id}/certificate?wait_ms={wait_ms}");
        let (status, answer) = self.call("GET", &target, "application/json", &[], b"")?;
        if status == 202 { Ok(None) } else { parse(&answer).map(Some) }
    }

    /// Reads a patient's records through a consent or grant (`basis`) for `purpose`:
    /// one record (`rid`) or all the basis covers; the node's answer bytes.
    pub fn access(&self, purpose: &str, basis: &RecordId, rid: Option<&RecordId>) -> Result<Vec<u8>, GatewayError> {
        if !cairn_proto::policy::is_purpose_code(purpose) {
            return Err(GatewayError::Local(format!("{purpose:?} is not a v3 PurposeOfUse code (2 to 16 of A-Z)")));
        }
        let path = match rid {
            Some(rid) => format!("/v1/access/records/{rid}"),
            None => "/v1/access/records".to_string(),
        };
        Ok(self.call("GET", &format!("{path}?purpose={purpose}&basis={basis}"), "application/json", &[], b"")?.1)
    }

    /// The purpose policy in force: `{"purposes","change_quorum","version"}`.
    pub fn policy(&self) -> Result<serde_json::Value, GatewayError> {
        let url = format!("{}/v1/policy", self.node);
        let (status, answer) = crate::http::request("GET", &url, "", b"")?;
        if status != 200 {
            return Err(GatewayError::Unexpected(format!("{url} answered {status}")));
        }
        parse(&answer)
    }
}
