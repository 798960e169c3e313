//! The patient's export (right of access, portability; DESIGN.md §7; ADR 018;
//! docs/access.md "Export"): a FHIR R4 `Bundle` of type `collection` holding the patient's
//! readings (byte for byte as the gateway sent them), their consent-layer documents (a
//! FHIR `Consent` as given; other documents as `Binary`), their access log as
//! `AuditEvent`s, each followed by a `Binary` proof entry, the erasure certificate of
//! each record of theirs erased (a `Binary` at `urn:cairn:erasure:{request hash}:{record
//! id}`, its own proof), and last an
//! `urn:cairn:export-signature` entry: the exporting validator's signature over a
//! manifest of every other entry's URL and the hash of its resource's exact bytes. The
//! manifest makes a tampered entry fail by name; the proofs tie each item to the chain.

use base64::Engine as _;
use serde::{Deserialize, Serialize};

use crate::encoding::encode;
use crate::genesis::Genesis;
use crate::hash::{Hash32, hash_parts};
use crate::identity::{KeyId, Keypair, PublicKey, Signature};
use crate::version::versioned;

pub use crate::hash::domain::{EXPORT_ITEM, SIG_EXPORT};
/// The URL of the signature entry.
pub const SIGNATURE_URL: &str = "urn:cairn:export-signature";
/// The URL prefix of an erasure certificate's entry, followed by `{request hash}:{record id}`.
pub const ERASURE_URL: &str = "urn:cairn:erasure:";

/// `blake3("cairn/export-item/v1" || resource bytes)`.
pub fn item_hash(resource: &[u8]) -> Hash32 {
    hash_parts(EXPORT_ITEM, &[resource])
}

/// One entry as the manifest names it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportItem {
    /// The entry's `fullUrl`.
    pub url: String,
    /// [`item_hash`] of its resource's exact bytes.
    pub hash: Hash32,
}

/// What the exporting validator signs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportManifest {
    /// Format version (1).
    pub version: u8,
    /// The chain (genesis hash).
    pub chain: Hash32,
    /// The exporting validator.
    pub node: KeyId,
    /// When, Unix milliseconds.
    pub created_ms: u64,
    /// Every entry but the signature, in bundle order.
    pub items: Vec<ExportItem>,
}

versioned!(ExportManifest = 1);

/// The manifest with the validator's signature (the signature entry's `Binary` data, JSON).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignedExportManifest {
    /// The manifest.
    pub manifest: ExportManifest,
    /// The validator's public key.
    pub public_key: PublicKey,
    /// Ed25519 (strict) over `"cairn/sig/export/v1" || bcs(manifest)`.
    pub signature: Signature,
}

/// Why an export does not verify: the entry (its URL) and the problem.
#[derive(Debug, thiserror::Error)]
#[error("{item}: {problem}")]
pub struct ExportError {
    /// The entry at fault (`fullUrl`), or `bundle`.
    pub item: String,
    /// What is wrong.
    pub problem: String,
}

/// An error about `item`.
pub fn export_error(item: impl Into<String>, problem: impl Into<String>) -> ExportError {
    ExportError { item: item.into(), problem: problem.into() }
}

impl SignedExportManifest {
    /// Signs `manifest` with the validator's key.
    pub fn sign(manifest: ExportManifest, key: &Keypair) -> Result<Self, crate::encoding::EncodeError> {
        let signature = key.sign(SIG_EXPORT, &encode(&manifest)?);
        Ok(Self { manifest, public_key: key.public(), signature })
    }

    /// Checks that a genesis validator of this chain signed the manifest.
    pub fn verify(&self, genesis: &Genesis) -> Result<(), ExportError> {
        let fail = |p: String| export_error(SIGNATURE_URL, p);
        if self.manifest.version != 1 {
            return Err(fail(format!("unknown manifest version {}", self.manifest.version)));
        }
        let chain = genesis.hash().map_err(|e| fail(e.to_string()))?;
        if self.manifest.chain != chain {
            return Err(fail("made for another chain".into()));
        }
        if self.public_key.key_id() != self.manifest.node
            || !genesis.membership.validators.iter().any(|v| v.public_key == self.public_key)
        {
            return Err(fail("not signed by a validator of this chain".into()));
        }
        let bytes = encode(&self.manifest).map_err(|e| fail(e.to_string()))?;
        self.public_key
            .verify(SIG_EXPORT, &bytes, &self.signature)
            .map_err(|_| fail("the signature does not verify".into()))
    }
}

/// A FHIR `Binary` resource holding `bytes` (contentType application/json).
pub fn binary(bytes: &[u8]) -> serde_json::Value {
    serde_json::json!({
        "resourceType": "Binary",
        "contentType": "application/json",
        "data": base64::engine::general_purpose::STANDARD.encode(bytes),
    })
}

/// The bytes of a FHIR `Binary` resource's `data`.
pub fn binary_data(resource: &str) -> Result<Vec<u8>, String> {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Binary {
        resource_type: String,
        data: String,
    }
    let b: Binary = serde_json::from_str(resource).map_err(|e| e.to_string())?;
    if b.resource_type != "Binary" {
        return Err(format!("a {} where a Binary was expected", b.resource_type));
    }
    base64::engine::general_purpose::STANDARD.decode(b.data).map_err(|e| e.to_string())
}
