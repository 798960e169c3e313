//! Ledger state as a pure function of decided blocks: the membership, the next sequence
//! number of every node's batches and every admin's changes, and one global append-only
//! Merkle log over all committed batch commitments. No I/O; time is an input.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use cairn_proto::encoding::{EncodeError, encode};
use cairn_proto::genesis::Genesis;
use cairn_proto::ledger::SignedBatchCommit;
use cairn_proto::ledger::{BatchCommit, BatchKind, BlockHeader};
use cairn_proto::membership::{MemberKey, Membership};
use cairn_proto::merkle::{Blake3Merkle, MerkleHasher as _, ProofError, Tree};
use cairn_proto::policy::PurposePolicy;
use cairn_proto::transaction::{Block, MembershipChange, SignedMembershipChange, Transaction};
use cairn_proto::{Hash32, KeyId, PublicKey};

static LOG_HASHER: Blake3Merkle = Blake3Merkle;

/// Bounds on what one block may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LedgerLimits {
    /// Most transactions in a block.
    pub max_block_txs: usize,
    /// Most bytes of encoded transactions in a block.
    pub max_block_bytes: usize,
}

impl Default for LedgerLimits {
    fn default() -> Self {
        Self { max_block_txs: 10_000, max_block_bytes: 4 << 20 }
    }
}

/// Why a transaction is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TxError {
    /// The batch's node is not a validator of this chain.
    #[error("node {0} is not a validator")]
    UnknownNode(KeyId),
    /// The signer is not an admin of any organisation.
    #[error("key {0} is not an organisation admin")]
    UnknownAdmin(KeyId),
    /// The signature does not verify.
    #[error("bad signature: {0}")]
    BadSignature(String),
    /// A sequence number or nonce already used (a duplicate or a replay).
    #[error("stale: sequence {got}, expected {expected}")]
    Stale {
        /// Next expected.
        expected: u64,
        /// Given.
        got: u64,
    },
    /// A sequence number or nonce beyond the next one (a gap).
    #[error("out of order: sequence {got}, expected {expected}")]
    Gap {
        /// Next expected.
        expected: u64,
        /// Given.
        got: u64,
    },
    /// The change was signed for another chain.
    #[error("signed for another chain")]
    WrongChain,
    /// A batch of no leaves.
    #[error("a batch commits at least one leaf")]
    EmptyBatch,
    /// The key to register is unusable or already in use.
    #[error("cannot register key: {0}")]
    BadKey(String),
    /// The key to revoke is not a member key of the admin's organisation.
    #[error("no member key {0} in the admin's organisation")]
    NotAMember(KeyId),
    /// The transaction cannot be encoded.
    #[error("cannot encode: {0}")]
    Encoding(String),
    /// A purpose-policy change that is malformed, badly signed or short of the quorum.
    #[error("{0}")]
    Policy(#[from] cairn_proto::policy::PolicyError),
}

/// Why a block is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BlockError {
    /// Header for another chain.
    #[error("block is for another chain")]
    WrongChain,
    /// Not the next height.
    #[error("height {got}, expected {expected}")]
    WrongHeight {
        /// Next height.
        expected: u64,
        /// Given.
        got: u64,
    },
    /// Previous hash does not match the last block.
    #[error("previous hash does not match block {0}")]
    WrongPrevious(u64),
    /// Time went backwards.
    #[error("time {got} is before the previous block's {previous}")]
    TimeBackwards {
        /// Previous block's time.
        previous: u64,
        /// Given.
        got: u64,
    },
    /// The proposer is not a validator.
    #[error("proposer {0} is not a validator")]
    UnknownProposer(KeyId),
    /// Too many transactions or bytes.
    #[error("block exceeds limits: {0}")]
    TooLarge(String),
    /// The body hash does not match the transactions.
    #[error("body hash does not match the transactions")]
    WrongBody,
    /// A transaction is invalid.
    #[error("transaction {index}: {error}")]
    Tx {
        /// Its position.
        index: usize,
        /// Why.
        error: TxError,
    },
    /// Log size or root in the header differ from applying the transactions.
    #[error("log size/root in the header do not match the transactions")]
    WrongLog,
}

