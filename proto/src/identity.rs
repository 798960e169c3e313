//! ed25519 identities: one 32-byte seed per node (or gateway, or regulator) yields its
//! cairn signing key, its Malachite consensus key and its libp2p identity: the same
//! public key in all three, because all three expand the seed by RFC 8032.
//!
//! # Which verification rule applies to which signature
//!
//! | signature kind | signed by | rule | why |
//! |---|---|---|---|
//! | API requests, batch commits, membership changes, erasure receipts, challenge answers (`cairn/sig/*`) | cairn keys | [`Rules::Strict`]: ed25519-dalek `verify_strict` | cairn's own format; strict rejects malleable and small-order cases outright |
//! | consensus votes, hence commit certificates | validators through Malachite | [`Rules::Zip215`]: ed25519-consensus | the engine accepts votes by ZIP-215; an offline verifier must accept exactly the certificates the validators accepted |
//!
//! Every cairn signature covers `domain || message` where `domain` is one of the
//! prefix-free labels of [`crate::hash::domain`].

use ed25519_dalek::Signer as _;
use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::bytes::fixed_bytes;
use crate::hash::{Hash32, domain, hash_parts};

fixed_bytes!(
    /// An ed25519 public key as 32 bytes. Checked by [`PublicKey::validate`] wherever
    /// one enters the system (genesis, membership changes).
    PublicKey,
    32
);
fixed_bytes!(
    /// Short identifier of a public key: the first 16 bytes of
    /// `blake3("cairn/key-id/v1" || public_key)`.
    KeyId,
    16
);
fixed_bytes!(
    /// An ed25519 signature (`R || s`).
    Signature,
    64
);

/// The verification rule set of a signature kind (see the module table).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rules {
    /// ed25519-dalek `verify_strict`: cofactorless, rejects small-order keys and `R`,
    /// non-canonical `s`.
    Strict,
    /// ZIP-215 (ed25519-consensus), the rule Malachite applies to votes.
    Zip215,
}

/// Why a key or signature was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// The bytes are not a usable ed25519 public key.
    #[error("invalid public key: {0}")]
    BadKey(&'static str),
    /// The signature does not verify for this key and message.
    #[error("signature does not verify")]
    BadSignature,
}

/// A 32-byte secret seed. Wiped from memory when dropped; never printed.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct SecretSeed([u8; 32]);

impl SecretSeed {
    /// Wraps seed bytes (from the OS RNG, or a key file).
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }
    /// The seed bytes, for writing a key file or deriving the libp2p identity.
    pub fn expose(&self) -> &[u8; 32] {
        &self.0
    }
}

impl core::fmt::Debug for SecretSeed {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("SecretSeed(..)")
    }
}

/// A signing identity.
#[derive(Clone)]
pub struct Keypair {
    signing: ed25519_dalek::SigningKey,
    public: PublicKey,
}

impl core::fmt::Debug for Keypair {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "Keypair({})", self.public)
    }
}

impl Keypair {
    /// Expands a seed into a keypair (RFC 8032).
    pub fn from_seed(seed: &SecretSeed) -> Self {
        let signing = ed25519_dalek::SigningKey::from_bytes(seed.expose());
        let public = PublicKey(signing.verifying_key().to_bytes());
        Self { signing, public }
    }
    /// The public key.
    pub fn public(&self) -> PublicKey {
        self.public
    }
    /// Signs `domain || message`.
    pub fn sign(&self, domain: &str, message: &[u8]) -> Signature {
        Signature(self.signing.sign(&signing_bytes(domain, message)).to_bytes())
    }
}

/// The exact bytes a cairn signature covers.
pub fn signing_bytes(domain: &str, message: &[u8]) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(domain.len() + message.len());
    bytes.extend_from_slice(domain.as_bytes());
    bytes.extend_from_slice(message);
    bytes
}

impl PublicKey {
    /// This key's id.
    pub fn key_id(&self) -> KeyId {
        let h: Hash32 = hash_parts(domain::KEY_ID, &[&self.0]);
        let mut id = [0u8; 16];
        id.copy_from_slice(&h.0[..16]);
        KeyId(id)
    }

    /// Accepts only keys that both rule sets treat the same: a canonical encoding of a
    /// point on the curve, in the prime-order subgroup (not small order, no torsion).
    pub fn validate(&self) -> Result<(), SignatureError> {
        let vk = ed25519_dalek::VerifyingKey::from_bytes(&self.0)
            .map_err(|_| SignatureError::BadKey("not a point on the curve"))?;
        let point = vk.to_edwards();
        if point.compress().to_bytes() != self.0 {
            return Err(SignatureError::BadKey("non-canonical encoding"));
        }
        if vk.is_weak() {
            return Err(SignatureError::BadKey("small-order point"));
        }
        if !point.is_torsion_free() {
            return Err(SignatureError::BadKey("point has a torsion component"));
        }
        Ok(())
    }

