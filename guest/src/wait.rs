//! Bounded polling: every wait in the guest programs ends, so that a broken
//! device makes a check fail instead of hanging the guest.

use std::time::{Duration, Instant};

/// How often a condition is re-checked.
const POLL_INTERVAL: Duration = Duration::from_millis(50);

/// Calls `probe` until it returns `Some` or `timeout` has passed (it is
/// called at least once, and once more at the deadline).
pub fn wait_for<T>(timeout: Duration, probe: impl FnMut() -> Option<T>) -> Option<T> {
    wait_for_every(timeout, POLL_INTERVAL, probe)
}

/// [`wait_for`], calling `probe` every `interval` (the engine programs
/// look at fences and GET every few hundred microseconds).
pub fn wait_for_every<T>(
    timeout: Duration,
    interval: Duration,
    mut probe: impl FnMut() -> Option<T>,
) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = probe() {
            return Some(value);
        }
        let now = Instant::now();
        if now >= deadline {
            return None;
        }
        std::thread::sleep(interval.min(deadline - now));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn returns_the_first_value_the_probe_gives() {
        let mut calls = 0;
        let got = wait_for(Duration::from_secs(5), || {
            calls += 1;
            (calls == 3).then_some(calls)
        });
        assert_eq!(got, Some(3));
    }

    #[test]
    fn gives_up_after_the_timeout() {
        assert_eq!(wait_for::<()>(Duration::ZERO, || None), None);
    }
}
