//! The access log (DESIGN.md §7; ADR 018; docs/access.md): every read decision about a
//! subject's records — granted, refused, break-glass — becomes an access event, written
//! durably to `access-log.redb` **before** any byte of the answer leaves this node, and
//! committed on chain as a leaf of this node's padded `AccessEvents` batches.
//!
//! **Unlinkable after erasure.** Entries are keyed and sealed under the subject's
//! **access-log key**: 32 random bytes kept as a vault record of the subject
//! (`ContentType::AccessLogKey`) at every reachable validator (at least n − f, like a
//! consent document), so any f + 1 validators know it and erasing the subject destroys
//! it with the readings. From the key `K`, for this node's k-th event about the subject:
//!
//! - handle `= blake3_keyed(K, "cairn/log-entry/v1" || node || k)` (the row's key);
//! - salt `= blake3_keyed(K, "cairn/log-salt/v1" || node || k)` (the commitment's key);
//! - the event is sealed (XChaCha20-Poly1305) with the handle as associated data under
//!   `blake3_keyed(K, "cairn/log-seal/v2" || D)`, where `D` is this node's **day key** for
//!   the event's day ([`DayKey`]).
//!
//! Once `K` is gone, the rows still count (day, outcome) and their leaves still verify,
//! but no handle can be derived, no event opened, and no two rows linked to each other.
//!
//! **Retention.** A day key is a vault record of this node alone (no subject,
//! `ContentType::AccessLogDayKey`) whose retention ends with that of the day's entries
//! (`[access] log_retention_days` after the day ends). The retention sweep then erases
//! it like any record — keystore epoch, signed receipt on chain, erasure certificate —
//! and no copy of a sealed event, on this disk or an old one, opens again.
//! Two nodes that create a subject's first key at the same moment leave two keys; every
//! key found is walked, so no entry is lost.

pub mod audit_event;
pub mod export;
pub mod read;
pub mod review;
pub mod store;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;

use cairn_proto::access::{AccessAction, AccessEntry, AccessEvent, AccessReceipt, Outcome};
use cairn_proto::consent::Subject;
use cairn_proto::record::{ContentType, Manifest, RecordId};
use cairn_proto::version::{Versioned, decode_versioned};
use cairn_proto::{Hash32, KeyId};
use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;

use self::review::ReviewStore;
use self::store::{AccessLogHandle, NewEntry, Row};
use super::anchor::AnchorHandle;
use super::consent::{ConsentError, subject_ref};
use super::wire::{Request, Response};
use super::{Records, RecordsError};
use crate::vault::NewRecord;
use crate::vault::crypto::{self, Key32};

/// A subject's access-log key.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogKey([u8; 32]);

impl std::fmt::Debug for LogKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LogKey(..)")
    }
}

impl Drop for LogKey {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.0);
    }
}

impl LogKey {
    fn derive(&self, label: &str, node: &KeyId, k: u64) -> Hash32 {
        let mut input = label.as_bytes().to_vec();
        input.extend_from_slice(node.as_bytes());
        input.extend_from_slice(&k.to_be_bytes());
        Hash32(*blake3::keyed_hash(&self.0, &input).as_bytes())
    }
    /// The handle of `node`'s k-th entry under this key.
    pub fn handle(&self, node: &KeyId, k: u64) -> Hash32 {
        self.derive("cairn/log-entry/v1", node, k)
    }
    /// The commitment salt of that entry.
    pub fn salt(&self, node: &KeyId, k: u64) -> Hash32 {
        self.derive("cairn/log-salt/v1", node, k)
    }
    /// The key events logged on `day`'s key are sealed under (both keys are needed).
    pub fn seal_key(&self, day: &DayKey) -> Key32 {
        let mut input = b"cairn/log-seal/v2".to_vec();
        input.extend_from_slice(&day.key);
        let key = Key32::from_bytes(*blake3::keyed_hash(&self.0, &input).as_bytes());
        zeroize::Zeroize::zeroize(&mut input);
        key
    }
    /// A digest naming the key in memory (never stored).
    pub fn digest(&self) -> Hash32 {
        Hash32(*blake3::keyed_hash(&self.0, b"cairn/log-digest/v1").as_bytes())
    }
    /// A key from its bytes (as a peer sends it).
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }
    /// The key's bytes (what a vault record keeps).
    pub fn bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

