//! The MMU registers around a translation: refused commands, PT_ROOT's
//! reset value, FAULT_INFO's reserved bits, vector 0, and the command
//! register's bus-master bit.

use crate::rig::*;

// ---------------------------------------------------------------------
// Refused commands: a channel the device lacks.
// ---------------------------------------------------------------------

/// Checks that the last command was refused with `code` and `written`,
/// as an error and not a fault, and clears the error.
#[track_caller]
fn assert_refused(c: &mut RawClient, code: u32, written: u32) -> anyhow::Result<()> {
    assert_eq!(c.bar2_read32(ERROR_CODE)?, code, "ERROR_CODE");
    assert_eq!(c.bar2_read32(ERROR_INFO)?, written, "ERROR_INFO");
    let status = c.bar2_read32(IRQ_STATUS)?;
    assert_ne!(status & IRQ_ERROR, 0, "IRQ_STATUS.ERROR");
    assert_eq!(status & IRQ_FAULT, 0, "IRQ_STATUS.FAULT");
    c.bar2_write32(ERROR_CODE, 0)?;
    c.bar2_write32(IRQ_STATUS, IRQ_ERROR)?;
    Ok(())
}

#[test]
fn inv_control_naming_a_missing_channel_is_refused_even_without_range_or_all() -> anyhow::Result<()>
{
    let (_daemon, mut c) = plain()?;
    let channels = c.bar2_read32(CHANNELS)?;
    for control in [channels, 63, channels | 0xc0] {
        c.bar2_write32(INV_CONTROL, control)?;
        assert_refused(&mut c, BAD_CHANNEL, control)?;
    }
    // On a channel the device has, neither bit is no error.
    c.bar2_write32(INV_CONTROL, channels - 1)?;
    assert_eq!(c.bar2_read32(ERROR_CODE)?, 0);
    assert_eq!(c.bar2_read32(IRQ_STATUS)? & IRQ_ERROR, 0);
    Ok(())
}

#[test]
fn a_refused_xlate_control_leaves_the_last_translation_in_the_result_registers()
-> anyhow::Result<()> {
    let (_daemon, mut c) = plain()?;
    let mut tables = PageTables::in_vram(&mut c, VRAM_ARENA)?;
    let page_va = va(3, 2, 1, 0);
    tables.map(&mut c, page_va, Page::vram(0x4000))?;
    c.set_pt_root(0, tables.root_entry())?;
    let channels = c.bar2_read32(CHANNELS)?;
    let ok = Translation::ok(0x4000 + OFF, Target::Vram);
    let fault = Translation::fault(NOT_PRESENT);
    for (at, last) in [(page_va + OFF, ok), (0, fault)] {
        assert_eq!(c.xlate(0, at, false)?, last);
        c.acknowledge_faults()?;
        let count = c.fault_record()?.count;
        // A VA that would fault, on a channel the device lacks.
        let refused = c.xlate(channels, 0x1000, true)?;
        assert_eq!(refused, last, "the last translation's answer stays");
        assert_refused(&mut c, BAD_CHANNEL, channels | XLATE_WRITE)?;
        assert_eq!(c.fault_record()?.count, count, "no fault recorded");
    }
    Ok(())
}

// ---------------------------------------------------------------------
// PT_ROOT's reset value.
// ---------------------------------------------------------------------

#[track_caller]
fn assert_roots_reset(c: &mut RawClient) -> anyhow::Result<()> {
    for channel in 0..c.bar2_read32(CHANNELS)? {
        assert_eq!(c.pt_root(channel)?, 0, "PT_ROOT of channel {channel}");
        assert_eq!(
            c.xlate(channel, va(0, 0, 0, 0), false)?,
            Translation::fault(NOT_PRESENT),
            "channel {channel}"
        );
    }
    Ok(())
}

