//! A running node: the one place that wires the parts together (ADR 010, ADR 014). It
//! replays the block store into the [`Chain`], opens the vault and the record layer's
//! stores, builds [`Records`] on its ports (the chain as ledger view and transaction
//! sink, the p2p client as peers), starts the p2p event loop, the ingest batcher, the two
//! batchers, the erasure coordinator and the HTTP API, then Malachite's engine and the
//! app loop ([`app`]). The node stops when any of them stops.

pub mod app;
pub mod config;

#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use arc_malachitebft_app_channel::app::types::codec::Codec as _;
use arc_malachitebft_app_channel::{
    ConsensusContext, NetworkContext, NetworkIdentity, RequestContext, Signer as _, SyncContext, WalContext,
};
use cairn_proto::consensus::CommitCertificate;
use cairn_proto::genesis::Genesis;
use cairn_proto::ledger::BatchKind;
use tokio::sync::mpsc;
use tracing::info;

use crate::api::{self, ApiState, Limits};
use crate::chain::Chain;
use crate::consensus::codec::CairnCodec;
use crate::consensus::signing::{CairnSigner, CairnVerifier};
use crate::consensus::{Address, CairnContext, ValidatorSet};
use crate::identity::{NodeIdentity, libp2p_keypair};
use crate::ledger::state::{LedgerLimits, LedgerState};
use crate::ledger::store::BlockStore;
use crate::metrics::Metrics;
use crate::net;
use crate::records::access::AccessLog;
use crate::records::access::review::ReviewStore;
use crate::records::access::store::AccessLogHandle;
use crate::records::anchor::{self, AnchorStore};
use crate::records::custody::VaultHandle;
use crate::records::erasure::{ErasureStore, Erasures};
use crate::records::{Parts, Records, Settings};
use crate::vault::{Vault, VaultConfig};
use config::NodeFile;

/// File name of the block store inside the data directory.
pub const BLOCKS_FILE: &str = "blocks.redb";
/// Directory of Malachite's write-ahead log inside the data directory.
pub const WAL_FILE: &str = "consensus.wal";
/// Directory of the vault inside the data directory.
pub const VAULT_DIR: &str = "vault";
/// File of this node's anchor batches inside the data directory.
pub const ANCHORS_FILE: &str = "anchors.redb";
/// File of this node's consent-event batches (leaves only: hashes that name no one).
pub const CONSENT_BATCHES_FILE: &str = "consent-batches.redb";
/// File of this node's access-event batches (leaves only).
pub const ACCESS_BATCHES_FILE: &str = "access-batches.redb";
/// File of this node's access log (ADR 018): rows keyed by entry handle, events sealed
/// under the subjects' log keys.
pub const ACCESS_LOG_FILE: &str = "access-log.redb";
/// File of the break-glass declarations this node took, with their reviews.
pub const REVIEW_FILE: &str = "review.redb";
/// File of this node's batches of erasure receipts inside the data directory.
pub const ERASURE_BATCHES_FILE: &str = "erasure-batches.redb";
/// File of this node's erasure receipts and erasure jobs inside the data directory.
pub const ERASURES_FILE: &str = "erasures.redb";
/// Seen request nonces (`api::nonces`).
pub const NONCES_FILE: &str = "nonces.redb";

/// Why a node did not start or stopped.
///
/// `Refused` is a setup the node will not run with (configuration, genesis, identity,
/// a tampered store): nothing was started. `Fatal` is a part that failed while running
/// (a store, the vault, the consensus engine): the node stops rather than limp on.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// The node will not start with this setup.
    #[error("{0}")]
    Refused(String),
    /// A running part failed.
    #[error("{0}")]
    Fatal(String),
}

/// `Refused`, saying what was being done.
fn refused(what: impl std::fmt::Display, e: impl std::fmt::Display) -> NodeError {
    NodeError::Refused(format!("{what}: {e}"))
}

