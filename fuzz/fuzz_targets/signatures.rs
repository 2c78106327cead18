//! cargo-fuzz target: see [`flowgate_fuzz::signatures`].
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| flowgate_fuzz::signatures(data));