#[test]
fn pt_root_is_0_at_attach_and_after_reset() -> anyhow::Result<()> {
    let (daemon, mut c) = plain()?;
    assert_roots_reset(&mut c)?;
    let mut tables = PageTables::in_vram(&mut c, VRAM_ARENA)?;
    tables.map(&mut c, 0, Page::vram(0x4000))?;
    for channel in 0..c.bar2_read32(CHANNELS)? {
        c.set_pt_root(channel, tables.root_entry())?;
        assert_eq!(c.xlate(channel, 0, false)?.status, 0);
    }
    c.reset()?;
    assert_roots_reset(&mut c)?;
    for channel in 0..c.bar2_read32(CHANNELS)? {
        c.set_pt_root(channel, tables.root_entry())?;
    }
    // The next client attaches to a reset device.
    c.shutdown();
    drop(c);
    let mut next = connect_when_free(&daemon)?;
    assert_roots_reset(&mut next)
}

/// Connects to vGPU A once the previous client's session has ended (the
/// daemon refuses a second client while one is attached); the deadline
/// only bounds a hang.
fn connect_when_free(daemon: &TestDaemon) -> anyhow::Result<RawClient> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match daemon.connect(VGPU_A) {
            Ok(c) => return Ok(c),
            Err(error) if Instant::now() < deadline => {
                let _ = error;
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(error) => return Err(error),
        }
    }
}

// ---------------------------------------------------------------------
// FAULT_INFO: channel, write, reason, and 0 everywhere else.
// ---------------------------------------------------------------------

