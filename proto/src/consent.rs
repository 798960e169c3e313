//! Consent-layer documents (DESIGN.md §7, sandbox conditions ⑥ ⑦ ⑧; ADR 017): the
//! statements by which a gateway binds a person's key to the subject it files readings
//! under, a patient consents to an organisation reading them, a patient grants a family
//! member access, and institution, patient and family execute a three-party agreement.
//!
//! A [`Document`] is the exact JSON its author wrote (kept and served byte for byte) plus
//! the signatures of its parties, each over `"cairn/sig/document/v1" || bcs(`[`DocumentToSign`]`)`:
//! the chain, the kind, the subject and `blake3("cairn/document/v1" || json)`. Documents
//! live off chain, encrypted in the vaults with the subject's records; the chain sees only
//! one leaf per event in a `ConsentEvents` batch:
//!
//! - `C = blake3_keyed(salt, "cairn/document-event/v1" || blake3(bcs(`[`DocumentEvent`]`)))`
//!   with a random 32-byte `salt` kept with the document;
//! - `leaf = blake3("cairn/leaf/consent/v1" || id || C)`.
//!
//! Without the salt the leaf says nothing about the document; a party holding an
//! [`AgreementCertificate`] (which carries the salt) can prove the agreement was committed.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::consensus::CertifiedHeader;
use crate::encoding::encode;
use crate::genesis::Genesis;
use crate::hash::{Hash32, blake3, domain, hash_parts};
use crate::identity::{KeyId, Keypair, PublicKey, Signature};
use crate::ledger::BatchKind;
use crate::ledger::SignedBatchCommit;
use crate::receipt::{BatchInclusion, ReceiptError};
use crate::record::RecordId;
use crate::version::versioned;

mod bodies;
pub use bodies::{
    Agreement, BREAK_GLASS_PURPOSES, BreachNotice, BreakGlass, FamilyGrant, FamilyMember, Institution,
    MAX_JUSTIFICATION, Period, PersonRole, RelationshipVerification, Restriction, Revocation, SubjectBinding,
    check_categories, check_purposes,
};

/// What a document states.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DocumentKind {
    /// A gateway binds a person's key to one of its subjects ([`SubjectBinding`]).
    SubjectBinding,
    /// A FHIR R4 `Consent`: the patient permits an organisation to read.
    Consent,
    /// A family member's access to one patient's records ([`FamilyGrant`], ⑦).
    FamilyGrant,
    /// A three-party agreement ([`Agreement`], ⑧).
    Agreement,
    /// Ends a consent, a grant, an agreement or a restriction ([`Revocation`]).
    Revocation,
    /// The patient suspends every read of their records but their own and break-glass
    /// ([`Restriction`]; GDPR Art. 18, PIPA Art. 37).
    Restriction,
    /// An accessor declares an emergency and reads without consent for a time box
    /// ([`BreakGlass`]); always logged, flagged and reviewed.
    BreakGlass,
}

/// A subject as a gateway files readings under it: the gateway's key id and the
/// subject key of ADR 015 (e.g. `Patient/123`, `Device?identifier=urn:x|W-1`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Subject {
    /// The gateway's key id.
    pub gateway: KeyId,
    /// The subject key, 1 to 256 bytes.
    pub reference: String,
}

/// What each party of a document signs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DocumentToSign {
    /// Format version (1).
    pub version: u8,
    /// The chain (genesis hash).
    pub chain: Hash32,
    /// The document's kind.
    pub kind: DocumentKind,
    /// Whose records the document is about.
    pub subject: Subject,
    /// `blake3("cairn/document/v1" || json)`.
    pub content: Hash32,
}

versioned!(DocumentToSign = 1);

/// One party's signature of a document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PartySignature {
    /// The party's public key.
    pub key: PublicKey,
    /// Ed25519 (strict rules) over `"cairn/sig/document/v1" || bcs(DocumentToSign)`.
    pub signature: Signature,
}

/// A consent-layer document: its kind, subject, exact JSON and signatures.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Document {
    /// What it states.
    pub kind: DocumentKind,
    /// Whose records it is about.
    pub subject: Subject,
    /// The JSON as its author wrote it (a FHIR `Consent` for [`DocumentKind::Consent`]).
    pub json: String,
    /// The parties' signatures, at most one per key.
    pub signatures: Vec<PartySignature>,
}

/// Largest document JSON, bytes.
pub const MAX_DOCUMENT_JSON: usize = 64 * 1024;

/// Why a document or certificate is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DocumentError {
    /// Malformed: the field and the problem.
    #[error("`{field}`: {problem}")]
    Invalid {
        /// The field (JSON path) at fault.
        field: String,
        /// What is wrong.
        problem: String,
    },
    /// A signature does not verify or is by a key that has no part in the document.
    #[error("signature {index} (key {key}): {reason}")]
    Signature {
        /// Position in `signatures`.
        index: usize,
        /// The key id.
        key: KeyId,
        /// Why.
        reason: String,
    },
    /// A party has not signed.
    #[error("not executed: {0} has not signed")]
    Unsigned(String),
    /// The proof of commitment does not verify.
    #[error("commitment: {0}")]
    Receipt(#[from] ReceiptError),
}

