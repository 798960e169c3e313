//! Properties of the production (BLAKE3) Merkle tree: every proof of every tree up to
//! 1000 leaves verifies, and a single flipped bit in a proof, root, index or size is
//! refused, except for the size ambiguity that RFC 9162 proofs carry by design (see
//! `size_flips_are_refused_unless_the_path_shape_is_the_same`).

// Test code: a failed expectation ends the test with a panic.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use cairn_proto::merkle::{Blake3Merkle, Digest, MerkleHasher, Tree, verify_consistency, verify_inclusion};
use proptest::prelude::*;

const MAX: u64 = 1000;

fn tree(n: u64) -> Tree<'static, Blake3Merkle> {
    let mut t = Tree::new(&Blake3Merkle);
    for i in 0..n {
        t.push(Blake3Merkle.hash_leaf(&i.to_le_bytes()));
    }
    t
}

fn leaf(i: u64) -> Digest {
    Blake3Merkle.hash_leaf(&i.to_le_bytes())
}

#[test]
fn every_inclusion_proof_of_every_size_up_to_1000_verifies() {
    let t = tree(MAX);
    let mut checked = 0u64;
    for size in 1..=MAX {
        let root = t.root_at(size).unwrap();
        for index in 0..size {
            let proof = t.inclusion_proof(index, size).unwrap();
            verify_inclusion(&Blake3Merkle, index, size, &leaf(index), &proof, &root)
                .unwrap_or_else(|e| panic!("leaf {index} of {size}: {e}"));
            checked += 1;
        }
    }
    assert_eq!(checked, MAX * (MAX + 1) / 2);
    println!("verified {checked} inclusion proofs");
}

#[test]
fn every_consistency_proof_between_sizes_up_to_1000_verifies() {
    let t = tree(MAX);
    let roots: Vec<Digest> = (0..=MAX).map(|n| t.root_at(n).unwrap()).collect();
    let mut checked = 0u64;
    for size2 in 1..=MAX {
        for size1 in 1..=size2 {
            let proof = t.consistency_proof(size1, size2).unwrap();
            verify_consistency(&Blake3Merkle, size1, size2, &roots[size1 as usize], &roots[size2 as usize], &proof)
                .unwrap_or_else(|e| panic!("{size1} -> {size2}: {e}"));
            checked += 1;
        }
    }
    assert_eq!(checked, MAX * (MAX + 1) / 2);
    println!("verified {checked} consistency proofs");
}

fn flip(d: &Digest, bit: usize) -> Digest {
    let mut d = *d;
    d[bit / 8] ^= 1 << (bit % 8);
    d
}

/// The turns a leaf's path takes from the root down (true = the leaf is in the right
/// subtree), from the RFC's recursive definition: what the verifier can see of a size.
fn turns(index: u64, size: u64) -> Vec<bool> {
    let (mut lo, mut hi, mut out) = (0u64, size, Vec::new());
    while hi - lo > 1 {
        let k = 1u64 << (63 - (hi - lo - 1).leading_zeros());
        out.push(index >= lo + k);
        if index < lo + k { hi = lo + k } else { lo += k }
    }
    out
}

#[test]
fn every_flipped_bit_of_small_trees_is_refused() {
    // Exhaustive below 64 leaves: every index, every proof bit, the root, the index.
    let t = tree(64);
    for size in 1..=64 {
        let root = t.root_at(size).unwrap();
        for index in 0..size {
            let proof = t.inclusion_proof(index, size).unwrap();
            for (p, bit) in (0..proof.len()).flat_map(|p| (0..256).map(move |b| (p, b))) {
                let mut bad = proof.clone();
                bad[p] = flip(&bad[p], bit);
                assert!(verify_inclusion(&Blake3Merkle, index, size, &leaf(index), &bad, &root).is_err());
            }
            for bit in 0..256 {
                assert!(verify_inclusion(&Blake3Merkle, index, size, &leaf(index), &proof, &flip(&root, bit)).is_err());
                assert!(verify_inclusion(&Blake3Merkle, index, size, &flip(&leaf(index), bit), &proof, &root).is_err());
            }
            for bit in 0..64 {
                let other = index ^ (1 << bit);
                assert!(verify_inclusion(&Blake3Merkle, other, size, &leaf(index), &proof, &root).is_err());
            }
        }
        for size1 in 1..size {
            let proof = t.consistency_proof(size1, size).unwrap();
            let (r1, r2) = (t.root_at(size1).unwrap(), root);
            for (p, bit) in (0..proof.len()).flat_map(|p| (0..256).map(move |b| (p, b))) {
                let mut bad = proof.clone();
                bad[p] = flip(&bad[p], bit);
                assert!(verify_consistency(&Blake3Merkle, size1, size, &r1, &r2, &bad).is_err());
            }
            for bit in 0..256 {
                assert!(verify_consistency(&Blake3Merkle, size1, size, &flip(&r1, bit), &r2, &proof).is_err());
                assert!(verify_consistency(&Blake3Merkle, size1, size, &r1, &flip(&r2, bit), &proof).is_err());
            }
        }
    }
}

