//! Signed HTTP requests (DESIGN.md §9): what a caller signs so a node knows who sent a
//! request, that it was not changed on the way and that it is not a replay.
//!
//! The caller sends five headers — [`HEADER_VERSION`] (`2`), [`HEADER_KEY`] (its key id,
//! hex), [`HEADER_TIMESTAMP`] (Unix milliseconds), [`HEADER_NONCE`] (16 random bytes, hex)
//! and [`HEADER_SIGNATURE`] (64 bytes, hex) — and signs
//! `"cairn/sig/request/v2" || bcs(RequestToSign)` built from its **audience** (the chain's
//! genesis hash and the key id of the node it sends to), the method, the path, the raw
//! query string and the BLAKE3 hash of the body as sent (ADR 015). A copy sent to another
//! node or another chain does not verify there. Format 1 (no audience, no version
//! header) is refused by name.

use serde::{Deserialize, Serialize};

use crate::encoding::{EncodeError, encode};
use crate::hash::{Hash32, blake3, domain};
use crate::identity::{KeyId, Keypair, PublicKey, Signature, SignatureError};
use crate::version::versioned;

/// Header carrying the signature format ([`VERSION`]); absent in format 1.
pub const HEADER_VERSION: &str = "x-cairn-signature-version";
/// The signature format this code signs and checks.
pub const VERSION: u8 = 2;
/// Header carrying the caller's key id.
pub const HEADER_KEY: &str = "x-cairn-key";
/// Header carrying the request time, Unix milliseconds.
pub const HEADER_TIMESTAMP: &str = "x-cairn-timestamp";
/// Header carrying a fresh random nonce (32 hex digits).
pub const HEADER_NONCE: &str = "x-cairn-nonce";
/// Header carrying the signature (128 hex digits).
pub const HEADER_SIGNATURE: &str = "x-cairn-signature";

/// What a caller signs for one HTTP request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestToSign {
    /// Format version (2).
    pub version: u8,
    /// The chain the request is for: its genesis hash (`Genesis::hash`).
    pub chain: Hash32,
    /// The node the request is sent to: its validator key id.
    pub audience: KeyId,
    /// HTTP method, upper case.
    pub method: String,
    /// Path, as sent (`/v1/readings`).
    pub path: String,
    /// Raw query string without `?`, empty if none.
    pub query: String,
    /// `blake3(body)`.
    pub body_hash: Hash32,
    /// Caller's key id.
    pub key: KeyId,
    /// Request time, Unix milliseconds.
    pub timestamp_ms: u64,
    /// Random per request; a node refuses a nonce it has seen.
    pub nonce: [u8; 16],
}

versioned!(RequestToSign = 2);

impl RequestToSign {
    /// Builds the statement for a request to node `audience` of chain `chain`.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        chain: Hash32,
        audience: KeyId,
        method: &str,
        path: &str,
        query: &str,
        body: &[u8],
        key: KeyId,
        timestamp_ms: u64,
        nonce: [u8; 16],
    ) -> Self {
        Self {
            version: VERSION,
            chain,
            audience,
            method: method.to_ascii_uppercase(),
            path: path.to_owned(),
            query: query.to_owned(),
            body_hash: blake3(body),
            key,
            timestamp_ms,
            nonce,
        }
    }

    /// Signs it.
    pub fn sign(&self, key: &Keypair) -> Result<Signature, EncodeError> {
        Ok(key.sign(domain::SIG_REQUEST, &encode(self)?))
    }

    /// Checks the signature with the caller's key (strict rules).
    pub fn verify(&self, key: &PublicKey, signature: &Signature) -> Result<(), SignatureError> {
        if key.key_id() != self.key {
            return Err(SignatureError::BadKey("key does not belong to the key id the request names"));
        }
        let bytes = encode(self).map_err(|_| SignatureError::BadSignature)?;
        key.verify(domain::SIG_REQUEST, &bytes, signature)
    }

    /// The five header values to send.
    pub fn headers(&self, signature: &Signature) -> [(&'static str, String); 5] {
        [
            (HEADER_VERSION, self.version.to_string()),
            (HEADER_KEY, self.key.to_string()),
            (HEADER_TIMESTAMP, self.timestamp_ms.to_string()),
            (HEADER_NONCE, hex::encode(self.nonce)),
            (HEADER_SIGNATURE, hex::encode(signature.0)),
        ]
    }
}

/// What a node signs (domain `cairn/sig/identity/v1`) to answer `GET /v1/identity?nonce=`:
/// its chain, its validator key id and the caller's nonce. A client that checks it with
/// the public key whose id is `node` knows the node holds that validator key, so it
/// cannot be made to sign requests for another node (ADR 015).
pub fn identity_statement(chain: &Hash32, node: &KeyId, nonce: &[u8; 16]) -> Vec<u8> {
    [chain.0.as_slice(), node.0.as_slice(), nonce.as_slice()].concat()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::SecretSeed;

    #[test]
    fn signature_binds_every_part_of_the_request() {
        let k = Keypair::from_seed(&SecretSeed::from_bytes([3; 32]));
        let (chain, node) = (blake3(b"genesis"), KeyId([9; 16]));
        let req = RequestToSign::new(
            chain,
            node,
            "post",
            "/v1/readings",
            "purpose=TREAT",
            b"{}",
            k.public().key_id(),
            10,
            [1; 16],
        );
        assert_eq!(req.method, "POST");
        let sig = req.sign(&k).unwrap();
        req.verify(&k.public(), &sig).unwrap();
        let changes: [fn(&mut RequestToSign); 8] = [
            |r| r.chain = blake3(b"another chain"),
            |r| r.audience = KeyId([8; 16]),
            |r| r.method = "GET".into(),
            |r| r.path = "/v1/records".into(),
            |r| r.query = "purpose=RESCH".into(),
            |r| r.body_hash = blake3(b"[]"),
            |r| r.timestamp_ms += 1,
            |r| r.nonce[0] ^= 1,
        ];
        for change in changes {
            let mut other = req.clone();
            change(&mut other);
            assert_eq!(other.verify(&k.public(), &sig), Err(SignatureError::BadSignature));
        }
        let stranger = Keypair::from_seed(&SecretSeed::from_bytes([4; 32]));
        assert!(req.verify(&stranger.public(), &sig).is_err());
    }
}
