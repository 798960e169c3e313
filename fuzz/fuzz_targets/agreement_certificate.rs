#![no_main]
//! `cargo fuzz run --features libfuzzer agreement_certificate`: see [`cairn_fuzz::agreement_certificate`].
libfuzzer_sys::fuzz_target!(|data: &[u8]| cairn_fuzz::agreement_certificate(data));
