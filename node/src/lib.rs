//! Run a cairn consortium node: the ledger and its consensus, the deletable vault, the
//! record lifecycle, cairn's peer network and the HTTP API.
//!
//! Layers, from the bottom (ADR 014; `.ci/check-deps` enforces the arrows that matter):
//! `ledger`, `vault`, `consensus` → `records` (through its ports) → `chain`, `net`, `api` → `run`
//! (the one place that wires them) → `main.rs`. Cross-cutting: `clock`, `metrics`.

pub mod api;
pub mod audit;
pub mod chain;
pub mod clock;
pub mod consensus;
pub mod harden;
pub mod identity;
pub mod ledger;
pub mod metrics;
pub mod net;
pub mod records;
pub mod run;
pub mod setup;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
pub mod vault;
