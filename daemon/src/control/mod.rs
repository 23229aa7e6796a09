//! The control API: a Unix socket in the runtime directory that `vgpuctl`
//! talks to. See [`protocol`] for the message format.

mod commands;
pub mod protocol;
mod server;

pub use server::serve;
/// A registry of real vGPUs on a simulated GPU, for the tests of other
/// modules.
#[cfg(test)]
pub(crate) use server::tests::Fixture;
