#![no_main]
//! `cargo fuzz run --features libfuzzer genesis`: see [`cairn_fuzz::genesis`].
libfuzzer_sys::fuzz_target!(|data: &[u8]| cairn_fuzz::genesis(data));
