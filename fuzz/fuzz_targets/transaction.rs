#![no_main]
//! `cargo fuzz run --features libfuzzer transaction`: see [`cairn_fuzz::transaction`].
libfuzzer_sys::fuzz_target!(|data: &[u8]| cairn_fuzz::transaction(data));
