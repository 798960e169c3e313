//! An in-process consortium for the record layer's tests: N custodians, each a real
//! [`Records`] with its own sled vault and redb stores in a temporary directory, joined
//! by a simulated network ([`SimNet`]: direct calls to the peer's `serve`, with nodes
//! that can be taken down and brought back, and a count of what was asked) and one
//! simulated ledger ([`SimLedger`]: a real [`LedgerState`] that decides a block, with a
//! commit certificate signed by every validator, whenever transactions wait). No process,
//! socket or consensus engine: a replication, an erasure or a refusal takes milliseconds.
//!
//! In the spirit of commonware's simulated p2p and raft-rs's test harness.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]
#![allow(missing_debug_implementations)] // test harness

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use cairn_proto::consensus::CertifiedBlock;
use cairn_proto::encoding::encode;
use cairn_proto::genesis::Genesis;
use cairn_proto::ledger::BatchKind;
use cairn_proto::membership::{MemberKey, Role};
use cairn_proto::transaction::{Block, Transaction};
use cairn_proto::{Hash32, KeyId, Keypair, SecretSeed};
use tokio::sync::{Notify, watch};

use super::anchor::{self, AnchorStore};
use super::custody::VaultHandle;
use super::erasure::{ErasureStore, Erasures};
use super::fhir::Reading;
use super::ingest::{BatchTerms, Ingested};
use super::ports::{AskError, LedgerReadError, LedgerView, Peers, TxSink};
use super::wire::{Request, Response};
use super::{Parts, Records, RecordsError, Settings};
use crate::ledger::state::{LedgerLimits, LedgerState, log_leaf};
use crate::testing;
pub use crate::testing::seed;
use crate::vault::{Vault, VaultConfig};

/// The gateway key every simulated consortium registers.
pub fn gateway() -> Keypair {
    Keypair::from_seed(&SecretSeed::from_bytes([0x47; 32]))
}

/// A second registered gateway.
pub fn other_gateway() -> Keypair {
    Keypair::from_seed(&SecretSeed::from_bytes([0x48; 32]))
}

fn genesis(n: usize) -> Genesis {
    let members = [gateway(), other_gateway()]
        .iter()
        .map(|k| MemberKey { organisation: "city".into(), public_key: k.public(), role: Role::Gateway })
        .collect();
    testing::genesis("sim", n, members)
}

impl SimLedger {
    /// The genesis, to verify certificates against.
    pub fn genesis_for_tests(&self) -> &Genesis {
        &self.genesis
    }
}

/// One ledger for the whole consortium: decides a block of the waiting transactions on
/// [`SimLedger::decide`], certified by every validator.
pub struct SimLedger {
    genesis: Genesis,
    chain: Hash32,
    keys: Vec<Keypair>,
    state: Mutex<LedgerState>,
    blocks: Mutex<Vec<CertifiedBlock>>,
    pending: Mutex<Vec<Transaction>>,
    decided: watch::Sender<u64>,
    /// What [`SimLedger::announce_proposal`] set.
    next_proposal: watch::Sender<Option<Instant>>,
    /// Notified when a transaction waits.
    submitted: Notify,
}

impl SimLedger {
    fn new(genesis: Genesis, keys: Vec<Keypair>) -> Arc<Self> {
        let state = LedgerState::from_genesis(&genesis, LedgerLimits::default()).unwrap();
        Arc::new(SimLedger {
            chain: genesis.hash().unwrap(),
            genesis,
            keys,
            state: Mutex::new(state),
            blocks: Mutex::new(Vec::new()),
            pending: Mutex::new(Vec::new()),
            decided: watch::channel(0).0,
            next_proposal: watch::channel(None).0,
            submitted: Notify::new(),
        })
    }

    /// Announces, as a starting height does, that the next block will be proposed at `at`
    /// (the simulated ledger itself still decides whenever a transaction waits).
    pub fn announce_proposal(&self, at: Instant) {
        self.next_proposal.send_replace(Some(at));
    }

