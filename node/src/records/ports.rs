//! What the record lifecycle needs from the node around it, as small ports this layer
//! owns (ADR 014): a read-only view of the ledger, a sink for transactions and the peers
//! (`/cairn/req/1`). The runtime implements them (`chain::Chain`: ledger view and
//! transaction sink; `net::PeerClient`: peers), wired by `run/`; the in-process harness
//! (`records::sim`) implements them without processes or sockets.

use std::collections::HashSet;
use std::time::Instant;

use cairn_proto::consensus::CertifiedBlock;
use cairn_proto::genesis::Genesis;
use cairn_proto::ledger::BatchKind;
use cairn_proto::transaction::{Block, Transaction};
use cairn_proto::{Hash32, KeyId};
use tokio::sync::watch;

use super::wire::{Request, Response};

/// A ledger read failed (the block store or a stored certificate): fatal for the node.
#[derive(Debug, Clone, thiserror::Error)]
#[error("ledger: {0}")]
pub struct LedgerReadError(pub String);

/// A read-only view of the decided chain.
pub trait LedgerView: Send + Sync + 'static {
    /// The chain's genesis (membership at height 0; what certificates verify against).
    fn genesis(&self) -> &Genesis;
    /// Genesis hash.
    fn chain(&self) -> Hash32;
    /// Height of the last decided block (0 before the first).
    fn height(&self) -> u64;
    /// Header hash of the last decided block (the genesis hash before the first).
    fn last_hash(&self) -> Hash32;
    /// The decided block at `height`, without its certificate.
    fn block(&self, height: u64) -> Result<Option<Block>, LedgerReadError>;
    /// The decided block at `height` with its commit certificate.
    fn certified_block(&self, height: u64) -> Result<Option<CertifiedBlock>, LedgerReadError>;
    /// Position of the batch commitment whose log leaf is `log_leaf` in the global log,
    /// with its inclusion proof (RFC 9162 §2.1.3) at log size `size`; `None` if the
    /// leaf is not in the log.
    fn log_inclusion(&self, log_leaf: &Hash32, size: u64) -> Result<Option<(u64, Vec<Hash32>)>, LedgerReadError>;
    /// The sequence number the next batch of `kind` from `node` must carry.
    fn next_batch_seq(&self, node: &KeyId, kind: BatchKind) -> u64;
    /// Changes to the height of every decided block, once stored.
    fn decided(&self) -> watch::Receiver<u64>;
    /// When the next block is expected to be proposed: the start of the next height, which
    /// is this height's start plus the block interval (Malachite's `target_time`), set as
    /// each height starts; `None` until one has started. The batchers build a batch a
    /// little before it, so that its commitment is in the proposer's mempool in time
    /// (ADR 011, "When a batch is built").
    fn next_proposal(&self) -> watch::Receiver<Option<Instant>>;
    /// The membership after the last decided block.
    fn membership(&self) -> cairn_proto::membership::Membership;
    /// The purpose policy after the last decided block, with its version (0 = genesis).
    fn policy(&self) -> (cairn_proto::policy::PurposePolicy, u64);
}

/// Where this layer's transactions (batch commitments) go: the node's mempool, which
/// passes them on to the other validators.
pub trait TxSink: Send + Sync + 'static {
    /// Admits `tx`; `Err` says why it was not (duplicate, full, invalid), as text.
    fn submit(&self, tx: Transaction) -> Result<Hash32, String>;
}

/// Why a request to a peer has no answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AskError {
    /// Not delivered, or delivered with no answer back within the ask timeout (not
    /// connected, dial or stream failure, timeout). Every `/cairn/req/1` request is
    /// idempotent: asking again is safe.
    #[error("not delivered: {0}")]
    NotDelivered(String),
    /// The peer answered and refused (`Response::Error`); the text is the peer's.
    #[error("refused by the peer: {0}")]
    Refused(String),
}

/// The other validators on `/cairn/req/1`, addressed by their key ids.
#[async_trait::async_trait]
pub trait Peers: Send + Sync + 'static {
    /// The validators connected now.
    fn connected(&self) -> HashSet<KeyId>;
    /// Sends `request` to validator `to` and waits for its answer, at most the
    /// request's one timeout ([`Request::timeout`]: 30 s to replicate or read, 10 s
    /// otherwise), after which it is [`AskError::NotDelivered`]. A `Response::Error`
    /// comes back as [`AskError::Refused`].
    async fn ask(&self, to: KeyId, request: Request) -> Result<Response, AskError>;
}