/// A log key as its vault record keeps it (bcs).
#[derive(Debug, Serialize, Deserialize)]
pub struct StoredLogKey {
    version: u8,
    /// The key.
    pub key: LogKey,
}

impl Versioned for StoredLogKey {
    const VERSION: u8 = 1;
    fn version(&self) -> u8 {
        self.version
    }
}

/// One validator's access-log key for one day (ADR 018): 32 random bytes kept as a vault
/// record of that validator alone, erased by the retention sweep when the day's entries
/// expire.
#[derive(Clone)]
pub struct DayKey {
    /// The vault record that keeps it.
    pub rid: RecordId,
    /// Days since the Unix epoch.
    pub day: u32,
    key: [u8; 32],
}

impl std::fmt::Debug for DayKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DayKey").field("rid", &self.rid).field("day", &self.day).finish_non_exhaustive()
    }
}

impl DayKey {
    /// How an access-log row names this key: `blake3("cairn/day-key-ref/v1" || rid)`.
    pub fn reference(&self) -> Hash32 {
        day_key_reference(&self.rid)
    }
}

/// How an access-log row names the day key kept in vault record `rid`.
pub fn day_key_reference(rid: &RecordId) -> Hash32 {
    cairn_proto::hash::hash_parts("cairn/day-key-ref/v1", &[&rid.0])
}

impl Drop for DayKey {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.key);
    }
}

/// A day key as its vault record keeps it (bcs).
#[derive(Serialize, Deserialize)]
struct StoredDayKey {
    version: u8,
    day: u32,
    key: [u8; 32],
}

impl Drop for StoredDayKey {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.key);
    }
}

impl Versioned for StoredDayKey {
    const VERSION: u8 = 1;
    fn version(&self) -> u8 {
        self.version
    }
}

/// Reads a day key from record `rid`'s payload; `None` for other records.
pub fn stored_day_key(rid: RecordId, kind: ContentType, payload: &[u8]) -> Option<DayKey> {
    (kind == ContentType::AccessLogDayKey)
        .then(|| decode_versioned::<StoredDayKey>(payload, 1024).ok().map(|s| DayKey { rid, day: s.day, key: s.key }))
        .flatten()
}

/// Reads a log key from a record's payload; `None` for other records.
pub fn stored_log_key(kind: ContentType, payload: &[u8]) -> Option<LogKey> {
    (kind == ContentType::AccessLogKey)
        .then(|| decode_versioned::<StoredLogKey>(payload, 1024).ok().map(|s| s.key))
        .flatten()
}

/// The access layer's parts: the log, the batcher of its leaves and the review list.
#[derive(Debug)]
pub struct AccessLog {
    /// `access-log.redb`'s writer.
    pub log: AccessLogHandle,
    /// The batcher of access-event leaves (`BatchKind::AccessEvents`).
    pub batches: AnchorHandle,
    /// Break-glass declarations waiting for review (`review.redb`).
    pub reviews: ReviewStore,
    /// Held while a subject's first log key is made, so one node makes one.
    creating: Mutex<()>,
    /// Held while a day's key is made, so the node makes one a day.
    creating_day: Mutex<()>,
}

impl AccessLog {
    /// Puts the parts together.
    pub fn new(log: AccessLogHandle, batches: AnchorHandle, reviews: ReviewStore) -> Self {
        Self { log, batches, reviews, creating: Mutex::new(()), creating_day: Mutex::new(()) }
    }
}

