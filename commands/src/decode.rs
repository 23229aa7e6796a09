//! The decoder: one command of the physical command set, from dwords to a
//! typed value.
//!
//! Every header and field rule of the command set is checked here, in the
//! order the device interface documents: the opcode (code 1), the length
//! (code 2: the header's length field, then whether the command fits in
//! what is left of its ring span or batch), reserved header bits (code 8),
//! the privileged forms (codes 3, 4, 5), then the fields (code 8). What
//! passes is either a guest [`Command`], a batch boundary, or a
//! [`Privileged`] form, recognised and typed so that the validator can
//! name what it refuses.

use std::fmt;

use thiserror::Error;

use crate::addr::GpuVa;
use crate::command::{
    Blit2d, Command, CompareOp, FenceValue, MAX_SURFACE_DIMENSION, Scanout, TlbScope,
};
use crate::error::ChannelErrorCode;
use crate::opcode::{
    FLAG_BATCH_PRIVILEGED, FLAG_FENCE_INTERRUPT, FLAG_FENCE_VALUE64, FLAG_PHYSICAL,
    FLAG_SEMAPHORE_COMPARE_MASK, FLAG_SEMAPHORE_COMPARE_SHIFT, FLAG_TLB_ALL, HEADER_FLAGS_MASK,
    HEADER_RESERVED_MASK, Opcode, header_dwords, header_opcode,
};
use crate::registers::EngineRegister;

/// One decoded command of the physical command set.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Decoded {
    /// A command a guest may run.
    Command(Command),
    /// BATCH_START: run the batch of `bytes` bytes at `batch`, then go on
    /// after this command. `batch` is 4-byte aligned, `bytes` a non-zero
    /// multiple of 4, and the batch lies below 2^48.
    BatchStart {
        /// The batch's first dword.
        batch: GpuVa,
        /// The batch's length in bytes.
        bytes: u32,
    },
    /// BATCH_END: the end of the current batch.
    BatchEnd,
    /// A form the physical GPU accepts and a guest must never use.
    Privileged(Privileged),
}

/// The privileged forms of the command set, recognised.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Privileged {
    /// A memory command with PHYSICAL set: its addresses bypass the MMU.
    PhysicalAddressing {
        /// The command.
        opcode: Opcode,
    },
    /// BATCH_START with PRIVILEGED set.
    PrivilegedBatch,
    /// SET_CONTEXT: switch the engine to another hardware context.
    SetContext {
        /// The context named.
        context: u32,
    },
    /// SET_PT_ROOT: switch the context's page tables.
    SetPtRoot {
        /// The root named (the PT_ROOT format of the GPU MMU).
        root: u64,
    },
    /// LOAD_REGISTER_IMM to a register that is not a GPR.
    LoadRegister {
        /// The register named.
        register: EngineRegister,
        /// The value it would have loaded.
        value: u32,
    },
    /// STORE_REGISTER of a register outside the guest's readable set.
    StoreRegister {
        /// The register named.
        register: EngineRegister,
    },
    /// SET_SCANOUT to a head other than the vGPU's head 0.
    OtherHead {
        /// The head named.
        head: u32,
    },
}

impl Privileged {
    /// The channel error a guest gets for using it: PRIVILEGED (3),
    /// REGISTER_NOT_ALLOWED (4) or DISPLAY_HEAD (5).
    pub const fn code(&self) -> ChannelErrorCode {
        match self {
            Privileged::PhysicalAddressing { .. }
            | Privileged::PrivilegedBatch
            | Privileged::SetContext { .. }
            | Privileged::SetPtRoot { .. } => ChannelErrorCode::Privileged,
            Privileged::LoadRegister { .. } | Privileged::StoreRegister { .. } => {
                ChannelErrorCode::RegisterNotAllowed
            }
            Privileged::OtherHead { .. } => ChannelErrorCode::DisplayHead,
        }
    }
}

