//! A running node: the Malachite engine and cairn's application loop, cairn's peer
//! protocol, and the HTTP API, sharing one ledger state, block store and mempool.

pub mod api;
pub mod app;
pub mod auth;
pub mod config;
pub mod demo;
pub mod dev;
pub mod http;
pub mod mempool;
pub mod metrics;
pub mod p2p;

#[cfg(test)]
mod tests;

use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};

use anyhow::Context as _;
use arc_malachitebft_app_channel::app::types::codec::Codec as _;
use arc_malachitebft_app_channel::{
    ConsensusContext, NetworkContext, NetworkIdentity, RequestContext, Signer as _, SyncContext, WalContext,
};
use cairn_proto::Hash32;
use cairn_proto::consensus::CommitCertificate;
use cairn_proto::genesis::Genesis;
use cairn_proto::ledger::BatchKind;
use cairn_proto::transaction::Transaction;
use tokio::sync::{mpsc, watch};
use tracing::info;

use crate::consensus::codec::CairnCodec;
use crate::consensus::signing::{CairnSigner, CairnVerifier};
use crate::consensus::{Address, CairnContext, ValidatorSet};
use crate::identity::{NodeIdentity, libp2p_keypair};
use crate::ledger::state::{LedgerLimits, LedgerState};
use crate::ledger::store::BlockStore;
use crate::records::anchor::{self, AnchorStore};
use crate::records::custody::VaultHandle;
use crate::records::erasure::{ErasureStore, Erasures};
use crate::records::ingest::Records;
use crate::vault::{Vault, VaultConfig};
use config::{CustodySection, NodeFile};
use mempool::{Mempool, Refused};
use metrics::Metrics;

/// File name of the block store inside the data directory.
pub const BLOCKS_FILE: &str = "blocks.redb";
/// Directory of Malachite's write-ahead log inside the data directory.
pub const WAL_FILE: &str = "consensus.wal";
/// Directory of the vault inside the data directory.
pub const VAULT_DIR: &str = "vault";
/// File of this node's anchor batches inside the data directory.
pub const ANCHORS_FILE: &str = "anchors.redb";
/// File of this node's batches of erasure receipts inside the data directory.
pub const ERASURE_BATCHES_FILE: &str = "erasure-batches.redb";
/// File of this node's erasure receipts and erasure jobs inside the data directory.
pub const ERASURES_FILE: &str = "erasures.redb";

/// What the engine loop, the peer protocol and the HTTP API share.
pub struct Shared {
    /// The chain's genesis.
    pub genesis: Genesis,
    /// Genesis hash.
    pub chain: Hash32,
    ledger: RwLock<LedgerState>,
    /// Decided blocks and certificates.
    pub store: BlockStore,
    mempool: Mutex<Mempool>,
    /// Metrics.
    pub metrics: Metrics,
    gossip: mpsc::Sender<Transaction>,
    decided: watch::Sender<u64>,
    /// Custody: vault, anchoring, replication.
    pub records: Records,
    /// Custody and API settings.
    pub config: CustodySection,
    nonces: Mutex<auth::NonceCache>,
    idempotency: Mutex<api::Idempotency>,
    /// Readings being stored at once (429 when none is free).
    pub ingest_permits: Arc<tokio::sync::Semaphore>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared").field("chain", &self.chain).finish()
    }
}

impl Shared {
    /// Puts the parts together.
    pub fn new(
        genesis: Genesis,
        state: LedgerState,
        store: BlockStore,
        max_txs: usize,
        gossip: mpsc::Sender<Transaction>,
        records: Records,
        config: CustodySection,
    ) -> anyhow::Result<Arc<Self>> {
        let (decided, _) = watch::channel(state.height());
        Ok(Arc::new(Shared {
            chain: genesis.hash()?,
            ledger: RwLock::new(state),
            store,
            mempool: Mutex::new(Mempool::new(max_txs)),
            metrics: Metrics::default(),
            gossip,
            decided,
            genesis,
            records,
            config,
            nonces: Mutex::default(),
            idempotency: Mutex::default(),
            ingest_permits: Arc::new(tokio::sync::Semaphore::new(config.max_pending_readings)),
        }))
    }

