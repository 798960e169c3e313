//! Erasure across custodians (DESIGN.md §2, §7, §8; ADR 013).
//!
//! A request (a gateway's, naming records or one of its subjects) is accepted by the node
//! it reaches, the **coordinator**. It resolves the request to records, each with its
//! anchor receipt, fixes the request's time, deadline and hash, and stores the work as a
//! [`Job`] in `erasures.redb` before answering, so a restart resumes it. The request
//! itself (which names a subject) is only hashed.
//!
//! The coordinator then sends every custodian of every record an [`EraseOrder`] until
//! each answers with its erasure receipt committed on chain. A custodian
//! ([`erase_here`]) records an intent, erases through its vault (one keystore epoch per
//! order batch), signs an [`ErasureReceipt`], stores it and hands its leaf to its batcher
//! of `BatchKind::ErasureReceipts`; asked again, it answers from its store, with the
//! proof of commitment once its batch is in a block. A custodian that is down is asked
//! again every round until it answers. When every custodian of a record has a committed
//! receipt, the coordinator builds the record's [`ErasureCertificate`] and checks it
//! with the same verifier a regulator runs before it is served.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use cairn_proto::encoding::encode;
use cairn_proto::erasure::{
    ChallengeAnswer, CommittedErasure, ErasureCertificate, ErasureReceipt, ErasureRequest, ErasureScope,
    ErasureTrigger, SignedChallengeAnswer, SignedErasureReceipt,
};
use cairn_proto::receipt::AnchorReceipt;
use cairn_proto::record::RecordId;
use cairn_proto::signed::SignedBody as _;
use cairn_proto::version::{Versioned, decode_versioned};
use cairn_proto::{Hash32, KeyId, Keypair};
use redb::{ReadableDatabase as _, ReadableTable as _, TableDefinition};
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use super::anchor::AnchorHandle;
use super::ingest::ReadAnswer;
use super::receipts::{InLog, in_log, read_anywhere};
use crate::run::Shared;
use crate::run::p2p::{Request, Response};
use crate::vault::{SubjectRef, VaultError};

/// How long custodians have to erase after a request: one month (GDPR art. 12(3)).
pub const DEADLINE_MS: u64 = 30 * 86_400_000;
/// Most records one request may cover.
pub const MAX_RECORDS: usize = 10_000;
/// Longest wait, when a request is accepted, for its records to be anchored.
const ANCHOR_WAIT: Duration = Duration::from_secs(10);
/// Most orders sent to one custodian in one message.
const ORDERS_PER_MESSAGE: usize = 1_000;
/// Longest wait for a custodian's answer.
const ASK_TIMEOUT: Duration = Duration::from_secs(10);
/// Pause between rounds while jobs are open and nothing else wakes the coordinator.
const ROUND: Duration = Duration::from_millis(500);
/// The longest pause before asking again a custodian that refused or failed.
const MAX_RETRY: Duration = Duration::from_secs(60);
const STORED_LIMIT: usize = 64 << 20;
/// Records read per vault command by the retention sweep.
const SWEEP_PAGE: usize = 1_000;

const RECEIPTS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("erasure_receipts");
const INTENTS: TableDefinition<&[u8], u64> = TableDefinition::new("erasure_intents");
const JOBS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("erasure_jobs");
/// The ids of the jobs not yet complete (kept with each job write; rebuilt at open).
const OPEN_JOBS: TableDefinition<&[u8], ()> = TableDefinition::new("erasure_open_jobs");
const HOLDS: TableDefinition<&[u8], u64> = TableDefinition::new("legal_holds");

/// The handle under which a hold on `rid` is kept: a hash, so the store holds no record
/// id of a live record.
fn hold_key(rid: &RecordId) -> Hash32 {
    cairn_proto::hash::hash_parts(cairn_proto::hash::domain::HOLD, &[&rid.0])
}

/// What one custodian is asked to do for one record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EraseOrder {
    /// Hash of the request.
    pub request_hash: Hash32,
    /// Why.
    pub trigger: ErasureTrigger,
    /// When the coordinator accepted the request, Unix milliseconds.
    pub requested_at_ms: u64,
    /// Deadline, Unix milliseconds.
    pub deadline_ms: u64,
    /// The record.
    pub rid: RecordId,
    /// Its leaf (checked against the vault before erasing).
    pub leaf: Hash32,
}

impl EraseOrder {
    /// Key of this order's intent and receipt in the store: request hash ‖ record leaf.
    pub(crate) fn key(&self) -> [u8; 64] {
        let mut k = [0u8; 64];
        k[..32].copy_from_slice(&self.request_hash.0);
        k[32..].copy_from_slice(&self.leaf.0);
        k
    }
}

/// A custodian's answer to one order.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum EraseAnswer {
    /// Erased; the receipt is signed and waits for its batch to be committed.
    Signed(SignedErasureReceipt),
    /// Erased, and the receipt is committed on chain.
    Committed(Box<CommittedErasure>),
    /// Not done, and why.
    Refused(String),
}

/// Why a request was not accepted.
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
    /// A record is already being erased by an open request at this node (its id).
    #[error("a record is already being erased by request {0}; follow that request")]
    InProgress(String),
    /// A store or encoding failure.
    #[error("{0}")]
    Internal(String),
}

fn internal(e: impl std::fmt::Display) -> ErasureError {
    ErasureError::Internal(e.to_string())
}

