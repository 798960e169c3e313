#![no_main]
//! `cargo fuzz run --features libfuzzer consent_document`: see [`cairn_fuzz::consent_document`].
libfuzzer_sys::fuzz_target!(|data: &[u8]| cairn_fuzz::consent_document(data));
