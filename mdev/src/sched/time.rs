//! Virtual time and the time slice.
//!
//! The scheduler never reads a clock: its caller passes the time of every
//! call as [`Nanos`], so the policy is deterministic and testable by work
//! counted in virtual time.

use std::fmt;

use super::SchedError;

/// A point or a span of time in nanoseconds.
///
/// As a point it counts from any fixed origin the caller chooses (the
/// runner thread uses a monotonic clock); the scheduler only compares and
/// subtracts points.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Nanos(pub u64);

impl Nanos {
    /// No time at all.
    pub const ZERO: Self = Self(0);

    /// `us` microseconds (saturating at `u64::MAX` ns).
    pub const fn from_micros(us: u64) -> Self {
        Self(us.saturating_mul(1_000))
    }

    /// `ms` milliseconds (saturating at `u64::MAX` ns).
    pub const fn from_millis(ms: u64) -> Self {
        Self(ms.saturating_mul(1_000_000))
    }
}

impl fmt::Display for Nanos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ns", self.0)
    }
}

/// How long one turn lasts (before the engine's next preemption boundary)
/// and how much credit a vGPU with no work keeps: whole milliseconds,
/// `MIN_MS..=MAX_MS`.
///
/// Only [`TimeSlice::from_millis`] builds one, so a `TimeSlice` in hand is
/// always in range.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TimeSlice {
    ms: u64,
}

impl TimeSlice {
    /// Shortest slice: below 1 ms the cost of switching the engine between
    /// vGPUs' contexts would be a visible part of every turn.
    pub const MIN_MS: u64 = 1;
    /// Longest slice: with more, one vGPU's turn is a stall other guests'
    /// compositors can see (two frames at 60 Hz is 33 ms).
    pub const MAX_MS: u64 = 30;
    /// The slice when the configuration names none.
    pub const DEFAULT_MS: u64 = 2;

    /// A slice of `ms` milliseconds, refused outside `MIN_MS..=MAX_MS`.
    pub const fn from_millis(ms: u64) -> Result<Self, SchedError> {
        if ms < Self::MIN_MS || ms > Self::MAX_MS {
            return Err(SchedError::TimeSliceOutOfRange { ms });
        }
        Ok(Self { ms })
    }

    /// The slice in milliseconds.
    pub const fn millis(self) -> u64 {
        self.ms
    }

    /// The slice in nanoseconds.
    pub const fn nanos(self) -> Nanos {
        Nanos::from_millis(self.ms)
    }
}

impl Default for TimeSlice {
    fn default() -> Self {
        Self {
            ms: Self::DEFAULT_MS,
        }
    }
}

impl fmt::Display for TimeSlice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ms", self.ms)
    }
}