/// One record of a job: what the certificate needs, gathered as custodians answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JobRecord {
    /// The record's anchor receipt (its id, manifest, leaf and proof of anchoring).
    pub anchor: AnchorReceipt,
    /// Signed receipts so far, in manifest order.
    pub receipts: Vec<Option<SignedErasureReceipt>>,
    /// Committed receipts so far, in manifest order.
    pub committed: Vec<Option<CommittedErasure>>,
    /// Each custodian's last refusal or failure, in manifest order, for the status.
    pub errors: Vec<Option<String>>,
}

/// An accepted request and how far it got.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Job {
    version: u8,
    /// The request's id (random).
    pub id: [u8; 16],
    /// Who asked: the gateway, or this node for retention expiry.
    pub requested_by: KeyId,
    /// The gateway that wrote the records (it may follow the request).
    pub owner: KeyId,
    /// Why.
    pub trigger: ErasureTrigger,
    /// Hash of the request.
    pub request_hash: Hash32,
    /// When the request was accepted, Unix milliseconds.
    pub requested_at_ms: u64,
    /// Deadline, Unix milliseconds.
    pub deadline_ms: u64,
    /// The records it covers.
    pub records: Vec<JobRecord>,
}

impl Versioned for Job {
    const VERSION: u8 = 1;
    fn version(&self) -> u8 {
        self.version
    }
}

impl Job {
    /// Every custodian of every record committed its receipt.
    pub fn complete(&self) -> bool {
        self.records.iter().all(|r| r.committed.iter().all(Option::is_some))
    }

    /// The id as hex.
    pub fn id_hex(&self) -> String {
        hex::encode(self.id)
    }

    fn order(&self, r: &JobRecord) -> EraseOrder {
        EraseOrder {
            request_hash: self.request_hash,
            trigger: self.trigger,
            requested_at_ms: self.requested_at_ms,
            deadline_ms: self.deadline_ms,
            rid: r.anchor.rid,
            leaf: r.anchor.leaf,
        }
    }

    /// The certificate of record `i`, once every custodian's receipt is committed.
    pub fn certificate(&self, i: usize) -> Option<ErasureCertificate> {
        let r = self.records.get(i)?;
        let erasures = r.committed.iter().cloned().collect::<Option<Vec<_>>>()?;
        Some(ErasureCertificate {
            version: 1,
            trigger: self.trigger,
            request_hash: self.request_hash,
            requested_at_ms: self.requested_at_ms,
            deadline_ms: self.deadline_ms,
            record: r.anchor.clone(),
            erasures,
        })
    }

    /// Every record's certificate, once all exist.
    pub fn certificates(&self) -> Option<Vec<ErasureCertificate>> {
        (0..self.records.len()).map(|i| self.certificate(i)).collect()
    }
}

/// A stored signed receipt (its body carries the version byte).
fn decode_receipt(bytes: &[u8]) -> anyhow::Result<SignedErasureReceipt> {
    let r: SignedErasureReceipt = cairn_proto::encoding::decode(bytes, STORED_LIMIT)?;
    anyhow::ensure!(r.body.version == 1, "stored erasure receipt of unknown version {}", r.body.version);
    Ok(r)
}

/// Erasure receipts, intents and jobs (redb, `erasures.redb`; permanent side). Holds no
/// subject and no content: record ids and leaves of records being or already erased, as
/// their certificates name them (ADR 013).
pub struct ErasureStore {
    db: redb::Database,
}

impl std::fmt::Debug for ErasureStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ErasureStore")
    }
}

impl ErasureStore {
    /// Opens or creates the store.
    pub fn open(path: &Path) -> anyhow::Result<Self> {
        let db = redb::Database::create(path)
            .map_err(|e| anyhow::anyhow!("cannot open the erasure store {}: {e}", path.display()))?;
        let txn = db.begin_write()?;
        txn.open_table(RECEIPTS)?;
        txn.open_table(INTENTS)?;
        txn.open_table(HOLDS)?;
        {
            // The open-job index, rebuilt from the jobs (one pass per start).
            let jobs = txn.open_table(JOBS)?;
            let mut open = txn.open_table(OPEN_JOBS)?;
            open.retain(|_, _| false)?;
            for row in jobs.iter()? {
                let (id, v) = row?;
                let job: Job = decode_versioned(v.value(), STORED_LIMIT)?;
                if !job.complete() {
                    open.insert(id.value(), ())?;
                }
            }
        }
        txn.commit()?;
        Ok(Self { db })
    }

