//! cargo-fuzz target: see [`flowgate_fuzz::definition`].
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| flowgate_fuzz::definition(data));
