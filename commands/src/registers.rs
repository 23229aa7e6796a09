//! The engine register space that LOAD_REGISTER_IMM and STORE_REGISTER
//! name, and the guest whitelist.
//!
//! Offsets are bytes in a 32-bit space of 32-bit registers, per channel.
//!
//! | offset | register | guest access |
//! | --- | --- | --- |
//! | 0x000 + 4n | GPR0–GPR15: general-purpose scratch | read (STORE_REGISTER), write (LOAD_REGISTER_IMM) |
//! | 0x040 | COMPLETED_FENCE_LO | read |
//! | 0x044 | COMPLETED_FENCE_HI | read |
//! | 0x048 | TIMESTAMP_LO | read |
//! | 0x04c | TIMESTAMP_HI | read |
//! | 0x100 | CONTEXT_ID | none |
//! | 0x104 | PT_ROOT_LO | none |
//! | 0x108 | PT_ROOT_HI | none |
//! | 0x10c | MMU_CONTROL | none |
//! | 0x110 | TLB_CONTROL | none |
//! | 0x120 | PRIORITY | none |
//! | 0x124 | TIMESLICE | none |
//! | 0x128 | WATCHDOG | none |
//! | 0x1000 + 0x100h + r | display head h (0–3): SURFACE_LO (r = 0), SURFACE_HI (4), PITCH (8), SIZE (0xc), CONTROL (0x10) | none |
//!
//! Every other offset (misaligned ones included) is unassigned, and a
//! guest may neither read nor write it: only the offsets marked read or
//! write above pass the validator.

use std::fmt;

/// Number of general-purpose registers per channel.
pub const GPR_COUNT: u8 = 16;

/// Offset of GPR0; GPR n is at `GPR0_OFFSET + 4 n`.
pub const GPR0_OFFSET: u32 = 0x000;
/// The value of the last FENCE the channel executed, low 32 bits.
pub const COMPLETED_FENCE_LO_OFFSET: u32 = 0x040;
/// The value of the last FENCE the channel executed, high 32 bits.
pub const COMPLETED_FENCE_HI_OFFSET: u32 = 0x044;
/// The engine timestamp in ns, low 32 bits.
pub const TIMESTAMP_LO_OFFSET: u32 = 0x048;
/// The engine timestamp in ns, high 32 bits.
pub const TIMESTAMP_HI_OFFSET: u32 = 0x04c;
/// The hardware context the engine runs.
pub const CONTEXT_ID_OFFSET: u32 = 0x100;
/// The context's page-table root, low half.
pub const PT_ROOT_LO_OFFSET: u32 = 0x104;
/// The context's page-table root, high half.
pub const PT_ROOT_HI_OFFSET: u32 = 0x108;
/// MMU enable and physical-mode control.
pub const MMU_CONTROL_OFFSET: u32 = 0x10c;
/// TLB flush control.
pub const TLB_CONTROL_OFFSET: u32 = 0x110;
/// The channel's scheduling priority.
pub const PRIORITY_OFFSET: u32 = 0x120;
/// The channel's time slice.
pub const TIMESLICE_OFFSET: u32 = 0x124;
/// The channel's watchdog timeout.
pub const WATCHDOG_OFFSET: u32 = 0x128;
/// Display head 0's block; head h's is `0x100 h` further.
pub const DISPLAY_HEAD0_OFFSET: u32 = 0x1000;
/// Distance between two display heads' blocks.
pub const DISPLAY_HEAD_STRIDE: u32 = 0x100;
/// Number of display heads in the register space.
pub const DISPLAY_HEADS: u32 = 4;

/// One of the 16 general-purpose registers of a channel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Gpr(u8);

impl Gpr {
    /// GPR `index`, if `index` < 16.
    pub const fn new(index: u8) -> Option<Gpr> {
        if index < GPR_COUNT {
            Some(Gpr(index))
        } else {
            None
        }
    }

    /// The register's number, 0–15.
    pub const fn index(self) -> u8 {
        self.0
    }

    /// The register's offset in the engine register space.
    pub const fn offset(self) -> u32 {
        GPR0_OFFSET + 4 * self.0 as u32
    }
}

/// A register a guest may read with STORE_REGISTER.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ReadableRegister {
    /// A general-purpose register.
    Gpr(Gpr),
    /// The last completed FENCE value of the channel, low 32 bits.
    CompletedFenceLo,
    /// The last completed FENCE value of the channel, high 32 bits.
    CompletedFenceHi,
    /// The engine timestamp in ns when the store runs, low 32 bits.
    TimestampLo,
    /// Likewise, high 32 bits.
    TimestampHi,
}