    fn receipt(&self, key: &[u8]) -> anyhow::Result<Option<SignedErasureReceipt>> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(RECEIPTS)?;
        let Some(v) = table.get(key)? else { return Ok(None) };
        Ok(Some(decode_receipt(v.value())?))
    }

    fn intent(&self, key: &[u8]) -> anyhow::Result<Option<u64>> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(INTENTS)?;
        Ok(table.get(key)?.map(|v| v.value()))
    }

    pub(crate) fn put_intents(&self, keys: &[[u8; 64]], epoch: u64) -> anyhow::Result<()> {
        let txn = self.db.begin_write()?;
        {
            let mut table = txn.open_table(INTENTS)?;
            for k in keys {
                table.insert(k.as_slice(), epoch)?;
            }
        }
        txn.commit()?;
        Ok(())
    }

    /// Stores receipts and drops their intents, in one transaction.
    fn put_receipts(&self, receipts: &[([u8; 64], SignedErasureReceipt)]) -> anyhow::Result<()> {
        let txn = self.db.begin_write()?;
        {
            let mut table = txn.open_table(RECEIPTS)?;
            let mut intents = txn.open_table(INTENTS)?;
            for (k, r) in receipts {
                table.insert(k.as_slice(), encode(r)?.as_slice())?;
                intents.remove(k.as_slice())?;
            }
        }
        txn.commit()?;
        Ok(())
    }

    /// The leaves of every receipt this node signed.
    pub fn receipt_leaves(&self) -> anyhow::Result<Vec<Hash32>> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(RECEIPTS)?;
        let mut out = Vec::new();
        for row in table.iter()? {
            let (_, v) = row?;
            let r = decode_receipt(v.value())?;
            out.push(r.body.leaf()?);
        }
        Ok(out)
    }

    /// The record leaves of every receipt this node signed (records it erased).
    pub fn signed_record_leaves(&self) -> anyhow::Result<Vec<Hash32>> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(RECEIPTS)?;
        let mut out = Vec::new();
        for row in table.iter()? {
            out.push(decode_receipt(row?.1.value())?.body.record_leaf);
        }
        Ok(out)
    }

    /// A job by id.
    pub fn job(&self, id: &[u8; 16]) -> anyhow::Result<Option<Job>> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(JOBS)?;
        let Some(v) = table.get(id.as_slice())? else { return Ok(None) };
        Ok(Some(decode_versioned(v.value(), STORED_LIMIT)?))
    }

    /// Writes a job durably, with its place in the open-job index.
    pub fn put_job(&self, job: &Job) -> anyhow::Result<()> {
        let bytes = encode(job)?;
        let txn = self.db.begin_write()?;
        txn.open_table(JOBS)?.insert(job.id.as_slice(), bytes.as_slice())?;
        {
            let mut open = txn.open_table(OPEN_JOBS)?;
            if job.complete() {
                open.remove(job.id.as_slice())?;
            } else {
                open.insert(job.id.as_slice(), ())?;
            }
        }
        txn.commit()?;
        Ok(())
    }

    /// Jobs not yet complete (only those are read: finished jobs keep accumulating).
    pub fn open_jobs(&self) -> anyhow::Result<Vec<Job>> {
        let txn = self.db.begin_read()?;
        let (open, jobs) = (txn.open_table(OPEN_JOBS)?, txn.open_table(JOBS)?);
        let mut out = Vec::new();
        for row in open.iter()? {
            let (id, _) = row?;
            let Some(v) = jobs.get(id.value())? else { continue };
            out.push(decode_versioned(v.value(), STORED_LIMIT)?);
        }
        Ok(out)
    }

    /// Refuses if an open job over `owner`'s records covers one of `rids`, naming that
    /// job (another gateway learns nothing: its ids are not looked at).
    pub fn not_in_open_job(&self, owner: KeyId, rids: &[RecordId]) -> Result<(), ErasureError> {
        let rids: std::collections::HashSet<&RecordId> = rids.iter().collect();
        let open = self.open_jobs().map_err(internal)?;
        match open.iter().find(|o| o.owner == owner && o.records.iter().any(|r| rids.contains(&r.anchor.rid))) {
            Some(other) => Err(ErasureError::InProgress(other.id_hex())),
            None => Ok(()),
        }
    }

    /// Every job that `keep` selects.
    pub fn jobs(&self, keep: impl Fn(&Job) -> bool) -> anyhow::Result<Vec<Job>> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(JOBS)?;
        let mut out = Vec::new();
        for row in table.iter()? {
            let (_, v) = row?;
            let job: Job = decode_versioned(v.value(), STORED_LIMIT)?;
            if keep(&job) {
                out.push(job);
            }
        }
        Ok(out)
    }

    /// Places (`on`) or lifts legal holds.
    pub fn set_holds(&self, rids: &[RecordId], on: bool, now_ms: u64) -> anyhow::Result<()> {
        let txn = self.db.begin_write()?;
        {
            let mut table = txn.open_table(HOLDS)?;
            for rid in rids {
                let k = hold_key(rid);
                if on {
                    table.insert(k.0.as_slice(), now_ms)?;
                } else {
                    table.remove(k.0.as_slice())?;
                }
            }
        }
        txn.commit()?;
        Ok(())
    }

    /// Whether `rid` is under legal hold here.
    pub fn held(&self, rid: &RecordId) -> anyhow::Result<bool> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(HOLDS)?;
        Ok(table.get(hold_key(rid).0.as_slice())?.is_some())
    }
}

/// What erasure needs at a node.
pub struct Erasures {
    /// Receipts, intents and jobs.
    pub store: ErasureStore,
    /// The batcher of this node's erasure receipts.
    pub batches: AnchorHandle,
    /// Signs receipts.
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
        Self { store, batches, key, wake: Notify::new(), creating: std::sync::Mutex::new(()) }
    }
}

/// Answers a live challenge: whether this node holds a record with this id and leaf,
/// signed with its key.
pub async fn answer_challenge(
    shared: &Shared,
    rid: RecordId,
    leaf: Hash32,
    nonce: [u8; 16],
) -> anyhow::Result<SignedChallengeAnswer> {
    let holds = match shared.records.vault.get(rid).await {
        Ok(r) => r.leaf == leaf,
        Err(VaultError::NotFound(_)) => false,
        Err(e) => return Err(e.into()),
    };
    let answer = ChallengeAnswer {
        version: 1,
        custodian: shared.records.me,
        rid,
        leaf,
        nonce,
        answered_at_ms: crate::run::auth::now_ms(),
        holds,
    };
    Ok(answer.sign(&shared.records.erasures.key)?)
}

