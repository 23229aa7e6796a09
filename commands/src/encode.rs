//! The encoder: commands to dwords, for guest drivers, tests, benches and
//! fuzz seeds.
//!
//! [`encode`] writes a guest [`Command`] exactly as the decoder reads it
//! back. [`StreamBuilder`] writes whole streams, and also takes raw
//! numbers where the decoder would refuse them (addresses at or above
//! 2^48, any register offset, any head) and the privileged forms, so that
//! tests can build what a hostile guest would write.

use crate::command::{Blit2d, Command, CompareOp, FenceValue, Scanout, TlbScope};
use crate::opcode::{
    FLAG_FENCE_INTERRUPT, FLAG_FENCE_VALUE64, FLAG_SEMAPHORE_COMPARE_SHIFT, FLAG_TLB_ALL, Opcode,
    header,
};

/// Appends `command`'s dwords to `out`.
pub fn encode(command: &Command, out: &mut Vec<u32>) {
    let mut builder = StreamBuilder {
        words: std::mem::take(out),
        last: None,
    };
    builder.command(command);
    *out = builder.words;
}

const fn lo(value: u64) -> u32 {
    value as u32
}

const fn hi(value: u64) -> u32 {
    (value >> 32) as u32
}

/// A command stream under construction, as little-endian dwords.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StreamBuilder {
    words: Vec<u32>,
    /// Index of the last command's header, for [`with_flags`](Self::with_flags).
    last: Option<usize>,
}

impl StreamBuilder {
    /// An empty stream.
    pub fn new() -> Self {
        Self::default()
    }

    fn push(&mut self, opcode: Opcode, flags: u32, payload: &[u32]) -> &mut Self {
        self.last = Some(self.words.len());
        // Payloads here are at most 8 dwords.
        let dwords = (payload.len() + 1) as u8;
        self.words.push(header(opcode, dwords, flags));
        self.words.extend_from_slice(payload);
        self
    }

    /// Appends a guest command.
    pub fn command(&mut self, command: &Command) -> &mut Self {
        match *command {
            Command::Nop { dwords } => self.nop(dwords),
            Command::Copy { src, dst, bytes } => self.copy(src.get(), dst.get(), bytes),
            Command::Fill {
                dst,
                bytes,
                pattern,
            } => self.fill(dst.get(), bytes, pattern),
            Command::Blit2d(Blit2d {
                src,
                src_pitch,
                dst,
                dst_pitch,
                width,
                height,
            }) => self.blit2d(src.get(), src_pitch, dst.get(), dst_pitch, width, height),
            Command::Fence {
                dst,
                value: FenceValue::U32(value),
                interrupt,
            } => self.fence32(dst.get(), value, interrupt),
            Command::Fence {
                dst,
                value: FenceValue::U64(value),
                interrupt,
            } => self.fence64(dst.get(), value, interrupt),
            Command::SemaphoreWait {
                addr,
                compare,
                value,
            } => self.semaphore_wait(addr.get(), compare, value),
            Command::TlbInvalidate(TlbScope::All) => self.tlb_invalidate_all(),
            Command::TlbInvalidate(TlbScope::Range { start, bytes }) => {
                self.tlb_invalidate_range(start.get(), bytes)
            }
            Command::Timestamp { dst } => self.timestamp(dst.get()),
            Command::LoadRegisterImm { register, value } => {
                self.load_register_imm(register.offset(), value)
            }
            Command::StoreRegister { register, dst } => {
                self.store_register(register.offset(), dst.get())
            }
            Command::SetScanout(Scanout {
                surface,
                pitch,
                width,
                height,
            }) => self.set_scanout(0, surface.get(), pitch, width, height),
        }
    }

