//! Erasure receipts: a custodian's signed statement that it destroyed a record's key and
//! blob. Receipts are batch-committed like every other event (only the batch root goes on
//! chain) and collected into erasure certificates (DESIGN.md §8).

use serde::{Deserialize, Serialize};

use crate::consensus::CertifiedHeader;
use crate::encoding::{EncodeError, encode};
use crate::genesis::Genesis;
use crate::hash::{Hash32, domain, hash_parts};
use crate::identity::KeyId;
use crate::ledger::{BatchKind, SignedBatchCommit};
use crate::receipt::{AnchorReceipt, BatchInclusion, ReceiptError};
use crate::record::RecordId;
use crate::signed::{Signed, SignedBody};
use crate::version::versioned;

/// What an erasure request covers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ErasureScope {
    /// These records.
    Records(Vec<RecordId>),
    /// Every record of one subject, as the writing gateway names it.
    Subject {
        /// The gateway that wrote the records.
        gateway: KeyId,
        /// The gateway's reference to the subject (e.g. `Patient/123`).
        local: String,
    },
}

/// A request to erase, as the coordinating custodian recorded it. Only its hash leaves
/// the custodians: it names records or a subject.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ErasureRequest {
    /// Format version (1).
    pub version: u8,
    /// Why.
    pub trigger: ErasureTrigger,
    /// What.
    pub scope: ErasureScope,
    /// Who asked (a gateway key, or the coordinating node for automatic triggers).
    pub requested_by: KeyId,
    /// When the coordinator accepted the request, Unix milliseconds.
    pub requested_at_ms: u64,
    /// By when every custodian must have erased, Unix milliseconds.
    pub deadline_ms: u64,
    /// 16 random bytes, so that two equal requests have different hashes.
    pub nonce: [u8; 16],
}

versioned!(ErasureRequest = 1);

impl ErasureRequest {
    /// `blake3("cairn/erasure-request/v1" || bcs(request))`.
    pub fn hash(&self) -> Result<Hash32, EncodeError> {
        Ok(hash_parts(domain::ERASURE_REQUEST, &[&encode(self)?]))
    }
}

/// Why a record was erased.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ErasureTrigger {
    /// The data subject asked.
    SubjectRequest,
    /// The declared purpose was achieved.
    PurposeAchieved,
    /// The retention period ran out.
    RetentionExpired,
    /// Consent was withdrawn.
    ConsentWithdrawn,
    /// The record was corrected (rectification, GDPR Art. 16, PIPA Art. 36): the
    /// corrected reading is `replaced_by`, stored before this erasure was accepted.
    Rectified {
        /// The record holding the corrected reading.
        replaced_by: crate::record::RecordId,
    },
}

/// One custodian's statement that a record is erased.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ErasureReceipt {
    /// Format version (1).
    pub version: u8,
    /// Key id of the custodian.
    pub custodian: KeyId,
    /// Leaf of the erased record (binds its id, manifest and commitment).
    pub record_leaf: Hash32,
    /// Why.
    pub trigger: ErasureTrigger,
    /// Hash of the erasure request this answers.
    pub request_hash: Hash32,
    /// When the request was accepted, Unix milliseconds (as the coordinator stated it).
    pub requested_at_ms: u64,
    /// By when the erasure had to be done, Unix milliseconds (as the coordinator stated it).
    pub deadline_ms: u64,
    /// When the custodian's keystore committed the erasure, Unix milliseconds.
    pub erased_at_ms: u64,
    /// Keystore epoch before the erasure.
    pub epoch_before: u64,
    /// Keystore epoch whose root no longer reaches the record's key.
    pub epoch_after: u64,
}

/// A receipt with the custodian's signature (under `cairn/sig/erasure-receipt/v1`).
pub type SignedErasureReceipt = Signed<ErasureReceipt>;

impl SignedBody for ErasureReceipt {
    const DOMAIN: &'static str = domain::SIG_ERASURE_RECEIPT;
    fn signer(&self) -> KeyId {
        self.custodian
    }
}

versioned!(ErasureReceipt = 1);

impl ErasureReceipt {
    /// The receipt's leaf in its custodian's erasure-receipt batch.
    pub fn leaf(&self) -> Result<Hash32, EncodeError> {
        Ok(hash_parts(domain::ERASURE_LEAF, &[&encode(self)?]))
    }
}

/// One custodian's signed erasure receipt and the proof that it was committed on chain
/// in that custodian's batch of erasure receipts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommittedErasure {
    /// The signed receipt.
    pub receipt: SignedErasureReceipt,
    /// The custodian's signed batch commitment (kind `ErasureReceipts`).
    pub batch: SignedBatchCommit,
    /// Position of the receipt's leaf in the batch.
    pub leaf_index: u64,
    /// Inclusion proof of the receipt's leaf in the batch root.
    pub batch_proof: Vec<Hash32>,
    /// Position of the batch commitment in the global log.
    pub log_index: u64,
    /// Inclusion proof of the batch commitment in the log at the header's size.
    pub log_proof: Vec<Hash32>,
    /// The committing block's header with its commit certificate.
    pub block: CertifiedHeader,
}

