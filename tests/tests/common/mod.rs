//! A synthetic chain for offline-verification tests: four validators from fixed seeds,
//! blocks built and applied with the node's ledger state and certified by precommits
//! signed exactly as Malachite's ed25519 signer signs them.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

pub mod erasure;

use cairn_node::ledger::{LedgerLimits, LedgerState};
use cairn_proto::consensus::{CertifiedBlock, CertifiedHeader, CommitCertificate, VoteBody, VoteKind};
use cairn_proto::genesis::Genesis;
use cairn_proto::ledger::{BatchCommit, BatchKind};
use cairn_proto::membership::{Membership, Organisation, Validator};
use cairn_proto::signed::SignedBody as _;
use cairn_proto::transaction::{Block, Transaction};
use cairn_proto::{Hash32, Keypair, SecretSeed, Signature};

pub const SEEDS: [[u8; 32]; 4] = [[1; 32], [2; 32], [3; 32], [4; 32]];

pub fn genesis() -> Genesis {
    let key = |s: [u8; 32]| Keypair::from_seed(&SecretSeed::from_bytes(s)).public();
    Genesis {
        version: 1,
        chain_id: "busan-health".into(),
        genesis_time_ms: 1_000,
        membership: Membership {
            organisations: vec![Organisation { name: "city".into(), admin_keys: vec![key([9; 32])] }],
            validators: SEEDS
                .iter()
                .map(|s| Validator { organisation: "city".into(), public_key: key(*s), voting_power: 1 })
                .collect(),
            members: vec![],
        },
    }
}

/// Precommits by the first `n` validators, signed as Malachite's ed25519 signer signs.
pub fn certify(g: &Genesis, block: &Block, n: usize) -> CommitCertificate {
    let chain = g.hash().unwrap();
    let value = block.header.hash().unwrap();
    let mut signatures: Vec<_> = SEEDS[..n]
        .iter()
        .map(|seed| {
            let voter = Keypair::from_seed(&SecretSeed::from_bytes(*seed)).public().key_id();
            let body = VoteBody {
                version: 1,
                chain,
                kind: VoteKind::Precommit,
                height: block.header.height,
                round: 0,
                value: Some(value),
                voter,
            };
            (
                voter,
                Signature(ed25519_consensus::SigningKey::from(*seed).sign(&body.signing_bytes().unwrap()).to_bytes()),
            )
        })
        .collect();
    signatures.sort_by_key(|s| s.0);
    CommitCertificate { version: 1, height: block.header.height, round: 0, value, signatures }
}

pub fn batch(seq: u64) -> Transaction {
    let node = Keypair::from_seed(&SecretSeed::from_bytes(SEEDS[0]));
    let commit = BatchCommit {
        version: 1,
        kind: BatchKind::Anchors,
        node: node.public().key_id(),
        root: Hash32([seq as u8; 32]),
        size: 64,
        seq,
    };
    Transaction::BatchCommit(commit.sign(&node).unwrap())
}

pub struct Chain {
    pub genesis: Genesis,
    pub blocks: Vec<CertifiedBlock>,
    pub state: LedgerState,
}

pub fn chain(heights: u64) -> Chain {
    let genesis = genesis();
    let mut state = LedgerState::from_genesis(&genesis, LedgerLimits::default()).unwrap();
    let proposer = Keypair::from_seed(&SecretSeed::from_bytes(SEEDS[1])).public().key_id();
    let mut blocks = Vec::new();
    for h in 0..heights {
        let (block, _) = state.propose(vec![batch(2 * h), batch(2 * h + 1)], 2_000 + h, proposer).unwrap();
        state.apply(&block).unwrap();
        let certificate = certify(&genesis, &block, 3);
        blocks.push(CertifiedBlock { block, certificate });
    }
    Chain { genesis, blocks, state }
}

pub fn header(cb: &CertifiedBlock) -> CertifiedHeader {
    CertifiedHeader { header: cb.block.header.clone(), certificate: cb.certificate.clone() }
}

pub fn write_json<T: serde::Serialize>(dir: &std::path::Path, name: &str, value: &T) -> String {
    let path = dir.join(name);
    std::fs::write(&path, serde_json::to_string_pretty(value).unwrap()).unwrap();
    path.display().to_string()
}
