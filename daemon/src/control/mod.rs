//! The control API: a Unix socket in the runtime directory that `vgpuctl`
//! talks to. See [`protocol`] for the message format.

mod commands;
pub mod protocol;
mod server;

pub use server::serve;
