//! Ctrl-C as a request to stop, not an exit: the binary's signal handler calls [`request`];
//! work that can stop cleanly (an export's downloads, a run before its commit) checks
//! [`requested`] and ends with an error carrying [`MESSAGE`], so locks are released, what was
//! fetched is kept for `--resume`, and nothing half-made is published. Once a commit is made,
//! the work after it (cleaning up) finishes first.

use std::sync::atomic::{AtomicBool, Ordering};

static REQUESTED: AtomicBool = AtomicBool::new(false);

/// The text of the error an interrupted operation ends with.
pub const MESSAGE: &str = "interrupted (Ctrl-C)";

/// Asks running work to stop at its next safe point (async-signal-safe: one atomic store).
pub fn request() {
    REQUESTED.store(true, Ordering::SeqCst);
}

/// Forgets a stop asked for, once the work it stopped has ended: a process that goes on (the
/// Python package after `KeyboardInterrupt`) runs its next work normally.
pub fn clear() {
    REQUESTED.store(false, Ordering::SeqCst);
}

/// Whether a stop was asked for.
pub fn requested() -> bool {
    REQUESTED.load(Ordering::SeqCst)
}

/// An error when a stop was asked for.
pub fn check() -> anyhow::Result<()> {
    match requested() {
        true => anyhow::bail!(MESSAGE),
        false => Ok(()),
    }
}

/// Whether an error (anywhere in its chain) is an interrupt.
pub fn is_interrupt(e: &anyhow::Error) -> bool {
    e.chain().any(|c| c.to_string().contains(MESSAGE))
}
