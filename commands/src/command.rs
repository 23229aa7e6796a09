//! The commands a guest may run, decoded: what an engine executes.
//!
//! Only guest forms are here: no physical addresses, no registers outside
//! the whitelist, no context or page-table switches, no head but head 0.
//! The privileged forms of the physical command set are decoded into
//! [`Privileged`](crate::Privileged) instead, which nothing executes.
//! BATCH_START and BATCH_END are not here either: the validator follows
//! them, and hands the engine the batches' commands in execution order.

use crate::addr::GpuVa;
use crate::opcode::Opcode;
use crate::registers::{Gpr, ReadableRegister};

/// A command a guest may run, with every field checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Command {
    /// Does nothing.
    Nop {
        /// Its length in dwords, header included (1–255).
        dwords: u8,
    },
    /// Copies `bytes` bytes from `src` to `dst` (both ranges below 2^48,
    /// any alignment). If the ranges overlap, what `dst` holds afterwards
    /// is unspecified.
    Copy {
        /// First source byte.
        src: GpuVa,
        /// First destination byte.
        dst: GpuVa,
        /// Bytes to copy, 1 ..= 2^32 − 1.
        bytes: u32,
    },
    /// Writes `pattern` (little-endian) to every dword of `bytes` bytes
    /// from `dst`.
    Fill {
        /// First byte, 4-byte aligned.
        dst: GpuVa,
        /// Bytes, a non-zero multiple of 4.
        bytes: u32,
        /// The 32-bit value written.
        pattern: u32,
    },
    /// Copies a rectangle of 32-bit pixels.
    Blit2d(Blit2d),
    /// Writes `value` to `dst`, then raises the channel's interrupt if
    /// `interrupt` is set.
    Fence {
        /// Where the value goes, aligned to the value's size.
        dst: GpuVa,
        /// The value and its width.
        value: FenceValue,
        /// Raise the channel's interrupt after the write.
        interrupt: bool,
    },
    /// Waits until `compare` holds between the 32-bit value at `addr` and
    /// `value` (see [`CompareOp::holds`]).
    SemaphoreWait {
        /// The semaphore, 4-byte aligned.
        addr: GpuVa,
        /// How the memory value compares with `value`.
        compare: CompareOp,
        /// The reference value.
        value: u32,
    },
    /// Invalidates translations of the channel's MMU.
    TlbInvalidate(TlbScope),
    /// Writes the 64-bit engine timestamp (ns) to `dst`.
    Timestamp {
        /// Where it goes, 8-byte aligned.
        dst: GpuVa,
    },
    /// Loads `value` into a general-purpose register.
    LoadRegisterImm {
        /// The register.
        register: Gpr,
        /// The value.
        value: u32,
    },
    /// Writes a register's 32-bit value to `dst`.
    StoreRegister {
        /// The register.
        register: ReadableRegister,
        /// Where it goes, 4-byte aligned.
        dst: GpuVa,
    },
    /// Points display head 0 at a surface.
    SetScanout(Scanout),
}

impl Command {
    /// The command's opcode.
    pub const fn opcode(&self) -> Opcode {
        match self {
            Command::Nop { .. } => Opcode::Nop,
            Command::Copy { .. } => Opcode::Copy,
            Command::Fill { .. } => Opcode::Fill,
            Command::Blit2d(_) => Opcode::Blit2d,
            Command::Fence { .. } => Opcode::Fence,
            Command::SemaphoreWait { .. } => Opcode::SemaphoreWait,
            Command::TlbInvalidate(_) => Opcode::TlbInvalidate,
            Command::Timestamp { .. } => Opcode::Timestamp,
            Command::LoadRegisterImm { .. } => Opcode::LoadRegisterImm,
            Command::StoreRegister { .. } => Opcode::StoreRegister,
            Command::SetScanout(_) => Opcode::SetScanout,
        }
    }
}

/// A BLIT2D: `height` rows of `width` 32-bit pixels, row `r` of the source
/// starting at `src + r × src_pitch` and of the destination at
/// `dst + r × dst_pitch`. Both footprints lie below 2^48. If they overlap,
/// what the destination holds afterwards is unspecified.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Blit2d {
    /// First source pixel, 4-byte aligned.
    pub src: GpuVa,
    /// Bytes from one source row to the next: a multiple of 4, at least
    /// `width × 4`.
    pub src_pitch: u32,
    /// First destination pixel, 4-byte aligned.
    pub dst: GpuVa,
    /// Bytes from one destination row to the next, likewise.
    pub dst_pitch: u32,
    /// Pixels per row, 1 ..= [`MAX_SURFACE_DIMENSION`].
    pub width: u32,
    /// Rows, 1 ..= [`MAX_SURFACE_DIMENSION`].
    pub height: u32,
}

