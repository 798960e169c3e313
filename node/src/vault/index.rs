//! A subject's index of record ids (ADR 008, "Subject index"), append-only: chunks of up
//! to [`CHUNK_IDS`] ids and a head holding the count, each sealed under a key derived
//! from the subject key at a handle derived from it (a chunk's handle also from its
//! number). A store appends to the last chunk and rewrites the head, so its cost does not
//! grow with the subject's records; an erasure re-keys the subject and writes the index
//! again without the erased ids, so no readable version lists an erased record.
//!
//! Vaults written before chunks hold the whole list as one value at the subject handle
//! (`label::SUBJECT_HANDLE`). It is read as it is and replaced by chunks on the subject's
//! next store or erasure.

use cairn_proto::encoding::encode;
use cairn_proto::record::RecordId;
use serde::{Deserialize, Serialize};

use super::codec::decode_own;
use super::crypto::{Key32, open, seal};
use super::error::VaultError;
use super::keytree::{SlotAddr, corrupt};
use super::kv::{KvStore, WriteBatch};
use super::layout::{self, aad, label};

/// Record ids per chunk: 256 × 16 bytes = 4 KiB of plaintext, the most a store re-seals.
pub const CHUNK_IDS: u64 = 256;

/// Largest index value the vault will decode.
const VALUE_LIMIT: usize = 1 << 20;

/// The head of a subject index.
#[derive(Serialize, Deserialize)]
struct Head {
    version: u8,
    /// Record ids in the index; chunk `n` holds ids `n × CHUNK_IDS ..`.
    len: u64,
}

fn head_key(key: &Key32) -> Vec<u8> {
    layout::subject_index(&key.handle(label::SUBJECT_HEAD_HANDLE))
}

fn chunk_key(key: &Key32, n: u64) -> Vec<u8> {
    layout::subject_index(&key.handle_at(label::SUBJECT_CHUNK_HANDLE, n))
}

fn legacy_key(key: &Key32) -> Vec<u8> {
    layout::subject_index(&key.handle(label::SUBJECT_HANDLE))
}

fn read_sealed<T: serde::de::DeserializeOwned>(
    kv: &dyn KvStore,
    key: &Key32,
    purpose: &str,
    store_key: &[u8],
    what: &str,
) -> Result<Option<T>, VaultError> {
    let Some(sealed) = kv.get(store_key)? else { return Ok(None) };
    let plain = open(&key.derive(purpose), &aad(purpose, store_key), &sealed)
        .ok_or_else(|| corrupt(format!("{what} does not open")))?;
    decode_own(&plain, VALUE_LIMIT, what).map(Some)
}

fn sealed<T: Serialize + ?Sized>(
    key: &Key32,
    purpose: &str,
    store_key: Vec<u8>,
    value: &T,
) -> Result<(Vec<u8>, Vec<u8>), VaultError> {
    let v = seal(&key.derive(purpose), &aad(purpose, &store_key), &encode(value)?)?;
    Ok((store_key, v))
}

fn chunks(len: u64) -> u64 {
    len.div_ceil(CHUNK_IDS)
}

fn read_len(kv: &dyn KvStore, key: &Key32) -> Result<Option<u64>, VaultError> {
    let head: Option<Head> = read_sealed(kv, key, label::SUBJECT_HEAD, &head_key(key), "subject index head")?;
    match head {
        Some(h) if h.version == 2 => Ok(Some(h.len)),
        Some(h) => Err(corrupt(format!("subject index head of unknown version {}", h.version))),
        None => Ok(None),
    }
}

fn read_chunk(kv: &dyn KvStore, key: &Key32, n: u64) -> Result<Vec<RecordId>, VaultError> {
    read_sealed(kv, key, label::SUBJECT_CHUNK, &chunk_key(key, n), "subject index chunk")?
        .ok_or_else(|| corrupt(format!("subject index chunk {n} missing")))
}

