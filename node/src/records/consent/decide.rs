//! The read decision (docs/consent.md "Decision rules"): from a subject's documents, the
//! purpose policy and who asks for what, either a permit (with the scopes every record
//! must be inside) or a refusal with a reason code — and, either way, a short trace of the
//! documents and rules used, for the access log. Pure: no I/O, no clock.

use cairn_proto::consent::{
    Agreement, BreakGlass, Document, DocumentKind, FamilyGrant, PersonRole, Restriction, Revocation, SubjectBinding,
};
use cairn_proto::policy::PurposePolicy;
use cairn_proto::record::RecordId;
use cairn_proto::{Hash32, PublicKey};

use super::fhir::{ConsentTerms, ProvisionType, Scope};

/// A document with its id, read into its terms.
#[derive(Debug, Clone)]
pub struct Doc {
    /// Document id (the vault record that keeps it).
    pub id: RecordId,
    /// As signed.
    pub document: Document,
    /// Read into terms.
    pub terms: Terms,
}

/// A document's terms by kind.
#[derive(Debug, Clone)]
pub enum Terms {
    /// A gateway's binding.
    Binding(SubjectBinding),
    /// A FHIR Consent.
    Consent(Box<ConsentTerms>),
    /// A family grant.
    Grant(Box<FamilyGrant>),
    /// A three-party agreement.
    Agreement(Box<Agreement>),
    /// A revocation.
    Revocation(Revocation),
    /// The patient's restriction of processing.
    Restriction(Restriction),
    /// An accessor's break-glass declaration.
    BreakGlass(Box<BreakGlass>),
}

/// Why a document cannot be read into terms.
pub type TermsError = (String, String);

impl Terms {
    /// Reads `doc`'s JSON by its kind; `Err((field, problem))`.
    pub fn read(doc: &Document) -> Result<Self, TermsError> {
        let proto = |e: cairn_proto::consent::DocumentError| match e {
            cairn_proto::consent::DocumentError::Invalid { field, problem } => (field, problem),
            other => ("json".to_string(), other.to_string()),
        };
        Ok(match doc.kind {
            DocumentKind::SubjectBinding => Terms::Binding(SubjectBinding::parse(&doc.json).map_err(proto)?),
            DocumentKind::Consent => {
                let t = super::fhir::parse(&doc.json).map_err(|e| (e.field, e.problem))?;
                if t.patient != doc.subject.reference {
                    return Err(("patient.reference".into(), "is not the subject the document is filed under".into()));
                }
                Terms::Consent(Box::new(t))
            }
            DocumentKind::FamilyGrant => Terms::Grant(Box::new(FamilyGrant::parse(&doc.json).map_err(proto)?)),
            DocumentKind::Agreement => Terms::Agreement(Box::new(Agreement::parse(&doc.json).map_err(proto)?)),
            DocumentKind::Revocation => Terms::Revocation(Revocation::parse(&doc.json).map_err(proto)?),
            DocumentKind::Restriction => Terms::Restriction(Restriction::parse(&doc.json).map_err(proto)?),
            DocumentKind::BreakGlass => Terms::BreakGlass(Box::new(BreakGlass::parse(&doc.json).map_err(proto)?)),
        })
    }
}

/// Whether two stored documents are copies of one: same kind, subject and JSON (their
/// signatures may be listed in another order).
fn same_document(a: &Doc, b: &Doc) -> bool {
    a.id == b.id
        || (a.document.kind == b.document.kind
            && a.document.subject == b.document.subject
            && a.document.json == b.document.json)
}

/// Who reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reader {
    /// An accessor key of this organisation (checked against the ledger by the caller).
    Organisation(String),
    /// A person's key (a family member).
    Person(PublicKey),
}

/// A refused read: reason code, message, trace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// Machine-readable reason (`no_consent`, `expired`, `revoked`, `purpose_not_in_policy`, …).
    pub code: &'static str,
    /// In words.
    pub message: String,
    /// Documents and rules used.
    pub trace: Vec<String>,
}

