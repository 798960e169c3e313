//! The storage engine under the vault, behind a trait so that one contract suite runs
//! against sled and against memory. Whatever implements it sees only ciphertext and
//! opaque keys (the vault's invariant), so it need not erase anything itself.

use std::collections::{BTreeMap, HashSet};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use super::error::VaultError;

/// Key-value pairs, in key order.
pub type Pairs = Vec<(Vec<u8>, Vec<u8>)>;

type Map = BTreeMap<Vec<u8>, Vec<u8>>;

/// Writes applied together or not at all.
#[derive(Debug, Default)]
pub struct WriteBatch {
    ops: Vec<(Vec<u8>, Option<Vec<u8>>)>,
}

impl WriteBatch {
    /// Sets `key` to `value`.
    pub fn put(&mut self, key: Vec<u8>, value: Vec<u8>) {
        self.ops.push((key, Some(value)));
    }
    /// Removes `key`.
    pub fn remove(&mut self, key: Vec<u8>) {
        self.ops.push((key, None));
    }
    /// Number of operations.
    pub fn len(&self) -> usize {
        self.ops.len()
    }
    /// The operations, in order.
    pub fn into_ops(self) -> Vec<(Vec<u8>, Option<Vec<u8>>)> {
        self.ops
    }
    /// True if there is nothing to apply.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }
}

/// An ordered key-value store with atomic batches and an explicit durability point.
pub trait KvStore: Send {
    /// The value of `key`.
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, VaultError>;
    /// Every pair whose key starts with `prefix`, in key order.
    fn scan_prefix(&self, prefix: &[u8]) -> Result<Pairs, VaultError>;
    /// Applies a batch atomically (all or nothing, also across a crash).
    fn apply(&self, batch: WriteBatch) -> Result<(), VaultError>;
    /// Returns once everything applied so far survives a power failure.
    fn sync(&self) -> Result<(), VaultError>;
}

/// The vault's sled database.
///
/// Durability: sled's `flush()` writes its buffers with `pwrite` and then calls
/// `sync_file_range`, which neither flushes the drive's cache nor persists metadata.
/// [`KvStore::sync`] therefore follows `flush()` with `fdatasync` on the files under the
/// database directory and `fsync` on the directories. `fsync` acts on the inode, so a
/// descriptor opened just for it flushes the pages sled wrote through its own
/// descriptors. A test traces the system calls to check this order.
///
/// sled writes a value too large for its log (a page over a quarter of a segment) to a
/// file of its own under `blobs/`, named by log sequence number, created with
/// `create_new` and written once; such files accumulate with the database (≈ 270 at
/// 400,000 records). Syncing each of them at every acknowledgement made a store's cost
/// grow with the vault (issue 17: 107 µs × 265 files ≈ 28 ms per single store), so a
/// blob file is synced once, the first time a sync lists it, and every other file (the
/// log itself, whose segments are rewritten in place) at every sync. Once is enough
/// because a blob file is complete before the sled call that made it returns: sled
/// 0.34's `blob_io::write_blob` creates it and writes all of it (`write_all` of its
/// checksum, kind and body) while reserving log space, in the thread that writes the
/// page, and with no flusher (`flush_every_ms(None)`) that is the vault's own thread,
/// which calls [`KvStore::sync`] only after `flush()` returned. Listing the directory
/// reads names and types only (no `stat` per file).
#[derive(Debug)]
pub struct SledStore {
    db: sled::Db,
    dir: PathBuf,
    /// Blob files already synced (full paths).
    synced_blobs: Mutex<HashSet<OsString>>,
}

impl SledStore {
    /// Opens (or creates) the database in `dir`.
    pub fn open(dir: &Path) -> Result<Self, VaultError> {
        let db = sled::Config::new().path(dir).use_compression(false).flush_every_ms(None).open()?;
        Ok(Self { db, dir: dir.to_path_buf(), synced_blobs: Mutex::new(HashSet::new()) })
    }

    /// The underlying database (tests write to it directly for negative controls).
    pub fn db(&self) -> &sled::Db {
        &self.db
    }
}

/// A file found under the database directory, with what [`to_sync`] needs to know.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Found {
    pub path: PathBuf,
    /// The file is one of sled's write-once blob files.
    pub write_once: bool,
}

