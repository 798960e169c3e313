//! Ledger state tests: blocks built by one node and applied by another agree; invalid
//! transactions and blocks are refused and change nothing.

// Test code: a failed expectation ends the test with a panic.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use cairn_proto::genesis::Genesis;
use cairn_proto::ledger::{BatchCommit, BatchKind};
use cairn_proto::membership::{Membership, Organisation, Role, Validator};
use cairn_proto::merkle::{Blake3Merkle, verify_consistency, verify_inclusion};
use cairn_proto::signed::SignedBody as _;
use cairn_proto::transaction::{MembershipChange, MembershipChangeBody, Transaction};
use cairn_proto::{Hash32, Keypair, SecretSeed};

use super::state::log_leaf;
use super::{BlockError, LedgerLimits, LedgerState, TxError};

struct Net {
    genesis: Genesis,
    validators: Vec<Keypair>,
    admin: Keypair,
}

fn key(b: u8) -> Keypair {
    Keypair::from_seed(&SecretSeed::from_bytes([b; 32]))
}

fn net() -> Net {
    let validators: Vec<_> = (1..=4).map(key).collect();
    let admin = key(10);
    let genesis = Genesis {
        version: 2,
        policy: cairn_proto::policy::PurposePolicy::public_service(2),
        chain_id: "test".into(),
        genesis_time_ms: 1_000,
        membership: Membership {
            organisations: vec![
                Organisation { name: "city".into(), admin_keys: vec![admin.public()] },
                Organisation { name: "hospital".into(), admin_keys: vec![key(11).public()] },
            ],
            validators: validators
                .iter()
                .map(|v| Validator { organisation: "city".into(), public_key: v.public(), voting_power: 1 })
                .collect(),
            members: vec![],
        },
    };
    genesis.validate().unwrap();
    Net { genesis, validators, admin }
}

fn batch(node: &Keypair, seq: u64, root: u8) -> Transaction {
    let commit = BatchCommit {
        version: 1,
        kind: BatchKind::Anchors,
        node: node.public().key_id(),
        root: Hash32([root; 32]),
        size: 64,
        seq,
    };
    Transaction::BatchCommit(commit.sign(node).unwrap())
}

fn register(net: &Net, nonce: u64, who: &Keypair) -> Transaction {
    let body = MembershipChangeBody {
        version: 1,
        chain: net.genesis.hash().unwrap(),
        admin: net.admin.public().key_id(),
        nonce,
        change: MembershipChange::Register { role: Role::Gateway, public_key: who.public() },
    };
    Transaction::Membership(body.sign(&net.admin).unwrap())
}

fn state(net: &Net) -> LedgerState {
    LedgerState::from_genesis(&net.genesis, LedgerLimits::default()).unwrap()
}

#[test]
fn a_block_built_by_one_node_applies_identically_on_another() {
    let net = net();
    let (mut a, mut b) = (state(&net), state(&net));
    let proposer = net.validators[0].public().key_id();
    let txs = vec![batch(&net.validators[0], 0, 1), batch(&net.validators[1], 0, 2), register(&net, 0, &key(20))];
    let (block, rejected) = a.propose(txs, 2_000, proposer).unwrap();
    assert!(rejected.is_empty());
    assert_eq!(block.header.log_size, 2);
    b.validate(&block).unwrap();
    a.apply(&block).unwrap();
    b.apply(&block).unwrap();
    assert_eq!((a.height(), a.last_hash(), a.log_root()), (b.height(), b.last_hash(), b.log_root()));
    assert_eq!(b.membership().members.len(), 1);

    // The second batch commitment is provably in the log the header names.
    let Transaction::BatchCommit(second) = &block.transactions[1] else { panic!() };
    let proof = b.log_inclusion(1, 2).unwrap();
    verify_inclusion(&Blake3Merkle, 1, 2, &log_leaf(&second.body).unwrap(), &proof, &block.header.log_root.0).unwrap();

    // A later block extends the log consistently.
    let (block2, _) = b.propose(vec![batch(&net.validators[0], 1, 3)], 3_000, proposer).unwrap();
    b.apply(&block2).unwrap();
    let proof = b.log_consistency(2, 3).unwrap();
    verify_consistency(&Blake3Merkle, 2, 3, &block.header.log_root.0, &block2.header.log_root.0, &proof).unwrap();
    assert_eq!(block2.header.prev_hash, block.header.hash().unwrap());
}