/// A permitted read: every record must be inside all of `scopes` and outside every one of
/// `exceptions`.
#[derive(Debug, Clone)]
pub struct Permit {
    /// The document relied on.
    pub basis: RecordId,
    /// Scopes each record must be inside (the consent's, or the grant's and agreement's).
    pub scopes: Vec<Scope>,
    /// Deny exceptions that apply to this purpose.
    pub exceptions: Vec<Scope>,
    /// Documents and rules used.
    pub trace: Vec<String>,
    /// Whether the permit is a break-glass declaration (flagged in the access log).
    pub break_glass: bool,
}

impl Permit {
    /// Whether a record with `Observation.code` codings `codes` (as `system|code`) and
    /// time `time_ms` may be released under this permit.
    pub fn record(&self, codes: &[String], time_ms: u64) -> Result<(), Refusal> {
        for s in &self.scopes {
            if !s.categories.is_empty() && !codes.iter().any(|c| s.categories.contains(c)) {
                return Err(self.refuse("category_not_covered", "the record's category is not covered"));
            }
            if s.data_period.is_some_and(|p| !p.covers(time_ms)) {
                return Err(self.refuse("outside_data_period", "the record's time is outside the data period"));
            }
        }
        if self.exceptions.iter().any(|e| e.covers_record(codes, time_ms)) {
            return Err(self.refuse("denied_by_provision", "a nested deny provision covers the record"));
        }
        Ok(())
    }

    /// Whether releasing a record depends on its category.
    pub fn depends_on_categories(&self) -> bool {
        self.scopes.iter().chain(&self.exceptions).any(|s| !s.categories.is_empty())
    }

    /// Whether releasing a record depends on its time.
    pub fn depends_on_time(&self) -> bool {
        self.scopes.iter().chain(&self.exceptions).any(|s| s.data_period.is_some())
    }

    fn refuse(&self, code: &'static str, message: &str) -> Refusal {
        Refusal { code, message: message.into(), trace: self.trace.clone() }
    }
}

/// The documents of one subject, each signature-checked.
#[derive(Debug, Clone, Default)]
pub struct DocSet {
    /// Every document, in no particular order.
    pub docs: Vec<Doc>,
}

fn all_categories(c: &[String]) -> Vec<String> {
    if c == ["*"] { Vec::new() } else { c.to_vec() }
}

impl DocSet {
    /// The document `id`.
    pub fn get(&self, id: &RecordId) -> Option<&Doc> {
        self.docs.iter().find(|d| d.id == *id)
    }

    /// Keys the gateway bound to the subject and that are still bound, with their role.
    pub fn bound(&self) -> Vec<(PublicKey, PersonRole, RecordId)> {
        self.docs
            .iter()
            .filter_map(|d| match &d.terms {
                Terms::Binding(b)
                    if d.document.signatures.len() == 1
                        && d.document
                            .signatures
                            .first()
                            .is_some_and(|s| s.key.key_id() == d.document.subject.gateway)
                        && self.revocation(&d.id).is_none() =>
                {
                    Some((b.key, b.role, d.id))
                }
                _ => None,
            })
            .collect()
    }

    /// The role `key` is bound with, if it is.
    pub fn role_of(&self, key: &PublicKey) -> Option<PersonRole> {
        self.bound().into_iter().find(|(k, _, _)| k == key).map(|(_, r, _)| r)
    }

    /// Who may revoke document `target`: the gateway (a binding); a key bound to the
    /// subject at any time — a revocation that was valid stays valid when its signer is
    /// unbound later (a consent or grant); any party (an agreement).
    fn may_revoke(&self, target: &Doc, signer: &PublicKey) -> bool {
        match &target.terms {
            Terms::Binding(_) => signer.key_id() == target.document.subject.gateway,
            Terms::Consent(_) | Terms::Grant(_) => self.ever_bound(signer),
            Terms::Agreement(a) => a.parties().iter().any(|(_, k)| k == signer),
            // Only the patient's side lifts a restriction; a declaration runs out on its own.
            Terms::Restriction(_) => self.role_of(signer).is_some(),
            Terms::Revocation(_) | Terms::BreakGlass(_) => false,
        }
    }