impl fmt::Display for Privileged {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Privileged::PhysicalAddressing { opcode } => {
                write!(f, "{opcode} with PHYSICAL set would bypass the MMU")
            }
            Privileged::PrivilegedBatch => f.write_str("BATCH_START with PRIVILEGED set"),
            Privileged::SetContext { context } => write!(f, "SET_CONTEXT to context {context}"),
            Privileged::SetPtRoot { root } => write!(f, "SET_PT_ROOT to {root:#x}"),
            Privileged::LoadRegister { register, .. } => {
                write!(
                    f,
                    "LOAD_REGISTER_IMM to {register}, which a guest may not write"
                )
            }
            Privileged::StoreRegister { register } => {
                write!(
                    f,
                    "STORE_REGISTER of {register}, which a guest may not read"
                )
            }
            Privileged::OtherHead { head } => {
                write!(
                    f,
                    "SET_SCANOUT to display head {head}; the vGPU has head 0 only"
                )
            }
        }
    }
}

/// A command that does not decode.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Error)]
pub enum DecodeError {
    /// The opcode is not assigned.
    #[error("opcode {opcode:#04x} is not assigned")]
    UnknownOpcode {
        /// Header bits 7:0.
        opcode: u8,
    },
    /// The header's length field is not the opcode's length.
    #[error("{opcode} cannot be {dwords} dwords long")]
    BadLength {
        /// The command.
        opcode: Opcode,
        /// Header bits 15:8.
        dwords: usize,
    },
    /// The command runs past the end of its ring span or batch.
    #[error("the command is {dwords} dwords long but only {available} remain")]
    Truncated {
        /// The command's length.
        dwords: usize,
        /// Dwords left in the ring span or batch, the header included.
        available: usize,
    },
    /// A reserved bit is set or a field is out of its range.
    #[error("{opcode}: {field}")]
    BadField {
        /// The command.
        opcode: Opcode,
        /// What is wrong.
        field: FieldError,
    },
}

impl DecodeError {
    /// The channel error: UNKNOWN_OPCODE (1), BAD_LENGTH (2) or BAD_FIELD
    /// (8).
    pub const fn code(&self) -> ChannelErrorCode {
        match self {
            DecodeError::UnknownOpcode { .. } => ChannelErrorCode::UnknownOpcode,
            DecodeError::BadLength { .. } | DecodeError::Truncated { .. } => {
                ChannelErrorCode::BadLength
            }
            DecodeError::BadField { .. } => ChannelErrorCode::BadField,
        }
    }
}

/// A field that breaks its rule. `dword` counts from the header (0).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Error)]
pub enum FieldError {
    /// Header bits that the opcode does not define are set.
    #[error("reserved header bits {bits:#010x} are set")]
    ReservedHeaderBits {
        /// The offending bits.
        bits: u32,
    },
    /// Reserved bits of a payload dword are set.
    #[error("reserved bits {bits:#010x} of dword {dword} are set")]
    ReservedBits {
        /// The dword.
        dword: u8,
        /// The offending bits.
        bits: u32,
    },
    /// An address at or above 2^48.
    #[error("the GPU VA {value:#x} in dwords {dword} and {} is at or above 2^48", dword + 1)]
    VaOutOfRange {
        /// The address's low dword.
        dword: u8,
        /// The address.
        value: u64,
    },
    /// An address, length or pitch that is not a multiple of what it must
    /// be.
    #[error("{value:#x} in dword {dword} is not a multiple of {align}")]
    Misaligned {
        /// The field's (first) dword.
        dword: u8,
        /// The field.
        value: u64,
        /// The multiple it must be.
        align: u32,
    },
    /// A range that runs past 2^48.
    #[error("{bytes:#x} bytes from GPU VA {start} (dword {dword}) run past 2^48")]
    PastAddressSpace {
        /// The address's low dword.
        dword: u8,
        /// The first address.
        start: GpuVa,
        /// The bytes the command reaches from it.
        bytes: u64,
    },
    /// A length or size outside its bounds.
    #[error("{value:#x} in dword {dword} is outside {min:#x}..={max:#x}")]
    OutOfBounds {
        /// The field's (first) dword.
        dword: u8,
        /// The field.
        value: u64,
        /// Its least value.
        min: u64,
        /// Its greatest value.
        max: u64,
    },
    /// A pitch shorter than a row.
    #[error("pitch {pitch} in dword {dword} is less than a row of {width} 32-bit pixels")]
    PitchTooSmall {
        /// The pitch's dword.
        dword: u8,
        /// The pitch in bytes.
        pitch: u32,
        /// The row in pixels.
        width: u32,
    },
    /// A SEMAPHORE_WAIT compare operation that does not exist.
    #[error("compare operation {value} is not one of 0 to 5")]
    CompareOp {
        /// Header bits 19:17.
        value: u32,
    },
}

