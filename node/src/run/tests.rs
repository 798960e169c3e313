//! The application's handling of proposals, without a network: an invalid proposed block
//! is refused and counted; a wrongly signed proposal is refused by the verifier and
//! counted; a malformed proposal part is a decode error, counted; a valid one is accepted.

// Test code: a failed expectation ends the test with a panic.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use arc_malachitebft_app_channel::app::types::codec::Codec as _;
use arc_malachitebft_app_channel::app::types::core::{Round, Validity};
use arc_malachitebft_signing::{Signer as _, Verifier as _};
use cairn_proto::genesis::Genesis;
use cairn_proto::transaction::Transaction;
use cairn_proto::{Hash32, Keypair, SecretSeed};

use super::app::App;
use super::config::Timing;
use crate::chain::Chain;
use crate::chain::mempool::Mempool;
use crate::consensus::codec::{CairnCodec, malformed_count};
use crate::consensus::signing::{CairnSigner, CairnVerifier, bad_signature_count};
use crate::consensus::{Address, BlockValue, Height, Proposal, ProposalPart, ValidatorSet};
use crate::ledger::state::{LedgerLimits, LedgerState};
use crate::ledger::store::BlockStore;

fn seed(b: u8) -> SecretSeed {
    SecretSeed::from_bytes([b; 32])
}

fn genesis() -> Genesis {
    crate::testing::genesis("test", 4, vec![])
}

fn shared(dir: &std::path::Path) -> Arc<Chain> {
    let genesis = genesis();
    let state = LedgerState::from_genesis(&genesis, LedgerLimits::default()).unwrap();
    let (gossip, _) = tokio::sync::mpsc::channel(1);
    let store = BlockStore::open(&dir.join("blocks.redb")).unwrap();
    Chain::new(genesis, state, store, 10, gossip, Default::default()).unwrap()
}

fn app(shared: &Arc<Chain>) -> App {
    let validators = ValidatorSet::from_membership(&shared.genesis.membership).unwrap();
    App::new(shared.clone(), Address(Keypair::from_seed(&seed(1)).public().key_id()), validators, Timing::default())
}

fn proposed_block(shared: &Chain, proposer: u8) -> BlockValue {
    let key = Keypair::from_seed(&seed(proposer));
    let (block, _) = shared.ledger_mut().propose(Vec::<Transaction>::new(), 2_000, key.public().key_id()).unwrap();
    BlockValue::new(block).unwrap()
}

#[test]
fn an_invalid_proposed_block_is_refused_and_counted_and_a_valid_one_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let shared = shared(dir.path());
    let app = app(&shared);
    let proposer = Address(Keypair::from_seed(&seed(2)).public().key_id());
    let good = proposed_block(&shared, 2);
    assert_eq!(app.validate(Height(1), proposer, &good), Validity::Valid);
    assert_eq!(shared.metrics.invalid_proposals.load(Relaxed), 0);

    // The body hash no longer matches the transactions.
    let mut block = good.block().clone();
    block.header.body_hash = Hash32([7; 32]);
    assert_eq!(app.validate(Height(1), proposer, &BlockValue::new(block).unwrap()), Validity::Invalid);
    // A block for another height, and one that names another proposer than the proposal.
    assert_eq!(app.validate(Height(2), proposer, &good), Validity::Invalid);
    let other = Address(Keypair::from_seed(&seed(3)).public().key_id());
    assert_eq!(app.validate(Height(1), other, &good), Validity::Invalid);
    assert_eq!(shared.metrics.invalid_proposals.load(Relaxed), 3);
    // Nothing changed: the good block still validates at height 1.
    assert_eq!(shared.ledger().height(), 0);
    assert_eq!(app.validate(Height(1), proposer, &good), Validity::Valid);
}