    /// Whether the gateway ever bound `key` to the subject (revoked bindings included).
    fn ever_bound(&self, key: &PublicKey) -> bool {
        self.docs.iter().any(|d| {
            matches!(&d.terms, Terms::Binding(b) if b.key == *key)
                && d.document.signatures.len() == 1
                && d.document.signatures.first().is_some_and(|s| s.key.key_id() == d.document.subject.gateway)
        })
    }

    /// Whether revocation `r` names `target` — by its id, or by the id of another copy of
    /// the same document (same kind, subject and JSON: a copy given again, with its
    /// signatures in another order, is revoked with the first).
    fn names(&self, r: &Revocation, target: &Doc) -> bool {
        self.get(&r.revokes).is_some_and(|t| same_document(t, target))
    }

    /// The revocation that ends document `id`, if a party allowed to revoke it signed one.
    pub fn revocation(&self, id: &RecordId) -> Option<&Doc> {
        let target = self.get(id)?;
        self.docs.iter().find(|d| match &d.terms {
            Terms::Revocation(r) if self.names(r, target) => {
                d.document.signatures.iter().any(|s| self.may_revoke(target, &s.key))
            }
            _ => false,
        })
    }

    /// The restriction in force, if any: signed by a key bound to the subject and not
    /// lifted.
    pub fn restriction(&self) -> Option<&Doc> {
        self.docs.iter().find(|d| {
            matches!(d.terms, Terms::Restriction(_))
                && d.document.signatures.len() == 1
                && d.document.signatures.first().is_some_and(|s| self.role_of(&s.key).is_some())
                && self.revocation(&d.id).is_none()
        })
    }

    /// A later agreement that amends agreement `id` (or a copy of it).
    pub fn amendment_of(&self, id: &RecordId) -> Option<&Doc> {
        let target = self.get(id)?;
        self.docs.iter().find(|d| {
            matches!(&d.terms, Terms::Agreement(a)
                if a.replaces.and_then(|r| self.get(&r)).is_some_and(|old| same_document(old, target)))
        })
    }

    /// A document held already with the same kind, subject and JSON as `doc`.
    pub fn copy_of(&self, doc: &Document) -> Option<&Doc> {
        self.docs
            .iter()
            .find(|d| d.document.kind == doc.kind && d.document.subject == doc.subject && d.document.json == doc.json)
    }

    /// Whether agreement `id` is executed, live and in force at `now_ms`; `Err` names why not.
    pub fn live_agreement(&self, id: &RecordId, now_ms: u64, chain: &Hash32) -> Result<&Agreement, Refusal> {
        let refuse =
            |code: &'static str, message: String| Refusal { code, message, trace: vec![format!("agreement {id}")] };
        let Some(doc) = self.get(id) else {
            return Err(refuse("agreement_not_executed", format!("no executed agreement {id} for this patient")));
        };
        let Terms::Agreement(a) = &doc.terms else {
            return Err(refuse("agreement_not_executed", format!("document {id} is not an agreement")));
        };
        if let Err(e) = a.check_execution(&doc.document, chain) {
            return Err(refuse("agreement_not_executed", e.to_string()));
        }
        if self.role_of(&a.patient) != Some(PersonRole::Patient) {
            return Err(refuse("not_bound", "the agreement's patient key is not bound to this subject".into()));
        }
        if self.revocation(id).is_some() {
            return Err(refuse("agreement_terminated", format!("agreement {id} was terminated")));
        }
        if let Some(newer) = self.amendment_of(id) {
            return Err(refuse("agreement_superseded", format!("agreement {id} was amended by {}", newer.id)));
        }
        if !a.period.covers(now_ms) {
            return Err(refuse("agreement_expired", format!("agreement {id} is not in force now")));
        }
        Ok(a)
    }
}

