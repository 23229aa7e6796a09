//! Rings and batches the validator cannot read through the channel's MMU
//! (FETCH_FAULT, 9: ERROR_VA the BATCH_START's VA, or for the ring span the
//! VA of GET): unmapped VAs, guest memory mapped without an fd, batches
//! running into an unmapped page, rings half mapped. And the positive
//! side: rings and batches in fd-backed guest memory, and commands
//! straddling a page boundary between VRAM-backed and guest-backed pages.

use crate::cmd::{self, code};
use crate::rig::*;

#[test]
fn a_ring_the_mmu_cannot_read_is_a_fetch_fault_at_get() -> anyhow::Result<()> {
    let d = daemon()?;
    let mut a = Vgpu::attach(&d, VGPU_A)?;
    // ENABLE checks only the ring registers: an unmapped ring runs, and its
    // first doorbell faults. The span's bytes are whatever is there.
    for (ch, base) in [
        (0, VA_UNMAPPED),
        (1, VA_REMOTE),
        (2, VA_OUTSIDE),
        (3, VA_NO_MAP),
    ] {
        a.set_ring(ch, base, RING_SIZE)?;
        a.set_reg(ch, vgpud_tests::regs::channel::CONTROL, 1)?;
        assert_eq!(a.chan(ch)?.state(), 1, "ENABLE of a ring at {base:#x}");
        a.set_reg(ch, vgpud_tests::regs::channel::RING_PUT, 0x40)?;
        a.assert_refused(
            ch,
            code::FETCH_FAULT,
            base,
            0,
            &format!("ring at {base:#x}"),
        )?;
    }
    assert_eq!(
        a.c.served().dma_reads,
        0,
        "a ring without an fd was read through the client"
    );
    Ok(())
}

#[test]
fn a_ring_span_running_into_an_unmapped_page_faults_at_get() -> anyhow::Result<()> {
    let d = daemon()?;
    let mut a = Vgpu::attach(&d, VGPU_A)?;
    // An 8 KiB ring whose second page is past the identity map.
    let base = IDENTITY_END - 0x1000;
    a.set_ring(0, base, 0x2000)?;
    a.enable(0)?;
    let mut pad = Vec::new();
    let mut left = (0x1000 - 20) / 4;
    while left > 0 {
        let n = left.min(255);
        pad.push(cmd::nop(n));
        left -= n;
    }
    pad.push(Vgpu::fence(0, 1));
    a.submit(0, &cmd::concat(&pad))?;
    a.wait_fence(0, 1)?;
    assert_eq!(a.chan(0)?.get, 0x1000);
    // The next span lies in the unmapped page.
    a.set_reg(0, vgpud_tests::regs::channel::RING_PUT, 0x1020)?;
    a.assert_refused(0, code::FETCH_FAULT, base + 0x1000, 0x1000, "second page")?;
    Ok(())
}

#[test]
fn batches_the_mmu_cannot_read_are_a_fetch_fault_at_their_batch_start() -> anyhow::Result<()> {
    let d = daemon()?;
    let mut a = Vgpu::attach(&d, VGPU_A)?;
    a.enable_all()?;
    let cases = [
        ("unmapped", VA_UNMAPPED, 4),
        ("guest memory without an fd", VA_REMOTE, 4),
        ("VRAM past the slice", VA_OUTSIDE, 4),
        ("an IOVA with no map", VA_NO_MAP, 4),
        ("crossing into an unmapped page", IDENTITY_END - 8, 16),
        (
            "crossing from guest memory past its 64 KiB",
            VA_GUEST_RO + SMALL_MAP - 8,
            16,
        ),
        ("the last dword of the address space", (1 << 48) - 4, 4),
    ];
    // The readable part of the crossing batches holds a valid start.
    a.write_dwords(IDENTITY_END - 8, &cmd::nop(2));
    for (i, (name, va, bytes)) in cases.into_iter().enumerate() {
        let ch = (i % 4) as u32;
        a.restart(ch)?;
        // Level 1 directly, and level 2 behind a readable batch.
        a.submit(
            ch,
            &cmd::concat(&[
                cmd::fill(MARKS + 4 * i as u64, 4, 1),
                cmd::batch_start(va, bytes),
            ]),
        )?;
        a.assert_refused(ch, code::FETCH_FAULT, a.ring_va(ch, 20), 0, name)?;
        let outer = BATCHES + 0x1000 * i as u64;
        let words = cmd::batch(&[cmd::nop(2), cmd::batch_start(va, bytes)]);
        a.write_dwords(outer, &words);
        a.restart(ch)?;
        a.submit(ch, &cmd::batch_start(outer, cmd::bytes_of(&words)))?;
        a.assert_refused(ch, code::FETCH_FAULT, outer + 8, 0, name)?;
    }
    std::thread::sleep(QUIET);
    assert!(
        a.vram(MARKS, 64).iter().all(|&b| b == 0),
        "a refused span ran"
    );
    assert_eq!(
        a.c.served().dma_reads,
        0,
        "a batch was read through the client"
    );
    Ok(())
}

#[test]
fn rings_and_batches_in_fd_backed_guest_memory_work() -> anyhow::Result<()> {
    let d = daemon()?;
    let mut a = Vgpu::attach(&d, VGPU_A)?;
    // The ring in guest memory, a batch in guest memory that straddles
    // from the read-write map into the read-only one (another DMA map):
    // a COPY whose header is in one map and its fields in the other.
    a.set_ring(0, VA_GUEST, RING_SIZE)?;
    a.enable(0)?;
    let straddle = VA_GUEST_RO - 8;
    let words = cmd::batch(&[cmd::copy(DATA, DATA + 0x1000, 64)]);
    let bytes = cmd::to_bytes(&words);
    let split = 8;
    let rw = (straddle - VA_GUEST) as usize;
    a.guest.bytes_mut()[rw..rw + split].copy_from_slice(&bytes[..split]);
    a.guest_ro.bytes_mut()[..bytes.len() - split].copy_from_slice(&bytes[split..]);
    a.write_vram(DATA, &[0x42; 64]);
    a.submit(
        0,
        &cmd::concat(&[
            cmd::batch_start(straddle, cmd::bytes_of(&words)),
            cmd::copy(DATA, VA_GUEST + 0x1000, 64),
            Vgpu::fence(0, 1),
        ]),
    )?;
    a.wait_fence(0, 1)?;
    assert_eq!(a.vram(DATA + 0x1000, 64), vec![0x42; 64]);
    assert_eq!(&a.guest.bytes()[0x1000..0x1040], &[0x42; 64]);
    Ok(())
}

#[test]
fn a_batch_started_from_a_ring_in_guest_memory_without_fd_is_never_read() -> anyhow::Result<()> {
    let d = daemon()?;
    let mut a = Vgpu::attach(&d, VGPU_A)?;
    // The client would answer DMA_READ with this buffer: a valid FENCE.
    let fence = cmd::to_bytes(&Vgpu::fence(0, 1));
    a.c.remote_memory_mut().expect("remote")[..fence.len()].copy_from_slice(&fence);
    a.set_ring(0, VA_REMOTE, RING_SIZE)?;
    a.enable(0)?;
    a.set_reg(0, vgpud_tests::regs::channel::RING_PUT, fence.len() as u32)?;
    a.assert_refused(0, code::FETCH_FAULT, VA_REMOTE, 0, "ring without fd")?;
    assert_eq!(a.u32_at(Vgpu::fence_va(0)), 0);
    assert_eq!(a.c.served().dma_reads, 0);
    Ok(())
}
