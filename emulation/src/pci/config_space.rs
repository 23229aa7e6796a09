//! PCI configuration space as data: a table of registers, each with a
//! reset value, a guest-writable mask and a write-1-to-clear mask.
//!
//! The 256-byte standard space is stored as 64 dwords; extended space
//! (0x100–0xfff) holds nothing and reads 0. BAR sizing needs no special
//! case: a BAR's writable mask is `!(size - 1)` above its type bits, so
//! writing all ones reads back the size mask.

use crate::lanes::{lanes, merge};

/// Size of the standard (non-extended) configuration space.
pub const STANDARD_CONFIG_SIZE: u64 = 0x100;
const DWORDS: usize = (STANDARD_CONFIG_SIZE / 4) as usize;

/// Post-processes a guest write to one dword: gets the old dword and the
/// masked new one, returns what is stored. Used where a field refuses some
/// values (a power state the device does not support).
pub type WriteFilter = fn(old: u32, new: u32) -> u32;

/// One register: where it is, how wide, and how writes treat its bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RegisterSpec {
    /// Byte offset in config space (or in a capability, before placement).
    pub offset: u16,
    /// Width in bytes: 1, 2 or 4, and `offset` is a multiple of it.
    pub width: u8,
    /// Value after reset.
    pub reset: u32,
    /// Bits the guest can set and clear by writing.
    pub writable: u32,
    /// Bits the guest clears by writing 1 (and leaves alone by writing 0).
    pub w1c: u32,
}

impl RegisterSpec {
    /// A read-only register.
    pub const fn ro(offset: u16, width: u8, value: u32) -> Self {
        RegisterSpec {
            offset,
            width,
            reset: value,
            writable: 0,
            w1c: 0,
        }
    }

    /// A register whose `writable` bits take what the guest writes.
    pub const fn rw(offset: u16, width: u8, reset: u32, writable: u32) -> Self {
        RegisterSpec {
            offset,
            width,
            reset,
            writable,
            w1c: 0,
        }
    }

    /// The same register with write-1-to-clear bits `w1c`.
    pub const fn with_w1c(self, w1c: u32) -> Self {
        RegisterSpec { w1c, ..self }
    }

    /// The same register moved by `base` bytes.
    pub const fn at(self, base: u16) -> Self {
        RegisterSpec {
            offset: self.offset + base,
            ..self
        }
    }
}

/// Why a register table could not be laid out (a bug in the table).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ConfigSpaceError {
    /// Width not 1, 2 or 4, offset not a multiple of it, or outside the
    /// standard space.
    #[error("register at {offset:#x} of width {width} is misplaced")]
    Misplaced {
        /// Register offset.
        offset: u16,
        /// Register width.
        width: u8,
    },
    /// Two registers claim the same byte.
    #[error("register at {offset:#x} overlaps another register")]
    Overlap {
        /// Offset of the second register.
        offset: u16,
    },
}

/// The register file of a type 0 configuration space.
#[derive(Debug, Clone)]
pub struct ConfigSpace {
    regs: [u32; DWORDS],
    reset: [u32; DWORDS],
    writable: [u32; DWORDS],
    w1c: [u32; DWORDS],
    defined: [u32; DWORDS],
    filters: [Option<WriteFilter>; DWORDS],
}

impl ConfigSpace {
    /// Lays out `specs`; bytes no register claims read 0 and ignore writes.
    pub fn new(specs: &[RegisterSpec]) -> Result<Self, ConfigSpaceError> {
        let mut space = ConfigSpace {
            regs: [0; DWORDS],
            reset: [0; DWORDS],
            writable: [0; DWORDS],
            w1c: [0; DWORDS],
            defined: [0; DWORDS],
            filters: [None; DWORDS],
        };
        for spec in specs {
            space.place(spec)?;
        }
        space.regs = space.reset;
        Ok(space)
    }

    fn place(&mut self, spec: &RegisterSpec) -> Result<(), ConfigSpaceError> {
        let RegisterSpec { offset, width, .. } = *spec;
        let misplaced = ConfigSpaceError::Misplaced { offset, width };
        if !matches!(width, 1 | 2 | 4)
            || offset % u16::from(width) != 0
            || u64::from(offset) + u64::from(width) > STANDARD_CONFIG_SIZE
        {
            return Err(misplaced);
        }
        let field = if width == 4 {
            u32::MAX
        } else {
            (1u32 << (u32::from(width) * 8)) - 1
        };
        let shift = u32::from(offset % 4) * 8;
        let dword = usize::from(offset / 4);
        let mask = field << shift;
        if self.defined[dword] & mask != 0 {
            return Err(ConfigSpaceError::Overlap { offset });
        }
        self.defined[dword] |= mask;
        self.reset[dword] |= (spec.reset & field) << shift;
        self.writable[dword] |= (spec.writable & field) << shift;
        self.w1c[dword] |= (spec.w1c & field) << shift;
        Ok(())
    }

    /// Installs a write filter on the dword containing `offset`.
    pub fn set_filter(&mut self, offset: u16, filter: WriteFilter) {
        if let Some(slot) = self.filters.get_mut(usize::from(offset / 4)) {
            *slot = Some(filter);
        }
    }

