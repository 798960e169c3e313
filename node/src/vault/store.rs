//! The vault: open (with recovery), put, get and verify records over a key-value store
//! and a root store. Erasure epochs are in `epoch.rs`.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;

use cairn_proto::encoding::encode;
use cairn_proto::record::{CommitmentSecret, Manifest, RecordHeader, RecordId, content_commitment, record_leaf};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::codec::decode_own;
use super::crypto::{Key32, NONCE_LEN, fill_random, open, seal, seal_with_nonce, take_array};
use super::error::VaultError;
use super::fault::{self, FaultPoint};
use super::index;
use super::keytree::{Entry, SlotAddr, SlotUse, Tree, corrupt};
use super::kv::{KvStore, SledStore, WriteBatch};
use super::layout::{self, aad, label};
use super::retention::RetentionIndex;
use super::root::{FileRootSlot, RootState, RootStore};
use super::{NewRecord, PutReceipt, Replica, StoredRecord, SubjectRef, VaultConfig};

const BLOB_LIMIT: usize = 1 << 20;

/// A record's metadata, sealed under a key derived from its `dk`.
#[derive(Serialize, Deserialize)]
pub(crate) struct Meta {
    pub header: RecordHeader,
    pub manifest: Manifest,
    pub subject: Option<SubjectRef>,
}

/// What a record's blob holds: sealed metadata and the payload ciphertext `ct`.
#[derive(Serialize, Deserialize)]
pub(crate) struct Blob {
    #[serde(with = "serde_bytes")]
    pub meta: Vec<u8>,
    #[serde(with = "serde_bytes")]
    pub payload: Vec<u8>,
}

/// The intent journal of an erasure epoch, sealed twice: under a key derived from the
/// old root and under one derived from the new root. Whichever opens with the root found
/// at start-up says whether to finish (new) or undo (old) the epoch.
#[derive(Serialize, Deserialize)]
pub(super) struct Journal {
    pub(super) version: u8,
    pub(super) from_epoch: u64,
    pub(super) to_epoch: u64,
    /// Buckets rotated, with their generation before the epoch.
    pub(super) buckets: Vec<(u32, u64)>,
    /// Directories rotated, with their generation before the epoch.
    pub(super) dirs: Vec<(u32, u64)>,
    /// Subject indexes to remove once the epoch committed.
    pub(super) commit_remove: Vec<Vec<u8>>,
    /// Subject indexes to remove if the epoch is undone.
    pub(super) rollback_remove: Vec<Vec<u8>>,
}

/// A slot filled by a put: its position in the bucket, its entry and, for a record, its
/// encoded blob.
type NewSlot = (u16, Entry, Option<Vec<u8>>);

/// Result of [`Vault::verify`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyReport {
    /// Committed epoch.
    pub epoch: u64,
    /// Records that opened and matched their commitment.
    pub records_ok: usize,
    /// Subjects whose index opened and lists only live records.
    pub subjects_ok: usize,
}

/// The vault. Owned by one task; every method runs to completion before the next.
pub struct Vault<K: KvStore, R: RootStore> {
    pub(super) kv: K,
    pub(super) roots: R,
    pub(super) tree: Tree,
    pub(super) records: HashMap<RecordId, SlotAddr>,
    pub(super) subjects: HashMap<Vec<u8>, SlotAddr>,
    pub(super) retention: RetentionIndex,
    /// Subject keys and index tails of recent stores (memory only; `index::Tails`).
    pub(super) tails: index::Tails,
    pub(super) config: VaultConfig,
}

impl<K: KvStore, R: RootStore> std::fmt::Debug for Vault<K, R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vault").field("epoch", &self.tree.epoch).field("records", &self.records.len()).finish()
    }
}

impl Vault<SledStore, FileRootSlot> {
    /// Opens the vault in `dir` (`dir/db` for sled, `dir/root.slot` for the root).
    pub fn open_dir(dir: &Path, config: VaultConfig) -> Result<Self, VaultError> {
        std::fs::create_dir_all(dir)?;
        let kv = SledStore::open(&dir.join("db"))?;
        let roots = FileRootSlot::open(&dir.join("root.slot"), config.fault)?;
        Self::open(kv, roots, config)
    }
}

