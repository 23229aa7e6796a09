//! Driving channels as a guest driver does: commands into a ring, PUT
//! through the trapped doorbell; and B's own work, which runs beside A's.

use proptest::prelude::*;
use vgpu_commands::StreamBuilder;
use vgpu_emulation::bar2::channels::{
    ERROR_CODE, FENCE_LO, INTR_ERROR, INTR_STATUS, RING_GET, RING_PUT, STATUS, STATUS_BUSY,
    STATUS_STATE,
};
use vgpu_emulation::bar2::layout::{CTRL_FAULT_COUNT, CTRL_FAULT_INFO, channel_register};
use vgpu_mdev::VirtualGpu;

use crate::layout::{b_tables, slot_va};
use crate::rig::{
    CHANNELS, DISABLED, MIB, Outside, RING_STRIDE, RING_VA, RINGS_AT, RUNNING, Rig, SLICE, STOPPED,
    channel_reg, enable_channel, is_documented_error, read_reg, ring_doorbell, set_root, vram,
};

/// Ring sizes the properties use.
pub fn ring_size() -> impl Strategy<Value = u32> {
    prop_oneof![Just(4096u32), Just(8192), Just(16384)]
}

/// One channel's ring as the driver sees it.
#[derive(Debug)]
pub struct Ring {
    pub channel: u32,
    pub size: u32,
    /// Where the next command goes (what PUT was last written as).
    pub put: u32,
}

impl Ring {
    pub fn new(channel: u32, size: u32) -> Self {
        Self {
            channel,
            size,
            put: 0,
        }
    }

    pub fn va(&self) -> u64 {
        RING_VA + u64::from(self.channel) * RING_STRIDE
    }

    /// The ring's first byte in the VRAM slice.
    pub fn vram(&self) -> u64 {
        RINGS_AT + u64::from(self.channel) * RING_STRIDE
    }

    /// Points the channel at this ring and enables it.
    pub fn enable(&mut self, vgpu: &VirtualGpu) {
        enable_channel(vgpu, self.channel, self.va(), self.size);
        self.put = 0;
    }

    /// Writes `words` from PUT on, wrapping at the end of the ring;
    /// `wrote` hears of every write to the VRAM slice.
    pub fn write(&mut self, vgpu: &VirtualGpu, words: &[u32], wrote: &mut dyn FnMut(u64, &[u8])) {
        let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
        let mut done = 0;
        while done < bytes.len() {
            let at = self.put as usize;
            let n = (self.size as usize - at).min(bytes.len() - done);
            let offset = self.vram() + at as u64;
            vgpu.vram()
                .aperture()
                .write(offset, &bytes[done..done + n])
                .expect("the ring is in the slice");
            wrote(offset, &bytes[done..done + n]);
            done += n;
            self.put = ((at + n) % self.size as usize) as u32;
        }
    }

    /// Writes `words` and rings the doorbell.
    pub fn submit(&mut self, vgpu: &VirtualGpu, words: &[u32], wrote: &mut dyn FnMut(u64, &[u8])) {
        self.write(vgpu, words, wrote);
        ring_doorbell(vgpu, self.channel, self.put);
    }
}

/// Checks what the device says of `vgpu`'s channels once its engines are
/// idle: every channel is disabled, running with its ring taken up to PUT,
/// or stopped with a documented error and its ERROR interrupt status set;
/// none is busy; an engine fault left a fault record.
pub fn assert_channels_consistent(vgpu: &VirtualGpu) {
    let fault_count = read_reg(vgpu, CTRL_FAULT_COUNT);
    if fault_count > 0 {
        let info = read_reg(vgpu, CTRL_FAULT_INFO);
        let reason = (info >> 16) & 0xf;
        assert!(
            (1..=6).contains(&reason) && info & 0x3f < CHANNELS && info & 0xfff0_fec0 == 0,
            "FAULT_INFO {info:#x} is not a documented fault"
        );
    }
    for n in 0..CHANNELS {
        let status = channel_reg(vgpu, n, STATUS);
        let code = channel_reg(vgpu, n, ERROR_CODE);
        assert_eq!(
            status & STATUS_BUSY,
            0,
            "channel {n} busy with no work left"
        );
        match status & STATUS_STATE {
            DISABLED => assert_eq!(code, 0, "channel {n} is disabled with error {code}"),
            RUNNING => {
                assert_eq!(code, 0, "channel {n} runs with error {code}");
                assert_eq!(
                    channel_reg(vgpu, n, RING_GET),
                    channel_reg(vgpu, n, RING_PUT),
                    "channel {n} runs but did not take its ring up to PUT"
                );
            }
            STOPPED => {
                assert!(
                    is_documented_error(code),
                    "channel {n} stopped with undocumented error {code}"
                );
                assert_ne!(
                    channel_reg(vgpu, n, INTR_STATUS) & INTR_ERROR,
                    0,
                    "channel {n} stopped without INTR_STATUS.ERROR"
                );
                if code == 16 {
                    assert!(fault_count > 0, "ENGINE_FAULT with no fault recorded");
                }
            }
            state => panic!("channel {n} is in state {state} (status {status:#x})"),
        }
    }
}

/// B's own work: a 512 KiB FILL and a FENCE through its channel 0, started
/// before A's and run beside it.
pub struct Bystander {
    vram: Vec<u8>,
    put: u32,
}

const B_FILL: u32 = 0xb0b0_b0b0;
const B_FENCE: u32 = 0xb0b;

impl Bystander {
    /// Builds B's tables, rings its doorbell, and says what B's VRAM will
    /// hold once its work is done.
    pub fn start(rig: &Rig) -> Self {
        let b = &rig.b;
        let tables = b_tables();
        b.vram()
            .aperture()
            .write(0, &tables.bytes)
            .expect("B's tables");
        set_root(b, 0, tables.root);
        let mut ring = Ring::new(0, 4096);
        ring.enable(b);
        let mut stream = StreamBuilder::new();
        stream
            .fill(slot_va(0) + 0x1000, 512 << 10, B_FILL)
            .fence32(slot_va(0), B_FENCE, false);
        ring.submit(b, stream.words(), &mut |_, _| {});
        let mut vram = vram(b, 0, SLICE);
        // slot_va(0) is B's VRAM from 2 MiB.
        let base = 2 * MIB as usize;
        for word in vram[base + 0x1000..base + 0x1000 + (512 << 10)].chunks_exact_mut(4) {
            word.copy_from_slice(&B_FILL.to_le_bytes());
        }
        vram[base..base + 4].copy_from_slice(&B_FENCE.to_le_bytes());
        Bystander {
            vram,
            put: ring.put,
        }
    }

    /// What `before` (taken once B's doorbell was rung) becomes once B's
    /// work is done and nothing of A's reached B.
    pub fn expect(&self, before: &mut Outside) {
        before.b_vram.clone_from(&self.vram);
        for (offset, value) in &mut before.b_registers {
            if *offset == channel_register(0, STATUS) {
                *value = RUNNING;
            }
            if *offset == channel_register(0, FENCE_LO) {
                *value = B_FENCE;
            }
            if *offset == channel_register(0, RING_GET) {
                assert_eq!(*value, self.put, "B's doorbell took its ring");
            }
        }
    }
}
