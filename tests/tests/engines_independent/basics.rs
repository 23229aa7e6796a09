//! Positive controls: the documented first command, every command doing
//! what "Commands" says, commands that wrap around the ring's end, and the
//! register rules of a channel (reset values, ENABLE, RESET).

use vgpud_tests::host::pattern;
use vgpud_tests::regs::channel as chreg;

use crate::cmd::{self, INTERRUPT, cmp, code};
use crate::rig::*;

#[test]
fn your_first_command_as_documented() -> anyhow::Result<()> {
    let d = daemon()?;
    let mut a = Vgpu::attach(&d, VGPU_A)?;
    // Step 2: the ring at VRAM 0x10_0000, 4 KiB; STATUS reads 1.
    a.set_ring(0, 0x10_0000, 0x1000)?;
    a.set_reg(0, chreg::CONTROL, chreg::ENABLE)?;
    let s = a.chan(0)?;
    assert_eq!((s.status, s.get, s.put), (1, 0, 0), "{s:x?}");
    // Step 3: FILL 4 KiB at 0x40_0000 with 0xdeadbeef, FENCE 1 to 0x30_0000.
    let cmds = cmd::concat(&[
        cmd::fill(0x40_0000, 4096, 0xdead_beef),
        cmd::with(cmd::fence(0x30_0000, 1), INTERRUPT),
    ]);
    a.irqs[1].take()?;
    let at = a.submit(0, &cmds)?;
    assert_eq!(at, 0);
    // Step 4: RING_GET equals RING_PUT when the write completes.
    let s = a.chan(0)?;
    assert_eq!(s.get, cmd::bytes_of(&cmds), "{s:x?}");
    assert_eq!(s.put, s.get);
    // Step 5: vector 1 and FENCE_LO.
    a.wait_fence(0, 1)?;
    assert!(a.irqs[1].wait(std::time::Duration::from_secs(2))? > 0);
    assert!(
        a.vram(0x40_0000, 4096)
            .chunks(4)
            .all(|w| w == 0xdead_beefu32.to_le_bytes())
    );
    assert_eq!(a.u32_at(0x30_0000), 1);
    let s = a.chan(0)?;
    assert_eq!(s.intr & chreg::INTR_FENCE, chreg::INTR_FENCE);
    a.set_reg(0, chreg::INTR_STATUS, chreg::INTR_FENCE)?;
    assert_eq!(a.chan(0)?.intr, 0);
    a.wait_for_idle(0)?;
    Ok(())
}