/// Proof that one record was erased at every custodian that held it (DESIGN.md §8),
/// verifiable offline with the genesis file alone. Format: docs/formats/erasure-certificate.md.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ErasureCertificate {
    /// Format version (1).
    pub version: u8,
    /// Why the record was erased.
    pub trigger: ErasureTrigger,
    /// Hash of the erasure request.
    pub request_hash: Hash32,
    /// When the request was accepted, Unix milliseconds.
    pub requested_at_ms: u64,
    /// By when the erasure had to be done, Unix milliseconds.
    pub deadline_ms: u64,
    /// The record's anchor receipt: its leaf, manifest and the proof the leaf was on chain.
    pub record: AnchorReceipt,
    /// One committed erasure receipt per custodian of the manifest, in manifest order.
    pub erasures: Vec<CommittedErasure>,
}

versioned!(ErasureCertificate = 1);

/// Why a certificate does not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CertificateError {
    /// An unknown format version.
    #[error("unknown certificate version {0}")]
    Version(u8),
    /// The record's anchor receipt does not verify.
    #[error("the record's anchor receipt: {0}")]
    Record(ReceiptError),
    /// A custodian of the manifest has no receipt.
    #[error("no erasure receipt from custodian {0}")]
    MissingReceipt(KeyId),
    /// A receipt from a node that is not in the manifest.
    #[error("an erasure receipt from {0}, which is not a custodian of the record")]
    NotCustodian(KeyId),
    /// Two receipts from one custodian, or not in manifest order.
    #[error("the receipts are not one per custodian in manifest order (at {0})")]
    Order(KeyId),
    /// A receipt's signature does not verify under its custodian's genesis key.
    #[error("the receipt of {0} is not signed by that custodian")]
    Signature(KeyId),
    /// A receipt in a format this verifier does not know.
    #[error("the receipt of {custodian} has unknown version {version}")]
    ReceiptVersion {
        /// Custodian.
        custodian: KeyId,
        /// Its version.
        version: u8,
    },
    /// A receipt is about another record.
    #[error("the receipt of {custodian} names leaf {found}, not the record's leaf {expected}")]
    OtherLeaf {
        /// Custodian.
        custodian: KeyId,
        /// Leaf in the receipt.
        found: Hash32,
        /// The record's leaf.
        expected: Hash32,
    },
    /// A receipt answers another request, trigger, request time or deadline.
    #[error("the receipt of {0} answers another request, trigger, request time or deadline")]
    OtherRequest(KeyId),
    /// A receipt's keystore epochs do not advance.
    #[error("the receipt of {0} does not move its keystore to a later epoch")]
    Epochs(KeyId),
    /// A receipt is not committed on chain as claimed.
    #[error("the receipt of {custodian} is not proven committed: {source}")]
    Committed {
        /// Custodian.
        custodian: KeyId,
        /// Why.
        source: ReceiptError,
    },
    /// The batch holding a receipt was committed by another node.
    #[error("the receipt of {custodian} is in a batch of {node}")]
    BatchOwner {
        /// Custodian.
        custodian: KeyId,
        /// Node whose batch it is.
        node: KeyId,
    },
    /// Timestamps out of order, or past the deadline.
    #[error("times: {0}")]
    Times(String),
}

