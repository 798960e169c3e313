//! The bodies of consent-layer documents (ADR 017, docs/consent.md): what each kind
//! states, as its author's JSON parses, and the checks each body must pass before a
//! [`super::Document`] of that kind is accepted.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use super::{Document, DocumentError, invalid};
use crate::genesis::Genesis;
use crate::hash::Hash32;
use crate::identity::PublicKey;
use crate::membership::Role;
use crate::record::RecordId;

/// A period in Unix milliseconds, `start_ms` inclusive, `end_ms` exclusive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Period {
    /// First millisecond covered.
    pub start_ms: u64,
    /// First millisecond no longer covered.
    pub end_ms: u64,
}

impl Period {
    /// Whether `t` is inside.
    pub fn covers(&self, t: u64) -> bool {
        self.start_ms <= t && t < self.end_ms
    }
    fn check(&self, field: &str) -> Result<(), DocumentError> {
        if self.start_ms >= self.end_ms {
            return Err(invalid(field, "start_ms must be before end_ms"));
        }
        Ok(())
    }
}

/// Whether a key acts as the patient or as a legal representative.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PersonRole {
    /// The data subject.
    Patient,
    /// A legal representative (guardian, parent of a minor), recorded as such.
    Representative,
}

/// The JSON of a [`DocumentKind::SubjectBinding`](super::DocumentKind::SubjectBinding), signed by the gateway
/// (`subject.gateway`): `key` acts for the subject.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubjectBinding {
    /// The person's key (held by their app).
    pub key: PublicKey,
    /// As whom it acts.
    pub role: PersonRole,
    /// When the gateway made the binding, Unix milliseconds.
    pub issued_ms: u64,
}

/// A family member named in a grant or an agreement.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FamilyMember {
    /// Their key.
    pub key: PublicKey,
    /// HL7 v3 RoleCode of the relationship to the patient (e.g. `MTH`, `SPS`, `CHILD`,
    /// `FAMMEMB`): 2 to 16 of `A-Z`.
    pub relationship: String,
}

/// How the institution verified a family relationship.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RelationshipVerification {
    /// `blake3` of the evidence document (e.g. a family register extract), never the
    /// document itself.
    pub evidence_hash: Hash32,
    /// The verifying organisation (a genesis organisation name).
    pub verified_by: String,
    /// The key of the person who verified it for that organisation; it signs the grant.
    pub verifier: PublicKey,
}

/// The JSON of a [`DocumentKind::FamilyGrant`](super::DocumentKind::FamilyGrant) (⑦): one patient, one family member.
/// Signed by the patient or a bound representative (as `signed_as` says) and by the
/// verifier.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FamilyGrant {
    /// The patient's key (bound to the document's subject).
    pub patient: PublicKey,
    /// The one family member granted access.
    pub family: FamilyMember,
    /// Who signs for the patient.
    pub signed_as: PersonRole,
    /// The signer when `signed_as` is `representative` (else absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub representative: Option<PublicKey>,
    /// The institution's verification of the relationship.
    pub verification: RelationshipVerification,
    /// The executed agreement that covers this grant (its document id).
    pub agreement: RecordId,
    /// v3 PurposeOfUse codes: `FAMRQT` plus care purposes.
    pub purposes: Vec<String>,
    /// Record categories (`system|code` of `Observation.code`), or `["*"]` for all.
    pub categories: Vec<String>,
    /// When the grant holds.
    pub period: Period,
}

/// The institution that is party to an agreement.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Institution {
    /// Its genesis organisation name.
    pub organisation: String,
    /// The key that signs for it: an admin key, or an accessor member key, of that
    /// organisation in the genesis file.
    pub key: PublicKey,
}

/// Breach-notice duties of the institution.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BreachNotice {
    /// Hours within which the patient and family are told of a leak.
    pub within_hours: u32,
    /// The duties, in words.
    pub duties: String,
}

/// The JSON of a [`DocumentKind::Agreement`](super::DocumentKind::Agreement) (⑧; FHIR `Contract` terms in brackets):
/// executed only when the institution, the patient and every family member have signed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Agreement {
    /// `blake3` of the full human-readable contract text (`Contract.legal`).
    pub text_hash: Hash32,
    /// The institution (`Contract.signer`, type `INST`... here by organisation).
    pub institution: Institution,
    /// The patient's key (bound to the document's subject).
    pub patient: PublicKey,
    /// The family members covered, 1 to 8.
    pub family: Vec<FamilyMember>,
    /// v3 PurposeOfUse codes the agreement allows (`Contract.term.action.reason`).
    pub purposes: Vec<String>,
    /// Record categories, or `["*"]` (`Contract.term.asset`).
    pub categories: Vec<String>,
    /// Days the institution keeps what it released (`Contract.term`).
    pub retention_days: u32,
    /// The institution's liability for leaks or breach of contract.
    pub liability: String,
    /// Breach-notice duties.
    pub breach_notice: BreachNotice,
    /// When the agreement holds (`Contract.applies`).
    pub period: Period,
    /// The agreement this version amends, if any (its document id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replaces: Option<RecordId>,
}

