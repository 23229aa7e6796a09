//! The rig: one simulated GPU carved into two vGPUs, A (under test) and B
//! (the bystander), the guest memory their VMMs mapped for them, and the
//! register and engine steps a session would take for them, done here
//! synchronously and without a socket.
//!
//! Neither vGPU is powered on, so no engine thread runs their work: a
//! doorbell validates and queues (`VirtualGpu::doorbells`), and the test
//! decides when each engine step runs (`VirtualGpu::run_engines`).

use std::fs::File;
use std::os::fd::OwnedFd;
use std::os::unix::fs::FileExt;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use rustix::fs::{MemfdFlags, SealFlags};
use shadow_mmu::{GPU_VA_SPACE, GpuVa, PteTarget};
use uuid::Uuid;
use vgpu_emulation::bar2::channels::{
    CONTROL, CONTROL_ENABLE, CONTROL_RESET, ERROR_CODE, FENCE_HI, FENCE_LO, RING_BASE_HI,
    RING_BASE_LO, RING_GET, RING_PUT, RING_SIZE, STATUS,
};
use vgpu_emulation::bar2::layout::{
    CTRL_FAULT_COUNT, CTRL_FAULT_INFO, CTRL_FAULT_VA_HI, CTRL_FAULT_VA_LO, CTRL_IRQ_STATUS,
    PT_ROOT_HI, PT_ROOT_LO, channel_register, pt_root_offset,
};
use vgpu_emulation::{Effects, MmuRequest, RegionIndex};
use vgpu_mdev::{
    DmaAllowance, DmaBacking, DmaBudget, DmaWindowInfo, GpuMemory, MmuOutcome, ParentGpu,
    PhysicalGpu, Profile, SimGpu, SystemLimits, VirtualGpu,
};

pub const KIB: u64 = 1 << 10;
pub const MIB: u64 = 1 << 20;
pub const PAGE: u64 = 4 * KIB;
/// Each vGPU's VRAM slice.
pub const SLICE: u64 = 4 * MIB;
/// Channels per vGPU.
pub const CHANNELS: u32 = 2;

// A's VRAM: page tables, the channels' rings, batch buffers, then data.
pub const TABLES_LEN: u64 = 256 * KIB;
pub const RINGS_AT: u64 = 0x4_0000;
/// Channel n's ring starts at `RINGS_AT + n × RING_STRIDE`.
pub const RING_STRIDE: u64 = 32 * KIB;
pub const BATCHES_AT: u64 = 0x5_0000;
pub const BATCHES_LEN: u64 = 64 * KIB;
pub const DATA_AT: u64 = 0x8_0000;

/// GPU VA of the rings (both channels), mapped read-only.
pub const RING_VA: u64 = 0x10_0000;
/// GPU VA of the batch buffers, mapped read-only.
pub const BATCH_VA: u64 = 0x20_0000;

// A's guest memory: one memfd. Its first 2 MiB are the read-write window,
// the next 256 KiB the read-only window (adjacent in IOVA too), and the
// last 256 KiB are mapped by nobody.
pub const RAM_A_LEN: u64 = 2 * MIB + 512 * KIB;
pub const RW_IOVA: u64 = 0x1_0000_0000;
pub const RW_LEN: u64 = 2 * MIB;
pub const RO_IOVA: u64 = RW_IOVA + RW_LEN;
pub const RO_FILE_OFFSET: u64 = RW_LEN;
pub const RO_LEN: u64 = 256 * KIB;
/// A's window without a file descriptor (engines cannot reach it).
pub const REMOTE_IOVA: u64 = 0x2_0000_0000;
pub const REMOTE_LEN: u64 = 64 * KIB;

// B's guest memory: one memfd in two windows, the first at the same IOVA
// as A's read-write window, the second where A has nothing.
pub const RAM_B_LEN: u64 = MIB;
pub const B_LOW_IOVA: u64 = RW_IOVA;
pub const B_HIGH_IOVA: u64 = 0x3_0000_0000;
pub const B_WINDOW_LEN: u64 = 512 * KIB;
/// A memfd nobody maps.
pub const STRANGER_LEN: u64 = 256 * KIB;

