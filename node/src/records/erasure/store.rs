//! The erasure store (`erasures.redb`, permanent side; ADR 013): a custodian's signed
//! receipts and intents, a coordinator's jobs with their open-job index, and legal holds.
//! Holds no subject and no content: record ids and leaves of records being or already
//! erased, as their certificates name them; holds only as `blake3("cairn/hold/v1" ‖ rid)`.

use std::path::Path;

use cairn_proto::encoding::encode;
use cairn_proto::erasure::{ErasureCertificate, SignedErasureReceipt};
use cairn_proto::record::RecordId;
use cairn_proto::version::decode_versioned;
use cairn_proto::{Hash32, KeyId};
use redb::{ReadableDatabase as _, ReadableTable as _, ReadableTableMetadata as _, TableDefinition};

use super::ErasureError;
use super::job::Job;
use crate::records::StoreError;

const STORED_LIMIT: usize = 64 << 20;
const RECEIPTS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("erasure_receipts");
const INTENTS: TableDefinition<&[u8], u64> = TableDefinition::new("erasure_intents");
const JOBS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("erasure_jobs");
/// The ids of the jobs not yet complete (kept with each job write; rebuilt at open).
const OPEN_JOBS: TableDefinition<&[u8], ()> = TableDefinition::new("erasure_open_jobs");
const HOLDS: TableDefinition<&[u8], u64> = TableDefinition::new("legal_holds");
/// Record leaf → the key of the first receipt this custodian signed for it: which
/// erasure destroyed the record here (kept with each receipt write; rebuilt at open
/// when missing, for stores written before it existed).
const ERASED: TableDefinition<&[u8], &[u8]> = TableDefinition::new("erasure_erased_leaves");

/// The handle under which a hold on `rid` is kept: a hash, so the store holds no record
/// id of a live record.
fn hold_key(rid: &RecordId) -> Hash32 {
    cairn_proto::hash::hash_parts(cairn_proto::hash::domain::HOLD, &[&rid.0])
}

fn store_err(e: impl std::fmt::Display) -> StoreError {
    StoreError::new("erasure store", e)
}

/// Notes in `erased` the record leaf of receipt key `key` (request hash ‖ record leaf),
/// unless an earlier receipt for that leaf is noted.
fn index_erased(erased: &mut redb::Table<&[u8], &[u8]>, key: &[u8]) -> Result<(), StoreError> {
    let Some(leaf) = key.get(32..64) else { return Err(store_err("an erasure receipt key of the wrong length")) };
    if erased.get(leaf).map_err(store_err)?.is_none() {
        erased.insert(leaf, key).map_err(store_err)?;
    }
    Ok(())
}

