//! Define every format a peer or a regulator verifies: canonical encoding, domain-separated
//! hashing and signatures, Merkle proofs, records, batch commitments, block headers,
//! erasure receipts, membership and the genesis file.
//!
//! Architecture invariant: this crate does no I/O, spawns nothing and depends on no
//! runtime crate (tokio, libp2p, sled, redb, axum). Time and randomness are inputs
//! (`time::now_ms` is for the edges that read the clock, never called in here).

pub mod access;
pub mod batch;
pub mod bytes;
pub mod consensus;
pub mod consent;
pub mod encoding;
pub mod erasure;
pub mod export;
pub mod genesis;
pub mod hash;
pub mod identity;
pub mod keyfile;
pub mod ledger;
pub mod membership;
pub mod merkle;
pub mod policy;
pub mod receipt;
pub mod record;
pub mod request;
pub mod signed;
pub mod subject;
pub mod time;
pub mod transaction;
pub mod version;

pub use hash::Hash32;
pub use identity::{KeyId, Keypair, PublicKey, Rules, SecretSeed, Signature};
