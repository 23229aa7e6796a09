//! How the validator reads a channel's ring and batches: through the GPU
//! MMU of the channel's context, which the engine owner implements.

use thiserror::Error;

use crate::addr::GpuVa;

/// A read the channel's MMU refused. The validator turns it into channel
/// error FETCH_FAULT (9) and keeps it as the error's source.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Error)]
#[error("the MMU refused a read at GPU VA {va:#x} (reason {reason})")]
pub struct FetchFault {
    /// The first address that could not be read.
    pub va: u64,
    /// Why, in the MMU's terms (the engine owner's mapping of its fault
    /// reasons, 1–6 for the GPU MMU's); opaque to the validator.
    pub reason: u8,
}

/// The channel's GPU virtual memory, as the engines see it.
pub trait StreamMemory {
    /// Fills `out` with the bytes at `va .. va + out.len()`.
    ///
    /// The validator asks only for whole ring spans (at most two reads per
    /// submission, split where the ring wraps) and whole batches, never for
    /// an empty range, and always for a range that lies below 2^48; the
    /// implementation translates it page by page. On error the contents of
    /// `out` do not matter: the validator drops the whole submission.
    fn read(&mut self, va: GpuVa, out: &mut [u8]) -> Result<(), FetchFault>;
}

impl<M: StreamMemory + ?Sized> StreamMemory for &mut M {
    fn read(&mut self, va: GpuVa, out: &mut [u8]) -> Result<(), FetchFault> {
        (**self).read(va, out)
    }
}
