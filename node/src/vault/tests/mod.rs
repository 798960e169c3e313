//! Vault tests.