    /// Decides one block of every waiting transaction (none if none wait); returns the
    /// height.
    pub fn decide(&self) -> u64 {
        let txs = std::mem::take(&mut *self.pending.lock().unwrap());
        let mut state = self.state.lock().unwrap();
        if txs.is_empty() {
            return state.height();
        }
        let time = crate::clock::now_ms().max(state.last_time_ms() + 1);
        let proposer = self.keys[0].public().key_id();
        let (block, _rejected) = state.propose(txs, time, proposer).unwrap();
        state.apply(&block).unwrap();
        let certificate = testing::certify(&self.genesis, &block, &self.keys);
        let height = block.header.height;
        self.blocks.lock().unwrap().push(CertifiedBlock { block, certificate });
        drop(state);
        self.decided.send_replace(height);
        height
    }
}

impl LedgerView for SimLedger {
    fn genesis(&self) -> &Genesis {
        &self.genesis
    }
    fn chain(&self) -> Hash32 {
        self.chain
    }
    fn height(&self) -> u64 {
        self.state.lock().unwrap().height()
    }
    fn last_hash(&self) -> Hash32 {
        self.state.lock().unwrap().last_hash()
    }
    fn block(&self, height: u64) -> Result<Option<Block>, LedgerReadError> {
        Ok(self.certified_block(height)?.map(|c| c.block))
    }
    fn certified_block(&self, height: u64) -> Result<Option<CertifiedBlock>, LedgerReadError> {
        let blocks = self.blocks.lock().unwrap();
        Ok(height.checked_sub(1).and_then(|i| blocks.get(i as usize)).cloned())
    }
    fn log_inclusion(&self, log_leaf: &Hash32, size: u64) -> Result<Option<(u64, Vec<Hash32>)>, LedgerReadError> {
        self.state.lock().unwrap().log_inclusion_of(&log_leaf.0, size).map_err(|e| LedgerReadError(e.to_string()))
    }
    fn next_batch_seq(&self, node: &KeyId, kind: BatchKind) -> u64 {
        self.state.lock().unwrap().next_batch_seq(node, kind)
    }
    fn decided(&self) -> watch::Receiver<u64> {
        self.decided.subscribe()
    }
    fn next_proposal(&self) -> watch::Receiver<Option<Instant>> {
        self.next_proposal.subscribe()
    }
    fn membership(&self) -> cairn_proto::membership::Membership {
        self.state.lock().unwrap().membership().clone()
    }
    fn policy(&self) -> (cairn_proto::policy::PurposePolicy, u64) {
        let state = self.state.lock().unwrap();
        let (p, v) = state.policy();
        (p.clone(), v)
    }
}

impl TxSink for SimLedger {
    fn submit(&self, tx: Transaction) -> Result<Hash32, String> {
        let state = self.state.lock().unwrap();
        state.check_tx(&tx).map_err(|e| e.to_string())?;
        let id = Hash32(*blake3::hash(&encode(&tx).map_err(|e| e.to_string())?).as_bytes());
        let mut pending = self.pending.lock().unwrap();
        if pending.contains(&tx) {
            return Err("duplicate transaction".into());
        }
        pending.push(tx);
        drop((pending, state));
        self.submitted.notify_one();
        Ok(id)
    }
}

fn toggle(set: &Mutex<HashSet<KeyId>>, node: KeyId, on: bool) {
    let mut set = set.lock().unwrap();
    if on {
        set.insert(node);
    } else {
        set.remove(&node);
    }
}

/// How much faster than real time the simulated network gives up on a hung peer.
pub const TIME_SCALE: u32 = 100;

/// The simulated network: who is up, and what was asked of whom.
#[derive(Default)]
pub struct SimNet {
    nodes: Mutex<HashMap<KeyId, Weak<Records>>>,
    down: Mutex<HashSet<KeyId>>,
    refusing: Mutex<HashSet<KeyId>>,
    silent: Mutex<HashSet<KeyId>>,
    /// Requests delivered, by (to, kind of request).
    delivered: Mutex<HashMap<(KeyId, &'static str), u64>>,
}

fn kind(r: &Request) -> &'static str {
    match r {
        Request::Status => "status",
        Request::Replicate(_) => "replicate",
        Request::Read { .. } => "read",
        Request::Subject(_) => "subject",
        Request::Erase(_) => "erase",
        Request::Hold { .. } => "hold",
        Request::Claim { .. } => "claim",
        Request::Settle { .. } => "settle",
        Request::Documents(_) => "documents",
        Request::LogKeys(_) => "log keys",
        Request::AccessEntries(_) => "access entries",
        Request::ErasureCertificates(..) => "erasure certificates",
    }
}

