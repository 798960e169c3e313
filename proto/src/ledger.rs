//! What the ledger holds: signed batch commitments and block headers. Nothing here may
//! name a person (DESIGN.md §3): a batch commitment carries a Merkle root over padded,
//! domain-separated leaves, the committing node and counters, nothing else.

use serde::{Deserialize, Serialize};

use crate::encoding::{EncodeError, encode};
use crate::hash::{Hash32, domain, hash_parts};
use crate::identity::KeyId;
use crate::signed::{Signed, SignedBody};
use crate::version::versioned;

/// Which event kind a batch's leaves are (each kind has its own leaf domain).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum BatchKind {
    /// Record anchors (leaves from [`crate::record::record_leaf`]).
    Anchors,
    /// Erasure receipts.
    ErasureReceipts,
    /// Consent events.
    ConsentEvents,
    /// Access-log events.
    AccessEvents,
}

/// One node's commitment to a batch of leaves.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchCommit {
    /// Format version (1).
    pub version: u8,
    /// Leaf kind.
    pub kind: BatchKind,
    /// Key id of the committing node.
    pub node: KeyId,
    /// Merkle root (BLAKE3, RFC 6962 shape) over the padded batch.
    pub root: Hash32,
    /// Number of leaves including padding (a bucket size).
    pub size: u64,
    /// The node's sequence number for this kind, from 0, without gaps.
    pub seq: u64,
}

/// A batch commitment with the node's signature (under `cairn/sig/batch-commit/v1`).
pub type SignedBatchCommit = Signed<BatchCommit>;

impl SignedBody for BatchCommit {
    const DOMAIN: &'static str = domain::SIG_BATCH_COMMIT;
    fn signer(&self) -> KeyId {
        self.node
    }
}

/// A block header: what Malachite decides on and what a commit certificate signs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BlockHeader {
    /// Format version (1).
    pub version: u8,
    /// Genesis hash of the chain.
    pub chain: Hash32,
    /// Height, from 1.
    pub height: u64,
    /// Hash of the previous header (the genesis hash at height 1).
    pub prev_hash: Hash32,
    /// Size of the global log of batch roots after this block.
    pub log_size: u64,
    /// Root of the global log after this block.
    pub log_root: Hash32,
    /// Proposer's timestamp, Unix milliseconds.
    pub time_ms: u64,
    /// Key id of the proposing validator.
    pub proposer: KeyId,
    /// `blake3("cairn/block-body/v1" || bcs(transactions))`.
    pub body_hash: Hash32,
}

versioned!(BatchCommit = 1, BlockHeader = 1);

impl BlockHeader {
    /// `blake3("cairn/block/v1" || bcs(header))`.
    pub fn hash(&self) -> Result<Hash32, EncodeError> {
        Ok(hash_parts(domain::BLOCK, &[&encode(self)?]))
    }
}

/// Hash of a block body given its canonical encoding.
pub fn body_hash(encoded_body: &[u8]) -> Hash32 {
    hash_parts(domain::BLOCK_BODY, &[encoded_body])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::{Keypair, SecretSeed, SignatureError};

    fn commit(node: &Keypair) -> BatchCommit {
        BatchCommit {
            version: 1,
            kind: BatchKind::Anchors,
            node: node.public().key_id(),
            root: Hash32([9; 32]),
            size: 64,
            seq: 0,
        }
    }

    #[test]
    fn signed_commit_verifies_only_for_its_node_and_content() {
        let node = Keypair::from_seed(&SecretSeed::from_bytes([1; 32]));
        let other = Keypair::from_seed(&SecretSeed::from_bytes([2; 32]));
        let signed = commit(&node).sign(&node).unwrap();
        signed.verify(&node.public()).unwrap();
        assert!(signed.verify(&other.public()).is_err());
        let mut changed = signed.clone();
        changed.body.seq = 1;
        assert_eq!(changed.verify(&node.public()), Err(SignatureError::BadSignature));
    }
}
