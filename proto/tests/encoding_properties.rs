//! Every wire and storage type round-trips through its canonical encoding, and decoding
//! arbitrary or mutated bytes returns an error instead of panicking.

// Test code: a failed expectation ends the test with a panic.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use cairn_proto::consensus::{CommitCertificate, VoteBody};
use cairn_proto::encoding::{decode, encode};
use cairn_proto::erasure::{ErasureReceipt, ErasureTrigger, SignedErasureReceipt};
use cairn_proto::genesis::Genesis;
use cairn_proto::ledger::{BatchCommit, BatchKind, BlockHeader, SignedBatchCommit};
use cairn_proto::membership::{MemberKey, Membership, Organisation, Role, Validator};
use cairn_proto::record::{ContentType, Manifest, RecordHeader, RecordId};
use cairn_proto::transaction::{Block, MembershipChange, MembershipChangeBody, SignedMembershipChange, Transaction};
use cairn_proto::version::{Versioned, decode_versioned};
use cairn_proto::{Hash32, KeyId, PublicKey, Signature};
use proptest::prelude::*;
use serde::{Serialize, de::DeserializeOwned};

const LIMIT: usize = 1 << 20;

fn hash() -> impl Strategy<Value = Hash32> {
    any::<[u8; 32]>().prop_map(Hash32)
}
fn key_id() -> impl Strategy<Value = KeyId> {
    any::<[u8; 16]>().prop_map(KeyId)
}
fn public_key() -> impl Strategy<Value = PublicKey> {
    any::<[u8; 32]>().prop_map(PublicKey)
}
fn signature() -> impl Strategy<Value = Signature> {
    (any::<[u8; 32]>(), any::<[u8; 32]>()).prop_map(|(a, b)| {
        let mut s = [0u8; 64];
        s[..32].copy_from_slice(&a);
        s[32..].copy_from_slice(&b);
        Signature(s)
    })
}
fn name() -> impl Strategy<Value = String> {
    "[a-z0-9-]{1,20}"
}

