//! The mempool: transactions waiting for a block. Admission checks a transaction against
//! the committed ledger state (signature, membership, not stale); a batch numbered ahead of
//! the next expected one is kept, because gossip may deliver a node's batches out of order.
//! Duplicates (same transaction id) are dropped, and so is everything a decided block made
//! stale.

use std::collections::{HashMap, HashSet};

use cairn_proto::Hash32;
use cairn_proto::transaction::Transaction;

use crate::ledger::state::{LedgerState, TxError};

/// How far ahead of the next expected sequence number a transaction may be.
pub const MAX_GAP: u64 = 100_000;

/// Why the mempool did not take a transaction.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// Already waiting (or just decided).
    #[error("duplicate transaction")]
    Duplicate,
    /// The mempool is full.
    #[error("mempool is full ({0} transactions)")]
    Full(usize),
    /// The transaction is invalid.
    #[error("{0}")]
    Invalid(TxError),
}

/// Transactions waiting to be proposed.
#[derive(Debug)]
pub struct Mempool {
    capacity: usize,
    arrival: u64,
    txs: HashMap<Hash32, (u64, Transaction)>,
}

fn order_key(tx: &Transaction) -> u64 {
    match tx {
        Transaction::BatchCommit(c) => c.body.seq,
        Transaction::Membership(m) => m.body.nonce,
        Transaction::PolicyChange(p) => p.body.policy_version,
    }
}

impl Mempool {
    /// An empty mempool holding at most `capacity` transactions.
    pub fn new(capacity: usize) -> Self {
        Self { capacity, arrival: 0, txs: HashMap::new() }
    }

    /// Number of waiting transactions.
    pub fn len(&self) -> usize {
        self.txs.len()
    }

    /// Whether nothing waits.
    pub fn is_empty(&self) -> bool {
        self.txs.is_empty()
    }

    /// Admits `tx` if it is new and acceptable after the committed `state`; returns its id.
    pub fn admit(&mut self, state: &LedgerState, tx: Transaction) -> Result<Hash32, Refused> {
        let id = tx.id().map_err(|e| Refused::Invalid(TxError::Encoding(e.to_string())))?;
        if self.txs.contains_key(&id) {
            return Err(Refused::Duplicate);
        }
        if self.txs.len() >= self.capacity {
            return Err(Refused::Full(self.capacity));
        }
        match state.check_tx(&tx) {
            Ok(()) => {}
            Err(TxError::Gap { expected, got }) if got - expected <= MAX_GAP => {}
            Err(e) => return Err(Refused::Invalid(e)),
        }
        self.arrival += 1;
        self.txs.insert(id, (self.arrival, tx));
        Ok(id)
    }

    /// Candidates for the next block: lower sequence numbers first (so each signer's
    /// transactions are in order), then arrival order.
    pub fn candidates(&self, max: usize) -> Vec<Transaction> {
        let mut all: Vec<_> = self.txs.values().collect();
        all.sort_by_key(|(arrival, tx)| (order_key(tx), *arrival));
        all.into_iter().take(max).map(|(_, tx)| tx.clone()).collect()
    }

    /// Drops transactions a proposal found invalid, except those that only came too early.
    pub fn drop_rejected(&mut self, rejected: &[(Transaction, TxError)]) -> usize {
        let mut dropped = 0;
        for (tx, error) in rejected {
            if matches!(error, TxError::Gap { .. }) {
                continue;
            }
            if let Ok(id) = tx.id() {
                dropped += usize::from(self.txs.remove(&id).is_some());
            }
        }
        dropped
    }

    /// After a block is applied: drops its transactions and whatever became stale.
    /// Returns how many were dropped as stale.
    pub fn after_block(&mut self, state: &LedgerState, included: &[Transaction]) -> usize {
        let ids: HashSet<Hash32> = included.iter().filter_map(|tx| tx.id().ok()).collect();
        self.txs.retain(|id, _| !ids.contains(id));
        let before = self.txs.len();
        self.txs.retain(|_, (_, tx)| match state.check_tx(tx) {
            Ok(()) => true,
            Err(TxError::Gap { .. }) => true,
            Err(_) => false,
        });
        before - self.txs.len()
    }
}
