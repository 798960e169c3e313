//! Keys, randomness and authenticated encryption (XChaCha20-Poly1305, random 24-byte
//! nonces) for the vault. Every key type wipes itself when dropped.
//!
//! XChaCha20-Poly1305 is built as draft-irtf-cfrg-xchacha-03 §2.3 defines it: HChaCha20
//! of the key and the nonce's first 16 bytes gives a subkey, and ChaCha20-Poly1305
//! (RFC 8439) under that subkey seals with the nonce `0⁴ ‖ nonce[16..24]`. HChaCha20 is
//! the `chacha20` crate's; the AEAD is `ring`'s, whose per-message cost is a fifth of the
//! `chacha20poly1305` crate's on the vault's small values (ADR 023). The bytes are the
//! same as that crate's, which a test checks both ways.

use ring::aead::{Aad, CHACHA20_POLY1305, LessSafeKey, Nonce, UnboundKey};
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
    let failed = || VaultError::Fatal("encryption failed".into());
    let (aead, inner) = xchacha(key, &nonce).ok_or_else(failed)?;
    let mut out = Vec::with_capacity(NONCE_LEN + plaintext.len() + TAG_LEN);
    out.extend_from_slice(&nonce);
    out.extend_from_slice(plaintext);
    let body = out.get_mut(NONCE_LEN..).unwrap_or_default();
    let tag = aead.seal_in_place_separate_tag(inner, Aad::from(aad), body).map_err(|_| failed())?;
    out.extend_from_slice(tag.as_ref());
    Ok(out)
}

/// Opens what [`seal`] produced; `None` if the key, the `aad` or the bytes are wrong.
pub fn open(key: &Key32, aad: &[u8], sealed: &[u8]) -> Option<Zeroizing<Vec<u8>>> {
    let (nonce, ct) = sealed.split_at_checked(NONCE_LEN)?;
    let nonce = <[u8; NONCE_LEN]>::try_from(nonce).ok()?;
    if ct.len() < TAG_LEN {
        return None;
    }
    let (aead, inner) = xchacha(key, &nonce)?;
    let mut buf = Zeroizing::new(ct.to_vec());
    let plain_len = aead.open_in_place(inner, Aad::from(aad), buf.as_mut_slice()).ok()?.len();
    buf.truncate(plain_len);
    Some(buf)
}

/// The ChaCha20-Poly1305 key and nonce that make XChaCha20-Poly1305 under `key` and
/// `nonce` (draft-irtf-cfrg-xchacha-03 §2.3). Our copy of the subkey is wiped on return;
/// `ring` keeps its own in the returned key, on the caller's stack.
fn xchacha(key: &Key32, nonce: &[u8; NONCE_LEN]) -> Option<(LessSafeKey, Nonce)> {
    let (head, tail) = nonce.split_first_chunk::<16>()?;
    let mut subkey = chacha20::hchacha::<chacha20::R20>(key.expose().into(), &(*head).into());
    let unbound = UnboundKey::new(&CHACHA20_POLY1305, subkey.as_slice());
    subkey.as_mut_slice().zeroize();
    let mut inner = [0u8; 12];
    inner.get_mut(4..)?.copy_from_slice(tail);
    Some((LessSafeKey::new(unbound.ok()?), Nonce::assume_unique_for_key(inner)))
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

    /// draft-irtf-cfrg-xchacha-03, appendix A.3.1 (AEAD_XChaCha20_Poly1305).
    #[test]
    fn seals_the_drafts_test_vector() {
        let key = Key32::from_bytes(std::array::from_fn(|i| 0x80 + i as u8));
        let nonce: [u8; NONCE_LEN] = std::array::from_fn(|i| 0x40 + i as u8);
        let aad = hex::decode("50515253c0c1c2c3c4c5c6c7").unwrap();
        let plaintext = b"Ladies and Gentlemen of the class of '99: If I could offer you only one tip for the future, sunscreen would be it.";
        let want = hex::decode(concat!(
            "bd6d179d3e83d43b9576579493c0e939572a1700252bfaccbed2902c21396cbb",
            "731c7f1b0b4aa6440bf3a82f4eda7e39ae64c6708c54c216cb96b72e1213b452",
            "2f8c9ba40db5d945b11b69b982c1bb9e3f3fac2bc369488f76b2383565d3fff9",
            "21f9664c97637da9768812f615c68b13b52e",
            "c0875924c1c7987947deafd8780acf49",
        ))
        .unwrap();
        let sealed = seal_with_nonce(&key, nonce, &aad, plaintext).unwrap();
        assert_eq!(&sealed[..NONCE_LEN], &nonce);
        assert_eq!(hex::encode(&sealed[NONCE_LEN..]), hex::encode(&want));
        assert_eq!(open(&key, &aad, &sealed).unwrap().as_slice(), plaintext);
    }

    /// Vaults written with the `chacha20poly1305` crate open here and the other way round:
    /// the same bytes for every length around the block sizes, a large value and empty
    /// associated data; a flipped bit anywhere is refused by both.
    #[test]
    fn same_bytes_as_the_chacha20poly1305_crate() {
        use chacha20poly1305::aead::{Aead as _, Payload};
        use chacha20poly1305::{KeyInit as _, XChaCha20Poly1305, XNonce};
        let lengths = (0..=200).chain([255, 256, 257, 511, 512, 513, 4095, 4096, 65_600]);
        for len in lengths {
            let key = Key32::random().unwrap();
            let mut nonce = [0u8; NONCE_LEN];
            fill_random(&mut nonce).unwrap();
            let mut plaintext = vec![0u8; len];
            fill_random(&mut plaintext).unwrap();
            let aad: Vec<u8> =
                if len % 3 == 0 { Vec::new() } else { plaintext.iter().rev().take(40).copied().collect() };
            let theirs = XChaCha20Poly1305::new(key.expose().into());
            let want = theirs.encrypt(&XNonce::from(nonce), Payload { msg: &plaintext, aad: &aad }).unwrap();
            let ours = seal_with_nonce(&key, nonce, &aad, &plaintext).unwrap();
            assert_eq!(&ours[NONCE_LEN..], want.as_slice(), "length {len}");
            let back = theirs.decrypt(&XNonce::from(nonce), Payload { msg: &ours[NONCE_LEN..], aad: &aad }).unwrap();
            assert_eq!(back, plaintext, "length {len}");
            assert_eq!(open(&key, &aad, &ours).unwrap().as_slice(), plaintext.as_slice(), "length {len}");
            let mut bad = ours.clone();
            let at = len % bad.len();
            bad[at] ^= 1;
            assert!(open(&key, &aad, &bad).is_none(), "length {len}: bit flipped at {at}");
        }
    }
}
