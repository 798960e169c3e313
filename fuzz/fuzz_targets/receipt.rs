#![no_main]
//! `cargo fuzz run --features libfuzzer receipt`: see [`cairn_fuzz::receipt`].
libfuzzer_sys::fuzz_target!(|data: &[u8]| cairn_fuzz::receipt(data));