impl ReadableRegister {
    /// The register's offset in the engine register space.
    pub const fn offset(self) -> u32 {
        match self {
            ReadableRegister::Gpr(gpr) => gpr.offset(),
            ReadableRegister::CompletedFenceLo => COMPLETED_FENCE_LO_OFFSET,
            ReadableRegister::CompletedFenceHi => COMPLETED_FENCE_HI_OFFSET,
            ReadableRegister::TimestampLo => TIMESTAMP_LO_OFFSET,
            ReadableRegister::TimestampHi => TIMESTAMP_HI_OFFSET,
        }
    }
}

/// A register of one display head's block.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DisplayRegister {
    /// Surface address, low half.
    SurfaceLo,
    /// Surface address, high half.
    SurfaceHi,
    /// Bytes per row.
    Pitch,
    /// Width and height.
    Size,
    /// Enable and format.
    Control,
}

/// Any offset of the engine register space, named.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EngineRegister {
    /// A register a guest may read (and, if it is a GPR, write).
    Readable(ReadableRegister),
    /// CONTEXT_ID.
    ContextId,
    /// PT_ROOT_LO.
    PtRootLo,
    /// PT_ROOT_HI.
    PtRootHi,
    /// MMU_CONTROL.
    MmuControl,
    /// TLB_CONTROL.
    TlbControl,
    /// PRIORITY.
    Priority,
    /// TIMESLICE.
    Timeslice,
    /// WATCHDOG.
    Watchdog,
    /// A register of a display head.
    Display {
        /// The head, 0–3.
        head: u8,
        /// Which of its registers.
        register: DisplayRegister,
    },
    /// An offset no register sits at (misaligned ones included).
    Unassigned(u32),
}

impl EngineRegister {
    /// The register at `offset`.
    pub const fn from_offset(offset: u32) -> EngineRegister {
        if offset < COMPLETED_FENCE_LO_OFFSET && offset.is_multiple_of(4) {
            return EngineRegister::Readable(ReadableRegister::Gpr(Gpr((offset / 4) as u8)));
        }
        match offset {
            COMPLETED_FENCE_LO_OFFSET => {
                EngineRegister::Readable(ReadableRegister::CompletedFenceLo)
            }
            COMPLETED_FENCE_HI_OFFSET => {
                EngineRegister::Readable(ReadableRegister::CompletedFenceHi)
            }
            TIMESTAMP_LO_OFFSET => EngineRegister::Readable(ReadableRegister::TimestampLo),
            TIMESTAMP_HI_OFFSET => EngineRegister::Readable(ReadableRegister::TimestampHi),
            CONTEXT_ID_OFFSET => EngineRegister::ContextId,
            PT_ROOT_LO_OFFSET => EngineRegister::PtRootLo,
            PT_ROOT_HI_OFFSET => EngineRegister::PtRootHi,
            MMU_CONTROL_OFFSET => EngineRegister::MmuControl,
            TLB_CONTROL_OFFSET => EngineRegister::TlbControl,
            PRIORITY_OFFSET => EngineRegister::Priority,
            TIMESLICE_OFFSET => EngineRegister::Timeslice,
            WATCHDOG_OFFSET => EngineRegister::Watchdog,
            _ => Self::display(offset),
        }
    }

    const fn display(offset: u32) -> EngineRegister {
        let end = DISPLAY_HEAD0_OFFSET + DISPLAY_HEADS * DISPLAY_HEAD_STRIDE;
        if offset < DISPLAY_HEAD0_OFFSET || offset >= end {
            return EngineRegister::Unassigned(offset);
        }
        let head = ((offset - DISPLAY_HEAD0_OFFSET) / DISPLAY_HEAD_STRIDE) as u8;
        let register = match (offset - DISPLAY_HEAD0_OFFSET) % DISPLAY_HEAD_STRIDE {
            0x00 => DisplayRegister::SurfaceLo,
            0x04 => DisplayRegister::SurfaceHi,
            0x08 => DisplayRegister::Pitch,
            0x0c => DisplayRegister::Size,
            0x10 => DisplayRegister::Control,
            _ => return EngineRegister::Unassigned(offset),
        };
        EngineRegister::Display { head, register }
    }