/// The records of `scope` that `gateway` wrote, each with an anchor receipt, found at this
/// node and its peers.
async fn resolve(shared: &Shared, gateway: KeyId, scope: &ErasureScope) -> Result<Vec<ReadAnswer>, ErasureError> {
    let found = match scope {
        ErasureScope::Records(rids) => {
            let mut out = Vec::with_capacity(rids.len());
            for rid in rids {
                match read_anywhere(shared, *rid, gateway).await {
                    Ok((answer, _)) => out.push(answer),
                    Err(super::ingest::RecordsError::NotFound(rid)) => return Err(ErasureError::NotFound(rid)),
                    Err(e) => return Err(ErasureError::Unavailable(e.to_string())),
                }
            }
            out
        }
        ErasureScope::Subject { gateway, local } => {
            let subject = SubjectRef { gateway: *gateway, local: local.clone() };
            let mut by_rid: BTreeMap<RecordId, ReadAnswer> = BTreeMap::new();
            for answer in
                subject_here(shared, subject.clone()).await.map_err(|e| ErasureError::Unavailable(e.to_string()))?
            {
                by_rid.insert(answer.record.rid, answer);
            }
            // Every record has `replication` custodians: with fewer validators than that
            // out of reach, each record is still listed by one that answers.
            let records = &shared.records;
            let others: Vec<_> = records.validators.iter().filter(|(k, _)| *k != records.me).map(|(_, p)| *p).collect();
            let mut unreachable = 0;
            for peer in others {
                let asked =
                    tokio::time::timeout(ASK_TIMEOUT, records.ask(peer, Request::Subject(subject.clone()))).await;
                match asked {
                    Ok(Ok(Response::Records(list))) => {
                        for answer in list {
                            by_rid.entry(answer.record.rid).or_insert(answer);
                        }
                    }
                    _ => unreachable += 1,
                }
            }
            if unreachable >= records.replication {
                return Err(ErasureError::Unavailable(format!(
                    "{unreachable} validators are out of reach: the subject's records cannot all be found"
                )));
            }
            by_rid.into_values().collect()
        }
    };
    if found.is_empty() {
        return Err(ErasureError::NoRecords);
    }
    Ok(found)
}

/// Fills in the anchor receipts that are missing from `found`, from this node or another
/// custodian of each record, waiting up to [`ANCHOR_WAIT`] for records being anchored.
async fn complete_receipts(shared: &Shared, gateway: KeyId, found: &mut [ReadAnswer]) {
    let records = &shared.records;
    let deadline = tokio::time::Instant::now() + ANCHOR_WAIT;
    let mut decided = shared.subscribe_decided();
    loop {
        for answer in found.iter_mut().filter(|a| a.receipt.is_none()) {
            let rid = answer.record.rid;
            if let Ok(here) = super::receipts::read_here(shared, rid, gateway).await
                && here.receipt.is_some()
            {
                answer.receipt = here.receipt;
                continue;
            }
            for custodian in answer.record.manifest.custodians.iter().filter(|c| **c != records.me) {
                let Some(peer) = records.peer(custodian) else {
                    continue;
                };
                let asked = tokio::time::timeout(ASK_TIMEOUT, records.ask(peer, Request::Read { rid, gateway })).await;
                if let Ok(Ok(Response::Record(there))) = asked
                    && there.receipt.is_some()
                {
                    answer.receipt = there.receipt;
                    break;
                }
            }
        }
        if found.iter().all(|a| a.receipt.is_some()) || tokio::time::Instant::now() >= deadline {
            return;
        }
        tokio::select! {
            _ = decided.changed() => {}
            _ = tokio::time::sleep_until(deadline) => {}
        }
    }
}

/// The records of a subject held here, each with this node's receipt if it anchored it.
pub async fn subject_here(shared: &Shared, subject: SubjectRef) -> Result<Vec<ReadAnswer>, VaultError> {
    let views: Vec<_> = shared
        .records
        .vault
        .subject(subject)
        .await?
        .iter()
        .map(|r| super::ingest::RecordView { resource: String::new(), ..super::ingest::RecordView::of(r) })
        .collect();
    let receipts = super::receipts::for_views(shared, &views).await.map_err(|e| VaultError::Fatal(e.to_string()))?;
    Ok(views.into_iter().zip(receipts).map(|(record, receipt)| ReadAnswer { record, receipt }).collect())
}

/// Accepts a request: resolves it, fixes its times and hash, stores the job and wakes
/// the coordinator. Returns the stored job.
pub async fn accept(
    shared: &Shared,
    requested_by: KeyId,
    scope: ErasureScope,
    trigger: ErasureTrigger,
    now_ms: u64,
) -> Result<Job, ErasureError> {
    if let ErasureScope::Records(rids) = &scope {
        if rids.is_empty() {
            return Err(ErasureError::Invalid("name at least one record".into()));
        }
        if rids.len() > MAX_RECORDS {
            return Err(ErasureError::Invalid(format!("at most {MAX_RECORDS} records per request")));
        }
        let unique: std::collections::BTreeSet<_> = rids.iter().collect();
        if unique.len() != rids.len() {
            return Err(ErasureError::Invalid("a record is named twice".into()));
        }
        // Before looking for the records: those being erased may be gone already.
        shared.records.erasures.store.not_in_open_job(requested_by, rids)?;
    }
    let mut found = resolve(shared, requested_by, &scope).await?;
    complete_receipts(shared, requested_by, &mut found).await;
    create(shared, requested_by, requested_by, scope, trigger, now_ms, found).await
}

/// Erasure on consent withdrawal: every record of `gateway`'s `subject`, at every
/// custodian. Called when a subject withdraws the consent their records were collected
/// under: today by the gateway that reports it (`POST /v1/erasures` with trigger
/// `consent_withdrawn`, `requested_by` the gateway), later also by the consent module.
pub async fn consent_withdrawn(
    shared: &Shared,
    requested_by: KeyId,
    gateway: KeyId,
    subject: String,
    now_ms: u64,
) -> Result<Job, ErasureError> {
    let scope = ErasureScope::Subject { gateway, local: subject };
    let mut found = resolve(shared, gateway, &scope).await?;
    complete_receipts(shared, gateway, &mut found).await;
    create(shared, requested_by, gateway, scope, ErasureTrigger::ConsentWithdrawn, now_ms, found).await
}

