//! The run-time operations of vgpud checked from the documentation alone
//! (docs/control-api.md, docs/operations.md, docs/configuration.md,
//! docs/state-directory.md, docs/metrics.md, `vgpuctl --help`), without
//! reading the daemon's implementation. Every test asserts a documented
//! outcome; a test marked `#[ignore = "BUG: ..."]` shows a place where the
//! running daemon does not do what the documents say.
//!
//! - [`errors`]: the error kind of every documented error of every command.
//! - [`lifecycle`]: states, origins, what remove/stop free, forced removal.
//! - [`bounds`]: control connections, line length, idle time, while
//!   another vGPU keeps answering.
//! - [`hostile`]: arguments of the wrong type, size, encoding or intent.
//! - [`races`]: lifecycle commands from several threads at once.
//! - [`persistence`]: definitions across restarts and reloads (SIGHUP).
//! - [`counters`]: `stats` counters and the metrics text.
//! - [`attacks`]: clients that jam a forced removal, squatted socket paths,
//!   reloads naming transient UUIDs, long answers, SIGTERM.
//! - [`cli`]: `vgpuctl`'s exit codes.

mod attacks;
mod bounds;
mod cli;
mod counters;
mod errors;
mod hostile;
mod lifecycle;
mod persistence;
mod races;
mod rig;
