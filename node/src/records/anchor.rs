//! Anchoring (DESIGN.md §4): every custodian collects the leaves of the records it holds,
//! and once per height (just before the next proposal) or, while the chain is idle, at
//! each interval, commits a padded Merkle root over them through the ledger ([`Aim`]). The
//! padded batches are kept in `anchors.redb` (permanent side: leaves are hashes that name
//! no one once a record's secret is destroyed) so that receipts can be served later.
//!
//! The same actor, run a second time with [`BatchKind::ErasureReceipts`], commits the
//! leaves of this node's erasure receipts (`erasure-batches.redb`).
//!
//! Up to [`MAX_INFLIGHT`] batches are in flight at once (consecutive sequence numbers; a
//! block may commit several in order), so a leaf waits at most one height (or, while the
//! chain is idle, one interval) before its batch is submitted. A batch is written to the
//! store before its commitment is submitted, so after a crash the node finds it again:
//! committed (its sequence number was used) or resubmitted.
//! Leaves of records acknowledged but not yet in a stored batch are found again at start
//! by reading the vault.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use cairn_proto::encoding::encode;
use cairn_proto::ledger::{BatchCommit, BatchKind, SignedBatchCommit};
use cairn_proto::merkle::{Blake3Merkle, MerkleHasher as _, Tree};
use cairn_proto::receipt::{MAX_BATCH_LEAVES, padded_size, padding_leaf};
use cairn_proto::signed::SignedBody as _;
use cairn_proto::transaction::Transaction;
use cairn_proto::version::{Versioned, decode_versioned};
use cairn_proto::{Hash32, KeyId, Keypair};
use redb::{ReadableDatabase as _, ReadableTable as _, TableDefinition};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot, watch};
use tracing::{debug, info, warn};

use super::{Records, RecordsError, StoreError};

const BATCHES: TableDefinition<u64, &[u8]> = TableDefinition::new("anchor_batches");
const STORED_LIMIT: usize = 8 << 20;
/// Batches submitted and not yet seen in a block.
pub const MAX_INFLIGHT: usize = 4;
/// Blocks to wait for an in-flight batch before submitting it again.
const RESUBMIT_AFTER_BLOCKS: u64 = 10;
/// Time to wait for an in-flight batch before submitting it again, however few blocks.
const RESUBMIT_AFTER: Duration = Duration::from_secs(10);
/// How long before the next expected proposal the batchers build: enough to sign and
/// store a batch and for gossip to bring its commitment to the proposer's mempool on a
/// loaded node (at 40 ms about one batch in twelve missed its height; at 80 ms one in 160 did:
/// BENCHMARKS.md, issue 17, sixth session).
pub const BUILD_LEAD: Duration = Duration::from_millis(80);
/// Batch trees kept in memory for proofs.
const TREE_CACHE: usize = 32;
static HASHER: Blake3Merkle = Blake3Merkle;

/// A padded batch as this node built it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StoredBatch {
    version: u8,
    /// The signed commitment submitted to the ledger.
    pub commit: SignedBatchCommit,
    /// Every leaf, real and padding, in tree order.
    pub leaves: Vec<Hash32>,
    /// Height of the block that committed it, once known.
    pub height: Option<u64>,
}

impl Versioned for StoredBatch {
    const VERSION: u8 = 1;
    fn version(&self) -> u8 {
        self.version
    }
}

fn db_err(e: impl std::fmt::Display) -> StoreError {
    StoreError::new("anchor store", e)
}

/// The batches this node built, by sequence number (redb).
pub struct AnchorStore {
    db: redb::Database,
}

impl std::fmt::Debug for AnchorStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AnchorStore")
    }
}

