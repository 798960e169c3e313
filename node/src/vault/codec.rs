//! Decoding of what this vault wrote itself. Every such value was sealed with
//! XChaCha20-Poly1305 (or holds only sealed parts), so its bytes are authenticated before
//! they are parsed; the canonicality check that `cairn_proto::encoding::decode` applies
//! to untrusted input would only repeat the encoding work (it was 13% of vault time).

use serde::de::DeserializeOwned;

use super::error::VaultError;
use super::keytree::corrupt;

/// Decodes bcs written by this vault, refusing more than `limit` bytes.
pub fn decode_own<T: DeserializeOwned>(bytes: &[u8], limit: usize, what: &str) -> Result<T, VaultError> {
    if bytes.len() > limit {
        return Err(corrupt(format!("{what} is {} bytes, more than {limit}", bytes.len())));
    }
    bcs::from_bytes(bytes).map_err(|e| corrupt(format!("{what}: {e}")))
}
