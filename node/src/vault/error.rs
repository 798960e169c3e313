//! Vault errors: rejections of a caller's request (nothing changed) apart from fatal
//! failures of the disk or of the store's integrity (stop the node; never limp on).

use cairn_proto::record::RecordId;

/// Why a vault operation did not happen.
#[derive(Debug, Clone, thiserror::Error)]
pub enum VaultError {
    /// No live record has this id (never stored, or erased).
    #[error("no record {0}")]
    NotFound(RecordId),
    /// No live subject has this reference.
    #[error("no records of this subject")]
    SubjectNotFound,
    /// The request is malformed; nothing was changed.
    #[error("invalid request: {0}")]
    Invalid(String),
    /// The vault cannot hold more records with this configuration.
    #[error("vault is full ({0} slots)")]
    Full(u64),
    /// The disk, the OS or the store's integrity failed. The node must stop.
    #[error("vault failure: {0}")]
    Fatal(String),
}

impl VaultError {
    /// True for failures that must stop the node.
    pub fn is_fatal(&self) -> bool {
        matches!(self, VaultError::Fatal(_))
    }
}

impl From<std::io::Error> for VaultError {
    fn from(e: std::io::Error) -> Self {
        VaultError::Fatal(format!("I/O: {e}"))
    }
}

impl From<sled::Error> for VaultError {
    fn from(e: sled::Error) -> Self {
        VaultError::Fatal(format!("sled: {e}"))
    }
}

impl From<cairn_proto::encoding::EncodeError> for VaultError {
    fn from(e: cairn_proto::encoding::EncodeError) -> Self {
        VaultError::Fatal(e.to_string())
    }
}
