//! A synthetic chain for offline-verification tests: four validators from fixed seeds,
//! blocks built and applied with the node's ledger state and certified by precommits
//! signed exactly as Malachite's ed25519 signer signs them.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

pub mod agreement;
pub mod erasure;

use cairn_node::ledger::{LedgerLimits, LedgerState};
use cairn_proto::consensus::{CertifiedBlock, CertifiedHeader, CommitCertificate};
use cairn_proto::genesis::Genesis;
use cairn_proto::ledger::BatchKind;
use cairn_proto::transaction::{Block, Transaction};
use cairn_proto::{Keypair, SecretSeed};

pub const SEEDS: [[u8; 32]; 4] = [[1; 32], [2; 32], [3; 32], [4; 32]];

pub fn genesis() -> Genesis {
    cairn_node::testing::genesis("busan-health", SEEDS.len(), vec![])
}

/// Precommits by the first `n` validators, signed as Malachite's ed25519 signer signs.
pub fn certify(g: &Genesis, block: &Block, n: usize) -> CommitCertificate {
    let signers: Vec<Keypair> = SEEDS[..n].iter().map(|s| Keypair::from_seed(&SecretSeed::from_bytes(*s))).collect();
    cairn_node::testing::certify(g, block, &signers)
}

pub fn batch(seq: u64) -> Transaction {
    let node = Keypair::from_seed(&SecretSeed::from_bytes(SEEDS[0]));
    cairn_node::testing::batch(&node, BatchKind::Anchors, seq, 64)
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

/// Writes the genesis file `genesis.toml` under `dir`; returns its path.
pub fn write_toml(dir: &std::path::Path, g: &Genesis) -> String {
    let path = dir.join("genesis.toml");
    std::fs::write(&path, g.to_toml().unwrap()).unwrap();
    path.display().to_string()
}
