//! Engine memory accesses over a real VRAM slice and real DMA windows.

use std::os::fd::OwnedFd;
use std::sync::Arc;

use memmap2::MmapRaw;
use rustix::fs::MemfdFlags;
use shadow_mmu::{ContextId, GpuVa, Iova, ShadowPte};

use super::{system_pte, vram_pte, vram_pte_2m};
use crate::mmu::{
    Access, ClientPiece, Completion, EngineMemory, EngineMemoryError, MmuFaultReason, PartitionMmu,
};
use crate::{DmaBacking, DmaError, DmaWindows, PhysicalGpu, SimGpu, VramAperture};

const CTX: ContextId = ContextId(1);
const PAGE: u64 = 4096;
const MIB: u64 = 1 << 20;
/// IOVA of the fd-backed window: 4 pages, the last one read-only.
const RAM_IOVA: u64 = 0x10_0000;
/// IOVA of the read-only page (a window of its own).
const RO_IOVA: u64 = RAM_IOVA + 3 * PAGE;
/// IOVA of the window reached through the client.
const REMOTE_IOVA: u64 = 0x80_0000;

/// A vGPU's memory: a 4 MiB VRAM slice (the second of the GPU, so that
/// its partition does not start at 0) and guest RAM in three windows.
struct Vgpu {
    mmu: Box<dyn PartitionMmu>,
    _first: crate::VramSlice,
    _slice: crate::VramSlice,
    _gpu: SimGpu,
    vram: Arc<VramAperture>,
    windows: DmaWindows,
    /// The guest's own view of its RAM (the fd-backed windows).
    ram: MmapRaw,
}

impl Vgpu {
    fn new() -> Self {
        let gpu = SimGpu::new("gpu0", 8 * MIB).unwrap();
        let first = gpu.allocate_slice(4 * MIB).unwrap();
        let slice = gpu.allocate_slice(4 * MIB).unwrap();
        assert_eq!(slice.phys_offset(), 4 * MIB);
        let vram = slice.aperture();
        let fd = rustix::fs::memfd_create("mmu-engine-test", MemfdFlags::CLOEXEC).unwrap();
        rustix::fs::ftruncate(&fd, 4 * PAGE).unwrap();
        let ram = MmapRaw::map_raw(&fd).unwrap();
        let mut windows = DmaWindows::new();
        windows
            .map(RAM_IOVA, 3 * PAGE, true, backing(&fd, 0))
            .unwrap();
        windows
            .map(RO_IOVA, PAGE, false, backing(&fd, 3 * PAGE))
            .unwrap();
        windows
            .map(REMOTE_IOVA, 2 * PAGE, true, DmaBacking::Remote)
            .unwrap();
        // The GPU's first two contexts: CTX is the second.
        let mmu = gpu.bind_contexts(&slice, 2).unwrap();
        assert_eq!(mmu.contexts()[1], CTX);
        let vgpu = Vgpu {
            mmu,
            _first: first,
            _slice: slice,
            _gpu: gpu,
            vram,
            windows,
            ram,
        };
        vgpu.fill_with_a_pattern();
        vgpu
    }

    /// Every byte of VRAM and RAM starts distinct from the data tests
    /// write, so that a stray write shows.
    fn fill_with_a_pattern(&self) {
        let pattern: Vec<u8> = (0..4 * MIB).map(|i| (i % 251) as u8).collect();
        self.vram.write(0, &pattern).unwrap();
        assert!(self.ram.len() <= pattern.len());
        // SAFETY: the mapping is live and `ram.len()` bytes long; `pattern`
        // is a distinct allocation at least that long.
        unsafe {
            std::ptr::copy_nonoverlapping(pattern.as_ptr(), self.ram.as_mut_ptr(), self.ram.len())
        };
    }

    fn map(&mut self, va: u64, pte: ShadowPte) {
        self.mmu.map(CTX, GpuVa(va), pte.size(), &pte).unwrap();
    }

    fn engine(&mut self) -> EngineMemory<'_> {
        EngineMemory::new(self.mmu.as_mut(), CTX, &self.vram, &self.windows)
    }

    /// Every byte of VRAM, then every byte of guest RAM.
    fn memory(&self) -> Vec<u8> {
        let mut bytes = vec![0; 4 * MIB as usize];
        self.vram.read(0, &mut bytes).unwrap();
        let mut ram = vec![0; self.ram.len()];
        // SAFETY: the mapping is live and `ram.len()` bytes long; `ram` is
        // a distinct allocation of that length.
        unsafe { std::ptr::copy_nonoverlapping(self.ram.as_ptr(), ram.as_mut_ptr(), ram.len()) };
        bytes.extend(ram);
        bytes
    }

    fn vram_bytes(&self, offset: u64, len: usize) -> Vec<u8> {
        let mut bytes = vec![0; len];
        self.vram.read(offset, &mut bytes).unwrap();
        bytes
    }

    fn ram_bytes(&self, offset: usize, len: usize) -> Vec<u8> {
        self.memory()[4 * MIB as usize + offset..][..len].to_vec()
    }
}