fn read_legacy(kv: &dyn KvStore, key: &Key32) -> Result<Option<Vec<RecordId>>, VaultError> {
    read_sealed(kv, key, label::SUBJECT_INDEX, &legacy_key(key), "subject index")
}

/// Every record id of the subject whose key is `key`, in the order they were stored.
/// Errors: `Fatal` if the index is missing, does not open or disagrees with its head.
pub fn read(kv: &dyn KvStore, key: &Key32) -> Result<Vec<RecordId>, VaultError> {
    let Some(len) = read_len(kv, key)? else {
        return read_legacy(kv, key)?.ok_or_else(|| corrupt("subject index missing"));
    };
    let mut ids = Vec::with_capacity(usize::try_from(len).unwrap_or(0));
    for n in 0..chunks(len) {
        ids.extend(read_chunk(kv, key, n)?);
    }
    if ids.len() as u64 != len {
        return Err(corrupt(format!("subject index holds {} ids; its head says {len}", ids.len())));
    }
    Ok(ids)
}

/// Where an append starts: a subject with no index yet, an index to read from the store
/// (its head and last chunk), or one whose [`Tail`] the vault remembers from its last
/// store.
#[derive(Debug)]
pub enum Start {
    New,
    Stored,
    Known(Tail),
}

/// What an append needs to know of an index without reading it: its length and the ids
/// of its last chunk when that chunk is not full (`last.len() == len % CHUNK_IDS`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tail {
    pub len: u64,
    pub last: Vec<RecordId>,
}

impl Tail {
    /// The tail of an index holding `ids`.
    fn of(ids: &[RecordId]) -> Self {
        let len = ids.len() as u64;
        let keep = (len % CHUNK_IDS) as usize;
        Self { len, last: ids.get(ids.len().saturating_sub(keep)..).unwrap_or_default().to_vec() }
    }
}

/// Adds the writes that append `rids` to a subject's index to `batch`: the last chunk
/// (re-sealed with the new ids), any new chunks, and the head. Reads at most one chunk
/// and the head, whatever the index's length, and nothing when `start` is
/// [`Start::Known`] with a consistent tail. Returns the index's tail after the append
/// (what the vault may remember once the batch is durable).
pub fn append(
    kv: &dyn KvStore,
    key: &Key32,
    start: Start,
    rids: &[RecordId],
    batch: &mut WriteBatch,
) -> Result<Tail, VaultError> {
    let (len, mut tail) = match start {
        Start::New => (0, Vec::new()),
        Start::Known(t) if t.last.len() as u64 == t.len % CHUNK_IDS => (t.len, t.last),
        Start::Known(_) | Start::Stored => match read_len(kv, key)? {
            Some(len) if len % CHUNK_IDS == 0 => (len, Vec::new()),
            Some(len) => (len, read_chunk(kv, key, len / CHUNK_IDS)?),
            None => {
                // A whole-list index from before chunks: rewrite it as chunks.
                let mut all = read_legacy(kv, key)?.ok_or_else(|| corrupt("subject index missing"))?;
                batch.remove(legacy_key(key));
                all.extend_from_slice(rids);
                write(key, &all, batch)?;
                return Ok(Tail::of(&all));
            }
        },
    };
    tail.extend_from_slice(rids);
    for (n, piece) in (len / CHUNK_IDS..).zip(tail.chunks(CHUNK_IDS as usize)) {
        let (k, v) = sealed(key, label::SUBJECT_CHUNK, chunk_key(key, n), piece)?;
        batch.put(k, v);
    }
    let len = len + rids.len() as u64;
    let (k, v) = sealed(key, label::SUBJECT_HEAD, head_key(key), &Head { version: 2, len })?;
    batch.put(k, v);
    // `tail` starts at a chunk boundary, so it holds at least the ids of the last chunk.
    let keep = (len % CHUNK_IDS) as usize;
    Ok(Tail { len, last: tail.split_off(tail.len().saturating_sub(keep)) })
}