/// One entry of a subject's access log as a validator holds it: always its handle, day,
/// outcome and leaf; the event while it is within the log's retention; the receipt once
/// its batch is committed.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LoggedEntry {
    /// The node that logged it.
    pub node: KeyId,
    /// The entry handle.
    pub handle: Hash32,
    /// Days since the Unix epoch.
    pub day: u32,
    /// The outcome class.
    pub outcome: Outcome,
    /// Its leaf.
    pub leaf: Hash32,
    /// The event with its salt (none once the entry expired).
    pub entry: Option<AccessEntry>,
    /// Its proof on chain.
    pub receipt: Option<AccessReceipt>,
}

/// A day key of this node as a regulator sees it.
#[derive(Debug, Clone)]
pub struct DayKeyState {
    /// Days since the Unix epoch.
    pub day: u32,
    /// How rows name it ([`DayKey::reference`]).
    pub reference: Hash32,
    /// The vault record that keeps (or kept) it, when known here.
    pub record: Option<RecordId>,
    /// Still held (the day's events can be opened with their subjects' keys).
    pub held: bool,
    /// Its erasure certificate, once erased (trigger `retention_expired`).
    pub certificate: Option<cairn_proto::erasure::ErasureCertificate>,
}

impl Records {
    /// The subject's log keys known to this node and at least f others (as for consent
    /// documents: any f + 1 validators hold every key made at n − f).
    pub async fn log_keys(&self, subject: &Subject) -> Result<Vec<(RecordId, LogKey)>, ConsentError> {
        let mut keys: BTreeMap<RecordId, LogKey> = self.held_log_keys(subject).await?.into_iter().collect();
        let peers: Vec<KeyId> = self.validators.iter().filter(|k| **k != self.me).copied().collect();
        let asks = peers.iter().map(|p| self.ask(*p, Request::LogKeys(subject.clone())));
        let mut answered = 0;
        for answer in futures::future::join_all(asks).await {
            if let Ok(Response::LogKeys(list)) = answer {
                answered += 1;
                keys.extend(list.into_iter().map(|(id, k)| (id, LogKey(k))));
            }
        }
        let f = self.faults();
        if answered < f {
            return Err(ConsentError::Unavailable(format!(
                "{answered} other validators answered; the access log needs {f} to find the subject's log key"
            )));
        }
        Ok(keys.into_iter().collect())
    }

    /// The key this node logs the subject's events under: the lowest id held here, else
    /// the lowest id known to f + 1 validators, else a new key stored at every reachable
    /// validator (at least n − f).
    async fn writing_key(&self, subject: &Subject, now_ms: u64) -> Result<LogKey, ConsentError> {
        if let Some((_, k)) = self.held_log_keys(subject).await?.into_iter().next() {
            return Ok(k);
        }
        let _one = self.access.creating.lock().await;
        if let Some((_, k)) = self.log_keys(subject).await?.into_iter().next() {
            return Ok(k);
        }
        let mut key = [0u8; 32];
        crypto::fill_random(&mut key).map_err(RecordsError::from)?;
        let key = LogKey(key);
        let payload = cairn_proto::encoding::encode(&StoredLogKey { version: 1, key: key.clone() })
            .map_err(|e| RecordsError::Fatal(e.to_string()))?;
        let custodians = self.document_custodians()?;
        let manifest = Manifest::new(custodians.clone()).map_err(|e| RecordsError::Unavailable(e.to_string()))?;
        let record = NewRecord {
            gateway: subject.gateway,
            content_type: ContentType::AccessLogKey,
            purpose: "HOPERAT".into(),
            received_at_ms: now_ms,
            retain_until_ms: u64::MAX,
            subject: Some(subject_ref(subject)),
            manifest,
            payload: payload.clone(),
        };
        let put = self.seal_and_replicate(&custodians, vec![record]).await?;
        let id = put.first().map(|p| p.rid).ok_or_else(|| RecordsError::Fatal("the vault stored nothing".into()))?;
        self.log_key_stored(id, subject.clone(), key.clone()).await?;
        Ok(key)
    }