#[test]
fn size_flips_are_refused_unless_the_path_shape_is_the_same() {
    // RFC 9162 inclusion proofs do not bind the tree size: a size with the same path
    // shape computes the same root. cairn only checks proofs against a size and root
    // taken together from one signed or certified header, which is what binds the size.
    let t = tree(256);
    let (mut refused, mut same_shape) = (0, 0);
    for size in 1..=256u64 {
        let root = t.root_at(size).unwrap();
        for index in 0..size {
            let proof = t.inclusion_proof(index, size).unwrap();
            for bit in 0..64 {
                let other = size ^ (1 << bit);
                let accepted = verify_inclusion(&Blake3Merkle, index, other, &leaf(index), &proof, &root).is_ok();
                let shape_same = index < other && turns(index, other) == turns(index, size);
                assert_eq!(accepted, shape_same, "leaf {index}, size {size} -> {other}");
                if accepted { same_shape += 1 } else { refused += 1 }
            }
        }
    }
    println!("size flips: {refused} refused, {same_shape} accepted with an identical path shape");
    assert!(refused > same_shape);
}

/// The decisions of the RFC's SUBPROOF recursion for sizes `m <= n`: which subtree it
/// descends into, and whether it stops on a complete left subtree.
fn consistency_shape(m: u64, n: u64) -> Vec<u8> {
    let (mut lo, mut hi, mut whole, mut out) = (0u64, n, true, Vec::new());
    loop {
        if m == hi {
            out.push(if whole { 2 } else { 3 });
            return out;
        }
        let k = 1u64 << (63 - (hi - lo - 1).leading_zeros());
        if m <= lo + k {
            out.push(0);
            hi = lo + k;
        } else {
            out.push(1);
            lo += k;
            whole = false;
        }
    }
}

#[test]
fn consistency_size_flips_are_refused_unless_the_shape_is_the_same() {
    let t = tree(128);
    let (mut refused, mut same_shape) = (0, 0);
    for size2 in 2..=128u64 {
        for size1 in 1..size2 {
            let proof = t.consistency_proof(size1, size2).unwrap();
            let (r1, r2) = (t.root_at(size1).unwrap(), t.root_at(size2).unwrap());
            let shape = consistency_shape(size1, size2);
            for bit in 0..64 {
                for (s1, s2) in [(size1 ^ (1 << bit), size2), (size1, size2 ^ (1 << bit))] {
                    let accepted = verify_consistency(&Blake3Merkle, s1, s2, &r1, &r2, &proof).is_ok();
                    let shape_same = 0 < s1 && s1 < s2 && consistency_shape(s1, s2) == shape;
                    assert_eq!(accepted, shape_same, "{size1} -> {size2} claimed as {s1} -> {s2}");
                    if accepted { same_shape += 1 } else { refused += 1 }
                }
            }
        }
    }
    println!("consistency size flips: {refused} refused, {same_shape} accepted with an identical shape");
    assert!(refused > same_shape);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn random_flips_in_large_trees_are_refused(
        size in 2u64..=MAX, pick in any::<u64>(), p in any::<usize>(), bit in 0usize..256,
    ) {
        let t = tree(size);
        let root = t.root();
        let index = pick % size;
        let mut proof = t.inclusion_proof(index, size).unwrap();
        if !proof.is_empty() {
            let at = p % proof.len();
            proof[at] = flip(&proof[at], bit);
            prop_assert!(verify_inclusion(&Blake3Merkle, index, size, &leaf(index), &proof, &root).is_err());
        }
        let size1 = 1 + pick % (size - 1);
        let mut proof = t.consistency_proof(size1, size).unwrap();
        let at = p % proof.len();
        proof[at] = flip(&proof[at], bit);
        prop_assert!(verify_consistency(&Blake3Merkle, size1, size, &t.root_at(size1).unwrap(), &root, &proof).is_err());
    }
}
