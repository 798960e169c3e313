//! Erasure receipts: a custodian's signed statement that it destroyed a record's key and
//! blob. Receipts are batch-committed like every other event (only the batch root goes on
//! chain) and collected into erasure certificates (DESIGN.md §8).

use serde::{Deserialize, Serialize};

use crate::encoding::{EncodeError, encode};
use crate::hash::{Hash32, domain, hash_parts};
use crate::identity::KeyId;
use crate::signed::{Signed, SignedBody};
use crate::version::versioned;

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
}

/// One custodian's statement that a record is erased.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
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
