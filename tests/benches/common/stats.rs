//! Summaries of measurements: quantiles of latencies, medians of rates,
//! Jain's fairness index.

use std::time::Duration;

/// Latency samples.
#[derive(Clone, Debug, Default)]
pub struct Samples {
    ns: Vec<u64>,
    sorted: bool,
}

impl Samples {
    /// No samples yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds one.
    pub fn push(&mut self, sample: Duration) {
        self.ns.push(sample.as_nanos() as u64);
        self.sorted = false;
    }

    /// How many.
    pub fn len(&self) -> usize {
        self.ns.len()
    }

    /// The smallest sample at or above `quantile` of them (nearest rank).
    pub fn quantile(&mut self, quantile: f64) -> Duration {
        if !self.sorted {
            self.ns.sort_unstable();
            self.sorted = true;
        }
        if self.ns.is_empty() {
            return Duration::ZERO;
        }
        let rank = (quantile * self.ns.len() as f64).ceil() as usize;
        Duration::from_nanos(self.ns[rank.clamp(1, self.ns.len()) - 1])
    }

    /// The median.
    pub fn median(&mut self) -> Duration {
        self.quantile(0.5)
    }

    /// The 99th percentile.
    pub fn p99(&mut self) -> Duration {
        self.quantile(0.99)
    }

    /// The largest sample.
    pub fn max(&mut self) -> Duration {
        self.quantile(1.0)
    }
}

/// The median of `values` (the mean of the middle two for an even count).
pub fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    match sorted.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => sorted[n / 2],
        n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    }
}

/// Jain's fairness index of `values`: (Σx)² / (n·Σx²), 1 when all are
/// equal, 1/n when one has everything.
pub fn jain(values: &[f64]) -> f64 {
    let sum: f64 = values.iter().sum();
    let squares: f64 = values.iter().map(|x| x * x).sum();
    sum * sum / (values.len() as f64 * squares)
}

/// A duration for a table: µs below 10 ms, else ms.
pub fn show(duration: Duration) -> String {
    let micros = duration.as_secs_f64() * 1e6;
    if micros < 10_000.0 {
        format!("{micros:.1} µs")
    } else {
        format!("{:.2} ms", micros / 1000.0)
    }
}