/// Counters and membership that transactions change; cloned to validate a block
/// without touching the state.
#[derive(Debug, Clone)]
struct Book {
    membership: Membership,
    batch_seq: HashMap<(KeyId, BatchKind), u64>,
    admin_nonce: HashMap<KeyId, u64>,
    /// The purpose policy in force and its version (0 = the genesis policy).
    policy: PurposePolicy,
    policy_version: u64,
}

/// The ledger state after some number of blocks.
#[derive(Debug)]
pub struct LedgerState {
    chain: Hash32,
    height: u64,
    last_hash: Hash32,
    last_time_ms: u64,
    book: Book,
    log: Tree<'static, Blake3Merkle>,
    /// Position of every log leaf, to answer "where is this batch?".
    leaf_index: HashMap<[u8; 32], u64>,
    limits: LedgerLimits,
    /// Batch commitments whose signatures were checked already.
    seen: Verified,
}

/// Batch commitments whose signature verified, each under the validator key it verified
/// with: a commitment is checked when the mempool admits it, again after every block while
/// it waits, when a proposal is built, when a proposal is validated and when its block is
/// applied — five or more Ed25519 verifications of the same bytes on every node. Only
/// successes are kept, keyed by BLAKE3 of the key and the whole signed transaction (body
/// and signature), so a changed byte or another key is verified afresh. Two generations of
/// [`Verified::GENERATION`] entries bound the memory (≈ 0.5 MiB); a commitment that waits
/// longer than two generations is simply verified again.
#[derive(Debug, Default)]
struct Verified {
    generations: Mutex<[HashSet<[u8; 32]>; 2]>,
    #[cfg(test)]
    verifications: std::sync::atomic::AtomicUsize,
}

impl Verified {
    /// Entries per generation.
    const GENERATION: usize = 8192;

    /// Verifies `signed` with `key` unless it verified before.
    fn check(&self, key: &PublicKey, signed: &SignedBatchCommit) -> Result<(), TxError> {
        let bytes = encode(signed).map_err(|e| TxError::Encoding(e.to_string()))?;
        let mut hasher = blake3::Hasher::new_derive_key("cairn ledger verified batch commitment v1");
        hasher.update(key.as_bytes());
        hasher.update(&bytes);
        let id: [u8; 32] = hasher.finalize().into();
        let known = |g: &[HashSet<[u8; 32]>; 2]| g.iter().any(|set| set.contains(&id));
        if known(&self.generations.lock().unwrap_or_else(std::sync::PoisonError::into_inner)) {
            return Ok(());
        }
        #[cfg(test)]
        self.verifications.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        signed.verify(key).map_err(|e| TxError::BadSignature(e.to_string()))?;
        let mut generations = self.generations.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let [current, previous] = &mut *generations;
        if current.len() >= Self::GENERATION {
            *previous = std::mem::take(current);
        }
        current.insert(id);
        Ok(())
    }
}

fn sequence(expected: u64, got: u64) -> Result<(), TxError> {
    match got.cmp(&expected) {
        std::cmp::Ordering::Equal => Ok(()),
        std::cmp::Ordering::Less => Err(TxError::Stale { expected, got }),
        std::cmp::Ordering::Greater => Err(TxError::Gap { expected, got }),
    }
}

impl Book {
    /// Checks a transaction against this book and, if valid, applies it; returns the log
    /// leaf data for a batch commitment.
    /// An error leaves the book as it was, so a proposal can try transactions one after
    /// another on one book.
    fn apply(&mut self, chain: &Hash32, tx: &Transaction, seen: &Verified) -> Result<Option<Vec<u8>>, TxError> {
        match tx {
            Transaction::BatchCommit(signed) => {
                self.check_batch(signed, seen)?;
                let c = &signed.body;
                let leaf = encode(c).map_err(|e| TxError::Encoding(e.to_string()))?;
                *self.batch_seq.entry((c.node, c.kind)).or_insert(0) += 1;
                Ok(Some(leaf))
            }
            Transaction::Membership(signed) => {
                self.apply_membership(chain, signed)?;
                Ok(None)
            }
            Transaction::PolicyChange(change) => {
                change.verify(chain, self.policy_version, self.policy.change_quorum, &self.membership)?;
                self.policy.purposes = change.body.purposes.clone();
                self.policy_version = change.body.policy_version;
                Ok(None)
            }
        }
    }

