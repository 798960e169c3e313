//! A regulator's offline checks with the real `cairn` binary: certified blocks and log
//! consistency verify from the genesis file alone, and altered documents are refused
//! with a specific reason.

// Test code: a failed expectation ends the test with a panic.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

mod common;

use cairn_proto::Hash32;
use cairn_proto::consensus::CertifiedBlock;
use cairn_proto::transaction::Transaction;
use cairn_tests::{run, run_ok};
use common::{certify, chain, header, write_json};

#[test]
fn certified_blocks_and_log_consistency_verify_from_the_genesis_alone() {
    let c = chain(5);
    let dir = tempfile::tempdir().unwrap();
    let g = dir.path().join("genesis.toml");
    std::fs::write(&g, c.genesis.to_toml().unwrap()).unwrap();
    let g = g.display().to_string();

    let block = write_json(dir.path(), "block3.json", &c.blocks[2]);
    let out = run_ok("cairn", &["verify-block", "--genesis", &g, &block]);
    assert!(out.contains("header of height 3 is certified: 3 of 4"), "{out}");
    assert!(out.contains("its 2 transactions hash to the header's body hash"), "{out}");
    assert!(out.contains("not established"), "{out}");

    let (old, new) = (header(&c.blocks[1]), header(&c.blocks[4]));
    let proof: Vec<Hash32> =
        c.state.log_consistency(old.header.log_size, new.header.log_size).unwrap().into_iter().map(Hash32).collect();
    let (o, n, p) = (
        write_json(dir.path(), "old.json", &old),
        write_json(dir.path(), "new.json", &new),
        write_json(dir.path(), "proof.json", &proof),
    );
    let out = run_ok("cairn", &["verify-consistency", "--genesis", &g, "--old", &o, "--new", &n, "--proof", &p]);
    assert!(out.contains("the log of 4 batch roots at height 2 is a prefix of the log of 10 at height 5"), "{out}");
}

#[test]
fn altered_documents_are_refused_with_the_reason() {
    let c = chain(3);
    let dir = tempfile::tempdir().unwrap();
    let g = dir.path().join("genesis.toml");
    std::fs::write(&g, c.genesis.to_toml().unwrap()).unwrap();
    let g = g.display().to_string();
    let refuse = |cb: &CertifiedBlock, name: &str, reason: &str| {
        let file = write_json(dir.path(), name, cb);
        let out = run("cairn", &["verify-block", "--genesis", &g, &file]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{name} was accepted");
        assert!(stderr.contains(reason), "{name}: expected {reason:?} in {stderr}");
    };
    let mut b = c.blocks[1].clone();
    b.block.transactions.pop();
    refuse(&b, "fewer-txs.json", "do not match the header's body hash");
    let mut b = c.blocks[1].clone();
    b.block.header.time_ms += 1;
    refuse(&b, "retimed.json", "not the block in question");
    let mut b = c.blocks[1].clone();
    b.certificate.signatures[0].1.0[10] ^= 1;
    refuse(&b, "bad-signature.json", "does not verify");
    let mut b = c.blocks[1].clone();
    b.certificate = certify(&c.genesis, &b.block, 2);
    refuse(&b, "two-signers.json", "more than two thirds is needed");
    let mut b = c.blocks[1].clone();
    b.certificate.signatures.swap(0, 1);
    refuse(&b, "unordered.json", "distinct and ascending");

    // A consistency proof for the wrong sizes is refused.
    let (old, new) = (header(&c.blocks[0]), header(&c.blocks[2]));
    let wrong: Vec<Hash32> = c.state.log_consistency(1, new.header.log_size).unwrap().into_iter().map(Hash32).collect();
    let (o, n, p) = (
        write_json(dir.path(), "o.json", &old),
        write_json(dir.path(), "n.json", &new),
        write_json(dir.path(), "p.json", &wrong),
    );
    let out = run("cairn", &["verify-consistency", "--genesis", &g, "--old", &o, "--new", &n, "--proof", &p]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("proof"), "{}", String::from_utf8_lossy(&out.stderr));
    // Checkpoints given in the wrong order are refused.
    let out = run("cairn", &["verify-consistency", "--genesis", &g, "--old", &n, "--new", &o, "--proof", &p]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("is not after"));
}

#[test]
fn a_batch_commitment_is_proven_to_be_in_the_certified_log() {
    use cairn_client::verify::{VerifyError, verify_batch_in_log};
    let c = chain(4);
    let checkpoint = header(&c.blocks[3]);
    let size = checkpoint.header.log_size;
    // Batch commitment 2*1+1 = 3 (block 2's second transaction) is log entry 3.
    let Transaction::BatchCommit(signed) = &c.blocks[1].block.transactions[1] else { panic!() };
    let proof: Vec<Hash32> = c.state.log_inclusion(3, size).unwrap().into_iter().map(Hash32).collect();
    let checks = verify_batch_in_log(&c.genesis, &checkpoint, &signed.body, 3, &proof).unwrap();
    assert!(checks.last().unwrap().contains("is entry 3 of that log of 8 batch roots"), "{checks:?}");
    // Another index, another root, or a forged checkpoint does not verify.
    assert!(matches!(
        verify_batch_in_log(&c.genesis, &checkpoint, &signed.body, 2, &proof),
        Err(VerifyError::Proof(_))
    ));
    let mut other = signed.body.clone();
    other.root = Hash32([0xee; 32]);
    assert!(matches!(verify_batch_in_log(&c.genesis, &checkpoint, &other, 3, &proof), Err(VerifyError::Proof(_))));
    let mut forged = checkpoint.clone();
    forged.header.log_size += 1;
    assert!(matches!(
        verify_batch_in_log(&c.genesis, &forged, &signed.body, 3, &proof),
        Err(VerifyError::Certificate { height: 4, .. })
    ));
}
