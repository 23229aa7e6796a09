//! Guest memory going away or spanning maps: pages that DMA_UNMAP took,
//! a DMA self-test across two maps, and a map over memory the VMM
//! truncates and grows back.

use crate::rig::*;

// ---------------------------------------------------------------------
// DMA_UNMAP: what a translation of a revoked page says.
// ---------------------------------------------------------------------

#[test]
fn a_page_that_dma_unmap_took_faults_as_not_mapped() -> anyhow::Result<()> {
    let (_daemon, mut c) = plain()?;
    let (small_iova, large_iova, table_iova) = (0x3_0000_0000, 0x4_0000_0000, 0x5_0000_0000);
    let _small = map_memory(&mut c, small_iova, 64 << 10)?;
    let _large = map_memory(&mut c, large_iova, LARGE_PAGE_SIZE)?;
    let mut table_memory = map_memory(&mut c, table_iova, PAGE_SIZE)?;
    let (small_va, large_va, far_va) = (va(1, 0, 0, 4), va(1, 0, 2, 0), va(2, 0, 0, 7));
    let mut tables = PageTables::in_vram(&mut c, VRAM_ARENA)?;
    tables.map(&mut c, small_va, Page::system(small_iova + 0x2000))?;
    tables.map(&mut c, large_va, Page::system(large_iova).large())?;
    // far_va's level-1 table lies in guest memory; its page is in VRAM.
    let l2 = tables.table(&mut c, far_va, Level::L2)?;
    let level_1_in_guest = table_iova | pte::VALID | pte::WRITABLE | pte::SYSTEM;
    tables.set_entry(&mut c, l2, Level::L2.index(far_va), level_1_in_guest)?;
    let leaf = Page::vram(0x8000).entry().to_le_bytes();
    let slot = 8 * Level::L1.index(far_va);
    table_memory.bytes_mut()[slot..slot + 8].copy_from_slice(&leaf);
    c.set_pt_root(0, tables.root_entry())?;
    let small = Translation::ok(small_iova + 0x2000 + OFF, Target::System);
    assert_eq!(c.xlate(0, small_va + OFF, true)?, small);
    let large = Translation::ok(large_iova + 0x1_2345, Target::System);
    assert_eq!(c.xlate(0, large_va + 0x1_2345, true)?, large);
    let far = Translation::ok(0x8000 + OFF, Target::Vram);
    assert_eq!(c.xlate(0, far_va + OFF, false)?, far);

    c.dma_unmap(small_iova, 64 << 10)?;
    c.dma_unmap(large_iova, LARGE_PAGE_SIZE)?;
    c.dma_unmap(table_iova, PAGE_SIZE)?;
    let not_mapped = Translation::fault(NOT_MAPPED);
    for write in [false, true] {
        assert_eq!(c.xlate(0, small_va + OFF, write)?, not_mapped);
        for offset in [0, 0x1_2345, LARGE_PAGE_SIZE - 1] {
            assert_eq!(c.xlate(0, large_va + offset, write)?, not_mapped);
        }
    }
    assert_eq!(
        c.xlate(0, small_va + PAGE_SIZE, false)?,
        Translation::fault(NOT_PRESENT),
        "the next VA never had a page"
    );
    // A page whose table the unmap took stays until it is walked again.
    assert_eq!(c.xlate(0, far_va + OFF, false)?, far);
    // Walked again, entries that still name the unmapped memory: 4.
    c.invalidate_all(0)?;
    assert_eq!(c.xlate(0, small_va + OFF, false)?, not_mapped);
    assert_eq!(c.xlate(0, large_va, false)?, not_mapped);
    assert_eq!(c.xlate(0, far_va + OFF, false)?, not_mapped);
    // Pointed elsewhere and walked again, the VA translates anew.
    tables.map(&mut c, small_va, Page::vram(0x9000))?;
    c.invalidate_range(0, small_va, PAGE_SIZE)?;
    assert_eq!(
        c.xlate(0, small_va + OFF, true)?,
        Translation::ok(0x9000 + OFF, Target::Vram)
    );
    Ok(())
}

// ---------------------------------------------------------------------
// The DMA self-test: one map per copy.
// ---------------------------------------------------------------------

#[test]
fn a_dma_self_test_across_two_adjacent_maps_is_refused_as_not_mapped() -> anyhow::Result<()> {
    let (_daemon, mut c) = plain()?;
    // Two 1 MiB maps of consecutive file bytes, IOVAs adjacent too.
    let (iova, half) = (0x3_0000_0000, 1 << 20);
    let mut memory = GuestMemory::new(2 * half as usize)?;
    memory
        .bytes_mut()
        .copy_from_slice(&pattern(2 * half as usize, 0x3c));
    for part in [0, half] {
        let map = DmaMapRequest {
            offset: part,
            ..DmaMapRequest::read_write(iova + part, half)
        };
        c.dma_map(map, Some(memory.as_fd()))?;
    }
    let guest_before = memory.bytes().to_vec();
    let across = iova + half - PAGE_SIZE;
    for control in [DMA_TO_VRAM, DMA_FROM_VRAM] {
        let count = c.bar2_read32(DMA_COUNT)?;
        let job = DmaJob {
            iova: across,
            vram_offset: 0,
            length: 2 * PAGE_SIZE as u32,
            control,
        };
        assert_eq!(c.run_dma(job)?, DMA_NOT_MAPPED, "DMA_CONTROL {control}");
        assert_eq!(c.bar2_read32(DMA_COUNT)?, count + 1);
        assert_eq!(c.bar2_read32(ERROR_CODE)?, DMA_NOT_MAPPED);
        c.bar2_write32(ERROR_CODE, 0)?;
    }
    assert_eq!(memory.bytes(), &guest_before[..], "nothing copied in");
    let vram = c.region_read(BAR0, 0, 2 * PAGE_SIZE as u32)?;
    assert!(vram.iter().all(|&b| b == 0), "nothing copied out");
    // The same bytes, one map at a time, copy.
    for (part, at) in [(across, 0), (iova + half, PAGE_SIZE)] {
        let job = DmaJob {
            iova: part,
            vram_offset: at,
            length: PAGE_SIZE as u32,
            control: DMA_TO_VRAM,
        };
        assert_eq!(c.run_dma(job)?, 0);
    }
    let vram = c.region_read(BAR0, 0, 2 * PAGE_SIZE as u32)?;
    let start = (half - PAGE_SIZE) as usize;
    assert_eq!(vram, &guest_before[start..start + 2 * PAGE_SIZE as usize]);
    Ok(())
}