prop_compose! {
    fn record_header()(rid in any::<[u8; 16]>(), gateway in key_id(), purpose in "[A-Z]{1,10}",
                       received in any::<u64>(), retain in any::<u64>()) -> RecordHeader {
        RecordHeader { version: 1, rid: RecordId(rid), gateway, content_type: ContentType::FhirObservationJson,
                       purpose, received_at_ms: received, retain_until_ms: retain }
    }
}
prop_compose! {
    fn manifest()(ids in prop::collection::btree_set(key_id(), 1..5)) -> Manifest {
        Manifest::new(ids.into_iter().collect()).unwrap()
    }
}
fn batch_kind() -> impl Strategy<Value = BatchKind> {
    prop_oneof![
        Just(BatchKind::Anchors),
        Just(BatchKind::ErasureReceipts),
        Just(BatchKind::ConsentEvents),
        Just(BatchKind::AccessEvents)
    ]
}
prop_compose! {
    fn batch_commit()(kind in batch_kind(), node in key_id(), root in hash(), size in any::<u64>(), seq in any::<u64>()) -> BatchCommit {
        BatchCommit { version: 1, kind, node, root, size, seq }
    }
}
prop_compose! {
    fn signed_batch_commit()(commit in batch_commit(), signature in signature()) -> SignedBatchCommit {
        SignedBatchCommit { body: commit, signature }
    }
}
prop_compose! {
    fn block_header()(chain in hash(), height in any::<u64>(), prev in hash(), log_size in any::<u64>(),
                      log_root in hash(), time in any::<u64>(), proposer in key_id(), body in hash()) -> BlockHeader {
        BlockHeader { version: 1, chain, height, prev_hash: prev, log_size, log_root, time_ms: time, proposer, body_hash: body }
    }
}
fn trigger() -> impl Strategy<Value = ErasureTrigger> {
    prop_oneof![
        Just(ErasureTrigger::SubjectRequest),
        Just(ErasureTrigger::PurposeAchieved),
        Just(ErasureTrigger::RetentionExpired),
        Just(ErasureTrigger::ConsentWithdrawn)
    ]
}
prop_compose! {
    fn receipt()(custodian in key_id(), leaf in hash(), trigger in trigger(), req in hash(),
                 asked in any::<u64>(), deadline in any::<u64>(),
                 at in any::<u64>(), before in any::<u64>(), after in any::<u64>()) -> ErasureReceipt {
        ErasureReceipt { version: 1, custodian, record_leaf: leaf, trigger, request_hash: req,
                         requested_at_ms: asked, deadline_ms: deadline,
                         erased_at_ms: at, epoch_before: before, epoch_after: after }
    }
}
prop_compose! {
    fn signed_receipt()(receipt in receipt(), signature in signature()) -> SignedErasureReceipt {
        SignedErasureReceipt { body: receipt, signature }
    }
}
fn role() -> impl Strategy<Value = Role> {
    prop_oneof![Just(Role::Gateway), Just(Role::Accessor), Just(Role::Regulator)]
}
prop_compose! {
    fn membership()(
        orgs in prop::collection::vec((name(), prop::collection::vec(public_key(), 1..3)), 1..4),
        validators in prop::collection::vec((name(), public_key(), 1u64..100), 1..5),
        members in prop::collection::vec((name(), role(), public_key()), 0..5),
    ) -> Membership {
        Membership {
            organisations: orgs.into_iter().map(|(name, admin_keys)| Organisation { name, admin_keys }).collect(),
            validators: validators.into_iter().map(|(organisation, public_key, voting_power)| Validator { organisation, public_key, voting_power }).collect(),
            members: members.into_iter().map(|(organisation, role, public_key)| MemberKey { organisation, role, public_key }).collect(),
        }
    }
}
fn membership_change() -> impl Strategy<Value = MembershipChange> {
    prop_oneof![
        (role(), public_key()).prop_map(|(role, public_key)| MembershipChange::Register { role, public_key }),
        public_key().prop_map(|public_key| MembershipChange::Revoke { public_key }),
    ]
}
prop_compose! {
    fn signed_change()(chain in hash(), admin in key_id(), nonce in any::<u64>(), change in membership_change(), signature in signature()) -> SignedMembershipChange {
        SignedMembershipChange { body: MembershipChangeBody { version: 1, chain, admin, nonce, change }, signature }
    }
}
fn transaction() -> impl Strategy<Value = Transaction> {
    prop_oneof![
        signed_batch_commit().prop_map(Transaction::BatchCommit),
        signed_change().prop_map(Transaction::Membership)
    ]
}
prop_compose! {
    fn block()(header in block_header(), transactions in prop::collection::vec(transaction(), 0..6)) -> Block {
        Block { header, transactions }
    }
}
prop_compose! {
    fn commit_certificate()(height in any::<u64>(), round in any::<u32>(), value in hash(),
                            signatures in prop::collection::vec((key_id(), signature()), 0..5)) -> CommitCertificate {
        CommitCertificate { version: 1, height, round, value, signatures }
    }
}
prop_compose! {
    fn genesis()(chain_id in name(), time in any::<u64>(), membership in membership(),
                 purposes in prop::collection::vec("[A-Z]{2,16}", 1..5), change_quorum in 1u32..4) -> Genesis {
        let policy = cairn_proto::policy::PurposePolicy::new(purposes, change_quorum);
        Genesis { version: 2, chain_id, genesis_time_ms: time, membership, policy }
    }
}

fn round_trip<T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug>(value: &T) -> Result<(), TestCaseError> {
    let bytes = encode(value).unwrap();
    prop_assert_eq!(&decode::<T>(&bytes, LIMIT).unwrap(), value);
    // One byte more or less is refused.
    let mut longer = bytes.clone();
    longer.push(0);
    prop_assert!(decode::<T>(&longer, LIMIT).is_err());
    prop_assert!(decode::<T>(&bytes[..bytes.len() - 1], LIMIT).is_err());
    Ok(())
}

