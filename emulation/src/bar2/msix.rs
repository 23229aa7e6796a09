//! MSI-X table storage. Over vfio-user the VMM owns MSI-X delivery and
//! masking (QEMU emulates the table itself), so the table here is plain
//! storage that reads back what was written, and the PBA reads 0.

use super::layout::{MSIX_ENTRY_SIZE, MSIX_TABLE_SIZE};

const DWORDS: usize = (MSIX_TABLE_SIZE / 4) as usize;
/// Vector control bit 0: the vector is masked.
pub const MSIX_VECTOR_MASKED: u32 = 1;

/// One table entry as the guest programmed it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MsixEntry {
    /// Message address.
    pub address: u64,
    /// Message data.
    pub data: u32,
    /// Vector control.
    pub control: u32,
}

/// The MSI-X table of up to 64 vectors.
#[derive(Debug, Clone)]
pub struct MsixTable {
    dwords: [u32; DWORDS],
    vectors: u32,
}

impl MsixTable {
    /// A table of `vectors` entries (at most 64), at reset.
    pub fn new(vectors: u32) -> Self {
        let mut table = MsixTable {
            dwords: [0; DWORDS],
            vectors: vectors.min((MSIX_TABLE_SIZE / MSIX_ENTRY_SIZE) as u32),
        };
        table.reset();
        table
    }

    /// Every entry unprogrammed and masked.
    pub fn reset(&mut self) {
        self.dwords = [0; DWORDS];
        for v in 0..self.vectors as usize {
            self.dwords[v * 4 + 3] = MSIX_VECTOR_MASKED;
        }
    }

    fn index(&self, offset: u64) -> Option<usize> {
        (offset < u64::from(self.vectors) * MSIX_ENTRY_SIZE).then_some((offset / 4) as usize)
    }

    /// Reads the dword at `offset` from the table start; beyond the last
    /// vector reads 0.
    pub fn read(&self, offset: u64) -> u32 {
        self.index(offset).map_or(0, |i| self.dwords[i])
    }

    /// Stores `value` in the bytes `enables` selects of the dword at
    /// `offset`; beyond the last vector writes are ignored.
    pub fn write(&mut self, offset: u64, value: u32, enables: u32) {
        if let Some(i) = self.index(offset) {
            self.dwords[i] = crate::lanes::merge(self.dwords[i], value, enables);
        }
    }

    /// Entry `vector`, if the device has it.
    pub fn entry(&self, vector: u32) -> Option<MsixEntry> {
        if vector >= self.vectors {
            return None;
        }
        let d = &self.dwords[vector as usize * 4..][..4];
        Some(MsixEntry {
            address: u64::from(d[0]) | (u64::from(d[1]) << 32),
            data: d[2],
            control: d[3],
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_reset_masked_and_read_back_writes() {
        let mut table = MsixTable::new(2);
        assert_eq!(table.read(0x0c), MSIX_VECTOR_MASKED);
        table.write(0x10, 0xfee0_0000, u32::MAX);
        table.write(0x18, 0x4021, 0xffff);
        table.write(0x1c, 0, u32::MAX);
        let entry = table.entry(1).unwrap();
        assert_eq!(
            entry,
            MsixEntry {
                address: 0xfee0_0000,
                data: 0x4021,
                control: 0
            }
        );
    }

    #[test]
    fn offsets_past_the_last_vector_read_zero() {
        let mut table = MsixTable::new(2);
        table.write(0x20, 0xdead_beef, u32::MAX);
        assert_eq!(table.read(0x20), 0);
        assert_eq!(table.read(0x2c), 0);
        assert_eq!(table.entry(2), None);
    }
}
