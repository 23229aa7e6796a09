//! The fuzz harness.
