#![no_main]
//! `cargo fuzz run --features libfuzzer consensus`: see [`cairn_fuzz::consensus`].
libfuzzer_sys::fuzz_target!(|data: &[u8]| cairn_fuzz::consensus(data));
