//! Handing freed memory back to the system after many actors stopped.
//!
//! glibc's malloc keeps freed memory in its arenas (one per worker thread)
//! and returns only the top of each heap, so after thousands of actors stop
//! the resident size barely moves (measured by the benchmark's memory figure).
//! `malloc_trim` releases the free pages of every arena. Other allocators
//! (musl, macOS) return memory on their own, so there it does nothing.

/// Called after a sweep stopped actors (rare, and off the request path).
pub fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks the allocator's own free lists; it takes
    // the arena locks itself and may be called from any thread at any time.
    unsafe {
        libc::malloc_trim(0);
    }
}