/// Decodes the command that starts at `words[0]`, reading no further than
/// `words` reaches (the rest of its ring span or batch). Returns the
/// command and its length in dwords.
#[inline]
pub fn decode(words: &[u32]) -> Result<(Decoded, usize), DecodeError> {
    let Some(&header) = words.first() else {
        return Err(truncated(1, 0));
    };
    // One dispatch on the opcode; each arm's generic checks fold to
    // constants.
    match header_opcode(header) {
        0x01 => nop(words, header),
        0x02 => fixed_length(words, header, Opcode::Copy, copy),
        0x03 => fixed_length(words, header, Opcode::Fill, fill),
        0x04 => fixed_length(words, header, Opcode::Blit2d, blit2d),
        0x05 => fixed_length(words, header, Opcode::Fence, fence),
        0x06 => fixed_length(words, header, Opcode::SemaphoreWait, semaphore_wait),
        0x07 => fixed_length(words, header, Opcode::BatchStart, batch_start),
        0x08 => fixed_length(words, header, Opcode::BatchEnd, |_: &[u32; 1]| {
            Ok(Decoded::BatchEnd)
        }),
        0x09 => fixed_length(words, header, Opcode::TlbInvalidate, tlb_invalidate),
        0x0a => fixed_length(words, header, Opcode::Timestamp, timestamp),
        0x0b => fixed_length(words, header, Opcode::LoadRegisterImm, load_register_imm),
        0x0c => fixed_length(words, header, Opcode::StoreRegister, store_register),
        0x0d => fixed_length(words, header, Opcode::SetScanout, set_scanout),
        0x0e => fixed_length(
            words,
            header,
            Opcode::SetContext,
            |&[_, context]: &[u32; 2]| Ok(Decoded::Privileged(Privileged::SetContext { context })),
        ),
        0x0f => fixed_length(
            words,
            header,
            Opcode::SetPtRoot,
            |&[_, lo, hi]: &[u32; 3]| {
                Ok(Decoded::Privileged(Privileged::SetPtRoot {
                    root: u64::from(lo) | u64::from(hi) << 32,
                }))
            },
        ),
        opcode => Err(DecodeError::UnknownOpcode { opcode }),
    }
}

/// The checks every command goes through before its fields, in order:
/// length, room left, reserved header bits, PHYSICAL.
#[inline(always)]
fn prologue(
    words: &[u32],
    header: u32,
    opcode: Opcode,
    length_ok: bool,
) -> Result<Option<(Decoded, usize)>, DecodeError> {
    let dwords = header_dwords(header);
    if !length_ok {
        return Err(DecodeError::BadLength { opcode, dwords });
    }
    if words.len() < dwords {
        return Err(truncated(dwords, words.len()));
    }
    let reserved = header & (HEADER_RESERVED_MASK | (HEADER_FLAGS_MASK & !opcode.flags()));
    if reserved != 0 {
        return Err(bad_field(
            opcode,
            FieldError::ReservedHeaderBits { bits: reserved },
        ));
    }
    if header & FLAG_PHYSICAL != 0 {
        return Ok(Some((
            Decoded::Privileged(Privileged::PhysicalAddressing { opcode }),
            dwords,
        )));
    }
    Ok(None)
}

