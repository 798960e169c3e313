//! Access events (DESIGN.md §7; ADR 018; docs/access.md): every read decision about a
//! subject's records — granted, refused or break-glass — is recorded by the node that
//! took it, before any byte of the answer leaves, and committed on chain as one leaf of
//! a padded `AccessEvents` batch.
//!
//! An event names the subject only through its **entry handle**, derived from the
//! subject's access-log key (kept in the vault with the subject's records, destroyed with
//! them): `handle = blake3_keyed(log_key, "cairn/log-entry/v1" || node || k)` for the
//! node's k-th event about the subject. The commitment and leaf are
//!
//! - `C = blake3_keyed(salt, "cairn/access-event/v1" || blake3(bcs(`[`AccessEvent`]`)))`,
//!   with `salt` derived from the log key the same way (label `cairn/log-salt/v1`);
//! - `leaf = blake3("cairn/leaf/access/v1" || handle || C)`.
//!
//! After the subject's erasure the handle, `C` and the leaf still exist and still verify
//! against the chain (the log counts and was never rewritten), but nothing can derive
//! them from, or link them to, the person.

use serde::{Deserialize, Serialize};

use crate::consensus::CertifiedHeader;
use crate::encoding::{EncodeError, encode};
use crate::genesis::Genesis;
use crate::hash::{Hash32, blake3, domain, hash_parts};
use crate::identity::KeyId;
use crate::ledger::{BatchKind, SignedBatchCommit};
use crate::receipt::{BatchInclusion, ReceiptError};
use crate::record::RecordId;
use crate::version::versioned;

/// What the accessor did (FHIR `AuditEvent.subtype`, restful-interaction).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AccessAction {
    /// Read one record (`read`).
    Read,
    /// Read every record the decision covers (`search-type`).
    Search,
    /// The patient's export of everything held about them (right of access).
    Export,
    /// Records of the subject were erased (`AuditEvent.action` `D`): logged by the
    /// coordinating validator when it accepts the request, so the subject's export can
    /// carry the certificates (ADR 018).
    Erase {
        /// Hash of the erasure request, as its certificates name it.
        request: Hash32,
        /// Why.
        trigger: crate::erasure::ErasureTrigger,
    },
}

/// How the decision ended (FHIR `AuditEvent.outcome`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Data left the node under a consent, grant or the patient's own right.
    Granted,
    /// Refused: nothing left the node (`reason` says why).
    Refused,
    /// Data left the node under a break-glass declaration: flagged and reviewed.
    BreakGlass,
}

/// Who read (FHIR `AuditEvent.agent` with `requestor = true`). A person is named by key
/// id only, and only inside the encrypted event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Accessor {
    /// An accessor key of this member organisation.
    Organisation {
        /// Organisation name (as in the membership).
        name: String,
        /// The signing key's id.
        key: KeyId,
    },
    /// A family member's key (under a grant).
    FamilyMember {
        /// The key's id.
        key: KeyId,
    },
    /// The patient or their representative (their own export).
    Patient {
        /// The key's id.
        key: KeyId,
    },
    /// The gateway that asked for an erasure of records it wrote.
    Gateway {
        /// The gateway's key id.
        key: KeyId,
    },
    /// A validator acting on its own (an erasure on retention expiry).
    Node {
        /// The validator's key id.
        key: KeyId,
    },
}

/// One access decision, shaped like a FHIR R4 `AuditEvent` (IHE BALP privacy disclosure;
/// docs/access.md gives the mapping).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccessEvent {
    /// Format version (1).
    pub version: u8,
    /// When the node decided, Unix milliseconds (`AuditEvent.recorded`).
    pub recorded_ms: u64,
    /// The node that decided and answered (`AuditEvent.source.observer`).
    pub node: KeyId,
    /// What was asked.
    pub action: AccessAction,
    /// How it ended.
    pub outcome: Outcome,
    /// The declared v3 PurposeOfUse code (`AuditEvent.purposeOfEvent`).
    pub purpose: String,
    /// Who asked.
    pub accessor: Accessor,
    /// The document relied on or named (consent, family grant, break-glass declaration).
    pub basis: Option<RecordId>,
    /// The records released (`AuditEvent.entity`, role domain resource).
    pub records: Vec<RecordId>,
    /// Records of the subject the decision covered but withheld (category, period, deny).
    pub withheld: u64,
    /// The refusal's reason code (`AuditEvent.outcomeDesc`).
    pub reason: Option<String>,
    /// A break-glass declaration's justification.
    pub justification: Option<String>,
    /// The decision trace: documents and rules used.
    pub trace: Vec<String>,
}

versioned!(AccessEvent = 1);

/// `C = blake3_keyed(salt, "cairn/access-event/v1" || blake3(bcs(event)))`.
pub fn access_commitment(salt: &[u8; 32], event: &AccessEvent) -> Result<Hash32, EncodeError> {
    let mut input = domain::ACCESS_EVENT.as_bytes().to_vec();
    input.extend_from_slice(blake3(&encode(event)?).as_bytes());
    Ok(Hash32(*::blake3::keyed_hash(salt, &input).as_bytes()))
}

/// `leaf = blake3("cairn/leaf/access/v1" || handle || C)`.
pub fn access_leaf(handle: &Hash32, commitment: &Hash32) -> Hash32 {
    hash_parts(domain::ACCESS_LEAF, &[handle.as_bytes(), commitment.as_bytes()])
}

