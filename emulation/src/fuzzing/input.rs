//! The `device_access` fuzz input: a device profile and a sequence of
//! guest accesses and owner events, decoded from bytes (missing bytes read
//! as 0, so every input decodes) and encoded back for hand-made seeds.
//!
//! Layout:
//!
//! | bytes | meaning |
//! | --- | --- |
//! | 0 | channels − 1, modulo 63 |
//! | 1 | VRAM size: [`VRAM_SIZES`]`[byte % 8]` |
//! | 2 | maximum resolution: [`RESOLUTIONS`]`[byte % 8]` |
//! | 3– | records, at most [`MAX_OPS`], each an opcode byte and its operands |
//!
//! Opcode bits 2:0 pick the record:
//!
//! | bits 2:0 | record | operands |
//! | --- | --- | --- |
//! | 0–3 | guest write | region, offset, length, then `length` data bytes |
//! | 4, 5 | guest read | region, offset, length |
//! | 6 | owner event, bits 5:3 | see below |
//! | 7 | device reset | — |
//!
//! An access's operands: opcode bit 3 set, the region is a `u32`, else one
//! byte (so 9–255 name no region either); bit 4 set, the offset is a `u64`,
//! else a `u16`; bits 7:5 give the length: 0–3 mean 1, 2, 4, 8 bytes, 4
//! means 0 bytes, 5–7 read a `u16` taken modulo [`MAX_ACCESS_LEN`] + 1.
//! Integers are little-endian.
//!
//! Owner events, by opcode bits 5:3: 0 `complete_dma(Ok)`; 1–3
//! `complete_dma(Err)` with `NotMapped`, `ReadOnly`, `Failed`; 4
//! `complete_translate(Ok)`, a `u64` address and a byte whose bit 0 is
//! `system`; 5 `complete_translate(Err)`, a reason byte; 6 `record_fault`,
//! a `u32` channel, a `u64` VA and a byte (bit 0 write, the rest the
//! reason); 7 `set_intx_asserted(opcode bit 6)`. A reason byte `r` means
//! [`FAULT_REASONS`]`[r % 6]`.

use crate::config::{DeviceConfig, Resolution};
use crate::effects::{DmaFault, Fault, FaultReason, Translation};

/// The VRAM sizes the header chooses from: both ends of the allowed range
/// and sizes around the 4 GiB at which VIDEO_MEMORY_64K saturates.
pub const VRAM_SIZES: [u64; 8] = [
    1 << 20,
    2 << 20,
    16 << 20,
    256 << 20,
    1 << 30,
    4 << 30,
    8 << 30,
    64 << 30,
];

/// The maximum resolutions the header chooses from, all valid profiles.
pub const RESOLUTIONS: [Resolution; 8] = [
    Resolution {
        width: 320,
        height: 200,
    },
    Resolution {
        width: 640,
        height: 480,
    },
    Resolution {
        width: 800,
        height: 600,
    },
    Resolution {
        width: 1024,
        height: 768,
    },
    Resolution {
        width: 1280,
        height: 720,
    },
    Resolution {
        width: 1920,
        height: 1080,
    },
    Resolution {
        width: 2560,
        height: 1600,
    },
    Resolution {
        width: 3840,
        height: 2160,
    },
];

/// The fault reasons a reason byte chooses from.
pub const FAULT_REASONS: [FaultReason; 6] = [
    FaultReason::NotPresent,
    FaultReason::InvalidEntry,
    FaultReason::OutsideVram,
    FaultReason::NotMapped,
    FaultReason::ReadOnly,
    FaultReason::WalkLimit,
];

/// Longest access an input can ask for: all of config space and a bit.
pub const MAX_ACCESS_LEN: usize = 4096 + 16;

/// Most records decoded from one input; the rest is ignored, so that one
/// input stays quick to run.
pub const MAX_OPS: usize = 64;

const DMA_FAULTS: [DmaFault; 3] = [DmaFault::NotMapped, DmaFault::ReadOnly, DmaFault::Failed];

/// One thing that happens to the device: a guest access (with the raw
/// region index a VMM sends) or an owner event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// The guest reads `len` bytes.
    Read {
        /// Raw VFIO region index.
        region: u32,
        /// Offset in the region.
        offset: u64,
        /// Bytes to read.
        len: usize,
    },
    /// The guest writes `data`.
    Write {
        /// Raw VFIO region index.
        region: u32,
        /// Offset in the region.
        offset: u64,
        /// The bytes written.
        data: Vec<u8>,
    },
    /// The owner reports a DMA.
    CompleteDma(Result<(), DmaFault>),
    /// The owner reports a translation.
    CompleteTranslate(Result<Translation, FaultReason>),
    /// The owner reports a GPU MMU fault.
    RecordFault(Fault),
    /// The owner mirrors the INTx line.
    SetIntxAsserted(bool),
    /// Device reset.
    Reset,
}

