//! One shape for everything a single cairn key signs: a body and a signature over
//! `domain || bcs(body)` under the body's own domain label, checked with
//! [`Rules::Strict`](crate::identity::Rules::Strict) against the key its body names.

use serde::{Deserialize, Serialize};

use crate::encoding::{EncodeError, encode};
use crate::identity::{KeyId, Keypair, PublicKey, Signature, SignatureError};

/// A structure that one key signs.
pub trait SignedBody: Serialize + Sized {
    /// The domain label its signature is made under.
    const DOMAIN: &'static str;
    /// The key id that must have signed it.
    fn signer(&self) -> KeyId;
    /// Signs the body with `key`.
    fn sign(self, key: &Keypair) -> Result<Signed<Self>, EncodeError> {
        let signature = key.sign(Self::DOMAIN, &encode(&self)?);
        Ok(Signed { body: self, signature })
    }
}

/// A body with its signer's signature.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Signed<T> {
    /// What was signed.
    pub body: T,
    /// Signature over `T::DOMAIN || bcs(body)`.
    pub signature: Signature,
}

impl<T: SignedBody> Signed<T> {
    /// Verifies the signature with `key`, which must be the one the body names.
    pub fn verify(&self, key: &PublicKey) -> Result<(), SignatureError> {
        if key.key_id() != self.body.signer() {
            return Err(SignatureError::BadKey("key does not belong to the signer the body names"));
        }
        let bytes = encode(&self.body).map_err(|_| SignatureError::BadSignature)?;
        key.verify(T::DOMAIN, &bytes, &self.signature)
    }
}
