//! Names of everything the vault writes to its store. Every key is a position in the key
//! tree or an opaque handle derived from a keystore secret; every value is sealed. The
//! associated data of each sealed value is its own store key under a purpose label, so
//! no ciphertext can be moved to another place and still open.

/// Root node of an epoch: `r || epoch`.
pub fn root_node(epoch: u64) -> Vec<u8> {
    [&b"r"[..], &epoch.to_be_bytes()].concat()
}

/// Directory node version: `d || dir || generation`.
pub fn dir_node(dir: u32, generation: u64) -> Vec<u8> {
    [&b"d"[..], &dir.to_be_bytes(), &generation.to_be_bytes()].concat()
}

/// Bucket value version: the bucket's sealed key slots and its records' blobs,
/// `e || bucket || generation`.
pub fn bucket(bucket: u32, generation: u64) -> Vec<u8> {
    [&b"e"[..], &bucket.to_be_bytes(), &generation.to_be_bytes()].concat()
}

/// Subject index head or chunk (or the whole-list index of older vaults): `s || handle`.
pub fn subject_index(handle: &[u8; 16]) -> Vec<u8> {
    [&b"s"[..], handle].concat()
}

/// Intent journal copy sealed under the epoch's old root (0) or new root (1).
pub fn journal(copy: u8) -> Vec<u8> {
    vec![b'j', copy]
}

/// Purpose labels: key derivation contexts and associated-data prefixes.
pub mod label {
    /// Root node key, derived from the root.
    pub const ROOT_NODE: &str = "cairn/vault/root-node/v1";
    /// Journal key, derived from a root.
    pub const JOURNAL: &str = "cairn/vault/journal/v1";
    /// Directory node.
    pub const DIR: &str = "cairn/vault/dir/v1";
    /// Bucket node (key slots).
    pub const BUCKET: &str = "cairn/vault/bucket/v1";
    /// Record payload (`ct`).
    pub const PAYLOAD: &str = "cairn/vault/payload/v1";
    /// Record metadata key, derived from `dk`.
    pub const META: &str = "cairn/vault/meta/v1";
    /// Subject index key, derived from the subject key (the whole-list index written
    /// before issue 17; read, then replaced by chunks on the subject's next store).
    pub const SUBJECT_INDEX: &str = "cairn/vault/subject-index/v1";
    /// Subject index handle, derived from the subject key (the whole-list index).
    pub const SUBJECT_HANDLE: &str = "cairn/vault/subject-handle/v1";
    /// Key of a subject index head (its count of record ids), derived from the subject key.
    pub const SUBJECT_HEAD: &str = "cairn/vault/subject-head/v2";
    /// Handle of a subject index head, derived from the subject key.
    pub const SUBJECT_HEAD_HANDLE: &str = "cairn/vault/subject-head-handle/v2";
    /// Key of a subject index chunk, derived from the subject key.
    pub const SUBJECT_CHUNK: &str = "cairn/vault/subject-chunk/v2";
    /// Handle of the `n`-th subject index chunk, derived from the subject key and `n`.
    pub const SUBJECT_CHUNK_HANDLE: &str = "cairn/vault/subject-chunk-handle/v2";
}

/// Associated data: `label || store key`.
pub fn aad(label: &str, key: &[u8]) -> Vec<u8> {
    [label.as_bytes(), key].concat()
}
