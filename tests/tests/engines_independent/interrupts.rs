//! Channel interrupts: a FENCE with INTERRUPT raises MSI-X vector 1 +
//! channel and sets INTR_STATUS.FENCE; a FENCE without it raises nothing;
//! a channel that stops (a refusal, an engine fault) raises its vector and
//! sets INTR_STATUS.ERROR; INTR_STATUS is W1C. A refusal's interrupt is
//! signalled by the time the next message is answered.

use std::time::Duration;

use vgpud_tests::regs::{bar2, channel as chreg};

use crate::cmd::{self, INTERRUPT, code};
use crate::rig::*;

const SIGNAL: Duration = Duration::from_secs(2);

#[test]
fn a_fence_with_interrupt_raises_exactly_its_channels_vector() -> anyhow::Result<()> {
    let d = daemon()?;
    let mut a = Vgpu::attach(&d, VGPU_A)?;
    a.enable_all()?;
    for ch in 0..CHANNELS {
        a.drain_irqs()?;
        a.submit(ch, &cmd::with(Vgpu::fence(ch, 10 + ch), INTERRUPT))?;
        a.wait_fence(ch, 10 + ch)?;
        assert!(
            a.irqs[1 + ch as usize].wait(SIGNAL)? > 0,
            "vector {}",
            1 + ch
        );
        std::thread::sleep(Duration::from_millis(20));
        let others = a.drain_irqs()?;
        assert!(
            others.iter().all(|&n| n == 0),
            "channel {ch}'s fence raised other vectors too: {others:?}"
        );
        let s = a.chan(ch)?;
        assert_eq!(s.intr, chreg::INTR_FENCE, "channel {ch}: {s:x?}");
        // Only this channel's INTR_STATUS changed.
        for other in (0..CHANNELS).filter(|&o| o != ch) {
            assert_eq!(a.chan(other)?.intr & chreg::INTR_FENCE, 0);
        }
        // W1C: writing 0 leaves it, writing the bit clears it.
        a.set_reg(ch, chreg::INTR_STATUS, 0)?;
        assert_eq!(a.chan(ch)?.intr, chreg::INTR_FENCE);
        a.set_reg(ch, chreg::INTR_STATUS, chreg::INTR_ERROR)?;
        assert_eq!(
            a.chan(ch)?.intr,
            chreg::INTR_FENCE,
            "W1C of ERROR cleared FENCE"
        );
        a.set_reg(ch, chreg::INTR_STATUS, chreg::INTR_FENCE)?;
        assert_eq!(a.chan(ch)?.intr, 0);
    }
    // No INTERRUPT flag: no vector, no INTR_STATUS.FENCE.
    a.drain_irqs()?;
    a.submit(0, &Vgpu::fence(0, 99))?;
    a.wait_fence(0, 99)?;
    std::thread::sleep(Duration::from_millis(50));
    assert!(a.drain_irqs()?.iter().all(|&n| n == 0));
    assert_eq!(a.chan(0)?.intr, 0);
    // Several fences with INTERRUPT: at least one signal, FENCE the last.
    a.submit(
        0,
        &cmd::concat(&[
            cmd::with(Vgpu::fence(0, 100), INTERRUPT),
            cmd::with(Vgpu::fence(0, 101), INTERRUPT),
            cmd::with(cmd::fence64(Vgpu::fence_va(0), 0x1_0000_0066), INTERRUPT),
        ]),
    )?;
    assert!(a.irqs[1].wait(SIGNAL)? > 0);
    let deadline = std::time::Instant::now() + DEADLINE;
    while a.chan(0)?.fence != 0x1_0000_0066 {
        assert!(std::time::Instant::now() < deadline, "{:x?}", a.chan(0)?);
    }
    Ok(())
}

