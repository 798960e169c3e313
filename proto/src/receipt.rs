//! Anchor receipts (DESIGN.md §4): what a gateway keeps for each record to prove, offline
//! and from the genesis file alone, that the record's leaf was committed on chain.
//!
//! Chain of evidence, each link checked by `cairn verify-receipt`:
//! 1. `leaf = blake3("cairn/leaf/v1" || rid || manifest_hash || C)`;
//! 2. `leaf` is entry `leaf_index` of the custodian's padded batch (root and size in the
//!    signed [`BatchCommit`](crate::ledger::BatchCommit));
//! 3. that batch commitment is entry `log_index` of the global log whose size and root
//!    the certified block header states;
//! 4. the header's commit certificate carries more than two thirds of the genesis
//!    validators' precommit signatures.

use serde::{Deserialize, Serialize};

use crate::consensus::{CertificateError, CertifiedHeader};
use crate::encoding::encode;
use crate::genesis::Genesis;
use crate::hash::{Hash32, domain, hash_parts};
use crate::ledger::{BatchKind, SignedBatchCommit};
use crate::merkle::{Blake3Merkle, MerkleHasher as _, ProofError, verify_inclusion};
use crate::record::{Manifest, RecordId, record_leaf};
use crate::version::versioned;

/// Proof that one record's leaf is anchored on chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
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

/// Why a receipt does not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReceiptError {
    /// The parts do not fit together (named).
    #[error("{0}")]
    Mismatch(String),
    /// The leaf is not in the batch.
    #[error("the leaf is not in the batch: {0}")]
    BatchProof(ProofError),
    /// The batch is not in the certified log.
    #[error("the batch is not in the certified log: {0}")]
    LogProof(ProofError),
    /// The block's certificate does not verify.
    #[error("certificate of height {height}: {source}")]
    Certificate {
        /// Height.
        height: u64,
        /// Why.
        source: CertificateError,
    },
}

impl AnchorReceipt {
    /// Checks every link of the receipt against the genesis file; returns what was
    /// established, in words.
    pub fn verify(&self, genesis: &Genesis) -> Result<Vec<String>, ReceiptError> {
        let bad = |m: String| ReceiptError::Mismatch(m);
        let mut checks = Vec::new();
        if self.version != 1 {
            return Err(bad(format!("unknown receipt version {}", self.version)));
        }
        self.manifest.check().map_err(|e| bad(format!("manifest: {e}")))?;
        let members = &genesis.membership;
        if let Some(c) = self.manifest.custodians.iter().find(|c| members.validator(c).is_none()) {
            return Err(bad(format!("custodian {c} is not a genesis validator")));
        }
        let manifest_hash = self.manifest.hash().map_err(|e| bad(e.to_string()))?;
        if record_leaf(&self.rid, &manifest_hash, &self.commitment) != self.leaf {
            return Err(bad("the leaf is not blake3(\"cairn/leaf/v1\" || rid || manifest hash || C)".into()));
        }
        checks.push(format!(
            "leaf {} binds record {}, its {} custodians and commitment {}",
            self.leaf,
            self.rid,
            self.manifest.custodians.len(),
            self.commitment
        ));
        if !self.manifest.custodians.contains(&self.batch.body.node) {
            return Err(bad(format!(
                "the batch was committed by {}, not a custodian of the record",
                self.batch.body.node
            )));
        }
        let inclusion = BatchInclusion {
            batch: &self.batch,
            leaf_index: self.leaf_index,
            batch_proof: &self.batch_proof,
            log_index: self.log_index,
            log_proof: &self.log_proof,
            block: &self.block,
        };
        checks.extend(inclusion.verify(&self.leaf, BatchKind::Anchors, genesis)?);
        Ok(checks)
    }
}

/// The evidence that a leaf was committed on chain through one node's batch: the signed
/// batch commitment, the leaf's inclusion proof into the batch root, the batch's inclusion
/// proof into the global log and the certified header of the committing block. Shared by
/// anchor receipts and erasure certificates.
#[derive(Debug, Clone, Copy)]
pub struct BatchInclusion<'a> {
    /// The node's signed batch commitment.
    pub batch: &'a SignedBatchCommit,
    /// Position of the leaf in the batch.
    pub leaf_index: u64,
    /// Inclusion proof of the leaf in the batch root.
    pub batch_proof: &'a [Hash32],
    /// Position of the batch commitment in the global log.
    pub log_index: u64,
    /// Inclusion proof of the batch commitment in the log at the header's size.
    pub log_proof: &'a [Hash32],
    /// The committing block's header with its commit certificate.
    pub block: &'a CertifiedHeader,
}

impl BatchInclusion<'_> {
    /// Checks that `leaf` is in a batch of `kind` signed by a genesis validator and that
    /// the batch is in the log of a certified block; returns what was established.
    pub fn verify(&self, leaf: &Hash32, kind: BatchKind, genesis: &Genesis) -> Result<Vec<String>, ReceiptError> {
        let bad = |m: String| ReceiptError::Mismatch(m);
        let mut checks = Vec::new();
        let members = &genesis.membership;
        let commit = &self.batch.body;
        if commit.version != 1 {
            return Err(bad(format!("unknown batch commitment version {} (this build reads 1)", commit.version)));
        }
        if commit.kind != kind {
            return Err(bad(format!("the batch is of kind {:?}, not {kind:?}", commit.kind)));
        }
        let node = members.validator(&commit.node).ok_or_else(|| bad(format!("{} is not a validator", commit.node)))?;
        self.batch.verify(&node.public_key).map_err(|e| bad(format!("batch commitment signature: {e}")))?;
        checks.push(format!(
            "node {} signed {kind:?} batch {} (root {}, {} leaves)",
            commit.node, commit.seq, commit.root, commit.size
        ));
        let proof: Vec<[u8; 32]> = self.batch_proof.iter().map(|h| h.0).collect();
        let leaf_hash = Blake3Merkle.hash_leaf(&leaf.0);
        verify_inclusion(&Blake3Merkle, self.leaf_index, commit.size, &leaf_hash, &proof, &commit.root.0)
            .map_err(ReceiptError::BatchProof)?;
        checks.push(format!("leaf {leaf} is entry {} of that batch (RFC 9162 inclusion proof)", self.leaf_index));
        let h = &self.block.header;
        let chain = genesis.hash().map_err(|e| bad(e.to_string()))?;
        self.block
            .verify(&chain, &members.validators)
            .map_err(|source| ReceiptError::Certificate { height: h.height, source })?;
        checks.push(format!(
            "header of height {} is certified: {} of {} genesis validators signed precommits for it (ZIP-215), more than two thirds of the voting power",
            h.height,
            self.block.certificate.signatures.len(),
            members.validators.len()
        ));
        let log_leaf = Blake3Merkle.hash_leaf(&encode(commit).map_err(|e| bad(e.to_string()))?);
        let proof: Vec<[u8; 32]> = self.log_proof.iter().map(|h| h.0).collect();
        verify_inclusion(&Blake3Merkle, self.log_index, h.log_size, &log_leaf, &proof, &h.log_root.0)
            .map_err(ReceiptError::LogProof)?;
        checks.push(format!(
            "batch {} of node {} is entry {} of that block's log of {} batch roots",
            commit.seq, commit.node, self.log_index, h.log_size
        ));
        Ok(checks)
    }
}

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