/// Fixes a request's times and hash, stores its job and wakes the coordinator.
async fn create(
    shared: &Shared,
    requested_by: KeyId,
    owner: KeyId,
    scope: ErasureScope,
    trigger: ErasureTrigger,
    now_ms: u64,
    found: Vec<ReadAnswer>,
) -> Result<Job, ErasureError> {
    if found.len() > MAX_RECORDS {
        return Err(ErasureError::Invalid(format!("{} records; at most {MAX_RECORDS} per request", found.len())));
    }
    let mut anchors = Vec::with_capacity(found.len());
    for answer in found {
        match answer.receipt {
            Some(receipt) => anchors.push(receipt),
            None => {
                return Err(ErasureError::Unavailable(format!(
                    "record {} is not anchored yet; ask again in a few seconds",
                    answer.record.rid
                )));
            }
        }
    }
    // The request follows the anchoring of every record it covers (a certificate checks
    // this), even if a proposer's clock ran ahead of this node's.
    let anchored = anchors.iter().map(|a| a.block.header.time_ms).max().unwrap_or(0);
    let requested_at_ms = now_ms.max(anchored);
    let deadline_ms = requested_at_ms.saturating_add(DEADLINE_MS);
    let mut random = [0u8; 32];
    getrandom::fill(&mut random).map_err(internal)?;
    let (mut id, mut nonce) = ([0u8; 16], [0u8; 16]);
    id.copy_from_slice(&random[..16]);
    nonce.copy_from_slice(&random[16..]);
    let request = ErasureRequest { version: 1, trigger, scope, requested_by, requested_at_ms, deadline_ms, nonce };
    let request_hash = request.hash().map_err(internal)?;
    let records = anchors
        .into_iter()
        .map(|anchor| {
            let n = anchor.manifest.custodians.len();
            JobRecord { anchor, receipts: vec![None; n], committed: vec![None; n], errors: vec![None; n] }
        })
        .collect();
    let job = Job { version: 1, id, requested_by, owner, trigger, request_hash, requested_at_ms, deadline_ms, records };
    let er = &shared.records.erasures;
    {
        // A second request over a record being erased could never complete: its custodians
        // no longer hold the record. Checked and stored under one lock.
        let _creating = er.creating.lock().map_err(|_| internal("erasure creation lock poisoned"))?;
        let rids: Vec<RecordId> = job.records.iter().map(|r| r.anchor.rid).collect();
        er.store.not_in_open_job(owner, &rids)?;
        er.store.put_job(&job).map_err(internal)?;
    }
    info!(id = %job.id_hex(), records = job.records.len(), trigger = ?trigger, "erasure request accepted");
    shared.records.erasures.wake.notify_one();
    Ok(job)
}

/// Places or lifts legal holds on the records of `scope` written by `gateway`, at every
/// custodian of each (all must confirm). Returns how many records.
pub async fn hold(
    shared: &Shared,
    gateway: KeyId,
    scope: &ErasureScope,
    on: bool,
    now_ms: u64,
) -> Result<usize, ErasureError> {
    let found = resolve(shared, gateway, scope).await?;
    let records = &shared.records;
    let mut per: BTreeMap<KeyId, Vec<RecordId>> = BTreeMap::new();
    for a in &found {
        for c in &a.record.manifest.custodians {
            per.entry(*c).or_default().push(a.record.rid);
        }
    }
    for (custodian, rids) in per {
        if custodian == records.me {
            records.erasures.store.set_holds(&rids, on, now_ms).map_err(internal)?;
            continue;
        }
        let peer = records.peer(&custodian);
        let Some(peer) = peer else { return Err(ErasureError::Unavailable(format!("custodian {custodian} unknown"))) };
        let asked = tokio::time::timeout(ASK_TIMEOUT, records.ask(peer, Request::Hold { rids, on })).await;
        match asked {
            Ok(Ok(Response::Held)) => {}
            _ => {
                return Err(ErasureError::Unavailable(format!(
                    "custodian {custodian} did not confirm the hold; ask again"
                )));
            }
        }
    }
    Ok(found.len())
}

/// Carries out orders as a custodian: erases what it holds, signs and stores a receipt
/// per order, and answers each order with its receipt, committed if it is.
pub async fn erase_here(shared: &Shared, orders: Vec<EraseOrder>) -> Vec<EraseAnswer> {
    match try_erase_here(shared, &orders).await {
        Ok(answers) => answers,
        Err(e) => {
            // The reason may name a record id: only that it failed is logged.
            warn!("an erasure failed at this custodian; the coordinator will ask again");
            orders.iter().map(|_| EraseAnswer::Refused(format!("the custodian failed: {e}"))).collect()
        }
    }
}

fn refuse(answers: &mut [Option<EraseAnswer>], i: usize, why: &str) {
    if let Some(slot) = answers.get_mut(i) {
        *slot = Some(EraseAnswer::Refused(why.to_string()));
    }
}