impl AnchorStore {
    /// Opens or creates the store.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let db = redb::Database::create(path)
            .map_err(|e| StoreError::new("anchor store", format!("cannot open {}: {e}", path.display())))?;
        let txn = db.begin_write().map_err(db_err)?;
        txn.open_table(BATCHES).map_err(db_err)?;
        txn.commit().map_err(db_err)?;
        Ok(Self { db })
    }

    /// Writes a batch durably.
    pub fn put(&self, batch: &StoredBatch) -> Result<(), StoreError> {
        let bytes = encode(batch).map_err(db_err)?;
        let txn = self.db.begin_write().map_err(db_err)?;
        txn.open_table(BATCHES).map_err(db_err)?.insert(batch.commit.body.seq, bytes.as_slice()).map_err(db_err)?;
        txn.commit().map_err(db_err)
    }

    /// Every stored batch, by sequence number.
    pub fn all(&self) -> Result<BTreeMap<u64, StoredBatch>, StoreError> {
        let txn = self.db.begin_read().map_err(db_err)?;
        let table = txn.open_table(BATCHES).map_err(db_err)?;
        let mut out = BTreeMap::new();
        for row in table.iter().map_err(db_err)? {
            let (k, v) = row.map_err(db_err)?;
            let batch: StoredBatch = decode_versioned(v.value(), STORED_LIMIT)
                .map_err(|e| StoreError::new("anchor store", format!("batch {}: {e}", k.value())))?;
            out.insert(k.value(), batch);
        }
        Ok(out)
    }
}

/// Where a committed leaf is.
#[derive(Debug, Clone)]
pub struct Location {
    /// The batch commitment.
    pub commit: SignedBatchCommit,
    /// Position in the batch.
    pub index: u64,
    /// Inclusion proof into the batch root.
    pub proof: Vec<Hash32>,
    /// Committing block.
    pub height: u64,
}

enum Command {
    Add(Vec<Hash32>),
    Locate(Vec<Hash32>, oneshot::Sender<Vec<Option<Location>>>),
}

/// The anchoring actor's mailbox.
#[derive(Debug, Clone)]
pub struct AnchorHandle {
    tx: mpsc::Sender<Command>,
    committed: watch::Receiver<u64>,
    depth: Arc<Depth>,
}

/// How much the batcher holds, for `/metrics`.
#[derive(Debug, Default)]
struct Depth {
    /// Leaves waiting for a batch.
    pending: AtomicU64,
    /// Batches submitted and not yet committed.
    inflight: AtomicU64,
}

impl AnchorHandle {
    /// Queues the leaves of newly stored records.
    pub async fn add(&self, leaves: Vec<Hash32>) {
        if self.tx.send(Command::Add(leaves)).await.is_err() {
            warn!("the anchoring task has stopped; leaves will be anchored after a restart");
        }
    }
    /// Where each leaf was committed, if it was.
    pub async fn locate(&self, leaves: Vec<Hash32>) -> Vec<Option<Location>> {
        let (reply, rx) = oneshot::channel();
        let n = leaves.len();
        if self.tx.send(Command::Locate(leaves, reply)).await.is_err() {
            return vec![None; n];
        }
        rx.await.unwrap_or_else(|_| vec![None; n])
    }
    /// Leaves waiting for a batch and batches submitted but not yet committed, as the
    /// batcher last saw them (it updates both after every event it handles).
    pub fn depth(&self) -> (u64, u64) {
        (self.depth.pending.load(Relaxed), self.depth.inflight.load(Relaxed))
    }
    /// Changes whenever a batch is committed (its value counts committed batches); the
    /// count as it is now is marked seen, so `changed()` waits for the next commit. (A
    /// plain clone kept the handle's version, which never moves: every clone saw a change
    /// at once, and receipt long-polls spun instead of waiting.)
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        let mut rx = self.committed.clone();
        rx.borrow_and_update();
        rx
    }
}

/// Creates the mailbox of a batcher of `kind`; [`Anchorer::run`] serves it.
pub fn channel(bound: usize, kind: BatchKind) -> (AnchorHandle, Anchorer) {
    let (tx, rx) = mpsc::channel(bound);
    let (committed_tx, committed) = watch::channel(0);
    let depth = Arc::new(Depth::default());
    (AnchorHandle { tx, committed, depth: depth.clone() }, Anchorer { rx, committed: committed_tx, kind, depth })
}

/// The receiving half, to be run once the node's shared state exists.
#[derive(Debug)]
pub struct Anchorer {
    rx: mpsc::Receiver<Command>,
    committed: watch::Sender<u64>,
    kind: BatchKind,
    depth: Arc<Depth>,
}

struct State {
    kind: BatchKind,
    me: KeyId,
    key: Keypair,
    store: AnchorStore,
    batches: BTreeMap<u64, StoredBatch>,
    index: HashMap<Hash32, (u64, u64)>,
    pending: Vec<Hash32>,
    queued: HashSet<Hash32>,
    /// Submitted batches not yet committed: sequence number → height and instant when
    /// (re)submitted.
    inflight: BTreeMap<u64, (u64, Instant)>,
    scanned: u64,
    trees: HashMap<u64, Tree<'static, Blake3Merkle>>,
}