impl<K: KvStore, R: RootStore> Vault<K, R> {
    /// Opens a vault: loads the root, finishes or undoes an interrupted erasure epoch and
    /// loads the key tree.
    pub fn open(kv: K, mut roots: R, config: VaultConfig) -> Result<Self, VaultError> {
        if config.fanout == 0 || config.bucket_slots == 0 {
            return Err(VaultError::Invalid("fanout and bucket_slots must be at least 1".into()));
        }
        if usize::from(config.bucket_slots) * (config.max_payload + 4096) > super::keytree::VALUE_LIMIT {
            return Err(VaultError::Invalid("bucket_slots × max_payload exceeds the bucket size limit".into()));
        }
        let root = match roots.load()? {
            Some(root) => root,
            None => Self::initialise(&kv, &mut roots, &config)?,
        };
        Self::recover(&kv, &root)?;
        let loaded = Tree::load(&kv, root)?;
        tracing::info!(epoch = loaded.tree.epoch, records = loaded.records.len(), "vault opened");
        Ok(Self {
            kv,
            roots,
            tree: loaded.tree,
            records: loaded.records,
            subjects: loaded.subjects,
            retention: loaded.retention,
            tails: index::Tails::default(),
            config,
        })
    }

    fn initialise(kv: &K, roots: &mut R, config: &VaultConfig) -> Result<RootState, VaultError> {
        let leftovers = kv.scan_prefix(b"")?;
        if leftovers.iter().any(|(k, _)| k != &layout::root_node(0)) {
            return Err(corrupt("the vault holds data but the root slot is empty; the root may be lost"));
        }
        let root = RootState { epoch: 0, key: Key32::random()? };
        let tree = Tree::new(root.clone(), config.fanout, config.bucket_slots);
        let (k, v) = tree.seal_root_node(0, &root.key, &[])?;
        let mut batch = WriteBatch::default();
        batch.put(k, v);
        kv.apply(batch)?;
        kv.sync()?;
        roots.commit(&root)?;
        Ok(root)
    }

    /// Finishes or undoes an epoch that a crash interrupted.
    fn recover(kv: &K, root: &RootState) -> Result<(), VaultError> {
        let journal_key = root.key.derive(label::JOURNAL);
        let mut found = None;
        for copy in [0u8, 1] {
            let key = layout::journal(copy);
            if let Some(sealed) = kv.get(&key)?
                && let Some(plain) = open(&journal_key, &aad(label::JOURNAL, &key), &sealed)
            {
                let journal: Journal = decode_own(&plain, BLOB_LIMIT, "journal")?;
                found = Some((copy, journal));
            }
        }
        let mut batch = WriteBatch::default();
        match found {
            Some((1, j)) if j.to_epoch == root.epoch => {
                tracing::info!(epoch = root.epoch, "vault: finishing the clean-up of a committed erasure epoch");
                Self::cleanup_batch(&j, true, &mut batch);
            }
            Some((0, j)) if j.from_epoch == root.epoch => {
                tracing::info!(epoch = root.epoch, "vault: undoing an erasure epoch that did not commit");
                Self::cleanup_batch(&j, false, &mut batch);
            }
            Some(_) => return Err(corrupt("the journal does not match the root slot's epoch")),
            None => {
                // Copies sealed under roots that no longer exist are garbage.
                for copy in [0u8, 1] {
                    if kv.get(&layout::journal(copy))?.is_some() {
                        batch.remove(layout::journal(copy));
                    }
                }
            }
        }
        if !batch.is_empty() {
            kv.apply(batch)?;
            kv.sync()?;
        }
        Ok(())
    }

    /// Removals that finish (`committed`) or undo an epoch.
    pub(super) fn cleanup_batch(j: &Journal, committed: bool, batch: &mut WriteBatch) {
        for (bucket, old_generation) in &j.buckets {
            batch.remove(layout::bucket(*bucket, if committed { *old_generation } else { j.to_epoch }));
        }
        for (dir, old_generation) in &j.dirs {
            batch.remove(layout::dir_node(*dir, if committed { *old_generation } else { j.to_epoch }));
        }
        batch.remove(layout::root_node(if committed { j.from_epoch } else { j.to_epoch }));
        let extra = if committed { &j.commit_remove } else { &j.rollback_remove };
        extra.iter().for_each(|k| batch.remove(k.clone()));
        batch.remove(layout::journal(0));
        batch.remove(layout::journal(1));
    }

