#![no_main]
//! `cargo fuzz run --features libfuzzer erasure_certificate`: see [`cairn_fuzz::erasure_certificate`].
libfuzzer_sys::fuzz_target!(|data: &[u8]| cairn_fuzz::erasure_certificate(data));
