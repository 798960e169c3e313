//! The Malachite application: cairn's context types (heights, the ed25519 validator set
//! from genesis, the block as the decided value), and its signer and verifier. Malachite
//! drives the protocol; nothing here decides anything by itself (DESIGN.md §6).

pub mod codec;
pub mod context;
pub mod signing;

#[cfg(test)]
mod tests;

pub use context::{
    Address, BlockId, BlockValue, CairnContext, Height, Proposal, ProposalPart, Validator, ValidatorSet, Vote,
};
