//! Consensus context and signing: what the node signs through Malachite is what the
//! offline verifier accepts, and nothing else.

// Test code: a failed expectation ends the test with a panic.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use arc_malachitebft_app_channel::app::types::core::{
    Context as _, Height as _, NilOrVal, Round, ValidatorSet as _, VoteType,
};
use arc_malachitebft_signing::{Signer as _, Verifier as _};
use cairn_proto::consensus::{CertificateError, CommitCertificate};
use cairn_proto::membership::{Membership, Organisation, Validator as GenesisValidator};
use cairn_proto::{Hash32, Keypair, SecretSeed, Signature};

use super::context::{Address, BlockId, CairnContext, Height, ValidatorSet, Vote};
use super::signing::{CairnSigner, CairnVerifier};

fn seeds() -> Vec<SecretSeed> {
    (1..=4u8).map(|b| SecretSeed::from_bytes([b; 32])).collect()
}

fn membership() -> Membership {
    let keys: Vec<_> = seeds().iter().map(|s| Keypair::from_seed(s).public()).collect();
    Membership {
        organisations: vec![Organisation {
            name: "city".into(),
            admin_keys: vec![Keypair::from_seed(&SecretSeed::from_bytes([9; 32])).public()],
        }],
        validators: keys
            .iter()
            .map(|k| GenesisValidator { organisation: "city".into(), public_key: *k, voting_power: 1 })
            .collect(),
        members: vec![],
    }
}

fn precommit(seed: &SecretSeed, height: u64, value: Hash32) -> Vote {
    Vote {
        vote_type: VoteType::Precommit,
        height: Height(height),
        round: Round::new(0),
        value: NilOrVal::Val(BlockId(value)),
        voter: Address(Keypair::from_seed(seed).public().key_id()),
    }
}

#[tokio::test]
async fn precommits_signed_through_malachite_make_a_certificate_the_offline_verifier_accepts() {
    let chain = Hash32([7; 32]);
    let value = Hash32([3; 32]);
    let mut signatures = Vec::new();
    for seed in &seeds()[..3] {
        let signed = CairnSigner::new(chain, seed).sign_vote(precommit(seed, 5, value)).await.unwrap();
        let voter = Keypair::from_seed(seed).public().key_id();
        signatures.push((voter, Signature(signed.signature.to_bytes())));
    }
    signatures.sort_by_key(|s| s.0);
    let cert = CommitCertificate { version: 1, height: 5, round: 0, value, signatures };
    let validators = membership().validators;
    cert.verify(&chain, 5, &value, &validators).unwrap();
    // The same votes do not certify the block on another chain.
    assert!(matches!(
        cert.verify(&Hash32([8; 32]), 5, &value, &validators),
        Err(CertificateError::BadSignature { .. })
    ));
}

#[tokio::test]
async fn the_verifier_refuses_other_chains_other_votes_and_other_keys() {
    let chain = Hash32([7; 32]);
    let seeds = seeds();
    let vote = precommit(&seeds[0], 5, Hash32([3; 32]));
    let signed = CairnSigner::new(chain, &seeds[0]).sign_vote(vote.clone()).await.unwrap();
    let set = ValidatorSet::from_membership(&membership()).unwrap();
    let key = set.get_by_address(&vote.voter).unwrap().public_key;
    let other_key = set.validators().iter().find(|v| v.address != vote.voter).unwrap().public_key;
    let verifier = CairnVerifier::new(chain);
    assert!(verifier.verify_signed_vote(&vote, &signed.signature, &key).await.unwrap().is_valid());
    let mut changed = vote.clone();
    changed.value = NilOrVal::Nil;
    assert!(verifier.verify_signed_vote(&changed, &signed.signature, &key).await.unwrap().is_invalid());
    assert!(verifier.verify_signed_vote(&vote, &signed.signature, &other_key).await.unwrap().is_invalid());
    let elsewhere = CairnVerifier::new(Hash32([8; 32]));
    assert!(elsewhere.verify_signed_vote(&vote, &signed.signature, &key).await.unwrap().is_invalid());
}

#[tokio::test]
async fn validator_proofs_bind_key_and_peer_id() {
    let chain = Hash32([7; 32]);
    let seed = &seeds()[1];
    let public = Keypair::from_seed(seed).public();
    let peer = crate::identity::libp2p_keypair(seed).unwrap().public().to_peer_id().to_bytes();
    let proof = CairnSigner::new(chain, seed).sign_validator_proof(public.0.to_vec(), peer.clone()).await.unwrap();
    let verifier = CairnVerifier::new(chain);
    assert!(verifier.verify_validator_proof(&proof).await.unwrap().is_valid());
    let mut other_peer = proof.clone();
    other_peer.peer_id[5] ^= 1;
    assert!(verifier.verify_validator_proof(&other_peer).await.unwrap().is_invalid());
    let mut short_key = proof;
    short_key.public_key.pop();
    assert!(verifier.verify_validator_proof(&short_key).await.unwrap().is_invalid());
}

#[test]
fn validator_set_and_proposer_rotation_follow_genesis() {
    let set = ValidatorSet::from_membership(&membership()).unwrap();
    assert_eq!(set.count(), 4);
    assert_eq!(set.total_voting_power(), 4);
    let addresses: Vec<_> = set.validators().iter().map(|v| v.address).collect();
    let mut sorted = addresses.clone();
    sorted.sort();
    assert_eq!(addresses, sorted);
    let ctx = CairnContext { chain: Hash32([1; 32]) };
    let proposers: Vec<_> = (1..=4).map(|h| ctx.select_proposer(&set, Height(h), Round::new(0)).address).collect();
    let distinct: std::collections::BTreeSet<_> = proposers.iter().collect();
    assert_eq!(distinct.len(), 4, "each validator proposes once in four heights");
    assert_ne!(ctx.select_proposer(&set, Height(1), Round::new(1)).address, proposers[0], "a new round moves on");
    assert_eq!(Height::INITIAL.increment(), Height(2));
    let empty = Membership { validators: vec![], ..membership() };
    assert!(ValidatorSet::from_membership(&empty).is_err());
}