/// What B's VRAM holds: A's memory must never come to hold it.
pub const B_VRAM_TAG: [u8; 8] = *b"B-SECRET";
/// What B's guest memory holds.
pub const B_RAM_TAG: [u8; 8] = *b"b-window";

/// Longest the engines may take to finish a case's work: far more than
/// any case needs (a few SEMAPHORE watchdogs of 100 ms at most).
pub const HANG: Duration = Duration::from_secs(20);

/// Channel states (STATUS bits 1:0).
pub const DISABLED: u32 = 0;
pub const RUNNING: u32 = 1;
pub const STOPPED: u32 = 2;

/// Channel error codes a guest may see: the validator's (1 to 12, the
/// `vgpu_commands::ChannelErrorCode` table) and the engines' (16 to 18,
/// docs/device-interface.md, "Engine errors and limits").
pub fn is_documented_error(code: u32) -> bool {
    vgpu_commands::ChannelErrorCode::ALL
        .iter()
        .any(|c| c.value() == code)
        || (16..=18).contains(&code)
}

/// How a rig differs from the default one.
#[derive(Clone, Copy, Debug, Default)]
pub struct Variant {
    /// B's slice comes first in the GPU's VRAM, A's after it.
    pub b_first: bool,
    /// A's guest memory is not sealed against shrinking, so copies through
    /// its windows are checked ones (`process_vm_readv`/`writev`).
    pub ram_a_unsealed: bool,
}

/// A simulated GPU with vGPUs A and B, each 4 MiB of VRAM and two
/// channels, and the memfds behind their DMA windows.
pub struct Rig {
    pub a: VirtualGpu,
    pub b: VirtualGpu,
    /// A's guest memory (read-write window, read-only window, tail).
    pub ram_a: File,
    /// B's guest memory.
    pub ram_b: File,
    /// A memfd that nobody maps.
    pub stranger: File,
    // Last: the GPU outlives its vGPUs.
    _parent: ParentGpu,
}

fn profile() -> Arc<Profile> {
    Arc::new(Profile {
        name: "props".into(),
        framebuffer: SLICE,
        max_instances: 2,
        channels: CHANNELS,
        max_resolution: (640, 480),
        subsystem_vendor_id: 0x1234,
        subsystem_id: 0x1100,
        weight: 1,
    })
}

fn vgpu(parent: &ParentGpu, id: u128) -> VirtualGpu {
    let grant = DmaBudget::new(SystemLimits {
        max_map_count: u64::MAX,
        address_space: u64::MAX,
    })
    .carve(
        DmaAllowance {
            windows: 16,
            mapped_bytes: 1 << 30,
        },
        0,
    )
    .expect("an unlimited budget has room");
    let instance = parent
        .create(Uuid::from_u128(id), profile())
        .expect("the GPU has room for the vGPU");
    VirtualGpu::new(parent.gpu().as_ref(), instance, grant).expect("vGPU builds")
}

/// A memfd of `len` bytes; `sealed` against shrinking (copies through it
/// are then plain memory copies, else checked ones).
pub fn memfd(name: &str, len: u64, sealed: bool) -> File {
    let fd = rustix::fs::memfd_create(name, MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING)
        .expect("memfd");
    let file = File::from(fd);
    file.set_len(len).expect("memfd size");
    if sealed {
        rustix::fs::fcntl_add_seals(&file, SealFlags::SHRINK).expect("seal");
    }
    file
}

pub fn backing(file: &File, offset: u64) -> DmaBacking {
    DmaBacking::Fd {
        fd: OwnedFd::from(file.try_clone().expect("dup")),
        offset,
    }
}

pub fn read_file(file: &File, offset: u64, len: u64) -> Vec<u8> {
    let mut bytes = vec![0; len as usize];
    file.read_exact_at(&mut bytes, offset).expect("memfd read");
    bytes
}

