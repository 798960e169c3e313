//! Fixtures shared by every test of a consortium, in this crate and in `cairn-tests`
//! (feature `testing`): validator keys from fixed seeds, a genesis of N validators,
//! commit certificates signed exactly as Malachite's ed25519 signer signs precommits,
//! and signed batch commitments. Not part of a running node.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use cairn_proto::consensus::{CommitCertificate, VoteBody, VoteKind};
use cairn_proto::encoding::encode;
use cairn_proto::genesis::Genesis;
use cairn_proto::hash::domain;
use cairn_proto::ledger::{BatchCommit, BatchKind, SignedBatchCommit};
use cairn_proto::membership::{MemberKey, Membership, Organisation, Validator};
use cairn_proto::signed::SignedBody as _;
use cairn_proto::transaction::{Block, Transaction};
use cairn_proto::{Hash32, Keypair, SecretSeed};

/// The seed of validator `i` (0-based): 32 bytes of `i + 1`.
pub fn seed(i: usize) -> SecretSeed {
    SecretSeed::from_bytes([i as u8 + 1; 32])
}

/// The key of validator `i`.
pub fn validator(i: usize) -> Keypair {
    Keypair::from_seed(&seed(i))
}

/// The seed of the admin of the one organisation, "city".
pub const ADMIN_SEED: [u8; 32] = [9; 32];

/// A genesis named `chain_id` (time 1,000 ms): one organisation "city" (admin from
/// [`ADMIN_SEED`]), validators `0..n` of voting power 1, and `members`.
pub fn genesis(chain_id: &str, n: usize, members: Vec<MemberKey>) -> Genesis {
    let admin = Keypair::from_seed(&SecretSeed::from_bytes(ADMIN_SEED)).public();
    let g = Genesis {
        version: 2,
        chain_id: chain_id.into(),
        genesis_time_ms: 1_000,
        membership: Membership {
            organisations: vec![Organisation { name: "city".into(), admin_keys: vec![admin] }],
            validators: (0..n)
                .map(|i| Validator { organisation: "city".into(), public_key: validator(i).public(), voting_power: 1 })
                .collect(),
            members,
        },
        policy: cairn_proto::policy::PurposePolicy::public_service(1),
    };
    g.validate().unwrap();
    g
}

/// A commit certificate of `block` on the chain of `genesis`: precommits (round 0) by
/// `signers`, signed over cairn's vote format as Malachite's signer signs them, in
/// ascending key id order as offline verifiers expect.
pub fn certify(genesis: &Genesis, block: &Block, signers: &[Keypair]) -> CommitCertificate {
    let chain = genesis.hash().unwrap();
    let value = block.header.hash().unwrap();
    let mut signatures: Vec<_> = signers
        .iter()
        .map(|k| {
            let voter = k.public().key_id();
            let body = VoteBody {
                version: 1,
                chain,
                kind: VoteKind::Precommit,
                height: block.header.height,
                round: 0,
                value: Some(value),
                voter,
            };
            (voter, k.sign(domain::SIG_VOTE, &encode(&body).unwrap()))
        })
        .collect();
    signatures.sort_by_key(|s| s.0);
    CommitCertificate { version: 1, height: block.header.height, round: 0, value, signatures }
}

/// A batch commitment of `kind` signed by `node`: root of `seq`'s byte repeated, `size`
/// leaves.
pub fn signed_batch(node: &Keypair, kind: BatchKind, seq: u64, size: u64) -> SignedBatchCommit {
    let body = BatchCommit { version: 1, kind, node: node.public().key_id(), root: Hash32([seq as u8; 32]), size, seq };
    body.sign(node).unwrap()
}

/// [`signed_batch`] as a transaction.
pub fn batch(node: &Keypair, kind: BatchKind, seq: u64, size: u64) -> Transaction {
    Transaction::BatchCommit(signed_batch(node, kind, seq, size))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The certificate verifies with the rule Malachite applies (ZIP-215), with a quorum.
    #[test]
    fn a_certificate_of_three_of_four_verifies_and_one_of_two_does_not() {
        let g = genesis("fixture", 4, vec![]);
        let mut state = crate::ledger::LedgerState::from_genesis(&g, crate::ledger::LedgerLimits::default()).unwrap();
        let (block, _) = state.propose(vec![], 2_000, validator(0).public().key_id()).unwrap();
        let value = block.header.hash().unwrap();
        let signers: Vec<Keypair> = (0..3).map(validator).collect();
        certify(&g, &block, &signers).verify(&g.hash().unwrap(), 1, &value, &g.membership.validators).unwrap();
        let few = certify(&g, &block, &signers[..1]);
        assert!(few.verify(&g.hash().unwrap(), 1, &value, &g.membership.validators).is_err());
    }
}