/// Files under `dir` and the directories themselves (directories last, deepest first).
/// sled's background threads may remove a file (an old snapshot, a collected blob)
/// between listing and reading it; a file that is gone is left out.
fn list_tree(dir: &Path, in_blobs: bool, files: &mut Vec<Found>, dirs: &mut Vec<PathBuf>) -> std::io::Result<()> {
    let gone = |e: &std::io::Error| e.kind() == std::io::ErrorKind::NotFound;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        // The type comes with the directory entry (no `stat` on ext4 and most others).
        let kind = match entry.file_type() {
            Ok(kind) => kind,
            Err(e) if gone(&e) => continue,
            Err(e) => return Err(e),
        };
        if kind.is_dir() {
            let blobs = entry.file_name() == "blobs";
            match list_tree(&path, blobs, files, dirs) {
                Err(e) if !gone(&e) => return Err(e),
                _ => {}
            }
        } else if kind.is_file() {
            files.push(Found { path, write_once: in_blobs });
        }
    }
    dirs.push(dir.to_path_buf());
    Ok(())
}

/// The files a sync must `fdatasync`: every file that is not write-once, and each
/// write-once file not synced before. Forgets, in `synced`, the write-once files no longer
/// listed, so it stays as large as the blob directory.
pub(crate) fn to_sync(found: &[Found], synced: &mut HashSet<OsString>) -> Vec<PathBuf> {
    let mut still = HashSet::with_capacity(synced.len());
    let mut due = Vec::new();
    for f in found {
        match synced.take(f.path.as_os_str()).filter(|_| f.write_once) {
            Some(known) => {
                still.insert(known);
            }
            None => due.push(f.path.clone()),
        }
    }
    *synced = still;
    due
}

/// Records the write-once files of a successful sync.
pub(crate) fn mark_synced(found: Vec<Found>, synced: &mut HashSet<OsString>) {
    synced.extend(found.into_iter().filter(|f| f.write_once).map(|f| f.path.into_os_string()));
}

impl SledStore {
    /// `fdatasync` of the files [`to_sync`] picks, then `fsync` of every directory.
    fn sync_files(&self) -> Result<(), VaultError> {
        let gone = |e: &std::io::Error| e.kind() == std::io::ErrorKind::NotFound;
        let (mut files, mut dirs) = (Vec::new(), Vec::new());
        list_tree(&self.dir, false, &mut files, &mut dirs)?;
        let mut synced = self.synced_blobs.lock().map_err(|_| VaultError::Fatal("sync lock poisoned".into()))?;
        for path in to_sync(&files, &mut synced) {
            match std::fs::File::open(&path).and_then(|f| f.sync_data()) {
                Err(e) if !gone(&e) => return Err(e.into()),
                _ => {}
            }
        }
        for dir in dirs {
            std::fs::File::open(&dir)?.sync_all()?;
        }
        // Recorded only once everything above succeeded: a failed sync leaves them due.
        mark_synced(files, &mut synced);
        Ok(())
    }
}

impl KvStore for SledStore {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, VaultError> {
        Ok(self.db.get(key)?.map(|v| v.to_vec()))
    }

    fn scan_prefix(&self, prefix: &[u8]) -> Result<Pairs, VaultError> {
        self.db.scan_prefix(prefix).map(|kv| kv.map(|(k, v)| (k.to_vec(), v.to_vec())).map_err(Into::into)).collect()
    }

    fn apply(&self, batch: WriteBatch) -> Result<(), VaultError> {
        let mut b = sled::Batch::default();
        for (k, v) in batch.ops {
            match v {
                Some(v) => b.insert(k, v),
                None => b.remove(k),
            }
        }
        Ok(self.db.apply_batch(b)?)
    }

    fn sync(&self) -> Result<(), VaultError> {
        self.db.flush()?;
        self.sync_files()
    }
}

/// An in-memory store for tests and for the contract suite. Clones share one map, so a
/// test can "reopen" a vault over the same contents.
#[derive(Debug, Default, Clone)]
pub struct MemStore {
    map: Arc<Mutex<Map>>,
}

impl MemStore {
    fn map(&self) -> Result<std::sync::MutexGuard<'_, Map>, VaultError> {
        self.map.lock().map_err(|_| VaultError::Fatal("memory store lock poisoned".into()))
    }
}

impl KvStore for MemStore {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, VaultError> {
        Ok(self.map()?.get(key).cloned())
    }

    fn scan_prefix(&self, prefix: &[u8]) -> Result<Pairs, VaultError> {
        let map = self.map()?;
        Ok(map
            .range(prefix.to_vec()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect())
    }

    fn apply(&self, batch: WriteBatch) -> Result<(), VaultError> {
        let mut map = self.map()?;
        for (k, v) in batch.ops {
            match v {
                Some(v) => map.insert(k, v),
                None => map.remove(&k),
            };
        }
        Ok(())
    }

    fn sync(&self) -> Result<(), VaultError> {
        Ok(())
    }
}
