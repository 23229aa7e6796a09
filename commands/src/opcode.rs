//! The header dword that starts every command, and the opcodes.
//!
//! ```text
//!  31        24 23          16 15            8 7             0
//! +------------+--------------+---------------+---------------+
//! |  reserved  |    flags     |    dwords     |    opcode     |
//! +------------+--------------+---------------+---------------+
//! ```
//!
//! `dwords` is the command's whole length in dwords, the header included;
//! every opcode has a fixed length except NOP, whose length is anything
//! from 1 to 255 (its payload is ignored). `flags` mean what each opcode
//! says; bit 16 is PHYSICAL on every opcode that addresses memory, and a
//! flag an opcode does not define is reserved. Reserved bits must be 0.
//!
//! Opcode 0 is not assigned, so a run of zeroed memory is refused as an
//! unknown opcode rather than read as commands.

use std::fmt;

/// Bits 7:0 of a header: the opcode.
pub const HEADER_OPCODE_MASK: u32 = 0x0000_00ff;
/// Bits 15:8 of a header: the command's length in dwords.
pub const HEADER_DWORDS_SHIFT: u32 = 8;
/// Bits 23:16 of a header: the flags.
pub const HEADER_FLAGS_MASK: u32 = 0x00ff_0000;
/// Bits 31:24 of a header: reserved, must be 0.
pub const HEADER_RESERVED_MASK: u32 = 0xff00_0000;

/// Flag bit 16, on every opcode that addresses memory: the addresses are
/// physical and bypass the MMU. Privileged: a guest never uses it.
pub const FLAG_PHYSICAL: u32 = 1 << 16;
/// FENCE flag bit 17: the value is 64 bits (dwords 3 and 4); clear, it is
/// the 32 bits of dword 3.
pub const FLAG_FENCE_VALUE64: u32 = 1 << 17;
/// FENCE flag bit 18: raise the channel's interrupt once the value is
/// written.
pub const FLAG_FENCE_INTERRUPT: u32 = 1 << 18;
/// SEMAPHORE_WAIT flag bits 19:17: the compare operation.
pub const FLAG_SEMAPHORE_COMPARE_MASK: u32 = 0x7 << FLAG_SEMAPHORE_COMPARE_SHIFT;
/// Shift of the SEMAPHORE_WAIT compare operation.
pub const FLAG_SEMAPHORE_COMPARE_SHIFT: u32 = 17;
/// TLB_INVALIDATE flag bit 17: invalidate the whole address space (the
/// range dwords must then be 0).
pub const FLAG_TLB_ALL: u32 = 1 << 17;
/// BATCH_START flag bit 17: run the batch privileged, as the host's own
/// batches run. Privileged: a guest never uses it.
pub const FLAG_BATCH_PRIVILEGED: u32 = 1 << 17;

/// The longest a command can be, in dwords (the header's 8-bit field).
pub const MAX_COMMAND_DWORDS: usize = 255;

/// An opcode of the physical command set, guest forms and privileged ones.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Opcode {
    /// Does nothing; 1 to 255 dwords, the payload is ignored.
    Nop = 0x01,
    /// Copies bytes from one range to another.
    Copy = 0x02,
    /// Fills a range with a 32-bit pattern.
    Fill = 0x03,
    /// Copies a rectangle of 32-bit pixels.
    Blit2d = 0x04,
    /// Writes a 32- or 64-bit value, optionally raising the channel's
    /// interrupt.
    Fence = 0x05,
    /// Waits until a 32-bit value in memory compares true.
    SemaphoreWait = 0x06,
    /// Runs a batch buffer, then continues after this command.
    BatchStart = 0x07,
    /// Ends the current batch buffer.
    BatchEnd = 0x08,
    /// Invalidates the channel's MMU translations.
    TlbInvalidate = 0x09,
    /// Writes the 64-bit engine timestamp.
    Timestamp = 0x0a,
    /// Loads a 32-bit value into an engine register.
    LoadRegisterImm = 0x0b,
    /// Stores an engine register into memory.
    StoreRegister = 0x0c,
    /// Points a display head at a surface.
    SetScanout = 0x0d,
    /// Switches the engine to another hardware context. Privileged.
    SetContext = 0x0e,
    /// Switches the context's page-table root. Privileged.
    SetPtRoot = 0x0f,
}

impl Opcode {
    /// Every opcode, in numeric order.
    pub const ALL: [Opcode; 15] = [
        Opcode::Nop,
        Opcode::Copy,
        Opcode::Fill,
        Opcode::Blit2d,
        Opcode::Fence,
        Opcode::SemaphoreWait,
        Opcode::BatchStart,
        Opcode::BatchEnd,
        Opcode::TlbInvalidate,
        Opcode::Timestamp,
        Opcode::LoadRegisterImm,
        Opcode::StoreRegister,
        Opcode::SetScanout,
        Opcode::SetContext,
        Opcode::SetPtRoot,
    ];