    /// NOP of `dwords` dwords (header included; 0 encodes a NOP the
    /// decoder refuses), its payload zeros.
    pub fn nop(&mut self, dwords: u8) -> &mut Self {
        self.last = Some(self.words.len());
        self.words.push(header(Opcode::Nop, dwords, 0));
        let payload = usize::from(dwords).saturating_sub(1);
        self.words.extend(std::iter::repeat_n(0, payload));
        self
    }

    /// COPY of `bytes` bytes from `src` to `dst`.
    pub fn copy(&mut self, src: u64, dst: u64, bytes: u32) -> &mut Self {
        self.push(
            Opcode::Copy,
            0,
            &[lo(src), hi(src), lo(dst), hi(dst), bytes],
        )
    }

    /// FILL of `bytes` bytes at `dst` with `pattern`.
    pub fn fill(&mut self, dst: u64, bytes: u32, pattern: u32) -> &mut Self {
        self.push(Opcode::Fill, 0, &[lo(dst), hi(dst), bytes, pattern])
    }

    /// BLIT2D of `height` rows of `width` 32-bit pixels.
    pub fn blit2d(
        &mut self,
        src: u64,
        src_pitch: u32,
        dst: u64,
        dst_pitch: u32,
        width: u32,
        height: u32,
    ) -> &mut Self {
        self.push(
            Opcode::Blit2d,
            0,
            &[
                lo(src),
                hi(src),
                src_pitch,
                lo(dst),
                hi(dst),
                dst_pitch,
                width,
                height,
            ],
        )
    }

    /// FENCE writing the 32-bit `value` to `dst`.
    pub fn fence32(&mut self, dst: u64, value: u32, interrupt: bool) -> &mut Self {
        let flags = if interrupt { FLAG_FENCE_INTERRUPT } else { 0 };
        self.push(Opcode::Fence, flags, &[lo(dst), hi(dst), value, 0])
    }

    /// FENCE writing the 64-bit `value` to `dst`.
    pub fn fence64(&mut self, dst: u64, value: u64, interrupt: bool) -> &mut Self {
        let flags = FLAG_FENCE_VALUE64 | if interrupt { FLAG_FENCE_INTERRUPT } else { 0 };
        self.push(
            Opcode::Fence,
            flags,
            &[lo(dst), hi(dst), lo(value), hi(value)],
        )
    }

    /// SEMAPHORE_WAIT until the value at `addr` `compare`s true with
    /// `value`.
    pub fn semaphore_wait(&mut self, addr: u64, compare: CompareOp, value: u32) -> &mut Self {
        let flags = (compare as u32) << FLAG_SEMAPHORE_COMPARE_SHIFT;
        self.push(Opcode::SemaphoreWait, flags, &[lo(addr), hi(addr), value])
    }

    /// BATCH_START of the `bytes` bytes at `batch`.
    pub fn batch_start(&mut self, batch: u64, bytes: u32) -> &mut Self {
        self.push(Opcode::BatchStart, 0, &[lo(batch), hi(batch), bytes])
    }

    /// BATCH_END.
    pub fn batch_end(&mut self) -> &mut Self {
        self.push(Opcode::BatchEnd, 0, &[])
    }

    /// TLB_INVALIDATE of the whole address space.
    pub fn tlb_invalidate_all(&mut self) -> &mut Self {
        self.push(Opcode::TlbInvalidate, FLAG_TLB_ALL, &[0; 4])
    }

    /// TLB_INVALIDATE of `bytes` bytes from `start`.
    pub fn tlb_invalidate_range(&mut self, start: u64, bytes: u64) -> &mut Self {
        self.push(
            Opcode::TlbInvalidate,
            0,
            &[lo(start), hi(start), lo(bytes), hi(bytes)],
        )
    }

    /// TIMESTAMP to `dst`.
    pub fn timestamp(&mut self, dst: u64) -> &mut Self {
        self.push(Opcode::Timestamp, 0, &[lo(dst), hi(dst)])
    }

    /// LOAD_REGISTER_IMM of `value` into the register at `offset`.
    pub fn load_register_imm(&mut self, offset: u32, value: u32) -> &mut Self {
        self.push(Opcode::LoadRegisterImm, 0, &[offset, value])
    }