/// Decides a read of the subject's records by `reader` for `purpose`, relying on document
/// `basis` (a consent for an organisation, a family grant for a person), at `now_ms`.
pub fn decide(
    set: &DocSet,
    policy: &PurposePolicy,
    chain: &Hash32,
    reader: &Reader,
    purpose: &str,
    basis: &RecordId,
    now_ms: u64,
) -> Result<Permit, Refusal> {
    let mut trace = vec![format!("policy permits {:?}", policy.purposes)];
    let refuse =
        |code: &'static str, message: String, trace: &Vec<String>| Refusal { code, message, trace: trace.clone() };
    if !policy.permits(purpose) {
        return Err(refuse(
            "purpose_not_in_policy",
            format!("{purpose} is not a purpose the consortium policy permits"),
            &trace,
        ));
    }
    let Some(doc) = set.get(basis) else {
        let code = if matches!(reader, Reader::Person(_)) { "no_grant" } else { "no_consent" };
        return Err(refuse(code, format!("no document {basis} for this patient"), &trace));
    };
    if let (Reader::Organisation(org), Terms::BreakGlass(b)) = (reader, &doc.terms) {
        // Break-glass is not stopped by a restriction: it is logged, flagged and reviewed.
        trace.push(format!("break-glass {basis}"));
        if b.organisation != *org {
            return Err(refuse("not_grantee", format!("declaration {basis} is not {org}'s"), &trace));
        }
        if b.purpose != purpose {
            return Err(refuse(
                "purpose_not_consented",
                format!("declaration {basis} is for {}, not {purpose}", b.purpose),
                &trace,
            ));
        }
        if !b.period.covers(now_ms) {
            return Err(refuse("expired", format!("declaration {basis}'s time box is over"), &trace));
        }
        trace.push(format!("permit: {org} for {purpose} under break-glass, until {} ms", b.period.end_ms));
        return Ok(Permit { basis: *basis, scopes: Vec::new(), exceptions: Vec::new(), trace, break_glass: true });
    }
    let mut permit = by_document(set, chain, reader, purpose, basis, now_ms, doc, trace)?;
    // Only a reader the document would permit learns that the patient restricted reads.
    if let Some(r) = set.restriction() {
        permit.trace.push(format!("restricted by {}", r.id));
        return Err(Refusal {
            code: "restricted",
            message: "the patient restricted the processing of their records".into(),
            trace: permit.trace,
        });
    }
    Ok(permit)
}

