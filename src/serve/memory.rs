//! How a long-running `serve` keeps its resident memory close to what it uses.
//!
//! Each setting is measured at the scale benchmark's 10,000 approvals, and its cost in the
//! webhook benchmark (BENCHMARKS.md); each is best effort, and a process that cannot
//! apply one keeps the default.

/// How long mimalloc keeps memory freed in a page before it gives it back to the kernel,
/// in milliseconds. Its default is 1,000; at 10,000 approvals a `serve` at rest then held
/// 96 MiB where 10 ms gave 90 and 0 gave 84. 0 costs the webhook a fifth of its
/// throughput (a system call per page emptied); 10 ms measured the same as the default.
#[cfg(not(feature = "system-allocator"))]
const PURGE_DELAY_MS: std::ffi::c_long = 10;

/// mimalloc purges what is due only from inside the allocator, on the thread that
/// allocates: at rest, with little allocated, freed memory stays. [`collect_at_rest`]
/// asks it this often.
#[cfg(not(feature = "system-allocator"))]
const COLLECT_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

/// Apply the process-wide settings; call before any thread starts (the runtime's
/// included).
pub fn tune() {
    no_transparent_huge_pages();
    purge_freed_memory_promptly();
}

/// Keep this process's memory in 4 KiB pages. mimalloc asks the kernel for transparent
/// huge pages for its segments (where THP is `madvise` or `always`), and a 2 MiB page is
/// resident as a whole however little of it is used: at 10,000 approvals that was a third
/// of the resident memory (BENCHMARKS.md). A kernel without the call keeps its default.
fn no_transparent_huge_pages() {
    #[cfg(target_os = "linux")]
    if let Err(error) = rustix::thread::disable_transparent_huge_pages(true) {
        tracing::debug!(%error, "transparent huge pages could not be turned off; the kernel's default stays");
    }
}

/// `mi_option_purge_delay` in mimalloc v3's `mi_option_t` (include/mimalloc.h): the Rust
/// binding names only some options. The test below pins it to v3's default.
#[cfg(not(feature = "system-allocator"))]
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// An operator's own `MIMALLOC_PURGE_DELAY` wins.
fn purge_freed_memory_promptly() {
    // Without mimalloc (the `system-allocator` feature, for heap profiling) there is
    // nothing to set.
    #[cfg(not(feature = "system-allocator"))]
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // SAFETY: `mi_option_set` stores an integer in mimalloc's option table; no pointer
        // crosses, and any value of this option is valid. It is not thread safe: `tune`
        // runs before the runtime starts any thread.
        unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, PURGE_DELAY_MS) };
    }
}

/// Give back, every [`COLLECT_EVERY`], the freed memory whose purge delay has passed;
/// runs until dropped.
pub async fn collect_at_rest() {
    #[cfg(not(feature = "system-allocator"))]
    {
        let mut every = tokio::time::interval(COLLECT_EVERY);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            every.tick().await;
            // SAFETY: `mi_collect(false)` frees the calling thread's own retired pages and
            // purges the arenas' expired ranges (shared bitmaps it updates atomically); it
            // is made to be called from any thread at any time.
            unsafe { libmimalloc_sys::mi_collect(false) };
        }
    }
}

#[cfg(all(test, not(feature = "system-allocator")))]
mod tests {
    use super::*;

    #[test]
    fn the_option_set_is_mimallocs_purge_delay() {
        if std::env::var_os("MIMALLOC_PURGE_DELAY").is_some() {
            return;
        }
        // SAFETY: reads an integer from mimalloc's option table; this test is the only
        // one in the process that touches it.
        let default = unsafe { libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY) };
        assert_eq!(default, 1000, "mimalloc v3's purge delay default, in ms");
    }
}