#[test]
fn every_command_does_what_the_document_says() -> anyhow::Result<()> {
    let d = daemon()?;
    let mut a = Vgpu::attach(&d, VGPU_A)?;
    a.enable_all()?;
    let src = pattern(0x4000, 7);
    a.write_vram(DATA, &src);
    // COPY at odd alignment.
    a.run_ok(0, &cmd::copy(DATA + 3, DATA + 0x10_0001, 0x1001), "COPY")?;
    assert_eq!(a.vram(DATA + 0x10_0001, 0x1001), src[3..0x1004]);
    // FILL.
    a.run_ok(0, &cmd::fill(DATA + 0x20_0000, 64, 0x0102_0304), "FILL")?;
    assert_eq!(a.u32_at(DATA + 0x20_0000 + 60), 0x0102_0304);
    assert_eq!(a.u32_at(DATA + 0x20_0000 + 64), 0);
    // BLIT2D: 3 rows of 5 pixels, pitches 64 and 32.
    a.run_ok(
        0,
        &cmd::blit2d(DATA, 64, DATA + 0x30_0000, 32, 5, 3),
        "BLIT2D",
    )?;
    for r in 0..3u64 {
        assert_eq!(
            a.vram(DATA + 0x30_0000 + 32 * r, 20),
            src[(64 * r) as usize..(64 * r + 20) as usize]
        );
        assert_eq!(
            a.u32_at(DATA + 0x30_0000 + 32 * r + 20),
            0,
            "row {r} past width"
        );
    }
    // FENCE, 4 and 8 bytes; COMPLETED_FENCE through STORE_REGISTER.
    a.set_u32(DATA + 0x40_0004, 0xffff_ffff);
    a.run_ok(0, &cmd::fence(DATA + 0x40_0000, 0x1234_5678), "FENCE")?;
    assert_eq!(a.u32_at(DATA + 0x40_0000), 0x1234_5678);
    assert_eq!(
        a.u32_at(DATA + 0x40_0004),
        0xffff_ffff,
        "a 4-byte FENCE wrote 8"
    );
    a.restart(0)?;
    a.submit(
        0,
        &cmd::concat(&[
            cmd::fence64(DATA + 0x40_0008, 0xaabb_ccdd_1122_3344),
            cmd::store_register(0x44, DATA + 0x40_0010),
            cmd::fence(DATA + 0x40_0018, 9),
            cmd::store_register(0x40, DATA + 0x40_0020),
            cmd::store_register(0x44, DATA + 0x40_0024),
            Vgpu::fence(0, 0x600d),
        ]),
    )?;
    a.wait_fence(0, 0x600d)?;
    assert_eq!(a.u64_at(DATA + 0x40_0008), 0xaabb_ccdd_1122_3344);
    assert_eq!(
        a.u32_at(DATA + 0x40_0010),
        0xaabb_ccdd,
        "COMPLETED_FENCE_HI"
    );
    assert_eq!(a.u32_at(DATA + 0x40_0020), 9, "COMPLETED_FENCE_LO");
    assert_eq!(a.u32_at(DATA + 0x40_0024), 0, "a 4-byte FENCE zero-extends");
    // SEMAPHORE_WAIT whose condition holds at once, each compare.
    a.set_u32(SEM, 5);
    for (op, value) in [
        (cmp::EQ, 5),
        (cmp::NE, 4),
        (cmp::GE, 5),
        (cmp::GT, 4),
        (cmp::LT, 6),
        (cmp::LE, 5),
    ] {
        a.run_ok(0, &cmd::semaphore_wait(SEM, op, value), "SEMAPHORE_WAIT")?;
    }
    // LOAD_REGISTER_IMM and STORE_REGISTER of GPR0 and GPR15.
    a.run_ok(
        0,
        &cmd::concat(&[
            cmd::load_register_imm(0x00, 0x1111_2222),
            cmd::load_register_imm(0x3c, 0x3333_4444),
            cmd::store_register(0x00, DATA + 0x50_0000),
            cmd::store_register(0x3c, DATA + 0x50_0004),
            cmd::timestamp(DATA + 0x50_0008),
            cmd::store_register(0x48, DATA + 0x50_0010),
            cmd::store_register(0x4c, DATA + 0x50_0014),
        ]),
        "LRI/STORE/TIMESTAMP",
    )?;
    assert_eq!(a.u32_at(DATA + 0x50_0000), 0x1111_2222);
    assert_eq!(a.u32_at(DATA + 0x50_0004), 0x3333_4444);
    assert_ne!(a.u64_at(DATA + 0x50_0008), 0, "TIMESTAMP wrote nothing");
    // TLB_INVALIDATE, both forms.
    a.run_ok(
        0,
        &cmd::tlb_invalidate(0x20_0000, 0x20_0000),
        "TLB_INVALIDATE",
    )?;
    a.run_ok(0, &cmd::tlb_invalidate_all(), "TLB_INVALIDATE ALL")?;
    // SET_SCANOUT of a VRAM surface on head 0.
    a.run_ok(0, &cmd::set_scanout(0, DATA, 64 * 4, 64, 32), "SET_SCANOUT")?;
    // NOP of 1 and 255 dwords.
    a.run_ok(0, &cmd::concat(&[cmd::nop(1), cmd::nop(255)]), "NOP")?;
    Ok(())
}