#[allow(clippy::too_many_arguments, reason = "the inputs of one decision, passed through")]
fn by_document(
    set: &DocSet,
    chain: &Hash32,
    reader: &Reader,
    purpose: &str,
    basis: &RecordId,
    now_ms: u64,
    doc: &Doc,
    mut trace: Vec<String>,
) -> Result<Permit, Refusal> {
    let refuse =
        |code: &'static str, message: String, trace: &Vec<String>| Refusal { code, message, trace: trace.clone() };
    match (reader, &doc.terms) {
        (Reader::Organisation(org), Terms::Consent(c)) => {
            // The reader first: another organisation learns nothing about this consent.
            trace.push(format!("consent {basis}"));
            if c.grantee != *org {
                return Err(refuse("not_grantee", format!("consent {basis} does not name {org}"), &trace));
            }
            let signer = doc.document.signatures.first().map(|s| s.key);
            if doc.document.signatures.len() != 1 || signer.and_then(|k| set.role_of(&k)).is_none() {
                return Err(refuse(
                    "not_bound",
                    "the consent is not signed by a key bound to the patient".into(),
                    &trace,
                ));
            }
            if let Some(r) = set.revocation(basis) {
                trace.push(format!("revoked by {}", r.id));
                return Err(refuse("revoked", format!("consent {basis} was revoked"), &trace));
            }
            if now_ms >= c.period.end_ms {
                return Err(refuse("expired", format!("consent {basis} ended"), &trace));
            }
            if now_ms < c.period.start_ms {
                return Err(refuse("not_yet_valid", format!("consent {basis} has not begun"), &trace));
            }
            if c.kind == ProvisionType::Deny {
                return Err(refuse("denied_by_consent", format!("consent {basis} denies {org}"), &trace));
            }
            if !c.scope.covers_purpose(purpose) {
                return Err(refuse(
                    "purpose_not_consented",
                    format!("consent {basis} does not permit {purpose}"),
                    &trace,
                ));
            }
            let mut exceptions: Vec<Scope> = Vec::new();
            // Deny overrides: another live consent of the patient denying this organisation
            // this purpose refuses the read when it covers every record, and withholds the
            // records it covers (categories, data period) otherwise.
            for d in &set.docs {
                if let Terms::Consent(other) = &d.terms
                    && d.id != *basis
                    && other.kind == ProvisionType::Deny
                    && other.grantee == *org
                    && other.period.covers(now_ms)
                    && other.scope.covers_purpose(purpose)
                    && d.document.signatures.first().and_then(|s| set.role_of(&s.key)).is_some()
                    && set.revocation(&d.id).is_none()
                {
                    if other.scope.covers_purpose_wholly(purpose) {
                        trace.push(format!("denied by consent {}", d.id));
                        return Err(refuse(
                            "denied_by_consent",
                            format!("consent {} denies {purpose} to {org}", d.id),
                            &trace,
                        ));
                    }
                    trace.push(format!("records withheld by consent {}", d.id));
                    exceptions.push(other.scope.clone());
                }
            }
            exceptions.extend(c.exceptions.iter().filter(|e| e.covers_purpose(purpose)).cloned());
            if exceptions.iter().any(|e| e.covers_purpose_wholly(purpose)) {
                return Err(refuse("denied_by_provision", format!("a nested provision denies {purpose}"), &trace));
            }
            trace.push(format!("permit: {org} for {purpose} within the consent's categories and data period"));
            Ok(Permit { basis: *basis, scopes: vec![c.scope.clone()], exceptions, trace, break_glass: false })
        }
        (Reader::Person(key), Terms::Grant(g)) => {
            trace.push(format!("family grant {basis}"));
            if g.family.key != *key {
                return Err(refuse("not_grantee", format!("grant {basis} names another family member"), &trace));
            }
            let signer_ok = doc.document.signed_by(&g.patient_signer())
                && set.role_of(&g.patient_signer()) == Some(g.signed_as)
                && set.role_of(&g.patient) == Some(PersonRole::Patient)
                && doc.document.signed_by(&g.verification.verifier);
            if !signer_ok {
                return Err(refuse(
                    "not_bound",
                    "the grant is not signed by the patient (or a bound representative) and the verifier".into(),
                    &trace,
                ));
            }
            if let Some(r) = set.revocation(basis) {
                trace.push(format!("revoked by {}", r.id));
                return Err(refuse("revoked", format!("grant {basis} was revoked"), &trace));
            }
            if !g.period.covers(now_ms) {
                return Err(refuse("expired", format!("grant {basis} is not in force now"), &trace));
            }
            if !g.purposes.iter().any(|p| p == purpose) {
                return Err(refuse(
                    "purpose_not_consented",
                    format!("grant {basis} does not permit {purpose}"),
                    &trace,
                ));
            }
            trace.push(format!("agreement {}", g.agreement));
            let a = set.live_agreement(&g.agreement, now_ms, chain).map_err(|mut r| {
                r.trace = [trace.clone(), r.trace].concat();
                r
            })?;
            if a.patient != g.patient || !a.family.iter().any(|f| f.key == *key) {
                return Err(refuse(
                    "agreement_not_covering",
                    "the agreement does not cover this family member".into(),
                    &trace,
                ));
            }
            if !a.purposes.iter().any(|p| p == purpose) {
                return Err(refuse(
                    "agreement_not_covering",
                    format!("the agreement does not cover {purpose}"),
                    &trace,
                ));
            }
            trace.push(format!("permit: family member for {purpose} under grant and agreement"));
            let scope = |c: &[String]| Scope { purposes: Vec::new(), categories: all_categories(c), data_period: None };
            Ok(Permit {
                basis: *basis,
                scopes: vec![scope(&g.categories), scope(&a.categories)],
                exceptions: Vec::new(),
                trace,
                break_glass: false,
            })
        }
        (Reader::Person(_), _) => Err(refuse("no_grant", format!("document {basis} is not a family grant"), &trace)),
        (Reader::Organisation(_), _) => Err(refuse("no_consent", format!("document {basis} is not a consent"), &trace)),
    }
}