    /// The ledger state, for reading.
    pub fn ledger(&self) -> RwLockReadGuard<'_, LedgerState> {
        self.ledger.read().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
    fn ledger_mut(&self) -> RwLockWriteGuard<'_, LedgerState> {
        self.ledger.write().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
    fn mempool(&self) -> MutexGuard<'_, Mempool> {
        self.mempool.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
    fn nonces(&self) -> MutexGuard<'_, auth::NonceCache> {
        self.nonces.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
    fn idempotency(&self) -> MutexGuard<'_, api::Idempotency> {
        self.idempotency.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
    fn notify_decided(&self, height: u64) {
        self.decided.send_replace(height);
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
    pub fn certified_block(&self, height: u64) -> anyhow::Result<Option<cairn_proto::consensus::CertifiedBlock>> {
        let Some((block, cert)) = self.store.get(height)? else { return Ok(None) };
        let certificate: CommitCertificate =
            cairn_proto::version::decode_versioned(&cert, cairn_proto::encoding::MAX_MESSAGE_LEN)
                .with_context(|| format!("stored certificate of height {height}"))?;
        Ok(Some(cairn_proto::consensus::CertifiedBlock { block, certificate }))
    }
}

/// Verifies a stored certificate against the ledger state before its block (replay).
pub fn verify_stored_certificate(
    state: &LedgerState,
    block: &cairn_proto::transaction::Block,
    bytes: &[u8],
) -> Result<(), String> {
    let cert: CommitCertificate = cairn_proto::version::decode_versioned(bytes, cairn_proto::encoding::MAX_MESSAGE_LEN)
        .map_err(|e| e.to_string())?;
    let value = block.header.hash().map_err(|e| e.to_string())?;
    cert.verify(&state.chain(), block.header.height, &value, &state.membership().validators).map_err(|e| e.to_string())
}

/// Opens the block store and rebuilds the ledger by replaying it; refuses a store that
/// was tampered with, naming the first bad height.
pub fn open_ledger(file: &NodeFile, genesis: &Genesis) -> anyhow::Result<(BlockStore, LedgerState)> {
    std::fs::create_dir_all(&file.data_dir).with_context(|| format!("creating {}", file.data_dir.display()))?;
    let store = BlockStore::open(&file.data_dir.join(BLOCKS_FILE))?;
    let state = store.replay(genesis, LedgerLimits::default(), verify_stored_certificate)?;
    Ok((store, state))
}

/// Loads and checks the genesis file.
pub fn load_genesis(path: &std::path::Path) -> anyhow::Result<Genesis> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading genesis {}", path.display()))?;
    Genesis::from_toml(&text).with_context(|| format!("genesis {}", path.display()))
}

