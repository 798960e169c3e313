//! Erasure receipts: a custodian's signed statement that it destroyed a record's key and
//! blob. Receipts are batch-committed like every other event (only the batch root goes on
//! chain) and collected into erasure certificates (DESIGN.md §8).

use serde::{Deserialize, Serialize};

use crate::encoding::{EncodeError, encode};
use crate::hash::{Hash32, domain, hash_parts};
use crate::identity::{KeyId, Keypair, PublicKey, Signature, SignatureError};
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

/// A receipt with the custodian's signature.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedErasureReceipt {
    /// The receipt.
    pub receipt: ErasureReceipt,
    /// Signature under `cairn/sig/erasure-receipt/v1` over `bcs(receipt)`.
    pub signature: Signature,
}

versioned!(ErasureReceipt = 1);

impl ErasureReceipt {
    /// Signs the receipt with the custodian's key.
    pub fn sign(self, custodian: &Keypair) -> Result<SignedErasureReceipt, EncodeError> {
        let signature = custodian.sign(domain::SIG_ERASURE_RECEIPT, &encode(&self)?);
        Ok(SignedErasureReceipt { receipt: self, signature })
    }

    /// The receipt's leaf in its custodian's erasure-receipt batch.
    pub fn leaf(&self) -> Result<Hash32, EncodeError> {
        Ok(hash_parts(domain::ERASURE_LEAF, &[&encode(self)?]))
    }
}

impl SignedErasureReceipt {
    /// Verifies the signature with the custodian's public key (which must match).
    pub fn verify(&self, custodian_key: &PublicKey) -> Result<(), SignatureError> {
        if custodian_key.key_id() != self.receipt.custodian {
            return Err(SignatureError::BadKey("key does not belong to the custodian"));
        }
        let bytes = encode(&self.receipt).map_err(|_| SignatureError::BadSignature)?;
        custodian_key.verify(domain::SIG_ERASURE_RECEIPT, &bytes, &self.signature)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::SecretSeed;

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
        later.receipt.erased_at_ms += 1;
        assert!(later.verify(&kp.public()).is_err());
        assert_ne!(later.receipt.leaf().unwrap(), receipt.leaf().unwrap());
    }
}
