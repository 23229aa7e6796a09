//! Test doubles of the seams: GPU memory in a few byte vectors, and a
//! reference validator to check the real one against. Used by the unit,
//! property and fuzz tests, and by the bench.

pub mod reference;

use crate::addr::GpuVa;
use crate::memory::{FetchFault, StreamMemory};

/// The fault reason [`TestMemory`] reports for an unmapped address (the
/// GPU MMU's "not present").
pub const NOT_PRESENT: u8 = 1;

/// GPU memory made of regions at fixed VAs. A read must lie wholly inside
/// one region; anything else faults with [`NOT_PRESENT`] at the first byte
/// that is not in that region. Every read is logged.
#[derive(Clone, Debug, Default)]
pub struct TestMemory {
    regions: Vec<(u64, Vec<u8>)>,
    reads: Vec<(u64, usize)>,
}

impl TestMemory {
    /// Memory with nothing mapped.
    pub fn new() -> Self {
        Self::default()
    }

    /// Maps `len` zero bytes at `va` (regions must not overlap).
    pub fn map(&mut self, va: u64, len: usize) -> &mut Self {
        self.regions.push((va, vec![0; len]));
        self
    }

    /// Writes `bytes` at `va`, inside one mapped region.
    ///
    /// # Panics
    ///
    /// If no region holds the whole range: a test set itself up wrong.
    pub fn write(&mut self, va: u64, bytes: &[u8]) {
        let (base, data) = self
            .regions
            .iter_mut()
            .find(|(base, data)| va >= *base && va + bytes.len() as u64 <= base + data.len() as u64)
            .unwrap_or_else(|| panic!("{} bytes at {va:#x} are not mapped", bytes.len()));
        let at = (va - *base) as usize;
        data[at..at + bytes.len()].copy_from_slice(bytes);
    }

    /// Writes dwords, little-endian, at `va`.
    pub fn write_words(&mut self, va: u64, words: &[u32]) {
        let bytes: Vec<u8> = words.iter().flat_map(|word| word.to_le_bytes()).collect();
        self.write(va, &bytes);
    }

    /// Writes dwords into the ring of `size` bytes at `base` from byte
    /// `offset` on, wrapping at the ring's end; returns the offset after
    /// them (the PUT that submits them).
    pub fn write_ring(&mut self, base: u64, size: u32, offset: u32, words: &[u32]) -> u32 {
        let mut at = offset;
        for &word in words {
            self.write(base + u64::from(at), &word.to_le_bytes());
            at = (at + 4) % size;
        }
        at
    }

    /// The reads so far: (VA, length in bytes), in order.
    pub fn reads(&self) -> &[(u64, usize)] {
        &self.reads
    }
}

impl StreamMemory for TestMemory {
    fn read(&mut self, va: GpuVa, out: &mut [u8]) -> Result<(), FetchFault> {
        let va = va.get();
        self.reads.push((va, out.len()));
        let region = self
            .regions
            .iter()
            .find(|(base, data)| va >= *base && va - base < data.len() as u64);
        let Some((base, data)) = region else {
            return Err(FetchFault {
                va,
                reason: NOT_PRESENT,
            });
        };
        let at = (va - base) as usize;
        match data.get(at..at + out.len()) {
            Some(bytes) => {
                out.copy_from_slice(bytes);
                Ok(())
            }
            None => Err(FetchFault {
                va: base + data.len() as u64,
                reason: NOT_PRESENT,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_inside_a_region_and_faults_at_its_end() {
        let mut memory = TestMemory::new();
        memory.map(0x1000, 16);
        memory.write(0x1004, &[1, 2, 3, 4]);
        let mut out = [0; 8];
        memory.read(GpuVa::new(0x1000).unwrap(), &mut out).unwrap();
        assert_eq!(out, [0, 0, 0, 0, 1, 2, 3, 4]);
        let fault = memory
            .read(GpuVa::new(0x100c).unwrap(), &mut out)
            .unwrap_err();
        assert_eq!(
            fault,
            FetchFault {
                va: 0x1010,
                reason: NOT_PRESENT
            }
        );
        let fault = memory
            .read(GpuVa::new(0x0ffc).unwrap(), &mut out)
            .unwrap_err();
        assert_eq!(fault.va, 0x0ffc);
        assert_eq!(memory.reads(), [(0x1000, 8), (0x100c, 8), (0x0ffc, 8)]);
    }

    #[test]
    fn ring_writes_wrap() {
        let mut memory = TestMemory::new();
        memory.map(0, 4096);
        assert_eq!(memory.write_ring(0, 4096, 4092, &[7, 8]), 4);
        let mut out = [0; 4];
        memory.read(GpuVa::new(0).unwrap(), &mut out).unwrap();
        assert_eq!(u32::from_le_bytes(out), 8);
    }
}