/// A decoded fuzz input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Case {
    /// The profile, built from the header's choices.
    pub config: DeviceConfig,
    /// What happens to the device, in order.
    pub ops: Vec<Op>,
}

struct Input<'a>(&'a [u8]);

impl Input<'_> {
    fn byte(&mut self) -> u8 {
        match self.0.split_first() {
            Some((&byte, rest)) => {
                self.0 = rest;
                byte
            }
            None => 0,
        }
    }

    fn array<const N: usize>(&mut self) -> [u8; N] {
        let mut bytes = [0; N];
        for byte in &mut bytes {
            *byte = self.byte();
        }
        bytes
    }

    fn u16(&mut self) -> u16 {
        u16::from_le_bytes(self.array())
    }

    fn u32(&mut self) -> u32 {
        u32::from_le_bytes(self.array())
    }

    fn u64(&mut self) -> u64 {
        u64::from_le_bytes(self.array())
    }

    fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.byte()).collect()
    }
}

/// A profile from the header's three choices.
pub fn config(channels: u8, vram: u8, resolution: u8) -> DeviceConfig {
    DeviceConfig {
        vram_size: VRAM_SIZES[usize::from(vram % 8)],
        channels: u32::from(channels % 63) + 1,
        max_resolution: RESOLUTIONS[usize::from(resolution % 8)],
        subsystem_vendor_id: 0x1af4,
        subsystem_id: 0x1100,
    }
}

impl Case {
    /// Decodes any bytes.
    pub fn decode(data: &[u8]) -> Case {
        let mut input = Input(data);
        let config = config(input.byte(), input.byte(), input.byte());
        let mut ops = Vec::new();
        while !input.0.is_empty() && ops.len() < MAX_OPS {
            ops.push(decode_op(&mut input));
        }
        Case { config, ops }
    }

    /// Encodes the case so that [`Case::decode`] gives it back.
    ///
    /// Panics if it cannot: the profile is not one the header can choose
    /// or an operand is out of the layout's range (test set-up only).
    pub fn encode(&self) -> Vec<u8> {
        let config = &self.config;
        let position = |found: Option<usize>, what: &str| -> u8 {
            found.unwrap_or_else(|| panic!("{what} is not one the header chooses")) as u8
        };
        let mut out = vec![
            position(
                (1..=63)
                    .contains(&config.channels)
                    .then(|| config.channels as usize - 1),
                "channel count",
            ),
            position(
                VRAM_SIZES.iter().position(|&s| s == config.vram_size),
                "VRAM size",
            ),
            position(
                RESOLUTIONS.iter().position(|&r| r == config.max_resolution),
                "resolution",
            ),
        ];
        assert_eq!(self.config, self::config(out[0], out[1], out[2]), "profile");
        assert!(self.ops.len() <= MAX_OPS, "more than {MAX_OPS} records");
        for op in &self.ops {
            encode_op(op, &mut out);
        }
        out
    }
}

fn decode_op(input: &mut Input<'_>) -> Op {
    let opcode = input.byte();
    match opcode & 7 {
        0..=3 => {
            let (region, offset, len) = access(input, opcode);
            let data = input.bytes(len);
            Op::Write {
                region,
                offset,
                data,
            }
        }
        4 | 5 => {
            let (region, offset, len) = access(input, opcode);
            Op::Read {
                region,
                offset,
                len,
            }
        }
        6 => owner_event(input, opcode),
        _ => Op::Reset,
    }
}

fn access(input: &mut Input<'_>, opcode: u8) -> (u32, u64, usize) {
    let region = if opcode & 0x08 != 0 {
        input.u32()
    } else {
        u32::from(input.byte())
    };
    let offset = if opcode & 0x10 != 0 {
        input.u64()
    } else {
        u64::from(input.u16())
    };
    let len = match opcode >> 5 {
        0 => 1,
        1 => 2,
        2 => 4,
        3 => 8,
        4 => 0,
        _ => usize::from(input.u16()) % (MAX_ACCESS_LEN + 1),
    };
    (region, offset, len)
}

fn reason(byte: u8) -> FaultReason {
    FAULT_REASONS[usize::from(byte) % FAULT_REASONS.len()]
}

fn owner_event(input: &mut Input<'_>, opcode: u8) -> Op {
    match (opcode >> 3) & 7 {
        0 => Op::CompleteDma(Ok(())),
        fault @ 1..=3 => Op::CompleteDma(Err(DMA_FAULTS[usize::from(fault) - 1])),
        4 => {
            let address = input.u64();
            let system = input.byte() & 1 != 0;
            Op::CompleteTranslate(Ok(Translation { address, system }))
        }
        5 => Op::CompleteTranslate(Err(reason(input.byte()))),
        6 => {
            let channel = input.u32();
            let va = input.u64();
            let flags = input.byte();
            Op::RecordFault(Fault {
                channel,
                va,
                write: flags & 1 != 0,
                reason: reason(flags >> 1),
            })
        }
        _ => Op::SetIntxAsserted(opcode & 0x40 != 0),
    }
}