#[test]
fn duplicates_replays_gaps_strangers_and_forgeries_are_refused() {
    let net = net();
    let mut s = state(&net);
    let v0 = &net.validators[0];
    let proposer = v0.public().key_id();
    let stranger = key(99);
    let mut forged = batch(v0, 0, 7);
    if let Transaction::BatchCommit(c) = &mut forged {
        c.body.root = Hash32([8; 32]);
    }
    let candidates = vec![
        batch(v0, 0, 1),
        batch(v0, 0, 1),        // duplicate
        batch(v0, 5, 1),        // gap
        batch(&stranger, 0, 1), // not in genesis
        forged,                 // signature no longer matches
    ];
    let (block, rejected) = s.propose(candidates, 2_000, proposer).unwrap();
    assert_eq!(block.transactions.len(), 1);
    let reasons: Vec<_> = rejected.iter().map(|(_, e)| e.clone()).collect();
    assert!(matches!(reasons[0], TxError::Stale { expected: 1, got: 0 }));
    assert!(matches!(reasons[1], TxError::Gap { expected: 1, got: 5 }));
    assert!(matches!(reasons[2], TxError::UnknownNode(_)));
    assert!(matches!(reasons[3], TxError::BadSignature(_)));
    s.apply(&block).unwrap();
    // Replaying the applied transaction later is stale.
    assert!(matches!(s.check_tx(&batch(v0, 0, 1)), Err(TxError::Stale { .. })));
    s.check_tx(&batch(v0, 1, 1)).unwrap();
}

#[test]
fn membership_changes_need_the_right_admin_nonce_and_chain() {
    let net = net();
    let mut s = state(&net);
    let proposer = net.validators[0].public().key_id();
    let gw = key(30);
    let (block, rejected) =
        s.propose(vec![register(&net, 0, &gw), register(&net, 0, &key(31))], 2_000, proposer).unwrap();
    assert!(matches!(rejected[0].1, TxError::Stale { .. }), "nonce reused");
    s.apply(&block).unwrap();
    assert_eq!(s.membership().members[0].organisation, "city");
    assert!(matches!(s.check_tx(&register(&net, 1, &gw)), Err(TxError::BadKey(_))), "key already registered");
    assert!(matches!(s.check_tx(&register(&net, 1, &net.validators[2])), Err(TxError::BadKey(_))));
    // An admin of another organisation cannot revoke the city's gateway.
    let other = key(11);
    let body = MembershipChangeBody {
        version: 1,
        chain: net.genesis.hash().unwrap(),
        admin: other.public().key_id(),
        nonce: 0,
        change: MembershipChange::Revoke { public_key: gw.public() },
    };
    let tx = Transaction::Membership(body.clone().sign(&other).unwrap());
    assert!(matches!(s.check_tx(&tx), Err(TxError::NotAMember(_))));
    let mut wrong_chain = body;
    wrong_chain.chain = Hash32([1; 32]);
    assert_eq!(s.check_tx(&Transaction::Membership(wrong_chain.sign(&other).unwrap())), Err(TxError::WrongChain));
    // A stranger is not an admin.
    let stranger = key(98);
    let body = MembershipChangeBody {
        version: 1,
        chain: net.genesis.hash().unwrap(),
        admin: stranger.public().key_id(),
        nonce: 0,
        change: MembershipChange::Register { role: Role::Regulator, public_key: key(40).public() },
    };
    assert!(matches!(
        s.check_tx(&Transaction::Membership(body.sign(&stranger).unwrap())),
        Err(TxError::UnknownAdmin(_))
    ));
    // The city admin revokes its gateway.
    let body = MembershipChangeBody {
        version: 1,
        chain: net.genesis.hash().unwrap(),
        admin: net.admin.public().key_id(),
        nonce: 1,
        change: MembershipChange::Revoke { public_key: gw.public() },
    };
    let (block, rejected) =
        s.propose(vec![Transaction::Membership(body.sign(&net.admin).unwrap())], 3_000, proposer).unwrap();
    assert!(rejected.is_empty());
    s.apply(&block).unwrap();
    assert!(s.membership().members.is_empty());
}