    /// STORE_REGISTER of the register at `offset` to `dst`.
    pub fn store_register(&mut self, offset: u32, dst: u64) -> &mut Self {
        self.push(Opcode::StoreRegister, 0, &[offset, lo(dst), hi(dst)])
    }

    /// SET_SCANOUT of `head` to the surface at `surface`.
    pub fn set_scanout(
        &mut self,
        head: u32,
        surface: u64,
        pitch: u32,
        width: u32,
        height: u32,
    ) -> &mut Self {
        self.push(
            Opcode::SetScanout,
            0,
            &[head, lo(surface), hi(surface), pitch, width, height],
        )
    }

    /// SET_CONTEXT (privileged).
    pub fn set_context(&mut self, context: u32) -> &mut Self {
        self.push(Opcode::SetContext, 0, &[context])
    }

    /// SET_PT_ROOT (privileged).
    pub fn set_pt_root(&mut self, root: u64) -> &mut Self {
        self.push(Opcode::SetPtRoot, 0, &[lo(root), hi(root)])
    }

    /// Sets `flags` (header bits, e.g. [`FLAG_PHYSICAL`]) in the last
    /// command's header, whatever the opcode defines.
    ///
    /// [`FLAG_PHYSICAL`]: crate::FLAG_PHYSICAL
    pub fn with_flags(&mut self, flags: u32) -> &mut Self {
        if let Some(header) = self.last.and_then(|index| self.words.get_mut(index)) {
            *header |= flags;
        }
        self
    }

    /// Appends dwords as they are (the next [`with_flags`](Self::with_flags)
    /// applies to the first of them).
    pub fn raw(&mut self, words: &[u32]) -> &mut Self {
        self.last = Some(self.words.len());
        self.words.extend_from_slice(words);
        self
    }

    /// The stream so far.
    pub fn words(&self) -> &[u32] {
        &self.words
    }

    /// Its length in bytes.
    pub fn byte_len(&self) -> u32 {
        // Streams a builder makes for a ring or batch stay far below 4 GiB.
        u32::try_from(self.words.len() * 4).unwrap_or(u32::MAX)
    }

    /// The stream as little-endian bytes, ready to write into a ring or
    /// batch.
    pub fn to_bytes(&self) -> Vec<u8> {
        self.words
            .iter()
            .flat_map(|word| word.to_le_bytes())
            .collect()
    }

    /// The stream's dwords.
    pub fn into_words(self) -> Vec<u32> {
        self.words
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_worked_example_of_the_device_interface() {
        // docs/device-interface.md, "Commands", worked example.
        let mut stream = StreamBuilder::new();
        stream
            .fill(0x0000_0001_0000_0000, 0x1000, 0xff00_00ff)
            .fence32(0x2000, 7, true);
        assert_eq!(
            stream.words(),
            [
                0x0000_0503,
                0x0000_0000,
                0x0000_0001,
                0x0000_1000,
                0xff00_00ff,
                0x0004_0505,
                0x0000_2000,
                0x0000_0000,
                0x0000_0007,
                0x0000_0000,
            ]
        );
        assert_eq!(stream.to_bytes()[..4], [0x03, 0x05, 0x00, 0x00]);
    }

    #[test]
    fn with_flags_changes_only_the_last_header() {
        let mut stream = StreamBuilder::new();
        stream.timestamp(8).timestamp(16).with_flags(1 << 16);
        assert_eq!(stream.words()[0], 0x0000_030a);
        assert_eq!(stream.words()[3], 0x0001_030a);
    }

    #[test]
    fn nop_pads_with_zeros() {
        let mut stream = StreamBuilder::new();
        stream.nop(3).nop(0);
        assert_eq!(stream.words(), [0x0000_0301, 0, 0, 0x0000_0001]);
    }
}
