//! Merkle trees in the RFC 6962 / RFC 9162 shape: leaf prefix `0x00`, node prefix `0x01`,
//! left-balanced for any size. Generic over the hash so the published SHA-256 vectors
//! check the same code that production runs with BLAKE3.
//!
//! A proof is only as good as the `(size, root)` pair it is checked against: the RFC
//! algorithm does not bind the size by itself (for some index/size pairs another size
//! gives the same path shape). cairn therefore only verifies against a size and root
//! taken together from one signed batch commitment or one certified block header.

/// A node or leaf hash of the production tree.
pub type Digest = [u8; 32];

/// The hash function of a tree.
pub trait MerkleHasher {
    /// A node or leaf hash. Production uses `[u8; 32]`; a test may use byte vectors to
    /// check that malformed input is refused by comparison rather than by parsing.
    type Digest: Clone + Eq;
    /// `H(0x00 || data)`.
    fn hash_leaf(&self, data: &[u8]) -> Self::Digest;
    /// `H(0x01 || left || right)`.
    fn hash_children(&self, left: &Self::Digest, right: &Self::Digest) -> Self::Digest;
    /// `H("")`, the root of the empty tree.
    fn hash_empty(&self) -> Self::Digest;
    /// Whether a digest could have come from this hash (right length). Fixed-size digest
    /// types are always well formed.
    fn is_well_formed(&self, _digest: &Self::Digest) -> bool {
        true
    }
}

/// BLAKE3 in the RFC 6962 shape: what cairn uses in production.
#[derive(Debug, Clone, Copy, Default)]
pub struct Blake3Merkle;

impl MerkleHasher for Blake3Merkle {
    type Digest = Digest;
    fn hash_leaf(&self, data: &[u8]) -> Digest {
        let mut h = blake3::Hasher::new();
        h.update(&[0x00]);
        h.update(data);
        *h.finalize().as_bytes()
    }
    fn hash_children(&self, left: &Digest, right: &Digest) -> Digest {
        let mut h = blake3::Hasher::new();
        h.update(&[0x01]);
        h.update(left);
        h.update(right);
        *h.finalize().as_bytes()
    }
    fn hash_empty(&self) -> Digest {
        *blake3::hash(b"").as_bytes()
    }
}

/// Why a proof was refused, or could not be produced.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProofError {
    /// The leaf index is not below the tree size.
    #[error("leaf index {index} is not below tree size {size}")]
    IndexOutOfRange {
        /// Claimed leaf index.
        index: u64,
        /// Claimed tree size.
        size: u64,
    },
    /// A requested size is larger than the tree.
    #[error("size {requested} exceeds the tree size {size}")]
    SizeOutOfRange {
        /// Requested size.
        requested: u64,
        /// Actual size.
        size: u64,
    },
    /// The first size is larger than the second.
    #[error("size1 {size1} is greater than size2 {size2}")]
    SizesOutOfOrder {
        /// Older size.
        size1: u64,
        /// Newer size.
        size2: u64,
    },
    /// A consistency proof from the empty tree proves nothing and is refused.
    #[error("a consistency proof from the empty tree proves nothing")]
    EmptyOldTree,
    /// The proof has the wrong number of hashes for the claimed position and sizes.
    #[error("proof has the wrong number of hashes")]
    WrongLength,
    /// A leaf or proof hash is not a digest of this hash function.
    #[error("a hash in the proof is malformed")]
    MalformedDigest,
    /// The proof does not lead to the claimed root.
    #[error("proof does not match the root")]
    RootMismatch,
}

/// Largest power of two strictly below `n` (`n >= 2`).
fn split_point(n: u64) -> u64 {
    debug_assert!(n >= 2);
    1 << (63 - (n - 1).leading_zeros())
}

/// Root of a list of leaf hashes (already `hash_leaf`ed).
pub fn root<H: MerkleHasher>(hasher: &H, leaf_hashes: &[H::Digest]) -> H::Digest {
    let mut tree = Tree::new(hasher);
    for leaf in leaf_hashes {
        tree.push(leaf.clone());
    }
    tree.root()
}

/// An append-only tree that keeps every complete subtree hash, so roots and proofs for
/// any earlier size cost O(log² n) hashes.
#[derive(Debug, Clone)]
pub struct Tree<'h, H: MerkleHasher> {
    hasher: &'h H,
    /// `levels[j][i]` is the hash of the complete subtree over leaves `i·2^j .. (i+1)·2^j`.
    levels: Vec<Vec<H::Digest>>,
}

impl<'h, H: MerkleHasher> Tree<'h, H> {
    /// An empty tree.
    pub fn new(hasher: &'h H) -> Self {
        Self { hasher, levels: vec![Vec::new()] }
    }

    /// Appends one leaf hash and completes every subtree it closes.
    pub fn push(&mut self, leaf_hash: H::Digest) {
        let mut carry = leaf_hash;
        let mut level = 0;
        loop {
            if self.levels.len() == level {
                self.levels.push(Vec::new());
            }
            let Some(row) = self.levels.get_mut(level) else { return };
            row.push(carry);
            let n = row.len();
            if n % 2 == 1 {
                return;
            }
            let (Some(left), Some(right)) = (row.get(n - 2), row.get(n - 1)) else { return };
            carry = self.hasher.hash_children(left, right);
            level += 1;
        }
    }

