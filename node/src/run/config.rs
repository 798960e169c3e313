//! The node's configuration file (`cairn-node run --config FILE`, TOML). Relative paths
//! are relative to the file's directory.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use arc_malachitebft_app_channel::app::config::{
    ConsensusConfig, DiscoveryConfig, NodeConfig, P2pConfig, PubSubProtocol, ValueSyncConfig,
};
use serde::{Deserialize, Serialize};

/// Why a configuration cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file cannot be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// File.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid TOML for this schema.
    #[error("{path}: {message}")]
    Parse {
        /// File.
        path: PathBuf,
        /// Parser message (names the field).
        message: String,
    },
    /// A field has an unusable value.
    #[error("{path}: field `{field}`: {message}")]
    Field {
        /// File.
        path: PathBuf,
        /// Field path.
        field: &'static str,
        /// Why.
        message: String,
    },
}

/// The configuration file.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeFile {
    /// A name for logs.
    pub moniker: String,
    /// Data directory (holds `node.key`, the block store and the consensus WAL).
    pub data_dir: PathBuf,
    /// The chain's genesis file.
    pub genesis: PathBuf,
    /// Consensus network (Malachite).
    pub consensus: NetSection,
    /// cairn's own peer protocol: transaction gossip and requests.
    pub p2p: NetSection,
    /// HTTP API, metrics and health.
    pub http: HttpSection,
    /// Block timing.
    #[serde(default)]
    pub timing: Timing,
    /// Mempool bounds.
    #[serde(default)]
    pub mempool: MempoolSection,
    /// Custody, anchoring and the gateway API.
    #[serde(default)]
    pub custody: CustodySection,
    /// The access log, break-glass and its review (ADR 018).
    #[serde(default)]
    pub access: AccessSection,
}

/// The access log, break-glass and its review (ADR 018; docs/access.md).
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AccessSection {
    /// Longest break-glass time box this node takes, minutes.
    pub break_glass_minutes: u64,
    /// Minutes a break-glass declaration may stay unreviewed before it counts as overdue.
    pub review_minutes: u64,
    /// Days access-log entries are kept (the law keeps access logs for years),
    /// independent of record retention.
    pub log_retention_days: u64,
}

impl Default for AccessSection {
    fn default() -> Self {
        Self { break_glass_minutes: 240, review_minutes: 72 * 60, log_retention_days: 6 * 365 }
    }
}

/// Custody, anchoring and the gateway API.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CustodySection {
    /// Custodians per record, the receiving node included (1 to the number of validators).
    pub replication: usize,
    /// How often each node commits a batch of its new leaves while the chain is idle,
    /// milliseconds; while heights follow one another it commits once per height, just
    /// before the next proposal (ADR 011, "When a batch is built").
    pub anchor_interval_ms: u64,
    /// Readings being stored at once; beyond this the API answers 429.
    pub max_pending_readings: usize,
    /// Readings in one request.
    pub max_batch_readings: usize,
    /// Largest request body, bytes.
    pub max_body_bytes: usize,
    /// How far a signed request's timestamp may be from the node's clock, milliseconds.
    pub request_skew_ms: u64,
    /// Idempotency keys remembered (the oldest are forgotten first).
    pub idempotency_keys: usize,
    /// How often the node looks for records whose retention ran out, milliseconds.
    pub retention_sweep_ms: u64,
}

impl Default for CustodySection {
    fn default() -> Self {
        Self {
            replication: 2,
            anchor_interval_ms: 100,
            max_pending_readings: 50_000,
            max_batch_readings: 10_000,
            max_body_bytes: 8 << 20,
            request_skew_ms: 300_000,
            idempotency_keys: 100_000,
            retention_sweep_ms: 60_000,
        }
    }
}

/// A libp2p listener and its peers.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetSection {
    /// Listen address, a multiaddr such as `/ip4/0.0.0.0/tcp/26000`.
    pub listen: String,
    /// Peers to keep connected: multiaddrs ending in `/p2p/PEER_ID`. Only these peers
    /// may connect (and each must be a genesis validator).
    #[serde(default)]
    pub peers: Vec<String>,
}