    /// Reads `data.len()` bytes at `offset`; the caller has checked that
    /// the access lies inside the 4 KiB region.
    pub fn read(&self, offset: u64, data: &mut [u8]) {
        for lane in lanes(offset, data.len(), 4) {
            lane.read_into(self.dword(lane.reg), data);
        }
    }

    /// Applies a guest write of `data` at `offset` through the masks; the
    /// caller has checked that the access lies inside the 4 KiB region.
    pub fn write(&mut self, offset: u64, data: &[u8]) {
        for lane in lanes(offset, data.len(), 4) {
            let Some(index) = dword_index(lane.reg) else {
                continue; // extended space: nothing to write
            };
            let (value, enables) = lane.write_value(data);
            let old = self.regs[index];
            let writable = self.writable[index] & enables;
            let cleared = value & self.w1c[index] & enables;
            let mut new = merge(old, value, writable) & !cleared;
            if let Some(filter) = self.filters[index] {
                new = filter(old, new);
            }
            self.regs[index] = new;
        }
    }

    /// The dword at `offset` (rounded down to a multiple of 4); 0 in
    /// extended space.
    pub fn dword(&self, offset: u64) -> u32 {
        dword_index(offset).map_or(0, |i| self.regs[i])
    }

    /// The 16-bit register at `offset` (a multiple of 2).
    pub fn word(&self, offset: u64) -> u16 {
        (self.dword(offset) >> ((offset % 4) * 8)) as u16
    }

    /// The byte at `offset`.
    pub fn byte(&self, offset: u64) -> u8 {
        (self.dword(offset) >> ((offset % 4) * 8)) as u8
    }

    /// Sets or clears host-driven bits of the dword at `offset`, bypassing
    /// the guest masks (e.g. the status register's interrupt status).
    pub fn set_host_bits(&mut self, offset: u64, mask: u32, on: bool) {
        if let Some(index) = dword_index(offset) {
            if on {
                self.regs[index] |= mask;
            } else {
                self.regs[index] &= !mask;
            }
        }
    }

    /// Returns every register to its reset value.
    pub fn reset(&mut self) {
        self.regs = self.reset;
    }
}

fn dword_index(offset: u64) -> Option<usize> {
    (offset < STANDARD_CONFIG_SIZE).then_some((offset / 4) as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn space() -> ConfigSpace {
        ConfigSpace::new(&[
            RegisterSpec::ro(0x00, 2, 0x1234),
            RegisterSpec::rw(0x04, 2, 0, 0x0546),
            RegisterSpec::ro(0x06, 2, 0x0010).with_w1c(0xf900),
            RegisterSpec::rw(0x10, 4, 0x0c, 0xfff0_0000),
        ])
        .unwrap()
    }

    #[test]
    fn writes_go_through_the_writable_mask() {
        let mut s = space();
        s.write(0x04, &[0xff, 0xff]);
        assert_eq!(s.word(0x04), 0x0546);
        s.write(0x00, &[0, 0]);
        assert_eq!(s.word(0x00), 0x1234);
    }

    #[test]
    fn w1c_bits_clear_only_where_one_is_written() {
        let mut s = space();
        s.set_host_bits(0x04, 0xf900 << 16, true);
        s.write(0x06, &0x0100u16.to_le_bytes());
        assert_eq!(s.word(0x06), 0xf810);
    }

    #[test]
    fn bar_sizing_falls_out_of_the_mask() {
        let mut s = space();
        s.write(0x10, &[0xff; 4]);
        assert_eq!(s.dword(0x10), 0xfff0_000c);
    }

    #[test]
    fn overlapping_or_misplaced_registers_are_refused() {
        let overlap = ConfigSpace::new(&[RegisterSpec::ro(0, 4, 0), RegisterSpec::ro(2, 2, 0)]);
        assert_eq!(
            overlap.unwrap_err(),
            ConfigSpaceError::Overlap { offset: 2 }
        );
        let misaligned = ConfigSpace::new(&[RegisterSpec::ro(1, 2, 0)]);
        assert!(matches!(
            misaligned,
            Err(ConfigSpaceError::Misplaced { .. })
        ));
        let outside = ConfigSpace::new(&[RegisterSpec::ro(0x100, 1, 0)]);
        assert!(matches!(outside, Err(ConfigSpaceError::Misplaced { .. })));
    }

    #[test]
    fn filters_see_old_and_new_dwords() {
        let mut s = ConfigSpace::new(&[RegisterSpec::rw(0x44, 2, 0, 3)]).unwrap();
        s.set_filter(0x44, |old, new| if new & 3 == 1 { old } else { new });
        s.write(0x44, &[1]);
        assert_eq!(s.word(0x44), 0);
        s.write(0x44, &[3]);
        assert_eq!(s.word(0x44), 3);
    }

    #[test]
    fn reset_restores_reset_values() {
        let mut s = space();
        s.write(0x04, &[0x06, 0x05]);
        s.reset();
        assert_eq!(s.word(0x04), 0);
        assert_eq!(s.dword(0x10), 0x0c);
    }
}