    /// The register's offset.
    pub const fn offset(self) -> u32 {
        match self {
            EngineRegister::Readable(register) => register.offset(),
            EngineRegister::ContextId => CONTEXT_ID_OFFSET,
            EngineRegister::PtRootLo => PT_ROOT_LO_OFFSET,
            EngineRegister::PtRootHi => PT_ROOT_HI_OFFSET,
            EngineRegister::MmuControl => MMU_CONTROL_OFFSET,
            EngineRegister::TlbControl => TLB_CONTROL_OFFSET,
            EngineRegister::Priority => PRIORITY_OFFSET,
            EngineRegister::Timeslice => TIMESLICE_OFFSET,
            EngineRegister::Watchdog => WATCHDOG_OFFSET,
            EngineRegister::Display { head, register } => {
                DISPLAY_HEAD0_OFFSET
                    + DISPLAY_HEAD_STRIDE * head as u32
                    + match register {
                        DisplayRegister::SurfaceLo => 0x00,
                        DisplayRegister::SurfaceHi => 0x04,
                        DisplayRegister::Pitch => 0x08,
                        DisplayRegister::Size => 0x0c,
                        DisplayRegister::Control => 0x10,
                    }
            }
            EngineRegister::Unassigned(offset) => offset,
        }
    }

    /// The register as LOAD_REGISTER_IMM may write it: only the GPRs.
    pub const fn guest_writable(self) -> Option<Gpr> {
        match self {
            EngineRegister::Readable(ReadableRegister::Gpr(gpr)) => Some(gpr),
            _ => None,
        }
    }

    /// The register as STORE_REGISTER may read it.
    pub const fn guest_readable(self) -> Option<ReadableRegister> {
        match self {
            EngineRegister::Readable(register) => Some(register),
            _ => None,
        }
    }
}

impl fmt::Display for EngineRegister {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let offset = self.offset();
        match self {
            EngineRegister::Readable(ReadableRegister::Gpr(gpr)) => {
                write!(f, "GPR{} ({offset:#x})", gpr.index())
            }
            EngineRegister::Display { head, register } => {
                write!(f, "display head {head} {register:?} ({offset:#x})")
            }
            EngineRegister::Unassigned(_) => write!(f, "unassigned register {offset:#x}"),
            other => write!(f, "{other:?} ({offset:#x})"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gprs_are_the_first_16_dwords() {
        for index in 0..GPR_COUNT {
            let gpr = Gpr::new(index).unwrap();
            assert_eq!(gpr.offset(), u32::from(index) * 4);
            assert_eq!(
                EngineRegister::from_offset(gpr.offset()).guest_writable(),
                Some(gpr)
            );
        }
        assert_eq!(Gpr::new(16), None);
    }

    #[test]
    fn every_named_register_round_trips_through_its_offset() {
        for offset in (0..0x2000).step_by(1) {
            let register = EngineRegister::from_offset(offset);
            assert_eq!(register.offset(), offset);
            if !matches!(register, EngineRegister::Unassigned(_)) {
                assert_eq!(offset % 4, 0, "{register}");
            }
        }
    }

    #[test]
    fn only_gprs_are_guest_writable() {
        let writable = (0..0x2000)
            .filter(|&offset| {
                EngineRegister::from_offset(offset)
                    .guest_writable()
                    .is_some()
            })
            .count();
        assert_eq!(writable, 16);
    }

    #[test]
    fn guest_readable_are_gprs_fence_and_timestamp() {
        let readable: Vec<u32> = (0..0x2000)
            .filter(|&offset| {
                EngineRegister::from_offset(offset)
                    .guest_readable()
                    .is_some()
            })
            .collect();
        let mut expected: Vec<u32> = (0..16).map(|n| n * 4).collect();
        expected.extend([0x40, 0x44, 0x48, 0x4c]);
        assert_eq!(readable, expected);
    }

    #[test]
    fn privileged_registers_are_named() {
        assert_eq!(EngineRegister::from_offset(0x104), EngineRegister::PtRootLo);
        assert_eq!(
            EngineRegister::from_offset(0x1310),
            EngineRegister::Display {
                head: 3,
                register: DisplayRegister::Control
            }
        );
        assert_eq!(
            EngineRegister::from_offset(0x1400),
            EngineRegister::Unassigned(0x1400)
        );
        assert_eq!(
            EngineRegister::from_offset(0x2),
            EngineRegister::Unassigned(2)
        );
        assert_eq!(
            EngineRegister::from_offset(u32::MAX),
            EngineRegister::Unassigned(u32::MAX)
        );
        assert_eq!(EngineRegister::PtRootLo.to_string(), "PtRootLo (0x104)");
    }
}