pub fn write_file(file: &File, offset: u64, bytes: &[u8]) {
    file.write_all_at(bytes, offset).expect("memfd write");
}

/// Bytes of pseudo-random noise made once (xorshift64*): the tests run
/// unoptimised, and making megabytes of noise per case would cost more
/// than the case.
const NOISE_POOL: usize = 16 << 20;

/// `len` (at most 8 MiB) pseudo-random bytes, chosen by `seed`.
pub fn noise(seed: u64, len: usize) -> &'static [u8] {
    static POOL: OnceLock<Vec<u8>> = OnceLock::new();
    let pool = POOL.get_or_init(|| {
        let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut out = Vec::with_capacity(NOISE_POOL);
        while out.len() < NOISE_POOL {
            state ^= state >> 12;
            state ^= state << 25;
            state ^= state >> 27;
            let word = state.wrapping_mul(0x2545_f491_4f6c_dd1d);
            // Read as page-table entries, 15 of 16 words are not present.
            let word = if word >> 60 == 0 { word } else { word & !1 };
            out.extend_from_slice(&word.to_le_bytes());
        }
        out
    });
    assert!(len <= NOISE_POOL / 2, "noise of at most 8 MiB");
    let start = (seed.wrapping_mul(0x9e37_79b9) % (NOISE_POOL / 2) as u64) as usize;
    &pool[start..start + len]
}

/// `tag` repeated over `len` (a multiple of 8) bytes.
pub fn tagged(tag: [u8; 8], len: u64) -> Vec<u8> {
    tag.repeat(len as usize / 8)
}

impl Rig {
    /// The GPU and both vGPUs, with every window mapped, A's memory full of
    /// noise and B's full of its tags. No page tables, no channels yet.
    pub fn new() -> Rig {
        Self::with(Variant::default())
    }

    /// The rig with `variant`'s placement and memory.
    pub fn with(variant: Variant) -> Rig {
        let gpu: Arc<dyn PhysicalGpu> = Arc::new(SimGpu::new("gpu0", 2 * SLICE).expect("GPU"));
        let parent = ParentGpu::new(gpu);
        let (a, b) = if variant.b_first {
            let b = vgpu(&parent, 0xb);
            (vgpu(&parent, 0xa), b)
        } else {
            let a = vgpu(&parent, 0xa);
            (a, vgpu(&parent, 0xb))
        };
        // By default B sits right after A in the GPU's VRAM: A's VRAM offset
        // SLICE is B's first byte "by offset arithmetic".
        let (a_at, b_at) = if variant.b_first {
            (SLICE, 0)
        } else {
            (0, SLICE)
        };
        assert_eq!(a.vram().phys_offset(), a_at);
        assert_eq!(b.vram().phys_offset(), b_at);

        let ram_a = memfd("ram-a", RAM_A_LEN, !variant.ram_a_unsealed);
        let ram_b = memfd("ram-b", RAM_B_LEN, false);
        let stranger = memfd("stranger", STRANGER_LEN, false);
        a.map_dma(RW_IOVA, RW_LEN, true, backing(&ram_a, 0))
            .expect("A's read-write window");
        a.map_dma(RO_IOVA, RO_LEN, false, backing(&ram_a, RO_FILE_OFFSET))
            .expect("A's read-only window");
        a.map_dma(REMOTE_IOVA, REMOTE_LEN, true, DmaBacking::Remote)
            .expect("A's window without an fd");
        b.map_dma(B_LOW_IOVA, B_WINDOW_LEN, true, backing(&ram_b, 0))
            .expect("B's low window");
        b.map_dma(
            B_HIGH_IOVA,
            B_WINDOW_LEN,
            true,
            backing(&ram_b, B_WINDOW_LEN),
        )
        .expect("B's high window");

        a.vram()
            .aperture()
            .write(0, noise(0xa5a5, SLICE as usize))
            .expect("A's VRAM");
        write_file(&ram_a, 0, noise(0x5a5a, RAM_A_LEN as usize));
        b.vram()
            .aperture()
            .write(0, &tagged(B_VRAM_TAG, SLICE))
            .expect("B's VRAM");
        write_file(&ram_b, 0, &tagged(B_RAM_TAG, RAM_B_LEN));
        write_file(&stranger, 0, noise(0x7777, STRANGER_LEN as usize));

        Rig {
            a,
            b,
            ram_a,
            ram_b,
            stranger,
            _parent: parent,
        }
    }

