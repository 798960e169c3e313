//! The storage engine under the vault, behind a trait so that one contract suite runs
//! against sled and against memory. Whatever implements it sees only ciphertext and
//! opaque keys (the vault's invariant), so it need not erase anything itself.

use std::collections::BTreeMap;
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
/// [`KvStore::sync`] therefore follows `flush()` with `fdatasync` on every file under the
/// database directory and `fsync` on the directories. `fsync` acts on the inode, so a
/// descriptor opened just for it flushes the pages sled wrote through its own
/// descriptors. A test traces the system calls to check this order.
#[derive(Debug)]
pub struct SledStore {
    db: sled::Db,
    dir: PathBuf,
}

impl SledStore {
    /// Opens (or creates) the database in `dir`.
    pub fn open(dir: &Path) -> Result<Self, VaultError> {
        let db = sled::Config::new().path(dir).use_compression(false).flush_every_ms(None).open()?;
        Ok(Self { db, dir: dir.to_path_buf() })
    }

    /// The underlying database (tests write to it directly for negative controls).
    pub fn db(&self) -> &sled::Db {
        &self.db
    }
}

/// `fdatasync` of every file under `dir`, then `fsync` of `dir`. sled's background
/// threads may remove a file (an old snapshot) between listing and opening it; a file
/// that is gone needs no sync.
fn sync_tree(dir: &Path) -> std::io::Result<()> {
    let gone = |e: &std::io::Error| e.kind() == std::io::ErrorKind::NotFound;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        let result = match entry.file_type()? {
            kind if kind.is_dir() => sync_tree(&path),
            kind if kind.is_file() => std::fs::File::open(&path).and_then(|f| f.sync_data()),
            _ => Ok(()),
        };
        match result {
            Err(e) if !gone(&e) => return Err(e),
            _ => {}
        }
    }
    std::fs::File::open(dir)?.sync_all()
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
        sync_tree(&self.dir)?;
        Ok(())
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
