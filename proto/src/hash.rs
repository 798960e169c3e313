//! BLAKE3 with domain separation: every hash cairn computes starts with a `cairn/.../vN`
//! label, and no label is a prefix of another, so a hash made for one purpose can never
//! be presented as one made for another.

use crate::bytes::fixed_bytes;

fixed_bytes!(
    /// A 32-byte digest (BLAKE3 unless stated otherwise).
    Hash32,
    32
);

/// Every domain label cairn hashes or signs under. Adding one here keeps the
/// prefix-freeness test honest.
pub mod domain {
    /// Content commitment `C` (DESIGN.md §4), used as BLAKE3 keyed-hash input prefix.
    pub const CONTENT: &str = "cairn/content/v1";
    /// Record leaf (DESIGN.md §4).
    pub const RECORD_LEAF: &str = "cairn/leaf/v1";
    /// Leaf of an erasure receipt in a custodian's receipt batch.
    pub const ERASURE_LEAF: &str = "cairn/leaf/erasure/v1";
    /// Leaf of a consent event.
    pub const CONSENT_LEAF: &str = "cairn/leaf/consent/v1";
    /// Leaf of an access-log event.
    pub const ACCESS_LEAF: &str = "cairn/leaf/access/v1";
    /// Random padding leaf that hides a batch's real size.
    pub const PADDING_LEAF: &str = "cairn/leaf/padding/v1";
    /// Custodian manifest hash.
    pub const MANIFEST: &str = "cairn/manifest/v1";
    /// Key id of a public key.
    pub const KEY_ID: &str = "cairn/key-id/v1";
    /// Genesis identity hash.
    pub const GENESIS: &str = "cairn/genesis/v1";
    /// Block header hash.
    pub const BLOCK: &str = "cairn/block/v1";
    /// Hash over a block's transactions.
    pub const BLOCK_BODY: &str = "cairn/block-body/v1";
    /// Seed of the batch-verification coefficients.
    pub const BATCH_VERIFY: &str = "cairn/batch-verify/v1";
    /// Transaction id.
    pub const TX: &str = "cairn/tx/v1";

    /// Signed: an HTTP API request (format 2: bound to its chain and node, ADR 015).
    pub const SIG_REQUEST: &str = "cairn/sig/request/v2";
    /// Signed: a batch commitment.
    pub const SIG_BATCH_COMMIT: &str = "cairn/sig/batch-commit/v1";
    /// Signed: a membership change.
    pub const SIG_MEMBERSHIP: &str = "cairn/sig/membership/v1";
    /// Signed: an erasure receipt.
    pub const SIG_ERASURE_RECEIPT: &str = "cairn/sig/erasure-receipt/v1";
    /// Hash of an erasure request (what an erasure receipt answers).
    pub const ERASURE_REQUEST: &str = "cairn/erasure-request/v1";
    /// Signed: an answer to a liveness challenge.
    pub const SIG_CHALLENGE: &str = "cairn/sig/challenge/v1";
    /// Signed: a node's proof of the identity a signed request must name (ADR 015).
    pub const SIG_IDENTITY: &str = "cairn/sig/identity/v1";
    /// A custodian's handle of a record under legal hold (kept outside the vault).
    pub const HOLD: &str = "cairn/hold/v1";
    /// Signed: a change of the purpose policy by organisation admins.
    pub const SIG_POLICY: &str = "cairn/sig/policy-change/v1";
    /// Signed: a consent-layer document (binding, consent, family grant, agreement,
    /// revocation) by one of its parties.
    pub const SIG_DOCUMENT: &str = "cairn/sig/document/v1";
    /// Hash of a consent-layer document's exact JSON bytes.
    pub const DOCUMENT: &str = "cairn/document/v1";
    /// Keyed commitment to a consent event (document, kind and signatures).
    pub const DOCUMENT_EVENT: &str = "cairn/document-event/v1";
    /// Keyed commitment to a document's expiry (its period ended).
    pub const DOCUMENT_EXPIRY: &str = "cairn/document-expiry/v1";
    /// Signed: a validator's export manifest (`crate::export`).
    pub const SIG_EXPORT: &str = "cairn/sig/export/v1";
    /// Hash of one export entry's bytes (`crate::export::item_hash`).
    pub const EXPORT_ITEM: &str = "cairn/export-item/v1";
    /// Commitment to an access event (`crate::access::access_commitment`).
    pub const ACCESS_EVENT: &str = "cairn/access-event/v1";
    /// Signed (ZIP-215): a consensus vote.
    pub const SIG_VOTE: &str = "cairn/sig/vote/v1";
    /// Signed (ZIP-215): a consensus proposal.
    pub const SIG_PROPOSAL: &str = "cairn/sig/proposal/v1";
    /// Signed (ZIP-215): a validator's binding of its consensus key to its peer id.
    pub const SIG_VALIDATOR_PROOF: &str = "cairn/sig/validator-proof/v1";