#[test]
fn the_purpose_policy_changes_only_with_a_quorum_of_organisations_committed_in_order() {
    use cairn_proto::policy::{PolicyChange, PolicyChangeBody, PolicyError};
    let net = net();
    let mut s = state(&net);
    let proposer = net.validators[0].public().key_id();
    let body = |v: u64, purposes: &[&str]| PolicyChangeBody {
        version: 1,
        chain: net.genesis.hash().unwrap(),
        policy_version: v,
        purposes: purposes.iter().map(|p| p.to_string()).collect(),
    };
    // One organisation of two: short of the quorum (a majority of 2 is 2).
    let one = PolicyChange::sign(body(1, &["PUBHLTH", "TREAT"]), &[&net.admin]).unwrap();
    assert_eq!(
        s.check_tx(&Transaction::PolicyChange(one)),
        Err(TxError::Policy(PolicyError::Quorum { signed: 1, needed: 2 }))
    );
    let both = PolicyChange::sign(body(1, &["PUBHLTH", "TREAT"]), &[&net.admin, &key(11)]).unwrap();
    let (block, rejected) = s.propose(vec![Transaction::PolicyChange(both.clone())], 2_000, proposer).unwrap();
    assert!(rejected.is_empty());
    s.apply(&block).unwrap();
    let (policy, version) = s.policy();
    assert_eq!((policy.purposes.clone(), version), (vec!["PUBHLTH".to_string(), "TREAT".to_string()], 1));
    assert!(!policy.permits("CAREMGT"), "the new list replaces the old one");
    // The same change again is a replay of version 1.
    assert!(matches!(s.check_tx(&Transaction::PolicyChange(both)), Err(TxError::Policy(PolicyError::Invalid(_)))));
}

#[test]
fn tampered_blocks_are_refused_and_change_nothing() {
    let net = net();
    let mut s = state(&net);
    let proposer = net.validators[0].public().key_id();
    let (good, _) = s.propose(vec![batch(&net.validators[0], 0, 1)], 2_000, proposer).unwrap();
    let mut cases = Vec::new();
    let mut b = good.clone();
    b.header.height = 2;
    cases.push((b, "height"));
    let mut b = good.clone();
    b.header.prev_hash = Hash32([0; 32]);
    cases.push((b, "previous"));
    let mut b = good.clone();
    b.header.log_root = Hash32([0; 32]);
    cases.push((b, "log"));
    let mut b = good.clone();
    b.transactions.push(batch(&net.validators[1], 0, 2));
    cases.push((b, "body"));
    let mut b = good.clone();
    b.header.proposer = key(99).public().key_id();
    cases.push((b, "proposer"));
    let mut b = good.clone();
    b.header.time_ms = 10;
    cases.push((b, "time"));
    let mut b = good.clone();
    b.header.chain = Hash32([3; 32]);
    cases.push((b, "chain"));
    for (bad, what) in cases {
        let err = s.apply(&bad).unwrap_err();
        let expected = match what {
            "height" => matches!(err, BlockError::WrongHeight { .. }),
            "previous" => matches!(err, BlockError::WrongPrevious(0)),
            "log" => matches!(err, BlockError::WrongLog),
            "body" => matches!(err, BlockError::WrongBody),
            "proposer" => matches!(err, BlockError::UnknownProposer(_)),
            "time" => matches!(err, BlockError::TimeBackwards { .. }),
            _ => matches!(err, BlockError::WrongChain),
        };
        assert!(expected, "{what}: {err}");
        assert_eq!((s.height(), s.log_size()), (0, 0), "{what}: state changed");
    }
    s.apply(&good).unwrap();
    assert_eq!((s.height(), s.log_size()), (1, 1));
}