    /// Committed keystore epoch.
    pub fn epoch(&self) -> u64 {
        self.tree.epoch
    }

    /// Number of live records.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// True if no record is stored.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// Ids of the live records, sorted.
    pub fn record_ids(&self) -> Vec<RecordId> {
        let mut ids: Vec<_> = self.records.keys().copied().collect();
        ids.sort();
        ids
    }

    /// Stores one record; acknowledged (durable) when it returns.
    pub fn put(&mut self, record: NewRecord) -> Result<PutReceipt, VaultError> {
        self.put_batch(vec![record])?.pop().ok_or_else(|| corrupt("put returned nothing"))
    }

    fn check_new(&self, i: usize, r: &NewRecord) -> Result<(), VaultError> {
        let bad = |what: String| Err(VaultError::Invalid(format!("record {i}: {what}")));
        if r.payload.is_empty() || r.payload.len() > self.config.max_payload {
            return bad(format!("payload is {} bytes; 1 to {} allowed", r.payload.len(), self.config.max_payload));
        }
        if !super::valid_purpose(&r.purpose) {
            return bad(format!("purpose {:?} must be 1 to 64 printable ASCII characters", r.purpose));
        }
        if r.retain_until_ms <= r.received_at_ms {
            return bad("retention must end after the record was received".into());
        }
        if let Err(e) = r.manifest.check() {
            return bad(format!("manifest: {e}"));
        }
        if let Some(s) = &r.subject
            && (s.local.is_empty() || s.local.len() > 256)
        {
            return bad("subject reference must be 1 to 256 bytes".into());
        }
        Ok(())
    }

    /// Stores records in one atomic, durable batch; acknowledged when it returns. On an
    /// error nothing is stored.
    pub fn put_batch(&mut self, records: Vec<NewRecord>) -> Result<Vec<PutReceipt>, VaultError> {
        let replicas = self.seal_batch(records)?;
        self.store(replicas)
    }

    /// Gives each record its id, data key and commitment secret and encrypts its payload,
    /// without storing anything: the home custodian sends the result to the other
    /// custodians and stores it itself with [`Vault::store`].
    pub fn seal_batch(&self, records: Vec<NewRecord>) -> Result<Vec<Replica>, VaultError> {
        for (i, r) in records.iter().enumerate() {
            self.check_new(i, r)?;
        }
        let mut out: Vec<Replica> = Vec::with_capacity(records.len());
        let mut fresh = std::collections::HashSet::with_capacity(records.len());
        for record in records {
            // All of a record's randomness in one system call: rid, dk, s and a nonce.
            let mut random = Zeroizing::new([0u8; 16 + 32 + 32 + NONCE_LEN]);
            fill_random(random.as_mut_slice())?;
            let mut pool: &[u8] = random.as_slice();
            let rid = RecordId(take_array(&mut pool)?);
            if self.records.contains_key(&rid) || !fresh.insert(rid) {
                return Err(corrupt("the OS RNG repeated a 128-bit record id"));
            }
            let (dk, s) = (Key32::take(&mut pool)?, Key32::take(&mut pool)?);
            let payload_nonce = take_array(&mut pool)?;
            let header = RecordHeader {
                version: 1,
                rid,
                gateway: record.gateway,
                content_type: record.content_type,
                purpose: record.purpose,
                received_at_ms: record.received_at_ms,
                retain_until_ms: record.retain_until_ms,
            };
            let ciphertext = seal_with_nonce(&dk, payload_nonce, &payload_aad(&rid, &header)?, &record.payload)?;
            out.push(Replica { header, manifest: record.manifest, subject: record.subject, dk, s, ciphertext });
        }
        Ok(out)
    }

    /// Checks a replica that arrived from another custodian: its fields follow the rules
    /// of a new record and its ciphertext opens under its key and header.
    fn check_replica(&self, i: usize, r: &Replica) -> Result<(), VaultError> {
        let bad = |what: &str| Err(VaultError::Invalid(format!("replica {i}: {what}")));
        let h = &r.header;
        if h.version != 1 {
            return bad("unknown header version");
        }
        if r.ciphertext.len() > self.config.max_payload + 64 {
            return bad("ciphertext is larger than the largest payload");
        }
        let as_new = NewRecord {
            gateway: h.gateway,
            content_type: h.content_type,
            purpose: h.purpose.clone(),
            received_at_ms: h.received_at_ms,
            retain_until_ms: h.retain_until_ms,
            subject: r.subject.clone(),
            manifest: r.manifest.clone(),
            payload: vec![0],
        };
        self.check_new(i, &as_new)?;
        if open(&r.dk, &payload_aad(&h.rid, h)?, &r.ciphertext).is_none() {
            return bad("the ciphertext does not open under its key and header");
        }
        Ok(())
    }

