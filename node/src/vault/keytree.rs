//! The key-wrapping tree (Reardon et al., CCS 2013, adapted): the root key `R` seals the
//! root node, which holds the keys of directory nodes, which hold the keys of buckets,
//! whose key seals each of the bucket's key-slot entries (`(rid, dk, s)` of a record, or
//! a subject's index key). Destroying an entry means giving its bucket, the bucket's
//! directory and the root fresh keys: every older copy on disk is then sealed under keys
//! that exist nowhere. A bucket's slots are sealed together as one node, so rotating a
//! bucket costs one small encryption and one write whatever its occupancy.
//!
//! Versions are shadowed: a rotated bucket or directory is written under a new
//! generation number beside the old one, and the root node under the new epoch, so the
//! root slot write is the single commit point.

use std::collections::{BTreeSet, HashMap};

use cairn_proto::encoding::encode;
use cairn_proto::record::RecordId;
use serde::{Deserialize, Serialize};

use super::codec::decode_own;
use super::crypto::{Key32, open, seal};
use super::error::VaultError;
use super::kv::{KvStore, WriteBatch};
use super::layout::{self, aad, label};
use super::retention::RetentionIndex;
use super::root::RootState;

/// Largest node the vault will decode.
const NODE_LIMIT: usize = 1 << 20;

/// Largest bucket value (slots times the largest blob) the vault will decode.
pub const VALUE_LIMIT: usize = 256 << 20;

/// Buckets created together, so a directory is rewritten once per group.
pub const BUCKET_GROUP: u32 = 16;

/// Where a key-slot entry lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct SlotAddr {
    /// Bucket id (directory × fanout + index in directory).
    pub bucket: u32,
    /// Slot in the bucket.
    pub slot: u16,
}

/// A key-slot entry, sealed with its bucket's other slots under the bucket's key.
#[derive(Serialize, Deserialize)]
pub enum Entry {
    /// A record's data key and commitment secret, as vaults wrote them before issue 17
    /// (its end of retention only in its sealed metadata).
    LegacyRecord {
        /// Record id.
        rid: RecordId,
        /// Data key.
        dk: Key32,
        /// Commitment secret `s`.
        s: Key32,
        /// Slot of the record's subject entry, if it has a subject.
        subject: Option<SlotAddr>,
    },
    /// A subject's index key.
    Subject {
        /// The subject reference, encoded.
        #[serde(with = "serde_bytes")]
        subject: Vec<u8>,
        /// Key of the subject's index.
        key: Key32,
    },
    /// A record's data key, commitment secret and end of retention (last, so that bcs
    /// variant numbers of older entries stay as they were).
    Record {
        /// Record id.
        rid: RecordId,
        /// Data key.
        dk: Key32,
        /// Commitment secret `s`.
        s: Key32,
        /// Slot of the record's subject entry, if it has a subject.
        subject: Option<SlotAddr>,
        /// End of the retention period, Unix ms (the header's `retain_until_ms`), so the
        /// retention sweep finds expired records without opening every one.
        retain_until_ms: u64,
    },
}

/// A child's key and generation, as its parent stores it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChildRef {
    /// Key sealing the child.
    pub key: Key32,
    /// Generation of the child's current version.
    pub generation: u64,
}

/// The root node: directory keys, sealed under a key derived from the root.
#[derive(Serialize, Deserialize)]
pub(crate) struct RootNode {
    pub version: u8,
    pub epoch: u64,
    pub fanout: u32,
    pub bucket_slots: u16,
    pub dirs: Vec<ChildRef>,
}

/// A bucket node: the key slots, sealed under the bucket's key.
#[derive(Serialize, Deserialize)]
pub(crate) struct BucketNode {
    pub version: u8,
    pub slots: Vec<Option<Entry>>,
}

/// What one store value of a bucket holds: its sealed node and, beside it, the blob of
/// each record slot (metadata sealed under a key derived from the record's `dk`, and the
/// payload ciphertext `ct`). Keeping blobs with their bucket makes a batch of puts a
/// handful of writes instead of one per record (ADR 008).
#[derive(Serialize, Deserialize)]
pub(crate) struct BucketValue {
    #[serde(with = "serde_bytes")]
    pub sealed: Vec<u8>,
    pub blobs: Vec<Option<serde_bytes::ByteBuf>>,
}

