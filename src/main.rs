//! The `countersign` binary.

use std::process::ExitCode;

use countersign::cli::{parse, run};

/// mimalloc: the webhook builds and drops a JSON tree per review; with glibc's allocator
/// that was a third of its time (benches/webhook.rs, BENCHMARKS.md). The feature
/// `system-allocator` leaves it out, so a heap profiler that hooks malloc (heaptrack) sees
/// every allocation.
#[cfg(not(feature = "system-allocator"))]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    run(parse())
}
