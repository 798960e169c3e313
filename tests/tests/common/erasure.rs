//! The worked erasure certificate of docs/formats/erasure-certificate.md, built on the
//! synthetic chain.

use cairn_node::ledger::state::log_leaf;
use cairn_proto::consensus::CertifiedBlock;
use cairn_proto::erasure::{
    CommittedErasure, ErasureCertificate, ErasureReceipt, ErasureRequest, ErasureScope, ErasureTrigger,
};
use cairn_proto::ledger::{BatchCommit, BatchKind, SignedBatchCommit};
use cairn_proto::merkle::{Blake3Merkle, MerkleHasher as _, Tree};
use cairn_proto::receipt::{AnchorReceipt, padding_leaf};
use cairn_proto::record::{CommitmentSecret, Manifest, RecordId, content_commitment, record_leaf};
use cairn_proto::signed::SignedBody as _;
use cairn_proto::transaction::Transaction;
use cairn_proto::{Hash32, Keypair, SecretSeed};

use super::{SEEDS, certify, genesis, header};

const DAY_MS: u64 = 86_400_000;

pub fn keypair(seed: [u8; 32]) -> Keypair {
    Keypair::from_seed(&SecretSeed::from_bytes(seed))
}

/// A batch of 64 leaves with `leaf` at `index`, the rest padding from fixed bytes; the
/// signed commitment and the leaf's inclusion proof.
pub fn batch_of(
    node: &Keypair,
    kind: BatchKind,
    leaf: Hash32,
    index: usize,
    pad: u8,
) -> (SignedBatchCommit, Vec<Hash32>) {
    let mut leaves: Vec<Hash32> = (0..63u8).map(|i| padding_leaf(&[pad ^ i; 32])).collect();
    leaves.insert(index, leaf);
    let mut tree = Tree::new(&Blake3Merkle);
    for l in &leaves {
        tree.push(Blake3Merkle.hash_leaf(&l.0));
    }
    let root = Hash32(tree.root());
    let commit = BatchCommit { version: 1, kind, node: node.public().key_id(), root, size: 64, seq: 0 };
    let proof = tree.inclusion_proof(index as u64, 64).unwrap().into_iter().map(Hash32).collect();
    (commit.sign(node).unwrap(), proof)
}

/// The worked example: record 0x11…, custodians validators 1 and 2 (seeds 1 and 2),
/// anchored by validator 1 at height 1; erased at both on a subject's request; both
/// receipts committed at height 2. Everything is deterministic (ed25519 signs
/// deterministically), so the bytes are the same on every run.
pub fn example() -> (cairn_proto::genesis::Genesis, ErasureCertificate) {
    example_with_manifest_version(1)
}

/// The worked example with the record's manifest at `version`, everything derived from
/// it (leaf, batch, receipts, signatures) made consistently.
pub fn example_with_manifest_version(version: u8) -> (cairn_proto::genesis::Genesis, ErasureCertificate) {
    let g = genesis();
    let (a, b) = (keypair(SEEDS[0]), keypair(SEEDS[1]));
    let mut custodians = vec![a.public().key_id(), b.public().key_id()];
    custodians.sort();
    let manifest = Manifest { version, custodians: custodians.clone() };
    let rid = RecordId([0x11; 16]);
    let commitment = content_commitment(&CommitmentSecret::from_bytes([0x22; 32]), b"ciphertext of the reading");
    let leaf = record_leaf(&rid, &manifest.hash().unwrap(), &commitment);

    let mut state =
        cairn_node::ledger::LedgerState::from_genesis(&g, cairn_node::ledger::LedgerLimits::default()).unwrap();
    let proposer = keypair(SEEDS[2]).public().key_id();
    let mut certify_block = |txs: Vec<Transaction>, time_ms: u64| -> CertifiedBlock {
        let (block, rejected) = state.propose(txs, time_ms, proposer).unwrap();
        assert!(rejected.is_empty());
        state.apply(&block).unwrap();
        let certificate = certify(&g, &block, 3);
        CertifiedBlock { block, certificate }
    };

    let (anchor, anchor_proof) = batch_of(&a, BatchKind::Anchors, leaf, 5, 0x40);
    let anchored = certify_block(vec![Transaction::BatchCommit(anchor.clone())], 10_000);

    let gateway = keypair([7; 32]).public().key_id();
    let requested_at_ms = 20_000;
    let request = ErasureRequest {
        version: 1,
        trigger: ErasureTrigger::SubjectRequest,
        scope: ErasureScope::Records(vec![rid]),
        requested_by: gateway,
        requested_at_ms,
        deadline_ms: requested_at_ms + 30 * DAY_MS,
        nonce: [0x33; 16],
    };
    let request_hash = request.hash().unwrap();
    let mut receipts = Vec::new();
    for (i, kp) in [&a, &b].into_iter().enumerate() {
        let receipt = ErasureReceipt {
            version: 1,
            custodian: kp.public().key_id(),
            record_leaf: leaf,
            trigger: request.trigger,
            request_hash,
            requested_at_ms,
            deadline_ms: request.deadline_ms,
            erased_at_ms: 21_000 + i as u64,
            epoch_before: 3,
            epoch_after: 4,
        };
        let leaf = receipt.leaf().unwrap();
        let (batch, proof) = batch_of(kp, BatchKind::ErasureReceipts, leaf, 9 + i, 0x50 + i as u8);
        receipts.push((kp.public().key_id(), receipt.sign(kp).unwrap(), batch, proof));
    }
    let erased = certify_block(
        receipts.iter().map(|(_, _, batch, _)| Transaction::BatchCommit(batch.clone())).collect(),
        22_000,
    );

    let in_log = |commit: &BatchCommit, size: u64| {
        let index = state.find_leaf(&log_leaf(commit).unwrap()).unwrap();
        (index, state.log_inclusion(index, size).unwrap().into_iter().map(Hash32).collect::<Vec<_>>())
    };
    let (log_index, log_proof) = in_log(&anchor.body, anchored.block.header.log_size);
    let record = AnchorReceipt {
        version: 1,
        rid,
        manifest,
        commitment,
        leaf,
        batch: anchor,
        leaf_index: 5,
        batch_proof: anchor_proof,
        log_index,
        log_proof,
        block: header(&anchored),
    };
    let mut erasures = Vec::new();
    for custodian in &custodians {
        let (_, receipt, batch, proof) = receipts.iter().find(|r| r.0 == *custodian).unwrap();
        let (log_index, log_proof) = in_log(&batch.body, erased.block.header.log_size);
        erasures.push(CommittedErasure {
            leaf_index: if batch.body.node == a.public().key_id() { 9 } else { 10 },
            receipt: receipt.clone(),
            batch: batch.clone(),
            batch_proof: proof.clone(),
            log_index,
            log_proof,
            block: header(&erased),
        });
    }
    let cert = ErasureCertificate {
        version: 1,
        trigger: request.trigger,
        request_hash,
        requested_at_ms,
        deadline_ms: request.deadline_ms,
        record,
        erasures,
    };
    (g, cert)
}