    /// Whether a batch commitment would be accepted next, without changing the book.
    fn check_batch(&self, signed: &SignedBatchCommit, seen: &Verified) -> Result<(), TxError> {
        let c = &signed.body;
        let validator = self.membership.validator(&c.node).ok_or(TxError::UnknownNode(c.node))?;
        seen.check(&validator.public_key, signed)?;
        if c.size == 0 {
            return Err(TxError::EmptyBatch);
        }
        sequence(self.batch_seq.get(&(c.node, c.kind)).copied().unwrap_or(0), c.seq)
    }

    fn apply_membership(&mut self, chain: &Hash32, signed: &SignedMembershipChange) -> Result<(), TxError> {
        let body = &signed.body;
        if body.chain != *chain {
            return Err(TxError::WrongChain);
        }
        let org = self.membership.admin_of(&body.admin).ok_or(TxError::UnknownAdmin(body.admin))?;
        let admin_key = org
            .admin_keys
            .iter()
            .find(|k| k.key_id() == body.admin)
            .copied()
            .ok_or(TxError::UnknownAdmin(body.admin))?;
        let organisation = org.name.clone();
        signed.verify(&admin_key).map_err(|e| TxError::BadSignature(e.to_string()))?;
        let next = self.admin_nonce.get(&body.admin).copied().unwrap_or(0);
        sequence(next, body.nonce)?;
        match &body.change {
            MembershipChange::Register { role, public_key } => {
                public_key.validate().map_err(|e| TxError::BadKey(e.to_string()))?;
                if self.key_in_use(public_key) {
                    return Err(TxError::BadKey(format!("{public_key} is already in use")));
                }
                self.membership.members.push(MemberKey { organisation, role: *role, public_key: *public_key });
            }
            MembershipChange::Revoke { public_key } => {
                let id = public_key.key_id();
                let pos = self
                    .membership
                    .members
                    .iter()
                    .position(|m| m.public_key == *public_key && m.organisation == organisation)
                    .ok_or(TxError::NotAMember(id))?;
                self.membership.members.remove(pos);
            }
        }
        self.admin_nonce.insert(body.admin, next + 1);
        Ok(())
    }

    fn key_in_use(&self, key: &PublicKey) -> bool {
        let m = &self.membership;
        m.validators.iter().any(|v| v.public_key == *key)
            || m.members.iter().any(|k| k.public_key == *key)
            || m.organisations.iter().any(|o| o.admin_keys.contains(key))
    }
}

impl LedgerState {
    /// The state before the first block.
    pub fn from_genesis(genesis: &Genesis, limits: LedgerLimits) -> Result<Self, EncodeError> {
        let chain = genesis.hash()?;
        Ok(Self {
            chain,
            height: 0,
            last_hash: chain,
            last_time_ms: genesis.genesis_time_ms,
            book: Book {
                membership: genesis.membership.clone(),
                batch_seq: HashMap::new(),
                admin_nonce: HashMap::new(),
                policy: genesis.policy.clone(),
                policy_version: 0,
            },
            log: Tree::new(&LOG_HASHER),
            leaf_index: HashMap::new(),
            limits,
            seen: Verified::default(),
        })
    }

    /// Height of the last applied block (0 before the first).
    pub fn height(&self) -> u64 {
        self.height
    }
    /// Hash of the last applied header (the genesis hash before the first block).
    pub fn last_hash(&self) -> Hash32 {
        self.last_hash
    }
    /// Genesis hash.
    pub fn chain(&self) -> Hash32 {
        self.chain
    }
    /// Current membership.
    pub fn membership(&self) -> &Membership {
        &self.book.membership
    }

