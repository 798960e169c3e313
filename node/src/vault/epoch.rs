//! Erasure epochs of the vault (DESIGN.md §5): the records' slots are overwritten, every
//! node on their paths gets a fresh key and is re-sealed, the intent journal is written
//! under both roots, and the new root is committed by overwriting the root slot; then
//! the journal and dropped subject indexes are cleaned up. One epoch serves many
//! records.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use cairn_proto::encoding::encode;
use cairn_proto::record::RecordId;
use zeroize::Zeroizing;

use super::crypto::{Key32, seal};
use super::error::VaultError;
use super::fault::{self, FaultPoint};
use super::index;
use super::keytree::{ChildRef, Entry, OpenBucket, SlotAddr, SlotUse, Tree, corrupt};
use super::kv::{KvStore, WriteBatch};
use super::layout::{self, aad, label};
use super::root::{RootState, RootStore};
use super::store::{Journal, Vault};
use super::{ErasureEvidence, SubjectRef};

impl<K: KvStore, R: RootStore> Vault<K, R> {
    /// Erases records in one epoch; acknowledged (keys destroyed) when it returns. On a
    /// rejection (unknown or repeated id) nothing changes.
    pub fn erase(&mut self, rids: &[RecordId]) -> Result<Vec<ErasureEvidence>, VaultError> {
        self.run_epoch(rids, None)
    }

    /// Erases every record of a subject, and the subject's index and key.
    pub fn erase_subject(&mut self, subject: &SubjectRef) -> Result<Vec<ErasureEvidence>, VaultError> {
        let id = encode(subject)?;
        let addr = *self.subjects.get(&id).ok_or(VaultError::SubjectNotFound)?;
        let rids = self.read_index(&self.subject_key(addr)?)?;
        self.run_epoch(&rids, Some(id))
    }

