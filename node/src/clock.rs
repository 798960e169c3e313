//! The node's one clock: Unix milliseconds as `cairn_proto::time` defines them. Code that
//! needs the time of an event takes it as an argument; only edges call [`now_ms`]: the
//! HTTP API (`api::auth::SignedGateway`), the app loop's block time, the erasure
//! coordinator, custodian and retention sweep, and a custodian placing a legal hold
//! (`Records::serve`).
//!
//! The retention clock alone may be pinned by tests
//! (`records::erasure::retention::TEST_CLOCK_ENV`).

pub use cairn_proto::time::now_ms;
