//! The key file format shared by `cairn-node init` and `cairn keygen`: a small TOML
//! document holding the secret seed and, as a check, the public key it yields.

use serde::Deserialize;
use zeroize::Zeroizing;

use crate::bytes::decode_hex;
use crate::identity::{Keypair, PublicKey, SecretSeed};

const KIND: &str = "cairn-ed25519-seed";

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyFile {
    kind: String,
    version: u8,
    seed: Zeroizing<String>,
    public_key: PublicKey,
}

/// A key file that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyFileError {
    /// Not a cairn key file.
    #[error("not a cairn key file: {0}")]
    Format(String),
    /// The seed does not yield the public key written beside it.
    #[error("the seed does not match the public key in the file (corrupted or edited)")]
    Mismatch,
}

/// Renders a key file for `seed`.
pub fn render(seed: &SecretSeed) -> Zeroizing<String> {
    let public = Keypair::from_seed(seed).public();
    Zeroizing::new(format!(
        "# cairn secret key: anyone holding this file can act as {public}.\n\
         # Keep it readable by its owner only.\n\
         kind = \"{KIND}\"\nversion = 1\nseed = \"{}\"\npublic_key = \"{public}\"\n",
        Zeroizing::new(hex::encode(seed.expose())).as_str()
    ))
}

/// Parses a key file and checks that its seed and public key agree.
pub fn parse(text: &str) -> Result<SecretSeed, KeyFileError> {
    let file: KeyFile = toml::from_str(text).map_err(|e| KeyFileError::Format(e.to_string()))?;
    if file.kind != KIND || file.version != 1 {
        return Err(KeyFileError::Format(format!(
            "kind {:?} version {} is not {KIND} version 1",
            file.kind, file.version
        )));
    }
    let bytes = Zeroizing::new(decode_hex::<32>(&file.seed).map_err(|e| KeyFileError::Format(format!("seed: {e}")))?);
    let seed = SecretSeed::from_bytes(*bytes);
    if Keypair::from_seed(&seed).public() != file.public_key {
        return Err(KeyFileError::Mismatch);
    }
    Ok(seed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_detects_tampering() {
        let seed = SecretSeed::from_bytes([11; 32]);
        let text = render(&seed);
        assert_eq!(parse(&text).unwrap().expose(), seed.expose());
        let tampered = text.replace(&hex::encode([11u8; 32]), &hex::encode([12u8; 32]));
        assert_eq!(parse(&tampered).err(), Some(KeyFileError::Mismatch));
        assert!(matches!(parse("kind = 1"), Err(KeyFileError::Format(_))));
    }
}