impl Anchorer {
    /// Runs the actor until the node stops.
    ///
    /// Returns only on a fatal failure (a store or the ledger), or when every handle
    /// and the ledger are gone.
    pub async fn run(
        mut self,
        records: Arc<Records>,
        key: Keypair,
        store: AnchorStore,
        interval: Duration,
    ) -> Result<(), RecordsError> {
        let batches = store.all()?;
        let mut st = State {
            kind: self.kind,
            me: key.public().key_id(),
            key,
            store,
            batches,
            index: HashMap::new(),
            pending: Vec::new(),
            queued: HashSet::new(),
            inflight: BTreeMap::new(),
            scanned: 0,
            trees: HashMap::new(),
        };
        st.recover(&records)?;
        let mut committed = st.batches.values().filter(|b| b.height.is_some()).count() as u64;
        self.committed.send_replace(committed);
        // Records (or erasure receipts) acknowledged before a crash but in no stored batch.
        let leaves = match self.kind {
            BatchKind::ErasureReceipts => records.erasures.store.receipt_leaves()?,
            BatchKind::ConsentEvents => records.document_event_leaves(crate::clock::now_ms(), true).await?,
            BatchKind::AccessEvents => records.access_rows().await?.iter().map(|(h, r)| r.leaf(h)).collect(),
            _ => records.vault.leaves().await?,
        };
        let missing: Vec<Hash32> = leaves.into_iter().filter(|l| !st.index.contains_key(l)).collect();
        if !missing.is_empty() {
            info!(leaves = missing.len(), kind = ?self.kind, "committing leaves that were stored but are in no batch");
        }
        st.queue(missing);

        let mut decided = records.ledger.decided();
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut proposals = records.ledger.next_proposal();
        let mut aim = Aim::default();
        aim.expect(*proposals.borrow_and_update());
        let mut proposals_open = true;
        loop {
            tokio::select! {
                command = self.rx.recv() => match command {
                    Some(Command::Add(leaves)) => st.queue(leaves),
                    Some(Command::Locate(leaves, reply)) => {
                        let found = leaves.iter().map(|l| st.locate(l)).collect();
                        let _ = reply.send(found);
                    }
                    None => return Ok(()),
                },
                () = tokio::time::sleep_until(aim.due.unwrap_or_else(far_future)), if aim.due.is_some() => {
                    aim.due = None;
                    st.build_all(&records)?;
                }
                _ = tick.tick() => {
                    if aim.tick_builds(Instant::now()) {
                        st.build(&records)?;
                    }
                    st.resubmit_stale(&records);
                }
                changed = proposals.changed(), if proposals_open => match changed {
                    Ok(()) => aim.expect(*proposals.borrow_and_update()),
                    Err(_) => proposals_open = false,
                },
                changed = decided.changed() => {
                    if changed.is_err() {
                        return Ok(());
                    }
                    let height = *decided.borrow_and_update();
                    let newly = st.scan(&records, height)?;
                    if newly > 0 {
                        committed += newly;
                        self.committed.send_replace(committed);
                    }
                }
            }
            self.depth.pending.store(st.pending.len() as u64, Relaxed);
            self.depth.inflight.store(st.inflight.len() as u64, Relaxed);
        }
    }
}

/// When to build batches (ADR 011, "When a batch is built"). A block takes the
/// commitments in its proposer's mempool when its height starts, and a height starts
/// [`LedgerView::next_proposal`] after the last one did. While heights follow one another,
/// the leaves that arrived since the last build are batched once, [`BUILD_LEAD`] before
/// the next proposal: a leaf then waits for the next block only, and the chain gets one
/// commitment per kind and node per height. While no start is expected (before the first,
/// or once the expected one is [`BUILD_LEAD`] past: an idle chain's proposer waits for a
/// transaction, ADR 019) the interval tick builds, as soon as leaves wait.
#[derive(Debug, Default)]
struct Aim {
    /// The next proposal, as last announced.
    next: Option<Instant>,
    /// When to build for it; `None` once built.
    due: Option<tokio::time::Instant>,
}

impl Aim {
    fn expect(&mut self, next: Option<Instant>) {
        self.next = next;
        self.due = next.map(|at| tokio::time::Instant::from_std(at.checked_sub(BUILD_LEAD).unwrap_or(at)));
    }