    /// The purpose policy in force and its version (0 = the genesis policy).
    pub fn policy(&self) -> (&PurposePolicy, u64) {
        (&self.book.policy, self.book.policy_version)
    }
    /// Size of the global log.
    pub fn log_size(&self) -> u64 {
        self.log.size()
    }
    /// Root of the global log.
    pub fn log_root(&self) -> Hash32 {
        Hash32(self.log.root())
    }
    /// Inclusion proof of log leaf `index` in the log of `size` leaves.
    pub fn log_inclusion(&self, index: u64, size: u64) -> Result<Vec<[u8; 32]>, ProofError> {
        self.log.inclusion_proof(index, size)
    }
    /// Position in the log of the batch commitment whose log leaf is `leaf`.
    pub fn find_leaf(&self, leaf: &[u8; 32]) -> Option<u64> {
        self.leaf_index.get(leaf).copied()
    }
    /// Where the batch commitment whose log leaf is `leaf` stands in the log, with its
    /// inclusion proof at log size `size` (RFC 9162 §2.1.3); `None` if the leaf is not in
    /// the log; `Err` if `size` does not contain it.
    pub fn log_inclusion_of(&self, leaf: &[u8; 32], size: u64) -> Result<Option<(u64, Vec<Hash32>)>, ProofError> {
        let Some(index) = self.find_leaf(leaf) else { return Ok(None) };
        let proof = self.log_inclusion(index, size)?;
        Ok(Some((index, proof.into_iter().map(Hash32).collect())))
    }
    /// Time of the last applied block (genesis time before the first).
    pub fn last_time_ms(&self) -> u64 {
        self.last_time_ms
    }
    /// The nonce the next membership change signed by `admin` must carry.
    pub fn next_admin_nonce(&self, admin: &KeyId) -> u64 {
        self.book.admin_nonce.get(admin).copied().unwrap_or(0)
    }
    /// The sequence number the next batch of `kind` from `node` must carry.
    pub fn next_batch_seq(&self, node: &KeyId, kind: BatchKind) -> u64 {
        self.book.batch_seq.get(&(*node, kind)).copied().unwrap_or(0)
    }
    /// The limits blocks are checked against.
    pub fn limits(&self) -> LedgerLimits {
        self.limits
    }
    /// Consistency proof between two log sizes.
    pub fn log_consistency(&self, size1: u64, size2: u64) -> Result<Vec<[u8; 32]>, ProofError> {
        self.log.consistency_proof(size1, size2)
    }

    /// Whether a transaction would be accepted next (mempool admission).
    pub fn check_tx(&self, tx: &Transaction) -> Result<(), TxError> {
        match tx {
            Transaction::BatchCommit(signed) => self.book.check_batch(signed, &self.seen),
            _ => self.book.clone().apply(&self.chain, tx, &self.seen).map(|_| ()),
        }
    }