    pub fn a_vram(&self, offset: u64, len: u64) -> Vec<u8> {
        vram(&self.a, offset, len)
    }

    pub fn put_a_vram(&self, offset: u64, bytes: &[u8]) {
        self.a
            .vram()
            .aperture()
            .write(offset, bytes)
            .expect("inside A's VRAM");
    }

    /// Everything of A a command may change: its VRAM, then its guest
    /// memory file (whose read-only and unmapped parts are checked apart).
    pub fn a_memory(&self) -> Vec<u8> {
        let mut bytes = self.a_vram(0, SLICE);
        bytes.extend(read_file(&self.ram_a, 0, RAM_A_LEN));
        bytes
    }

    /// Everything outside A's allowed set, as it is now.
    pub fn outside_a(&self) -> Outside {
        Outside {
            b_vram: vram(&self.b, 0, SLICE),
            ram_b: read_file(&self.ram_b, 0, RAM_B_LEN),
            a_read_only_and_tail: read_file(&self.ram_a, RO_FILE_OFFSET, RAM_A_LEN - RW_LEN),
            stranger: read_file(&self.stranger, 0, STRANGER_LEN),
            b_registers: registers(&self.b),
        }
    }
}

pub fn vram(vgpu: &VirtualGpu, offset: u64, len: u64) -> Vec<u8> {
    let mut bytes = vec![0; len as usize];
    vgpu.vram()
        .aperture()
        .read(offset, &mut bytes)
        .expect("inside the VRAM slice");
    bytes
}

/// What A may never change, byte for byte, and B's guest-visible state.
#[derive(Debug, PartialEq, Eq)]
pub struct Outside {
    pub b_vram: Vec<u8>,
    pub ram_b: Vec<u8>,
    pub a_read_only_and_tail: Vec<u8>,
    pub stranger: Vec<u8>,
    pub b_registers: Vec<(u64, u32)>,
}

impl Outside {
    /// Panics naming the first byte that differs from `before`.
    pub fn assert_unchanged_since(&self, before: &Outside) {
        let parts: [(&str, &[u8], &[u8]); 4] = [
            ("B's VRAM", &before.b_vram, &self.b_vram),
            ("B's guest memory", &before.ram_b, &self.ram_b),
            (
                "A's read-only window and unmapped tail",
                &before.a_read_only_and_tail,
                &self.a_read_only_and_tail,
            ),
            ("the unmapped memfd", &before.stranger, &self.stranger),
        ];
        for (name, was, now) in parts {
            if let Some(at) = first_difference(was, now) {
                panic!(
                    "{name} changed at byte {at:#x}: {:#04x} became {:#04x}",
                    was[at], now[at]
                );
            }
        }
        assert_eq!(
            before.b_registers, self.b_registers,
            "B's registers changed"
        );
    }
}

/// The first index where `a` and `b` differ (page-wise compare first).
pub fn first_difference(a: &[u8], b: &[u8]) -> Option<usize> {
    if a.len() != b.len() {
        return Some(a.len().min(b.len()));
    }
    let page = PAGE as usize;
    for (n, (x, y)) in a.chunks(page).zip(b.chunks(page)).enumerate() {
        if x != y {
            let within = x.iter().zip(y).position(|(p, q)| p != q)?;
            return Some(n * page + within);
        }
    }
    None
}