async fn try_erase_here(shared: &Shared, orders: &[EraseOrder]) -> anyhow::Result<Vec<EraseAnswer>> {
    let er = &shared.records.erasures;
    let me = shared.records.me;
    let mut answers: Vec<Option<EraseAnswer>> = vec![None; orders.len()];
    let mut done: Vec<(usize, SignedErasureReceipt)> = Vec::new();
    let mut to_erase: Vec<usize> = Vec::new();
    let mut signed: Vec<([u8; 64], SignedErasureReceipt)> = Vec::new();
    let receipt = |o: &EraseOrder, erased_at_ms: u64, epoch_before: u64, epoch_after: u64| ErasureReceipt {
        version: 1,
        custodian: me,
        record_leaf: o.leaf,
        trigger: o.trigger,
        request_hash: o.request_hash,
        requested_at_ms: o.requested_at_ms,
        deadline_ms: o.deadline_ms,
        erased_at_ms,
        epoch_before,
        epoch_after,
    };
    for (i, o) in orders.iter().enumerate() {
        if let Some(r) = er.store.receipt(&o.key())? {
            done.push((i, r));
            continue;
        }
        match shared.records.vault.get(o.rid).await {
            Ok(r) if r.leaf == o.leaf && r.manifest.custodians.contains(&me) => to_erase.push(i),
            Ok(_) => refuse(&mut answers, i, "the record here has another leaf"),
            Err(VaultError::NotFound(_)) => match er.store.intent(&o.key())? {
                // Erased before a crash, receipt not yet stored: the epoch moved since.
                Some(before) => {
                    let now = shared.records.vault.epoch().await?;
                    let r = receipt(o, crate::run::auth::now_ms(), before, now).sign(&er.key)?;
                    signed.push((o.key(), r.clone()));
                    done.push((i, r));
                }
                None => refuse(&mut answers, i, "this custodian holds no such record"),
            },
            Err(e) => refuse(&mut answers, i, &e.to_string()),
        }
    }
    if !to_erase.is_empty() {
        let keys: Vec<[u8; 64]> = to_erase.iter().filter_map(|&i| orders.get(i)).map(EraseOrder::key).collect();
        let epoch = shared.records.vault.epoch().await?;
        er.store.put_intents(&keys, epoch)?;
        let rids = to_erase.iter().filter_map(|&i| orders.get(i)).map(|o| o.rid).collect();
        let evidence = shared.records.vault.erase(rids).await?;
        let erased_at_ms = crate::run::auth::now_ms();
        for (&i, ev) in to_erase.iter().zip(&evidence) {
            let Some(o) = orders.get(i) else { continue };
            let r = receipt(o, erased_at_ms, ev.epoch_before, ev.epoch_after).sign(&er.key)?;
            signed.push((o.key(), r.clone()));
            done.push((i, r));
        }
        debug!(records = evidence.len(), "erased");
        shared.metrics.records_erased.fetch_add(evidence.len() as u64, std::sync::atomic::Ordering::Relaxed);
    }
    if !signed.is_empty() {
        er.store.put_receipts(&signed)?;
        let leaves = signed.iter().map(|(_, r)| r.body.leaf()).collect::<Result<Vec<_>, _>>()?;
        er.batches.add(leaves).await;
    }
    let leaves = done.iter().map(|(_, r)| r.body.leaf()).collect::<Result<Vec<_>, _>>()?;
    let located = er.batches.locate(leaves).await;
    for ((i, r), loc) in done.into_iter().zip(located) {
        let committed = match loc {
            Some(loc) => in_log(shared, &loc)?.map(|InLog { log_index, log_proof, block }| CommittedErasure {
                receipt: r.clone(),
                batch: loc.commit,
                leaf_index: loc.index,
                batch_proof: loc.proof,
                log_index,
                log_proof,
                block,
            }),
            None => None,
        };
        if let Some(slot) = answers.get_mut(i) {
            *slot = Some(match committed {
                Some(c) => EraseAnswer::Committed(Box::new(c)),
                None => EraseAnswer::Signed(r),
            });
        }
    }
    Ok(answers.into_iter().map(|a| a.unwrap_or_else(|| EraseAnswer::Refused("not handled".into()))).collect())
}

/// The clock retention is judged by: the system clock, or, for tests, the Unix
/// milliseconds written in the file named by `CAIRN_TEST_CLOCK_FILE`.
fn retention_clock() -> u64 {
    if let Ok(path) = std::env::var(TEST_CLOCK_ENV)
        && let Ok(text) = std::fs::read_to_string(&path)
        && let Ok(ms) = text.trim().parse()
    {
        return ms;
    }
    crate::run::auth::now_ms()
}

/// Environment variable naming a file that holds the retention clock (tests only).
pub const TEST_CLOCK_ENV: &str = "CAIRN_TEST_CLOCK_FILE";

/// Starts erasure of the records whose retention ran out: those this node sweeps for (it
/// is the first custodian of their manifest), not under legal hold, anchored, and not
/// already in an open job. One job per gateway.
pub async fn sweep_retention(shared: &Shared, clock_ms: u64) -> anyhow::Result<Vec<Job>> {
    let records = &shared.records;
    let er = &records.erasures;
    let busy: std::collections::HashSet<RecordId> =
        er.store.open_jobs()?.iter().flat_map(|j| j.records.iter().map(|r| r.anchor.rid)).collect();
    let mut by_gateway: BTreeMap<KeyId, Vec<super::ingest::RecordView>> = BTreeMap::new();
    let (mut held, mut collected) = (0usize, 0usize);
    // A page at a time: the vault serves readings and reads between pages. At most
    // MAX_RECORDS per sweep; the rest waits for the next one.
    for page in records.vault.ids().await?.chunks(SWEEP_PAGE) {
        for r in records.vault.expired(clock_ms, page.to_vec()).await? {
            if r.manifest.custodians.first() != Some(&records.me) || busy.contains(&r.header.rid) {
                continue;
            }
            if er.store.held(&r.header.rid)? {
                held += 1;
                continue;
            }
            let view = super::ingest::RecordView { resource: String::new(), ..super::ingest::RecordView::of(&r) };
            by_gateway.entry(r.header.gateway).or_default().push(view);
            collected += 1;
        }
        if collected >= MAX_RECORDS {
            break;
        }
    }
    if held > 0 {
        debug!(held, "records past retention kept under legal hold");
    }
    shared.metrics.retention_sweeps.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let mut jobs = Vec::new();
    for (gateway, mut views) in by_gateway {
        views.truncate(MAX_RECORDS);
        let receipts = super::receipts::for_views(shared, &views).await?;
        let found: Vec<ReadAnswer> = views
            .into_iter()
            .zip(receipts)
            .filter(|(_, receipt)| receipt.is_some())
            .map(|(record, receipt)| ReadAnswer { record, receipt })
            .collect();
        if found.is_empty() {
            continue;
        }
        let scope = ErasureScope::Records(found.iter().map(|a| a.record.rid).collect());
        let now = crate::run::auth::now_ms();
        match create(shared, records.me, gateway, scope, ErasureTrigger::RetentionExpired, now, found).await {
            Ok(job) => jobs.push(job),
            Err(e) => warn!("retention erasure not started: {e}"),
        }
    }
    Ok(jobs)
}