/// A bucket opened: its slots and the blobs beside them.
#[derive(Debug)]
pub struct OpenBucket {
    /// Key slots.
    pub slots: Vec<Option<Entry>>,
    /// Encoded blob of each record slot.
    pub blobs: Vec<Option<Vec<u8>>>,
}

impl OpenBucket {
    fn empty(n: u16) -> Self {
        Self { slots: (0..n).map(|_| None).collect(), blobs: vec![None; usize::from(n)] }
    }
}

/// A directory node: bucket keys, sealed under the directory's key.
#[derive(Serialize, Deserialize)]
pub(crate) struct DirNode {
    pub version: u8,
    pub buckets: Vec<ChildRef>,
}

/// What a slot holds (in memory only).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SlotUse {
    /// Nothing.
    Free,
    /// A record's keys.
    Record(RecordId),
    /// A subject's index key.
    Subject(Vec<u8>),
}

/// A bucket of key slots.
#[derive(Debug)]
pub struct Bucket {
    /// Its current key and generation.
    pub node: ChildRef,
    /// Its slots.
    pub slots: Vec<SlotUse>,
}

/// The tree in memory: keys of every node, and what each slot holds. Entries themselves
/// stay on disk, sealed, and are opened on demand.
#[derive(Debug)]
pub struct Tree {
    /// Committed epoch.
    pub epoch: u64,
    /// Committed root key.
    pub root: Key32,
    /// Buckets per directory and directories under the root.
    pub fanout: u32,
    /// Slots per bucket.
    pub bucket_slots: u16,
    /// Directory keys and generations.
    pub dirs: Vec<ChildRef>,
    /// Buckets by id.
    pub buckets: Vec<Bucket>,
    /// Buckets with a free slot.
    open_buckets: BTreeSet<u32>,
    /// Buckets created in memory whose node is not yet in the store.
    pub unwritten: BTreeSet<u32>,
}

/// What loading found.
#[derive(Debug)]
pub struct Loaded {
    /// The tree.
    pub tree: Tree,
    /// Live records.
    pub records: HashMap<RecordId, SlotAddr>,
    /// Live subjects by encoded reference.
    pub subjects: HashMap<Vec<u8>, SlotAddr>,
    /// Live records by end of retention; records written before issue 17 in `unknown`.
    pub retention: RetentionIndex,
}

impl Tree {
    /// A new, empty tree for a new vault.
    pub fn new(root: RootState, fanout: u32, bucket_slots: u16) -> Self {
        Self {
            epoch: root.epoch,
            root: root.key,
            fanout,
            bucket_slots,
            dirs: Vec::new(),
            buckets: Vec::new(),
            open_buckets: BTreeSet::new(),
            unwritten: BTreeSet::new(),
        }
    }

    /// Slots in a full tree.
    pub fn capacity(&self) -> u64 {
        u64::from(self.fanout) * u64::from(self.fanout) * u64::from(self.bucket_slots)
    }

    /// Free slots left.
    pub fn free_slots(&self) -> u64 {
        let used_buckets_free: u64 = self
            .open_buckets
            .iter()
            .filter_map(|b| self.buckets.get(*b as usize))
            .map(|b| b.slots.iter().filter(|s| **s == SlotUse::Free).count() as u64)
            .sum();
        let unallocated = u64::from(self.fanout) * u64::from(self.fanout) - self.buckets.len() as u64;
        used_buckets_free + unallocated * u64::from(self.bucket_slots)
    }

    /// The directory of a bucket.
    pub fn dir_of(&self, bucket: u32) -> u32 {
        bucket / self.fanout
    }

