//! The channel registers, one guest-visible rule per test.

use super::*;
use crate::bar2::layout::channel_register;

const ALL: u32 = u32::MAX;

fn regs(count: u32) -> ChannelRegisters {
    ChannelRegisters::new(count)
}

fn write(r: &mut ChannelRegisters, n: u32, reg: u64, value: u32) -> Effects {
    r.write(channel_register(n, reg), value, ALL)
}

fn read(r: &ChannelRegisters, n: u32, reg: u64) -> u32 {
    r.read(channel_register(n, reg))
}

/// Channel `n` configured with a 4 KiB ring at 0x10_0000 and enabled.
fn running(r: &mut ChannelRegisters, n: u32) {
    write(r, n, RING_BASE_LO, 0x10_0000);
    write(r, n, RING_BASE_HI, 0);
    write(r, n, RING_SIZE, 4096);
    assert_eq!(write(r, n, CONTROL, CONTROL_ENABLE), Effects::CONTROL_PAGES);
    assert_eq!(
        read(r, n, STATUS) & STATUS_STATE,
        ChannelState::Running as u32
    );
}

#[test]
fn channels_reset_disabled_with_zeros() {
    let r = regs(2);
    for reg in (0..0x40).step_by(4) {
        assert_eq!(read(&r, 0, reg), 0, "register {reg:#x}");
    }
    assert!(r.ring(0).is_none());
}

#[test]
fn channels_past_the_count_are_reserved() {
    let mut r = regs(2);
    write(&mut r, 2, RING_SIZE, 4096);
    assert_eq!(read(&r, 2, RING_SIZE), 0);
    assert_eq!(write(&mut r, 2, CONTROL, CONTROL_ENABLE), Effects::NONE);
    assert!(r.ring(2).is_none());
    assert_eq!(r.stop(2, 1, 0), Effects::NONE);
    assert_eq!(read(&r, 2, STATUS), 0);
}

#[test]
fn a_put_write_rings_the_doorbell_only_while_running() {
    let mut r = regs(2);
    assert_eq!(write(&mut r, 1, RING_PUT, 64), Effects::NONE);
    running(&mut r, 1);
    assert_eq!(read(&r, 1, RING_PUT), 0, "ENABLE zeroes PUT and GET");
    assert_eq!(write(&mut r, 1, RING_PUT, 64), Effects::doorbell(1));
    assert_eq!(
        r.ring(1),
        Some(Ring {
            base: 0x10_0000,
            size: 4096,
            get: 0,
            put: 64
        })
    );
}

#[test]
fn ring_registers_are_fixed_while_running() {
    let mut r = regs(1);
    running(&mut r, 0);
    write(&mut r, 0, RING_BASE_LO, 0x20_0000);
    write(&mut r, 0, RING_SIZE, 8192);
    assert_eq!(read(&r, 0, RING_BASE_LO), 0x10_0000);
    assert_eq!(read(&r, 0, RING_SIZE), 4096);
}

#[test]
fn enable_with_an_unusable_ring_stops_the_channel_with_bad_ring() {
    for (base, size) in [
        (0x10_0800u64, 4096), // misaligned base
        (0x10_0000, 3000),    // not a power of two
        (0x10_0000, 2048),    // too small
        (0x10_0000, 2 << 20), // too large
        (1u64 << 48, 4096),   // past the address space
    ] {
        let mut r = regs(1);
        write(&mut r, 0, RING_BASE_LO, base as u32);
        write(&mut r, 0, RING_BASE_HI, (base >> 32) as u32);
        write(&mut r, 0, RING_SIZE, size);
        assert_eq!(
            write(&mut r, 0, CONTROL, CONTROL_ENABLE),
            Effects::vector(1),
            "{base:#x} {size}"
        );
        assert_eq!(read(&r, 0, STATUS), ChannelState::Stopped as u32);
        assert_eq!(read(&r, 0, ERROR_CODE), ERROR_BAD_RING);
        assert_eq!(read(&r, 0, INTR_STATUS), INTR_ERROR);
    }
}