/// Runs a node until it fails or the process is stopped.
pub async fn run(file: NodeFile) -> anyhow::Result<()> {
    let genesis = load_genesis(&file.genesis)?;
    let chain = genesis.hash()?;
    let identity = NodeIdentity::load(&file.data_dir)?;
    let public = identity.public_key();
    let me = Address(public.key_id());
    if genesis.membership.validator(&me.0).is_none() {
        anyhow::bail!("this node's key {} is not a validator in the genesis file {}", me.0, file.genesis.display());
    }
    let validators = ValidatorSet::from_membership(&genesis.membership)?;
    let genesis_peers = p2p::genesis_peer_ids(&genesis);
    for (addr, id) in file.peer_ids() {
        if !genesis_peers.contains(&id) {
            anyhow::bail!("peer {addr} in {}: {id} is not the peer id of a genesis validator", file.moniker);
        }
    }
    let (store, state) = open_ledger(&file, &genesis)?;
    info!(height = state.height(), chain = %chain, "block store replayed");

    let custody = file.custody;
    if custody.replication > genesis.membership.validators.len() {
        anyhow::bail!(
            "custody.replication is {} but the consortium has {} validators",
            custody.replication,
            genesis.membership.validators.len()
        );
    }
    let vault = Vault::open_dir(&file.data_dir.join(VAULT_DIR), VaultConfig::default()).context("opening the vault")?;
    let vault = VaultHandle::spawn(vault, 1024)?;
    let vault_watch = vault.clone();
    let anchor_store = AnchorStore::open(&file.data_dir.join(ANCHORS_FILE))?;
    let (anchors, anchorer) = anchor::channel(4096, BatchKind::Anchors);
    let erasure_batch_store = AnchorStore::open(&file.data_dir.join(ERASURE_BATCHES_FILE))?;
    let (erasure_batches, erasure_batcher) = anchor::channel(4096, BatchKind::ErasureReceipts);
    let erasures = Erasures::new(
        ErasureStore::open(&file.data_dir.join(ERASURES_FILE))?,
        erasure_batches,
        cairn_proto::Keypair::from_seed(&identity.seed),
    );
    let (outbound_tx, outbound_rx) = mpsc::channel(4096);
    let (connected_tx, connected) = watch::channel(Default::default());
    let custodian_ids = genesis.membership.validators.iter().map(|v| v.public_key.key_id());
    let custodian_ids = custodian_ids.zip(p2p::genesis_peer_ids(&genesis)).collect();
    let (jobs, jobs_rx) = mpsc::channel(4096);
    let records = Records {
        jobs,
        me: me.0,
        validators: custodian_ids,
        vault,
        anchors,
        erasures,
        p2p: outbound_tx,
        connected,
        replication: custody.replication,
    };

    let (gossip_tx, gossip_rx) = mpsc::channel(100_000);
    let shared = Shared::new(genesis, state, store, file.mempool.max_txs, gossip_tx, records, custody)?;
    shared.metrics.height.store(shared.ledger().height(), Relaxed);

    // cairn's peer protocol.
    let keypair = libp2p_keypair(&identity.seed)?;
    let p2p_listen = file.p2p.listen.parse()?;
    let p2p_peers = file.p2p.peers.iter().map(|p| p.parse()).collect::<Result<Vec<_>, _>>()?;
    let p2p = tokio::spawn(p2p::run(
        shared.clone(),
        keypair.clone(),
        p2p_listen,
        p2p_peers,
        gossip_rx,
        outbound_rx,
        connected_tx,
    ));
    tokio::spawn(crate::records::ingest::run_batcher(shared.clone(), jobs_rx, 4, custody.max_batch_readings));
    let anchoring = tokio::spawn(anchorer.run(
        shared.clone(),
        cairn_proto::Keypair::from_seed(&identity.seed),
        anchor_store,
        std::time::Duration::from_millis(custody.anchor_interval_ms),
    ));

    let erasure_batching = tokio::spawn(erasure_batcher.run(
        shared.clone(),
        cairn_proto::Keypair::from_seed(&identity.seed),
        erasure_batch_store,
        std::time::Duration::from_millis(custody.anchor_interval_ms),
    ));
    let coordinating = tokio::spawn(crate::records::erasure::run_coordinator(shared.clone()));

    // HTTP.
    let listener = tokio::net::TcpListener::bind(file.http.listen)
        .await
        .with_context(|| format!("binding the HTTP listener {}", file.http.listen))?;
    info!(addr = %file.http.listen, "HTTP API listening");
    let http = tokio::spawn(http::serve(shared.clone(), listener));

    // Consensus.
    let ctx = CairnContext { chain };
    let signer = CairnSigner::new(chain, &identity.seed);
    let keys: Vec<[u8; 32]> = shared.genesis.membership.validators.iter().map(|v| v.public_key.0).collect();
    let verifier = CairnVerifier::with_validators(chain, keys);
    let peer_id = keypair.public().to_peer_id();
    let proof = signer
        .sign_validator_proof(public.0.to_vec(), peer_id.to_bytes())
        .await
        .map_err(|e| anyhow::anyhow!("signing the validator proof: {e}"))?;
    let proof_bytes = CairnCodec.encode(&proof).map_err(|e| anyhow::anyhow!("encoding the validator proof: {e}"))?;
    let net_identity = NetworkIdentity::new_validator(file.moniker.clone(), keypair, me.to_string(), proof_bytes);
    let engine_config = file.engine_config().map_err(|e| anyhow::anyhow!(e))?;
    let (channels, _engine) = arc_malachitebft_app_channel::start_engine(
        ctx,
        engine_config,
        WalContext::new(file.data_dir.join(WAL_FILE), CairnCodec),
        NetworkContext::new(net_identity, CairnCodec),
        ConsensusContext::new_validator(me, Box::new(verifier), Box::new(signer)),
        SyncContext::new(CairnCodec),
        RequestContext::new(100),
    )
    .await
    .map_err(|e| anyhow::anyhow!("starting the consensus engine: {e}"))?;
    http::set_healthy(&shared, true);
    spawn_peer_count(shared.clone(), channels.net_requests.clone());
    let app = app::App::new(shared.clone(), me, validators, file.timing);
    tokio::select! {
        r = app.run(channels) => r,
        r = p2p => r.map_err(anyhow::Error::from).and_then(|r| r).context("p2p stopped"),
        r = http => r.map_err(anyhow::Error::from).and_then(|r| r).context("HTTP stopped"),
        r = anchoring => r.map_err(anyhow::Error::from).and_then(|r| r).context("anchoring stopped"),
        r = erasure_batching => r.map_err(anyhow::Error::from).and_then(|r| r).context("erasure receipt batching stopped"),
        r = coordinating => r.map_err(anyhow::Error::from).and_then(|r| r).context("erasure coordination stopped"),
        _ = vault_watch.closed() => Err(anyhow::anyhow!("the vault stopped after a fatal storage failure; see the log")),
    }
}

/// Keeps the consensus peer count metric current.
fn spawn_peer_count(shared: Arc<Shared>, requests: mpsc::Sender<arc_malachitebft_app_channel::NetworkRequest>) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(2));
        loop {
            tick.tick().await;
            match arc_malachitebft_app_channel::NetworkRequest::dump_state(&requests).await {
                Ok(Some(dump)) => shared.metrics.consensus_peers.store(dump.peers.len() as u64, Relaxed),
                Ok(None) => {}
                Err(arc_malachitebft_app_channel::ConsensusRequestError::Closed) => return,
                Err(_) => {}
            }
        }
    });
}
