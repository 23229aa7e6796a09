//! The engine scheduler: which vGPU's work a physical GPU's engine runs
//! next, and for how long.
//!
//! One [`EngineScheduler`] per physical GPU, under one of three
//! [`SchedulingPolicy`]s with a [`TimeSlice`]. It is the policy only: no
//! threads, no sockets, no clock. The GPU's runner thread passes the time
//! of every call in [`Nanos`], asks [`EngineScheduler::next`] for a
//! [`Decision`], runs the granted vGPU's work until its budget is spent
//! (stopping at the engine's next preemption boundary) and reports back
//! with [`EngineScheduler::finish`]. Each vGPU earns engine time at its
//! share's rate and pays for what it runs (its credit); a vGPU that gets
//! work within its share runs at the next turn boundary. Per vGPU it
//! counts run, wait and idle time ([`SchedStats`]).
//!
//! `docs/scheduling.md` states the policies, the credit rules and the
//! latency bounds; the tests in this module check them in simulated time
//! (`tests.rs`: the rules and the shares; `latency.rs`: the waits;
//! `random_calls.rs`: arbitrary call sequences; `figures.rs` prints the
//! documented figures).

// Pure bookkeeping: nothing here touches host memory.
#![forbid(unsafe_code)]

mod engine;
mod policy;
mod stats;
mod time;

#[cfg(test)]
mod figures;
#[cfg(test)]
mod latency;
#[cfg(test)]
mod random_calls;
#[cfg(test)]
mod sim;
#[cfg(test)]
mod tests;

use thiserror::Error;

pub use engine::EngineScheduler;
pub use policy::SchedulingPolicy;
pub use stats::{SchedStats, jain_index};
pub use time::{Nanos, TimeSlice};

/// What the engine does next.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Decision<K> {
    /// Run `key`'s work for up to `budget`, then call `finish`. The engine
    /// stops at its first preemption boundary at or after the budget, so
    /// the turn may run a little over; the vGPU pays for the overrun from
    /// its credit like for the rest of its turn.
    Run {
        /// The vGPU whose work runs.
        key: K,
        /// How long it may run: a time slice for a new turn (0 when asked
        /// again after the budget is spent: stop at the next boundary).
        budget: Nanos,
    },
    /// Run nothing until `until`, or until a vGPU gets work
    /// (`set_runnable`), whichever comes first; then ask again. `None`:
    /// nobody has work, so only new work ends the wait. `Some` (share
    /// policies only): every vGPU with work has had more than its share,
    /// and the first of them will be back within it at `until`.
    Idle {
        /// When to ask again at the latest.
        until: Option<Nanos>,
    },
}

/// A refused configuration value or scheduler call.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum SchedError {
    /// `time_slice_ms` outside `TimeSlice::MIN_MS..=TimeSlice::MAX_MS`.
    #[error(
        "time slice of {ms} ms is out of range: it must be {} to {} ms",
        TimeSlice::MIN_MS,
        TimeSlice::MAX_MS
    )]
    TimeSliceOutOfRange {
        /// The refused value.
        ms: u64,
    },
    /// A `scheduler` name that is not a policy.
    #[error("unknown scheduler `{0}`: expected best-effort, equal-share or fixed-share")]
    UnknownPolicy(String),
    /// `register` of a vGPU that is registered.
    #[error("the vGPU is already registered with this engine's scheduler")]
    AlreadyRegistered,
    /// A call naming a vGPU that is not registered.
    #[error("the vGPU is not registered with this engine's scheduler")]
    NotRegistered,
    /// `finish` for a vGPU that holds no turn.
    #[error("the vGPU holds no turn on this engine")]
    NoTurn,
}
