//! Evicted KV caches give their memory back to the system.
//!
//! llama.cpp allocates a context's KV cache and compute buffers with `posix_memalign` (glibc's `malloc`). glibc
//! serves a block of at least its mmap threshold from its own mapping, which `free` unmaps; but the threshold starts
//! at 128 KiB and rises to the size of each mapped block freed (up to 32 MiB). After the first context is dropped,
//! every buffer under 32 MiB (the test model's warm cache, many compute buffers) comes from the heap, where a freed
//! block in the middle stays resident. A server that evicts and rebuilds warm caches all day then grows: `pie-ls
//! bench soak --minutes 2` (maxWarmDocuments 4, caches evicted and rebuilt all along) peaked at 562 MiB (here) and
//! 612 MiB (a CI machine) after its warm-up against 474 MiB during it; with this fixed threshold, 497-503 MiB against
//! 446-462. A fixed threshold (which also turns the rising one off) keeps big blocks mapped, and a mapped block is
//! resident only where it was written: a cache's unused cells cost nothing.

/// Blocks of this size or more are mapped on their own. Above the logits rows one decode copies out (the
/// default model's 151,936-entry vocabulary: 0.6 MiB a row, three rows with a draft of two), so that decoding
/// maps nothing per token; below the KV cache of any real prompt (the test model's 23 KiB a token) and most
/// compute buffers.
pub const MMAP_THRESHOLD: usize = 4 << 20;

/// What `return_freed_buffers` did, for the log once logging is up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeapSetting {
    /// The threshold is `MMAP_THRESHOLD`.
    Fixed,
    /// The user's environment chose (`MALLOC_MMAP_THRESHOLD_`); glibc read it at start.
    Users(String),
    /// Not glibc, or `mallopt` refused: the allocator's default stays.
    Default,
}

/// Call early in `main`, before llama.cpp allocates. Keeps a user's `MALLOC_MMAP_THRESHOLD_`.
pub fn return_freed_buffers() -> HeapSetting {
    if let Some(v) = std::env::var_os("MALLOC_MMAP_THRESHOLD_") {
        return HeapSetting::Users(format!("MALLOC_MMAP_THRESHOLD_={}", v.to_string_lossy()));
    }
    set_threshold()
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn set_threshold() -> HeapSetting {
    // SAFETY: mallopt only sets an allocator parameter; glibc takes its own lock.
    match unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD as libc::c_int) } {
        1 => HeapSetting::Fixed,
        _ => HeapSetting::Default,
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn set_threshold() -> HeapSetting {
    HeapSetting::Default
}

impl HeapSetting {
    /// One line for the log.
    pub fn describe(&self) -> String {
        match self {
            HeapSetting::Fixed => {
                format!("blocks of {} MiB or more are mapped on their own, so freed caches go back to the system", MMAP_THRESHOLD >> 20)
            }
            HeapSetting::Users(chosen) => format!("the allocator's mmap threshold is the environment's ({chosen})"),
            HeapSetting::Default => "the allocator's mmap threshold is its default (not glibc, or mallopt refused)".into(),
        }
    }
}