/// A SET_SCANOUT's surface: head 0 shows `height` rows of `width` 32-bit
/// pixels (XRGB8888) from `surface`, `pitch` bytes apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Scanout {
    /// First pixel, 4 KiB aligned.
    pub surface: GpuVa,
    /// Bytes from one row to the next: a multiple of 4, at least
    /// `width × 4`.
    pub pitch: u32,
    /// Pixels per row, 1 ..= [`MAX_SURFACE_DIMENSION`].
    pub width: u32,
    /// Rows, 1 ..= [`MAX_SURFACE_DIMENSION`].
    pub height: u32,
}

/// Largest width or height of a BLIT2D rectangle or a scanout surface.
pub const MAX_SURFACE_DIMENSION: u32 = 16384;

/// A FENCE's value and width.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FenceValue {
    /// 4 bytes are written.
    U32(u32),
    /// 8 bytes are written.
    U64(u64),
}

impl FenceValue {
    /// Bytes written (and the alignment the address needs).
    pub const fn bytes(self) -> u64 {
        match self {
            FenceValue::U32(_) => 4,
            FenceValue::U64(_) => 8,
        }
    }
}

/// How SEMAPHORE_WAIT compares the value in memory with its reference
/// value, unsigned. The numbers are header bits 19:17.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum CompareOp {
    /// memory == value
    Eq = 0,
    /// memory != value
    Ne = 1,
    /// memory >= value
    Ge = 2,
    /// memory > value
    Gt = 3,
    /// memory < value
    Lt = 4,
    /// memory <= value
    Le = 5,
}

impl CompareOp {
    /// Every compare operation, in numeric order.
    pub const ALL: [CompareOp; 6] = [
        CompareOp::Eq,
        CompareOp::Ne,
        CompareOp::Ge,
        CompareOp::Gt,
        CompareOp::Lt,
        CompareOp::Le,
    ];

    /// The operation numbered `value` (0–5).
    pub const fn from_u32(value: u32) -> Option<CompareOp> {
        Some(match value {
            0 => CompareOp::Eq,
            1 => CompareOp::Ne,
            2 => CompareOp::Ge,
            3 => CompareOp::Gt,
            4 => CompareOp::Lt,
            5 => CompareOp::Le,
            _ => return None,
        })
    }

    /// Whether the wait is over: `memory` (the value at the semaphore's
    /// address) compared with `value` (the command's), unsigned.
    pub const fn holds(self, memory: u32, value: u32) -> bool {
        match self {
            CompareOp::Eq => memory == value,
            CompareOp::Ne => memory != value,
            CompareOp::Ge => memory >= value,
            CompareOp::Gt => memory > value,
            CompareOp::Lt => memory < value,
            CompareOp::Le => memory <= value,
        }
    }
}

/// What a TLB_INVALIDATE invalidates.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TlbScope {
    /// The channel's whole address space, 0 to 2^48.
    All,
    /// `bytes` bytes from `start`: both 4 KiB aligned, `bytes` > 0, and the
    /// range ends at or below 2^48.
    Range {
        /// First address.
        start: GpuVa,
        /// Length in bytes.
        bytes: u64,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compare_ops_are_unsigned() {
        let cases = [
            (CompareOp::Eq, [false, true, false]),
            (CompareOp::Ne, [true, false, true]),
            (CompareOp::Ge, [false, true, true]),
            (CompareOp::Gt, [false, false, true]),
            (CompareOp::Lt, [true, false, false]),
            (CompareOp::Le, [true, true, false]),
        ];
        for (op, [below, equal, above]) in cases {
            assert_eq!(op.holds(1, 0x8000_0000), below, "{op:?}");
            assert_eq!(op.holds(0x8000_0000, 0x8000_0000), equal, "{op:?}");
            assert_eq!(op.holds(u32::MAX, 0x8000_0000), above, "{op:?}");
            assert_eq!(CompareOp::from_u32(op as u32), Some(op));
        }
        assert_eq!(CompareOp::from_u32(6), None);
        assert_eq!(CompareOp::from_u32(7), None);
    }

    #[test]
    fn fence_values_know_their_width() {
        assert_eq!(FenceValue::U32(1).bytes(), 4);
        assert_eq!(FenceValue::U64(1).bytes(), 8);
    }
}
