//! A file of ApprovalPolicies, as `countersign check --policy` reads it (see `fuzz/harness.rs`).

#![no_main]

#[path = "../harness.rs"]
mod harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| harness::policy(data));
