//! Encrypted off-chain store with provable key destruction (DESIGN.md §3, §5).
//!
//! The store engine (sled, behind [`kv::KvStore`]) only ever sees ciphertext and opaque
//! keys. Each record's payload is sealed with XChaCha20-Poly1305 under its own data key
//! `dk`; `dk` and the commitment secret `s` live in a key-slot entry of the key-wrapping
//! tree ([`keytree`]); the tree's root key lives in the root slot ([`root`]), the only
//! place a live secret is written in clear. Erasing records rotates the keys on their
//! paths and overwrites the root: one root write per batch of erasures (an epoch).
//!
//! What "acknowledged" means:
//! - a put is acknowledged when [`Vault::put_batch`] returns: its batch was applied to
//!   sled atomically and made durable by `flush` followed by `fdatasync` of every file of
//!   the database ([`kv::SledStore`]);
//! - an erasure is acknowledged when [`Vault::erase`] returns: the new root was written
//!   and synced into the root slot and the previous root overwritten and synced. From
//!   then on no key that reaches the erased records exists anywhere; removing their
//!   stale blobs and key versions from sled is clean-up that a restart finishes.

pub mod codec;
pub mod crypto;
mod epoch;
pub mod error;
pub mod fault;
pub(crate) mod index;
pub mod keytree;
pub mod kv;
pub mod layout;
pub mod retention;
pub mod root;
pub(crate) mod store;

#[cfg(test)]
pub(crate) mod tests;

use cairn_proto::record::{ContentType, Manifest, RecordHeader, RecordId};
use cairn_proto::{Hash32, KeyId};
use serde::{Deserialize, Serialize};

pub use error::VaultError;
pub use fault::FaultPoint;
pub use store::{Vault, VerifyReport};

/// Tunables of a vault. Fanout and bucket size are fixed when a vault is created.
#[derive(Debug, Clone)]
pub struct VaultConfig {
    /// Directories under the root, and buckets per directory.
    pub fanout: u32,
    /// Key slots per bucket.
    pub bucket_slots: u16,
    /// Largest payload accepted, bytes.
    pub max_payload: usize,
    /// Most records in one erasure epoch.
    pub max_erase_batch: usize,
    /// Test only: abort the process at this step.
    pub fault: Option<FaultPoint>,
}

impl Default for VaultConfig {
    fn default() -> Self {
        // 2048 directories × 2048 buckets × 16 slots: 67 million slots. Rotating a path
        // re-seals one bucket node (16 slots), one directory (2048 keys, 82 KiB) and the
        // root node; see BENCHMARKS.md and ADR 008 for what the sizes cost.
        Self { fanout: 2048, bucket_slots: 16, max_payload: 64 * 1024, max_erase_batch: 100_000, fault: None }
    }
}

/// Whether a purpose code is acceptable: 1 to 64 printable ASCII characters.
pub fn valid_purpose(purpose: &str) -> bool {
    !purpose.is_empty() && purpose.len() <= 64 && purpose.bytes().all(|b| b.is_ascii_graphic())
}

/// A data subject as a gateway names it: the gateway's key id and its local reference
/// (e.g. `Patient/123`). Stored only inside sealed entries.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SubjectRef {
    /// Gateway that names the subject.
    pub gateway: KeyId,
    /// The gateway's reference, 1 to 256 bytes.
    pub local: String,
}

/// A record to store.
#[derive(Debug, Clone)]
pub struct NewRecord {
    /// Submitting gateway.
    pub gateway: KeyId,
    /// Payload type.
    pub content_type: ContentType,
    /// Declared purpose code.
    pub purpose: String,
    /// Receipt time, Unix milliseconds.
    pub received_at_ms: u64,
    /// Erase-by time, Unix milliseconds.
    pub retain_until_ms: u64,
    /// Whose record it is, if the gateway said.
    pub subject: Option<SubjectRef>,
    /// Custodians that hold the record.
    pub manifest: Manifest,
    /// The reading.
    pub payload: Vec<u8>,
}

/// A sealed record: what the home custodian sends to every other custodian over cairn's
/// peer protocol (Noise-encrypted) so that each stores the same ciphertext under the same
/// keys and so computes the same leaf.
#[derive(Clone, Serialize, Deserialize)]
pub struct Replica {
    /// Header (binds the record id).
    pub header: RecordHeader,
    /// Custodians.
    pub manifest: Manifest,
    /// Subject, if any.
    pub subject: Option<SubjectRef>,
    /// Data key.
    pub dk: crypto::Key32,
    /// Commitment secret.
    pub s: crypto::Key32,
    /// Payload ciphertext `ct`.
    #[serde(with = "serde_bytes")]
    pub ciphertext: Vec<u8>,
}

impl std::fmt::Debug for Replica {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Replica").field("rid", &self.header.rid).finish_non_exhaustive()
    }
}

impl Replica {
    /// The record's leaf.
    pub fn leaf(&self) -> Result<Hash32, cairn_proto::encoding::EncodeError> {
        let s = cairn_proto::record::CommitmentSecret::from_bytes(*self.s.expose());
        let c = cairn_proto::record::content_commitment(&s, &self.ciphertext);
        Ok(cairn_proto::record::record_leaf(&self.header.rid, &self.manifest.hash()?, &c))
    }
}

/// What a put returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PutReceipt {
    /// The new record id.
    pub rid: RecordId,
    /// Content commitment `C`.
    pub commitment: Hash32,
    /// Record leaf.
    pub leaf: Hash32,
}

/// A record read back.
#[derive(Debug, Clone)]
pub struct StoredRecord {
    /// Header.
    pub header: RecordHeader,
    /// Custodians.
    pub manifest: Manifest,
    /// Subject, if any.
    pub subject: Option<SubjectRef>,
    /// The reading.
    pub payload: zeroize::Zeroizing<Vec<u8>>,
    /// Content commitment `C`, recomputed from the stored ciphertext.
    pub commitment: Hash32,
    /// Record leaf.
    pub leaf: Hash32,
}

/// Evidence of one record's erasure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ErasureEvidence {
    /// Erased record.
    pub rid: RecordId,
    /// Keystore epoch whose root still reached the record's key.
    pub epoch_before: u64,
    /// Keystore epoch whose root does not.
    pub epoch_after: u64,
}
