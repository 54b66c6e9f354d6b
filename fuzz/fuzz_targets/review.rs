//! An AdmissionReview body, as the webhook receives it (see `fuzz/harness.rs`).

#![no_main]

#[path = "../harness.rs"]
mod harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| harness::review(data));