    /// Drops every leaf from `size` on (undoing appends that turned out invalid).
    pub fn truncate(&mut self, size: u64) {
        for (j, row) in self.levels.iter_mut().enumerate() {
            row.truncate((size >> j) as usize);
        }
    }

    /// The leaf hash at `index`, if the tree has that many leaves.
    pub fn leaf(&self, index: u64) -> Option<&H::Digest> {
        self.levels.first().and_then(|l| l.get(usize::try_from(index).ok()?))
    }

    /// Number of leaves.
    pub fn size(&self) -> u64 {
        self.levels.first().map_or(0, |l| l.len() as u64)
    }

    /// Root of the whole tree.
    pub fn root(&self) -> H::Digest {
        self.subtree(0, self.size())
    }

    /// Root the tree had when it held `size` leaves.
    pub fn root_at(&self, size: u64) -> Result<H::Digest, ProofError> {
        self.check_size(size)?;
        Ok(self.subtree(0, size))
    }

    /// Inclusion proof of leaf `index` in the tree of `size` leaves (RFC 9162 §2.1.3.1).
    pub fn inclusion_proof(&self, index: u64, size: u64) -> Result<Vec<H::Digest>, ProofError> {
        self.check_size(size)?;
        if index >= size {
            return Err(ProofError::IndexOutOfRange { index, size });
        }
        let mut path = Vec::new();
        let (mut lo, mut hi) = (0, size);
        while hi - lo > 1 {
            let k = split_point(hi - lo);
            if index < lo + k {
                path.push(self.subtree(lo + k, hi));
                hi = lo + k;
            } else {
                path.push(self.subtree(lo, lo + k));
                lo += k;
            }
        }
        path.reverse();
        Ok(path)
    }

    /// Consistency proof between the trees of `size1` and `size2` leaves (RFC 9162 §2.1.4.1).
    pub fn consistency_proof(&self, size1: u64, size2: u64) -> Result<Vec<H::Digest>, ProofError> {
        self.check_size(size2)?;
        if size1 > size2 {
            return Err(ProofError::SizesOutOfOrder { size1, size2 });
        }
        if size1 == 0 || size1 == size2 {
            return Ok(Vec::new());
        }
        let mut proof = Vec::new();
        let (mut lo, mut hi, mut whole) = (0, size2, true);
        loop {
            if size1 == hi {
                if !whole {
                    proof.push(self.subtree(lo, hi));
                }
                break;
            }
            let k = split_point(hi - lo);
            if size1 <= lo + k {
                proof.push(self.subtree(lo + k, hi));
                hi = lo + k;
            } else {
                proof.push(self.subtree(lo, lo + k));
                lo += k;
                whole = false;
            }
        }
        proof.reverse();
        Ok(proof)
    }

    fn check_size(&self, requested: u64) -> Result<(), ProofError> {
        if requested > self.size() {
            return Err(ProofError::SizeOutOfRange { requested, size: self.size() });
        }
        Ok(())
    }

    /// `MTH(D[lo..hi])`. Every range reached from the RFC recursion starts at a multiple
    /// of the smallest power of two not below its length, so complete subtrees are looked
    /// up and only the right edge is hashed.
    fn subtree(&self, lo: u64, hi: u64) -> H::Digest {
        let n = hi - lo;
        if n == 0 {
            return self.hasher.hash_empty();
        }
        if n.is_power_of_two() && lo.is_multiple_of(n) {
            let level = n.trailing_zeros() as usize;
            if let Some(h) = self.levels.get(level).and_then(|row| row.get((lo / n) as usize)) {
                return h.clone();
            }
        }
        if n == 1 {
            // Unreachable for ranges inside the tree; an empty hash keeps this total.
            return self.hasher.hash_empty();
        }
        let k = split_point(n);
        let left = self.subtree(lo, lo + k);
        let right = self.subtree(lo + k, hi);
        self.hasher.hash_children(&left, &right)
    }
}

/// Checks that `leaf_hash` is leaf `index` of the tree of `size` leaves with `root`
/// (RFC 9162 §2.1.3.2).
pub fn verify_inclusion<H: MerkleHasher>(
    hasher: &H,
    index: u64,
    size: u64,
    leaf_hash: &H::Digest,
    proof: &[H::Digest],
    root: &H::Digest,
) -> Result<(), ProofError> {
    if index >= size {
        return Err(ProofError::IndexOutOfRange { index, size });
    }
    if !hasher.is_well_formed(leaf_hash) || !proof.iter().all(|p| hasher.is_well_formed(p)) {
        return Err(ProofError::MalformedDigest);
    }
    let (mut fnode, mut snode) = (index, size - 1);
    let mut r = leaf_hash.clone();
    for p in proof {
        if snode == 0 {
            return Err(ProofError::WrongLength);
        }
        if fnode & 1 == 1 || fnode == snode {
            r = hasher.hash_children(p, &r);
            while fnode & 1 == 0 && fnode != 0 {
                fnode >>= 1;
                snode >>= 1;
            }
        } else {
            r = hasher.hash_children(&r, p);
        }
        fnode >>= 1;
        snode >>= 1;
    }
    if snode != 0 {
        return Err(ProofError::WrongLength);
    }
    if &r != root {
        return Err(ProofError::RootMismatch);
    }
    Ok(())
}

