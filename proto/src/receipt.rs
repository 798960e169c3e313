//! Anchor receipts (DESIGN.md §4): what a gateway keeps for each record to prove, offline
//! and from the genesis file alone, that the record's leaf was committed on chain.
//!
//! Chain of evidence, each link checked by `cairn verify-receipt`:
//! 1. `leaf = blake3("cairn/leaf/v1" || rid || manifest_hash || C)`;
//! 2. `leaf` is entry `leaf_index` of the custodian's padded batch (root and size in the
//!    signed [`BatchCommit`]);
//! 3. that batch commitment is entry `log_index` of the global log whose size and root
//!    the certified block header states;
//! 4. the header's commit certificate carries more than two thirds of the genesis
//!    validators' precommit signatures.

use serde::{Deserialize, Serialize};

use crate::consensus::CertifiedHeader;
use crate::hash::{Hash32, domain, hash_parts};
use crate::ledger::SignedBatchCommit;
use crate::record::{Manifest, RecordId};
use crate::version::versioned;

/// Proof that one record's leaf is anchored on chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AnchorReceipt {
    /// Format version (1).
    pub version: u8,
    /// The record.
    pub rid: RecordId,
    /// Custodians that hold it.
    pub manifest: Manifest,
    /// Content commitment `C`.
    pub commitment: Hash32,
    /// The record leaf.
    pub leaf: Hash32,
    /// The anchoring custodian's signed batch commitment.
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

versioned!(AnchorReceipt = 1);

/// Batch sizes a padded batch may have: 64 × 4^k up to [`MAX_BATCH_LEAVES`].
pub const BATCH_BUCKETS: [u64; 6] = [64, 256, 1024, 4096, 16_384, 65_536];
/// Most leaves (real and padding) in one batch.
pub const MAX_BATCH_LEAVES: u64 = 65_536;

/// The bucket a batch of `n` real leaves is padded to, or `None` if `n` is too many.
pub fn padded_size(n: u64) -> Option<u64> {
    BATCH_BUCKETS.iter().copied().find(|b| *b >= n)
}

/// A padding leaf from 32 random bytes: indistinguishable from a record leaf without
/// the random bytes.
pub fn padding_leaf(random: &[u8; 32]) -> Hash32 {
    hash_parts(domain::PADDING_LEAF, &[random])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_pad_to_the_next_bucket() {
        assert_eq!(padded_size(0), Some(64));
        assert_eq!(padded_size(1), Some(64));
        assert_eq!(padded_size(64), Some(64));
        assert_eq!(padded_size(65), Some(256));
        assert_eq!(padded_size(65_536), Some(65_536));
        assert_eq!(padded_size(65_537), None);
        assert_ne!(padding_leaf(&[1; 32]), padding_leaf(&[2; 32]));
    }
}