/// Whether `now` holds `tag` anywhere in the pages where it differs from
/// `was` (a tag met in unchanged memory was there before).
pub fn holds_new_tag(was: &[u8], now: &[u8], tag: [u8; 8]) -> bool {
    let page = PAGE as usize;
    let zeros = [0u8; PAGE as usize];
    (0..now.len().div_ceil(page)).any(|n| {
        let (start, end) = (n * page, ((n + 1) * page).min(now.len()));
        // Pages a reset zeroed hold no tag: skip them without a scan.
        was.get(start..end) != now.get(start..end) && now[start..end] != zeros[..end - start] && {
            // The page, and 7 bytes either side for a tag across its edges.
            let window = &now[start.saturating_sub(7)..(end + 7).min(now.len())];
            window.windows(8).any(|w| w == tag)
        }
    })
}

/// The registers of `vgpu` that say what its channels and MMU did.
pub fn registers(vgpu: &VirtualGpu) -> Vec<(u64, u32)> {
    let mut offsets = vec![
        CTRL_IRQ_STATUS,
        CTRL_FAULT_COUNT,
        CTRL_FAULT_INFO,
        CTRL_FAULT_VA_LO,
        CTRL_FAULT_VA_HI,
    ];
    for n in 0..CHANNELS {
        for reg in [RING_GET, RING_PUT, STATUS, ERROR_CODE, FENCE_LO, FENCE_HI] {
            offsets.push(channel_register(n, reg));
        }
    }
    offsets
        .into_iter()
        .map(|offset| (offset, read_reg(vgpu, offset)))
        .collect()
}

pub fn read_reg(vgpu: &VirtualGpu, offset: u64) -> u32 {
    let mut bytes = [0; 4];
    vgpu.hw()
        .device
        .read(RegionIndex::BAR2, offset, &mut bytes)
        .expect("BAR2 read");
    u32::from_le_bytes(bytes)
}

pub fn channel_reg(vgpu: &VirtualGpu, channel: u32, reg: u64) -> u32 {
    read_reg(vgpu, channel_register(channel, reg))
}

/// A 32-bit register write, with its effects applied as the session
/// applies them: interrupts, MMU requests, channel resets, doorbells.
pub fn write_reg(vgpu: &VirtualGpu, offset: u64, value: u32) {
    let effects = vgpu
        .hw()
        .device
        .write(RegionIndex::BAR2, offset, &value.to_le_bytes())
        .expect("BAR2 write");
    apply(vgpu, effects);
}

fn apply(vgpu: &VirtualGpu, effects: Effects) {
    vgpu.raise(effects.vectors);
    if let Some(request) = effects.mmu {
        let aperture = vgpu.vram().aperture();
        // Guest input never makes the GPU MMU fail: its errors are daemon
        // bugs (`GpuMmuError`).
        match vgpu.mmu_request(request, &aperture) {
            Ok(MmuOutcome::Translated(result)) => {
                let effects = vgpu.hw().device.complete_translate(result);
                apply(vgpu, effects);
            }
            Ok(MmuOutcome::Shadowed(_)) => {}
            Err(e) => panic!("the GPU MMU failed on {request:?}: {e:?}"),
        }
    }
    vgpu.reset_channels(effects.channel_resets);
    vgpu.doorbells(effects.doorbells);
}

/// Writes channel `channel`'s PT_ROOT, low half then high half (which
/// commits it and walks the tables).
pub fn set_root(vgpu: &VirtualGpu, channel: u32, root: u64) {
    let at = pt_root_offset(channel);
    write_reg(vgpu, at + PT_ROOT_LO, root as u32);
    write_reg(vgpu, at + PT_ROOT_HI, (root >> 32) as u32);
}

/// Points channel `channel` at a ring of `size` bytes at `base` and
/// enables it.
pub fn enable_channel(vgpu: &VirtualGpu, channel: u32, base: u64, size: u32) {
    write_reg(vgpu, channel_register(channel, RING_BASE_LO), base as u32);
    write_reg(
        vgpu,
        channel_register(channel, RING_BASE_HI),
        (base >> 32) as u32,
    );
    write_reg(vgpu, channel_register(channel, RING_SIZE), size);
    write_reg(vgpu, channel_register(channel, CONTROL), CONTROL_ENABLE);
}