    /// This node's key for `day`: held here, or a new one stored in this node's vault
    /// (anchored like any record) whose retention ends with the day's entries'.
    async fn day_key(&self, day: u32, now_ms: u64) -> Result<DayKey, RecordsError> {
        if let Some(k) = self.held_day_key(day).await? {
            return Ok(k);
        }
        let _one = self.access.creating_day.lock().await;
        if let Some(k) = self.held_day_key(day).await? {
            return Ok(k);
        }
        let mut stored = StoredDayKey { version: 1, day, key: [0; 32] };
        crypto::fill_random(&mut stored.key)?;
        let payload = zeroize::Zeroizing::new(
            cairn_proto::encoding::encode(&stored).map_err(|e| RecordsError::Fatal(e.to_string()))?,
        );
        let manifest = Manifest::new(vec![self.me]).map_err(|e| RecordsError::Fatal(e.to_string()))?;
        let record = NewRecord {
            gateway: self.me,
            content_type: ContentType::AccessLogDayKey,
            purpose: "HOPERAT".into(),
            received_at_ms: now_ms,
            retain_until_ms: store::expires_ms(day, self.settings.log_retention_ms),
            subject: None,
            manifest,
            payload: payload.to_vec(),
        };
        let put = self.seal_and_replicate(&[self.me], vec![record]).await?;
        let rid = put.first().map(|p| p.rid).ok_or_else(|| RecordsError::Fatal("the vault stored nothing".into()))?;
        let key = DayKey { rid, day, key: stored.key };
        self.day_key_stored(key.clone()).await?;
        Ok(key)
    }

    /// Logs `event` about `subject` durably and queues its leaf; returns the entry handle.
    /// Nothing may be released to the caller before this returns `Ok`.
    pub async fn log_access(&self, subject: &Subject, event: AccessEvent) -> Result<Hash32, ConsentError> {
        // Only for the access benchmark's comparison build (BENCHMARKS.md): a node built
        // with this feature releases data without logging it and must never be deployed.
        if cfg!(feature = "bench-unlogged") {
            return Ok(Hash32([0; 32]));
        }
        let key = self.writing_key(subject, event.recorded_ms).await?;
        let handle = self.log_under(key, event).await?;
        Ok(handle)
    }

    /// Logs an erasure (`AccessAction::Erase`) in the subject's log, only if the subject
    /// has one: no log key is made for it (a key made by an erasure would outlive the
    /// subject's last reading with the subject's reference). Returns whether it was logged.
    pub async fn log_erasure_event(&self, subject: &Subject, event: AccessEvent) -> Result<bool, ConsentError> {
        if cfg!(feature = "bench-unlogged") {
            return Ok(true);
        }
        let known = match self.held_log_keys(subject).await?.into_iter().next() {
            Some((_, k)) => Some(k),
            None => self.log_keys(subject).await?.into_iter().next().map(|(_, k)| k),
        };
        let Some(key) = known else { return Ok(false) };
        self.log_under(key, event).await?;
        Ok(true)
    }