#[inline(always)]
fn nop(words: &[u32], header: u32) -> Result<(Decoded, usize), DecodeError> {
    let dwords = header_dwords(header);
    prologue(words, header, Opcode::Nop, dwords != 0)?;
    // The length check keeps it in 1..=255.
    let dwords_u8 = dwords as u8;
    Ok((Decoded::Command(Command::Nop { dwords: dwords_u8 }), dwords))
}

#[inline(always)]
fn fixed_length<const N: usize>(
    words: &[u32],
    header: u32,
    opcode: Opcode,
    fields: impl FnOnce(&[u32; N]) -> FieldResult<Decoded>,
) -> Result<(Decoded, usize), DecodeError> {
    if let Some(privileged) = prologue(words, header, opcode, header_dwords(header) == N)? {
        return Ok(privileged);
    }
    match fields(fixed(words)?) {
        Ok(decoded) => Ok((decoded, N)),
        Err(field) => Err(bad_field(opcode, field)),
    }
}

#[cold]
fn truncated(dwords: usize, available: usize) -> DecodeError {
    DecodeError::Truncated { dwords, available }
}

#[cold]
fn bad_field(opcode: Opcode, field: FieldError) -> DecodeError {
    DecodeError::BadField { opcode, field }
}

/// The first `N` dwords. The length checks in [`decode`] have made sure
/// they are there; this only turns the slice into an array without a
/// panic path.
#[inline(always)]
fn fixed<const N: usize>(words: &[u32]) -> Result<&[u32; N], DecodeError> {
    words.first_chunk().ok_or_else(|| truncated(N, words.len()))
}

type FieldResult<T> = Result<T, FieldError>;

#[inline(always)]
fn va(lo: u32, hi: u32, dword: u8) -> FieldResult<GpuVa> {
    let value = u64::from(lo) | u64::from(hi) << 32;
    GpuVa::new(value).ok_or(FieldError::VaOutOfRange { dword, value })
}

#[inline(always)]
fn aligned(va: GpuVa, align: u32, dword: u8) -> FieldResult<GpuVa> {
    if va.is_aligned(u64::from(align)) {
        Ok(va)
    } else {
        Err(FieldError::Misaligned {
            dword,
            value: va.get(),
            align,
        })
    }
}

#[inline(always)]
fn fits(start: GpuVa, bytes: u64, dword: u8) -> FieldResult<()> {
    if start.fits(bytes) {
        Ok(())
    } else {
        Err(FieldError::PastAddressSpace {
            dword,
            start,
            bytes,
        })
    }
}

/// A byte count that must be a non-zero multiple of 4 below 2^32.
#[inline(always)]
fn dword_bytes(bytes: u32, dword: u8) -> FieldResult<u32> {
    if bytes == 0 {
        return Err(FieldError::OutOfBounds {
            dword,
            value: 0,
            min: 4,
            max: 0xffff_fffc,
        });
    }
    if !bytes.is_multiple_of(4) {
        return Err(FieldError::Misaligned {
            dword,
            value: u64::from(bytes),
            align: 4,
        });
    }
    Ok(bytes)
}

#[inline(always)]
fn dimension(value: u32, dword: u8) -> FieldResult<u32> {
    if (1..=MAX_SURFACE_DIMENSION).contains(&value) {
        Ok(value)
    } else {
        Err(FieldError::OutOfBounds {
            dword,
            value: u64::from(value),
            min: 1,
            max: u64::from(MAX_SURFACE_DIMENSION),
        })
    }
}