pub(crate) fn invalid(field: impl Into<String>, problem: impl Into<String>) -> DocumentError {
    DocumentError::Invalid { field: field.into(), problem: problem.into() }
}

impl Document {
    /// `blake3("cairn/document/v1" || json)`.
    pub fn content(&self) -> Hash32 {
        hash_parts(domain::DOCUMENT, &[self.json.as_bytes()])
    }

    /// The statement the parties sign on `chain`.
    pub fn to_sign(&self, chain: &Hash32) -> DocumentToSign {
        DocumentToSign {
            version: 1,
            chain: *chain,
            kind: self.kind,
            subject: self.subject.clone(),
            content: self.content(),
        }
    }

    /// Adds (or replaces) `key`'s signature.
    pub fn sign(&mut self, chain: &Hash32, key: &Keypair) -> Result<(), crate::encoding::EncodeError> {
        let bytes = encode(&self.to_sign(chain))?;
        let signature = key.sign(domain::SIG_DOCUMENT, &bytes);
        self.signatures.retain(|s| s.key != key.public());
        self.signatures.push(PartySignature { key: key.public(), signature });
        Ok(())
    }

    /// Checks the shape (JSON size, subject) and every signature; returns the keys that
    /// signed, in order. Does not check who the signers are: see each kind's rules.
    pub fn verify_signatures(&self, chain: &Hash32) -> Result<Vec<PublicKey>, DocumentError> {
        if self.json.is_empty() || self.json.len() > MAX_DOCUMENT_JSON {
            return Err(invalid("json", format!("1 to {MAX_DOCUMENT_JSON} bytes")));
        }
        if self.subject.reference.is_empty() || self.subject.reference.len() > 256 {
            return Err(invalid("subject.reference", "1 to 256 bytes"));
        }
        if self.signatures.is_empty() || self.signatures.len() > 16 {
            return Err(invalid("signatures", "1 to 16 signatures"));
        }
        let bytes = encode(&self.to_sign(chain)).map_err(|e| invalid("document", e.to_string()))?;
        let mut seen = BTreeSet::new();
        let mut keys = Vec::new();
        for (index, s) in self.signatures.iter().enumerate() {
            let bad = |reason: String| DocumentError::Signature { index, key: s.key.key_id(), reason };
            if !seen.insert(s.key) {
                return Err(bad("the same key signed twice".into()));
            }
            s.key.verify(domain::SIG_DOCUMENT, &bytes, &s.signature).map_err(|e| bad(e.to_string()))?;
            keys.push(s.key);
        }
        Ok(keys)
    }

    /// Whether `key` signed (the signature itself is checked by
    /// [`Document::verify_signatures`]).
    pub fn signed_by(&self, key: &PublicKey) -> bool {
        self.signatures.iter().any(|s| s.key == *key)
    }
}

/// What an event commitment covers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DocumentEvent {
    /// Format version (1).
    pub version: u8,
    /// The document id (the vault record that keeps it).
    pub id: RecordId,
    /// The signed statement.
    pub statement: DocumentToSign,
    /// The signatures, as stored.
    pub signatures: Vec<PartySignature>,
}

versioned!(DocumentEvent = 1);

/// The event commitment `C` of document `id` under `salt` ("given"):
/// `blake3_keyed(salt, "cairn/document-event/v1" || blake3(bcs(DocumentEvent)))`.
pub fn event_commitment(
    salt: &[u8; 32],
    chain: &Hash32,
    id: &RecordId,
    doc: &Document,
) -> Result<Hash32, crate::encoding::EncodeError> {
    keyed_event(domain::DOCUMENT_EVENT, salt, chain, id, doc)
}

/// The commitment of document `id`'s **expiry** event (its period ended), under the same
/// salt: `blake3_keyed(salt, "cairn/document-expiry/v1" || blake3(bcs(DocumentEvent)))`.
pub fn expiry_commitment(
    salt: &[u8; 32],
    chain: &Hash32,
    id: &RecordId,
    doc: &Document,
) -> Result<Hash32, crate::encoding::EncodeError> {
    keyed_event(domain::DOCUMENT_EXPIRY, salt, chain, id, doc)
}

fn keyed_event(
    label: &str,
    salt: &[u8; 32],
    chain: &Hash32,
    id: &RecordId,
    doc: &Document,
) -> Result<Hash32, crate::encoding::EncodeError> {
    let event =
        DocumentEvent { version: 1, id: *id, statement: doc.to_sign(chain), signatures: doc.signatures.clone() };
    let mut input = label.as_bytes().to_vec();
    input.extend_from_slice(blake3(&encode(&event)?).as_bytes());
    Ok(Hash32(*::blake3::keyed_hash(salt, &input).as_bytes()))
}