fn backing(fd: &OwnedFd, offset: u64) -> DmaBacking {
    DmaBacking::Fd {
        fd: fd.try_clone().unwrap(),
        offset,
    }
}

fn data(len: usize) -> Vec<u8> {
    (0..len).map(|i| 0x80 | (i % 97) as u8).collect()
}

#[test]
fn a_write_crossing_pages_lands_on_each_page_s_target() {
    let mut vgpu = Vgpu::new();
    // Three consecutive VA pages: VRAM 0x5000, guest RAM page 1, VRAM 0x1000.
    vgpu.map(0x10_0000, vram_pte(0x5000, true));
    vgpu.map(0x10_1000, system_pte(RAM_IOVA + PAGE, true));
    vgpu.map(0x10_2000, vram_pte(0x1000, true));
    let bytes = data(PAGE as usize + 0x20);
    let done = vgpu.engine().write(GpuVa(0x10_0ff0), &bytes).unwrap();
    assert_eq!(done, Completion::Done);
    assert_eq!(vgpu.vram_bytes(0x5ff0, 0x10), bytes[..0x10]);
    assert_eq!(
        vgpu.ram_bytes(PAGE as usize, PAGE as usize),
        bytes[0x10..0x1010]
    );
    assert_eq!(vgpu.vram_bytes(0x1000, 0x10), bytes[0x1010..]);
}

#[test]
fn a_read_crossing_pages_gathers_each_page_s_target() {
    let mut vgpu = Vgpu::new();
    vgpu.map(0x20_0000, vram_pte_2m(0x20_0000, false));
    vgpu.map(0x40_0000, system_pte(RAM_IOVA, false));
    let mut buf = vec![0; 0x30];
    let done = vgpu.engine().read(GpuVa(0x3f_fff0), &mut buf).unwrap();
    assert_eq!(done, Completion::Done);
    let mut expected = vgpu.vram_bytes(0x3f_fff0, 0x10);
    expected.extend(vgpu.ram_bytes(0, 0x20));
    assert_eq!(buf, expected);
}

#[test]
fn a_write_that_faults_on_any_page_writes_nothing() {
    let mut vgpu = Vgpu::new();
    vgpu.map(0x1000, vram_pte(0, true));
    vgpu.map(0x2000, system_pte(RAM_IOVA, true));
    vgpu.map(0x3000, vram_pte(0x2000, false));
    let before = vgpu.memory();
    let err = vgpu
        .engine()
        .write(GpuVa(0x1800), &data(2 * PAGE as usize))
        .unwrap_err();
    let EngineMemoryError::Fault(fault) = err else {
        panic!("unexpected {err:?}");
    };
    assert_eq!(
        (fault.va, fault.access, fault.reason),
        (GpuVa(0x3000), Access::Write, MmuFaultReason::ReadOnly)
    );
    assert!(vgpu.memory() == before, "memory changed");

    vgpu.map(0x5000, vram_pte(0x4000, true));
    let err = vgpu
        .engine()
        .write(GpuVa(0x5800), &data(PAGE as usize))
        .unwrap_err();
    assert!(matches!(
        err,
        EngineMemoryError::Fault(fault) if fault.reason == MmuFaultReason::NotPresent
            && fault.va == GpuVa(0x6000)
    ));
    assert!(vgpu.memory() == before, "memory changed");
}

#[test]
fn a_read_that_faults_on_any_page_reads_nothing() {
    let mut vgpu = Vgpu::new();
    vgpu.map(0x1000, vram_pte(0, false));
    let mut buf = vec![0xee; 2 * PAGE as usize];
    let err = vgpu.engine().read(GpuVa(0x1000), &mut buf).unwrap_err();
    assert!(matches!(err, EngineMemoryError::Fault(_)));
    assert!(buf.iter().all(|&b| b == 0xee), "the buffer was touched");
}

#[test]
fn a_write_through_a_writable_entry_into_a_read_only_window_writes_nothing() {
    // The policy would refuse such an entry; this is the window check that
    // stands behind it (a stale entry, a window remapped read-only).
    let mut vgpu = Vgpu::new();
    vgpu.map(0x1000, vram_pte(0, true));
    vgpu.map(0x2000, system_pte(RO_IOVA, true));
    let before = vgpu.memory();
    let err = vgpu
        .engine()
        .write(GpuVa(0x1000), &data(2 * PAGE as usize))
        .unwrap_err();
    assert!(matches!(
        err,
        EngineMemoryError::Dma {
            va: GpuVa(0x2000),
            source: DmaError::ReadOnly { .. }
        }
    ));
    assert!(vgpu.memory() == before, "memory changed");
}

