//! A channel's ring as the guest describes it at a doorbell, and the span
//! of new commands in it.

use thiserror::Error;

use crate::addr::{GPU_VA_SPACE, GpuVa};

/// Smallest ring, in bytes.
pub const MIN_RING_BYTES: u32 = 4 << 10;
/// Largest ring, in bytes.
pub const MAX_RING_BYTES: u32 = 1 << 20;

/// A channel's ring registers as the guest wrote them: the commands to run
/// are the bytes from `get` up to (not including) `put`, wrapping at
/// `size`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RingState {
    /// GPU VA of the ring's first byte: 4 KiB aligned, and the whole ring
    /// below 2^48.
    pub base: u64,
    /// Bytes: a power of two from [`MIN_RING_BYTES`] to [`MAX_RING_BYTES`].
    pub size: u32,
    /// Byte offset of the first new command: a multiple of 4, below `size`.
    pub get: u32,
    /// Byte offset just past the last new command: a multiple of 4, below
    /// `size`. `put == get` submits nothing.
    pub put: u32,
}

/// Ring registers that break their rule (channel error BAD_RING, 10). The
/// value carried is the offending register's.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Error)]
pub enum RingError {
    /// The size is not a power of two from 4 KiB to 1 MiB.
    #[error("ring size {0:#x} is not a power of two from 4 KiB to 1 MiB")]
    Size(u32),
    /// The base is not 4 KiB aligned, or the ring does not lie below 2^48.
    #[error("ring base {0:#x} is not 4 KiB aligned below 2^48 - size")]
    Base(u64),
    /// GET is not a multiple of 4 below the size.
    #[error("ring GET {0:#x} is not a multiple of 4 below the ring size")]
    Get(u32),
    /// PUT is not a multiple of 4 below the size.
    #[error("ring PUT {0:#x} is not a multiple of 4 below the ring size")]
    Put(u32),
}

impl RingError {
    /// The offending register's value.
    pub const fn value(&self) -> u64 {
        match *self {
            RingError::Size(size) => size as u64,
            RingError::Base(base) => base,
            RingError::Get(get) => get as u64,
            RingError::Put(put) => put as u64,
        }
    }
}

/// A checked ring and its span of new commands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct RingSpan {
    pub base: GpuVa,
    pub size: u32,
    pub get: u32,
    pub put: u32,
}

impl RingState {
    /// Checks the registers, in the order size, base, GET, PUT.
    pub(crate) fn span(&self) -> Result<RingSpan, RingError> {
        let size = self.size;
        if !size.is_power_of_two() || !(MIN_RING_BYTES..=MAX_RING_BYTES).contains(&size) {
            return Err(RingError::Size(size));
        }
        let base = match GpuVa::new(self.base) {
            Some(base) if base.is_aligned(4096) && base.fits(u64::from(size)) => base,
            _ => return Err(RingError::Base(self.base)),
        };
        let offset_ok = |offset: u32| offset < size && offset.is_multiple_of(4);
        if !offset_ok(self.get) {
            return Err(RingError::Get(self.get));
        }
        if !offset_ok(self.put) {
            return Err(RingError::Put(self.put));
        }
        debug_assert!(base.get() + u64::from(size) <= GPU_VA_SPACE);
        Ok(RingSpan {
            base,
            size,
            get: self.get,
            put: self.put,
        })
    }
}

impl RingSpan {
    /// Bytes from GET to PUT, wrapping.
    pub fn bytes(&self) -> u32 {
        self.put.wrapping_sub(self.get) & (self.size - 1)
    }

    /// The GPU VA of byte `offset` of the ring.
    pub fn va(&self, offset: u32) -> GpuVa {
        // `base` is below 2^48 - size and the offset below the size.
        GpuVa::wrapping(self.base.get() + u64::from(offset & (self.size - 1)))
    }

    /// The one or two reads that fetch the span: from GET to the end of
    /// the ring (or PUT), then from the ring's start to PUT.
    pub fn pieces(&self) -> [(GpuVa, u32); 2] {
        if self.put >= self.get {
            [(self.va(self.get), self.put - self.get), (self.base, 0)]
        } else {
            [
                (self.va(self.get), self.size - self.get),
                (self.base, self.put),
            ]
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring(base: u64, size: u32, get: u32, put: u32) -> RingState {
        RingState {
            base,
            size,
            get,
            put,
        }
    }

    #[test]
    fn ring_size_must_be_a_power_of_two_from_4_kib_to_1_mib() {
        for size in [0, 2048, 4097, 3 << 12, 2 << 20] {
            assert_eq!(ring(0, size, 0, 0).span(), Err(RingError::Size(size)));
        }
        for size in [4096, 1 << 16, 1 << 20] {
            assert!(ring(0, size, 0, 0).span().is_ok());
        }
    }

    #[test]
    fn ring_base_must_be_page_aligned_and_the_ring_below_2_pow_48() {
        let size = 4096;
        for base in [0x800, GPU_VA_SPACE, GPU_VA_SPACE - 0x800, u64::MAX] {
            assert_eq!(ring(base, size, 0, 0).span(), Err(RingError::Base(base)));
        }
        assert!(ring(GPU_VA_SPACE - 4096, size, 0, 0).span().is_ok());
    }

    #[test]
    fn get_and_put_must_be_dword_offsets_inside_the_ring() {
        assert_eq!(ring(0, 4096, 4096, 0).span(), Err(RingError::Get(4096)));
        assert_eq!(ring(0, 4096, 2, 0).span(), Err(RingError::Get(2)));
        assert_eq!(ring(0, 4096, 0, 4097).span(), Err(RingError::Put(4097)));
        assert_eq!(ring(0, 4096, 0, 6).span(), Err(RingError::Put(6)));
        assert_eq!(RingError::Put(6).value(), 6);
    }

    #[test]
    fn the_span_wraps_at_the_ring_size() {
        let span = ring(0x10000, 4096, 4088, 8).span().unwrap();
        assert_eq!(span.bytes(), 16);
        assert_eq!(
            span.pieces().map(|(va, bytes)| (va.get(), bytes)),
            [(0x10ff8, 8), (0x10000, 8)]
        );
        let span = ring(0x10000, 4096, 8, 24).span().unwrap();
        assert_eq!(span.bytes(), 16);
        assert_eq!(span.pieces()[0], (GpuVa::new(0x10008).unwrap(), 16));
        assert_eq!(span.pieces()[1].1, 0);
        assert_eq!(ring(0, 4096, 12, 12).span().unwrap().bytes(), 0);
    }
}
