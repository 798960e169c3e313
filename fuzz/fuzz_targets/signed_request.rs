#![no_main]
//! `cargo fuzz run --features libfuzzer signed_request`: see [`cairn_fuzz::signed_request`].
libfuzzer_sys::fuzz_target!(|data: &[u8]| cairn_fuzz::signed_request(data));