/// RESET, then ENABLE: a stopped channel comes back, GET and PUT at 0.
pub fn reset_channel(vgpu: &VirtualGpu, channel: u32) {
    write_reg(vgpu, channel_register(channel, CONTROL), CONTROL_RESET);
    write_reg(vgpu, channel_register(channel, CONTROL), CONTROL_ENABLE);
}

/// The trapped doorbell: RING_PUT.
pub fn ring_doorbell(vgpu: &VirtualGpu, channel: u32, put: u32) {
    write_reg(vgpu, channel_register(channel, RING_PUT), put);
}

/// One engine step of `vgpu` (a command, or one chunk of one).
pub fn step(vgpu: &VirtualGpu) -> bool {
    // A deadline already past: `run_engines` does one step and returns.
    vgpu.run_engines(Instant::now()) != vgpu_mdev::TurnEnd::Done
}

/// Runs the engines of `vgpus`, a step of each in turn, until none has
/// work left. Work that is still left after `limit` is a hang.
pub fn run_until_idle(vgpus: &[&VirtualGpu], limit: Duration) {
    let start = Instant::now();
    loop {
        let mut more = false;
        for vgpu in vgpus {
            more |= vgpu.run_engines(Instant::now() + Duration::from_millis(2))
                != vgpu_mdev::TurnEnd::Done;
        }
        if !more {
            return;
        }
        assert!(
            start.elapsed() < limit,
            "engines still had work after {limit:?}"
        );
        // Work left after a turn of 2 ms may be a SEMAPHORE_WAIT: let time
        // pass for its watchdog rather than spin.
        std::thread::sleep(Duration::from_micros(200));
    }
}

/// Checks what the daemon programmed into `vgpu`'s contexts of the physical
/// MMU, not what the simulated GPU lets through (its engines check DMA
/// windows again after translating, which real hardware would not): every
/// page lies inside the VRAM slice or inside one of the vGPU's DMA windows,
/// and a writable page inside a writable window.
pub fn assert_programmed_inside(vgpu: &VirtualGpu) {
    let size = vgpu.vram().size();
    let mut memory = vgpu.memory();
    let GpuMemory { windows, mmu } = &mut *memory;
    let windows: Vec<DmaWindowInfo> = windows.iter().collect();
    let mut outside = Vec::new();
    for channel in 0..CHANNELS {
        let ctx = mmu.context(channel).expect("each channel has a context");
        mmu.physical()
            .mapped_pages(ctx, GpuVa(0), GPU_VA_SPACE, &mut |va, pte| {
                let len = pte.size().bytes();
                let writable = pte.permissions().writable;
                let inside = match pte.target() {
                    PteTarget::Vram(offset) => {
                        offset.0.checked_add(len).is_some_and(|end| end <= size)
                    }
                    PteTarget::System(iova) => windows.iter().any(|w| {
                        iova.0 >= w.iova
                            && iova.0 + len <= w.iova + w.size
                            && (w.writable || !writable)
                    }),
                };
                if !inside {
                    outside.push((channel, va, *pte));
                }
            })
            .expect("the context exists");
    }
    assert!(
        outside.is_empty(),
        "the physical MMU maps outside the vGPU (channel, VA, entry): {outside:?}"
    );
}

/// What `va` of `channel` translates to now, through the physical MMU and
/// its TLB, as the translate port answers: (address, system).
pub fn translate(vgpu: &VirtualGpu, channel: u32, va: u64, write: bool) -> Option<(u64, bool)> {
    let aperture = vgpu.vram().aperture();
    match vgpu.mmu_request(MmuRequest::Translate { channel, va, write }, &aperture) {
        Ok(MmuOutcome::Translated(result)) => result.ok().map(|t| (t.address, t.system)),
        other => panic!("a translation came to {other:?}"),
    }
}