fn reason_byte(reason: FaultReason) -> u8 {
    FAULT_REASONS
        .iter()
        .position(|&r| r == reason)
        .expect("every reason is listed") as u8
}

fn encode_access(out: &mut Vec<u8>, kind: u8, region: u32, offset: u64, len: usize) {
    let mut opcode = kind;
    let narrow_region = u8::try_from(region).ok();
    let narrow_offset = u16::try_from(offset).ok();
    if narrow_region.is_none() {
        opcode |= 0x08;
    }
    if narrow_offset.is_none() {
        opcode |= 0x10;
    }
    let class = match len {
        1 => 0,
        2 => 1,
        4 => 2,
        8 => 3,
        0 => 4,
        _ => 5,
    };
    out.push(opcode | class << 5);
    match narrow_region {
        Some(byte) => out.push(byte),
        None => out.extend(region.to_le_bytes()),
    }
    match narrow_offset {
        Some(short) => out.extend(short.to_le_bytes()),
        None => out.extend(offset.to_le_bytes()),
    }
    if class == 5 {
        assert!(len <= MAX_ACCESS_LEN, "{len}-byte access is too long");
        out.extend((len as u16).to_le_bytes());
    }
}

fn encode_op(op: &Op, out: &mut Vec<u8>) {
    const EVENT: u8 = 6;
    match op {
        Op::Write {
            region,
            offset,
            data,
        } => {
            encode_access(out, 0, *region, *offset, data.len());
            out.extend(data);
        }
        Op::Read {
            region,
            offset,
            len,
        } => encode_access(out, 4, *region, *offset, *len),
        Op::CompleteDma(result) => {
            let event = match result {
                Ok(()) => 0,
                Err(fault) => 1 + DMA_FAULTS.iter().position(|f| f == fault).unwrap_or(0) as u8,
            };
            out.push(EVENT | event << 3);
        }
        Op::CompleteTranslate(Ok(translation)) => {
            out.push(EVENT | 4 << 3);
            out.extend(translation.address.to_le_bytes());
            out.push(u8::from(translation.system));
        }
        Op::CompleteTranslate(Err(reason)) => {
            out.push(EVENT | 5 << 3);
            out.push(reason_byte(*reason));
        }
        Op::RecordFault(fault) => {
            out.push(EVENT | 6 << 3);
            out.extend(fault.channel.to_le_bytes());
            out.extend(fault.va.to_le_bytes());
            out.push(u8::from(fault.write) | reason_byte(fault.reason) << 1);
        }
        Op::SetIntxAsserted(asserted) => out.push(EVENT | 7 << 3 | u8::from(*asserted) << 6),
        Op::Reset => out.push(7),
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn missing_bytes_read_as_zero() {
        // An 8-byte write to region 2 whose offset and data are missing.
        let case = Case::decode(&[0, 0, 0, 3 << 5, 2]);
        assert_eq!(case.config, config(0, 0, 0));
        let write = Op::Write {
            region: 2,
            offset: 0,
            data: vec![0; 8],
        };
        assert_eq!(case.ops, vec![write]);
    }

    #[test]
    fn wide_operands_and_explicit_lengths_decode() {
        let mut data = vec![62, 7, 7, 4 | 0x08 | 0x10 | 5 << 5];
        data.extend(u32::MAX.to_le_bytes());
        data.extend((u64::MAX - 2).to_le_bytes());
        data.extend(((MAX_ACCESS_LEN + 1 + 3) as u16).to_le_bytes());
        let case = Case::decode(&data);
        assert_eq!(case.config.channels, 63);
        assert_eq!(case.config.vram_size, 64 << 30);
        let read = Op::Read {
            region: u32::MAX,
            offset: u64::MAX - 2,
            len: 3,
        };
        assert_eq!(case.ops, vec![read]);
    }

    #[test]
    fn records_past_the_limit_are_ignored() {
        let mut data = vec![0; 3];
        data.resize(3 + MAX_OPS + 10, 7);
        assert_eq!(Case::decode(&data).ops, vec![Op::Reset; MAX_OPS]);
    }

    #[test]
    fn every_header_choice_is_a_valid_profile() {
        for vram in 0..8 {
            for resolution in 0..8 {
                for channels in [0, 62] {
                    assert_eq!(config(channels, vram, resolution).validate(), Ok(()));
                }
            }
        }
    }

    proptest! {
        #[test]
        fn a_decoded_input_encodes_to_bytes_that_decode_to_it(
            data in prop::collection::vec(any::<u8>(), 0..512)
        ) {
            let case = Case::decode(&data);
            prop_assert_eq!(Case::decode(&case.encode()), case);
        }
    }
}
