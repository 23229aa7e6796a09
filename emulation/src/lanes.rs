//! Splitting an access into per-register byte lanes.
//!
//! Config space takes any length at any offset and BAR2 takes 8-byte
//! accesses that cover two 32-bit or four 16-bit registers, so register
//! handlers see one register at a time: the register's offset, the bytes of
//! it the access covers, and (for writes) the value with a byte-enable mask.

/// One register's share of an access.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Lane {
    /// Offset of the register, aligned to its width.
    pub reg: u64,
    /// First byte of the register the access covers.
    pub reg_byte: usize,
    /// Where those bytes sit in the access data.
    pub data_byte: usize,
    /// How many bytes of the register the access covers.
    pub len: usize,
}

impl Lane {
    /// Mask with `0xff` in every byte the access covers.
    pub fn enables(&self) -> u32 {
        let bits = (self.len * 8) as u32;
        let mask = 1u32.checked_shl(bits).map_or(u32::MAX, |m| m - 1);
        mask << (self.reg_byte * 8)
    }

    /// Copies this lane's bytes of the register value `value` into `data`.
    pub fn read_into(&self, value: u32, data: &mut [u8]) {
        let bytes = value.to_le_bytes();
        data[self.data_byte..self.data_byte + self.len]
            .copy_from_slice(&bytes[self.reg_byte..self.reg_byte + self.len]);
    }

    /// The value this lane writes to its register, placed at the register's
    /// byte positions (bytes the access does not cover are 0), with the
    /// matching byte-enable mask.
    pub fn write_value(&self, data: &[u8]) -> (u32, u32) {
        let mut bytes = [0u8; 4];
        bytes[self.reg_byte..self.reg_byte + self.len]
            .copy_from_slice(&data[self.data_byte..self.data_byte + self.len]);
        (u32::from_le_bytes(bytes), self.enables())
    }
}

/// Iterates over the registers of `width` bytes (1, 2 or 4) that an access
/// of `len` bytes at `offset` touches, lowest address first. The caller has
/// range-checked the access, so `offset + len` does not overflow.
pub(crate) fn lanes(offset: u64, len: usize, width: u64) -> impl Iterator<Item = Lane> {
    let end = offset.saturating_add(len as u64);
    let mut pos = offset;
    std::iter::from_fn(move || {
        if pos >= end {
            return None;
        }
        let reg = pos - pos % width;
        let reg_byte = pos - reg;
        let take = (width - reg_byte).min(end - pos);
        let lane = Lane {
            reg,
            reg_byte: reg_byte as usize,
            data_byte: (pos - offset) as usize,
            len: take as usize,
        };
        pos += take;
        Some(lane)
    })
}

/// Stores the written bytes of `value` into `old`, keeping the rest.
pub(crate) fn merge(old: u32, value: u32, enables: u32) -> u32 {
    (old & !enables) | (value & enables)
}

/// Stores the written bytes of one 32-bit half (`shift` 0 or 32) of a
/// 64-bit register.
pub(crate) fn merge64(old: u64, shift: u32, value: u32, enables: u32) -> u64 {
    let half = merge((old >> shift) as u32, value, enables);
    (old & !(u64::from(u32::MAX) << shift)) | (u64::from(half) << shift)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn three_bytes_across_a_dword_boundary_make_two_lanes() {
        let got: Vec<Lane> = lanes(0x03, 3, 4).collect();
        assert_eq!(
            got,
            vec![
                Lane {
                    reg: 0,
                    reg_byte: 3,
                    data_byte: 0,
                    len: 1
                },
                Lane {
                    reg: 4,
                    reg_byte: 0,
                    data_byte: 1,
                    len: 2
                },
            ]
        );
        assert_eq!(got[0].enables(), 0xff00_0000);
        assert_eq!(got[1].enables(), 0x0000_ffff);
    }

    #[test]
    fn eight_bytes_cover_four_16_bit_registers() {
        let regs: Vec<u64> = lanes(0x500, 8, 2).map(|l| l.reg).collect();
        assert_eq!(regs, vec![0x500, 0x502, 0x504, 0x506]);
    }

    #[test]
    fn write_value_places_bytes_at_register_positions() {
        let lane = Lane {
            reg: 0,
            reg_byte: 2,
            data_byte: 1,
            len: 2,
        };
        assert_eq!(
            lane.write_value(&[0xaa, 0x34, 0x12]),
            (0x1234_0000, 0xffff_0000)
        );
        let mut out = [0u8; 3];
        lane.read_into(0xbeef_0000, &mut out);
        assert_eq!(out, [0, 0xef, 0xbe]);
        assert_eq!(merge(0x1111_1111, 0x2222_0000, 0xffff_0000), 0x2222_1111);
    }
}
