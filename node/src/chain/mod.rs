//! The chain side of a running node: the ledger state, the block store, the mempool and
//! the watch of decided heights, which the app loop (`run::app`) writes and everything
//! else reads. It implements the record layer's ports ([`LedgerView`], [`TxSink`]).

pub mod mempool;

use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Instant;

use cairn_proto::Hash32;
use cairn_proto::KeyId;
use cairn_proto::consensus::{CertifiedBlock, CommitCertificate};
use cairn_proto::genesis::Genesis;
use cairn_proto::ledger::BatchKind;
use cairn_proto::transaction::{Block, Transaction};
use tokio::sync::{mpsc, watch};

use crate::ledger::state::LedgerState;
use crate::ledger::store::BlockStore;
use crate::metrics::Metrics;
use crate::records::ports::{LedgerReadError, LedgerView, TxSink};
use mempool::{Mempool, Refused};

/// Ledger state, block store, mempool and decided heights of one node.
pub struct Chain {
    /// The chain's genesis.
    pub genesis: Genesis,
    /// Genesis hash.
    pub chain: Hash32,
    ledger: RwLock<LedgerState>,
    /// Decided blocks and certificates.
    pub store: BlockStore,
    mempool: Mutex<Mempool>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    gossip: mpsc::Sender<Transaction>,
    decided: watch::Sender<u64>,
    /// When the next height is expected to start (its proposal built), set as each starts.
    next_proposal: watch::Sender<Option<Instant>>,
    /// Signalled on every admitted transaction; wakes a proposer waiting for one.
    admitted: tokio::sync::Notify,
}

impl std::fmt::Debug for Chain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Chain").field("chain", &self.chain).finish_non_exhaustive()
    }
}

impl Chain {
    /// Puts the parts together. `gossip` receives the transactions that clients (not
    /// peers) submit, to pass them on.
    pub fn new(
        genesis: Genesis,
        state: LedgerState,
        store: BlockStore,
        max_txs: usize,
        gossip: mpsc::Sender<Transaction>,
        metrics: Arc<Metrics>,
    ) -> Result<Arc<Self>, cairn_proto::encoding::EncodeError> {
        let (decided, _) = watch::channel(state.height());
        Ok(Arc::new(Chain {
            chain: genesis.hash()?,
            ledger: RwLock::new(state),
            store,
            mempool: Mutex::new(Mempool::new(max_txs)),
            metrics,
            gossip,
            decided,
            next_proposal: watch::channel(None).0,
            admitted: tokio::sync::Notify::new(),
            genesis,
        }))
    }

    /// The ledger state, for reading.
    pub fn ledger(&self) -> RwLockReadGuard<'_, LedgerState> {
        self.ledger.read().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
    pub(crate) fn ledger_mut(&self) -> RwLockWriteGuard<'_, LedgerState> {
        self.ledger.write().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
    pub(crate) fn mempool(&self) -> MutexGuard<'_, Mempool> {
        self.mempool.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
    pub(crate) fn notify_decided(&self, height: u64) {
        self.decided.send_replace(height);
    }
    /// Records that the next height is expected to start, and its block to be proposed, at
    /// `at` (called as each height starts: its start plus the block interval).
    pub(crate) fn expect_proposal_at(&self, at: Instant) {
        self.next_proposal.send_replace(Some(at));
    }
    /// Completes when a transaction has been admitted to the mempool since the last call
    /// returned (a stored wake-up: one admitted before the call counts).
    pub(crate) async fn admitted(&self) {
        self.admitted.notified().await;
    }
    /// Receives the height of every decided block.
    pub fn subscribe_decided(&self) -> watch::Receiver<u64> {
        self.decided.subscribe()
    }

    /// Admits a transaction to the mempool; one that came from a client (not from gossip)
    /// is passed on to the other nodes.
    pub fn submit(&self, tx: Transaction, from_client: bool) -> Result<Hash32, Refused> {
        let result = {
            let ledger = self.ledger();
            let mut mempool = self.mempool();
            let r = mempool.admit(&ledger, tx.clone());
            self.metrics.mempool.store(mempool.len() as u64, Relaxed);
            r
        };
        match &result {
            Ok(_) => {
                self.metrics.accepted_txs.fetch_add(1, Relaxed);
                self.admitted.notify_one();
                if from_client {
                    let _ = self.gossip.try_send(tx);
                }
            }
            Err(Refused::Duplicate) => {
                self.metrics.duplicate_txs.fetch_add(1, Relaxed);
            }
            Err(Refused::Full(_)) => {}
            Err(Refused::Invalid(e)) => {
                self.metrics.rejected_txs.fetch_add(1, Relaxed);
                tracing::debug!("transaction refused: {e}");
            }
        }
        result
    }

    /// The certified block at `height`.
    pub fn certified_block(&self, height: u64) -> Result<Option<CertifiedBlock>, LedgerReadError> {
        let read = |e: &dyn std::fmt::Display| LedgerReadError(format!("block store at height {height}: {e}"));
        let Some((block, cert)) = self.store.get(height).map_err(|e| read(&e))? else { return Ok(None) };
        let certificate: CommitCertificate =
            cairn_proto::version::decode_versioned(&cert, cairn_proto::encoding::MAX_MESSAGE_LEN)
                .map_err(|e| read(&format!("stored certificate: {e}")))?;
        Ok(Some(CertifiedBlock { block, certificate }))
    }
}

impl LedgerView for Chain {
    fn genesis(&self) -> &Genesis {
        &self.genesis
    }
    fn chain(&self) -> Hash32 {
        self.chain
    }
    fn height(&self) -> u64 {
        self.ledger().height()
    }
    fn last_hash(&self) -> Hash32 {
        self.ledger().last_hash()
    }
    fn block(&self, height: u64) -> Result<Option<Block>, LedgerReadError> {
        let stored = self.store.get(height).map_err(|e| LedgerReadError(format!("block store at {height}: {e}")))?;
        Ok(stored.map(|(block, _)| block))
    }
    fn certified_block(&self, height: u64) -> Result<Option<CertifiedBlock>, LedgerReadError> {
        Chain::certified_block(self, height)
    }
    fn log_inclusion(&self, log_leaf: &Hash32, size: u64) -> Result<Option<(u64, Vec<Hash32>)>, LedgerReadError> {
        self.ledger().log_inclusion_of(&log_leaf.0, size).map_err(|e| LedgerReadError(format!("log proof: {e}")))
    }
    fn next_batch_seq(&self, node: &KeyId, kind: BatchKind) -> u64 {
        self.ledger().next_batch_seq(node, kind)
    }
    fn decided(&self) -> watch::Receiver<u64> {
        self.subscribe_decided()
    }
    fn next_proposal(&self) -> watch::Receiver<Option<Instant>> {
        self.next_proposal.subscribe()
    }
    fn membership(&self) -> cairn_proto::membership::Membership {
        self.ledger().membership().clone()
    }
    fn policy(&self) -> (cairn_proto::policy::PurposePolicy, u64) {
        let state = self.ledger();
        let (p, v) = state.policy();
        (p.clone(), v)
    }
}

impl TxSink for Chain {
    fn submit(&self, tx: Transaction) -> Result<Hash32, String> {
        Chain::submit(self, tx, true).map_err(|e| format!("{e:?}"))
    }
}
