//! The block store: every decided block with its commit certificate, in redb (ADR 003).
//! Heights are contiguous from 1; the ledger state is rebuilt by replaying them, which is
//! also how a tampered store is caught: start-up refuses a store whose block at some
//! height does not decode, does not follow its predecessor, or whose certificate does
//! not verify, and names that height.

use std::path::Path;

use cairn_proto::genesis::Genesis;
use cairn_proto::transaction::Block;
use cairn_proto::version::{Versioned, decode_versioned};
use redb::{ReadableDatabase as _, ReadableTable as _, TableDefinition};
use serde::{Deserialize, Serialize};

use super::state::{LedgerLimits, LedgerState};

const BLOCKS: TableDefinition<u64, &[u8]> = TableDefinition::new("blocks");

/// Largest stored block the store will decode.
const STORED_LIMIT: usize = 64 << 20;

#[derive(Serialize, Deserialize)]
struct StoredBlock {
    version: u8,
    block: Block,
    #[serde(with = "serde_bytes")]
    certificate: Vec<u8>,
}

impl Versioned for StoredBlock {
    const VERSION: u8 = 1;
    fn version(&self) -> u8 {
        self.version
    }
}

/// Why the store could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The store holds something at this height that is not the chain's block.
    #[error("block store is corrupt or tampered with at height {height}: {reason}")]
    Corrupt {
        /// First bad height.
        height: u64,
        /// What is wrong.
        reason: String,
    },
    /// Blocks must be appended in height order.
    #[error("expected height {expected}, got {got}")]
    OutOfOrder {
        /// Next height.
        expected: u64,
        /// Given.
        got: u64,
    },
    /// The database failed.
    #[error("block store: {0}")]
    Db(String),
}

fn db_err(e: impl std::fmt::Display) -> StoreError {
    StoreError::Db(e.to_string())
}

/// Decided blocks and their certificates.
pub struct BlockStore {
    db: redb::Database,
}

impl std::fmt::Debug for BlockStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BlockStore")
    }
}

impl BlockStore {
    /// Opens or creates the store at `path`.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let db =
            redb::Database::create(path).map_err(|e| StoreError::Db(format!("cannot open {}: {e}", path.display())))?;
        let txn = db.begin_write().map_err(db_err)?;
        txn.open_table(BLOCKS).map_err(db_err)?;
        txn.commit().map_err(db_err)?;
        Ok(Self { db })
    }

    /// Height of the last stored block (0 if none).
    pub fn last_height(&self) -> Result<u64, StoreError> {
        let txn = self.db.begin_read().map_err(db_err)?;
        let table = txn.open_table(BLOCKS).map_err(db_err)?;
        Ok(table.last().map_err(db_err)?.map_or(0, |(k, _)| k.value()))
    }

    /// Appends the next block and its certificate; durable when it returns.
    pub fn append(&self, block: &Block, certificate: &[u8]) -> Result<(), StoreError> {
        let expected = self.last_height()? + 1;
        if block.header.height != expected {
            return Err(StoreError::OutOfOrder { expected, got: block.header.height });
        }
        let stored = StoredBlock { version: 1, block: block.clone(), certificate: certificate.to_vec() };
        let bytes = cairn_proto::encoding::encode(&stored).map_err(db_err)?;
        let txn = self.db.begin_write().map_err(db_err)?;
        txn.open_table(BLOCKS).map_err(db_err)?.insert(expected, bytes.as_slice()).map_err(db_err)?;
        txn.commit().map_err(db_err)
    }

    /// The block at `height` and its certificate.
    pub fn get(&self, height: u64) -> Result<Option<(Block, Vec<u8>)>, StoreError> {
        let txn = self.db.begin_read().map_err(db_err)?;
        let table = txn.open_table(BLOCKS).map_err(db_err)?;
        let Some(raw) = table.get(height).map_err(db_err)? else { return Ok(None) };
        let stored: StoredBlock = decode_versioned(raw.value(), STORED_LIMIT)
            .map_err(|e| StoreError::Corrupt { height, reason: e.to_string() })?;
        Ok(Some((stored.block, stored.certificate)))
    }

    /// Rebuilds the ledger state by replaying every stored block, checking each one
    /// against the state so far and its certificate with `verify_certificate`.
    pub fn replay(
        &self,
        genesis: &Genesis,
        limits: LedgerLimits,
        verify_certificate: impl Fn(&LedgerState, &Block, &[u8]) -> Result<(), String>,
    ) -> Result<LedgerState, StoreError> {
        let mut state = LedgerState::from_genesis(genesis, limits).map_err(db_err)?;
        let last = self.last_height()?;
        for height in 1..=last {
            let corrupt = |reason: String| StoreError::Corrupt { height, reason };
            let (block, certificate) = self.get(height)?.ok_or_else(|| corrupt("missing".into()))?;
            if block.header.height != height {
                return Err(corrupt(format!("holds the block of height {}", block.header.height)));
            }
            verify_certificate(&state, &block, &certificate).map_err(|e| corrupt(format!("certificate: {e}")))?;
            state.apply(&block).map_err(|e| corrupt(e.to_string()))?;
        }
        Ok(state)
    }

    /// Test hook: overwrites the stored bytes at `height`.
    #[cfg(test)]
    pub(crate) fn overwrite_raw(&self, height: u64, edit: impl FnOnce(&mut Vec<u8>)) {
        let mut bytes = {
            let txn = self.db.begin_read().unwrap_or_else(|e| panic!("{e}"));
            let table = txn.open_table(BLOCKS).unwrap_or_else(|e| panic!("{e}"));
            table.get(height).unwrap_or_else(|e| panic!("{e}")).map(|v| v.value().to_vec()).unwrap_or_default()
        };
        edit(&mut bytes);
        let txn = self.db.begin_write().unwrap_or_else(|e| panic!("{e}"));
        txn.open_table(BLOCKS)
            .unwrap_or_else(|e| panic!("{e}"))
            .insert(height, bytes.as_slice())
            .unwrap_or_else(|e| panic!("{e}"));
        txn.commit().unwrap_or_else(|e| panic!("{e}"));
    }
}