#[test]
fn fault_info_reserved_bits_read_0_for_every_reason() -> anyhow::Result<()> {
    let (_daemon, mut c) = plain()?;
    let _read_only = {
        let memory = GuestMemory::new(PAGE_SIZE as usize)?;
        let map = DmaMapRequest::read_only(0x3_0000_0000, PAGE_SIZE);
        c.dma_map(map, Some(memory.as_fd()))?;
        memory
    };
    let mut tables = PageTables::in_vram(&mut c, VRAM_ARENA)?;
    let vram_end = u64::from(c.bar2_read32(VRAM_SIZE_LO)?);
    let invalid = va(2, 0, 0, 0);
    tables.map(&mut c, invalid, Page::vram(0x4000))?;
    let level_1 = tables.table(&mut c, invalid, Level::L1)?;
    tables.set_entry(&mut c, level_1, 0, Page::vram(0x4000).entry() | 0xff0)?;
    tables.map(&mut c, va(3, 0, 0, 0), Page::vram(vram_end))?;
    tables.map(&mut c, va(4, 0, 0, 0), Page::system(0x9_0000_0000))?;
    tables.map(
        &mut c,
        va(5, 0, 0, 0),
        Page::system(0x3_0000_0000).read_only(),
    )?;
    tables.set_entry(&mut c, tables.root(), 6, tables.root_entry())?;
    let channel = c.bar2_read32(CHANNELS)? - 1;
    c.set_pt_root(channel, tables.root_entry())?;
    let cases = [
        (va(1, 0, 0, 0), NOT_PRESENT),
        (invalid, INVALID_ENTRY),
        (va(3, 0, 0, 0), OUTSIDE_VRAM),
        (va(4, 0, 0, 0), NOT_MAPPED),
        (va(5, 0, 0, 0), READ_ONLY),
        (va(6, 0, 0, 0), WALK_LIMIT),
    ];
    for (at, reason) in cases {
        for write in [false, true] {
            if reason == READ_ONLY && !write {
                continue;
            }
            c.acknowledge_faults()?;
            assert_eq!(c.bar2_read32(FAULT_INFO)?, 0, "no fault recorded");
            assert_eq!(c.xlate(channel, at, write)?, Translation::fault(reason));
            let info = c.bar2_read32(FAULT_INFO)?;
            assert_eq!(info, fault_info::encode(channel, write, reason));
            assert_eq!(info & !0x000f_013f, 0, "reserved bits of {info:#x}");
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------
// Interrupts: one per event, signalled before the next reply.
// ---------------------------------------------------------------------

/// Assigns MSI-X eventfds to every vector and unmasks `mask` in IRQ_MASK.
fn arm_vector_0(c: &mut RawClient, mask: u32) -> anyhow::Result<Vec<EventFd>> {
    let irq = eventfds(1 + c.bar2_read32(CHANNELS)? as usize)?;
    let fds: Vec<BorrowedFd<'_>> = irq.iter().map(AsFd::as_fd).collect();
    c.assign_irq_eventfds(irq_index::MSIX, 0, fds.len() as u32, &fds)?;
    c.bar2_write32(IRQ_MASK, mask)?;
    Ok(irq)
}

#[test]
fn every_fault_raises_vector_0_while_unmasked_not_only_the_first() -> anyhow::Result<()> {
    let (_daemon, mut c) = plain()?;
    let irq = arm_vector_0(&mut c, IRQ_FAULT)?;
    for faults in 1..=5u64 {
        c.xlate(0, va(1, 0, 0, 0), faults % 2 == 0)?;
        assert_ne!(c.bar2_read32(IRQ_STATUS)? & IRQ_FAULT, 0);
        assert_eq!(c.fault_record()?.count, faults as u32);
    }
    // IRQ_STATUS.FAULT was set from the first fault on, never cleared:
    // five faults, five signals (the eventfd adds them up).
    assert_eq!(irq[0].take()?, 5);
    // Masked, a fault raises nothing; the count and status still move.
    c.bar2_write32(IRQ_MASK, 0)?;
    c.xlate(0, va(1, 0, 0, 0), false)?;
    assert_eq!(c.fault_record()?.count, 6);
    assert_eq!(irq[0].take()?, 0);
    for (vector, fd) in irq.iter().enumerate().skip(1) {
        assert_eq!(fd.take()?, 0, "vector {vector}");
    }
    Ok(())
}

#[test]
fn an_interrupt_a_write_raises_is_signalled_before_the_next_reply() -> anyhow::Result<()> {
    let (_daemon, mut c) = plain()?;
    let irq = arm_vector_0(&mut c, IRQ_FAULT | IRQ_ERROR)?;
    let channels = c.bar2_read32(CHANNELS)?;
    for round in 0..50 {
        // A fault of XLATE_CONTROL: no wait, only one more round trip.
        c.bar2_write32(XLATE_CONTROL, 0)?;
        c.bar2_read32(IRQ_STATUS)?;
        assert_eq!(irq[0].take()?, 1, "round {round}: fault");
        // A refused command.
        c.bar2_write32(INV_CONTROL, channels)?;
        c.bar2_read32(IRQ_STATUS)?;
        assert_eq!(irq[0].take()?, 1, "round {round}: error");
        // SELFTEST of a channel vector.
        c.bar2_write32(SELFTEST, 1)?;
        c.bar2_read32(IRQ_STATUS)?;
        assert_eq!(irq[1].take()?, 1, "round {round}: SELFTEST");
    }
    Ok(())
}

// ---------------------------------------------------------------------
// The command register's bus-master bit gates nothing.
// ---------------------------------------------------------------------

#[test]
fn translation_and_dma_work_with_bus_master_clear() -> anyhow::Result<()> {
    let (_daemon, mut c) = plain()?;
    let iova = 0x3_0000_0000;
    let mut memory = map_memory(&mut c, iova, 64 << 10)?;
    memory.bytes_mut()[..PAGE_SIZE as usize].copy_from_slice(&pattern(PAGE_SIZE as usize, 5));
    let mut tables = PageTables::in_vram(&mut c, VRAM_ARENA)?;
    tables.map(&mut c, va(1, 0, 0, 0), Page::system(iova))?;
    for command in [None, Some(BUS_MASTER), Some(0)] {
        if let Some(value) = command {
            c.config_write(COMMAND, 2, u64::from(value))?;
        }
        let set = c.config_read(COMMAND, 2)? & u64::from(BUS_MASTER) != 0;
        assert_eq!(set, command == Some(BUS_MASTER), "bus master reads back");
        c.set_pt_root(0, tables.root_entry())?;
        assert_eq!(
            c.xlate(0, va(1, 0, 0, 0) + OFF, true)?,
            Translation::ok(iova + OFF, Target::System),
            "command {command:?}"
        );
        let job = DmaJob {
            iova,
            vram_offset: 0,
            length: PAGE_SIZE as u32,
            control: DMA_TO_VRAM,
        };
        assert_eq!(c.run_dma(job)?, 0, "command {command:?}");
        let vram = c.region_read(BAR0, 0, PAGE_SIZE as u32)?;
        assert_eq!(vram, pattern(PAGE_SIZE as usize, 5));
        c.region_write(BAR0, 0, &[0; PAGE_SIZE as usize])?;
    }
    Ok(())
}