/// `leaf = blake3("cairn/leaf/consent/v1" || id || C)`.
pub fn event_leaf(id: &RecordId, commitment: &Hash32) -> Hash32 {
    hash_parts(domain::CONSENT_LEAF, &[id.as_bytes(), commitment.as_bytes()])
}

/// Proof that a consent event's leaf was committed on chain, verifiable offline from the
/// genesis file (the same chain of evidence as an anchor receipt, `BatchKind::ConsentEvents`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DocumentReceipt {
    /// Format version (1).
    pub version: u8,
    /// The document id.
    pub id: RecordId,
    /// The event commitment `C`.
    pub commitment: Hash32,
    /// `blake3("cairn/leaf/consent/v1" || id || C)`.
    pub leaf: Hash32,
    /// The committing node's signed batch commitment (kind `ConsentEvents`).
    pub batch: SignedBatchCommit,
    /// Position of the leaf in the batch.
    pub leaf_index: u64,
    /// Inclusion proof of the leaf in the batch root.
    pub batch_proof: Vec<Hash32>,
    /// Position of the batch commitment in the global log.
    pub log_index: u64,
    /// Inclusion proof of the batch commitment in the log at the header's size.
    pub log_proof: Vec<Hash32>,
    /// The committing block's header with its commit certificate.
    pub block: CertifiedHeader,
}

versioned!(DocumentReceipt = 1);

impl DocumentReceipt {
    /// Checks every link against the genesis file; returns what was established.
    pub fn verify(&self, genesis: &Genesis) -> Result<Vec<String>, DocumentError> {
        if self.version != 1 {
            return Err(invalid("receipt.version", format!("unknown version {} (this build reads 1)", self.version)));
        }
        if event_leaf(&self.id, &self.commitment) != self.leaf {
            return Err(invalid("receipt.leaf", "not blake3(\"cairn/leaf/consent/v1\" || id || C)"));
        }
        let mut checks =
            vec![format!("leaf {} binds document {} and commitment {}", self.leaf, self.id, self.commitment)];
        let inclusion = BatchInclusion {
            batch: &self.batch,
            leaf_index: self.leaf_index,
            batch_proof: &self.batch_proof,
            log_index: self.log_index,
            log_proof: &self.log_proof,
            block: &self.block,
        };
        checks.extend(inclusion.verify(&self.leaf, BatchKind::ConsentEvents, genesis)?);
        Ok(checks)
    }
}

/// An executed three-party agreement with the proof that it was committed on chain
/// (`docs/formats/agreement-certificate.md`); verifies offline with `cairn verify-agreement`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgreementCertificate {
    /// Format version (1).
    pub version: u8,
    /// The agreement document, its JSON byte for byte, with the three (or more) signatures.
    pub document: Document,
    /// The event commitment's salt.
    pub salt: Hash32,
    /// The commitment's inclusion in a certified block.
    pub receipt: DocumentReceipt,
}

versioned!(AgreementCertificate = 1);

impl AgreementCertificate {
    /// Checks the certificate against the genesis file: the agreement's shape, that the
    /// institution signs with a key of its organisation, that every party and nobody
    /// else signed, that the salted commitment names this document and these signatures,
    /// and that its leaf is in a certified block. Returns what was established.
    pub fn verify(&self, genesis: &Genesis) -> Result<Vec<String>, DocumentError> {
        if self.version != 1 {
            return Err(invalid("version", format!("unknown version {} (this build reads 1)", self.version)));
        }
        if self.document.kind != DocumentKind::Agreement {
            return Err(invalid("document.kind", "not an agreement"));
        }
        let chain = genesis.hash().map_err(|e| invalid("genesis", e.to_string()))?;
        let terms = Agreement::parse(&self.document.json)?;
        terms.check_institution(genesis)?;
        terms.check_execution(&self.document, &chain)?;
        let mut checks = vec![format!(
            "agreement text {} signed by {} (institution {}), the patient and {} family member(s): all parties, no one else",
            terms.text_hash,
            terms.institution.key.key_id(),
            terms.institution.organisation,
            terms.family.len()
        )];
        let c = event_commitment(&self.salt.0, &chain, &self.receipt.id, &self.document)
            .map_err(|e| invalid("document", e.to_string()))?;
        if c != self.receipt.commitment {
            return Err(invalid(
                "receipt.commitment",
                "the salted commitment does not name this document and these signatures",
            ));
        }
        checks.push(format!("commitment {c} names document {} with these signatures", self.receipt.id));
        checks.extend(self.receipt.verify(genesis)?);
        Ok(checks)
    }
}

/// What an agreement certificate cannot prove, printed by the verifier.
pub const AGREEMENT_CANNOT_PROVE: &str = "This certificate cannot prove that the patient and family keys belong to the \
persons the contract text names (the gateway's binding of the patient key is kept off chain and destroyed on erasure), \
nor that the contract text whose hash it carries was the one shown to them, nor that the agreement was not later \
terminated or amended (ask a node, or check the later documents' receipts).";
