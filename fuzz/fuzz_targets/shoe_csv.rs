#![no_main]
//! `cargo fuzz run --features libfuzzer shoe_csv`: see [`cairn_fuzz::shoe_csv`].
libfuzzer_sys::fuzz_target!(|data: &[u8]| cairn_fuzz::shoe_csv(data));