    /// Stores sealed records (from [`Vault::seal_batch`] here or at another custodian) in
    /// one atomic, durable batch; acknowledged when it returns. A record already stored
    /// with the same leaf is skipped (a repeated replication); on an error nothing is
    /// stored.
    pub fn store(&mut self, replicas: Vec<Replica>) -> Result<Vec<PutReceipt>, VaultError> {
        let mut seen = std::collections::HashSet::with_capacity(replicas.len());
        let mut records = Vec::with_capacity(replicas.len());
        let mut receipts = Vec::with_capacity(replicas.len());
        for (i, r) in replicas.into_iter().enumerate() {
            self.check_replica(i, &r)?;
            let rid = r.header.rid;
            if !seen.insert(rid) {
                return Err(VaultError::Invalid(format!("replica {i}: record {rid} appears twice")));
            }
            if self.records.contains_key(&rid) {
                let stored = self.get(&rid)?;
                if stored.leaf != r.leaf()? {
                    return Err(VaultError::Invalid(format!("replica {i}: record {rid} is stored with another leaf")));
                }
                receipts.push(PutReceipt { rid, commitment: stored.commitment, leaf: stored.leaf });
                continue;
            }
            records.push(r);
        }
        let new_subjects: BTreeSet<Vec<u8>> = records
            .iter()
            .filter_map(|r| r.subject.as_ref().map(encode).transpose().ok().flatten())
            .filter(|s| !self.subjects.contains_key(s))
            .collect();
        let needed = (records.len() + new_subjects.len()) as u64;
        if needed > self.tree.free_slots() {
            return Err(VaultError::Full(self.tree.capacity()));
        }

        let mut batch = WriteBatch::default();
        let mut new_entries: BTreeMap<u32, Vec<NewSlot>> = BTreeMap::new();

        // Subjects first, so each record's entry can point at its subject's slot.
        let mut subject_ids = Vec::with_capacity(records.len());
        let mut by_subject: BTreeMap<Vec<u8>, (SlotAddr, Option<Key32>, Vec<RecordId>)> = BTreeMap::new();
        for record in &records {
            let id = record.subject.as_ref().map(encode).transpose()?;
            if let Some(id) = &id
                && !by_subject.contains_key(id)
            {
                let known = match self.subjects.get(id) {
                    Some(addr) => (*addr, None),
                    None => {
                        let key = Key32::random()?;
                        let addr = self.tree.allocate(&mut batch, SlotUse::Subject(id.clone()))?;
                        let entry = Entry::Subject { subject: id.clone(), key: key.clone() };
                        new_entries.entry(addr.bucket).or_default().push((addr.slot, entry, None));
                        (addr, Some(key))
                    }
                };
                by_subject.insert(id.clone(), (known.0, known.1, Vec::new()));
            }
            subject_ids.push(id);
        }

        let mut placed = Vec::with_capacity(records.len());
        let mut manifest_hashes: Vec<(Manifest, cairn_proto::Hash32)> = Vec::new();
        for (record, subject_id) in records.into_iter().zip(subject_ids) {
            let Replica { header, manifest, subject: subject_ref, dk, s, ciphertext } = record;
            let (rid, retain_until_ms) = (header.rid, header.retain_until_ms);
            let commitment = content_commitment(&CommitmentSecret::from_bytes(*s.expose()), &ciphertext);
            let manifest_hash = match manifest_hashes.iter().find(|(m, _)| *m == manifest) {
                Some((_, h)) => *h,
                None => {
                    let h = manifest.hash()?;
                    manifest_hashes.push((manifest.clone(), h));
                    h
                }
            };
            let leaf = record_leaf(&rid, &manifest_hash, &commitment);
            let subject = match &subject_id {
                Some(id) => by_subject.get_mut(id).map(|(addr, _, rids)| {
                    rids.push(rid);
                    *addr
                }),
                None => None,
            };
            let meta = Meta { header, manifest, subject: subject_ref };
            let meta_key = dk.derive(label::META);
            let meta = seal(&meta_key, &aad(label::META, &rid.0), &Zeroizing::new(encode(&meta)?))?;
            let blob = encode(&Blob { meta, payload: ciphertext })?;
            let addr = self.tree.allocate(&mut batch, SlotUse::Record(rid))?;
            new_entries.entry(addr.bucket).or_default().push((
                addr.slot,
                Entry::Record { rid, dk, s, subject, retain_until_ms },
                Some(blob),
            ));
            placed.push((rid, addr, retain_until_ms));
            receipts.push(PutReceipt { rid, commitment, leaf });
        }
        let mut new_subject_slots = Vec::new();
        let mut tails = Vec::with_capacity(by_subject.len());
        for (id, (addr, new_key, rids)) in by_subject {
            // Append-only: the last chunk and the head, whatever the subject holds; from
            // memory when this subject was stored recently (index::Tails).
            let (key, start) = match (new_key, self.tails.take(addr)) {
                (Some(key), _) => {
                    new_subject_slots.push((id, addr));
                    (key, index::Start::New)
                }
                (None, Some((key, tail))) => (key, index::Start::Known(tail)),
                (None, None) => (self.subject_key(addr)?, index::Start::Stored),
            };
            let tail = index::append(&self.kv, &key, start, &rids, &mut batch)?;
            tails.push((addr, key, tail));
        }
        for (id, entries) in new_entries {
            let mut open = self.tree.read_bucket(&self.kv, id)?;
            for (slot, entry, blob) in entries {
                let i = usize::from(slot);
                if let (Some(place), Some(blob_place)) = (open.slots.get_mut(i), open.blobs.get_mut(i)) {
                    *place = Some(entry);
                    *blob_place = blob;
                }
            }
            let (k, v) = Tree::seal_bucket(id, &self.tree.bucket(id)?.node, open)?;
            batch.put(k, v);
            self.tree.unwritten.remove(&id);
        }
        self.tree.write_unwritten(&mut batch)?;
        self.kv.apply(batch)?;
        fault::hit(self.config.fault, FaultPoint::PutBeforeSync);
        self.kv.sync()?;
        for (rid, addr, retain_until_ms) in placed {
            self.records.insert(rid, addr);
            self.retention.by_end.insert((retain_until_ms, rid));
        }
        self.subjects.extend(new_subject_slots);
        for (addr, key, tail) in tails {
            self.tails.put(addr, key, tail);
        }
        Ok(receipts)
    }

