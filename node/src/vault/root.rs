//! The root slot: the only place a live secret is written in clear. Behind a trait so
//! that a TPM NV index or an HSM can hold the root later.
//!
//! [`FileRootSlot`] is a 1024-byte file of two 512-byte slots, each written at a fixed
//! offset with `pwrite` and made durable with `fdatasync`. Between commits both slots
//! hold the current root. A commit of epoch `e + 1`:
//!
//! 1. writes `(e + 1, R')` into slot `(e + 1) % 2` and syncs — the commit point: a torn
//!    write leaves a checksum failure there and the intact slot `e % 2` still holds `R`;
//! 2. writes the same `(e + 1, R')` over slot `e % 2` and syncs, so no copy of `R`
//!    remains in the file.
//!
//! Loading takes the valid slot with the highest epoch and rewrites the other slot with
//! it if they differ, finishing step 2 after a crash. Limits (see docs): only a
//! filesystem that overwrites in place (ext4, xfs; not btrfs, zfs, f2fs or
//! `data=journal`) and a device without wear-levelling remapping truly destroy `R`.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use super::crypto::Key32;
use super::error::VaultError;
use super::fault::{self, FaultPoint};

/// The current keystore root and its epoch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RootState {
    /// Increases by one at every committed erasure epoch.
    pub epoch: u64,
    /// The root key `R`.
    pub key: Key32,
}

/// Where the root lives.
pub trait RootStore: Send {
    /// The committed root, or `None` for a new store.
    fn load(&mut self) -> Result<Option<RootState>, VaultError>;
    /// Replaces the root. When this returns, the new root is durable and no copy of the
    /// previous root remains in the store.
    fn commit(&mut self, state: &RootState) -> Result<(), VaultError>;
}

const SLOT_LEN: usize = 512;
const MAGIC: &[u8; 8] = b"CAIRNRT1";
const BODY_LEN: usize = 8 + 8 + 32;
const USED_LEN: usize = BODY_LEN + 32;

fn encode_slot(state: &RootState) -> zeroize::Zeroizing<[u8; SLOT_LEN]> {
    let mut used = zeroize::Zeroizing::new(Vec::with_capacity(USED_LEN));
    used.extend_from_slice(MAGIC);
    used.extend_from_slice(&state.epoch.to_le_bytes());
    used.extend_from_slice(state.key.expose());
    let check = blake3::hash(&used);
    used.extend_from_slice(check.as_bytes());
    let mut slot = zeroize::Zeroizing::new([0u8; SLOT_LEN]);
    slot.iter_mut().zip(used.iter()).for_each(|(d, s)| *d = *s);
    slot
}

fn decode_slot(slot: &[u8]) -> Option<RootState> {
    let body = slot.get(..BODY_LEN)?;
    if body.get(..8)? != MAGIC || slot.get(BODY_LEN..USED_LEN)? != blake3::hash(body).as_bytes() {
        return None;
    }
    let epoch = u64::from_le_bytes(body.get(8..16)?.try_into().ok()?);
    let key: [u8; 32] = body.get(16..48)?.try_into().ok()?;
    Some(RootState { epoch, key: Key32::from_bytes(key) })
}

/// The root slot file.
#[derive(Debug)]
pub struct FileRootSlot {
    path: PathBuf,
    file: File,
    fault: Option<FaultPoint>,
}

impl FileRootSlot {
    /// Opens (or creates, zero-filled and synced) the slot file.
    pub fn open(path: &Path, fault: Option<FaultPoint>) -> Result<Self, VaultError> {
        let existed = path.exists();
        let file = OpenOptions::new().read(true).write(true).create(true).truncate(false).open(path)?;
        if !existed {
            file.write_all_at(&[0u8; 2 * SLOT_LEN], 0)?;
            file.sync_all()?;
            if let Some(dir) = path.parent() {
                File::open(dir)?.sync_all()?;
            }
        }
        let len = file.metadata()?.len();
        if len != (2 * SLOT_LEN) as u64 {
            return Err(VaultError::Fatal(format!("{} is {len} bytes, not a root slot file", path.display())));
        }
        Ok(Self { path: path.to_path_buf(), file, fault })
    }