    /// Verifies a cairn signature over `domain || message` with [`Rules::Strict`].
    pub fn verify(&self, domain: &str, message: &[u8], signature: &Signature) -> Result<(), SignatureError> {
        self.verify_bytes(Rules::Strict, &signing_bytes(domain, message), signature)
    }

    /// Verifies a signature over exactly `signed` under the given rule set.
    pub fn verify_bytes(&self, rules: Rules, signed: &[u8], signature: &Signature) -> Result<(), SignatureError> {
        match rules {
            Rules::Strict => {
                let vk = ed25519_dalek::VerifyingKey::from_bytes(&self.0)
                    .map_err(|_| SignatureError::BadKey("not a point on the curve"))?;
                let sig = ed25519_dalek::Signature::from_bytes(&signature.0);
                vk.verify_strict(signed, &sig).map_err(|_| SignatureError::BadSignature)
            }
            Rules::Zip215 => {
                let vk = ed25519_consensus::VerificationKey::try_from(self.0)
                    .map_err(|_| SignatureError::BadKey("not a point on the curve"))?;
                let sig = ed25519_consensus::Signature::from(signature.0);
                vk.verify(&sig, signed).map_err(|_| SignatureError::BadSignature)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keypair(byte: u8) -> Keypair {
        Keypair::from_seed(&SecretSeed::from_bytes([byte; 32]))
    }

    #[test]
    fn sign_then_verify_under_both_rules() {
        let kp = keypair(7);
        let sig = kp.sign(domain::SIG_BATCH_COMMIT, b"root");
        kp.public().verify(domain::SIG_BATCH_COMMIT, b"root", &sig).unwrap();
        let signed = signing_bytes(domain::SIG_BATCH_COMMIT, b"root");
        kp.public().verify_bytes(Rules::Zip215, &signed, &sig).unwrap();
    }

    #[test]
    fn another_domain_message_or_key_fails() {
        let kp = keypair(7);
        let sig = kp.sign(domain::SIG_BATCH_COMMIT, b"root");
        let e = Err(SignatureError::BadSignature);
        assert_eq!(kp.public().verify(domain::SIG_ERASURE_RECEIPT, b"root", &sig), e);
        assert_eq!(kp.public().verify(domain::SIG_BATCH_COMMIT, b"rooT", &sig), e);
        assert_eq!(keypair(8).public().verify(domain::SIG_BATCH_COMMIT, b"root", &sig), e);
    }

    #[test]
    fn one_seed_gives_the_same_key_to_malachite_and_cairn() {
        let seed = [42u8; 32];
        let consensus = ed25519_consensus::SigningKey::from(seed);
        let cairn = Keypair::from_seed(&SecretSeed::from_bytes(seed));
        assert_eq!(consensus.verification_key().to_bytes(), cairn.public().0);
        // A vote signed by the consensus key verifies under ZIP-215 with the cairn key.
        let vote = consensus.sign(b"vote");
        cairn.public().verify_bytes(Rules::Zip215, b"vote", &Signature(vote.to_bytes())).unwrap();
    }

    #[test]
    fn validate_refuses_small_order_and_non_canonical_keys() {
        keypair(1).public().validate().unwrap();
        let mut identity = [0u8; 32];
        identity[0] = 1; // y = 1: the neutral element, small order
        assert!(PublicKey(identity).validate().is_err());
        // y = p + 1 (non-canonical encoding of the neutral element)
        let mut non_canonical = [0xffu8; 32];
        non_canonical[0] = 0xee;
        non_canonical[31] = 0x7f;
        assert!(PublicKey(non_canonical).validate().is_err());
    }

    #[test]
    fn strict_rejects_what_zip215_accepts() {
        // The all-zero-s signature with the neutral element as R and key verifies under
        // ZIP-215 (cofactored equation) but not under verify_strict (small order).
        let mut identity = [0u8; 32];
        identity[0] = 1;
        let key = PublicKey(identity);
        let mut sig = [0u8; 64];
        sig[0] = 1;
        let sig = Signature(sig);
        assert_eq!(key.verify_bytes(Rules::Zip215, b"anything", &sig), Ok(()));
        assert!(key.verify_bytes(Rules::Strict, b"anything", &sig).is_err());
    }

    #[test]
    fn key_id_is_stable_and_short() {
        let kp = keypair(3);
        assert_eq!(kp.public().key_id(), kp.public().key_id());
        assert_ne!(kp.public().key_id(), keypair(4).public().key_id());
        assert_eq!(kp.public().key_id().to_string().len(), 32);
    }

    #[test]
    fn seed_is_not_printed() {
        assert_eq!(format!("{:?}", SecretSeed::from_bytes([9; 32])), "SecretSeed(..)");
    }
}