/// Drives every open job until its certificates exist, and sweeps for expired records;
/// runs until the node stops.
pub async fn run_coordinator(shared: Arc<Shared>) -> anyhow::Result<()> {
    let mut decided = shared.subscribe_decided();
    if std::env::var_os(TEST_CLOCK_ENV).is_some() {
        warn!("{TEST_CLOCK_ENV} is set: retention is judged by a test clock");
    }
    let sweep_every = Duration::from_millis(shared.config.retention_sweep_ms);
    let mut next_sweep = tokio::time::Instant::now();
    let mut retries: Retries = HashMap::new();
    loop {
        if tokio::time::Instant::now() >= next_sweep {
            next_sweep = tokio::time::Instant::now() + sweep_every;
            match sweep_retention(&shared, retention_clock()).await {
                Ok(jobs) => {
                    for job in jobs {
                        info!(id = %job.id_hex(), records = job.records.len(), "retention expired: erasure started");
                    }
                }
                // Tried again at the next sweep; a fatal vault failure stops the node anyway.
                Err(e) => warn!("retention sweep failed: {e}"),
            }
        }
        // A job created during the round left a permit in `wake`: the next round sees it.
        let jobs = shared.records.erasures.store.open_jobs()?;
        retries.retain(|(id, _), _| jobs.iter().any(|j| j.id == *id));
        let mut open = false;
        for mut job in jobs {
            let changed = advance(&shared, &mut job, &mut retries).await;
            open |= !job.complete();
            if changed {
                shared.records.erasures.store.put_job(&job)?;
                if job.complete() {
                    let n = job.records.len();
                    shared.metrics.erasure_certificates.fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
                    info!(id = %job.id_hex(), records = n, "erasure certified");
                }
            }
        }
        if open {
            tokio::select! {
                _ = shared.records.erasures.wake.notified() => {}
                _ = decided.changed() => {}
                _ = tokio::time::sleep(ROUND) => {}
            }
        } else {
            tokio::select! {
                _ = shared.records.erasures.wake.notified() => {}
                _ = tokio::time::sleep_until(next_sweep) => {}
            }
        }
    }
}

/// When a job may ask a custodian again after it refused or failed.
type Retries = HashMap<([u8; 16], KeyId), Retry>;

/// Pacing for a custodian that was asked and refused or failed: asked again after one
/// round, then after twice the previous pause, at most [`MAX_RETRY`]; forgotten once it
/// answers. A custodian that is not connected is not asked, so it costs nothing and is
/// asked as soon as it is back.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Retry {
    at: Instant,
    pause: Duration,
}

impl Retry {
    /// Whether the custodian of `key` is not to be asked at `now`.
    fn pausing(retries: &Retries, key: &([u8; 16], KeyId), now: Instant) -> bool {
        retries.get(key).is_some_and(|r| r.at > now)
    }

    /// Notes how the custodian of `key` answered at `now` (`None`: it was not connected,
    /// so not asked).
    fn note(retries: &mut Retries, key: ([u8; 16], KeyId), answers: Option<&[EraseAnswer]>, now: Instant) {
        match answers {
            Some(a) if a.iter().all(|a| matches!(a, EraseAnswer::Refused(_))) => {
                let pause = retries.get(&key).map_or(ROUND, |r| r.pause.saturating_mul(2).min(MAX_RETRY));
                retries.insert(key, Retry { at: now + pause, pause });
            }
            _ => {
                retries.remove(&key);
            }
        }
    }
}

