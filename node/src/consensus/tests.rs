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

mod codec {
    use arc_malachitebft_app_channel::app::consensus::{LivenessMsg, ProposedValue, SignedConsensusMsg};
    use arc_malachitebft_app_channel::app::streaming::{StreamContent, StreamId, StreamMessage};
    use arc_malachitebft_app_channel::app::types::codec::Codec;
    use arc_malachitebft_app_channel::app::types::core::{
        ExtendedCommitCertificate, ExtendedCommitSignature, PolkaCertificate, PolkaSignature, RoundCertificate,
        RoundCertificateType, RoundSignature, SignedMessage, Validity,
    };
    use arc_malachitebft_app_channel::app::types::sync::{RawDecidedValue, Request, Response, Status};
    use bytes::Bytes;
    use cairn_proto::ledger::BlockHeader;

    use super::*;
    use crate::consensus::codec::{CairnCodec, encode_block};
    use crate::consensus::context::{BlockValue, Proposal, ProposalPart};

    type Ctx = CairnContext;

    fn block() -> cairn_proto::transaction::Block {
        cairn_proto::transaction::Block {
            header: BlockHeader {
                version: 1,
                chain: Hash32([1; 32]),
                height: 3,
                prev_hash: Hash32([2; 32]),
                log_size: 0,
                log_root: Hash32([3; 32]),
                time_ms: 9,
                proposer: Address(KeyId([4; 16])).0,
                body_hash: Hash32([5; 32]),
            },
            transactions: vec![],
        }
    }

    use cairn_proto::KeyId;

    fn round_trip<T>(msg: T)
    where
        T: PartialEq + std::fmt::Debug,
        CairnCodec: Codec<T>,
        <CairnCodec as Codec<T>>::Error: std::fmt::Debug,
    {
        let bytes = CairnCodec.encode(&msg).unwrap();
        assert_eq!(CairnCodec.decode(bytes.clone()).unwrap(), msg);
        let mut longer = bytes.to_vec();
        longer.push(0);
        assert!(CairnCodec.decode(Bytes::from(longer)).is_err(), "trailing byte accepted");
        for cut in [0, bytes.len() / 2, bytes.len() - 1] {
            assert!(CairnCodec.decode(bytes.slice(..cut)).is_err(), "truncated message accepted");
        }
    }

    fn sig(b: u8) -> arc_malachitebft_signing_ed25519::Signature {
        arc_malachitebft_signing_ed25519::Signature::from_bytes([b; 64])
    }

    #[test]
    fn every_engine_message_round_trips_and_rejects_damage() {
        let value = BlockValue::new(block()).unwrap();
        let vote = precommit(&seeds()[0], 3, Hash32([6; 32]));
        let address = vote.voter;
        let proposal = Proposal {
            height: Height(3),
            round: Round::new(1),
            value: value.clone(),
            pol_round: Round::Nil,
            proposer: address,
        };
        let part = ProposalPart {
            height: Height(3),
            round: Round::new(1),
            pol_round: Round::Nil,
            proposer: address,
            value: value.clone(),
        };
        round_trip::<SignedConsensusMsg<Ctx>>(SignedConsensusMsg::Vote(SignedMessage::new(vote.clone(), sig(1))));
        round_trip::<SignedConsensusMsg<Ctx>>(SignedConsensusMsg::Proposal(SignedMessage::new(proposal, sig(2))));
        round_trip::<ProposalPart>(part.clone());
        round_trip::<StreamMessage<ProposalPart>>(StreamMessage::new(
            StreamId::new(Bytes::from_static(b"s1")),
            0,
            StreamContent::Data(part),
        ));
        round_trip::<StreamMessage<ProposalPart>>(StreamMessage::new(
            StreamId::new(Bytes::from_static(b"s1")),
            1,
            StreamContent::Fin,
        ));
        let polka = PolkaCertificate::<Ctx> {
            height: Height(3),
            round: Round::new(0),
            value_id: BlockId(Hash32([6; 32])),
            polka_signatures: vec![PolkaSignature { address, signature: sig(3) }],
        };
        round_trip::<PolkaCertificate<Ctx>>(polka.clone());
        round_trip::<LivenessMsg<Ctx>>(LivenessMsg::PolkaCertificate(polka));
        round_trip::<LivenessMsg<Ctx>>(LivenessMsg::Vote(SignedMessage::new(vote, sig(4))));
        round_trip::<LivenessMsg<Ctx>>(LivenessMsg::SkipRoundCertificate(RoundCertificate {
            height: Height(3),
            round: Round::new(2),
            cert_type: RoundCertificateType::Skip,
            round_signatures: vec![RoundSignature {
                vote_type: VoteType::Prevote,
                value_id: NilOrVal::Nil,
                address,
                signature: sig(5),
            }],
        }));
        round_trip::<ProposedValue<Ctx>>(ProposedValue {
            height: Height(3),
            round: Round::new(1),
            valid_round: Round::Nil,
            proposer: address,
            value,
            validity: Validity::Valid,
        });
        let peer = crate::identity::libp2p_keypair(&seeds()[0]).unwrap().public().to_peer_id();
        let peer = arc_malachitebft_app_channel::app::types::PeerId::from_bytes(&peer.to_bytes()).unwrap();
        round_trip::<Status<Ctx>>(Status { peer_id: peer, tip_height: Height(9), history_min_height: Height(1) });
        round_trip::<Request<Ctx>>(Request::ValueRequest(arc_malachitebft_sync::ValueRequest::new(
            Height(2)..=Height(5),
        )));
        let cert = ExtendedCommitCertificate::<Ctx> {
            height: Height(3),
            round: Round::new(0),
            value_id: BlockId(Hash32([6; 32])),
            commit_signatures: vec![ExtendedCommitSignature { address, signature: sig(6), extension: None }],
        };
        round_trip::<Response<Ctx>>(Response::ValueResponse(arc_malachitebft_sync::ValueResponse::new(
            Height(3),
            vec![RawDecidedValue::new(encode_block(&block()).unwrap(), cert)],
        )));
    }

    #[test]
    fn garbage_and_oversized_input_are_errors_not_panics() {
        let mut state = 0x2545f4914f6cdd1du64;
        for len in 0..600 {
            let bytes: Vec<u8> = (0..len)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    state as u8
                })
                .collect();
            let b = Bytes::from(bytes);
            let _ = Codec::<SignedConsensusMsg<Ctx>>::decode(&CairnCodec, b.clone());
            let _ = Codec::<LivenessMsg<Ctx>>::decode(&CairnCodec, b.clone());
            let _ = Codec::<StreamMessage<ProposalPart>>::decode(&CairnCodec, b.clone());
            let _ = Codec::<Response<Ctx>>::decode(&CairnCodec, b.clone());
            let _ = Codec::<Status<Ctx>>::decode(&CairnCodec, b);
        }
        let huge = Bytes::from(vec![0u8; cairn_proto::encoding::MAX_MESSAGE_LEN + 1]);
        assert!(Codec::<SignedConsensusMsg<Ctx>>::decode(&CairnCodec, huge).is_err());
    }
}