fn round_trip_versioned<T>(value: &T) -> Result<(), TestCaseError>
where
    T: Versioned + Serialize + DeserializeOwned + PartialEq + std::fmt::Debug,
{
    round_trip(value)?;
    let mut bytes = encode(value).unwrap();
    prop_assert_eq!(&decode_versioned::<T>(&bytes, LIMIT).unwrap(), value);
    bytes[0] = T::VERSION + 1; // the version byte leads every versioned encoding
    prop_assert!(decode_versioned::<T>(&bytes, LIMIT).is_err());
    Ok(())
}

/// Decoding must return, never panic, on any input; anything it accepts re-encodes to
/// exactly the input.
fn never_panics<T: Serialize + DeserializeOwned>(bytes: &[u8]) -> Result<(), TestCaseError> {
    if let Ok(v) = decode::<T>(bytes, LIMIT) {
        prop_assert_eq!(encode(&v).unwrap(), bytes.to_vec());
    }
    Ok(())
}

fn fuzz_all(bytes: &[u8]) -> Result<(), TestCaseError> {
    never_panics::<Hash32>(bytes)?;
    never_panics::<RecordHeader>(bytes)?;
    never_panics::<Manifest>(bytes)?;
    never_panics::<BatchCommit>(bytes)?;
    never_panics::<SignedBatchCommit>(bytes)?;
    never_panics::<BlockHeader>(bytes)?;
    never_panics::<ErasureReceipt>(bytes)?;
    never_panics::<SignedErasureReceipt>(bytes)?;
    never_panics::<Membership>(bytes)?;
    never_panics::<Transaction>(bytes)?;
    never_panics::<Block>(bytes)?;
    never_panics::<CommitCertificate>(bytes)?;
    never_panics::<VoteBody>(bytes)?;
    never_panics::<Genesis>(bytes)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 500, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn every_type_round_trips(
        rh in record_header(), m in manifest(), bc in batch_commit(), sbc in signed_batch_commit(),
        bh in block_header(), r in receipt(), sr in signed_receipt(), mem in membership(), g in genesis(),
        h in hash(), k in key_id(), pk in public_key(), sig in signature(), tx in transaction(), b in block(), cc in commit_certificate(),
    ) {
        round_trip(&h)?; round_trip(&k)?; round_trip(&pk)?; round_trip(&sig)?;
        round_trip_versioned(&rh)?; round_trip_versioned(&m)?; round_trip_versioned(&bc)?;
        round_trip(&sbc)?; round_trip_versioned(&bh)?; round_trip_versioned(&r)?; round_trip(&sr)?;
        round_trip(&mem)?; round_trip_versioned(&g)?; round_trip(&tx)?; round_trip(&b)?; round_trip_versioned(&cc)?;
    }

    #[test]
    fn decoding_random_bytes_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        fuzz_all(&bytes)?;
    }

    #[test]
    fn decoding_mutated_encodings_never_panics(g in genesis(), bh in block_header(), at in any::<usize>(), byte in any::<u8>()) {
        for mut bytes in [encode(&g).unwrap(), encode(&bh).unwrap()] {
            let i = at % bytes.len();
            bytes[i] = byte;
            fuzz_all(&bytes)?;
            bytes.truncate(i);
            fuzz_all(&bytes)?;
        }
    }
}

#[test]
fn a_huge_length_prefix_is_refused_without_allocating() {
    // A vector claiming 2^35 elements in 6 bytes must fail fast, not allocate.
    let bytes = [0x80, 0x80, 0x80, 0x80, 0x80, 0x01];
    assert!(decode::<Vec<Hash32>>(&bytes, LIMIT).is_err());
}