/// The HTTP listener: HTTPS with `tls_cert` and `tls_key` (sandbox condition ⑤), or
/// plain HTTP only when `plaintext = true` says so (behind the operator's own TLS
/// terminator). One of the two is required.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpSection {
    /// Socket address, such as `127.0.0.1:8080`.
    pub listen: SocketAddr,
    /// PEM file with the node's certificate chain (leaf first); relative to this file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_cert: Option<PathBuf>,
    /// PEM file with the certificate's private key (PKCS#8); relative to this file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_key: Option<PathBuf>,
    /// Serve plain HTTP (no TLS): only behind a TLS terminator the operator runs.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub plaintext: bool,
}

/// Block timing, in milliseconds.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Timing {
    /// Target time between blocks (Malachite's per-height target time).
    pub block_interval_ms: u64,
    /// How long to wait for a proposal before prevoting nil.
    pub propose_timeout_ms: u64,
    /// Prevote timeout.
    pub prevote_timeout_ms: u64,
    /// Precommit timeout.
    pub precommit_timeout_ms: u64,
    /// Longest time without a block while nothing waits to be committed (ADR 019): a
    /// proposer with only an empty block to offer holds it back, and the round lapses,
    /// until this long after the last decided block. 0 proposes an empty block at every
    /// interval, as before issue 17.
    #[serde(default = "default_idle_block_ms")]
    pub idle_block_ms: u64,
}

fn default_idle_block_ms() -> u64 {
    60_000
}

impl Default for Timing {
    fn default() -> Self {
        Self {
            block_interval_ms: 500,
            propose_timeout_ms: 2_000,
            prevote_timeout_ms: 1_000,
            precommit_timeout_ms: 1_000,
            idle_block_ms: default_idle_block_ms(),
        }
    }
}

/// Mempool bounds.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MempoolSection {
    /// Most transactions waiting.
    pub max_txs: usize,
}

impl Default for MempoolSection {
    fn default() -> Self {
        Self { max_txs: 100_000 }
    }
}

