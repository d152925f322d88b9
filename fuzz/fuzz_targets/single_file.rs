//! libFuzzer target: `harness::single_file` (see `fuzz/harness.rs`).
#![no_main]

#[path = "../harness.rs"]
#[allow(dead_code)]
mod harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = harness::single_file(data);
});