    /// Sealed root node for `epoch` under `root`, with the given directory references.
    pub fn seal_root_node(
        &self,
        epoch: u64,
        root: &Key32,
        dirs: &[ChildRef],
    ) -> Result<(Vec<u8>, Vec<u8>), VaultError> {
        let node =
            RootNode { version: 1, epoch, fanout: self.fanout, bucket_slots: self.bucket_slots, dirs: dirs.to_vec() };
        let key = layout::root_node(epoch);
        let value = seal(&root.derive(label::ROOT_NODE), &aad(label::ROOT_NODE, &key), &encode(&node)?)?;
        Ok((key, value))
    }

    /// Sealed directory node `dir` at its generation in `dir_ref`, listing `buckets`.
    pub fn seal_dir(dir: u32, dir_ref: &ChildRef, buckets: &[ChildRef]) -> Result<(Vec<u8>, Vec<u8>), VaultError> {
        let node = DirNode { version: 1, buckets: buckets.to_vec() };
        let key = layout::dir_node(dir, dir_ref.generation);
        let value = seal(&dir_ref.key, &aad(label::DIR, &key), &encode(&node)?)?;
        Ok((key, value))
    }

    /// The store value of bucket `id` at the generation in `bucket`: its slots sealed
    /// under the bucket's key, and the blobs beside them.
    pub fn seal_bucket(id: u32, bucket: &ChildRef, open: OpenBucket) -> Result<(Vec<u8>, Vec<u8>), VaultError> {
        let key = layout::bucket(id, bucket.generation);
        let plain = zeroize::Zeroizing::new(encode(&BucketNode { version: 1, slots: open.slots })?);
        let sealed = seal(&bucket.key, &aad(label::BUCKET, &key), &plain)?;
        let blobs = open.blobs.into_iter().map(|b| b.map(serde_bytes::ByteBuf::from)).collect();
        Ok((key, encode(&BucketValue { sealed, blobs })?))
    }

    /// Opens the current version of bucket `id` (all empty if it was created in memory
    /// and not yet written).
    pub fn read_bucket(&self, kv: &dyn KvStore, id: u32) -> Result<OpenBucket, VaultError> {
        let bucket = self.bucket(id)?;
        if self.unwritten.contains(&id) {
            return Ok(OpenBucket::empty(self.bucket_slots));
        }
        let key = layout::bucket(id, bucket.node.generation);
        let value = kv.get(&key)?.ok_or_else(|| corrupt(format!("bucket {id} missing")))?;
        open_bucket(&bucket.node.key, &key, &value, self.bucket_slots)
            .ok_or_else(|| corrupt(format!("bucket {id} does not open")))
    }

    /// Opens the live entry at `addr`, with its blob.
    pub fn read_entry(&self, kv: &dyn KvStore, addr: SlotAddr) -> Result<(Entry, Option<Vec<u8>>), VaultError> {
        let open = self.read_bucket(kv, addr.bucket)?;
        let i = usize::from(addr.slot);
        let blob = open.blobs.into_iter().nth(i).flatten();
        let entry =
            open.slots.into_iter().nth(i).flatten().ok_or_else(|| corrupt(format!("slot {addr:?} is empty")))?;
        Ok((entry, blob))
    }

    /// What a slot holds.
    pub fn slot_use(&self, addr: SlotAddr) -> Result<&SlotUse, VaultError> {
        self.bucket(addr.bucket)?.slots.get(usize::from(addr.slot)).ok_or_else(|| corrupt(format!("no slot {addr:?}")))
    }

    /// The bucket with this id.
    pub fn bucket(&self, id: u32) -> Result<&Bucket, VaultError> {
        self.buckets.get(id as usize).ok_or_else(|| corrupt(format!("no bucket {id}")))
    }

    /// Directory references with `dir`'s reference replaced.
    fn bucket_refs(&self, dir: u32) -> Vec<ChildRef> {
        let start = (dir * self.fanout) as usize;
        let end = (start + self.fanout as usize).min(self.buckets.len());
        self.buckets.get(start..end).unwrap_or_default().iter().map(|b| b.node.clone()).collect()
    }

    /// Sealed directory node for `dir` as it is in memory.
    pub fn seal_dir_current(&self, dir: u32) -> Result<(Vec<u8>, Vec<u8>), VaultError> {
        let dir_ref = self.dirs.get(dir as usize).ok_or_else(|| corrupt(format!("no directory {dir}")))?;
        Self::seal_dir(dir, dir_ref, &self.bucket_refs(dir))
    }

