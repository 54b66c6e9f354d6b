//! The fuzz campaign's seeds and crash reproducers (`fuzz/seeds`, `fuzz/regressions`),
//! replayed on stable through the very harness the fuzz targets run (`fuzz/harness.rs`):
//! every file must come through without a panic and within its time. The campaign itself
//! is `fuzz/run` (nightly, outside CI; docs/security.md, "Faults counted").

#[path = "../fuzz/harness.rs"]
mod harness;

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The longest one file may take here (a debug build): a seed is small, and the fuzz
/// runs allow 10 s for a 64 KiB input of an optimized build.
const PER_FILE: Duration = Duration::from_secs(3);

fn files(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .map(|entry| entry.expect("a directory entry").path())
        .filter(|path| path.is_file())
        .collect();
    files.sort();
    files
}

/// Every seed and regression of `target` through `run`; the failures listed by file.
fn replay(target: &str, run: fn(&[u8])) {
    let fuzz = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let seeds = files(&fuzz.join("seeds").join(target));
    assert!(seeds.len() >= 10, "{target}: only {} seeds", seeds.len());
    let regressions = files(&fuzz.join("regressions").join(target));
    let mut failures = Vec::new();
    for file in seeds.iter().chain(&regressions) {
        let bytes = std::fs::read(file).expect("a seed file");
        let started = Instant::now();
        if catch_unwind(AssertUnwindSafe(|| run(&bytes))).is_err() {
            failures.push(format!("{}: panicked", file.display()));
        }
        let took = started.elapsed();
        if took > PER_FILE {
            failures.push(format!("{}: took {took:?}", file.display()));
        }
    }
    assert!(failures.is_empty(), "{target}:\n{}", failures.join("\n"));
}

#[test]
fn review_seeds_and_regressions_pass_the_harness() {
    replay("review", harness::review);
}

#[test]
fn policy_seeds_and_regressions_pass_the_harness() {
    replay("policy", harness::policy);
}

#[test]
fn manifest_seeds_and_regressions_pass_the_harness() {
    replay("manifest", harness::manifest);
}

/// The replay runs the seeds and notices a panic: a target that panics on the first file
/// it is given fails it.
#[test]
#[should_panic(expected = "panicked")]
fn a_panic_fails_the_replay() {
    use std::sync::atomic::{AtomicBool, Ordering};
    static PANICKED: AtomicBool = AtomicBool::new(false);
    replay("manifest", |_| {
        if !PANICKED.swap(true, Ordering::SeqCst) {
            panic!("planted");
        }
    });
}