#[test]
fn batches_nest_four_deep_and_may_be_started_many_times() -> anyhow::Result<()> {
    let d = daemon()?;
    let mut a = Vgpu::attach(&d, VGPU_A)?;
    a.enable(0)?;
    let b = |k: u64| BATCHES + 0x1000 * k;
    // Level 4: a FILL, started twice from level 3.
    let b4 = cmd::batch(&[cmd::fill(DATA, 4, 0x4444_4444)]);
    let b3 = cmd::batch(&[
        cmd::batch_start(b(4), cmd::bytes_of(&b4)),
        cmd::fill(DATA + 4, 4, 0x3333_3333),
        cmd::batch_start(b(4), cmd::bytes_of(&b4)),
    ]);
    let b2 = cmd::batch(&[cmd::batch_start(b(3), cmd::bytes_of(&b3))]);
    let b1 = cmd::batch(&[cmd::batch_start(b(2), cmd::bytes_of(&b2))]);
    for (k, words) in [(1, &b1), (2, &b2), (3, &b3), (4, &b4)] {
        a.write_dwords(b(k), words);
    }
    a.submit(
        0,
        &cmd::concat(&[
            cmd::batch_start(b(1), cmd::bytes_of(&b1)),
            Vgpu::fence(0, 1),
        ]),
    )?;
    a.wait_fence(0, 1)?;
    assert_eq!(a.u32_at(DATA), 0x4444_4444);
    assert_eq!(a.u32_at(DATA + 4), 0x3333_3333);
    Ok(())
}

#[test]
fn a_command_may_run_across_the_end_of_the_ring() -> anyhow::Result<()> {
    let d = daemon()?;
    let mut a = Vgpu::attach(&d, VGPU_A)?;
    a.enable(0)?;
    // Pad to 8 bytes before the end, then a FILL (20 bytes) that wraps.
    let pad = (RING_SIZE - 8) / 4;
    let mut left = pad;
    let mut pads = Vec::new();
    while left > 0 {
        let n = left.min(255);
        pads.push(cmd::nop(n));
        left -= n;
    }
    a.submit(0, &cmd::concat(&pads))?;
    assert_eq!(a.chan(0)?.get, RING_SIZE - 8);
    let at = a.submit(
        0,
        &cmd::concat(&[cmd::fill(DATA, 8, 0x5555_aaaa), Vgpu::fence(0, 2)]),
    )?;
    assert_eq!(at, RING_SIZE - 8);
    let s = a.chan(0)?;
    assert_eq!(s.get, 20 + 20 - 8, "{s:x?}");
    a.wait_fence(0, 2)?;
    assert_eq!(a.u32_at(DATA + 4), 0x5555_aaaa);
    // And a span that is the whole ring but 4 bytes, wrapping.
    a.restart(0)?;
    a.submit(0, &cmd::nop(4))?;
    a.wait_for_idle(0)?;
    let mut whole = Vec::new();
    let mut left = RING_SIZE / 4 - 1 - 5;
    while left > 0 {
        let n = left.min(255);
        whole.push(cmd::nop(n));
        left -= n;
    }
    whole.push(Vgpu::fence(0, 3));
    a.submit(0, &cmd::concat(&whole))?;
    let s = a.chan(0)?;
    assert_eq!(
        s.get, 12,
        "GET after a span of the ring less 4 bytes: {s:x?}"
    );
    a.wait_fence(0, 3)?;
    Ok(())
}