    /// Bucket references of `dir` as they would be with some buckets replaced.
    pub fn bucket_refs_with(&self, dir: u32, replaced: &HashMap<u32, ChildRef>) -> Vec<ChildRef> {
        let start = dir * self.fanout;
        self.bucket_refs(dir)
            .into_iter()
            .enumerate()
            .map(|(i, r)| replaced.get(&(start + i as u32)).cloned().unwrap_or(r))
            .collect()
    }

    /// Takes a free slot for `what`, creating a bucket (and a directory) when needed;
    /// the node rewrites this causes are added to `batch`.
    pub fn allocate(&mut self, batch: &mut WriteBatch, what: SlotUse) -> Result<SlotAddr, VaultError> {
        let bucket_id = match self.open_buckets.first() {
            Some(b) => *b,
            None => self.new_bucket(batch)?,
        };
        let bucket = self.buckets.get_mut(bucket_id as usize).ok_or_else(|| corrupt("open bucket vanished"))?;
        let slot =
            bucket.slots.iter().position(|s| *s == SlotUse::Free).ok_or_else(|| corrupt("open bucket is full"))?;
        if let Some(s) = bucket.slots.get_mut(slot) {
            *s = what;
        }
        if !bucket.slots.contains(&SlotUse::Free) {
            self.open_buckets.remove(&bucket_id);
        }
        Ok(SlotAddr { bucket: bucket_id, slot: slot as u16 })
    }

    /// Creates up to [`BUCKET_GROUP`] buckets at once (one directory rewrite for all),
    /// writing their empty nodes into `batch` unless the caller fills them; returns the
    /// first.
    fn new_bucket(&mut self, batch: &mut WriteBatch) -> Result<u32, VaultError> {
        let first = self.buckets.len() as u32;
        if u64::from(first) >= u64::from(self.fanout) * u64::from(self.fanout) {
            return Err(VaultError::Full(self.capacity()));
        }
        let dir = self.dir_of(first);
        if dir as usize == self.dirs.len() {
            self.dirs.push(ChildRef { key: Key32::random()?, generation: self.epoch });
            let (k, v) = self.seal_root_node(self.epoch, &self.root, &self.dirs)?;
            batch.put(k, v);
        }
        let dir_end = (dir + 1) * self.fanout;
        for id in first..(first + BUCKET_GROUP).min(dir_end) {
            self.buckets.push(Bucket {
                node: ChildRef { key: Key32::random()?, generation: self.epoch },
                slots: vec![SlotUse::Free; usize::from(self.bucket_slots)],
            });
            self.open_buckets.insert(id);
            self.unwritten.insert(id);
        }
        let (k, v) = self.seal_dir_current(dir)?;
        batch.put(k, v);
        Ok(first)
    }

    /// Writes empty nodes for buckets created but not filled by the caller.
    pub fn write_unwritten(&mut self, batch: &mut WriteBatch) -> Result<(), VaultError> {
        for id in std::mem::take(&mut self.unwritten) {
            let node = &self.bucket(id)?.node;
            let (k, v) = Self::seal_bucket(id, node, OpenBucket::empty(self.bucket_slots))?;
            batch.put(k, v);
        }
        Ok(())
    }

    /// Marks a slot free (after its erasure committed).
    pub fn free(&mut self, addr: SlotAddr) {
        if let Some(s) =
            self.buckets.get_mut(addr.bucket as usize).and_then(|b| b.slots.get_mut(usize::from(addr.slot)))
        {
            *s = SlotUse::Free;
            self.open_buckets.insert(addr.bucket);
        }
    }

