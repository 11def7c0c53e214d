//! Process CPU time, shared by the benchmark examples (`#[path]`-included): on this shared
//! machine wall-time medians varied 2× between identical runs, CPU time far less.

/// Process CPU time in ms.
pub fn cpu_ms() -> f64 {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid clock id and a pointer to a live timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut t) };
    t.tv_sec as f64 * 1e3 + t.tv_nsec as f64 * 1e-6
}
