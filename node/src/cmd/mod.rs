//! The commands of the `cairn-node` binary that are tools around a node rather than the
//! node itself: `dev` (a working consortium on this machine) and its `--demo` gateway.
//! They live in the binary, where `anyhow` is used, not in the library.

pub mod demo;
pub mod dev;