#[tokio::test]
async fn a_wrongly_signed_proposal_is_refused_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let shared = shared(dir.path());
    let chain = shared.chain;
    let value = proposed_block(&shared, 2);
    let proposer = Address(Keypair::from_seed(&seed(2)).public().key_id());
    let proposal = Proposal { height: Height(1), round: Round::new(0), value, pol_round: Round::Nil, proposer };
    let keys = shared.genesis.membership.validators.iter().map(|v| v.public_key.0).collect();
    let verifier = CairnVerifier::with_validators(chain, keys);
    let right = CairnSigner::new(chain, &seed(2)).sign_proposal(proposal.clone()).await.unwrap();
    let wrong = CairnSigner::new(chain, &seed(3)).sign_proposal(proposal.clone()).await.unwrap();
    let key2 =
        arc_malachitebft_signing_ed25519::PublicKey::from_bytes(Keypair::from_seed(&seed(2)).public().0).unwrap();
    let before = bad_signature_count();
    assert!(verifier.verify_signed_proposal(&proposal, &right.signature, &key2).await.unwrap().is_valid());
    assert!(!verifier.verify_signed_proposal(&proposal, &wrong.signature, &key2).await.unwrap().is_valid());
    assert!(bad_signature_count() > before);

    // A validator proof from a key that is not in genesis is refused (the network then
    // disconnects that peer).
    let outsider = CairnSigner::new(chain, &seed(42));
    let key = Keypair::from_seed(&seed(42)).public().0.to_vec();
    let proof = outsider.sign_validator_proof(key, b"peer".to_vec()).await.unwrap();
    assert!(!verifier.verify_validator_proof(&proof).await.unwrap().is_valid());
}

#[test]
fn a_malformed_proposal_part_is_an_error_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let shared = shared(dir.path());
    let value = proposed_block(&shared, 2);
    let part = ProposalPart {
        height: Height(1),
        round: Round::new(0),
        pol_round: Round::Nil,
        proposer: Address(Keypair::from_seed(&seed(2)).public().key_id()),
        value,
    };
    let bytes = CairnCodec.encode(&part).unwrap();
    let before = malformed_count();
    let cut = bytes.slice(..bytes.len() - 3);
    assert!(arc_malachitebft_app_channel::app::types::codec::Codec::<ProposalPart>::decode(&CairnCodec, cut).is_err());
    assert!(malformed_count() > before);
    let back: ProposalPart = CairnCodec.decode(bytes).unwrap();
    assert_eq!(back, part);
}

fn batch(b: u8, seq: u64) -> Transaction {
    crate::testing::batch(&Keypair::from_seed(&seed(b)), cairn_proto::ledger::BatchKind::Anchors, seq, 16)
}

#[test]
fn the_mempool_drops_duplicates_and_stale_transactions_and_keeps_early_ones() {
    use crate::chain::mempool::Refused;
    use crate::ledger::state::TxError;
    let genesis = genesis();
    let mut state = LedgerState::from_genesis(&genesis, LedgerLimits::default()).unwrap();
    let mut pool = Mempool::new(4);
    // Arrives out of order (gossip): seq 1 before seq 0 is kept.
    pool.admit(&state, batch(1, 1)).unwrap();
    pool.admit(&state, batch(1, 0)).unwrap();
    assert_eq!(pool.admit(&state, batch(1, 0)), Err(Refused::Duplicate));
    // Far ahead of the next sequence number, or from a non-validator: refused.
    assert!(matches!(pool.admit(&state, batch(1, 1_000_000)), Err(Refused::Invalid(TxError::Gap { .. }))));
    assert!(matches!(pool.admit(&state, batch(42, 0)), Err(Refused::Invalid(TxError::UnknownNode(_)))));
    // Candidates come in sequence order, so both fit one block.
    let candidates = pool.candidates(10);
    assert_eq!(candidates, vec![batch(1, 0), batch(1, 1)]);
    let (block, rejected) = state.propose(candidates, 2_000, Keypair::from_seed(&seed(1)).public().key_id()).unwrap();
    assert!(rejected.is_empty());
    assert_eq!(block.transactions.len(), 2);
    // A second submitter's copy of seq 0 waits too; the block makes it stale.
    pool.admit(&state, batch(2, 0)).unwrap();
    state.apply(&block).unwrap();
    assert_eq!(pool.after_block(&state, &block.transactions), 0);
    assert_eq!(pool.len(), 1, "included transactions left the pool");
    // A transaction the chain already holds is stale now.
    assert!(matches!(pool.admit(&state, batch(1, 0)), Err(Refused::Invalid(TxError::Stale { .. }))));
    // Full: refused without growing.
    for s in 0..3 {
        pool.admit(&state, batch(3, s)).unwrap();
    }
    assert_eq!(pool.admit(&state, batch(4, 0)), Err(Refused::Full(4)));
    assert_eq!(pool.len(), 4);
}
