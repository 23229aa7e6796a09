//! Interrupt indexes and delivery: MSI-X eventfds assigned in chunks as
//! QEMU sends them, the MSI and INTx fallbacks, INTx auto-masking.

use std::os::fd::{AsFd, BorrowedFd};
use std::time::Duration;

use vgpud_tests::config::STANDARD_CHANNELS;
use vgpud_tests::host::eventfds;
use vgpud_tests::regs::bar2::{IRQ_SELFTEST, IRQ_STATUS, SELFTEST};
use vgpud_tests::regs::config::{COMMAND, COMMAND_INTX_DISABLE, STATUS, STATUS_INTX};
use vgpud_tests::wire::{irq_index, irq_info_flags as f, irq_set_flags};
use vgpud_tests::{EventFd, RawClient, TestDaemon, VGPU_A};

const VECTORS: u32 = STANDARD_CHANNELS + 1;
/// Long enough for a loaded machine to deliver a signal.
const SIGNAL: Duration = Duration::from_secs(2);
/// How long a signal that must not come is waited for.
const QUIET: Duration = Duration::from_millis(200);

fn connect() -> anyhow::Result<(TestDaemon, RawClient)> {
    let daemon = TestDaemon::standard()?;
    let client = daemon.connect(VGPU_A)?;
    Ok((daemon, client))
}

fn borrowed(fds: &[EventFd]) -> Vec<BorrowedFd<'_>> {
    fds.iter().map(AsFd::as_fd).collect()
}

/// Assigns MSI-X triggers in chunks of 3, as QEMU does with a small
/// `max_msg_fds`: each chunk's count is its number of fds.
fn assign_msix_in_chunks(c: &mut RawClient, fds: &[EventFd]) -> anyhow::Result<()> {
    let fds = borrowed(fds);
    for (chunk_index, chunk) in fds.chunks(3).enumerate() {
        let start = (chunk_index * 3) as u32;
        c.assign_irq_eventfds(irq_index::MSIX, start, chunk.len() as u32, chunk)?;
    }
    Ok(())
}

#[test]
fn irq_info_matches_the_contract() -> anyhow::Result<()> {
    let (_daemon, mut c) = connect()?;
    let expected = [
        (irq_index::INTX, 1, f::EVENTFD | f::MASKABLE | f::AUTOMASKED),
        (irq_index::MSI, 1, f::EVENTFD),
        (irq_index::MSIX, VECTORS, f::EVENTFD | f::NORESIZE),
        (irq_index::ERR, 1, f::EVENTFD),
        (irq_index::REQ, 1, f::EVENTFD),
    ];
    for (index, count, flags) in expected {
        let info = c.irq_info(index)?;
        assert_eq!((info.index, info.count, info.flags), (index, count, flags));
    }
    Ok(())
}

#[test]
fn msix_selftest_signals_exactly_the_named_vector() -> anyhow::Result<()> {
    let (_daemon, mut c) = connect()?;
    let fds = eventfds(VECTORS as usize)?;
    assign_msix_in_chunks(&mut c, &fds)?;
    for vector in 0..VECTORS {
        c.bar2_write32(SELFTEST, vector)?;
        assert_eq!(fds[vector as usize].wait(SIGNAL)?, 1, "vector {vector}");
        for (other, fd) in fds.iter().enumerate() {
            assert_eq!(fd.take()?, 0, "vector {other} after selftest {vector}");
        }
    }
    assert_ne!(c.bar2_read32(IRQ_STATUS)? & IRQ_SELFTEST, 0);
    c.bar2_write32(IRQ_STATUS, IRQ_SELFTEST)?;
    assert_eq!(c.bar2_read32(IRQ_STATUS)? & IRQ_SELFTEST, 0, "W1C");
    Ok(())
}

#[test]
fn fewer_fds_than_count_unassigns_the_rest() -> anyhow::Result<()> {
    let (_daemon, mut c) = connect()?;
    let fds = eventfds(VECTORS as usize)?;
    assign_msix_in_chunks(&mut c, &fds)?;
    c.assign_irq_eventfds(irq_index::MSIX, 0, VECTORS, &borrowed(&fds[..2]))?;
    c.bar2_write32(SELFTEST, 1)?;
    assert_eq!(fds[1].wait(SIGNAL)?, 1);
    c.bar2_write32(SELFTEST, 3)?;
    assert_eq!(fds[3].wait(QUIET)?, 0, "vector 3 was unassigned");
    Ok(())
}

#[test]
fn disabling_msix_stops_its_signals() -> anyhow::Result<()> {
    let (_daemon, mut c) = connect()?;
    let fds = eventfds(VECTORS as usize)?;
    assign_msix_in_chunks(&mut c, &fds)?;
    c.disable_irqs(irq_index::MSIX)?;
    c.bar2_write32(SELFTEST, 0)?;
    assert_eq!(fds[0].wait(QUIET)?, 0);
    Ok(())
}

#[test]
fn trigger_action_fires_the_selected_vector() -> anyhow::Result<()> {
    let (_daemon, mut c) = connect()?;
    let fds = eventfds(VECTORS as usize)?;
    assign_msix_in_chunks(&mut c, &fds)?;
    let flags = irq_set_flags::DATA_NONE | irq_set_flags::ACTION_TRIGGER;
    c.set_irqs(irq_index::MSIX, flags, 2, 1, &[], &[])?;
    assert_eq!(fds[2].wait(SIGNAL)?, 1);
    assert_eq!(fds[1].take()?, 0);
    Ok(())
}

#[test]
fn msi_takes_any_vector_when_msix_has_no_trigger() -> anyhow::Result<()> {
    let (_daemon, mut c) = connect()?;
    let msi = EventFd::new()?;
    let intx = EventFd::new()?;
    c.assign_irq_eventfds(irq_index::MSI, 0, 1, &[msi.as_fd()])?;
    c.assign_irq_eventfds(irq_index::INTX, 0, 1, &[intx.as_fd()])?;
    c.bar2_write32(SELFTEST, 2)?;
    assert_eq!(msi.wait(SIGNAL)?, 1);
    assert_eq!(intx.wait(QUIET)?, 0, "MSI comes before INTx");
    Ok(())
}

#[test]
fn intx_fires_once_then_stays_masked_until_unmask() -> anyhow::Result<()> {
    let (_daemon, mut c) = connect()?;
    let intx = EventFd::new()?;
    c.assign_irq_eventfds(irq_index::INTX, 0, 1, &[intx.as_fd()])?;
    c.bar2_write32(SELFTEST, 0)?;
    assert_eq!(intx.wait(SIGNAL)?, 1);
    assert_ne!(
        c.config_read(STATUS, 2)? as u16 & STATUS_INTX,
        0,
        "asserted"
    );
    c.bar2_write32(SELFTEST, 0)?;
    assert_eq!(intx.wait(QUIET)?, 0, "auto-masked");
    c.unmask_intx()?;
    c.bar2_write32(SELFTEST, 0)?;
    assert!(intx.wait(SIGNAL)? >= 1, "unmasked");
    Ok(())
}

#[test]
fn intx_is_held_back_by_interrupt_disable() -> anyhow::Result<()> {
    let (_daemon, mut c) = connect()?;
    let intx = EventFd::new()?;
    c.assign_irq_eventfds(irq_index::INTX, 0, 1, &[intx.as_fd()])?;
    c.config_write(COMMAND, 2, u64::from(COMMAND_INTX_DISABLE))?;
    c.bar2_write32(SELFTEST, 0)?;
    assert_eq!(intx.wait(QUIET)?, 0);
    Ok(())
}