/// One entry of the access log as its subject (or their export) sees it: the event with
/// what binds it to its leaf.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccessEntry {
    /// Format version (1).
    pub version: u8,
    /// The entry handle.
    pub handle: Hash32,
    /// The commitment salt.
    pub salt: Hash32,
    /// The event.
    pub event: AccessEvent,
}

versioned!(AccessEntry = 1);

/// Why an access entry or its proof does not verify.
#[derive(Debug, thiserror::Error)]
pub enum AccessError {
    /// A field is wrong.
    #[error("`{field}`: {problem}")]
    Invalid {
        /// The field.
        field: String,
        /// What is wrong.
        problem: String,
    },
    /// The chain of inclusion does not hold.
    #[error(transparent)]
    Receipt(#[from] ReceiptError),
}

fn invalid(field: &str, problem: impl Into<String>) -> AccessError {
    AccessError::Invalid { field: field.into(), problem: problem.into() }
}

impl AccessEntry {
    /// The entry's commitment `C`.
    pub fn commitment(&self) -> Result<Hash32, AccessError> {
        access_commitment(&self.salt.0, &self.event).map_err(|e| invalid("event", e.to_string()))
    }

    /// The entry's leaf.
    pub fn leaf(&self) -> Result<Hash32, AccessError> {
        Ok(access_leaf(&self.handle, &self.commitment()?))
    }
}

/// Proof that an access event's leaf was committed on chain, verifiable offline from the
/// genesis file (the chain of evidence of an anchor receipt, `BatchKind::AccessEvents`).
/// It holds no personal data: after erasure it still verifies.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccessReceipt {
    /// Format version (1).
    pub version: u8,
    /// The entry handle.
    pub handle: Hash32,
    /// The commitment `C`.
    pub commitment: Hash32,
    /// `blake3("cairn/leaf/access/v1" || handle || C)`.
    pub leaf: Hash32,
    /// The committing node's signed batch commitment (kind `AccessEvents`).
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

versioned!(AccessReceipt = 1);

impl AccessReceipt {
    /// Checks every link against the genesis file; returns what was established.
    ///
    /// # Errors
    /// The first link that does not hold, by field.
    pub fn verify(&self, genesis: &Genesis) -> Result<Vec<String>, AccessError> {
        if self.version != 1 {
            return Err(invalid("receipt.version", format!("unknown version {} (this build reads 1)", self.version)));
        }
        if access_leaf(&self.handle, &self.commitment) != self.leaf {
            return Err(invalid("receipt.leaf", "not blake3(\"cairn/leaf/access/v1\" || handle || C)"));
        }
        let mut checks =
            vec![format!("leaf {} binds entry {} and commitment {}", self.leaf, self.handle, self.commitment)];
        let inclusion = BatchInclusion {
            batch: &self.batch,
            leaf_index: self.leaf_index,
            batch_proof: &self.batch_proof,
            log_index: self.log_index,
            log_proof: &self.log_proof,
            block: &self.block,
        };
        checks.extend(inclusion.verify(&self.leaf, BatchKind::AccessEvents, genesis)?);
        Ok(checks)
    }
}

/// An access entry with its receipt (none while its batch is not yet committed).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Disclosure {
    /// The entry.
    pub entry: AccessEntry,
    /// Its proof on chain, once committed.
    pub receipt: Option<AccessReceipt>,
}

impl Disclosure {
    /// Checks that the receipt is for this entry (same handle and commitment) and
    /// verifies it against the genesis file.
    ///
    /// # Errors
    /// No receipt yet, an entry that does not match it, or a broken link.
    pub fn verify(&self, genesis: &Genesis) -> Result<Vec<String>, AccessError> {
        let receipt = self.receipt.as_ref().ok_or_else(|| invalid("receipt", "not committed yet"))?;
        if receipt.handle != self.entry.handle {
            return Err(invalid("entry.handle", "not the handle the receipt proves"));
        }
        if self.entry.commitment()? != receipt.commitment {
            return Err(invalid("entry.event", "does not hash to the commitment the receipt proves"));
        }
        receipt.verify(genesis)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event() -> AccessEvent {
        AccessEvent {
            version: 1,
            recorded_ms: 1_700_000_000_000,
            node: KeyId([3; 16]),
            action: AccessAction::Search,
            outcome: Outcome::Granted,
            purpose: "TREAT".into(),
            accessor: Accessor::Organisation { name: "hospital".into(), key: KeyId([4; 16]) },
            basis: Some(RecordId([5; 16])),
            records: vec![RecordId([6; 16])],
            withheld: 0,
            reason: None,
            justification: None,
            trace: vec!["consent".into()],
        }
    }

    #[test]
    fn the_commitment_binds_every_field_and_the_salt() {
        let salt = [7u8; 32];
        let c = access_commitment(&salt, &event()).unwrap();
        assert_ne!(c, access_commitment(&[8u8; 32], &event()).unwrap());
        let mut other = event();
        other.outcome = Outcome::Refused;
        assert_ne!(c, access_commitment(&salt, &other).unwrap());
        let mut other = event();
        other.records.clear();
        assert_ne!(c, access_commitment(&salt, &other).unwrap());
        assert_ne!(access_leaf(&Hash32([1; 32]), &c), access_leaf(&Hash32([2; 32]), &c));
    }
}
