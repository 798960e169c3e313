//! Talk to cairn nodes and verify what they return offline; the library behind the
//! `cairn` command.

pub mod access;
pub mod admin;
pub mod consent;
pub mod csv;
pub mod export;
pub mod gateway;
pub mod http;
pub mod keys;
pub mod live;
pub mod verify;
