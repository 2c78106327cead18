//! cargo-fuzz target: see [`flowgate_fuzz::api_bodies`].
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| flowgate_fuzz::api_bodies(data));
