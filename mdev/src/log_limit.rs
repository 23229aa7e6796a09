//! A bound on the log lines that one source can cause.
//!
//! Everything a client or guest can make the daemon say goes through a
//! [`LogLimit`] of its vGPU, so that no client can flood the journal (and,
//! under journald's per-service rate limit, get the lines of other vGPUs
//! dropped): at most [`LogLimit::BURST`] lines per [`LogLimit::WINDOW`],
//! then, with the first line of a later window, one line saying how many
//! were dropped.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A rate limit for the log lines of one source.
#[derive(Debug, Default)]
pub struct LogLimit {
    /// Names the source in the line about dropped lines (a vGPU's UUID
    /// and what the limit covers).
    source: String,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    window_start: Option<Instant>,
    logged: u32,
    dropped: u64,
}

impl LogLimit {
    /// Lines logged per window at most.
    pub const BURST: u32 = 20;
    /// The window.
    pub const WINDOW: Duration = Duration::from_secs(10);

    /// A limit whose summary lines name `source`.
    pub fn new(source: impl Into<String>) -> Self {
        Self {
            source: source.into(),
            state: Mutex::default(),
        }
    }

    /// Calls `emit` (which logs one line) unless this window's lines are
    /// used up.
    pub fn log(&self, emit: impl FnOnce()) {
        let now = Instant::now();
        let dropped = {
            let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
            let expired = state
                .window_start
                .is_none_or(|start| now.duration_since(start) >= Self::WINDOW);
            let mut dropped = 0;
            if expired {
                dropped = state.dropped;
                state.window_start = Some(now);
                state.logged = 0;
                state.dropped = 0;
            }
            if state.logged >= Self::BURST {
                state.dropped += 1;
                return;
            }
            state.logged += 1;
            dropped
        };
        if dropped > 0 {
            tracing::warn!(source = %self.source, dropped, "log lines dropped by the rate limit");
        }
        emit();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_is_logged_and_the_rest_dropped() {
        let limit = LogLimit::new("test");
        let mut emitted = 0;
        for _ in 0..1000 {
            limit.log(|| emitted += 1);
        }
        assert_eq!(emitted, LogLimit::BURST);
        assert_eq!(limit.state.lock().unwrap().dropped, 1000 - 20);
    }

    #[test]
    fn a_new_window_logs_again_and_owns_up_to_what_was_dropped() {
        let limit = LogLimit::new("test");
        for _ in 0..30 {
            limit.log(|| {});
        }
        // Pretend the window is over.
        limit.state.lock().unwrap().window_start = Some(Instant::now() - LogLimit::WINDOW);
        let mut emitted = false;
        limit.log(|| emitted = true);
        assert!(emitted);
        let state = limit.state.lock().unwrap();
        assert_eq!((state.logged, state.dropped), (1, 0));
    }
}