    /// Writes `event` under `key` and this node's day key, durably, and queues its leaf.
    async fn log_under(&self, key: LogKey, event: AccessEvent) -> Result<Hash32, ConsentError> {
        let day = self.day_key(store::day_of(event.recorded_ms), event.recorded_ms).await?;
        let counter = match (&event.action, event.outcome) {
            (AccessAction::Erase { .. }, _) => None,
            (_, Outcome::Granted) => Some(&self.counters.access_permitted),
            (_, Outcome::Refused) => Some(&self.counters.access_refused),
            (_, Outcome::BreakGlass) => Some(&self.counters.break_glass_reads),
        };
        let logged = self.access.log.log(vec![NewEntry { key, day, event }]).await.map_err(RecordsError::from)?;
        let logged =
            logged.first().copied().ok_or_else(|| RecordsError::Fatal("the access log wrote nothing".into()))?;
        self.access.batches.add(vec![logged.leaf]).await;
        if let Some(c) = counter {
            c.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        Ok(logged.handle)
    }

    /// The entries this node logged under any of `keys`, opened, with receipts.
    pub async fn access_entries_here(&self, keys: Vec<LogKey>) -> Result<Vec<LoggedEntry>, RecordsError> {
        let walked = self.access.log.walk(keys.clone()).await?;
        let rows: Vec<(Hash32, Row)> = walked.iter().map(|w| (w.handle, w.row.clone())).collect();
        let receipts = self.access_receipts(&rows).await?;
        let days: std::collections::HashMap<Hash32, DayKey> =
            self.held_day_keys().await?.into_values().map(|k| (k.reference(), k)).collect();
        Ok(walked
            .into_iter()
            .zip(receipts)
            .map(|(w, receipt)| LoggedEntry {
                node: self.me,
                handle: w.handle,
                day: w.row.day,
                outcome: w.row.outcome,
                leaf: w.row.leaf(&w.handle),
                entry: keys.get(w.key).and_then(|key| open_row(key, days.get(&w.row.sealed_under)?, &self.me, &w)),
                receipt,
            })
            .collect())
    }

    /// The receipt of each row's leaf, once committed.
    pub async fn access_receipts(&self, rows: &[(Hash32, Row)]) -> Result<Vec<Option<AccessReceipt>>, RecordsError> {
        let located = self.access.batches.locate(rows.iter().map(|(h, r)| r.leaf(h)).collect()).await;
        let mut out = Vec::with_capacity(rows.len());
        for ((handle, row), loc) in rows.iter().zip(located) {
            out.push(match loc {
                Some(loc) => self.in_log(&loc)?.map(|in_log| AccessReceipt {
                    version: 1,
                    handle: *handle,
                    commitment: row.commitment,
                    leaf: row.leaf(handle),
                    batch: loc.commit,
                    leaf_index: loc.index,
                    batch_proof: loc.proof,
                    log_index: in_log.log_index,
                    log_proof: in_log.log_proof,
                    block: in_log.block,
                }),
                None => None,
            });
        }
        Ok(out)
    }

    /// Open break-glass reviews of this node and how many of them are overdue at `now_ms`.
    pub async fn review_counts(&self, now_ms: u64) -> Result<(u64, u64), RecordsError> {
        let open: Vec<_> = self.reviews().await?.into_iter().filter(|r| r.closed.is_none()).collect();
        let overdue = open.iter().filter(|r| r.due_ms <= now_ms).count() as u64;
        Ok((open.len() as u64, overdue))
    }

    /// Every entry of the subject's access log at every validator that answers, with the
    /// validators that did not (their entries are missing from the list).
    pub async fn disclosures(&self, subject: &Subject) -> Result<(Vec<LoggedEntry>, Vec<KeyId>), ConsentError> {
        let keys: Vec<[u8; 32]> = self.log_keys(subject).await?.into_iter().map(|(_, k)| k.0).collect();
        if keys.is_empty() {
            return Ok((Vec::new(), Vec::new()));
        }
        let mut all = self.access_entries_here(keys.iter().map(|k| LogKey(*k)).collect()).await?;
        let peers: Vec<KeyId> = self.validators.iter().filter(|k| **k != self.me).copied().collect();
        let asks = peers.iter().map(|p| self.ask(*p, Request::AccessEntries(keys.clone())));
        let mut silent = Vec::new();
        for (peer, answer) in peers.iter().zip(futures::future::join_all(asks).await) {
            match answer {
                // A peer's list is kept only if it is its own (a faulty peer cannot pass
                // off another node's entries).
                Ok(Response::AccessEntries(list)) => all.extend(list.into_iter().filter(|e| e.node == *peer)),
                _ => silent.push(*peer),
            }
        }
        all.sort_by_key(|e| {
            (e.entry.as_ref().map_or(u64::from(e.day) * store::DAY_MS, |x| x.event.recorded_ms), e.handle)
        });
        Ok((all, silent))
    }

    /// Closes the review of a break-glass declaration taken here.
    pub async fn close_review(
        &self,
        declaration: RecordId,
        closed: review::Closed,
    ) -> Result<review::Review, review::CloseError> {
        let store = self.access.reviews.clone();
        tokio::task::spawn_blocking(move || store.close(declaration, closed))
            .await
            .map_err(|e| review::CloseError::Store(super::StoreError::new("review list", e)))?
    }

    /// Every review of this node's list.
    pub async fn reviews(&self) -> Result<Vec<review::Review>, RecordsError> {
        let store = self.access.reviews.clone();
        Ok(tokio::task::spawn_blocking(move || store.all())
            .await
            .map_err(|e| RecordsError::Fatal(format!("the review task failed: {e}")))??)
    }

    /// Puts a break-glass declaration this node took on its review list.
    pub(crate) async fn open_review(&self, review: review::Review) -> Result<(), RecordsError> {
        let store = self.access.reviews.clone();
        Ok(tokio::task::spawn_blocking(move || store.add(&review))
            .await
            .map_err(|e| RecordsError::Fatal(format!("the review task failed: {e}")))??)
    }

    /// The day keys `rows` are sealed under, by day: whether each is still held and, once
    /// the retention sweep erased it, its erasure certificate.
    pub async fn day_key_states(&self, rows: &[(Hash32, Row)]) -> Result<Vec<DayKeyState>, RecordsError> {
        let days: BTreeMap<Hash32, u32> = rows.iter().map(|(_, r)| (r.sealed_under, r.day)).collect();
        // Held keys, then erased ones through the jobs that erased them (by reference).
        let mut found: std::collections::HashMap<Hash32, (RecordId, bool, Option<_>)> =
            self.held_day_keys().await?.into_values().map(|k| (k.reference(), (k.rid, true, None))).collect();
        let named = |rid: &RecordId| days.contains_key(&day_key_reference(rid));
        for job in self.erasures.store.jobs(|j| j.records.iter().any(|r| named(&r.anchor.rid)))? {
            for (i, r) in job.records.iter().enumerate().filter(|(_, r)| named(&r.anchor.rid)) {
                let entry = found.entry(day_key_reference(&r.anchor.rid)).or_insert((r.anchor.rid, false, None));
                entry.2 = job.certificate(i);
            }
        }
        let mut out: Vec<DayKeyState> = days
            .into_iter()
            .map(|(reference, day)| {
                let (record, held, certificate) =
                    found.remove(&reference).map_or((None, false, None), |(r, h, c)| (Some(r), h, c));
                DayKeyState { day, reference, record, held, certificate }
            })
            .collect();
        out.sort_by_key(|d| (d.day, d.reference));
        Ok(out)
    }

    /// The rows of this node's access log: what a regulator counts and verifies (no
    /// event content).
    pub async fn access_rows(&self) -> Result<Vec<(Hash32, Row)>, RecordsError> {
        Ok(self.access.log.all().await?)
    }
}

/// Opens a walked row's event with the key it was found under and its day key.
fn open_row(key: &LogKey, day: &DayKey, node: &KeyId, w: &store::Walked) -> Option<AccessEntry> {
    let sealed = w.row.sealed.as_ref()?;
    let plain = crypto::open(&key.seal_key(day), w.handle.as_bytes(), sealed)?;
    let event: AccessEvent = decode_versioned(&plain, 1 << 20).ok()?;
    Some(AccessEntry { version: 1, handle: w.handle, salt: key.salt(node, w.k), event })
}
