#![no_main]
//! `cargo fuzz run --features libfuzzer fhir_intake`: see [`cairn_fuzz::fhir_intake`].
libfuzzer_sys::fuzz_target!(|data: &[u8]| cairn_fuzz::fhir_intake(data));
