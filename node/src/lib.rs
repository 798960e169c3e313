//! Run a cairn consortium node: its identity, its setup commands, and (as the issues
//! land) the ledger, the vault, the peer protocols and the HTTP API.

pub mod audit;
pub mod consensus;
pub mod harden;
pub mod identity;
pub mod ledger;
pub mod records;
pub mod run;
pub mod setup;
pub mod vault;