    /// Loads the tree that `root` seals.
    pub fn load(kv: &dyn KvStore, root: RootState) -> Result<Loaded, VaultError> {
        let key = layout::root_node(root.epoch);
        let sealed = kv.get(&key)?.ok_or_else(|| {
            corrupt(format!("the root slot is at epoch {} but the vault has no root node for it", root.epoch))
        })?;
        let plain = open(&root.key.derive(label::ROOT_NODE), &aad(label::ROOT_NODE, &key), &sealed)
            .ok_or_else(|| corrupt("the root node does not open with the root slot's key"))?;
        let node: RootNode = decode_own(&plain, NODE_LIMIT, "root node")?;
        if node.epoch != root.epoch || node.fanout == 0 || node.bucket_slots == 0 {
            return Err(corrupt("root node does not match the root slot"));
        }
        let mut tree = Tree::new(root, node.fanout, node.bucket_slots);
        let (mut records, mut subjects, mut retention) = (HashMap::new(), HashMap::new(), RetentionIndex::default());
        for (d, dir_ref) in node.dirs.iter().enumerate() {
            let key = layout::dir_node(d as u32, dir_ref.generation);
            let sealed = kv.get(&key)?.ok_or_else(|| corrupt(format!("directory {d} missing")))?;
            let plain = open(&dir_ref.key, &aad(label::DIR, &key), &sealed)
                .ok_or_else(|| corrupt(format!("directory {d} does not open")))?;
            let dir: DirNode = decode_own(&plain, NODE_LIMIT, "directory")?;
            for (i, bucket_ref) in dir.buckets.into_iter().enumerate() {
                let id = d as u32 * tree.fanout + i as u32;
                if id as usize != tree.buckets.len() {
                    return Err(corrupt(format!("bucket {id} out of order")));
                }
                let key = layout::bucket(id, bucket_ref.generation);
                let value = kv.get(&key)?.ok_or_else(|| corrupt(format!("bucket {id} missing")))?;
                let entries = open_bucket(&bucket_ref.key, &key, &value, tree.bucket_slots)
                    .ok_or_else(|| corrupt(format!("bucket {id} does not open")))?;
                let mut slots = Vec::with_capacity(entries.slots.len());
                for (slot, entry) in entries.slots.into_iter().enumerate() {
                    let addr = SlotAddr { bucket: id, slot: slot as u16 };
                    slots.push(match entry {
                        None => SlotUse::Free,
                        Some(Entry::Record { rid, retain_until_ms, .. }) => {
                            records.insert(rid, addr);
                            retention.by_end.insert((retain_until_ms, rid));
                            SlotUse::Record(rid)
                        }
                        Some(Entry::LegacyRecord { rid, .. }) => {
                            records.insert(rid, addr);
                            retention.unknown.push(rid);
                            SlotUse::Record(rid)
                        }
                        Some(Entry::Subject { subject, .. }) => {
                            subjects.insert(subject.clone(), addr);
                            SlotUse::Subject(subject)
                        }
                    });
                }
                if slots.contains(&SlotUse::Free) {
                    tree.open_buckets.insert(id);
                }
                tree.buckets.push(Bucket { node: bucket_ref, slots });
            }
        }
        tree.dirs = node.dirs;
        Ok(Loaded { tree, records, subjects, retention })
    }
}

impl std::fmt::Debug for Entry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Entry::Record { rid, .. } | Entry::LegacyRecord { rid, .. } => write!(f, "Entry::Record({rid}, ..)"),
            Entry::Subject { .. } => f.write_str("Entry::Subject(..)"),
        }
    }
}

/// Opens a bucket value; `None` if it does not open or has the wrong number of slots.
pub(crate) fn open_bucket(key: &Key32, store_key: &[u8], value: &[u8], slots: u16) -> Option<OpenBucket> {
    let value: BucketValue = decode_own(value, VALUE_LIMIT, "bucket value").ok()?;
    let plain = open(key, &aad(label::BUCKET, store_key), &value.sealed)?;
    let node: BucketNode = decode_own(&plain, NODE_LIMIT, "bucket").ok()?;
    let n = usize::from(slots);
    let blobs = value.blobs.into_iter().map(|b| b.map(serde_bytes::ByteBuf::into_vec)).collect();
    (node.slots.len() == n).then_some(OpenBucket { slots: node.slots, blobs }).filter(|o| o.blobs.len() == n)
}

/// An integrity failure of the store.
pub fn corrupt(what: impl std::fmt::Display) -> VaultError {
    VaultError::Fatal(format!("vault integrity: {what}"))
}
