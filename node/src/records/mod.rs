//! The record lifecycle (DESIGN.md §4, §8): readings in, custody at every custodian,
//! anchoring of leaves in padded batches, receipts and reading back, erasure across
//! custodians with certificates, retention and legal holds.
//!
//! **Layering (ADR 014).** This layer stands below the runtime: it reaches the node only
//! through the ports of [`ports`] (a read-only ledger view, a transaction sink, the
//! peers), held by the one context [`Records`]. Nothing here imports `run`, `api`,
//! `net` or `chain`; `.ci/check-deps` fails CI if anything does. It owns the messages of
//! `/cairn/req/1` ([`wire`]) and answers them in [`Records::serve`].

pub mod access;
pub mod anchor;
pub mod claims;
pub mod consent;
pub mod custody;
pub mod erasure;
pub mod fhir;
pub mod ingest;
pub mod ports;
pub mod read;
pub mod receipts;
pub mod wire;

#[cfg(test)]
pub mod sim;
#[cfg(test)]
mod sim_tests;

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use cairn_proto::KeyId;
use cairn_proto::record::RecordId;
use tokio::sync::{mpsc, watch};

use anchor::AnchorHandle;
use custody::VaultHandle;
use erasure::Erasures;
use ports::{AskError, LedgerReadError, LedgerView, Peers, TxSink};
use wire::{Request, Response};

use crate::vault::VaultError;

/// Why a submission or a read did not happen.
///
/// `NotFound`, `Unavailable` and a vault rejection are *rejections* (answer the caller,
/// change nothing, carry on); `Fatal` and a fatal vault failure are a failed store or
/// ledger read after which the node must stop ([`RecordsError::is_fatal`],
/// [`Records::note`]). A message may name a record the caller named: it is answered;
/// what is logged is [`RecordsError::for_log`], which names none.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RecordsError {
    /// Not enough custodians are reachable to acknowledge, or a peer did not answer.
    #[error("{0}")]
    Unavailable(String),
    /// The vault refused or failed.
    #[error(transparent)]
    Vault(#[from] VaultError),
    /// No custodian has the record (or the caller may not see it).
    #[error("no record {0}")]
    NotFound(RecordId),
    /// A store of this layer (anchors, erasures) or the ledger failed.
    #[error("{0}")]
    Fatal(String),
}

impl RecordsError {
    /// True for failures that must stop the node.
    pub fn is_fatal(&self) -> bool {
        matches!(self, RecordsError::Fatal(_)) || matches!(self, RecordsError::Vault(v) if v.is_fatal())
    }

    /// The text to log: the error without a record id (ARCHITECTURE.md, what may be
    /// logged). Only the not-found kinds name a record; they are logged by kind.
    pub fn for_log(&self) -> String {
        match self {
            RecordsError::NotFound(_) | RecordsError::Vault(VaultError::NotFound(_)) => "a record was not found".into(),
            RecordsError::Vault(VaultError::Invalid(_)) => "the vault refused a request as invalid".into(),
            // A custodian's refusal, quoted, may name a record.
            RecordsError::Unavailable(_) => "custodians unreachable, or one refused".into(),
            e => e.to_string(),
        }
    }
}

impl From<LedgerReadError> for RecordsError {
    fn from(e: LedgerReadError) -> Self {
        RecordsError::Fatal(e.to_string())
    }
}

/// A redb store of this layer failed (anchors.redb, erasure-batches.redb, erasures.redb),
/// or what it holds does not decode: fatal.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{store}: {message}")]
pub struct StoreError {
    /// Which store.
    pub store: &'static str,
    /// What failed.
    pub message: String,
}

impl StoreError {
    /// A failure of `store`.
    pub fn new(store: &'static str, e: impl std::fmt::Display) -> Self {
        Self { store, message: e.to_string() }
    }
}

impl From<StoreError> for RecordsError {
    fn from(e: StoreError) -> Self {
        RecordsError::Fatal(e.to_string())
    }
}