/// Most subjects whose [`Tail`] the vault keeps in memory: at most 4 KiB of ids and a key
/// each (≈ 17 MiB in all).
pub const TAILS: usize = 4096;

/// The subject key and index tail of recently stored subjects, by subject slot, so a
/// store appends without reading and opening the subject's slot, head and last chunk
/// (issue 17: those reads and openings took ≈ 30 % of the vault thread when a batch holds
/// readings of many subjects). Memory only, never written. A store takes a subject's
/// entry out and puts the new one back only after its batch is durable; an erasure epoch
/// forgets them all, since it re-keys subjects and rewrites their indexes.
#[derive(Debug, Default)]
pub struct Tails {
    map: std::collections::HashMap<SlotAddr, (Key32, Tail)>,
}

impl Tails {
    /// Takes the entry of the subject at `addr`, if remembered.
    pub fn take(&mut self, addr: SlotAddr) -> Option<(Key32, Tail)> {
        self.map.remove(&addr)
    }

    /// Remembers a subject's key and tail, forgetting another subject's when [`TAILS`]
    /// are held.
    pub fn put(&mut self, addr: SlotAddr, key: Key32, tail: Tail) {
        if self.map.len() >= TAILS
            && !self.map.contains_key(&addr)
            && let Some(other) = self.map.keys().next().copied()
        {
            self.map.remove(&other);
        }
        self.map.insert(addr, (key, tail));
    }

    /// Forgets every entry.
    pub fn clear(&mut self) {
        self.map.clear();
    }

    /// Entries held (tests).
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.map.len()
    }
}

/// Adds the writes of a whole index holding `rids` under `key` (a re-keyed subject) to
/// `batch`; returns the store keys written.
pub fn write(key: &Key32, rids: &[RecordId], batch: &mut WriteBatch) -> Result<Vec<Vec<u8>>, VaultError> {
    let mut written = Vec::new();
    for (n, piece) in (0u64..).zip(rids.chunks(CHUNK_IDS as usize)) {
        let (k, v) = sealed(key, label::SUBJECT_CHUNK, chunk_key(key, n), piece)?;
        written.push(k.clone());
        batch.put(k, v);
    }
    let (k, v) = sealed(key, label::SUBJECT_HEAD, head_key(key), &Head { version: 2, len: rids.len() as u64 })?;
    written.push(k.clone());
    batch.put(k, v);
    Ok(written)
}

/// Every store key a subject's index under `key` occupies (head, chunks and a whole-list
/// index from before chunks), to remove when the key is replaced or dropped.
pub fn store_keys(kv: &dyn KvStore, key: &Key32) -> Result<Vec<Vec<u8>>, VaultError> {
    let mut keys = vec![legacy_key(key)];
    if let Some(len) = read_len(kv, key)? {
        keys.push(head_key(key));
        keys.extend((0..chunks(len)).map(|n| chunk_key(key, n)));
    }
    Ok(keys)
}

/// Test hook: replaces a subject's chunked index by the whole-list index vaults wrote
/// before chunks, as such a vault would hold it.
#[cfg(test)]
pub fn write_legacy(kv: &dyn KvStore, key: &Key32) -> Result<(), VaultError> {
    let rids = read(kv, key)?;
    let mut batch = WriteBatch::default();
    for k in store_keys(kv, key)? {
        batch.remove(k);
    }
    let (k, v) = sealed(key, label::SUBJECT_INDEX, legacy_key(key), &rids)?;
    batch.put(k, v);
    kv.apply(batch)
}

/// Test hook: how many of a subject's index values are stored (head, chunks, legacy).
#[cfg(test)]
pub fn stored_values(kv: &dyn KvStore, key: &Key32) -> Result<usize, VaultError> {
    let mut n = 0;
    for k in [legacy_key(key), head_key(key)].into_iter().chain((0..64).map(|c| chunk_key(key, c))) {
        n += usize::from(kv.get(&k)?.is_some());
    }
    Ok(n)
}