fn fatal(what: &str, e: impl std::fmt::Display) -> NodeError {
    NodeError::Fatal(format!("{what}: {e}"))
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
pub fn open_ledger(file: &NodeFile, genesis: &Genesis) -> Result<(BlockStore, LedgerState), NodeError> {
    std::fs::create_dir_all(&file.data_dir).map_err(|e| refused(format!("creating {}", file.data_dir.display()), e))?;
    let store =
        BlockStore::open(&file.data_dir.join(BLOCKS_FILE)).map_err(|e| refused("opening the block store", e))?;
    let state = store
        .replay(genesis, LedgerLimits::default(), verify_stored_certificate)
        .map_err(|e| refused("replaying the block store", e))?;
    Ok((store, state))
}

/// Loads and checks the genesis file.
pub fn load_genesis(path: &std::path::Path) -> Result<Genesis, NodeError> {
    let text = std::fs::read_to_string(path).map_err(|e| refused(format!("reading genesis {}", path.display()), e))?;
    Genesis::from_toml(&text).map_err(|e| refused(format!("genesis {}", path.display()), e))
}

/// Waits for a part's task and names it when it ends.
async fn part<E: std::fmt::Display>(name: &str, task: tokio::task::JoinHandle<Result<(), E>>) -> NodeError {
    match task.await {
        Ok(Ok(())) => NodeError::Fatal(format!("{name} stopped")),
        Ok(Err(e)) => fatal(&format!("{name} stopped"), e),
        Err(e) => fatal(&format!("{name} failed"), e),
    }
}

/// Runs a node until it fails or the process is stopped.
pub async fn run(file: NodeFile) -> Result<(), NodeError> {
    let genesis = load_genesis(&file.genesis)?;
    let chain_id = genesis.hash().map_err(|e| refused("genesis", e))?;
    let identity = NodeIdentity::load(&file.data_dir).map_err(|e| refused("node key", e))?;
    let public = identity.public_key();
    let me = Address(public.key_id());
    if genesis.membership.validator(&me.0).is_none() {
        return Err(NodeError::Refused(format!(
            "this node's key {} is not a validator in the genesis file {}",
            me.0,
            file.genesis.display()
        )));
    }
    let validators = ValidatorSet::from_membership(&genesis.membership).map_err(|e| refused("validators", e))?;
    let genesis_peers = net::genesis_peer_ids(&genesis);
    for (addr, id) in file.peer_ids() {
        if !genesis_peers.contains(&id) {
            return Err(NodeError::Refused(format!(
                "peer {addr} in {}: {id} is not the peer id of a genesis validator",
                file.moniker
            )));
        }
    }
    let (store, state) = open_ledger(&file, &genesis)?;
    info!(height = state.height(), chain = %chain_id, "block store replayed");

    let custody = file.custody;
    if custody.replication > genesis.membership.validators.len() {
        return Err(NodeError::Refused(format!(
            "custody.replication is {} but the consortium has {} validators",
            custody.replication,
            genesis.membership.validators.len()
        )));
    }
    let vault = Vault::open_dir(&file.data_dir.join(VAULT_DIR), VaultConfig::default())
        .map_err(|e| refused("opening the vault", e))?;
    let vault = VaultHandle::spawn(vault, 1024).map_err(|e| refused("starting the vault thread", e))?;
    let vault_watch = vault.clone();
    let open = |name: &str| AnchorStore::open(&file.data_dir.join(name)).map_err(|e| refused("opening a store", e));
    let (anchor_store, erasure_batch_store) = (open(ANCHORS_FILE)?, open(ERASURE_BATCHES_FILE)?);
    let consent_batch_store = open(CONSENT_BATCHES_FILE)?;
    let access_batch_store = open(ACCESS_BATCHES_FILE)?;
    let (access_batches, access_batcher) = anchor::channel(4096, BatchKind::AccessEvents);
    let access_log =
        AccessLogHandle::spawn(&file.data_dir.join(ACCESS_LOG_FILE), me.0, file.access.log_retention_days * 86_400_000)
            .map_err(|e| refused("opening the access log", e))?;
    let reviews = ReviewStore::open(&file.data_dir.join(REVIEW_FILE)).map_err(|e| refused("opening a store", e))?;
    let access = AccessLog::new(access_log, access_batches, reviews);
    let (anchors, anchorer) = anchor::channel(4096, BatchKind::Anchors);
    let (consents, consent_batcher) = anchor::channel(4096, BatchKind::ConsentEvents);
    let (erasure_batches, erasure_batcher) = anchor::channel(4096, BatchKind::ErasureReceipts);
    let erasure_store =
        ErasureStore::open(&file.data_dir.join(ERASURES_FILE)).map_err(|e| refused("opening a store", e))?;
    let erasures = Erasures::new(erasure_store, erasure_batches, cairn_proto::Keypair::from_seed(&identity.seed));

    let metrics = Arc::new(Metrics::default());
    metrics.height.store(state.height(), Relaxed);
    let _ = metrics.data_dir.set(file.data_dir.clone());
    let (gossip_tx, gossip_rx) = mpsc::channel(100_000);
    let chain = Chain::new(genesis, state, store, file.mempool.max_txs, gossip_tx, metrics)
        .map_err(|e| refused("genesis", e))?;

    // cairn's peer network: the client is the record layer's `Peers` port.
    let keypair = libp2p_keypair(&identity.seed).map_err(|e| refused("libp2p key", e))?;
    let p2p_listen = file.p2p.listen.parse().map_err(|e| refused("p2p.listen", e))?;
    let p2p_peers =
        file.p2p.peers.iter().map(|p| p.parse()).collect::<Result<Vec<_>, _>>().map_err(|e| refused("p2p.peers", e))?;
    let (peers, event_loop) =
        net::new(&chain.genesis, keypair.clone(), p2p_listen, p2p_peers).map_err(|e| refused("starting p2p", e))?;

    let settings = Settings {
        replication: custody.replication,
        max_batch_readings: custody.max_batch_readings,
        retention_sweep: std::time::Duration::from_millis(custody.retention_sweep_ms),
        idempotency_keys: custody.idempotency_keys,
        break_glass_ms: file.access.break_glass_minutes * 60_000,
        review_ms: file.access.review_minutes * 60_000,
        log_retention_ms: file.access.log_retention_days * 86_400_000,
    };
    let parts = Parts { me: me.0, settings, vault, anchors, consents, erasures, access };
    let (records, jobs) = Records::new(parts, chain.clone(), chain.clone(), Arc::new(peers));

    let p2p = tokio::spawn(event_loop.run(chain.clone(), records.clone(), gossip_rx));
    tokio::spawn(crate::records::ingest::run_batcher(records.clone(), jobs, 4));
    let interval = std::time::Duration::from_millis(custody.anchor_interval_ms);
    let key = || cairn_proto::Keypair::from_seed(&identity.seed);
    let anchoring = tokio::spawn(anchorer.run(records.clone(), key(), anchor_store, interval));
    let erasure_batching = tokio::spawn(erasure_batcher.run(records.clone(), key(), erasure_batch_store, interval));
    let consent_batching = tokio::spawn(consent_batcher.run(records.clone(), key(), consent_batch_store, interval));
    let access_batching = tokio::spawn(access_batcher.run(records.clone(), key(), access_batch_store, interval));
    let coordinating = tokio::spawn(crate::records::erasure::coordinator::run_coordinator(records.clone()));

    // HTTP.
    let listener = tokio::net::TcpListener::bind(file.http.listen)
        .await
        .map_err(|e| refused(format!("binding the HTTP listener {}", file.http.listen), e))?;
    info!(addr = %file.http.listen, "HTTP API listening");
    let limits = Limits {
        max_pending_readings: custody.max_pending_readings,
        max_batch_readings: custody.max_batch_readings,
        max_body_bytes: custody.max_body_bytes,
        request_skew_ms: custody.request_skew_ms,
    };
    let nonces = api::nonces::NonceStore::open(&file.data_dir.join(NONCES_FILE), crate::clock::now_ms())
        .map_err(|e| refused("opening the nonce store", e))?;
    let api = ApiState::new(chain.clone(), records.clone(), limits, Arc::new(nonces));
    let tls = match (&file.http.tls_cert, &file.http.tls_key) {
        (Some(cert), Some(key)) => {
            info!(addr = %file.http.listen, "HTTP API served over TLS");
            Some(api::tls::server_config(cert, key).map_err(|e| refused("loading the API's TLS certificate", e))?)
        }
        _ => {
            tracing::warn!(
                addr = %file.http.listen,
                "HTTP API served WITHOUT TLS (http.plaintext = true): only behind a TLS terminator of the operator's"
            );
            None
        }
    };
    let http = tokio::spawn(api::serve(api, listener, tls));

    // Consensus.
    let ctx = CairnContext { chain: chain_id };
    let signer = CairnSigner::new(chain_id, &identity.seed);
    let keys: Vec<[u8; 32]> = chain.genesis.membership.validators.iter().map(|v| v.public_key.0).collect();
    let verifier = CairnVerifier::with_validators(chain_id, keys);
    let peer_id = keypair.public().to_peer_id();
    let proof = signer
        .sign_validator_proof(public.0.to_vec(), peer_id.to_bytes())
        .await
        .map_err(|e| refused("signing the validator proof", e))?;
    let proof_bytes = CairnCodec.encode(&proof).map_err(|e| refused("encoding the validator proof", e))?;
    let net_identity = NetworkIdentity::new_validator(file.moniker.clone(), keypair, me.to_string(), proof_bytes);
    let engine_config = file.engine_config().map_err(NodeError::Refused)?;
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
    .map_err(|e| refused("starting the consensus engine", e))?;
    chain.metrics.healthy.store(true, Relaxed);
    spawn_peer_count(chain.clone(), channels.net_requests.clone());
    let app = app::App::new(chain.clone(), me, validators, file.timing);
    tokio::select! {
        r = app.run(channels) => r,
        e = part("p2p", p2p) => Err(e),
        e = part("HTTP", http) => Err(e),
        e = part("anchoring", anchoring) => Err(e),
        e = part("erasure receipt batching", erasure_batching) => Err(e),
        e = part("consent event batching", consent_batching) => Err(e),
        e = part("access event batching", access_batching) => Err(e),
        e = part("erasure coordination", coordinating) => Err(e),
        _ = vault_watch.closed() => Err(NodeError::Fatal("the vault stopped after a fatal storage failure; see the log".into())),
        what = records.failed() => Err(NodeError::Fatal(format!("the record layer failed: {what}"))),
    }
}

/// Keeps the consensus peer count metric current.
fn spawn_peer_count(chain: Arc<Chain>, requests: mpsc::Sender<arc_malachitebft_app_channel::NetworkRequest>) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(2));
        loop {
            tick.tick().await;
            match arc_malachitebft_app_channel::NetworkRequest::dump_state(&requests).await {
                Ok(Some(dump)) => chain.metrics.consensus_peers.store(dump.peers.len() as u64, Relaxed),
                Ok(None) => {}
                Err(arc_malachitebft_app_channel::ConsensusRequestError::Closed) => return,
                Err(_) => {}
            }
        }
    });
}