#[test]
fn a_block_over_the_limits_is_refused_and_proposals_respect_them() {
    let net = net();
    let limits = LedgerLimits { max_block_txs: 2, max_block_bytes: 1 << 20 };
    let mut s = LedgerState::from_genesis(&net.genesis, limits).unwrap();
    let v = &net.validators[0];
    let proposer = v.public().key_id();
    let (block, _) = s.propose((0..5).map(|i| batch(v, i, 1)).collect(), 2_000, proposer).unwrap();
    assert_eq!(block.transactions.len(), 2, "the rest waits for the next block");
    let mut unlimited = LedgerState::from_genesis(&net.genesis, LedgerLimits::default()).unwrap();
    let (big, _) = unlimited.propose((0..3).map(|i| batch(v, i, 1)).collect(), 2_000, proposer).unwrap();
    assert!(matches!(s.apply(&big), Err(BlockError::TooLarge(_))));
}

mod store {
    use cairn_proto::encoding::{decode, encode};
    use cairn_proto::hash::domain;
    use cairn_proto::transaction::Block;
    use cairn_proto::{PublicKey, Signature};

    use super::*;
    use crate::ledger::{BlockStore, StoreError};

    /// Stand-in for a commit certificate until the consensus engine provides one: every
    /// validator's signature over the header hash. `replay` takes the verifier as an
    /// argument precisely so the engine's certificate check slots in.
    fn certify(net: &Net, block: &Block) -> Vec<u8> {
        let hash = block.header.hash().unwrap();
        let sigs: Vec<(PublicKey, Signature)> =
            net.validators.iter().map(|v| (v.public(), v.sign(domain::SIG_CHALLENGE, &hash.0))).collect();
        encode(&sigs).unwrap()
    }

    /// A stored certificate was checked before it was stored, so every signature in it
    /// must verify (one bad signature means the store was changed), and they must make
    /// a quorum.
    fn verify(state: &LedgerState, block: &Block, cert: &[u8]) -> Result<(), String> {
        let sigs: Vec<(PublicKey, Signature)> = decode(cert, 1 << 16).map_err(|e| e.to_string())?;
        let hash = block.header.hash().map_err(|e| e.to_string())?;
        for (i, (k, s)) in sigs.iter().enumerate() {
            if !state.membership().validators.iter().any(|v| v.public_key == *k) {
                return Err(format!("signature {i} is not a validator's"));
            }
            k.verify(domain::SIG_CHALLENGE, &hash.0, s).map_err(|e| format!("signature {i}: {e}"))?;
        }
        if sigs.len() * 3 > state.membership().validators.len() * 2 { Ok(()) } else { Err("no quorum".into()) }
    }

    fn chain(net: &Net, store: &BlockStore, blocks: u64) -> LedgerState {
        let mut s = state(net);
        let v = &net.validators[0];
        for h in 0..blocks {
            let (block, _) = s.propose(vec![batch(v, h, h as u8)], 2_000 + h, v.public().key_id()).unwrap();
            s.apply(&block).unwrap();
            store.append(&block, &certify(net, &block)).unwrap();
        }
        s
    }

    #[test]
    fn replay_rebuilds_the_same_state_after_reopening() {
        let net = net();
        let dir = tempfile::tempdir().unwrap();
        let live = {
            let store = BlockStore::open(&dir.path().join("blocks.redb")).unwrap();
            chain(&net, &store, 5)
        };
        let store = BlockStore::open(&dir.path().join("blocks.redb")).unwrap();
        assert_eq!(store.last_height().unwrap(), 5);
        let replayed = store.replay(&net.genesis, LedgerLimits::default(), verify).unwrap();
        assert_eq!(
            (replayed.height(), replayed.last_hash(), replayed.log_root()),
            (5, live.last_hash(), live.log_root())
        );
        let (block, _) = store.get(6).unwrap().map_or((None, ()), |b| (Some(b), ()));
        assert!(block.is_none());
        let (three, _) = store.get(3).unwrap().unwrap();
        assert!(matches!(store.append(&three, &[]), Err(StoreError::OutOfOrder { expected: 6, got: 3 })));
    }