/// A stored signed receipt (its body carries the version byte).
fn decode_receipt(bytes: &[u8]) -> Result<SignedErasureReceipt, StoreError> {
    let r: SignedErasureReceipt = cairn_proto::encoding::decode(bytes, STORED_LIMIT).map_err(store_err)?;
    if r.body.version != 1 {
        return Err(store_err(format!("stored erasure receipt of unknown version {}", r.body.version)));
    }
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
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let db = redb::Database::create(path).map_err(|e| store_err(format!("cannot open {}: {e}", path.display())))?;
        let txn = db.begin_write().map_err(store_err)?;
        txn.open_table(INTENTS).map_err(store_err)?;
        txn.open_table(HOLDS).map_err(store_err)?;
        {
            let receipts = txn.open_table(RECEIPTS).map_err(store_err)?;
            let mut erased = txn.open_table(ERASED).map_err(store_err)?;
            if erased.is_empty().map_err(store_err)? {
                for row in receipts.iter().map_err(store_err)? {
                    let (k, _) = row.map_err(store_err)?;
                    index_erased(&mut erased, k.value())?;
                }
            }
        }
        {
            // The open-job index, rebuilt from the jobs (one pass per start).
            let jobs = txn.open_table(JOBS).map_err(store_err)?;
            let mut open = txn.open_table(OPEN_JOBS).map_err(store_err)?;
            open.retain(|_, _| false).map_err(store_err)?;
            for row in jobs.iter().map_err(store_err)? {
                let (id, v) = row.map_err(store_err)?;
                let job: Job = decode_versioned(v.value(), STORED_LIMIT).map_err(store_err)?;
                if !job.complete() {
                    open.insert(id.value(), ()).map_err(store_err)?;
                }
            }
        }
        txn.commit().map_err(store_err)?;
        Ok(Self { db })
    }

    pub(super) fn receipt(&self, key: &[u8]) -> Result<Option<SignedErasureReceipt>, StoreError> {
        let txn = self.db.begin_read().map_err(store_err)?;
        let table = txn.open_table(RECEIPTS).map_err(store_err)?;
        let Some(v) = table.get(key).map_err(store_err)? else { return Ok(None) };
        Ok(Some(decode_receipt(v.value())?))
    }

    pub(super) fn intent(&self, key: &[u8]) -> Result<Option<u64>, StoreError> {
        let txn = self.db.begin_read().map_err(store_err)?;
        let table = txn.open_table(INTENTS).map_err(store_err)?;
        Ok(table.get(key).map_err(store_err)?.map(|v| v.value()))
    }

    pub(crate) fn put_intents(&self, keys: &[[u8; 64]], epoch: u64) -> Result<(), StoreError> {
        let txn = self.db.begin_write().map_err(store_err)?;
        {
            let mut table = txn.open_table(INTENTS).map_err(store_err)?;
            for k in keys {
                table.insert(k.as_slice(), epoch).map_err(store_err)?;
            }
        }
        txn.commit().map_err(store_err)?;
        Ok(())
    }

    /// Stores receipts and drops their intents, in one transaction.
    pub(super) fn put_receipts(&self, receipts: &[([u8; 64], SignedErasureReceipt)]) -> Result<(), StoreError> {
        let txn = self.db.begin_write().map_err(store_err)?;
        {
            let mut table = txn.open_table(RECEIPTS).map_err(store_err)?;
            let mut intents = txn.open_table(INTENTS).map_err(store_err)?;
            let mut erased = txn.open_table(ERASED).map_err(store_err)?;
            for (k, r) in receipts {
                table.insert(k.as_slice(), encode(r).map_err(store_err)?.as_slice()).map_err(store_err)?;
                intents.remove(k.as_slice()).map_err(store_err)?;
                index_erased(&mut erased, k)?;
            }
        }
        txn.commit().map_err(store_err)?;
        Ok(())
    }

    /// The receipt under which this custodian first erased the record with `leaf`, if it
    /// did: a later request for the same record (two requests raced at two
    /// coordinators) is answered from it.
    pub(super) fn erased(&self, leaf: &Hash32) -> Result<Option<SignedErasureReceipt>, StoreError> {
        let txn = self.db.begin_read().map_err(store_err)?;
        let erased = txn.open_table(ERASED).map_err(store_err)?;
        let Some(key) = erased.get(leaf.0.as_slice()).map_err(store_err)? else { return Ok(None) };
        let table = txn.open_table(RECEIPTS).map_err(store_err)?;
        let Some(v) = table.get(key.value()).map_err(store_err)? else { return Ok(None) };
        Ok(Some(decode_receipt(v.value())?))
    }

    /// The leaves of every receipt this node signed.
    pub fn receipt_leaves(&self) -> Result<Vec<Hash32>, StoreError> {
        let txn = self.db.begin_read().map_err(store_err)?;
        let table = txn.open_table(RECEIPTS).map_err(store_err)?;
        let mut out = Vec::new();
        for row in table.iter().map_err(store_err)? {
            let (_, v) = row.map_err(store_err)?;
            let r = decode_receipt(v.value())?;
            out.push(r.body.leaf().map_err(store_err)?);
        }
        Ok(out)
    }

    /// The record leaves of every receipt this node signed (records it erased).
    pub fn signed_record_leaves(&self) -> Result<Vec<Hash32>, StoreError> {
        let txn = self.db.begin_read().map_err(store_err)?;
        let table = txn.open_table(RECEIPTS).map_err(store_err)?;
        let mut out = Vec::new();
        for row in table.iter().map_err(store_err)? {
            out.push(decode_receipt(row.map_err(store_err)?.1.value())?.body.record_leaf);
        }
        Ok(out)
    }

    /// A job by id.
    pub fn job(&self, id: &[u8; 16]) -> Result<Option<Job>, StoreError> {
        let txn = self.db.begin_read().map_err(store_err)?;
        let table = txn.open_table(JOBS).map_err(store_err)?;
        let Some(v) = table.get(id.as_slice()).map_err(store_err)? else { return Ok(None) };
        Ok(Some(decode_versioned(v.value(), STORED_LIMIT).map_err(store_err)?))
    }

    /// Writes a job durably, with its place in the open-job index.
    pub fn put_job(&self, job: &Job) -> Result<(), StoreError> {
        let bytes = encode(job).map_err(store_err)?;
        let txn = self.db.begin_write().map_err(store_err)?;
        txn.open_table(JOBS).map_err(store_err)?.insert(job.id.as_slice(), bytes.as_slice()).map_err(store_err)?;
        {
            let mut open = txn.open_table(OPEN_JOBS).map_err(store_err)?;
            if job.complete() {
                open.remove(job.id.as_slice()).map_err(store_err)?;
            } else {
                open.insert(job.id.as_slice(), ()).map_err(store_err)?;
            }
        }
        txn.commit().map_err(store_err)?;
        Ok(())
    }

    /// Jobs not yet complete (only those are read: finished jobs keep accumulating).
    pub fn open_jobs(&self) -> Result<Vec<Job>, StoreError> {
        let txn = self.db.begin_read().map_err(store_err)?;
        let (open, jobs) = (txn.open_table(OPEN_JOBS).map_err(store_err)?, txn.open_table(JOBS).map_err(store_err)?);
        let mut out = Vec::new();
        for row in open.iter().map_err(store_err)? {
            let (id, _) = row.map_err(store_err)?;
            let Some(v) = jobs.get(id.value()).map_err(store_err)? else { continue };
            out.push(decode_versioned(v.value(), STORED_LIMIT).map_err(store_err)?);
        }
        Ok(out)
    }

    /// Refuses if an open job over `owner`'s records covers one of `rids`, naming that
    /// job (another gateway learns nothing: its ids are not looked at).
    pub fn not_in_open_job(&self, owner: KeyId, rids: &[RecordId]) -> Result<(), ErasureError> {
        let rids: std::collections::HashSet<&RecordId> = rids.iter().collect();
        let open = self.open_jobs()?;
        match open.iter().find(|o| o.owner == owner && o.records.iter().any(|r| rids.contains(&r.anchor.rid))) {
            Some(other) => Err(ErasureError::InProgress(other.id_hex())),
            None => Ok(()),
        }
    }

    /// Every job that `keep` selects.
    pub fn jobs(&self, keep: impl Fn(&Job) -> bool) -> Result<Vec<Job>, StoreError> {
        let txn = self.db.begin_read().map_err(store_err)?;
        let table = txn.open_table(JOBS).map_err(store_err)?;
        let mut out = Vec::new();
        for row in table.iter().map_err(store_err)? {
            let (_, v) = row.map_err(store_err)?;
            let job: Job = decode_versioned(v.value(), STORED_LIMIT).map_err(store_err)?;
            if keep(&job) {
                out.push(job);
            }
        }
        Ok(out)
    }

    /// The certificates of the records `rids` under the request with hash `request`
    /// coordinated here, each once every custodian of it committed its receipt (records
    /// not named, not certified yet, or of a request not known here give none).
    pub fn certificates_of(&self, request: &Hash32, rids: &[RecordId]) -> Result<Vec<ErasureCertificate>, StoreError> {
        let mut out = Vec::new();
        for job in self.jobs(|j| j.request_hash == *request)? {
            for (i, r) in job.records.iter().enumerate() {
                if rids.contains(&r.anchor.rid)
                    && let Some(c) = job.certificate(i)
                {
                    out.push(c);
                }
            }
        }
        Ok(out)
    }

    /// Places (`on`) or lifts legal holds.
    pub fn set_holds(&self, rids: &[RecordId], on: bool, now_ms: u64) -> Result<(), StoreError> {
        let txn = self.db.begin_write().map_err(store_err)?;
        {
            let mut table = txn.open_table(HOLDS).map_err(store_err)?;
            for rid in rids {
                let k = hold_key(rid);
                if on {
                    table.insert(k.0.as_slice(), now_ms).map_err(store_err)?;
                } else {
                    table.remove(k.0.as_slice()).map_err(store_err)?;
                }
            }
        }
        txn.commit().map_err(store_err)?;
        Ok(())
    }

    /// Whether `rid` is under legal hold here.
    pub fn held(&self, rid: &RecordId) -> Result<bool, StoreError> {
        let txn = self.db.begin_read().map_err(store_err)?;
        let table = txn.open_table(HOLDS).map_err(store_err)?;
        Ok(table.get(hold_key(rid).0.as_slice()).map_err(store_err)?.is_some())
    }
}
