//! Locking helpers shared by the crate's internally synchronised types.

use std::sync::{Mutex, MutexGuard, PoisonError};

/// Locks `mutex`, ignoring poisoning: every critical section in this crate
/// leaves the protected state consistent before anything that could panic,
/// so a panic elsewhere while holding the lock does not corrupt it, and
/// refusing all later VRAM or instance operations would only spread the
/// failure to other vGPUs.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