/// A pitch for rows of `width` 32-bit pixels: a multiple of 4, at least a
/// row.
#[inline(always)]
fn pitch(pitch: u32, width: u32, dword: u8) -> FieldResult<u32> {
    if !pitch.is_multiple_of(4) {
        return Err(FieldError::Misaligned {
            dword,
            value: u64::from(pitch),
            align: 4,
        });
    }
    if u64::from(pitch) < u64::from(width) * 4 {
        return Err(FieldError::PitchTooSmall {
            dword,
            pitch,
            width,
        });
    }
    Ok(pitch)
}

/// Bytes from a surface's first pixel to one past its last.
#[inline(always)]
fn footprint(pitch: u32, width: u32, height: u32) -> u64 {
    u64::from(pitch) * u64::from(height - 1) + u64::from(width) * 4
}

#[inline(always)]
fn copy(&[_, src_lo, src_hi, dst_lo, dst_hi, bytes]: &[u32; 6]) -> FieldResult<Decoded> {
    let src = va(src_lo, src_hi, 1)?;
    let dst = va(dst_lo, dst_hi, 3)?;
    if bytes == 0 {
        return Err(FieldError::OutOfBounds {
            dword: 5,
            value: 0,
            min: 1,
            max: u64::from(u32::MAX),
        });
    }
    fits(src, u64::from(bytes), 1)?;
    fits(dst, u64::from(bytes), 3)?;
    Ok(Decoded::Command(Command::Copy { src, dst, bytes }))
}

#[inline(always)]
fn fill(&[_, lo, hi, bytes, pattern]: &[u32; 5]) -> FieldResult<Decoded> {
    let dst = aligned(va(lo, hi, 1)?, 4, 1)?;
    let bytes = dword_bytes(bytes, 3)?;
    fits(dst, u64::from(bytes), 1)?;
    Ok(Decoded::Command(Command::Fill {
        dst,
        bytes,
        pattern,
    }))
}

#[inline(always)]
fn blit2d(
    &[
        _,
        src_lo,
        src_hi,
        src_pitch,
        dst_lo,
        dst_hi,
        dst_pitch,
        width,
        height,
    ]: &[u32; 9],
) -> FieldResult<Decoded> {
    let src = aligned(va(src_lo, src_hi, 1)?, 4, 1)?;
    let dst = aligned(va(dst_lo, dst_hi, 4)?, 4, 4)?;
    let width = dimension(width, 7)?;
    let height = dimension(height, 8)?;
    let src_pitch = pitch(src_pitch, width, 3)?;
    let dst_pitch = pitch(dst_pitch, width, 6)?;
    fits(src, footprint(src_pitch, width, height), 1)?;
    fits(dst, footprint(dst_pitch, width, height), 4)?;
    Ok(Decoded::Command(Command::Blit2d(Blit2d {
        src,
        src_pitch,
        dst,
        dst_pitch,
        width,
        height,
    })))
}

#[inline(always)]
fn fence(&[header, lo, hi, value_lo, value_hi]: &[u32; 5]) -> FieldResult<Decoded> {
    let value = if header & FLAG_FENCE_VALUE64 != 0 {
        FenceValue::U64(u64::from(value_lo) | u64::from(value_hi) << 32)
    } else if value_hi != 0 {
        return Err(FieldError::ReservedBits {
            dword: 4,
            bits: value_hi,
        });
    } else {
        FenceValue::U32(value_lo)
    };
    let dst = va(lo, hi, 1)?;
    // A value's size is 4 or 8.
    let dst = aligned(dst, value.bytes() as u32, 1)?;
    Ok(Decoded::Command(Command::Fence {
        dst,
        value,
        interrupt: header & FLAG_FENCE_INTERRUPT != 0,
    }))
}

#[inline(always)]
fn semaphore_wait(&[header, lo, hi, value]: &[u32; 4]) -> FieldResult<Decoded> {
    let op = (header & FLAG_SEMAPHORE_COMPARE_MASK) >> FLAG_SEMAPHORE_COMPARE_SHIFT;
    let compare = CompareOp::from_u32(op).ok_or(FieldError::CompareOp { value: op })?;
    let addr = aligned(va(lo, hi, 1)?, 4, 1)?;
    Ok(Decoded::Command(Command::SemaphoreWait {
        addr,
        compare,
        value,
    }))
}