    fn run_epoch(
        &mut self,
        rids: &[RecordId],
        drop_subject: Option<Vec<u8>>,
    ) -> Result<Vec<ErasureEvidence>, VaultError> {
        // An epoch re-keys subjects and rewrites their indexes: what a store remembers
        // of them no longer holds, whether or not the epoch commits.
        self.tails.clear();
        if rids.is_empty() && drop_subject.is_none() {
            return Err(VaultError::Invalid("nothing to erase".into()));
        }
        if rids.len() > self.config.max_erase_batch {
            return Err(VaultError::Invalid(format!(
                "{} records; at most {} per erasure",
                rids.len(),
                self.config.max_erase_batch
            )));
        }
        let unique: BTreeSet<_> = rids.iter().collect();
        if unique.len() != rids.len() {
            return Err(VaultError::Invalid("a record id is listed twice".into()));
        }
        if let Some(missing) = rids.iter().find(|r| !self.records.contains_key(r)) {
            return Err(VaultError::NotFound(*missing));
        }
        let (from, to) = (self.tree.epoch, self.tree.epoch + 1);

        // What changes: slots cleared, subject entries re-keyed, blobs and indexes to drop.
        let mut cleared: BTreeSet<SlotAddr> = BTreeSet::new();
        let mut rewritten: BTreeMap<SlotAddr, Entry> = BTreeMap::new();
        let (mut commit_remove, mut rollback_remove) = (Vec::new(), Vec::new());
        let mut new_indexes = WriteBatch::default();
        // Every bucket touched is opened once and kept (sealed again below).
        let mut opened: BTreeMap<u32, OpenBucket> = BTreeMap::new();
        let mut removed_by_subject: BTreeMap<SlotAddr, BTreeSet<RecordId>> = BTreeMap::new();
        for rid in rids {
            let addr = *self.records.get(rid).ok_or(VaultError::NotFound(*rid))?;
            let slots = match opened.entry(addr.bucket) {
                std::collections::btree_map::Entry::Occupied(e) => e.into_mut(),
                std::collections::btree_map::Entry::Vacant(e) => {
                    e.insert(self.tree.read_bucket(&self.kv, addr.bucket)?)
                }
            };
            let Some(Some(
                Entry::Record { rid: stored, subject, .. } | Entry::LegacyRecord { rid: stored, subject, .. },
            )) = slots.slots.get(usize::from(addr.slot))
            else {
                return Err(corrupt(format!("slot {addr:?} does not hold the record the subject index names")));
            };
            if stored != rid {
                return Err(corrupt(format!("slot {addr:?} does not hold the record the subject index names")));
            }
            if let Some(subject) = subject {
                removed_by_subject.entry(*subject).or_default().insert(*rid);
            }
            cleared.insert(addr);
        }
        let drop_addr = match &drop_subject {
            Some(id) => Some(*self.subjects.get(id).ok_or(VaultError::SubjectNotFound)?),
            None => None,
        };
        if let Some(addr) = drop_addr {
            removed_by_subject.entry(addr).or_default();
        }
        for (addr, removed) in &removed_by_subject {
            let addr = *addr;
            let SlotUse::Subject(subject) = self.tree.slot_use(addr)? else {
                return Err(corrupt(format!("slot {addr:?} should hold a subject")));
            };
            let subject = subject.clone();
            let old_key = self.subject_key(addr)?;
            commit_remove.extend(index::store_keys(&self.kv, &old_key)?);
            if drop_addr == Some(addr) {
                cleared.insert(addr);
                continue;
            }
            // Re-key the subject so no readable index version lists an erased record.
            let index: Vec<RecordId> =
                self.read_index(&old_key)?.into_iter().filter(|r| !removed.contains(r)).collect();
            let key = Key32::random()?;
            rollback_remove.extend(index::write(&key, &index, &mut new_indexes)?);
            rewritten.insert(addr, Entry::Subject { subject, key });
        }

        // New keys on every path from a changed slot to the root.
        let buckets: BTreeSet<u32> = cleared.iter().chain(rewritten.keys()).map(|a| a.bucket).collect();
        let dirs: BTreeSet<u32> = buckets.iter().map(|b| self.tree.dir_of(*b)).collect();
        let mut batch = WriteBatch::default();
        let mut new_buckets: HashMap<u32, ChildRef> = HashMap::new();
        for b in &buckets {
            let node = ChildRef { key: Key32::random()?, generation: to };
            let mut open = match opened.remove(b) {
                Some(open) => open,
                None => self.tree.read_bucket(&self.kv, *b)?,
            };
            for (slot, (place, blob)) in open.slots.iter_mut().zip(open.blobs.iter_mut()).enumerate() {
                let addr = SlotAddr { bucket: *b, slot: slot as u16 };
                if cleared.contains(&addr) {
                    *place = None;
                    *blob = None;
                } else if let Some(entry) = rewritten.remove(&addr) {
                    *place = Some(entry);
                }
            }
            let (k, v) = Tree::seal_bucket(*b, &node, open)?;
            batch.put(k, v);
            new_buckets.insert(*b, node);
        }
        let mut dir_refs = self.tree.dirs.clone();
        for d in &dirs {
            let node = ChildRef { key: Key32::random()?, generation: to };
            let (k, v) = Tree::seal_dir(*d, &node, &self.tree.bucket_refs_with(*d, &new_buckets))?;
            batch.put(k, v);
            if let Some(r) = dir_refs.get_mut(*d as usize) {
                *r = node;
            }
        }
        let new_root = RootState { epoch: to, key: Key32::random()? };
        let (k, v) = self.tree.seal_root_node(to, &new_root.key, &dir_refs)?;
        batch.put(k, v);
        let journal = Journal {
            version: 1,
            from_epoch: from,
            to_epoch: to,
            buckets: buckets
                .iter()
                .map(|b| self.tree.bucket(*b).map(|x| (*b, x.node.generation)))
                .collect::<Result<_, _>>()?,
            dirs: dirs.iter().map(|d| (*d, self.tree.dirs.get(*d as usize).map_or(0, |r| r.generation))).collect(),
            commit_remove,
            rollback_remove,
        };
        let plain = Zeroizing::new(encode(&journal)?);
        for (copy, root) in [(0u8, &self.tree.root), (1, &new_root.key)] {
            let key = layout::journal(copy);
            batch.put(key.clone(), seal(&root.derive(label::JOURNAL), &aad(label::JOURNAL, &key), &plain)?);
        }
        for (k, v) in new_indexes.into_ops() {
            if let Some(v) = v {
                batch.put(k, v);
            }
        }

        // Commit: new versions durable, then the root slot.
        self.kv.apply(batch)?;
        fault::hit(self.config.fault, FaultPoint::EraseAfterNewVersions);
        self.kv.sync()?;
        fault::hit(self.config.fault, FaultPoint::EraseAfterSync);
        self.roots.commit(&new_root)?;
        fault::hit(self.config.fault, FaultPoint::EraseAfterCommit);

        // The epoch is committed: update memory, then clean up.
        for (b, node) in new_buckets {
            if let Some(bucket) = self.tree.buckets.get_mut(b as usize) {
                bucket.node = node;
            }
        }
        self.tree.dirs = dir_refs;
        self.tree.epoch = to;
        self.tree.root = new_root.key;
        for addr in &cleared {
            self.tree.free(*addr);
        }
        for rid in rids {
            self.records.remove(rid);
        }
        if let Some(id) = &drop_subject {
            self.subjects.remove(id);
        }
        let mut cleanup = WriteBatch::default();
        Self::cleanup_batch(&journal, true, &mut cleanup);
        self.kv.apply(cleanup)?;
        fault::hit(self.config.fault, FaultPoint::EraseAfterCleanup);
        tracing::info!(epoch = to, records = rids.len(), buckets = buckets.len(), "vault: erasure epoch committed");
        Ok(rids.iter().map(|rid| ErasureEvidence { rid: *rid, epoch_before: from, epoch_after: to }).collect())
    }
}