    /// How many batch-commitment signatures this state has verified (each once).
    #[cfg(test)]
    pub(crate) fn signature_checks(&self) -> usize {
        self.seen.verifications.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Builds the next block from candidate transactions in order, leaving out those
    /// that are invalid at their position (returned with the reason) and those beyond
    /// the limits (left for a later block).
    pub fn propose(
        &mut self,
        candidates: Vec<Transaction>,
        time_ms: u64,
        proposer: KeyId,
    ) -> Result<(Block, Vec<(Transaction, TxError)>), BlockError> {
        let mut book = self.book.clone();
        let (mut included, mut rejected, mut leaves, mut bytes) = (Vec::new(), Vec::new(), Vec::new(), 0usize);
        for tx in candidates {
            let len = encode(&tx).map(|b| b.len()).unwrap_or(usize::MAX);
            if included.len() == self.limits.max_block_txs || bytes.saturating_add(len) > self.limits.max_block_bytes {
                break;
            }
            match book.apply(&self.chain, &tx, &self.seen) {
                Ok(leaf) => {
                    leaves.extend(leaf);
                    bytes += len;
                    included.push(tx);
                }
                Err(e) => rejected.push((tx, e)),
            }
        }
        let before = self.log.size();
        leaves.iter().for_each(|l| self.log.push(LOG_HASHER.hash_leaf(l)));
        let (log_size, log_root) = (self.log.size(), Hash32(self.log.root()));
        self.log.truncate(before);
        let header = BlockHeader {
            version: 1,
            chain: self.chain,
            height: self.height + 1,
            prev_hash: self.last_hash,
            log_size,
            log_root,
            time_ms: time_ms.max(self.last_time_ms),
            proposer,
            body_hash: Block::compute_body_hash(&included).map_err(|e| BlockError::TooLarge(e.to_string()))?,
        };
        Ok((Block { header, transactions: included }, rejected))
    }

    /// Checks a block completely without changing the state.
    pub fn validate(&mut self, block: &Block) -> Result<(), BlockError> {
        let before = self.log.size();
        let result = self.check_and_extend(block).map(|_| ());
        self.log.truncate(before);
        result
    }

    /// Applies the next decided block, all or nothing.
    pub fn apply(&mut self, block: &Block) -> Result<(), BlockError> {
        let before = self.log.size();
        match self.check_and_extend(block) {
            Ok(book) => {
                for i in before..self.log.size() {
                    if let Some(leaf) = self.log.leaf(i) {
                        self.leaf_index.entry(*leaf).or_insert(i);
                    }
                }
                self.book = book;
                self.height = block.header.height;
                self.last_hash = block.header.hash().map_err(|e| BlockError::TooLarge(e.to_string()))?;
                self.last_time_ms = block.header.time_ms;
                Ok(())
            }
            Err(e) => {
                self.log.truncate(before);
                Err(e)
            }
        }
    }

    /// Validates `block` and appends its log leaves; returns the book after it.
    fn check_and_extend(&mut self, block: &Block) -> Result<Book, BlockError> {
        let h = &block.header;
        if h.chain != self.chain {
            return Err(BlockError::WrongChain);
        }
        if h.height != self.height + 1 {
            return Err(BlockError::WrongHeight { expected: self.height + 1, got: h.height });
        }
        if h.prev_hash != self.last_hash {
            return Err(BlockError::WrongPrevious(self.height));
        }
        if h.time_ms < self.last_time_ms {
            return Err(BlockError::TimeBackwards { previous: self.last_time_ms, got: h.time_ms });
        }
        if self.book.membership.validator(&h.proposer).is_none() {
            return Err(BlockError::UnknownProposer(h.proposer));
        }
        let body = encode(&block.transactions).map_err(|e| BlockError::TooLarge(e.to_string()))?;
        if block.transactions.len() > self.limits.max_block_txs || body.len() > self.limits.max_block_bytes {
            return Err(BlockError::TooLarge(format!(
                "{} transactions, {} bytes",
                block.transactions.len(),
                body.len()
            )));
        }
        if cairn_proto::ledger::body_hash(&body) != h.body_hash {
            return Err(BlockError::WrongBody);
        }
        let mut book = self.book.clone();
        for (index, tx) in block.transactions.iter().enumerate() {
            if let Some(leaf) =
                book.apply(&self.chain, tx, &self.seen).map_err(|error| BlockError::Tx { index, error })?
            {
                self.log.push(LOG_HASHER.hash_leaf(&leaf));
            }
        }
        if self.log.size() != h.log_size || Hash32(self.log.root()) != h.log_root {
            return Err(BlockError::WrongLog);
        }
        Ok(book)
    }
}

/// The log leaf data of a batch commitment (what inclusion proofs are about).
pub fn log_leaf(commit: &BatchCommit) -> Result<[u8; 32], EncodeError> {
    Ok(LOG_HASHER.hash_leaf(&encode(commit)?))
}