#[test]
fn channel_registers_reset_enable_and_reset_again() -> anyhow::Result<()> {
    let d = daemon()?;
    let mut a = Vgpu::attach(&d, VGPU_A)?;
    for ch in 0..CHANNELS {
        let s = a.chan(ch)?;
        assert_eq!(
            s,
            Chan {
                status: 0,
                get: 0,
                put: 0,
                code: 0,
                va: 0,
                fence: 0,
                intr: 0
            }
        );
        assert_eq!(a.reg(ch, chreg::CONTROL)?, 0, "CONTROL reads 0");
    }
    // A PUT written while disabled rings nothing; ENABLE zeroes GET and PUT.
    a.set_ring(1, RINGS + RING_STRIDE, RING_SIZE)?;
    a.push(1, &Vgpu::fence(1, 1));
    a.doorbell(1)?;
    std::thread::sleep(QUIET);
    assert_eq!(a.chan(1)?.fence, 0, "a disabled channel ran a doorbell");
    a.set_reg(1, chreg::CONTROL, chreg::ENABLE)?;
    let s = a.chan(1)?;
    assert_eq!((s.state(), s.get, s.put), (1, 0, 0), "{s:x?}");
    // RING_BASE/SIZE are RW only while disabled.
    a.set_reg(1, chreg::RING_SIZE, 0x2000)?;
    a.set_reg(1, chreg::RING_BASE_LO, 0x50_0000)?;
    assert_eq!(
        a.reg(1, chreg::RING_SIZE)?,
        RING_SIZE,
        "RING_SIZE changed while running"
    );
    assert_eq!(
        a.reg(1, chreg::RING_BASE_LO)? as u64,
        RINGS + RING_STRIDE,
        "RING_BASE changed while running"
    );
    // RESET keeps RING_BASE, RING_SIZE and USERD; the rest goes to 0.
    a.set_put(1, 0);
    a.submit(1, &Vgpu::fence(1, 7))?;
    a.wait_fence(1, 7)?;
    a.set_reg(1, chreg::USERD_LO, 0xc0_0000)?;
    a.set_reg(1, chreg::CONTROL, chreg::RESET)?;
    let s = a.chan(1)?;
    assert_eq!((s.status, s.get, s.put, s.code, s.fence), (0, 0, 0, 0, 0));
    assert_eq!(a.reg(1, chreg::RING_BASE_LO)? as u64, RINGS + RING_STRIDE);
    assert_eq!(a.reg(1, chreg::RING_SIZE)?, RING_SIZE);
    assert_eq!(a.reg(1, chreg::USERD_LO)?, 0xc0_0000);
    // RESET wins over ENABLE when both are written.
    a.set_reg(1, chreg::CONTROL, chreg::ENABLE | chreg::RESET)?;
    assert_eq!(a.chan(1)?.status, 0);
    // PUT = GET submits nothing.
    a.enable(1)?;
    a.doorbell(1)?;
    let s = a.chan(1)?;
    assert_eq!((s.state(), s.code), (1, 0));
    Ok(())
}

#[test]
fn enable_refuses_unusable_rings_with_bad_ring_and_va_0() -> anyhow::Result<()> {
    let d = daemon()?;
    let mut a = Vgpu::attach(&d, VGPU_A)?;
    let top = 1u64 << 48;
    for (base, size) in [
        (0x10_0800, 0x1000),    // base not 4 KiB aligned
        (0x10_0000, 0x800),     // below 4 KiB
        (0x10_0000, 0x3000),    // not a power of two
        (0x10_0000, 0x20_0000), // above 1 MiB
        (0x10_0000, 0),         // zero
        (top - 0x1000, 0x2000), // runs past 2^48
        (top, 0x1000),          // starts at 2^48
        (!0xfff, 0x1000),       // wraps
    ] {
        a.set_reg(0, chreg::CONTROL, chreg::RESET)?;
        a.set_ring(0, base, size)?;
        a.set_reg(0, chreg::CONTROL, chreg::ENABLE)?;
        let s = a.chan(0)?;
        assert!(
            s.state() == 2 && s.code == code::BAD_RING && s.va == 0,
            "ring {base:#x}+{size:#x}: {s:x?}"
        );
        // ENABLE on a stopped channel does nothing.
        a.set_reg(0, chreg::CONTROL, chreg::ENABLE)?;
        assert_eq!(a.chan(0)?, s);
    }
    // The largest ring, ending exactly at 2^48, is usable.
    a.set_reg(0, chreg::CONTROL, chreg::RESET)?;
    a.set_ring(0, top - 0x10_0000, 0x10_0000)?;
    a.set_reg(0, chreg::CONTROL, chreg::ENABLE)?;
    assert_eq!(a.chan(0)?.state(), 1);
    Ok(())
}

#[test]
fn bad_get_or_put_at_a_doorbell_is_bad_ring_with_the_value() -> anyhow::Result<()> {
    let d = daemon()?;
    let mut a = Vgpu::attach(&d, VGPU_A)?;
    a.enable(0)?;
    for put in [2u32, 0x1001, RING_SIZE, 0xffff_fffc, 0x8000_0000] {
        a.restart(0)?;
        a.set_reg(0, chreg::RING_PUT, put)?;
        a.assert_refused(
            0,
            code::BAD_RING,
            u64::from(put),
            0,
            &format!("PUT {put:#x}"),
        )?;
    }
    Ok(())
}
