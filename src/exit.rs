//! Exit codes of the commands, as documented in the README.

/// Everything converted.
pub const OK: i32 = 0;
/// A fatal error: nothing was published.
pub const FATAL: i32 = 1;
/// Bad command-line usage (clap's own code).
pub const USAGE: i32 = 2;
/// The run finished, but some lines were rejected, an input was damaged, a manifest count
/// did not match, or the server reported files it could not export (`--allow-partial`).
pub const WITH_REJECTS: i32 = 3;
/// Stopped by Ctrl-C (128 + SIGINT): nothing was published.
pub const INTERRUPTED: i32 = 130;
