#![no_main]
//! `cargo fuzz run --features libfuzzer block`: see [`cairn_fuzz::block`].
libfuzzer_sys::fuzz_target!(|data: &[u8]| cairn_fuzz::block(data));
