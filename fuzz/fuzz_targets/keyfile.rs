#![no_main]
//! `cargo fuzz run --features libfuzzer keyfile`: see [`cairn_fuzz::keyfile`].
libfuzzer_sys::fuzz_target!(|data: &[u8]| cairn_fuzz::keyfile(data));