    /// All labels, for the prefix-freeness check.
    pub const ALL: &[&str] = &[
        CONTENT,
        RECORD_LEAF,
        ERASURE_LEAF,
        CONSENT_LEAF,
        ACCESS_LEAF,
        PADDING_LEAF,
        MANIFEST,
        KEY_ID,
        GENESIS,
        BLOCK,
        BLOCK_BODY,
        BATCH_VERIFY,
        TX,
        SIG_REQUEST,
        SIG_BATCH_COMMIT,
        SIG_MEMBERSHIP,
        SIG_ERASURE_RECEIPT,
        ERASURE_REQUEST,
        SIG_CHALLENGE,
        SIG_IDENTITY,
        HOLD,
        SIG_POLICY,
        SIG_DOCUMENT,
        DOCUMENT,
        DOCUMENT_EVENT,
        DOCUMENT_EXPIRY,
        ACCESS_EVENT,
        SIG_EXPORT,
        EXPORT_ITEM,
        SIG_VOTE,
        SIG_PROPOSAL,
        SIG_VALIDATOR_PROOF,
    ];
}

/// `blake3(domain || part_0 || part_1 || ...)`. Callers only pass fixed-length parts or
/// a single trailing variable-length part, so the concatenation is unambiguous.
pub fn hash_parts(domain: &str, parts: &[&[u8]]) -> Hash32 {
    let mut h = blake3::Hasher::new();
    h.update(domain.as_bytes());
    for part in parts {
        h.update(part);
    }
    Hash32(*h.finalize().as_bytes())
}

/// Plain BLAKE3 of some bytes (no domain label: used only inside labelled constructions).
pub fn blake3(bytes: &[u8]) -> Hash32 {
    Hash32(*blake3::hash(bytes).as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_domain_label_is_a_prefix_of_another() {
        for (i, a) in domain::ALL.iter().enumerate() {
            for (j, b) in domain::ALL.iter().enumerate() {
                if i != j {
                    assert!(!b.starts_with(a), "{a} is a prefix of {b}");
                }
            }
        }
    }

    #[test]
    fn domain_changes_the_hash() {
        assert_ne!(hash_parts(domain::RECORD_LEAF, &[b"x"]), hash_parts(domain::ERASURE_LEAF, &[b"x"]));
    }

    #[test]
    fn hex_and_bcs_forms() {
        let h = hash_parts(domain::BLOCK, &[]);
        let text = h.to_string();
        assert_eq!(text.len(), 64);
        assert_eq!(text.parse::<Hash32>().unwrap(), h);
        let bytes = crate::encoding::encode(&h).unwrap();
        assert_eq!(bytes.len(), 33, "length prefix plus 32 bytes");
        assert_eq!(crate::encoding::decode::<Hash32>(&bytes, 64).unwrap(), h);
        assert!("abcd".parse::<Hash32>().is_err());
    }
}