impl SimNet {
    /// Takes a node off the network (it neither sends nor receives) or brings it back.
    pub fn set_down(&self, node: KeyId, down: bool) {
        toggle(&self.down, node, down);
    }

    /// Makes a node answer every request with an error (a failing disk, say) or stop.
    pub fn set_refusing(&self, node: KeyId, refusing: bool) {
        toggle(&self.refusing, node, refusing);
    }

    /// Makes a node take requests and never answer (hung), or answer again.
    pub fn set_silent(&self, node: KeyId, silent: bool) {
        toggle(&self.silent, node, silent);
    }

    /// The simulation's timeout of `request`: its own timeout (`Request::timeout`)
    /// divided by [`TIME_SCALE`], so that a hung peer costs milliseconds.
    pub fn timeout(request: &Request) -> std::time::Duration {
        request.timeout() / TIME_SCALE
    }

    /// How many requests of `kind` reached `to`.
    pub fn delivered(&self, to: KeyId, kind: &'static str) -> u64 {
        self.delivered.lock().unwrap().get(&(to, kind)).copied().unwrap_or(0)
    }

    fn up(&self, node: &KeyId) -> bool {
        !self.down.lock().unwrap().contains(node)
    }
}

/// One node's [`Peers`] on the [`SimNet`].
pub struct SimPeers {
    me: KeyId,
    net: Arc<SimNet>,
}

#[async_trait::async_trait]
impl Peers for SimPeers {
    fn connected(&self) -> HashSet<KeyId> {
        if !self.net.up(&self.me) {
            return HashSet::new();
        }
        let nodes = self.net.nodes.lock().unwrap();
        nodes.keys().filter(|k| **k != self.me && self.net.up(k)).copied().collect()
    }

    async fn ask(&self, to: KeyId, request: Request) -> Result<Response, AskError> {
        if !self.net.up(&self.me) || !self.net.up(&to) {
            return Err(AskError::NotDelivered("not connected (simulated)".into()));
        }
        let node = self.net.nodes.lock().unwrap().get(&to).and_then(Weak::upgrade);
        let Some(node) = node else { return Err(AskError::NotDelivered("no such node".into())) };
        *self.net.delivered.lock().unwrap().entry((to, kind(&request))).or_default() += 1;
        if self.net.refusing.lock().unwrap().contains(&to) {
            return Err(AskError::Refused("the custodian failed (simulated)".into()));
        }
        let timeout = SimNet::timeout(&request);
        let silent = self.net.silent.lock().unwrap().contains(&to);
        let answer = async {
            if silent {
                std::future::pending::<()>().await;
            }
            node.serve(self.me, request).await
        };
        match tokio::time::timeout(timeout, answer).await {
            Err(_) => Err(AskError::NotDelivered(format!("no answer within {} ms (simulated)", timeout.as_millis()))),
            Ok(Response::Error(why)) => Err(AskError::Refused(why)),
            Ok(answer) => Ok(answer),
        }
    }
}

/// A consortium of `n` custodians in one process.
pub struct Sim {
    /// The shared ledger.
    pub ledger: Arc<SimLedger>,
    /// The network.
    pub net: Arc<SimNet>,
    /// The nodes, in genesis order.
    pub nodes: Vec<Arc<Records>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    _dir: tempfile::TempDir,
}