    #[test]
    fn one_changed_byte_is_refused_naming_the_height() {
        let net = net();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("blocks.redb");
        {
            let store = BlockStore::open(&path).unwrap();
            chain(&net, &store, 5);
        }
        let len = {
            let store = BlockStore::open(&path).unwrap();
            let (b, c) = store.get(3).unwrap().unwrap();
            encode(&(1u8, b, serde_bytes::ByteBuf::from(c))).unwrap().len()
        };
        // Every single byte of block 3's stored form, flipped in turn.
        let mut refused = 0;
        for at in 0..len {
            let copy = tempfile::tempdir().unwrap();
            std::fs::copy(&path, copy.path().join("b.redb")).unwrap();
            let store = BlockStore::open(&copy.path().join("b.redb")).unwrap();
            store.overwrite_raw(3, |bytes| bytes[at] ^= 0x01);
            match store.replay(&net.genesis, LedgerLimits::default(), verify) {
                Err(StoreError::Corrupt { height: 3, reason }) => {
                    assert!(!reason.is_empty());
                    refused += 1;
                }
                other => panic!("byte {at}: {other:?}"),
            }
        }
        println!("{refused} of {len} single-byte changes to block 3 refused, each naming height 3");
        assert_eq!(refused, len);
    }
}

#[test]
fn a_batch_signature_is_verified_once_and_a_forged_copy_still_fails() {
    let net = net();
    let mut s = state(&net);
    let v0 = &net.validators[0];
    let tx = batch(v0, 0, 1);
    // Mempool admission, the re-check after a block, proposal, validation and apply.
    s.check_tx(&tx).unwrap();
    s.check_tx(&tx).unwrap();
    let (block, rejected) = s.propose(vec![tx.clone()], 2_000, v0.public().key_id()).unwrap();
    assert!(rejected.is_empty());
    s.validate(&block).unwrap();
    s.apply(&block).unwrap();
    assert_eq!(s.signature_checks(), 1, "the same signed commitment is verified once");

    // Same body, another signature; and the same signed bytes under another node's id.
    let next = batch(v0, 1, 2);
    let mut forged = next.clone();
    if let Transaction::BatchCommit(c) = &mut forged {
        c.signature = cairn_proto::Signature([7; 64]);
    }
    assert!(matches!(s.check_tx(&forged), Err(TxError::BadSignature(_))));
    assert!(matches!(s.check_tx(&forged), Err(TxError::BadSignature(_))), "a failure is not remembered as a success");
    let mut renamed = next.clone();
    if let Transaction::BatchCommit(c) = &mut renamed {
        c.body.node = net.validators[1].public().key_id();
    }
    assert!(matches!(s.check_tx(&renamed), Err(TxError::BadSignature(_))));
    s.check_tx(&next).unwrap();
    assert_eq!(s.signature_checks(), 5);
}

#[test]
fn a_refused_transaction_in_a_proposal_leaves_the_book_for_the_next() {
    let net = net();
    let mut s = state(&net);
    let v0 = &net.validators[0];
    let mut forged = batch(v0, 1, 2);
    if let Transaction::BatchCommit(c) = &mut forged {
        c.body.root = Hash32([9; 32]);
    }
    let candidates = vec![
        register(&net, 0, &key(20)),
        register(&net, 1, &key(20)), // key already in use: refused, nonce 1 stays free
        register(&net, 1, &key(21)),
        batch(v0, 0, 1),
        forged, // bad signature: refused, sequence 1 stays free
        batch(v0, 1, 3),
    ];
    let (block, rejected) = s.propose(candidates, 2_000, v0.public().key_id()).unwrap();
    let reasons: Vec<_> = rejected.iter().map(|(_, e)| e.clone()).collect();
    assert!(matches!(reasons[..], [TxError::BadKey(_), TxError::BadSignature(_)]), "{reasons:?}");
    assert_eq!(block.transactions.len(), 4);
    s.apply(&block).unwrap();
    assert_eq!(s.membership().members.len(), 2);
    assert_eq!(
        (s.next_admin_nonce(&net.admin.public().key_id()), s.next_batch_seq(&v0.public().key_id(), BatchKind::Anchors)),
        (2, 2)
    );
}
