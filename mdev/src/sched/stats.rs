//! What the scheduler counts per vGPU, and the fairness measure the tests
//! and benchmarks judge shares by.

/// Where one vGPU's time went since it was registered, in nanoseconds of
/// the caller's virtual time.
///
/// Every nanosecond between registration and the latest time the scheduler
/// was given is in exactly one of `run_ns`, `wait_ns` and `idle_ns`, so
/// they sum to the time the vGPU has been registered.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct SchedStats {
    /// Time its work held the engine (from a `Run` decision to its
    /// `finish`), overruns included.
    pub run_ns: u64,
    /// Time it had work but did not hold the engine: another vGPU ran, the
    /// engine idled because it had had its share (share policies), or the
    /// runner had not yet asked for the next decision.
    pub wait_ns: u64,
    /// Time it had no work and did not hold the engine.
    pub idle_ns: u64,
    /// Time its turns ran past their budget (a time slice); paid for from
    /// its credit like the rest of the turn.
    pub overrun_ns: u64,
    /// Turns it was granted (`Run` decisions).
    pub turns: u64,
}

impl SchedStats {
    /// Time since registration: `run_ns + wait_ns + idle_ns`.
    pub const fn elapsed_ns(&self) -> u64 {
        self.run_ns
            .saturating_add(self.wait_ns)
            .saturating_add(self.idle_ns)
    }
}

/// Jain's fairness index of non-negative amounts (e.g. each vGPU's run
/// time): `(Σx)² / (n·Σx²)`, 1.0 when all are equal, down to `1/n` when
/// one holds everything.
///
/// An empty list and a list of zeros are perfectly fair (1.0): nobody got
/// more than anyone else.
pub fn jain_index(xs: &[f64]) -> f64 {
    let sum: f64 = xs.iter().sum();
    let sum_of_squares: f64 = xs.iter().map(|x| x * x).sum();
    if sum_of_squares == 0.0 {
        return 1.0;
    }
    sum * sum / (xs.len() as f64 * sum_of_squares)
}
