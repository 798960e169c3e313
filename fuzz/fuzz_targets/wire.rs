#![no_main]
//! `cargo fuzz run --features libfuzzer wire`: see [`cairn_fuzz::wire`].
libfuzzer_sys::fuzz_target!(|data: &[u8]| cairn_fuzz::wire(data));