    /// Whether the interval tick builds at `now`: only when no proposal is expected.
    fn tick_builds(&self, now: Instant) -> bool {
        self.next.is_none_or(|at| now >= at + BUILD_LEAD)
    }
}

/// An instant that never comes (the branch it feeds is disabled anyway).
fn far_future() -> tokio::time::Instant {
    tokio::time::Instant::now() + Duration::from_secs(86_400)
}

impl State {
    fn tx(&self, batch: &StoredBatch) -> Transaction {
        Transaction::BatchCommit(batch.commit.clone())
    }

    fn index_batch(&mut self, seq: u64) {
        if let Some(b) = self.batches.get(&seq) {
            for (i, leaf) in b.leaves.iter().enumerate() {
                self.index.insert(*leaf, (seq, i as u64));
                self.queued.remove(leaf);
            }
        }
    }

    /// Re-reads stored batches against the ledger after a start.
    fn recover(&mut self, records: &Records) -> Result<(), RecordsError> {
        let next = records.ledger.next_batch_seq(&self.me, self.kind);
        let tip = records.ledger.height();
        let pending: Vec<u64> = self.batches.iter().filter(|(_, b)| b.height.is_none()).map(|(s, _)| *s).collect();
        for seq in pending {
            if seq < next {
                // Committed while this node was not looking: find the block.
                let height = self.find_commit(records, seq, tip)?;
                if let Some(b) = self.batches.get_mut(&seq) {
                    b.height = height;
                    self.store.put(b)?;
                }
            } else if seq == next + self.inflight.len() as u64 {
                if let Some(b) = self.batches.get(&seq) {
                    let _ = records.txs.submit(self.tx(b));
                    b.leaves.iter().for_each(|l| {
                        self.queued.insert(*l);
                    });
                }
                self.inflight.insert(seq, (tip, Instant::now()));
            }
        }
        let committed: Vec<u64> = self.batches.iter().filter(|(_, b)| b.height.is_some()).map(|(s, _)| *s).collect();
        for seq in committed {
            self.index_batch(seq);
        }
        self.scanned = tip;
        Ok(())
    }

    fn find_commit(&self, records: &Records, seq: u64, tip: u64) -> Result<Option<u64>, RecordsError> {
        for h in (1..=tip).rev() {
            if let Some(block) = records.ledger.block(h)? {
                let found = block.transactions.iter().any(|tx| {
                    matches!(tx, Transaction::BatchCommit(c)
                        if c.body.node == self.me && c.body.kind == self.kind && c.body.seq == seq)
                });
                if found {
                    return Ok(Some(h));
                }
            }
        }
        Ok(None)
    }

    fn queue(&mut self, leaves: Vec<Hash32>) {
        for leaf in leaves {
            if !self.index.contains_key(&leaf) && self.queued.insert(leaf) {
                self.pending.push(leaf);
            }
        }
    }

    /// Builds batches of every waiting leaf, as many as [`MAX_INFLIGHT`] allows.
    fn build_all(&mut self, records: &Records) -> Result<(), RecordsError> {
        while !self.pending.is_empty() && self.inflight.len() < MAX_INFLIGHT {
            self.build(records)?;
        }
        Ok(())
    }