#[test]
fn a_stopped_channel_keeps_its_first_error_and_rings_nothing() {
    let mut r = regs(1);
    running(&mut r, 0);
    assert_eq!(r.stop(0, 3, 0x1234_5678_9abc), Effects::vector(1));
    assert_eq!(r.stop(0, 16, 0), Effects::NONE);
    assert_eq!(read(&r, 0, ERROR_CODE), 3);
    assert_eq!(read(&r, 0, ERROR_VA_LO), 0x5678_9abc);
    assert_eq!(read(&r, 0, ERROR_VA_HI), 0x1234);
    assert_eq!(write(&mut r, 0, RING_PUT, 64), Effects::NONE);
    assert!(r.ring(0).is_none());
}

#[test]
fn reset_brings_a_stopped_channel_back_and_tells_the_owner() {
    let mut r = regs(1);
    running(&mut r, 0);
    r.fence(0, 7, true);
    r.stop(0, 3, 0x40);
    assert_eq!(
        write(&mut r, 0, CONTROL, CONTROL_RESET | CONTROL_ENABLE),
        Effects::channel_reset(0).merge(Effects::CONTROL_PAGES)
    );
    for reg in [
        RING_PUT,
        RING_GET,
        STATUS,
        ERROR_CODE,
        FENCE_LO,
        INTR_STATUS,
    ] {
        assert_eq!(read(&r, 0, reg), 0, "register {reg:#x}");
    }
    assert_eq!(read(&r, 0, RING_BASE_LO), 0x10_0000, "ring registers stay");
    assert_eq!(
        write(&mut r, 0, CONTROL, CONTROL_ENABLE),
        Effects::CONTROL_PAGES
    );
    assert!(r.ring(0).is_some());
}

#[test]
fn fences_land_and_interrupt_only_when_asked() {
    let mut r = regs(3);
    running(&mut r, 2);
    assert_eq!(r.fence(2, 0x1_0000_0005, false), Effects::NONE);
    assert_eq!(read(&r, 2, FENCE_LO), 5);
    assert_eq!(read(&r, 2, FENCE_HI), 1);
    assert_eq!(read(&r, 2, INTR_STATUS), 0);
    assert_eq!(r.fence(2, 6, true), Effects::vector(3));
    assert_eq!(read(&r, 2, INTR_STATUS), INTR_FENCE);
    write(&mut r, 2, INTR_STATUS, INTR_FENCE);
    assert_eq!(read(&r, 2, INTR_STATUS), 0);
}

#[test]
fn advance_moves_get_and_busy() {
    let mut r = regs(1);
    running(&mut r, 0);
    write(&mut r, 0, RING_PUT, 128);
    r.advance(0, 128, true);
    assert_eq!(read(&r, 0, RING_GET), 128);
    assert_eq!(
        read(&r, 0, STATUS),
        ChannelState::Running as u32 | STATUS_BUSY
    );
    r.idle(0);
    assert_eq!(read(&r, 0, STATUS), ChannelState::Running as u32);
}

#[test]
fn the_control_page_is_reported_only_when_enabled_and_running() {
    let mut r = regs(1);
    assert_eq!(
        write(&mut r, 0, USERD_LO, 0x2000 | USERD_ENABLE | 0x3e),
        Effects::CONTROL_PAGES,
        "the owner looks at the pages again"
    );
    assert_eq!(read(&r, 0, USERD_LO), 0x2001, "bits 5:1 are reserved");
    assert_eq!(r.userd(0), None, "disabled channel");
    running(&mut r, 0);
    assert_eq!(r.userd(0), Some(0x2000));
    write(&mut r, 0, USERD_LO, 0x2000);
    assert_eq!(r.userd(0), None);
}

#[test]
fn a_put_from_the_control_page_reads_back() {
    let mut r = regs(1);
    running(&mut r, 0);
    assert!(r.set_put(0, 256));
    assert!(!r.set_put(0, 256));
    assert_eq!(read(&r, 0, RING_PUT), 256);
}

#[test]
fn byte_writes_merge_into_the_ring_registers() {
    let mut r = regs(1);
    r.write(channel_register(0, RING_BASE_LO), 0x0010_0000, 0x00ff_0000);
    assert_eq!(read(&r, 0, RING_BASE_LO), 0x0010_0000);
}