/// Counters of this layer, rendered by the node's `/metrics`.
#[derive(Debug, Default)]
pub struct Counters {
    /// Retention sweeps completed.
    pub retention_sweeps: AtomicU64,
    /// Records erased in this node's vault.
    pub records_erased: AtomicU64,
    /// Erasure certificates assembled (and verified) by this node as coordinator.
    pub erasure_certificates: AtomicU64,
    /// Erasures accepted whose `erase` event could not be written in the subject's
    /// access log (ADR 018).
    pub erasure_events_unlogged: AtomicU64,
    /// Consent-layer documents this node took.
    pub documents: AtomicU64,
    /// Read decisions: permitted, refused.
    pub access_permitted: AtomicU64,
    /// Read decisions refused.
    pub access_refused: AtomicU64,
    /// Reads under a break-glass declaration.
    pub break_glass_reads: AtomicU64,
    /// Break-glass reviews open at this node (a gauge, refreshed when `/metrics` is read).
    pub reviews_open: AtomicU64,
    /// Open reviews past due (a gauge, refreshed when `/metrics` is read).
    pub reviews_overdue: AtomicU64,
}

/// Settings of this layer (from `node.toml`'s `[custody]`).
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// Custodians per record, this node included.
    pub replication: usize,
    /// Most readings merged into one ingest group.
    pub max_batch_readings: usize,
    /// Time between retention sweeps.
    pub retention_sweep: Duration,
    /// Idempotency claims remembered ([`claims`]).
    pub idempotency_keys: usize,
    /// Longest break-glass time box this node takes, milliseconds (`[access]
    /// break_glass_minutes`, 240 by default).
    pub break_glass_ms: u64,
    /// Time a break-glass declaration may stay unreviewed, milliseconds (`[access]
    /// review_minutes`, 72 hours by default); past it the review counts as overdue.
    pub review_ms: u64,
    /// How long access-log entries are kept, milliseconds (`[access]
    /// log_retention_days`, 6 × 365 by default), independent of record retention.
    pub log_retention_ms: u64,
}

/// The record lifecycle at one node: its stores and actors, and the ports to the rest of
/// the node. One per node, shared as `Arc<Records>`.
pub struct Records {
    /// This node's key id.
    pub me: KeyId,
    /// Genesis validators (the possible custodians), in genesis order.
    pub validators: Vec<KeyId>,
    /// Settings.
    pub settings: Settings,
    /// The vault actor.
    pub vault: VaultHandle,
    /// The batcher of record leaves (`BatchKind::Anchors`).
    pub anchors: AnchorHandle,
    /// The batcher of consent-event leaves (`BatchKind::ConsentEvents`).
    pub consents: AnchorHandle,
    /// The consent-layer documents held here ([`consent`]).
    pub documents: consent::Documents,
    /// Erasure: receipts, jobs, holds, the receipt batcher.
    pub erasures: Erasures,
    /// The access log, its batcher and the break-glass review list ([`access`]).
    pub access: access::AccessLog,
    /// The decided chain.
    pub ledger: Arc<dyn LedgerView>,
    /// Where batch commitments go.
    pub txs: Arc<dyn TxSink>,
    /// The other validators.
    pub peers: Arc<dyn Peers>,
    /// Counters for `/metrics`.
    pub counters: Counters,
    /// Idempotency claims this validator knows ([`claims`]).
    pub claims: claims::Claims,
    /// The ingest batcher's queue ([`ingest::run_batcher`]).
    pub(crate) jobs: mpsc::Sender<ingest::Job>,
    /// The first fatal failure of this layer, if any: the runtime stops the node on it.
    fatal: watch::Sender<Option<String>>,
}

impl std::fmt::Debug for Records {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Records").field("me", &self.me).finish_non_exhaustive()
    }
}

/// The parts [`Records::new`] puts together.
#[derive(Debug)]
pub struct Parts {
    /// This node's key id.
    pub me: KeyId,
    /// Settings.
    pub settings: Settings,
    /// The vault actor.
    pub vault: VaultHandle,
    /// Record leaf batcher.
    pub anchors: AnchorHandle,
    /// Consent-event leaf batcher.
    pub consents: AnchorHandle,
    /// Erasure state.
    pub erasures: Erasures,
    /// The access log.
    pub access: access::AccessLog,
}

impl Records {
    /// Puts the layer together; returns it with the receiving end of the ingest batcher
    /// (to be run by [`ingest::run_batcher`]).
    pub fn new(
        parts: Parts,
        ledger: Arc<dyn LedgerView>,
        txs: Arc<dyn TxSink>,
        peers: Arc<dyn Peers>,
    ) -> (Arc<Self>, mpsc::Receiver<ingest::Job>) {
        let (jobs, jobs_rx) = mpsc::channel(4096);
        let validators = ledger.genesis().membership.validators.iter().map(|v| v.public_key.key_id()).collect();
        let records = Records {
            me: parts.me,
            validators,
            settings: parts.settings,
            vault: parts.vault,
            anchors: parts.anchors,
            consents: parts.consents,
            documents: consent::Documents::default(),
            erasures: parts.erasures,
            access: parts.access,
            ledger,
            txs,
            peers,
            counters: Counters::default(),
            claims: claims::Claims::new(parts.settings.idempotency_keys),
            jobs,
            fatal: watch::channel(None).0,
        };
        (Arc::new(records), jobs_rx)
    }

