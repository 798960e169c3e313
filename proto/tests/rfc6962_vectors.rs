//! The published RFC 6962 / RFC 9162 proof vectors (transparency-dev, SHA-256) against
//! cairn's generic verifier. Every case must give its expected verdict.

// Test code: a failed expectation ends the test with a panic.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use std::path::{Path, PathBuf};

use base64::Engine as _;
use cairn_proto::merkle::{MerkleHasher, verify_consistency, verify_inclusion};
use sha2::Digest as _;

/// SHA-256 in the RFC 6962 shape. Digests are byte vectors so that malformed hashes in
/// the vectors (wrong lengths) reach the verifier and are refused there.
struct Sha256Merkle;

impl MerkleHasher for Sha256Merkle {
    type Digest = Vec<u8>;
    fn hash_leaf(&self, data: &[u8]) -> Vec<u8> {
        sha2::Sha256::new().chain_update([0u8]).chain_update(data).finalize().to_vec()
    }
    fn hash_children(&self, l: &Vec<u8>, r: &Vec<u8>) -> Vec<u8> {
        sha2::Sha256::new().chain_update([1u8]).chain_update(l).chain_update(r).finalize().to_vec()
    }
    fn hash_empty(&self) -> Vec<u8> {
        sha2::Sha256::digest(b"").to_vec()
    }
    fn is_well_formed(&self, digest: &Vec<u8>) -> bool {
        digest.len() == 32
    }
}

fn files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files(&path, out);
        } else if path.extension().is_some_and(|e| e == "json") {
            out.push(path);
        }
    }
}

fn b64(v: &serde_json::Value) -> Vec<u8> {
    base64::engine::general_purpose::STANDARD.decode(v.as_str().unwrap_or_default()).unwrap()
}

fn proof(v: &serde_json::Value) -> Vec<Vec<u8>> {
    v.as_array().map_or(vec![], |items| items.iter().map(b64).collect())
}

fn inclusion_ok(case: &serde_json::Value) -> bool {
    let (leaf, root, proof) = (b64(&case["leafHash"]), b64(&case["root"]), proof(&case["proof"]));
    let index = case["leafIdx"].as_u64().unwrap();
    let size = case["treeSize"].as_u64().unwrap();
    verify_inclusion(&Sha256Merkle, index, size, &leaf, &proof, &root).is_ok()
}

fn consistency_ok(case: &serde_json::Value) -> bool {
    let (root1, root2, proof) = (b64(&case["root1"]), b64(&case["root2"]), proof(&case["proof"]));
    let size1 = case["size1"].as_u64().unwrap();
    let size2 = case["size2"].as_u64().unwrap();
    verify_consistency(&Sha256Merkle, size1, size2, &root1, &root2, &proof).is_ok()
}

fn run(kind: &str, check: fn(&serde_json::Value) -> bool) -> (usize, usize) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/vectors/rfc6962").join(kind);
    let mut paths = Vec::new();
    files(&dir, &mut paths);
    paths.sort();
    let mut wrong = Vec::new();
    let mut expected_errors = 0;
    for path in &paths {
        let case: serde_json::Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
        let want_err = case["wantErr"].as_bool().unwrap();
        expected_errors += usize::from(want_err);
        if check(&case) == want_err {
            wrong.push(path.display().to_string());
        }
    }
    assert!(wrong.is_empty(), "wrong verdict on {} {kind} cases: {wrong:#?}", wrong.len());
    (paths.len(), expected_errors)
}

#[test]
fn every_published_case_gets_its_expected_verdict() {
    let (inc, inc_err) = run("inclusion", inclusion_ok);
    let (con, con_err) = run("consistency", consistency_ok);
    println!(
        "RFC 6962 vectors: {inc} inclusion cases ({inc_err} must fail), {con} consistency cases ({con_err} must fail), all verdicts as expected"
    );
    // The published set holds 98 + 98 cases; fewer means files went missing.
    assert_eq!((inc, con), (98, 98), "vector set is incomplete");
    assert!(inc_err < inc && con_err < con, "the set must hold cases that pass too");
}