    pub(super) fn subject_key(&self, addr: SlotAddr) -> Result<Key32, VaultError> {
        match self.tree.read_entry(&self.kv, addr)?.0 {
            Entry::Subject { key, .. } => Ok(key),
            Entry::Record { .. } | Entry::LegacyRecord { .. } => {
                Err(corrupt(format!("slot {addr:?} should hold a subject")))
            }
        }
    }

    pub(super) fn read_index(&self, key: &Key32) -> Result<Vec<RecordId>, VaultError> {
        index::read(&self.kv, key)
    }

    /// A record's data key, commitment secret and encoded blob.
    fn record_keys(&self, rid: &RecordId) -> Result<(Key32, Key32, Vec<u8>), VaultError> {
        let addr = self.records.get(rid).ok_or(VaultError::NotFound(*rid))?;
        match self.tree.read_entry(&self.kv, *addr)? {
            (Entry::Record { rid: stored, dk, s, .. } | Entry::LegacyRecord { rid: stored, dk, s, .. }, Some(blob))
                if stored == *rid =>
            {
                Ok((dk, s, blob))
            }
            _ => Err(corrupt(format!("slot {addr:?} does not hold the record the index names, with its blob"))),
        }
    }

    /// Reads a record and recomputes its commitment and leaf.
    pub fn get(&self, rid: &RecordId) -> Result<StoredRecord, VaultError> {
        let (dk, s, raw) = self.record_keys(rid)?;
        let blob: Blob = decode_own(&raw, BLOB_LIMIT, "blob")?;
        let meta = open(&dk.derive(label::META), &aad(label::META, &rid.0), &blob.meta)
            .ok_or_else(|| corrupt("the metadata of a record does not open"))?;
        let meta: Meta = decode_own(&meta, BLOB_LIMIT, "metadata")?;
        let payload = open(&dk, &payload_aad(rid, &meta.header)?, &blob.payload)
            .ok_or_else(|| corrupt("the payload of a record does not open"))?;
        let commitment = content_commitment(&CommitmentSecret::from_bytes(*s.expose()), &blob.payload);
        let leaf = record_leaf(rid, &meta.manifest.hash()?, &commitment);
        Ok(StoredRecord {
            header: meta.header,
            manifest: meta.manifest,
            subject: meta.subject,
            payload,
            commitment,
            leaf,
        })
    }

