//! Key files for gateways, accessors, regulators and organisation admins.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use cairn_proto::{Keypair, PublicKey, SecretSeed, keyfile};

/// Why a key could not be made or read.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The file exists already.
    #[error("{0} already exists; refusing to overwrite a key")]
    Exists(PathBuf),
    /// Reading or writing failed.
    #[error("{0}: {1}")]
    Io(PathBuf, std::io::Error),
    /// The file is not a usable key.
    #[error("{0}: {1}")]
    Format(PathBuf, keyfile::KeyFileError),
    /// No randomness.
    #[error("no randomness from the operating system: {0}")]
    Entropy(String),
}

/// Generates a key and writes it to `path` (mode 0600, must not exist, fsynced).
pub fn generate(path: &Path) -> Result<PublicKey, KeyError> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut bytes = zeroize::Zeroizing::new([0u8; 32]);
    getrandom::fill(bytes.as_mut_slice()).map_err(|e| KeyError::Entropy(e.to_string()))?;
    let seed = SecretSeed::from_bytes(*bytes);
    let mut file =
        std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path).map_err(|e| {
            match e.kind() {
                std::io::ErrorKind::AlreadyExists => KeyError::Exists(path.to_path_buf()),
                _ => KeyError::Io(path.to_path_buf(), e),
            }
        })?;
    file.write_all(keyfile::render(&seed).as_bytes())
        .and_then(|_| file.sync_all())
        .map_err(|e| KeyError::Io(path.to_path_buf(), e))?;
    Ok(Keypair::from_seed(&seed).public())
}

/// Reads a key file.
pub fn load(path: &Path) -> Result<Keypair, KeyError> {
    let text = zeroize::Zeroizing::new(std::fs::read_to_string(path).map_err(|e| KeyError::Io(path.to_path_buf(), e))?);
    let seed = keyfile::parse(&text).map_err(|e| KeyError::Format(path.to_path_buf(), e))?;
    Ok(Keypair::from_seed(&seed))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generate_then_load_and_refuse_overwrite() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gw.key");
        let public = generate(&path).unwrap();
        assert_eq!(load(&path).unwrap().public(), public);
        assert!(matches!(generate(&path), Err(KeyError::Exists(_))));
        std::fs::write(dir.path().join("junk.key"), "nonsense").unwrap();
        assert!(matches!(load(&dir.path().join("junk.key")), Err(KeyError::Format(..))));
    }
}
