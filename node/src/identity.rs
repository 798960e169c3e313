//! The node's identity: one secret seed in `DATA_DIR/node.key` that yields the cairn
//! signing key, the Malachite consensus key and the libp2p peer id (one public key).

use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use cairn_proto::{Keypair, PublicKey, SecretSeed, keyfile};

/// File name of the node key inside the data directory.
pub const KEY_FILE: &str = "node.key";

/// Why the node identity could not be created or loaded.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// The data directory already holds a key.
    #[error("{0} already exists; refusing to replace a node identity")]
    Exists(PathBuf),
    /// Reading or writing failed.
    #[error("{path}: {source}")]
    Io {
        /// File involved.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// The key file is unusable.
    #[error("{path}: {source}")]
    KeyFile {
        /// File involved.
        path: PathBuf,
        /// Cause.
        source: keyfile::KeyFileError,
    },
    /// libp2p refused the key.
    #[error("libp2p identity: {0}")]
    Libp2p(String),
    /// The OS random number generator failed.
    #[error("no randomness from the operating system: {0}")]
    Entropy(String),
}

/// A node's keys.
#[derive(Debug)]
pub struct NodeIdentity {
    /// The seed (kept for the libp2p and consensus identities).
    pub seed: SecretSeed,
    /// The cairn signing key.
    pub keypair: Keypair,
}

impl NodeIdentity {
    /// Public key (the same in cairn, Malachite and libp2p).
    pub fn public_key(&self) -> PublicKey {
        self.keypair.public()
    }

    /// The libp2p peer id of this node.
    pub fn peer_id(&self) -> Result<libp2p_identity::PeerId, IdentityError> {
        Ok(libp2p_keypair(&self.seed)?.public().to_peer_id())
    }

    /// Creates a new identity in `data_dir` (created if missing, mode 0700); refuses to
    /// replace an existing key. The key file is written with mode 0600 and fsynced.
    pub fn create(data_dir: &Path) -> Result<Self, IdentityError> {
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| IdentityError::Io { path, source }
        };
        let path = data_dir.join(KEY_FILE);
        if path.exists() {
            return Err(IdentityError::Exists(path));
        }
        create_private_dir(data_dir).map_err(io(data_dir))?;
        let mut bytes = zeroize::Zeroizing::new([0u8; 32]);
        getrandom::fill(bytes.as_mut_slice()).map_err(|e| IdentityError::Entropy(e.to_string()))?;
        let seed = SecretSeed::from_bytes(*bytes);
        let mut file = private_file(&path).map_err(|e| match e.kind() {
            std::io::ErrorKind::AlreadyExists => IdentityError::Exists(path.clone()),
            _ => IdentityError::Io { path: path.clone(), source: e },
        })?;
        file.write_all(keyfile::render(&seed).as_bytes()).map_err(io(&path))?;
        file.sync_all().map_err(io(&path))?;
        fs::File::open(data_dir).and_then(|d| d.sync_all()).map_err(io(data_dir))?;
        Ok(Self { keypair: Keypair::from_seed(&seed), seed })
    }

    /// Loads the identity from `data_dir`.
    pub fn load(data_dir: &Path) -> Result<Self, IdentityError> {
        let path = data_dir.join(KEY_FILE);
        let text = zeroize::Zeroizing::new(
            fs::read_to_string(&path).map_err(|source| IdentityError::Io { path: path.clone(), source })?,
        );
        let seed = keyfile::parse(&text).map_err(|source| IdentityError::KeyFile { path, source })?;
        Ok(Self { keypair: Keypair::from_seed(&seed), seed })
    }
}

/// The libp2p keypair that a seed yields (RFC 8032 expansion, as cairn and Malachite).
pub fn libp2p_keypair(seed: &SecretSeed) -> Result<libp2p_identity::Keypair, IdentityError> {
    let bytes = zeroize::Zeroizing::new(*seed.expose());
    libp2p_identity::Keypair::ed25519_from_bytes(*bytes).map_err(|e| IdentityError::Libp2p(e.to_string()))
}

fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt as _;
    fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)
}

fn private_file(path: &Path) -> std::io::Result<fs::File> {
    use std::os::unix::fs::OpenOptionsExt as _;
    fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_load_and_refuse_to_replace() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("node");
        let created = NodeIdentity::create(&data).unwrap();
        let loaded = NodeIdentity::load(&data).unwrap();
        assert_eq!(created.public_key(), loaded.public_key());
        assert!(matches!(NodeIdentity::create(&data), Err(IdentityError::Exists(_))));
        use std::os::unix::fs::PermissionsExt as _;
        let mode = fs::metadata(data.join(KEY_FILE)).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn peer_id_carries_the_same_public_key() {
        let seed = SecretSeed::from_bytes([3; 32]);
        let kp = libp2p_keypair(&seed).unwrap();
        let ed = kp.public().try_into_ed25519().unwrap();
        assert_eq!(ed.to_bytes(), Keypair::from_seed(&seed).public().0);
    }
}