#[test]
fn a_refusal_raises_the_channel_vector_before_the_next_reply() -> anyhow::Result<()> {
    let d = daemon()?;
    let mut a = Vgpu::attach(&d, VGPU_A)?;
    a.enable_all()?;
    a.set_ctl(bar2::IRQ_MASK, 0xf)?;
    for ch in 0..CHANNELS {
        a.drain_irqs()?;
        a.submit(ch, &cmd::set_context(1))?;
        // The next access is answered after the signal.
        let s = a.chan(ch)?;
        assert_eq!(s.code, code::PRIVILEGED);
        assert!(
            a.irqs[1 + ch as usize].take()? > 0,
            "channel {ch}'s vector was not signalled by the next reply"
        );
        assert_eq!(s.intr, chreg::INTR_ERROR, "{s:x?}");
        a.set_reg(ch, chreg::INTR_STATUS, chreg::INTR_ERROR)?;
        assert_eq!(a.chan(ch)?.intr, 0);
        // The stop is the channel's business, not the device's.
        let status = a.ctl(bar2::IRQ_STATUS)?;
        assert_eq!(
            status & bar2::IRQ_FAULT,
            0,
            "a refusal set IRQ_STATUS.FAULT"
        );
    }
    Ok(())
}

#[test]
fn an_engine_fault_raises_the_channel_vector_and_vector_0() -> anyhow::Result<()> {
    let d = daemon()?;
    let mut a = Vgpu::attach(&d, VGPU_A)?;
    a.enable_all()?;
    // Unmasked: vector 0 too.
    a.set_ctl(bar2::IRQ_MASK, bar2::IRQ_FAULT)?;
    a.drain_irqs()?;
    a.submit(2, &cmd::fill(VA_UNMAPPED, 4, 0))?;
    let s = a.wait_stopped(2, DEADLINE)?;
    assert_eq!(s.code, code::ENGINE_FAULT);
    assert!(a.irqs[3].wait(SIGNAL)? > 0, "channel vector");
    assert!(a.irqs[0].wait(SIGNAL)? > 0, "vector 0");
    assert_eq!(s.intr, chreg::INTR_ERROR);
    assert_ne!(a.ctl(bar2::IRQ_STATUS)? & bar2::IRQ_FAULT, 0);
    // Masked: the channel vector only.
    a.clear_device_status()?;
    a.set_ctl(bar2::IRQ_MASK, 0)?;
    a.restart(2)?;
    a.drain_irqs()?;
    a.submit(2, &cmd::fill(VA_UNMAPPED, 4, 0))?;
    a.wait_stopped(2, DEADLINE)?;
    assert!(a.irqs[3].wait(SIGNAL)? > 0, "channel vector");
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(
        a.irqs[0].take()?,
        0,
        "vector 0 raised while FAULT is masked"
    );
    assert_ne!(
        a.ctl(bar2::IRQ_STATUS)? & bar2::IRQ_FAULT,
        0,
        "FAULT status not set"
    );
    // RESET clears INTR_STATUS.
    a.set_reg(2, chreg::CONTROL, chreg::RESET)?;
    assert_eq!(a.chan(2)?.intr, 0);
    Ok(())
}

#[test]
fn channel_interrupts_fall_back_to_msi_when_msix_is_not_assigned() -> anyhow::Result<()> {
    let d = daemon()?;
    let mut a = Vgpu::attach(&d, VGPU_A)?;
    a.enable(1)?;
    // Unassign MSI-X; give MSI one trigger: every vector goes there.
    a.c.disable_irqs(vgpud_tests::wire::irq_index::MSIX)?;
    let msi = vgpud_tests::host::EventFd::new()?;
    a.c.assign_irq_eventfds(
        vgpud_tests::wire::irq_index::MSI,
        0,
        1,
        &[std::os::fd::AsFd::as_fd(&msi)],
    )?;
    a.submit(1, &cmd::with(Vgpu::fence(1, 1), INTERRUPT))?;
    a.wait_fence(1, 1)?;
    assert!(
        msi.wait(SIGNAL)? > 0,
        "the fence's vector 2 did not reach MSI"
    );
    Ok(())
}
