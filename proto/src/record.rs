//! Records as DESIGN.md §4 defines them: the record id, the header that the ciphertext's
//! associated data binds, the custodian manifest, the content commitment `C` and the leaf.

use serde::{Deserialize, Serialize};
use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::bytes::fixed_bytes;
use crate::encoding::{EncodeError, encode};
use crate::hash::{Hash32, blake3, domain, hash_parts};
use crate::identity::KeyId;
use crate::version::versioned;

fixed_bytes!(
    /// A random 128-bit record id. Never written on chain in clear.
    RecordId,
    16
);

/// The 32-byte commitment secret `s`. Destroying it makes `C` (and so the leaf) say
/// nothing about the content.
#[derive(Clone, Zeroize, ZeroizeOnDrop, PartialEq, Eq)]
pub struct CommitmentSecret([u8; 32]);

impl CommitmentSecret {
    /// Wraps secret bytes drawn from the OS RNG.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }
    /// The secret bytes (for the keystore only).
    pub fn expose(&self) -> &[u8; 32] {
        &self.0
    }
}

impl core::fmt::Debug for CommitmentSecret {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("CommitmentSecret(..)")
    }
}

/// What the payload is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ContentType {
    /// One FHIR R4 `Observation`, JSON.
    FhirObservationJson,
    /// A consent-layer document (`crate::consent`), bcs of the node's stored form:
    /// never served through the record routes.
    ConsentDocument,
    /// A subject's access-log key (the node's `StoredLogKey`, bcs; ADR 018): never served
    /// through the record routes, erased with the subject.
    AccessLogKey,
    /// A validator's access-log day key (the node's `StoredDayKey`, bcs; ADR 018): every
    /// event that node logs on that day is sealed under it and the subject's log key
    /// together; it has no subject, its only custodian is that validator, and its
    /// retention is the access log's, so the retention sweep erases it — with a
    /// certificate — when the day's entries expire.
    AccessLogDayKey,
}

impl ContentType {
    /// Whether the record is a reading a gateway sent (served by the record routes), as
    /// opposed to a record the consent and access layers keep about a subject.
    pub fn is_reading(self) -> bool {
        self == ContentType::FhirObservationJson
    }
}

/// Metadata of a record. Stored only encrypted; bound into the ciphertext as associated
/// data so a blob cannot be moved under another record's header.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecordHeader {
    /// Format version (1).
    pub version: u8,
    /// Record id.
    pub rid: RecordId,
    /// Key id of the gateway that submitted the record.
    pub gateway: KeyId,
    /// Payload type.
    pub content_type: ContentType,
    /// Declared purpose code (FHIR purpose-of-use, e.g. `TREAT`).
    pub purpose: String,
    /// When the home custodian received it, Unix milliseconds.
    pub received_at_ms: u64,
    /// When it must be erased, Unix milliseconds.
    pub retain_until_ms: u64,
}

/// The custodian nodes that hold a record, by key id, sorted and without repeats.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Format version (1).
    pub version: u8,
    /// Custodians, ascending.
    pub custodians: Vec<KeyId>,
}

versioned!(RecordHeader = 1, Manifest = 1);

/// A manifest that breaks its rules.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManifestError {
    /// No custodian listed.
    #[error("a manifest names at least one custodian")]
    Empty,
    /// A custodian listed twice.
    #[error("custodian {0} listed twice")]
    Duplicate(KeyId),
    /// Custodians not in ascending order.
    #[error("custodians are not in ascending order")]
    Unsorted,
    /// A manifest version other than 1.
    #[error("unknown manifest version {0} (this build reads 1)")]
    Version(u8),
}

impl Manifest {
    /// Builds a manifest from custodians in any order.
    pub fn new(mut custodians: Vec<KeyId>) -> Result<Self, ManifestError> {
        custodians.sort();
        if let Some(dup) = custodians.iter().zip(custodians.iter().skip(1)).find_map(|(a, b)| (a == b).then_some(*a)) {
            return Err(ManifestError::Duplicate(dup));
        }
        if custodians.is_empty() {
            return Err(ManifestError::Empty);
        }
        Ok(Self { version: 1, custodians })
    }

    /// Checks a manifest that arrived from outside: ascending, no repeats, not empty.
    pub fn check(&self) -> Result<(), ManifestError> {
        if self.version != 1 {
            return Err(ManifestError::Version(self.version));
        }
        let rebuilt = Self::new(self.custodians.clone())?;
        match rebuilt.custodians == self.custodians {
            true => Ok(()),
            false => Err(ManifestError::Unsorted),
        }
    }

    /// `blake3("cairn/manifest/v1" || bcs(manifest))`.
    pub fn hash(&self) -> Result<Hash32, EncodeError> {
        Ok(hash_parts(domain::MANIFEST, &[&encode(self)?]))
    }
}

/// `C = blake3::keyed_hash(s, "cairn/content/v1" || blake3(ct))`.
pub fn content_commitment(s: &CommitmentSecret, ciphertext: &[u8]) -> Hash32 {
    let mut input = Vec::with_capacity(domain::CONTENT.len() + 32);
    input.extend_from_slice(domain::CONTENT.as_bytes());
    input.extend_from_slice(blake3(ciphertext).as_bytes());
    Hash32(*::blake3::keyed_hash(s.expose(), &input).as_bytes())
}

/// `leaf = blake3("cairn/leaf/v1" || rid || manifest_hash || C)`.
pub fn record_leaf(rid: &RecordId, manifest_hash: &Hash32, commitment: &Hash32) -> Hash32 {
    hash_parts(domain::RECORD_LEAF, &[&rid.0, &manifest_hash.0, &commitment.0])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commitment_matches_the_design_formula() {
        let s = CommitmentSecret::from_bytes([5; 32]);
        let ct = b"ciphertext bytes";
        let mut msg = b"cairn/content/v1".to_vec();
        msg.extend_from_slice(::blake3::hash(ct).as_bytes());
        assert_eq!(content_commitment(&s, ct).0, *::blake3::keyed_hash(&[5; 32], &msg).as_bytes());
        // Another secret gives an unrelated commitment for the same content.
        assert_ne!(content_commitment(&CommitmentSecret::from_bytes([6; 32]), ct), content_commitment(&s, ct));
    }

    #[test]
    fn leaf_matches_the_design_formula() {
        let rid = RecordId([1; 16]);
        let (m, c) = (Hash32([2; 32]), Hash32([3; 32]));
        let mut msg = b"cairn/leaf/v1".to_vec();
        msg.extend_from_slice(&[1; 16]);
        msg.extend_from_slice(&[2; 32]);
        msg.extend_from_slice(&[3; 32]);
        assert_eq!(record_leaf(&rid, &m, &c).0, *::blake3::hash(&msg).as_bytes());
    }

    #[test]
    fn manifest_is_sorted_and_refuses_repeats() {
        let (a, b) = (KeyId([1; 16]), KeyId([2; 16]));
        let m1 = Manifest::new(vec![b, a]).unwrap();
        let m2 = Manifest::new(vec![a, b]).unwrap();
        assert_eq!(m1.hash().unwrap(), m2.hash().unwrap());
        assert_eq!(Manifest::new(vec![a, a]), Err(ManifestError::Duplicate(a)));
        assert_eq!(Manifest::new(vec![]), Err(ManifestError::Empty));
        m1.check().unwrap();
        let unsorted = Manifest { version: 1, custodians: vec![b, a] };
        assert_eq!(unsorted.check(), Err(ManifestError::Unsorted));
    }
}
