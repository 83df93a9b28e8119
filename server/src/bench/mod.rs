//! Benchmarks that print figures (`pie-ls bench ...`). Targets live here, measured side by side in one run, never
//! in timed unit tests.

pub mod alloc;
pub mod backends;
pub mod completion;
pub mod decode;
pub mod firstread;
pub mod infill;
pub mod keystroke;
pub mod perf;
pub mod selfdebug;
pub mod soak;
pub mod synth;
pub mod typing;

/// Resident set size of this process in bytes (Linux `/proc/self/statm`; 0 elsewhere).
pub fn resident_bytes() -> usize {
    let Ok(statm) = std::fs::read_to_string("/proc/self/statm") else { return 0 };
    let pages: usize = statm.split_whitespace().nth(1).and_then(|it| it.parse().ok()).unwrap_or(0);
    pages * 4096
}

/// The `q`-quantile of `samples` (sorted in place).
pub fn quantile(samples: &mut [f64], q: f64) -> f64 {
    if samples.is_empty() {
        return f64::NAN;
    }
    samples.sort_by(|a, b| a.total_cmp(b));
    let idx = ((samples.len() - 1) as f64 * q).round() as usize;
    samples[idx]
}
