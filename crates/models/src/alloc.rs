//! glibc malloc settings for training loops: keep freed memory in the heap.
//!
//! Candle allocates a fresh buffer for every tensor. Activations of a batch-128 CNN are several
//! MB each, above glibc's (dynamic) mmap threshold, so each is an `mmap` whose pages fault in on
//! first touch and go back to the kernel on free: page faults were ~29% of a SimpleCNN
//! training step's CPU time here. With large blocks served from the heap and the heap never
//! trimmed, the same pages are reused step after step (SimpleCNN forward+backward ~5-15%
//! faster on this machine; `bench_step --tuned-malloc` applies the same to PyTorch). Peak
//! memory is unchanged; freed memory is kept for reuse instead of returned.

/// The largest mmap threshold glibc accepts on 64-bit targets (32 MiB).
const MMAP_THRESHOLD: i32 = 32 << 20;

/// Serves blocks up to 32 MiB from the heap and never trims it. Call once at the start of a
/// process that trains or measures; returns whether glibc accepted both settings (always false
/// off glibc, where it does nothing).
pub fn keep_freed_memory() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallopt only changes allocator parameters; it is safe to call at any time.
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1
                && libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX) == 1
        }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}

#[cfg(test)]
mod tests {
    #[test]
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    fn glibc_accepts_the_settings() {
        assert!(super::keep_freed_memory());
        // Memory still works, large blocks included.
        let v = vec![1u8; 40 << 20];
        assert_eq!(v.iter().map(|&b| b as usize).sum::<usize>(), 40 << 20);
    }
}
