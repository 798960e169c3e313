//! `cairn-node audit residue`: looks through a stopped node's data directory for anything
//! that still links a record this node erased (DESIGN.md §2 rules 2–4).
//!
//! What it knows was erased: the leaves of the erasure receipts this node signed, and the
//! record ids of the erasures it coordinated (their certificates name them). It checks
//! that the vault holds no record with an erased leaf and that the vault verifies (every
//! subject index lists only live records), then scans every byte of every file (vault,
//! ledger, anchor and erasure batches, consensus WAL, configuration, logs) for an erased
//! record id, raw or in hex, except `erasures.redb`, whose certificates name the records
//! they prove erased (the report lists every file it did not search, and why).
//!
//! The access log (`access-log.redb`, ADR 018): every row is counted, and each is either
//! linked to a live subject (its handle derives from a log key the vault still holds) or
//! linked to no one (its subject was erased, or the key is held elsewhere).

use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};

use cairn_proto::Hash32;
use cairn_proto::record::RecordId;

use crate::records::access::store::AccessLogStore;
use crate::records::access::{LogKey, stored_log_key};
use crate::records::erasure::ErasureStore;
use crate::run::{ACCESS_LOG_FILE, ERASURES_FILE, VAULT_DIR};
use crate::vault::{Vault, VaultConfig};

/// What the audit looked at and found.
#[derive(Debug, Default)]
pub struct ResidueReport {
    /// Records this node erased as a custodian (receipts it signed).
    pub erased_here: usize,
    /// Record ids known erased (from erasures this node coordinated).
    pub erased_ids: usize,
    /// Live records in the vault.
    pub live_records: usize,
    /// The vault's own check, in words.
    pub vault: String,
    /// Files scanned and their bytes.
    pub files: Vec<(PathBuf, u64)>,
    /// Files not searched, and why.
    pub skipped: Vec<(PathBuf, String)>,
    /// The access log, in words.
    pub access_log: String,
    /// Anything that still links an erased record.
    pub findings: Vec<String>,
}

impl ResidueReport {
    /// Bytes scanned in all.
    pub fn bytes(&self) -> u64 {
        self.files.iter().map(|(_, n)| n).sum()
    }
}

/// Why the audit could not run (a file that cannot be read, a store that cannot be
/// opened — is the node still running?).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct AuditError(String);

fn failed(what: impl std::fmt::Display, e: impl std::fmt::Display) -> AuditError {
    AuditError(format!("{what}: {e}"))
}

fn files_under(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), AuditError> {
    let reading = || format!("reading {}", dir.display());
    for entry in std::fs::read_dir(dir).map_err(|e| failed(reading(), e))? {
        let path = entry.map_err(|e| failed(reading(), e))?.path();
        if path.is_dir() {
            files_under(&path, out)?;
        } else {
            out.push(path);
        }
    }
    Ok(())
}

/// Counts the rows of `access-log.redb`: kept or past retention, and linked to a live
/// log key or to no one.
fn access_log(data_dir: &Path, live_keys: &[LogKey]) -> Result<String, AuditError> {
    let path = data_dir.join(ACCESS_LOG_FILE);
    if !path.exists() {
        return Ok("no access log".into());
    }
    let me =
        crate::identity::NodeIdentity::load(data_dir).map_err(|e| failed("the node key", e))?.public_key().key_id();
    let rows = AccessLogStore::rows(&path).map_err(|e| failed("the access log", e))?;
    let mut linked = HashSet::new();
    for key in live_keys {
        for k in 0.. {
            let handle = key.handle(&me, k);
            if !rows.contains_key(&handle) {
                break;
            }
            linked.insert(handle);
        }
    }
    let kept = rows.values().filter(|r| r.sealed.is_some()).count();
    Ok(format!(
        "{} entries ({kept} with their event, {} past the log's retention); {} linked to a subject whose log key \
         this vault holds, {} linked to no one",
        rows.len(),
        rows.len() - kept,
        linked.len(),
        rows.len() - linked.len()
    ))
}

/// Audits the data directory of a stopped node; `progress` is told of each file scanned.
pub fn residue(data_dir: &Path, mut progress: impl FnMut(&Path, u64)) -> Result<ResidueReport, AuditError> {
    let mut report = ResidueReport::default();
    let store = ErasureStore::open(&data_dir.join(ERASURES_FILE))
        .map_err(|e| failed("is the node still running? stop it first", e))?;
    let erased_leaves: HashSet<Hash32> =
        store.signed_record_leaves().map_err(|e| failed("erasure store", e))?.into_iter().collect();
    report.erased_here = erased_leaves.len();
    let erased_ids: BTreeSet<RecordId> = store
        .jobs(|_| true)
        .map_err(|e| failed("erasure store", e))?
        .iter()
        .flat_map(|job| job.records.iter().filter(|r| r.committed.iter().any(Option::is_some)).map(|r| r.anchor.rid))
        .collect();
    report.erased_ids = erased_ids.len();
    drop(store);

    let vault = Vault::open_dir(&data_dir.join(VAULT_DIR), VaultConfig::default())
        .map_err(|e| failed("opening the vault (is the node still running? stop it first)", e))?;
    let mut log_keys = Vec::new();
    for rid in vault.record_ids() {
        let record = vault.get(&rid).map_err(|e| failed("vault", e))?;
        report.live_records += 1;
        if let Some(k) = stored_log_key(record.header.content_type, &record.payload) {
            log_keys.push(k);
        }
        if erased_leaves.contains(&record.leaf) {
            report.findings.push(format!("the vault still holds record {rid}, whose erasure this node signed"));
        }
        if erased_ids.contains(&rid) {
            report.findings.push(format!("the vault still holds record {rid}, certified erased"));
        }
    }
    report.vault = match vault.verify() {
        Ok(v) => format!(
            "keystore epoch {}, {} records open and match their commitments, {} subject indexes list only live records",
            v.epoch, v.records_ok, v.subjects_ok
        ),
        Err(e) => {
            report.findings.push(format!("the vault does not verify: {e}"));
            format!("does not verify: {e}")
        }
    };
    drop(vault);
    report.access_log = access_log(data_dir, &log_keys)?;

    // Each erased id raw (16 bytes) and in hex (32 characters); one pass per length.
    let raw: HashMap<Vec<u8>, RecordId> = erased_ids.iter().map(|r| (r.0.to_vec(), *r)).collect();
    let hex: HashMap<Vec<u8>, RecordId> = erased_ids.iter().map(|r| (r.to_string().into_bytes(), *r)).collect();
    let mut files = Vec::new();
    files_under(data_dir, &mut files)?;
    files.sort();
    for path in files {
        if path.file_name().is_some_and(|n| n == ERASURES_FILE) {
            let why = "its erasure certificates and jobs name the records they prove erased, by design";
            report.skipped.push((path, why.into()));
            continue;
        }
        let bytes = std::fs::read(&path).map_err(|e| failed(format!("reading {}", path.display()), e))?;
        progress(&path, bytes.len() as u64);
        let mut found: BTreeSet<RecordId> = BTreeSet::new();
        for set in [&raw, &hex] {
            let Some(len) = set.keys().next().map(Vec::len) else { continue };
            found.extend(bytes.windows(len).filter_map(|w| set.get(w)).copied());
        }
        for rid in found {
            report.findings.push(format!("{} contains erased record id {rid}", path.display()));
        }
        report.files.push((path, bytes.len() as u64));
    }
    Ok(report)
}