    /// A stored record as its home custodian sealed it, to hand to another custodian.
    pub fn replica(&self, rid: &RecordId) -> Result<Replica, VaultError> {
        let (dk, s, raw) = self.record_keys(rid)?;
        let blob: Blob = decode_own(&raw, BLOB_LIMIT, "blob")?;
        let meta = open(&dk.derive(label::META), &aad(label::META, &rid.0), &blob.meta)
            .ok_or_else(|| corrupt("the metadata of a record does not open"))?;
        let meta: Meta = decode_own(&meta, BLOB_LIMIT, "metadata")?;
        Ok(Replica {
            header: meta.header,
            manifest: meta.manifest,
            subject: meta.subject,
            dk,
            s,
            ciphertext: blob.payload,
        })
    }

    /// Records of a subject.
    pub fn subject_records(&self, subject: &SubjectRef) -> Result<Vec<RecordId>, VaultError> {
        let addr = self.subjects.get(&encode(subject)?).ok_or(VaultError::SubjectNotFound)?;
        self.read_index(&self.subject_key(*addr)?)
    }

    /// Opens every live record and subject index and checks commitments and links.
    pub fn verify(&self) -> Result<VerifyReport, VaultError> {
        let mut records_ok = 0;
        for rid in self.records.keys() {
            let r = self.get(rid)?;
            if r.header.rid != *rid {
                return Err(corrupt(format!("record {rid} carries header of {}", r.header.rid)));
            }
            records_ok += 1;
        }
        let mut subjects_ok = 0;
        for addr in self.subjects.values() {
            let index = self.read_index(&self.subject_key(*addr)?)?;
            if let Some(gone) = index.iter().find(|r| !self.records.contains_key(r)) {
                return Err(corrupt(format!("a subject index lists record {gone}, which is not live")));
            }
            subjects_ok += 1;
        }
        Ok(VerifyReport { epoch: self.tree.epoch, records_ok, subjects_ok })
    }

    /// Test hook: the key of a subject's index.
    #[cfg(test)]
    pub(crate) fn subject_index_key(&self, subject: &SubjectRef) -> Result<Key32, VaultError> {
        let addr = self.subjects.get(&encode(subject)?).ok_or(VaultError::SubjectNotFound)?;
        self.subject_key(*addr)
    }

    /// Test hook: the data key and commitment secret of a live record.
    #[cfg(test)]
    pub(crate) fn secrets_of(&self, rid: &RecordId) -> Result<(Key32, Key32), VaultError> {
        self.record_keys(rid).map(|(dk, s, _)| (dk, s))
    }

    /// Test hook: the key-value store.
    #[cfg(test)]
    pub(crate) fn kv(&self) -> &K {
        &self.kv
    }

    /// Test hook: the committed root key.
    #[cfg(test)]
    pub(crate) fn root_key(&self) -> Key32 {
        self.tree.root.clone()
    }
}

impl Replica {
    /// The payload of a replica, opened with its own data key (a custodian reads what it
    /// was sent; the replica is checked to open before it is stored).
    pub fn open_payload(&self) -> Result<Zeroizing<Vec<u8>>, VaultError> {
        open(&self.dk, &payload_aad(&self.header.rid, &self.header)?, &self.ciphertext)
            .ok_or_else(|| VaultError::Invalid("a replica's payload does not open under its key".into()))
    }
}

pub(crate) fn payload_aad(rid: &RecordId, header: &RecordHeader) -> Result<Vec<u8>, VaultError> {
    Ok([label::PAYLOAD.as_bytes(), &rid.0, &encode(header)?].concat())
}
