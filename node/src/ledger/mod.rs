//! The ledger: pure state derived from decided blocks, and (with the consensus issue) the
//! redb store of blocks and their commit certificates.

pub mod state;
pub mod store;

#[cfg(test)]
mod tests;

pub use state::{BlockError, LedgerLimits, LedgerState, TxError};
pub use store::{BlockStore, StoreError};
