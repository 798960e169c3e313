//! Keys, randomness and authenticated encryption (XChaCha20-Poly1305, random 24-byte
//! nonces) for the vault. Every key type wipes itself when dropped.

use chacha20poly1305::aead::{Aead as _, AeadInOut as _};
use chacha20poly1305::{KeyInit as _, XChaCha20Poly1305, XNonce};
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use super::error::VaultError;

/// Nonce length of XChaCha20-Poly1305.
pub const NONCE_LEN: usize = 24;
/// Tag length of Poly1305.
pub const TAG_LEN: usize = 16;

/// A 32-byte secret key. Never printed; wiped on drop.
#[derive(Clone, PartialEq, Eq, Zeroize, ZeroizeOnDrop)]
pub struct Key32([u8; 32]);

impl std::fmt::Debug for Key32 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Key32(..)")
    }
}

impl Key32 {
    /// A fresh key from the operating system's RNG.
    pub fn random() -> Result<Self, VaultError> {
        let mut k = Self([0u8; 32]);
        fill_random(&mut k.0)?;
        Ok(k)
    }
    /// Takes 32 bytes from the front of `pool` (randomness drawn in bulk).
    pub fn take(pool: &mut &[u8]) -> Result<Self, VaultError> {
        take_array(pool).map(Self)
    }
    /// Wraps key bytes (from a decrypted node or the root slot).
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }
    /// The key bytes.
    pub fn expose(&self) -> &[u8; 32] {
        &self.0
    }
    /// A subkey for one purpose: `blake3::derive_key(context, self)`.
    pub fn derive(&self, context: &str) -> Key32 {
        Key32(blake3::derive_key(context, &self.0))
    }
    /// The `n`-th of a series of 16-byte opaque handles for one purpose (the chunks of a
    /// subject index): `blake3::derive_key(context, self ‖ n as u64 big-endian)`. Handles
    /// of one series look unrelated to each other and to the key.
    pub fn handle_at(&self, context: &str, n: u64) -> [u8; 16] {
        let mut material = Zeroizing::new([0u8; 40]);
        let (key, index) = material.split_at_mut(32);
        key.copy_from_slice(&self.0);
        index.copy_from_slice(&n.to_be_bytes());
        let full = Zeroizing::new(blake3::derive_key(context, material.as_slice()));
        let mut h = [0u8; 16];
        h.iter_mut().zip(full.iter()).for_each(|(d, s)| *d = *s);
        h
    }
    /// A 16-byte opaque handle for one purpose: nothing about the key can be learnt from it.
    pub fn handle(&self, context: &str) -> [u8; 16] {
        let full = Zeroizing::new(blake3::derive_key(context, &self.0));
        let mut h = [0u8; 16];
        h.iter_mut().zip(full.iter()).for_each(|(d, s)| *d = *s);
        h
    }
}

/// Keys are written as one byte string (not 32 separate bytes): encoding key-heavy nodes
/// is a copy.
impl serde::Serialize for Key32 {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&self.0)
    }
}

impl<'de> serde::Deserialize<'de> for Key32 {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl serde::de::Visitor<'_> for KeyVisitor {
            type Value = Key32;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("32 key bytes")
            }
            fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Key32, E> {
                let bytes: [u8; 32] = v.try_into().map_err(|_| E::invalid_length(v.len(), &self))?;
                Ok(Key32(bytes))
            }
        }
        d.deserialize_bytes(KeyVisitor)
    }
}

/// Takes `N` bytes from the front of `pool`.
pub fn take_array<const N: usize>(pool: &mut &[u8]) -> Result<[u8; N], VaultError> {
    let (head, rest) = pool.split_at_checked(N).ok_or_else(|| VaultError::Fatal("randomness pool exhausted".into()))?;
    *pool = rest;
    head.try_into().map_err(|_| VaultError::Fatal("randomness pool exhausted".into()))
}

/// Fills `buf` from the operating system's RNG.
pub fn fill_random(buf: &mut [u8]) -> Result<(), VaultError> {
    getrandom::fill(buf).map_err(|e| VaultError::Fatal(format!("no randomness from the OS: {e}")))
}

/// `nonce || ciphertext || tag` of `plaintext` under `key`, binding `aad`, with a
/// fresh random nonce.
pub fn seal(key: &Key32, aad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>, VaultError> {
    let mut nonce = [0u8; NONCE_LEN];
    fill_random(&mut nonce)?;
    seal_with_nonce(key, nonce, aad, plaintext)
}

/// [`seal`] with a nonce the caller drew from the OS RNG (to draw several at once).
pub fn seal_with_nonce(
    key: &Key32,
    nonce: [u8; NONCE_LEN],
    aad: &[u8],
    plaintext: &[u8],
) -> Result<Vec<u8>, VaultError> {
    let cipher = XChaCha20Poly1305::new(key.expose().into());
    let mut out = Vec::with_capacity(NONCE_LEN + plaintext.len() + TAG_LEN);
    out.extend_from_slice(&nonce);
    out.extend_from_slice(plaintext);
    let body = out.get_mut(NONCE_LEN..).unwrap_or_default();
    let tag = cipher
        .encrypt_inout_detached(&XNonce::from(nonce), aad, body.into())
        .map_err(|_| VaultError::Fatal("encryption failed".into()))?;
    out.extend_from_slice(&tag);
    Ok(out)
}

/// Opens what [`seal`] produced; `None` if the key, the `aad` or the bytes are wrong.
pub fn open(key: &Key32, aad: &[u8], sealed: &[u8]) -> Option<Zeroizing<Vec<u8>>> {
    let (nonce, ct) = sealed.split_at_checked(NONCE_LEN)?;
    let nonce = <[u8; NONCE_LEN]>::try_from(nonce).ok()?;
    let cipher = XChaCha20Poly1305::new(key.expose().into());
    cipher.decrypt(&XNonce::from(nonce), chacha20poly1305::aead::Payload { msg: ct, aad }).ok().map(Zeroizing::new)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_open_and_refuse_wrong_key_or_aad() {
        let k = Key32::random().unwrap();
        let sealed = seal(&k, b"ad", b"reading").unwrap();
        assert_eq!(open(&k, b"ad", &sealed).unwrap().as_slice(), b"reading");
        assert!(open(&k, b"other", &sealed).is_none());
        assert!(open(&Key32::random().unwrap(), b"ad", &sealed).is_none());
        assert!(open(&k, b"ad", &sealed[..10]).is_none());
        assert_ne!(seal(&k, b"ad", b"reading").unwrap(), sealed, "fresh nonce each time");
    }
}
