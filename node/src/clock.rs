//! The node's one clock: Unix milliseconds as `cairn_proto::time` defines them. Code that
//! needs the time of an event takes it as an argument; only edges (HTTP handlers, the
//! erasure coordinator and custodian, the app loop's block time) call [`now_ms`].
//!
//! The retention clock alone may be pinned by tests
//! (`records::erasure::retention::TEST_CLOCK_ENV`).

pub use cairn_proto::time::now_ms;
