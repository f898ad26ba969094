//! The `fhir2parquet` binary: the allocator, and the command line of [`fhir2parquet::cmd`].

use std::process::ExitCode;

/// mimalloc: convert allocates and frees Arrow and Parquet buffers on every thread for every
/// batch, and the system allocator spent ~10% of a conversion's CPU time on it.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

extern "C" {
    /// mimalloc's `mi_option_set` (mimalloc.h), in the mimalloc linked above.
    fn mi_option_set(option: std::ffi::c_int, value: std::ffi::c_long);
}

/// `mi_option_purge_delay` in mimalloc.h (v2 and v3).
const MI_OPTION_PURGE_DELAY: std::ffi::c_int = 15;

/// Memory mimalloc has freed goes back to the system after 100 ms instead of the second its v3
/// waits by default: convert frees a batch's arrays and makes the next one's many times a
/// second, and with the default delay both were held at once. Benchmark, 2 threads, 5 runs
/// each: peak RSS 378 MiB with 1,000 ms, 332 with 100, 322 with 30, 312 with 3; 1.92, 1.94,
/// 2.02 and 2.03 s. `MIMALLOC_PURGE_DELAY` in the environment still decides.
fn tune_allocator() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // SAFETY: sets one integer option of the allocator; any value is valid.
        unsafe { mi_option_set(MI_OPTION_PURGE_DELAY, 100) };
    }
}

fn main() -> ExitCode {
    tune_allocator();
    ExitCode::from(fhir2parquet::cmd::main(std::env::args_os()) as u8)
}