impl Drop for Sim {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl Sim {
    /// Starts `n` custodians keeping `replication` copies of each record, with their
    /// anchoring actors and a ledger that decides as soon as a transaction waits. The
    /// erasure coordinator is not started: tests drive its rounds
    /// (`erasure::coordinator::round`).
    pub async fn start(n: usize, replication: usize) -> Sim {
        let dir = tempfile::tempdir().unwrap();
        let keys: Vec<Keypair> = (0..n).map(testing::validator).collect();
        let ledger = SimLedger::new(genesis(n), keys.clone());
        let net = Arc::new(SimNet::default());
        let mut nodes = Vec::new();
        let mut tasks = Vec::new();
        for (i, key) in keys.iter().enumerate() {
            let home = dir.path().join(format!("v{i}"));
            std::fs::create_dir_all(&home).unwrap();
            let vault = Vault::open_dir(&home.join("vault"), VaultConfig::default()).unwrap();
            let (anchors, anchorer) = anchor::channel(1024, BatchKind::Anchors);
            let (batches, batcher) = anchor::channel(1024, BatchKind::ErasureReceipts);
            let (consents, consent_batcher) = anchor::channel(1024, BatchKind::ConsentEvents);
            let (access_batches, access_batcher) = anchor::channel(1024, BatchKind::AccessEvents);
            let access = super::access::AccessLog::new(
                super::access::store::AccessLogHandle::spawn(
                    &home.join("access-log.redb"),
                    key.public().key_id(),
                    6 * 365 * 86_400_000,
                )
                .unwrap(),
                access_batches,
                super::access::review::ReviewStore::open(&home.join("review.redb")).unwrap(),
            );
            let erasures =
                Erasures::new(ErasureStore::open(&home.join("erasures.redb")).unwrap(), batches, key.clone());
            let settings = Settings {
                replication,
                max_batch_readings: 10_000,
                retention_sweep: Duration::from_secs(3600),
                idempotency_keys: 1000,
                break_glass_ms: 4 * 3_600_000,
                review_ms: 72 * 3_600_000,
                log_retention_ms: 6 * 365 * 86_400_000,
            };
            let parts = Parts {
                me: key.public().key_id(),
                settings,
                vault: VaultHandle::spawn(vault, 64).unwrap(),
                anchors,
                consents,
                erasures,
                access,
            };
            let peers = Arc::new(SimPeers { me: key.public().key_id(), net: net.clone() });
            let (records, jobs) = Records::new(parts, ledger.clone(), ledger.clone(), peers);
            net.nodes.lock().unwrap().insert(key.public().key_id(), Arc::downgrade(&records));
            tasks.push(tokio::spawn(super::ingest::run_batcher(records.clone(), jobs, 2)));
            let interval = Duration::from_millis(5);
            let batchers = [
                (anchorer, "anchors.redb"),
                (batcher, "erasure-batches.redb"),
                (consent_batcher, "consent-batches.redb"),
                (access_batcher, "access-batches.redb"),
            ];
            for (run, store) in batchers {
                let store = AnchorStore::open(&home.join(store)).unwrap();
                let r = records.clone();
                let key = key.clone();
                tasks.push(tokio::spawn(async move {
                    if let Err(e) = run.run(r, key, store, interval).await {
                        panic!("a batcher stopped: {e}");
                    }
                }));
            }
            nodes.push(records);
        }
        let l = ledger.clone();
        tasks.push(tokio::spawn(async move {
            loop {
                l.submitted.notified().await;
                l.decide();
            }
        }));
        Sim { ledger, net, nodes, tasks, _dir: dir }
    }

    /// The directory holding every node's files.
    pub fn dir(&self) -> &std::path::Path {
        self._dir.path()
    }

    /// Node `i`'s key id.
    pub fn id(&self, i: usize) -> KeyId {
        self.nodes[i].me
    }

    /// Stores `count` readings of `subject` through node `home`, by `gateway`.
    pub async fn ingest(
        &self,
        home: usize,
        gateway: &Keypair,
        subject: &str,
        count: usize,
    ) -> Result<Vec<Ingested>, RecordsError> {
        let terms = BatchTerms {
            gateway: gateway.public().key_id(),
            purpose: "TREAT".into(),
            now_ms: crate::clock::now_ms(),
            retention_ms: 86_400_000,
        };
        let readings = (0..count)
            .map(|i| Reading {
                subject: subject.into(),
                resource: format!(r#"{{"resourceType":"Observation","status":"final","subject":{{"reference":"{subject}"}},"valueQuantity":{{"value":{i}}}}}"#).into_bytes(),
            })
            .collect();
        self.nodes[home].ingest(terms, readings).await.map(|(_, r)| r)
    }

    /// Waits until `done` holds, checking after every decided block (at most 10 s).
    pub async fn until(&self, what: &str, mut done: impl AsyncFnMut() -> bool) {
        let mut decided = self.ledger.decided();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while !done().await {
            tokio::select! {
                _ = decided.changed() => {}
                _ = tokio::time::sleep(Duration::from_millis(20)) => {}
                _ = tokio::time::sleep_until(deadline) => panic!("{what}: not within 10 s"),
            }
        }
    }

    /// The log leaf of a batch commitment, for checks against the ledger.
    pub fn log_leaf(commit: &cairn_proto::ledger::BatchCommit) -> Hash32 {
        Hash32(log_leaf(commit).unwrap())
    }
}