/// The JSON of a [`DocumentKind::Revocation`](super::DocumentKind::Revocation): ends document `revokes` (a consent or a
/// grant, signed by the patient or their representative; an agreement, by any party).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Revocation {
    /// The document ended.
    pub revokes: RecordId,
    /// When, Unix milliseconds (the node refuses times in the future).
    pub at_ms: u64,
}

fn check_codes(field: &str, codes: &[String], allow_all: bool) -> Result<(), DocumentError> {
    if codes.is_empty() || codes.len() > 64 {
        return Err(invalid(field, "1 to 64 entries"));
    }
    let unique: BTreeSet<&String> = codes.iter().collect();
    if unique.len() != codes.len() {
        return Err(invalid(field, "an entry is repeated"));
    }
    for (i, c) in codes.iter().enumerate() {
        let ok = if allow_all {
            c == "*" && codes.len() == 1 || c.contains('|') && c.len() <= 256
        } else {
            crate::policy::is_purpose_code(c)
        };
        if !ok {
            let what = if allow_all { "`system|code` or a lone \"*\"" } else { "a v3 PurposeOfUse code" };
            return Err(invalid(format!("{field}[{i}]"), format!("{c:?} is not {what}")));
        }
    }
    Ok(())
}

/// Checks purposes (v3 codes) of a document.
pub fn check_purposes(field: &str, purposes: &[String]) -> Result<(), DocumentError> {
    check_codes(field, purposes, false)
}

/// Checks record categories (`system|code`, or `["*"]`).
pub fn check_categories(field: &str, categories: &[String]) -> Result<(), DocumentError> {
    check_codes(field, categories, true)
}

fn check_relationship(field: &str, code: &str) -> Result<(), DocumentError> {
    if !(2..=16).contains(&code.len()) || !code.bytes().all(|b| b.is_ascii_uppercase()) {
        return Err(invalid(field, format!("{code:?} is not a v3 RoleCode (2 to 16 of A-Z)")));
    }
    Ok(())
}

impl FamilyGrant {
    /// Reads and checks the JSON of a grant (shape only; parties are checked by the node
    /// against the bindings and the agreement).
    pub fn parse(json: &str) -> Result<Self, DocumentError> {
        let g: Self = serde_json::from_str(json).map_err(|e| invalid("json", e.to_string()))?;
        check_relationship("family.relationship", &g.family.relationship)?;
        check_purposes("purposes", &g.purposes)?;
        if !g.purposes.iter().any(|p| p == "FAMRQT") {
            return Err(invalid("purposes", "a family grant names FAMRQT (family requested) among its purposes"));
        }
        check_categories("categories", &g.categories)?;
        g.period.check("period")?;
        match (g.signed_as, g.representative) {
            (PersonRole::Patient, None) | (PersonRole::Representative, Some(_)) => {}
            _ => return Err(invalid("representative", "given exactly when signed_as is \"representative\"")),
        }
        if g.family.key == g.patient {
            return Err(invalid("family.key", "the family member is the patient"));
        }
        crate::membership::check_name("verification.verified_by", &g.verification.verified_by)
            .map_err(|e| invalid(e.field, e.problem))?;
        Ok(g)
    }

    /// The key that signs for the patient.
    pub fn patient_signer(&self) -> PublicKey {
        self.representative.unwrap_or(self.patient)
    }
}

impl Agreement {
    /// Reads and checks the JSON of an agreement (shape only).
    pub fn parse(json: &str) -> Result<Self, DocumentError> {
        let a: Self = serde_json::from_str(json).map_err(|e| invalid("json", e.to_string()))?;
        crate::membership::check_name("institution.organisation", &a.institution.organisation)
            .map_err(|e| invalid(e.field, e.problem))?;
        if a.family.is_empty() || a.family.len() > 8 {
            return Err(invalid("family", "1 to 8 family members"));
        }
        let mut keys = BTreeSet::from([a.institution.key, a.patient]);
        for (i, f) in a.family.iter().enumerate() {
            check_relationship(&format!("family[{i}].relationship"), &f.relationship)?;
            if !keys.insert(f.key) {
                return Err(invalid(format!("family[{i}].key"), "a key is named twice among the parties"));
            }
        }
        if a.institution.key == a.patient {
            return Err(invalid("patient", "the patient and the institution are the same key"));
        }
        check_purposes("purposes", &a.purposes)?;
        check_categories("categories", &a.categories)?;
        if a.liability.trim().is_empty() || a.breach_notice.duties.trim().is_empty() {
            return Err(invalid("liability", "the institution's liability and breach-notice duties must be stated"));
        }
        a.period.check("period")?;
        Ok(a)
    }

    /// Every party: the institution, the patient, then the family, with names for
    /// messages.
    pub fn parties(&self) -> Vec<(String, PublicKey)> {
        let mut p = vec![
            (
                format!("the institution ({}, key {})", self.institution.organisation, self.institution.key.key_id()),
                self.institution.key,
            ),
            (format!("the patient (key {})", self.patient.key_id()), self.patient),
        ];
        p.extend(
            self.family
                .iter()
                .enumerate()
                .map(|(i, f)| (format!("family member {i} ({}, key {})", f.relationship, f.key.key_id()), f.key)),
        );
        p
    }