impl NodeFile {
    /// Reads and checks a configuration file; relative paths become relative to its directory.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text =
            std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.to_path_buf(), source })?;
        let mut file: NodeFile = toml::from_str(&text)
            .map_err(|e| ConfigError::Parse { path: path.to_path_buf(), message: e.to_string() })?;
        let base = path.parent().unwrap_or(Path::new("."));
        file.data_dir = base.join(&file.data_dir);
        file.genesis = base.join(&file.genesis);
        file.http.tls_cert = file.http.tls_cert.map(|p| base.join(p));
        file.http.tls_key = file.http.tls_key.map(|p| base.join(p));
        file.check(path)?;
        Ok(file)
    }

    fn check(&self, path: &Path) -> Result<(), ConfigError> {
        let field = |field, message: String| ConfigError::Field { path: path.to_path_buf(), field, message };
        let addr = |s: &str| s.parse::<libp2p::Multiaddr>().map_err(|e| format!("`{s}`: {e}"));
        addr(&self.consensus.listen).map_err(|m| field("consensus.listen", m))?;
        addr(&self.p2p.listen).map_err(|m| field("p2p.listen", m))?;
        match (&self.http.tls_cert, &self.http.tls_key, self.http.plaintext) {
            (Some(_), Some(_), false) | (None, None, true) => {}
            (Some(_), Some(_), true) => {
                return Err(field("http.plaintext", "set either tls_cert and tls_key, or plaintext = true".into()));
            }
            (None, None, false) => {
                return Err(field(
                    "http.tls_cert",
                    "the API is served over TLS: set tls_cert and tls_key (PEM files), or plaintext = true \
                     when a TLS terminator of yours stands in front"
                        .into(),
                ));
            }
            _ => return Err(field("http.tls_key", "tls_cert and tls_key go together".into())),
        }
        for (name, peers) in [("consensus.peers", &self.consensus.peers), ("p2p.peers", &self.p2p.peers)] {
            for p in peers {
                if peer_id_of(p).map_err(|m| field(name, m))?.is_none() {
                    return Err(field(name, format!("`{p}` must end in /p2p/PEER_ID")));
                }
            }
        }
        let t = &self.timing;
        for (name, v) in [
            ("timing.block_interval_ms", t.block_interval_ms),
            ("timing.propose_timeout_ms", t.propose_timeout_ms),
            ("timing.prevote_timeout_ms", t.prevote_timeout_ms),
            ("timing.precommit_timeout_ms", t.precommit_timeout_ms),
        ] {
            if v == 0 || v > 600_000 {
                return Err(field(name, format!("{v} is not between 1 and 600000")));
            }
        }
        if t.idle_block_ms > 86_400_000 {
            return Err(field("timing.idle_block_ms", format!("{} is more than a day (86400000)", t.idle_block_ms)));
        }
        if self.mempool.max_txs == 0 {
            return Err(field("mempool.max_txs", "must be at least 1".into()));
        }
        let c = &self.custody;
        for (name, v, max) in [
            ("custody.replication", c.replication as u64, 64),
            ("custody.anchor_interval_ms", c.anchor_interval_ms, 600_000),
            ("custody.max_pending_readings", c.max_pending_readings as u64, 10_000_000),
            ("custody.max_batch_readings", c.max_batch_readings as u64, 65_536),
            ("custody.max_body_bytes", c.max_body_bytes as u64, 64 << 20),
            ("custody.request_skew_ms", c.request_skew_ms, 3_600_000),
            ("custody.idempotency_keys", c.idempotency_keys as u64, 10_000_000),
            ("custody.retention_sweep_ms", c.retention_sweep_ms, 86_400_000),
            ("access.break_glass_minutes", self.access.break_glass_minutes, 7 * 24 * 60),
            ("access.review_minutes", self.access.review_minutes, 365 * 24 * 60),
            ("access.log_retention_days", self.access.log_retention_days, 100 * 365),
        ] {
            if v == 0 || v > max {
                return Err(field(name, format!("{v} is not between 1 and {max}")));
            }
        }
        if c.max_batch_readings > c.max_pending_readings {
            return Err(field("custody.max_batch_readings", "must not exceed custody.max_pending_readings".into()));
        }
        Ok(())
    }

    /// Peer ids named in the configuration (consensus and p2p peers).
    pub fn peer_ids(&self) -> Vec<(String, libp2p::PeerId)> {
        self.consensus
            .peers
            .iter()
            .chain(&self.p2p.peers)
            .filter_map(|p| Some((p.clone(), peer_id_of(p).ok()??)))
            .collect()
    }

    /// Malachite's configuration for this node.
    pub fn engine_config(&self) -> Result<EngineConfig, String> {
        let listen_addr = self.consensus.listen.parse().map_err(|e| format!("consensus.listen: {e}"))?;
        let persistent_peers = self
            .consensus
            .peers
            .iter()
            .map(|p| p.parse().map_err(|e| format!("consensus.peers: {e}")))
            .collect::<Result<_, _>>()?;
        let p2p = P2pConfig {
            listen_addr,
            persistent_peers,
            persistent_peers_only: true,
            discovery: DiscoveryConfig { enabled: false, ..DiscoveryConfig::default() },
            protocol: PubSubProtocol::default(),
            pubsub_max_size: bytesize(16 << 20),
            rpc_max_size: bytesize(96 << 20),
            ..P2pConfig::default()
        };
        let consensus = ConsensusConfig { p2p, ..ConsensusConfig::default() };
        let value_sync = ValueSyncConfig {
            enabled: true,
            status_update_interval: Duration::from_secs(2),
            request_timeout: Duration::from_secs(10),
            max_response_size: bytesize(crate::consensus::codec::MAX_SYNC_RESPONSE as u64),
            batch_size: 5,
            ..ValueSyncConfig::default()
        };
        Ok(EngineConfig { moniker: self.moniker.clone(), consensus, value_sync })
    }
}

/// The `/p2p/PEER_ID` of a multiaddr, if it has one.
fn peer_id_of(addr: &str) -> Result<Option<libp2p::PeerId>, String> {
    let a: libp2p::Multiaddr = addr.parse().map_err(|e| format!("`{addr}`: {e}"))?;
    Ok(a.iter().find_map(|p| match p {
        libp2p::multiaddr::Protocol::P2p(id) => Some(id),
        _ => None,
    }))
}

fn bytesize(n: u64) -> bytesize::ByteSize {
    bytesize::ByteSize::b(n)
}

/// What Malachite reads through its `NodeConfig` trait.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    moniker: String,
    consensus: ConsensusConfig,
    value_sync: ValueSyncConfig,
}

impl NodeConfig for EngineConfig {
    fn moniker(&self) -> &str {
        &self.moniker
    }
    fn consensus(&self) -> &ConsensusConfig {
        &self.consensus
    }
    fn consensus_mut(&mut self) -> &mut ConsensusConfig {
        &mut self.consensus
    }
    fn value_sync(&self) -> &ValueSyncConfig {
        &self.value_sync
    }
    fn value_sync_mut(&mut self) -> &mut ValueSyncConfig {
        &mut self.value_sync
    }
}