// ---------------------------------------------------------------------
// Memory the VMM truncates under a DMA map, and grows back.
// ---------------------------------------------------------------------

/// A memfd that the test writes with pwrite and never maps, so that
/// truncating it cannot fault the test itself.
struct ShrinkableMemory(OwnedFd);

impl ShrinkableMemory {
    fn new(len: u64) -> anyhow::Result<Self> {
        let fd = memfd_create("vgpud-test-shrinkable", MemfdFlags::CLOEXEC)?;
        ftruncate(&fd, len)?;
        Ok(ShrinkableMemory(fd))
    }

    fn resize(&self, len: u64) -> anyhow::Result<()> {
        Ok(ftruncate(&self.0, len)?)
    }
}

impl TableMemory for ShrinkableMemory {
    fn write_bytes(&mut self, addr: u64, bytes: &[u8]) -> anyhow::Result<()> {
        let written = rustix::io::pwrite(&self.0, bytes, addr)?;
        anyhow::ensure!(written == bytes.len(), "short pwrite at {addr:#x}");
        Ok(())
    }
}

#[test]
fn memory_truncated_under_a_map_fails_reads_and_writes_but_not_translations() -> anyhow::Result<()>
{
    let (_daemon, mut c) = plain()?;
    let (iova, len) = (0x3_0000_0000, 64 << 10);
    let mut memory = ShrinkableMemory::new(len)?;
    c.dma_map(DmaMapRequest::read_write(iova, len), Some(memory.0.as_fd()))?;
    // table_va's level-1 table is in the memfd (file offset 0x1000) and
    // maps a VRAM page; page_va maps a page of the memfd (0x4000).
    let (table_va, page_va) = (va(1, 0, 0, 3), va(2, 0, 0, 0));
    let level_1 = iova + 0x1000;
    let mut tables = PageTables::in_vram(&mut c, VRAM_ARENA)?;
    tables.map(&mut c, page_va, Page::system(iova + 0x4000))?;
    let level_2 = tables.table(&mut c, table_va, Level::L2)?;
    let pointer = system_pointer(level_1);
    tables.set_entry(&mut c, level_2, 0, pointer)?;
    let leaf = Page::vram(0x8000).entry().to_le_bytes();
    memory.write_bytes(0x1000 + 8 * 3, &leaf)?;
    memory.write_bytes(0x4000, &pattern(PAGE_SIZE as usize, 0x77))?;
    c.set_pt_root(0, tables.root_entry())?;
    let through_table = Translation::ok(0x8000 + OFF, Target::Vram);
    let into_memory = Translation::ok(iova + 0x4000 + OFF, Target::System);
    assert_eq!(c.xlate(0, table_va + OFF, false)?, through_table);
    assert_eq!(c.xlate(0, page_va + OFF, true)?, into_memory);
    let copy = |control| DmaJob {
        iova: iova + 0x4000,
        vram_offset: 0x10_0000,
        length: PAGE_SIZE as u32,
        control,
    };
    assert_eq!(c.run_dma(copy(DMA_TO_VRAM))?, 0);

    memory.resize(0)?;
    // Translations stand, before and after a walk: the map is still there.
    assert_eq!(c.xlate(0, table_va + OFF, false)?, through_table);
    assert_eq!(c.xlate(0, page_va + OFF, true)?, into_memory);
    for control in [DMA_TO_VRAM, DMA_FROM_VRAM] {
        assert_eq!(c.run_dma(copy(control))?, DMA_FAILED, "{control}");
        c.bar2_write32(ERROR_CODE, 0)?;
    }
    c.invalidate_all(0)?;
    assert_eq!(c.xlate(0, page_va + OFF, true)?, into_memory);
    let unreadable = Translation::fault(NOT_MAPPED);
    assert_eq!(c.xlate(0, table_va + OFF, false)?, unreadable);

    memory.resize(len)?;
    // The copies work again (on zeros); the table is walked only when
    // asked, and now reads as zeros.
    assert_eq!(c.xlate(0, table_va + OFF, false)?, unreadable);
    assert_eq!(c.run_dma(copy(DMA_TO_VRAM))?, 0);
    let vram = c.region_read(BAR0, 0x10_0000, PAGE_SIZE as u32)?;
    assert!(vram.iter().all(|&b| b == 0), "the page came back as zeros");
    assert_eq!(c.run_dma(copy(DMA_FROM_VRAM))?, 0);
    c.invalidate_all(0)?;
    let gone = Translation::fault(NOT_PRESENT);
    assert_eq!(c.xlate(0, table_va + OFF, false)?, gone);
    // Written again by the VMM, the table maps again once walked.
    memory.write_bytes(0x1000 + 8 * 3, &leaf)?;
    c.invalidate_range(0, table_va, PAGE_SIZE)?;
    assert_eq!(c.xlate(0, table_va + OFF, false)?, through_table);
    assert_eq!(c.xlate(0, page_va + OFF, true)?, into_memory);
    Ok(())
}