impl ErasureCertificate {
    /// Checks the certificate against the genesis file; returns each check made, in words.
    pub fn verify(&self, genesis: &Genesis) -> Result<Vec<String>, CertificateError> {
        if self.version != 1 {
            return Err(CertificateError::Version(self.version));
        }
        let mut checks = self.record.verify(genesis).map_err(CertificateError::Record)?;
        let leaf = self.record.leaf;
        let anchored_ms = self.record.block.header.time_ms;
        let custodians = &self.record.manifest.custodians;
        for (i, e) in self.erasures.iter().enumerate() {
            let who = e.receipt.body.custodian;
            if !custodians.contains(&who) {
                return Err(CertificateError::NotCustodian(who));
            }
            if custodians.get(i) != Some(&who) {
                return Err(CertificateError::Order(who));
            }
        }
        if let Some(missing) = custodians.get(self.erasures.len()) {
            return Err(CertificateError::MissingReceipt(*missing));
        }
        let times = |m: String| CertificateError::Times(m);
        if self.requested_at_ms < anchored_ms {
            return Err(times(format!(
                "request at {} ms is before the record's anchoring block ({} ms)",
                self.requested_at_ms, anchored_ms
            )));
        }
        if self.deadline_ms < self.requested_at_ms {
            return Err(times("the deadline is before the request".into()));
        }
        checks.push(format!(
            "the {:?} request {} was made at {} ms, after the record was anchored ({} ms), with deadline {} ms",
            self.trigger, self.request_hash, self.requested_at_ms, anchored_ms, self.deadline_ms
        ));
        let members = &genesis.membership;
        for e in &self.erasures {
            let r = &e.receipt.body;
            let who = r.custodian;
            let key = members.validator(&who).ok_or(CertificateError::NotCustodian(who))?;
            e.receipt.verify(&key.public_key).map_err(|_| CertificateError::Signature(who))?;
            if r.version != 1 {
                return Err(CertificateError::ReceiptVersion { custodian: who, version: r.version });
            }
            if r.record_leaf != leaf {
                return Err(CertificateError::OtherLeaf { custodian: who, found: r.record_leaf, expected: leaf });
            }
            if r.request_hash != self.request_hash
                || r.trigger != self.trigger
                || r.requested_at_ms != self.requested_at_ms
                || r.deadline_ms != self.deadline_ms
            {
                return Err(CertificateError::OtherRequest(who));
            }
            if r.epoch_after <= r.epoch_before {
                return Err(CertificateError::Epochs(who));
            }
            if r.erased_at_ms < self.requested_at_ms {
                return Err(times(format!("{who} erased at {} ms, before the request", r.erased_at_ms)));
            }
            if r.erased_at_ms > self.deadline_ms {
                return Err(times(format!("{who} erased at {} ms, after the deadline", r.erased_at_ms)));
            }
            if e.batch.body.node != who {
                return Err(CertificateError::BatchOwner { custodian: who, node: e.batch.body.node });
            }
            checks.push(format!(
                "custodian {who} signed that it erased leaf {leaf} at {} ms (keystore epoch {} → {})",
                r.erased_at_ms, r.epoch_before, r.epoch_after
            ));
            let receipt_leaf = r.leaf().map_err(|e| times(e.to_string()))?;
            let inclusion = BatchInclusion {
                batch: &e.batch,
                leaf_index: e.leaf_index,
                batch_proof: &e.batch_proof,
                log_index: e.log_index,
                log_proof: &e.log_proof,
                block: &e.block,
            };
            let committed = inclusion
                .verify(&receipt_leaf, BatchKind::ErasureReceipts, genesis)
                .map_err(|source| CertificateError::Committed { custodian: who, source })?;
            checks.extend(committed);
            let committed_ms = e.block.header.time_ms;
            if committed_ms < r.erased_at_ms {
                return Err(times(format!(
                    "{who}'s receipt was committed at {committed_ms} ms, before the erasure it reports ({} ms)",
                    r.erased_at_ms
                )));
            }
            checks.push(format!(
                "times in order: requested {} ≤ erased {} ≤ deadline {}; receipt committed at {committed_ms} ms",
                self.requested_at_ms, r.erased_at_ms, self.deadline_ms
            ));
        }
        checks.push(format!(
            "every custodian of the manifest ({}) erased the record and committed its receipt",
            custodians.len()
        ));
        Ok(checks)
    }
}

/// A custodian's signed answer to a live challenge (DESIGN.md §8): whether, when asked,
/// it still held a record with this id and leaf. An extra, online check beside a
/// certificate: it binds the challenger's nonce, so it cannot be replayed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChallengeAnswer {
    /// Format version (1).
    pub version: u8,
    /// Key id of the custodian that answers.
    pub custodian: KeyId,
    /// The record asked about.
    pub rid: RecordId,
    /// Its leaf.
    pub leaf: Hash32,
    /// The challenger's random nonce.
    pub nonce: [u8; 16],
    /// When the custodian answered, Unix milliseconds.
    pub answered_at_ms: u64,
    /// Whether the custodian holds a record with this id and leaf.
    pub holds: bool,
}

versioned!(ChallengeAnswer = 1);

impl SignedBody for ChallengeAnswer {
    const DOMAIN: &'static str = domain::SIG_CHALLENGE;
    fn signer(&self) -> KeyId {
        self.custodian
    }
}

/// A challenge answer with the custodian's signature (under `cairn/sig/challenge/v1`).
pub type SignedChallengeAnswer = Signed<ChallengeAnswer>;

/// What a certificate cannot prove; printed with every verification.
pub const CANNOT_PROVE: &str = "A certificate cannot prove that no copy was made before the erasure \
(backups, disk images, an operator who copied data or keys), nor that a custodian's hardware \
really overwrote its root slot (SSD wear levelling, copy-on-write file systems): it proves \
that every custodian named in the record's manifest signed, and committed on chain, that it \
destroyed the record's keys and blob in time.";

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::{Keypair, SecretSeed};

    #[test]
    fn receipt_signature_and_leaf_bind_every_field() {
        let kp = Keypair::from_seed(&SecretSeed::from_bytes([4; 32]));
        let receipt = ErasureReceipt {
            version: 1,
            custodian: kp.public().key_id(),
            record_leaf: Hash32([1; 32]),
            trigger: ErasureTrigger::SubjectRequest,
            request_hash: Hash32([2; 32]),
            requested_at_ms: 1_699_000_000_000,
            deadline_ms: 1_701_000_000_000,
            erased_at_ms: 1_700_000_000_000,
            epoch_before: 7,
            epoch_after: 8,
        };
        let signed = receipt.clone().sign(&kp).unwrap();
        signed.verify(&kp.public()).unwrap();
        let mut later = signed.clone();
        later.body.erased_at_ms += 1;
        assert!(later.verify(&kp.public()).is_err());
        assert_ne!(later.body.leaf().unwrap(), receipt.leaf().unwrap());
    }
}
