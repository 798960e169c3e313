//! Offline verification of what nodes serve, from the genesis file alone: certified
//! blocks, checkpoints, consistency between two checkpoints, and inclusion of a batch
//! commitment in the global log. Each function returns the checks it made, in words, so
//! the CLI can show a regulator what was and was not established.
//!
//! The validator set is the genesis one: no transaction changes validators, so the
//! genesis file is all a verifier needs.

use cairn_proto::Hash32;
use cairn_proto::consensus::{CertificateError, CertifiedBlock, CertifiedHeader};
use cairn_proto::encoding::encode;
use cairn_proto::genesis::Genesis;
use cairn_proto::ledger::BatchCommit;
use cairn_proto::merkle::{Blake3Merkle, MerkleHasher as _, ProofError, verify_consistency, verify_inclusion};
use cairn_proto::receipt::AnchorReceipt;
use cairn_proto::transaction::Block;

/// Why something does not verify.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// The genesis cannot be used.
    #[error("genesis: {0}")]
    Genesis(String),
    /// A certificate does not prove its header.
    #[error("certificate of height {height}: {source}")]
    Certificate {
        /// Height of the header.
        height: u64,
        /// Why.
        source: CertificateError,
    },
    /// The transactions are not the ones the header commits to.
    #[error("block {0}: the transactions do not match the header's body hash")]
    Body(u64),
    /// Two checkpoints in the wrong order.
    #[error(
        "the newer checkpoint (height {new}, log size {new_size}) is not after the older (height {old}, log size {old_size})"
    )]
    Order {
        /// Older height.
        old: u64,
        /// Its log size.
        old_size: u64,
        /// Newer height.
        new: u64,
        /// Its log size.
        new_size: u64,
    },
    /// A Merkle proof does not verify.
    #[error("proof: {0}")]
    Proof(#[from] ProofError),
    /// A receipt's parts do not fit together.
    #[error("receipt: {0}")]
    Receipt(String),
}

/// What verification established.
pub type Checks = Vec<String>;

fn chain(genesis: &Genesis) -> Result<Hash32, VerifyError> {
    genesis.hash().map_err(|e| VerifyError::Genesis(e.to_string()))
}

fn check_header(genesis: &Genesis, h: &CertifiedHeader, checks: &mut Checks) -> Result<(), VerifyError> {
    let chain = chain(genesis)?;
    h.verify(&chain, &genesis.membership.validators)
        .map_err(|source| VerifyError::Certificate { height: h.header.height, source })?;
    let signers = h.certificate.signatures.len();
    let total = genesis.membership.validators.len();
    checks.push(format!(
        "header of height {} is certified: {signers} of {total} genesis validators signed precommits for it (ZIP-215), more than two thirds of the voting power",
        h.header.height
    ));
    Ok(())
}

/// Verifies a certified block: its certificate and that its transactions are the ones
/// the certified header commits to.
pub fn verify_block(genesis: &Genesis, cb: &CertifiedBlock) -> Result<Checks, VerifyError> {
    let mut checks = Checks::new();
    let header = CertifiedHeader { header: cb.block.header.clone(), certificate: cb.certificate.clone() };
    check_header(genesis, &header, &mut checks)?;
    let body = Block::compute_body_hash(&cb.block.transactions).map_err(|e| VerifyError::Genesis(e.to_string()))?;
    if body != cb.block.header.body_hash {
        return Err(VerifyError::Body(cb.block.header.height));
    }
    checks.push(format!("its {} transactions hash to the header's body hash", cb.block.transactions.len()));
    Ok(checks)
}

/// Verifies a certified checkpoint (a header and its commit certificate).
pub fn verify_checkpoint(genesis: &Genesis, checkpoint: &CertifiedHeader) -> Result<Checks, VerifyError> {
    let mut checks = Checks::new();
    check_header(genesis, checkpoint, &mut checks)?;
    checks.push(format!(
        "it commits to a log of {} batch roots with root {}",
        checkpoint.header.log_size, checkpoint.header.log_root
    ));
    Ok(checks)
}

/// Verifies that the log at `new` extends the log at `old` (nothing was rewritten).
pub fn verify_log_consistency(
    genesis: &Genesis,
    old: &CertifiedHeader,
    new: &CertifiedHeader,
    proof: &[Hash32],
) -> Result<Checks, VerifyError> {
    let mut checks = Checks::new();
    check_header(genesis, old, &mut checks)?;
    check_header(genesis, new, &mut checks)?;
    let (o, n) = (&old.header, &new.header);
    if n.height < o.height || n.log_size < o.log_size {
        return Err(VerifyError::Order { old: o.height, old_size: o.log_size, new: n.height, new_size: n.log_size });
    }
    if o.log_size == 0 {
        checks.push("the older checkpoint's log is empty: every later log extends it".into());
        return Ok(checks);
    }
    let proof: Vec<[u8; 32]> = proof.iter().map(|h| h.0).collect();
    verify_consistency(&Blake3Merkle, o.log_size, n.log_size, &o.log_root.0, &n.log_root.0, &proof)?;
    checks.push(format!(
        "the log of {} batch roots at height {} is a prefix of the log of {} at height {} (RFC 9162 consistency proof, {} hashes)",
        o.log_size,
        o.height,
        n.log_size,
        n.height,
        proof.len()
    ));
    Ok(checks)
}

/// Verifies that a batch commitment is leaf `index` of the log a checkpoint certifies.
pub fn verify_batch_in_log(
    genesis: &Genesis,
    checkpoint: &CertifiedHeader,
    commit: &BatchCommit,
    index: u64,
    proof: &[Hash32],
) -> Result<Checks, VerifyError> {
    let mut checks = Checks::new();
    check_header(genesis, checkpoint, &mut checks)?;
    let leaf = Blake3Merkle.hash_leaf(&encode(commit).map_err(|e| VerifyError::Genesis(e.to_string()))?);
    let proof: Vec<[u8; 32]> = proof.iter().map(|h| h.0).collect();
    let h = &checkpoint.header;
    verify_inclusion(&Blake3Merkle, index, h.log_size, &leaf, &proof, &h.log_root.0)?;
    checks.push(format!(
        "batch {} of node {} (root {}) is entry {index} of that log of {} batch roots",
        commit.seq, commit.node, commit.root, h.log_size
    ));
    Ok(checks)
}

/// Verifies an anchor receipt: the leaf is the record's, it is in the custodian's signed
/// batch, the batch is in the global log, and the log is certified by a block whose
/// certificate carries a quorum of genesis validators (`AnchorReceipt::verify`).
pub fn verify_receipt(genesis: &Genesis, r: &AnchorReceipt) -> Result<Checks, VerifyError> {
    r.verify(genesis).map_err(|e| VerifyError::Receipt(e.to_string()))
}
