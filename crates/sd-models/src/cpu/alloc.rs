//! The allocator setting the CPU path wants, for front ends to apply once at start.
//!
//! Why: glibc's `malloc` maps every block above its mmap threshold (128 KiB at first) afresh and
//! unmaps it when freed, and the threshold only grows as far as the sizes it has seen freed. A
//! model's activations are megabytes each and every op allocates its output, so every op's output
//! was a fresh mapping whose pages the kernel zeroes on first touch: 6 % of a bf16 UNet step in
//! `clear_page` alone. Keeping blocks up to 32 MiB in the heap, and freed memory in the process
//! (up to 1 GiB), made the 32×32 UNet step 1.20× (f32) and 1.28× (bf16) faster on a Zen 5 EPYC,
//! at the same peak memory (`cargo xtask bench --component unet`, BENCHMARKS.md).

/// Keeps freed memory in the process for reuse (glibc on Linux; elsewhere nothing to do).
/// Process-wide: called by the binaries' `main`, never by the libraries' own code.
pub fn reuse_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: `mallopt` only changes the allocator's thresholds; it is safe to call at any time.
    unsafe {
        // 32 MiB is the most glibc accepts for the threshold on 64-bit targets.
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 1 << 30);
        libc::mallopt(libc::M_TOP_PAD, 256 << 20);
    }
}
