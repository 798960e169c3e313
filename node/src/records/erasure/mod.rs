//! Erasure across custodians (DESIGN.md §2, §7, §8; ADR 013), by the roles ADR 013 names:
//!
//! - [`job`]: an accepted request ([`Job`]) and the coordinator's pure bookkeeping
//!   ([`Job::due`], [`Job::absorb`], [`Pacing`]);
//! - [`store`]: `erasures.redb` — receipts, intents, jobs, legal holds;
//! - [`accept`]: accepting a request (resolve it to records with their anchor receipts,
//!   fix its time, deadline and hash, store the job before answering) and legal holds;
//! - [`custodian`]: erasing at a custodian on an order, signing and batching the
//!   receipt; live-challenge answers;
//! - [`coordinator`]: the loop that sends orders until every custodian's receipt is
//!   committed, then keeps the certificate that verifies as a regulator would verify it;
//! - [`retention`]: the retention sweep and its clock.
//!
//! The request itself (which names a subject) is only hashed.

pub mod accept;
pub mod coordinator;
pub mod custodian;
pub mod job;
pub mod retention;
pub mod store;

#[cfg(test)]
mod tests;

use std::sync::Arc;

use cairn_proto::record::RecordId;
use cairn_proto::{KeyId, Keypair};
use tokio::sync::Notify;

use super::anchor::AnchorHandle;
use super::{RecordsError, StoreError};
pub use job::{Due, EraseAnswer, EraseOrder, Job, JobRecord, Pacing};
pub use retention::TEST_CLOCK_ENV;
pub use store::ErasureStore;

/// How long custodians have to erase after a request: one month (GDPR art. 12(3)).
pub const DEADLINE_MS: u64 = 30 * 86_400_000;
/// Most records one request may cover.
pub const MAX_RECORDS: usize = 10_000;

/// Why a request was not accepted. Every variant but `Fatal` is a rejection: nothing was
/// stored, the caller is told why.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ErasureError {
    /// A record the caller cannot see (or that does not exist, or was erased).
    #[error("no record {0} for this gateway")]
    NotFound(RecordId),
    /// The subject has no records.
    #[error("the subject has no records")]
    NoRecords,
    /// The request names nothing, too much, or one record twice.
    #[error("{0}")]
    Invalid(String),
    /// Not all records could be found or are anchored yet.
    #[error("{0}")]
    Unavailable(String),
    /// Records of the request are under legal hold (their ids): nothing is erased.
    #[error("{} record(s) of the request are under legal hold; nothing is erased until the hold is lifted", .0.len())]
    Held(Vec<RecordId>),
    /// A record is already being erased by an open request at this node (its id).
    #[error("a record is already being erased by request {0}; follow that request")]
    InProgress(String),
    /// A store failed: the node must stop.
    #[error("{0}")]
    Fatal(String),
}

impl ErasureError {
    /// The text to log: the error without a record id (ARCHITECTURE.md, what may be
    /// logged). `NotFound` and `Unavailable` may name a record; they are logged by kind.
    pub fn for_log(&self) -> String {
        match self {
            ErasureError::NotFound(_) => "a record was not found".into(),
            ErasureError::Unavailable(_) => "records could not all be found or are not anchored yet".into(),
            e => e.to_string(),
        }
    }
}

impl From<StoreError> for ErasureError {
    fn from(e: StoreError) -> Self {
        ErasureError::Fatal(e.to_string())
    }
}

impl From<RecordsError> for ErasureError {
    fn from(e: RecordsError) -> Self {
        match e {
            RecordsError::NotFound(rid) => ErasureError::NotFound(rid),
            e if e.is_fatal() => ErasureError::Fatal(e.to_string()),
            e => ErasureError::Unavailable(e.to_string()),
        }
    }
}

/// What erasure needs at a node.
pub struct Erasures {
    /// Receipts, intents, jobs and holds.
    pub store: Arc<ErasureStore>,
    /// The batcher of this node's erasure receipts (`BatchKind::ErasureReceipts`).
    pub batches: AnchorHandle,
    /// Signs receipts and challenge answers.
    key: Keypair,
    /// Wakes the coordinator when a job is accepted.
    wake: Notify,
    /// Held while a new job is checked against the open ones and stored.
    creating: std::sync::Mutex<()>,
}

impl std::fmt::Debug for Erasures {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Erasures").field("key", &self.key.public().key_id()).finish_non_exhaustive()
    }
}

impl Erasures {
    /// Puts the parts together.
    pub fn new(store: ErasureStore, batches: AnchorHandle, key: Keypair) -> Self {
        Self { store: Arc::new(store), batches, key, wake: Notify::new(), creating: std::sync::Mutex::new(()) }
    }

    /// Signs the identity statement of `GET /v1/identity` (`request::identity_statement`)
    /// with this node's validator key; returns the public key and the signature.
    pub fn sign_identity(&self, statement: &[u8]) -> (cairn_proto::PublicKey, cairn_proto::identity::Signature) {
        (self.key.public(), self.key.sign(cairn_proto::hash::domain::SIG_IDENTITY, statement))
    }

    /// Signs an export manifest with this node's validator key (`cairn_proto::export`).
    pub fn sign_export(
        &self,
        manifest: cairn_proto::export::ExportManifest,
    ) -> Result<cairn_proto::export::SignedExportManifest, cairn_proto::encoding::EncodeError> {
        cairn_proto::export::SignedExportManifest::sign(manifest, &self.key)
    }

    /// This node's key id (the custodian named in its receipts).
    pub fn custodian(&self) -> KeyId {
        self.key.public().key_id()
    }
}