    /// The opcode numbered `value`, if one is assigned.
    pub const fn from_u8(value: u8) -> Option<Opcode> {
        Some(match value {
            0x01 => Opcode::Nop,
            0x02 => Opcode::Copy,
            0x03 => Opcode::Fill,
            0x04 => Opcode::Blit2d,
            0x05 => Opcode::Fence,
            0x06 => Opcode::SemaphoreWait,
            0x07 => Opcode::BatchStart,
            0x08 => Opcode::BatchEnd,
            0x09 => Opcode::TlbInvalidate,
            0x0a => Opcode::Timestamp,
            0x0b => Opcode::LoadRegisterImm,
            0x0c => Opcode::StoreRegister,
            0x0d => Opcode::SetScanout,
            0x0e => Opcode::SetContext,
            0x0f => Opcode::SetPtRoot,
            _ => return None,
        })
    }

    /// The opcode's number (header bits 7:0).
    pub const fn value(self) -> u8 {
        self as u8
    }

    /// The length of the command in dwords, header included; `None` for
    /// NOP, whose length is anything from 1 to [`MAX_COMMAND_DWORDS`].
    pub const fn dwords(self) -> Option<usize> {
        Some(match self {
            Opcode::Nop => return None,
            Opcode::Copy => 6,
            Opcode::Fill => 5,
            Opcode::Blit2d => 9,
            Opcode::Fence => 5,
            Opcode::SemaphoreWait => 4,
            Opcode::BatchStart => 4,
            Opcode::BatchEnd => 1,
            Opcode::TlbInvalidate => 5,
            Opcode::Timestamp => 3,
            Opcode::LoadRegisterImm => 3,
            Opcode::StoreRegister => 4,
            Opcode::SetScanout => 7,
            Opcode::SetContext => 2,
            Opcode::SetPtRoot => 3,
        })
    }

    /// The flag bits (header bits 23:16) the opcode defines; the others
    /// are reserved.
    pub const fn flags(self) -> u32 {
        match self {
            Opcode::Copy
            | Opcode::Fill
            | Opcode::Blit2d
            | Opcode::Timestamp
            | Opcode::StoreRegister
            | Opcode::SetScanout => FLAG_PHYSICAL,
            Opcode::Fence => FLAG_PHYSICAL | FLAG_FENCE_VALUE64 | FLAG_FENCE_INTERRUPT,
            Opcode::SemaphoreWait => FLAG_PHYSICAL | FLAG_SEMAPHORE_COMPARE_MASK,
            Opcode::BatchStart => FLAG_PHYSICAL | FLAG_BATCH_PRIVILEGED,
            Opcode::TlbInvalidate => FLAG_TLB_ALL,
            Opcode::Nop
            | Opcode::BatchEnd
            | Opcode::LoadRegisterImm
            | Opcode::SetContext
            | Opcode::SetPtRoot => 0,
        }
    }

    /// The name the device interface uses (`"COPY"`).
    pub const fn name(self) -> &'static str {
        match self {
            Opcode::Nop => "NOP",
            Opcode::Copy => "COPY",
            Opcode::Fill => "FILL",
            Opcode::Blit2d => "BLIT2D",
            Opcode::Fence => "FENCE",
            Opcode::SemaphoreWait => "SEMAPHORE_WAIT",
            Opcode::BatchStart => "BATCH_START",
            Opcode::BatchEnd => "BATCH_END",
            Opcode::TlbInvalidate => "TLB_INVALIDATE",
            Opcode::Timestamp => "TIMESTAMP",
            Opcode::LoadRegisterImm => "LOAD_REGISTER_IMM",
            Opcode::StoreRegister => "STORE_REGISTER",
            Opcode::SetScanout => "SET_SCANOUT",
            Opcode::SetContext => "SET_CONTEXT",
            Opcode::SetPtRoot => "SET_PT_ROOT",
        }
    }
}

impl fmt::Display for Opcode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The header dword of a command of `dwords` dwords with `flags` (already
/// in place, bits 23:16).
pub const fn header(opcode: Opcode, dwords: u8, flags: u32) -> u32 {
    opcode.value() as u32 | (dwords as u32) << HEADER_DWORDS_SHIFT | flags
}

/// The opcode number of a header (bits 7:0), assigned or not.
pub const fn header_opcode(header: u32) -> u8 {
    (header & HEADER_OPCODE_MASK) as u8
}

/// The length of a header's command in dwords (bits 15:8).
pub const fn header_dwords(header: u32) -> usize {
    ((header >> HEADER_DWORDS_SHIFT) & 0xff) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opcodes_are_dense_from_1_and_round_trip() {
        for (index, opcode) in Opcode::ALL.into_iter().enumerate() {
            assert_eq!(usize::from(opcode.value()), index + 1);
            assert_eq!(Opcode::from_u8(opcode.value()), Some(opcode));
        }
        assert_eq!(Opcode::from_u8(0), None);
        assert_eq!(Opcode::from_u8(0x10), None);
        assert_eq!(Opcode::from_u8(0xff), None);
    }

    #[test]
    fn flags_stay_in_bits_23_to_16() {
        for opcode in Opcode::ALL {
            assert_eq!(opcode.flags() & !HEADER_FLAGS_MASK, 0, "{opcode}");
        }
    }

    #[test]
    fn header_fields_pack_and_unpack() {
        let h = header(Opcode::Fence, 5, FLAG_FENCE_INTERRUPT);
        assert_eq!(h, 0x0004_0505);
        assert_eq!(header_opcode(h), 0x05);
        assert_eq!(header_dwords(h), 5);
    }
}