    /// Notes `e` if it is fatal (a store or the ledger failed): the node stops
    /// ([`Records::failed`]). Returns `e`, for use on the error path.
    pub fn note(&self, e: RecordsError) -> RecordsError {
        if e.is_fatal() {
            self.note_fatal(e.for_log());
        }
        e
    }

    /// Notes a fatal failure, described by `what` (no record id or subject in it).
    pub fn note_fatal(&self, what: String) {
        self.fatal.send_if_modified(|first| {
            let fresh = first.is_none();
            if fresh {
                *first = Some(what);
            }
            fresh
        });
    }

    /// Resolves with the first fatal failure of this layer (the runtime then stops).
    pub async fn failed(&self) -> String {
        let mut first = self.fatal.subscribe();
        loop {
            if let Some(what) = first.borrow_and_update().clone() {
                return what;
            }
            if first.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }

    /// Asks validator `to`; a `Response::Error` is [`AskError::Refused`].
    pub async fn ask(&self, to: KeyId, request: Request) -> Result<Response, AskError> {
        self.peers.ask(to, request).await
    }

    /// Answers one `/cairn/req/1` request from validator `from`.
    pub async fn serve(&self, from: KeyId, request: Request) -> Response {
        match request {
            Request::Status => Response::Status {
                chain: self.ledger.chain(),
                height: self.ledger.height(),
                last_hash: self.ledger.last_hash(),
            },
            Request::Replicate(replicas) => self.accept_replicas(from, replicas).await,
            Request::Read { rid, gateway } => match self.read_here(rid, gateway).await {
                Ok(answer) => Response::Record(Box::new(answer)),
                Err(RecordsError::NotFound(_)) => Response::NotFound,
                Err(e) => Response::Error(self.note(e).to_string()),
            },
            Request::Subject(subject) => match self.subject_here(subject).await {
                Ok(list) => Response::Records(list),
                Err(e) => Response::Error(self.note(e).to_string()),
            },
            Request::Erase(orders) => Response::Erased(erasure::custodian::erase_here(self, orders).await),
            Request::Hold { rids, on } => {
                // A redb commit syncs: kept off the async workers.
                let store = self.erasures.store.clone();
                let now = crate::clock::now_ms();
                match tokio::task::spawn_blocking(move || store.set_holds(&rids, on, now)).await {
                    Ok(Ok(())) => Response::Held,
                    Ok(Err(e)) => Response::Error(self.note(e.into()).to_string()),
                    Err(e) => Response::Error(format!("the hold task failed: {e}")),
                }
            }
            Request::Claim { id, request, holder } => {
                Response::Claim(self.claims.take(id, request, holder, crate::clock::now_ms()))
            }
            Request::Settle { id, request, holder, answer } => {
                // Only the holder settles or releases its own claim.
                if holder == from {
                    self.claims.settle(id, request, holder, answer);
                }
                Response::Settled
            }
            Request::Documents(query) => match self.documents_here(&query).await {
                Ok(list) => Response::Documents(list),
                Err(e) => Response::Error(self.note(e).to_string()),
            },
            Request::LogKeys(subject) => match self.held_log_keys(&subject).await {
                Ok(list) => Response::LogKeys(list.into_iter().map(|(id, k)| (id, *k.bytes())).collect()),
                Err(e) => Response::Error(self.note(e).to_string()),
            },
            Request::AccessEntries(keys) => {
                let keys = keys.into_iter().map(access::LogKey::from_bytes).collect();
                match self.access_entries_here(keys).await {
                    Ok(list) => Response::AccessEntries(list),
                    Err(e) => Response::Error(self.note(e).to_string()),
                }
            }
            Request::ErasureCertificates(request, rids) => match self.erasures.store.certificates_of(&request, &rids) {
                Ok(list) => Response::ErasureCertificates(list),
                Err(e) => Response::Error(self.note(RecordsError::from(e)).to_string()),
            },
        }
    }
}
