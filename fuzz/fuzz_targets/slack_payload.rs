//! cargo-fuzz target: see [`flowgate_fuzz::slack_payload`].
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| flowgate_fuzz::slack_payload(data));