#[inline(always)]
fn batch_start(&[header, lo, hi, bytes]: &[u32; 4]) -> FieldResult<Decoded> {
    if header & FLAG_BATCH_PRIVILEGED != 0 {
        return Ok(Decoded::Privileged(Privileged::PrivilegedBatch));
    }
    let batch = aligned(va(lo, hi, 1)?, 4, 1)?;
    let bytes = dword_bytes(bytes, 3)?;
    fits(batch, u64::from(bytes), 1)?;
    Ok(Decoded::BatchStart { batch, bytes })
}

#[inline(always)]
fn tlb_invalidate(&[header, lo, hi, size_lo, size_hi]: &[u32; 5]) -> FieldResult<Decoded> {
    if header & FLAG_TLB_ALL != 0 {
        for (dword, bits) in [(1, lo), (2, hi), (3, size_lo), (4, size_hi)] {
            if bits != 0 {
                return Err(FieldError::ReservedBits { dword, bits });
            }
        }
        return Ok(Decoded::Command(Command::TlbInvalidate(TlbScope::All)));
    }
    const PAGE: u32 = 4096;
    let start = aligned(va(lo, hi, 1)?, PAGE, 1)?;
    let bytes = u64::from(size_lo) | u64::from(size_hi) << 32;
    if bytes == 0 {
        return Err(FieldError::OutOfBounds {
            dword: 3,
            value: 0,
            min: u64::from(PAGE),
            max: crate::addr::GPU_VA_SPACE,
        });
    }
    if !bytes.is_multiple_of(u64::from(PAGE)) {
        return Err(FieldError::Misaligned {
            dword: 3,
            value: bytes,
            align: PAGE,
        });
    }
    fits(start, bytes, 1)?;
    Ok(Decoded::Command(Command::TlbInvalidate(TlbScope::Range {
        start,
        bytes,
    })))
}

#[inline(always)]
fn timestamp(&[_, lo, hi]: &[u32; 3]) -> FieldResult<Decoded> {
    let dst = aligned(va(lo, hi, 1)?, 8, 1)?;
    Ok(Decoded::Command(Command::Timestamp { dst }))
}

#[inline(always)]
fn load_register_imm(&[_, offset, value]: &[u32; 3]) -> FieldResult<Decoded> {
    let register = EngineRegister::from_offset(offset);
    Ok(match register.guest_writable() {
        Some(register) => Decoded::Command(Command::LoadRegisterImm { register, value }),
        None => Decoded::Privileged(Privileged::LoadRegister { register, value }),
    })
}

#[inline(always)]
fn store_register(&[_, offset, lo, hi]: &[u32; 4]) -> FieldResult<Decoded> {
    let register = EngineRegister::from_offset(offset);
    let Some(register) = register.guest_readable() else {
        return Ok(Decoded::Privileged(Privileged::StoreRegister { register }));
    };
    let dst = aligned(va(lo, hi, 2)?, 4, 2)?;
    Ok(Decoded::Command(Command::StoreRegister { register, dst }))
}

#[inline(always)]
fn set_scanout(&[_, head, lo, hi, pitch_bytes, width, height]: &[u32; 7]) -> FieldResult<Decoded> {
    if head != 0 {
        return Ok(Decoded::Privileged(Privileged::OtherHead { head }));
    }
    let surface = aligned(va(lo, hi, 2)?, 4096, 2)?;
    let width = dimension(width, 5)?;
    let height = dimension(height, 6)?;
    let pitch = pitch(pitch_bytes, width, 4)?;
    fits(surface, footprint(pitch, width, height), 2)?;
    Ok(Decoded::Command(Command::SetScanout(Scanout {
        surface,
        pitch,
        width,
        height,
    })))
}

#[cfg(test)]
mod tests;