    /// Builds, stores and submits the next batch if fewer than [`MAX_INFLIGHT`] are in
    /// flight.
    fn build(&mut self, records: &Records) -> Result<(), RecordsError> {
        if self.inflight.len() >= MAX_INFLIGHT || self.pending.is_empty() {
            return Ok(());
        }
        let take = self.pending.len().min(MAX_BATCH_LEAVES as usize);
        let mut leaves: Vec<Hash32> = self.pending.drain(..take).collect();
        let size = padded_size(leaves.len() as u64).unwrap_or(MAX_BATCH_LEAVES);
        let pad = size as usize - leaves.len();
        let mut random = vec![0u8; 32 * pad + 8 * size as usize];
        getrandom::fill(&mut random).map_err(|e| RecordsError::Fatal(format!("OS random source: {e}")))?;
        let (pads, shuffle) = random.split_at(32 * pad);
        for chunk in pads.chunks_exact(32) {
            let mut r = [0u8; 32];
            r.copy_from_slice(chunk);
            leaves.push(padding_leaf(&r));
        }
        // Shuffle (Fisher–Yates) so a leaf's position says nothing about how full the
        // batch was.
        for (i, chunk) in shuffle.chunks_exact(8).enumerate().skip(1).take(leaves.len() - 1) {
            let mut r = [0u8; 8];
            r.copy_from_slice(chunk);
            let j = (u64::from_le_bytes(r) % (i as u64 + 1)) as usize;
            leaves.swap(i, j);
        }
        let hashes: Vec<[u8; 32]> = leaves.iter().map(|l| HASHER.hash_leaf(&l.0)).collect();
        let root = Hash32(cairn_proto::merkle::root(&HASHER, &hashes));
        let (next, tip) = (records.ledger.next_batch_seq(&self.me, self.kind), records.ledger.height());
        let seq = next.max(self.batches.keys().next_back().map_or(0, |s| s + 1));
        let body = BatchCommit { version: 1, kind: self.kind, node: self.me, root, size, seq };
        let commit = body.sign(&self.key).map_err(|e| RecordsError::Fatal(e.to_string()))?;
        let batch = StoredBatch { version: 1, commit, leaves, height: None };
        self.store.put(&batch)?;
        debug!(seq, real = take, size, kind = ?self.kind, "batch built");
        if let Err(e) = records.txs.submit(self.tx(&batch)) {
            warn!(seq, kind = ?self.kind, "batch not admitted yet ({e}); it will be submitted again");
        }
        self.batches.insert(seq, batch);
        self.inflight.insert(seq, (tip, Instant::now()));
        Ok(())
    }

    /// Looks at blocks up to `height` for this node's batches; returns how many were
    /// newly committed.
    fn scan(&mut self, records: &Records, height: u64) -> Result<u64, RecordsError> {
        let mut newly = 0;
        while self.scanned < height {
            let h = self.scanned + 1;
            let Some(block) = records.ledger.block(h)? else { break };
            for tx in &block.transactions {
                let Transaction::BatchCommit(c) = tx else { continue };
                if c.body.node != self.me || c.body.kind != self.kind {
                    continue;
                }
                let seq = c.body.seq;
                match self.batches.get_mut(&seq) {
                    Some(b) if b.commit.body.root == c.body.root => {
                        b.height = Some(h);
                        self.store.put(b)?;
                        self.index_batch(seq);
                        newly += 1;
                        self.inflight.remove(&seq);
                    }
                    _ => {
                        warn!(seq, height = h, kind = ?self.kind, "a committed batch of this node is not in its store")
                    }
                }
            }
            self.scanned = h;
        }
        self.resubmit_stale(records);
        Ok(newly)
    }

    /// Submits again every batch in flight for [`RESUBMIT_AFTER_BLOCKS`] blocks or for
    /// [`RESUBMIT_AFTER`] (an idle chain decides few blocks, ADR 019): a node that lost
    /// its mempool in a crash may have held the only copy.
    fn resubmit_stale(&mut self, records: &Records) {
        let (next, height) = (records.ledger.next_batch_seq(&self.me, self.kind), records.ledger.height());
        let stale: Vec<u64> = self
            .inflight
            .iter()
            .filter(|(seq, (since, at))| {
                **seq >= next && (height >= since + RESUBMIT_AFTER_BLOCKS || at.elapsed() >= RESUBMIT_AFTER)
            })
            .map(|(seq, _)| *seq)
            .collect();
        for seq in stale {
            if let Some(b) = self.batches.get(&seq) {
                debug!(seq, kind = ?self.kind, "batch not committed yet; submitting it again");
                let _ = records.txs.submit(self.tx(b));
                self.inflight.insert(seq, (height, Instant::now()));
            }
        }
    }

    fn locate(&mut self, leaf: &Hash32) -> Option<Location> {
        let (seq, index) = *self.index.get(leaf)?;
        let batch = self.batches.get(&seq)?;
        let height = batch.height?;
        if !self.trees.contains_key(&seq) {
            if self.trees.len() >= TREE_CACHE
                && let Some(old) = self.trees.keys().next().copied()
            {
                self.trees.remove(&old);
            }
            let mut tree = Tree::new(&HASHER);
            for l in &batch.leaves {
                tree.push(HASHER.hash_leaf(&l.0));
            }
            self.trees.insert(seq, tree);
        }
        let tree = self.trees.get(&seq)?;
        let proof = tree.inclusion_proof(index, tree.size()).ok()?;
        Some(Location { commit: batch.commit.clone(), index, proof: proof.into_iter().map(Hash32).collect(), height })
    }
}

#[cfg(test)]
mod tests;