    /// Checks that the signers of `doc` are exactly the parties (a signature by anyone
    /// else is refused, naming the key) and that every party signed.
    pub fn check_execution(&self, doc: &Document, chain: &Hash32) -> Result<(), DocumentError> {
        let signers = doc.verify_signatures(chain)?;
        let parties = self.parties();
        for (index, key) in signers.iter().enumerate() {
            if !parties.iter().any(|(_, k)| k == key) {
                return Err(DocumentError::Signature {
                    index,
                    key: key.key_id(),
                    reason: "signed by a key that is not a party to the agreement".into(),
                });
            }
        }
        for (name, key) in &parties {
            if !signers.contains(key) {
                return Err(DocumentError::Unsigned(name.clone()));
            }
        }
        Ok(())
    }

    /// Checks that the institution's key belongs to its organisation in `genesis`: one
    /// of its admin keys or an accessor member key.
    pub fn check_institution(&self, genesis: &Genesis) -> Result<(), DocumentError> {
        let m = &genesis.membership;
        let org =
            m.organisations.iter().find(|o| o.name == self.institution.organisation).ok_or_else(|| {
                invalid("institution.organisation", "no organisation of that name in the genesis file")
            })?;
        let admin = org.admin_keys.contains(&self.institution.key);
        let accessor = m
            .members
            .iter()
            .any(|k| k.public_key == self.institution.key && k.role == Role::Accessor && k.organisation == org.name);
        if !admin && !accessor {
            return Err(invalid(
                "institution.key",
                format!("not an admin or accessor key of {} in the genesis file", org.name),
            ));
        }
        Ok(())
    }
}

impl Revocation {
    /// Reads the JSON of a revocation.
    pub fn parse(json: &str) -> Result<Self, DocumentError> {
        serde_json::from_str(json).map_err(|e| invalid("json", e.to_string()))
    }
}

impl SubjectBinding {
    /// Reads the JSON of a binding.
    pub fn parse(json: &str) -> Result<Self, DocumentError> {
        let b: Self = serde_json::from_str(json).map_err(|e| invalid("json", e.to_string()))?;
        b.key.validate().map_err(|e| invalid("key", e.to_string()))?;
        Ok(b)
    }
}

/// The JSON of a [`DocumentKind::Restriction`](super::DocumentKind::Restriction), signed by
/// one key bound to the subject (patient or representative): from `issued_ms` every read
/// of the subject's records is refused (`restricted`) except the patient's own and
/// break-glass, until a [`Revocation`] by a key bound to the subject lifts it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Restriction {
    /// When the patient asked, Unix milliseconds.
    pub issued_ms: u64,
}

impl Restriction {
    /// Reads the JSON of a restriction.
    pub fn parse(json: &str) -> Result<Self, DocumentError> {
        serde_json::from_str(json).map_err(|e| invalid("json", e.to_string()))
    }
}

/// Purposes a break-glass declaration may name (v3 PurposeOfUse: emergency treatment,
/// break the glass); the consortium policy must permit the one named.
pub const BREAK_GLASS_PURPOSES: &[&str] = &["ETREAT", "BTG"];

/// Longest written justification of a break-glass declaration, bytes.
pub const MAX_JUSTIFICATION: usize = 4096;

/// The JSON of a [`DocumentKind::BreakGlass`](super::DocumentKind::BreakGlass), signed by one accessor key of
/// `organisation`: an emergency read of the subject's records without consent, for
/// `purpose`, inside `period` (at most the node's time box, four hours by default).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BreakGlass {
    /// The reading organisation (its accessor key signs).
    pub organisation: String,
    /// `ETREAT` or `BTG`.
    pub purpose: String,
    /// Why, in words: who is in danger and why consent cannot be asked (required).
    pub justification: String,
    /// The time box.
    pub period: Period,
}

impl BreakGlass {
    /// Reads and checks the JSON of a declaration: a known purpose, a justification of
    /// 10 to 4096 bytes that is not only blanks, a period that begins before it ends.
    pub fn parse(json: &str) -> Result<Self, DocumentError> {
        let b: Self = serde_json::from_str(json).map_err(|e| invalid("json", e.to_string()))?;
        if !BREAK_GLASS_PURPOSES.contains(&b.purpose.as_str()) {
            return Err(invalid("purpose", format!("{:?} is not a break-glass purpose (ETREAT or BTG)", b.purpose)));
        }
        let words = b.justification.trim();
        if words.len() < 10 || b.justification.len() > MAX_JUSTIFICATION {
            return Err(invalid(
                "justification",
                "break-glass needs a written justification of 10 to 4096 bytes (who is in danger, why consent \
                 cannot be asked)",
            ));
        }
        if b.organisation.is_empty() {
            return Err(invalid("organisation", "empty"));
        }
        b.period.check("period")?;
        Ok(b)
    }
}