/// One round of a job: asks each custodian for what is missing (unless it is pausing
/// after a refusal). Returns whether the job changed.
async fn advance(shared: &Shared, job: &mut Job, retries: &mut Retries) -> bool {
    let records = &shared.records;
    let now = Instant::now();
    let mut per: BTreeMap<KeyId, Vec<(usize, usize)>> = BTreeMap::new();
    for (ri, r) in job.records.iter().enumerate() {
        for (ci, c) in r.anchor.manifest.custodians.iter().enumerate() {
            if r.committed.get(ci).is_some_and(Option::is_none) && !Retry::pausing(retries, &(job.id, *c), now) {
                per.entry(*c).or_default().push((ri, ci));
            }
        }
    }
    let asks = per.into_iter().flat_map(|(custodian, slots)| {
        let chunks: Vec<Vec<(usize, usize)>> = slots.chunks(ORDERS_PER_MESSAGE).map(<[_]>::to_vec).collect();
        chunks.into_iter().map(move |slots| (custodian, slots))
    });
    let asks = asks.map(|(custodian, slots)| {
        let orders: Vec<EraseOrder> =
            slots.iter().filter_map(|(ri, _)| job.records.get(*ri)).map(|r| job.order(r)).collect();
        async move {
            let n = orders.len();
            let answers = if custodian == records.me {
                erase_here(shared, orders).await
            } else {
                let peer = records.peer(&custodian);
                let reachable = peer.filter(|p| records.connected.borrow().contains(p));
                let asked = match reachable {
                    None => return (custodian, slots, None),
                    Some(peer) => {
                        match tokio::time::timeout(ASK_TIMEOUT, records.ask(peer, Request::Erase(orders))).await {
                            Ok(Ok(Response::Erased(a))) if a.len() == n => Ok(a),
                            Ok(Ok(other)) => Err(format!("answered {other:?}")),
                            Ok(Err(e)) => Err(e),
                            Err(_) => Err("no answer in time".to_string()),
                        }
                    }
                };
                asked.unwrap_or_else(|e| vec![EraseAnswer::Refused(format!("unreachable: {e}")); n])
            };
            (custodian, slots, Some(answers))
        }
    });
    let rounds = libp2p::futures::future::join_all(asks).await;
    let mut changed = false;
    for (custodian, slots, answers) in rounds {
        Retry::note(retries, (job.id, custodian), answers.as_deref(), Instant::now());
        let answers =
            answers.unwrap_or_else(|| vec![EraseAnswer::Refused("unreachable: not connected".into()); slots.len()]);
        for ((ri, ci), answer) in slots.into_iter().zip(answers) {
            let Some(r) = job.records.get_mut(ri) else { continue };
            let expected = |s: &SignedErasureReceipt| {
                s.body.custodian == custodian
                    && s.body.record_leaf == r.anchor.leaf
                    && s.body.request_hash == job.request_hash
            };
            let error = match answer {
                EraseAnswer::Signed(s) if expected(&s) => {
                    if let Some(slot @ None) = r.receipts.get_mut(ci) {
                        *slot = Some(s);
                        changed = true;
                    }
                    None
                }
                EraseAnswer::Committed(c) if expected(&c.receipt) => {
                    if let (Some(signed), Some(committed)) = (r.receipts.get_mut(ci), r.committed.get_mut(ci)) {
                        *signed = Some(c.receipt.clone());
                        *committed = Some(*c);
                        changed = true;
                    }
                    None
                }
                EraseAnswer::Refused(m) => Some(m),
                _ => Some("answered for another record or request".to_string()),
            };
            if let Some(slot) = r.errors.get_mut(ci)
                && *slot != error
            {
                if let Some(m) = &error {
                    debug!(id = %hex::encode(job.id), %custodian, "{m}");
                }
                *slot = error;
                changed = true;
            }
        }
    }
    // A certificate is kept only if it verifies as a regulator would verify it.
    for i in 0..job.records.len() {
        let Some(cert) = job.certificate(i) else { continue };
        if let Err(e) = cert.verify(&shared.genesis)
            && let Some(r) = job.records.get_mut(i)
        {
            warn!(id = %hex::encode(job.id), "an assembled erasure certificate does not verify ({e}); asking again");
            r.committed.iter_mut().for_each(|c| *c = None);
            r.errors.iter_mut().for_each(|m| *m = Some(format!("the assembled certificate did not verify: {e}")));
        }
    }
    changed
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;

    #[test]
    fn a_custodian_that_refuses_is_asked_again_after_doubling_pauses_and_at_once_after_an_answer() {
        let custodian = Keypair::from_seed(&cairn_proto::SecretSeed::from_bytes([2; 32]));
        let key = ([1; 16], custodian.public().key_id());
        let refused = [EraseAnswer::Refused("this custodian holds no such record".into())];
        let t0 = Instant::now();
        let mut retries = Retries::new();
        assert!(!Retry::pausing(&retries, &key, t0), "asked in the first round");

        // Refusals: 0.5 s, 1 s, 2 s, ... never more than a minute.
        let mut now = t0;
        let mut pauses = Vec::new();
        for _ in 0..10 {
            Retry::note(&mut retries, key, Some(&refused), now);
            let r = retries[&key];
            assert!(
                Retry::pausing(&retries, &key, now) && Retry::pausing(&retries, &key, r.at - Duration::from_millis(1))
            );
            assert!(!Retry::pausing(&retries, &key, r.at), "asked again when the pause ends");
            pauses.push(r.pause);
            now = r.at;
        }
        assert_eq!(&pauses[..4], &[ROUND, ROUND * 2, ROUND * 4, ROUND * 8]);
        assert_eq!(pauses[9], MAX_RETRY);

        // A custodian that was not connected, or that answered (even partly), is asked
        // in the next round.
        Retry::note(&mut retries, key, None, now);
        assert!(!Retry::pausing(&retries, &key, now));
        Retry::note(&mut retries, key, Some(&refused), now);
        assert!(Retry::pausing(&retries, &key, now));
        let receipt = ErasureReceipt {
            version: 1,
            custodian: key.1,
            record_leaf: Hash32([3; 32]),
            trigger: ErasureTrigger::SubjectRequest,
            request_hash: Hash32([4; 32]),
            requested_at_ms: 1,
            deadline_ms: 2,
            erased_at_ms: 1,
            epoch_before: 1,
            epoch_after: 2,
        }
        .sign(&custodian)
        .unwrap();
        let partly = [EraseAnswer::Signed(receipt), refused[0].clone()];
        Retry::note(&mut retries, key, Some(&partly), now);
        assert!(!Retry::pausing(&retries, &key, now), "it answered: asked again at once");
    }
}