#[test]
fn a_stale_translation_into_an_unmapped_window_is_refused() {
    let mut vgpu = Vgpu::new();
    vgpu.map(0x1000, system_pte(RAM_IOVA, true));
    let mut buf = [0; 8];
    let _ = vgpu.engine().read(GpuVa(0x1000), &mut buf).unwrap();
    // The VMM unmaps the window; the daemon forgets to invalidate.
    vgpu.windows.unmap(RAM_IOVA, 3 * PAGE).unwrap();
    let err = vgpu.engine().read(GpuVa(0x1000), &mut buf).unwrap_err();
    assert!(matches!(
        err,
        EngineMemoryError::Dma {
            source: DmaError::NotMapped { .. },
            ..
        }
    ));
}

#[test]
fn pages_in_remote_windows_are_left_to_the_client() {
    let mut vgpu = Vgpu::new();
    vgpu.map(0x1000, vram_pte(0x3000, true));
    vgpu.map(0x2000, system_pte(REMOTE_IOVA + PAGE, true));
    vgpu.map(0x3000, system_pte(RAM_IOVA + 2 * PAGE, true));
    let remote = ClientPiece {
        offset: 0x400,
        iova: Iova(REMOTE_IOVA + PAGE),
        len: 0x1000,
    };
    let bytes = data(0x1800);
    let done = vgpu.engine().write(GpuVa(0x1c00), &bytes).unwrap();
    assert_eq!(done, Completion::NeedsClient(vec![remote]));
    // The local pieces, before and after the remote one, were written.
    assert_eq!(vgpu.vram_bytes(0x3c00, 0x400), bytes[..0x400]);
    assert_eq!(vgpu.ram_bytes(2 * PAGE as usize, 0x400), bytes[0x1400..]);

    let mut buf = vec![0xee; 0x1800];
    let done = vgpu.engine().read(GpuVa(0x1c00), &mut buf).unwrap();
    assert_eq!(done, Completion::NeedsClient(vec![remote]));
    assert_eq!(buf[..0x400], bytes[..0x400]);
    assert!(
        buf[0x400..0x1400].iter().all(|&b| b == 0xee),
        "left to the client"
    );
    assert_eq!(buf[0x1400..], bytes[0x1400..]);
}

#[test]
fn a_write_to_a_read_only_page_in_a_remote_window_faults() {
    let mut vgpu = Vgpu::new();
    vgpu.map(0x1000, system_pte(REMOTE_IOVA, false));
    let err = vgpu.engine().write(GpuVa(0x1000), &[1]).unwrap_err();
    assert!(matches!(
        err,
        EngineMemoryError::Fault(fault) if fault.reason == MmuFaultReason::ReadOnly
    ));
}

#[test]
fn an_access_with_no_bytes_translates_nothing() {
    let mut vgpu = Vgpu::new();
    let done = vgpu.engine().write(GpuVa(0xdead_0000), &[]).unwrap();
    assert_eq!(done, Completion::Done);
}

#[test]
fn accesses_past_the_address_space_fault_without_wrapping() {
    let mut vgpu = Vgpu::new();
    vgpu.map(0, vram_pte(0, true));
    let err = vgpu
        .engine()
        .write(GpuVa(u64::MAX - 1), &[1, 2, 3, 4])
        .unwrap_err();
    assert!(matches!(
        err,
        EngineMemoryError::Fault(fault) if fault.reason == MmuFaultReason::NotPresent
    ));
    assert_eq!(vgpu.vram_bytes(0, 4), [0, 1, 2, 3], "page 0 untouched");
}

#[test]
fn engine_accesses_fill_the_tlb_like_any_translation() {
    let mut vgpu = Vgpu::new();
    vgpu.map(0x1000, vram_pte(0, true));
    let _ = vgpu.engine().write(GpuVa(0x1000), &[9]).unwrap();
    vgpu.mmu.unmap(CTX, GpuVa(0x1000), PAGE).unwrap();
    assert!(
        vgpu.engine().write(GpuVa(0x1000), &[7]).is_ok(),
        "stale until invalidated"
    );
    vgpu.mmu.invalidate(CTX);
    assert!(vgpu.engine().write(GpuVa(0x1000), &[9]).is_err());
    assert_eq!(vgpu.vram_bytes(0, 1), [7]);
}