/// Checks that the tree of `size2` leaves with `root2` extends the tree of `size1`
/// leaves with `root1` (RFC 9162 §2.1.4.2).
pub fn verify_consistency<H: MerkleHasher>(
    hasher: &H,
    size1: u64,
    size2: u64,
    root1: &H::Digest,
    root2: &H::Digest,
    proof: &[H::Digest],
) -> Result<(), ProofError> {
    if size1 > size2 {
        return Err(ProofError::SizesOutOfOrder { size1, size2 });
    }
    if size1 == 0 {
        return Err(ProofError::EmptyOldTree);
    }
    if size1 == size2 {
        if !proof.is_empty() {
            return Err(ProofError::WrongLength);
        }
        return if root1 == root2 { Ok(()) } else { Err(ProofError::RootMismatch) };
    }
    if !proof.iter().all(|p| hasher.is_well_formed(p)) {
        return Err(ProofError::MalformedDigest);
    }
    let (first, rest): (&H::Digest, &[H::Digest]) = if size1.is_power_of_two() {
        (root1, proof)
    } else {
        match proof.split_first() {
            Some((first, rest)) => (first, rest),
            None => return Err(ProofError::WrongLength),
        }
    };
    let (mut fnode, mut snode) = (size1 - 1, size2 - 1);
    while fnode & 1 == 1 {
        fnode >>= 1;
        snode >>= 1;
    }
    let (mut fr, mut sr) = (first.clone(), first.clone());
    for c in rest {
        if snode == 0 {
            return Err(ProofError::WrongLength);
        }
        if fnode & 1 == 1 || fnode == snode {
            fr = hasher.hash_children(c, &fr);
            sr = hasher.hash_children(c, &sr);
            while fnode & 1 == 0 && fnode != 0 {
                fnode >>= 1;
                snode >>= 1;
            }
        } else {
            sr = hasher.hash_children(&sr, c);
        }
        fnode >>= 1;
        snode >>= 1;
    }
    if snode != 0 {
        return Err(ProofError::WrongLength);
    }
    if &fr != root1 || &sr != root2 {
        return Err(ProofError::RootMismatch);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leaves(n: u64) -> Vec<Digest> {
        (0..n).map(|i| Blake3Merkle.hash_leaf(&i.to_be_bytes())).collect()
    }

    /// The RFC 6962 definition, written recursively, as an independent reference.
    fn reference_root(h: &Blake3Merkle, d: &[Digest]) -> Digest {
        match d.len() {
            0 => h.hash_empty(),
            1 => d[0],
            n => {
                let k = split_point(n as u64) as usize;
                h.hash_children(&reference_root(h, &d[..k]), &reference_root(h, &d[k..]))
            }
        }
    }

    #[test]
    fn incremental_roots_match_the_recursive_definition() {
        let d = leaves(70);
        let mut tree = Tree::new(&Blake3Merkle);
        for (i, leaf) in d.iter().enumerate() {
            tree.push(*leaf);
            assert_eq!(tree.root(), reference_root(&Blake3Merkle, &d[..=i]), "size {}", i + 1);
        }
        for size in 0..=70 {
            assert_eq!(tree.root_at(size).unwrap(), reference_root(&Blake3Merkle, &d[..size as usize]));
        }
    }

    #[test]
    fn truncate_restores_an_earlier_tree() {
        let d = leaves(40);
        let mut tree = Tree::new(&Blake3Merkle);
        d.iter().for_each(|l| tree.push(*l));
        for size in [39, 32, 17, 1, 0] {
            tree.truncate(size);
            assert_eq!(tree.size(), size);
            assert_eq!(tree.root(), reference_root(&Blake3Merkle, &d[..size as usize]));
            d[size as usize..].iter().for_each(|l| tree.push(*l));
            assert_eq!(tree.root(), reference_root(&Blake3Merkle, &d));
        }
    }

    #[test]
    fn proofs_outside_the_tree_are_refused() {
        let mut tree = Tree::new(&Blake3Merkle);
        leaves(5).into_iter().for_each(|l| tree.push(l));
        assert_eq!(tree.inclusion_proof(5, 5), Err(ProofError::IndexOutOfRange { index: 5, size: 5 }));
        assert_eq!(tree.inclusion_proof(0, 6), Err(ProofError::SizeOutOfRange { requested: 6, size: 5 }));
        assert_eq!(tree.consistency_proof(4, 3), Err(ProofError::SizesOutOfOrder { size1: 4, size2: 3 }));
    }
}