    fn write_slot(&self, index: u64, state: &RootState) -> Result<(), VaultError> {
        let bytes = encode_slot(state);
        self.file.write_all_at(bytes.as_slice(), index * SLOT_LEN as u64)?;
        self.file.sync_data()?;
        Ok(())
    }

    fn read_slots(&self) -> Result<[Option<RootState>; 2], VaultError> {
        let mut buf = zeroize::Zeroizing::new([0u8; 2 * SLOT_LEN]);
        self.file.read_exact_at(buf.as_mut_slice(), 0)?;
        let (a, b) = buf.split_at(SLOT_LEN);
        Ok([decode_slot(a), decode_slot(b)])
    }

    /// Path of the slot file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl RootStore for FileRootSlot {
    fn load(&mut self) -> Result<Option<RootState>, VaultError> {
        let slots = self.read_slots()?;
        let best = slots.iter().flatten().max_by_key(|s| s.epoch).cloned();
        if let Some(best) = &best {
            for (i, slot) in slots.iter().enumerate() {
                if slot.as_ref() != Some(best) {
                    self.write_slot(i as u64, best)?;
                }
            }
        }
        Ok(best)
    }

    fn commit(&mut self, state: &RootState) -> Result<(), VaultError> {
        let new_index = state.epoch % 2;
        if self.fault == Some(FaultPoint::RootTornWrite) {
            let bytes = encode_slot(state);
            let torn = bytes.get(..40).unwrap_or_default();
            self.file.write_all_at(torn, new_index * SLOT_LEN as u64)?;
            self.file.sync_data()?;
            fault::hit(self.fault, FaultPoint::RootTornWrite);
        }
        self.write_slot(new_index, state)?;
        fault::hit(self.fault, FaultPoint::RootBeforeScrub);
        self.write_slot(1 - new_index, state)?;
        Ok(())
    }
}

/// A root held in memory, shared with the test that created it.
#[derive(Debug, Clone, Default)]
pub struct MemRootStore(Arc<Mutex<Option<RootState>>>);

impl MemRootStore {
    /// The root currently committed.
    pub fn current(&self) -> Option<RootState> {
        self.0.lock().ok().and_then(|g| g.clone())
    }
}

impl RootStore for MemRootStore {
    fn load(&mut self) -> Result<Option<RootState>, VaultError> {
        Ok(self.current())
    }
    fn commit(&mut self, state: &RootState) -> Result<(), VaultError> {
        *self.0.lock().map_err(|_| VaultError::Fatal("root lock poisoned".into()))? = Some(state.clone());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(epoch: u64) -> RootState {
        RootState { epoch, key: Key32::random().unwrap() }
    }

    #[test]
    fn commit_leaves_no_copy_of_the_previous_root() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("root.slot");
        let mut slot = FileRootSlot::open(&path, None).unwrap();
        assert_eq!(slot.load().unwrap(), None);
        let (a, b) = (state(1), state(2));
        slot.commit(&a).unwrap();
        slot.commit(&b).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(bytes.len(), 1024);
        assert!(!bytes.windows(32).any(|w| w == a.key.expose()), "old root still in the file");
        assert!(bytes.windows(32).any(|w| w == b.key.expose()));
        assert_eq!(FileRootSlot::open(&path, None).unwrap().load().unwrap(), Some(b));
    }

    #[test]
    fn a_torn_write_keeps_the_current_root_and_load_repairs_the_slot() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("root.slot");
        let mut slot = FileRootSlot::open(&path, None).unwrap();
        let (a, b) = (state(4), state(5));
        slot.commit(&a).unwrap();
        // Simulate the torn write of epoch 5 into slot 1: half the new slot lands.
        let torn = encode_slot(&b);
        std::fs::OpenOptions::new().write(true).open(&path).unwrap().write_all_at(&torn[..40], 512).unwrap();
        let mut reopened = FileRootSlot::open(&path, None).unwrap();
        assert_eq!(reopened.load().unwrap(), Some(a.clone()));
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(&bytes[..512], &bytes[512..], "load rewrote the torn slot with the current root");
    }

    #[test]
    fn a_file_of_the_wrong_size_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("root.slot");
        std::fs::write(&path, b"short").unwrap();
        assert!(FileRootSlot::open(&path, None).unwrap_err().is_fatal());
    }
}
