//! Runaway batches ("Batches", "Validation"): a batch that starts itself
//! is refused after four copies (BATCH_DEPTH), a fifth level is refused,
//! and the two limits of a submission hold exactly: 1 MiB copied (the
//! ring span and every batch each time it is started) and 4096
//! BATCH_STARTs. At the limit the submission runs; one past it is refused
//! with STREAM_TOO_LONG at the BATCH_START that would go past.

use crate::cmd::{self, code};
use crate::rig::*;

const MIB: u32 = 1 << 20;

#[test]
fn a_batch_that_starts_itself_is_refused_after_four_copies() -> anyhow::Result<()> {
    let d = daemon()?;
    let mut a = Vgpu::attach(&d, VGPU_A)?;
    a.enable(0)?;
    // FILL, BATCH_START(itself), BATCH_END.
    let me = BATCHES;
    let words = cmd::batch(&[cmd::fill(MARKS, 4, 1), cmd::batch_start(me, 0)]);
    let mut words = words;
    let len = cmd::bytes_of(&words);
    words[8] = len;
    a.write_dwords(me, &words);
    a.submit(
        0,
        &cmd::concat(&[Vgpu::fence(0, 1), cmd::batch_start(me, len)]),
    )?;
    a.assert_refused(0, code::BATCH_DEPTH, me + 20, 0, "self-starting batch")?;
    std::thread::sleep(QUIET);
    assert_eq!(a.u32_at(MARKS), 0, "a refused submission ran");
    Ok(())
}

#[test]
fn four_levels_run_and_a_fifth_is_refused() -> anyhow::Result<()> {
    let d = daemon()?;
    let mut a = Vgpu::attach(&d, VGPU_A)?;
    a.enable(0)?;
    let at = |k: u64| BATCHES + 0x1000 * k;
    let chain = |a: &mut Vgpu, deepest: Vec<u32>| -> u32 {
        let mut inner = cmd::bytes_of(&deepest);
        a.write_dwords(at(4), &deepest);
        for k in (1..4).rev() {
            let b = cmd::batch(&[cmd::nop(1), cmd::batch_start(at(k + 1), inner)]);
            a.write_dwords(at(k), &b);
            inner = cmd::bytes_of(&b);
        }
        inner
    };
    let len = chain(&mut a, cmd::batch(&[cmd::fill(MARKS, 4, 4)]));
    a.submit(
        0,
        &cmd::concat(&[cmd::batch_start(at(1), len), Vgpu::fence(0, 1)]),
    )?;
    a.wait_fence(0, 1)?;
    assert_eq!(a.u32_at(MARKS), 4);
    // Level 4 starts a fifth: BATCH_DEPTH at that BATCH_START.
    a.write_dwords(at(5), &cmd::batch_end());
    let len = chain(
        &mut a,
        cmd::batch(&[cmd::fill(MARKS + 4, 4, 5), cmd::batch_start(at(5), 4)]),
    );
    a.restart(0)?;
    a.submit(0, &cmd::batch_start(at(1), len))?;
    a.assert_refused(0, code::BATCH_DEPTH, at(4) + 20, 0, "fifth level")?;
    std::thread::sleep(QUIET);
    assert_eq!(a.u32_at(MARKS + 4), 0);
    Ok(())
}

/// Ring: BATCH_START (16 bytes) + FENCE (20 bytes) = 36 bytes of span.
fn one_big_batch(a: &mut Vgpu, batch_bytes: u32, fence: u32) -> anyhow::Result<()> {
    let big = DATA;
    a.write_dwords(big, &cmd::nop_batch(batch_bytes));
    a.restart(0)?;
    a.submit(
        0,
        &cmd::concat(&[cmd::batch_start(big, batch_bytes), Vgpu::fence(0, fence)]),
    )?;
    Ok(())
}

#[test]
fn a_submission_of_exactly_1_mib_runs_and_4_bytes_more_is_refused() -> anyhow::Result<()> {
    let d = daemon()?;
    let mut a = Vgpu::attach(&d, VGPU_A)?;
    a.enable(0)?;
    one_big_batch(&mut a, MIB - 36, 1)?;
    a.wait_fence(0, 1)
        .map_err(|e| e.context("span 36 + batch (1 MiB - 36) = 1 MiB must run"))?;
    one_big_batch(&mut a, MIB - 32, 2)?;
    a.assert_refused(
        0,
        code::STREAM_TOO_LONG,
        a.ring_va(0, 0),
        0,
        "1 MiB + 4 bytes",
    )?;
    Ok(())
}

#[test]
fn every_start_of_a_batch_counts_its_bytes_again() -> anyhow::Result<()> {
    let d = daemon()?;
    let mut a = Vgpu::attach(&d, VGPU_A)?;
    a.enable(0)?;
    // A batch of 65504 bytes; each start copies 16 + 65504 = 65520 bytes.
    // 16 starts and a FENCE: 16 × 65520 + 20 = 1048340 ≤ 1 MiB; a 17th
    // start would pass it.
    let b = DATA;
    let bytes = 65_504;
    a.write_dwords(b, &cmd::nop_batch(bytes));
    let starts = |n: u32| -> Vec<u32> {
        let mut v: Vec<Vec<u32>> = (0..n).map(|_| cmd::batch_start(b, bytes)).collect();
        v.push(Vgpu::fence(0, n));
        cmd::concat(&v)
    };
    a.submit(0, &starts(16))?;
    a.wait_fence(0, 16)?;
    a.restart(0)?;
    a.submit(0, &starts(17))?;
    a.assert_refused(
        0,
        code::STREAM_TOO_LONG,
        a.ring_va(0, 16 * 16),
        0,
        "17th start of a 64 KiB batch",
    )?;
    Ok(())
}

/// A level-1 batch holding `inner` BATCH_STARTs of an empty batch, started
/// from the ring: 1 + `inner` BATCH_STARTs run.
fn fan_out(a: &mut Vgpu, inner: u32, fence: u32) -> anyhow::Result<u64> {
    let empty = BATCHES;
    let fan = DATA;
    a.write_dwords(empty, &cmd::batch_end());
    let mut words: Vec<Vec<u32>> = (0..inner).map(|_| cmd::batch_start(empty, 4)).collect();
    words.push(cmd::batch_end());
    let words = cmd::concat(&words);
    a.write_dwords(fan, &words);
    a.restart(0)?;
    a.submit(
        0,
        &cmd::concat(&[
            cmd::batch_start(fan, cmd::bytes_of(&words)),
            Vgpu::fence(0, fence),
        ]),
    )?;
    Ok(fan + 16 * u64::from(inner - 1))
}

#[test]
fn exactly_4096_batch_starts_run_and_4097_are_refused() -> anyhow::Result<()> {
    let d = daemon()?;
    let mut a = Vgpu::attach(&d, VGPU_A)?;
    a.enable(0)?;
    fan_out(&mut a, 4095, 1)?;
    a.wait_fence(0, 1)
        .map_err(|e| e.context("4096 BATCH_STARTs must run"))?;
    let last = fan_out(&mut a, 4096, 2)?;
    a.assert_refused(0, code::STREAM_TOO_LONG, last, 0, "4097 BATCH_STARTs")?;
    // The same count as 4096 starts from the ring itself (a 1 MiB ring):
    // 4096 × 16 bytes in the span plus 4 bytes per empty batch.
    a.set_reg(0, vgpud_tests::regs::channel::CONTROL, 2)?;
    a.set_ring(0, DATA + 0x20_0000, MIB)?;
    a.enable(0)?;
    let mut words: Vec<Vec<u32>> = (0..4096).map(|_| cmd::batch_start(BATCHES, 4)).collect();
    words.push(Vgpu::fence(0, 3));
    a.submit(0, &cmd::concat(&words))?;
    a.wait_fence(0, 3)?;
    a.restart(0)?;
    let mut words: Vec<Vec<u32>> = (0..4097).map(|_| cmd::batch_start(BATCHES, 4)).collect();
    words.push(Vgpu::fence(0, 4));
    a.submit(0, &cmd::concat(&words))?;
    a.assert_refused(
        0,
        code::STREAM_TOO_LONG,
        DATA + 0x20_0000 + 4096 * 16,
        0,
        "4097 BATCH_STARTs in the ring",
    )?;
    Ok(())
}

#[test]
fn a_ring_span_alone_can_not_pass_1_mib_but_a_batch_after_it_can() -> anyhow::Result<()> {
    let d = daemon()?;
    let mut a = Vgpu::attach(&d, VGPU_A)?;
    // A 1 MiB ring: the longest span is 1 MiB - 4 (PUT = GET means empty).
    let ring = DATA + 0x20_0000;
    a.set_ring(0, ring, MIB)?;
    a.enable(0)?;
    // Span: NOPs, a BATCH_START of a 4-byte batch, a FENCE; 1 MiB - 4 in
    // all, so the batch's 4 bytes make exactly 1 MiB.
    a.write_dwords(BATCHES, &cmd::batch_end());
    let tail = cmd::concat(&[cmd::batch_start(BATCHES, 4), Vgpu::fence(0, 1)]);
    let mut pad = Vec::new();
    let mut left = (MIB - 4 - cmd::bytes_of(&tail)) / 4;
    while left > 0 {
        let n = left.min(255);
        pad.push(cmd::nop(n));
        left -= n;
    }
    pad.push(tail);
    a.submit(0, &cmd::concat(&pad))?;
    a.wait_fence(0, 1)
        .map_err(|e| e.context("span of 1 MiB - 4 and a 4-byte batch"))?;
    // Once more with an 8-byte batch: 1 MiB + 4.
    a.write_dwords(BATCHES + 0x1000, &cmd::batch(&[cmd::nop(1)]));
    a.restart(0)?;
    let tail = cmd::concat(&[cmd::batch_start(BATCHES + 0x1000, 8), Vgpu::fence(0, 2)]);
    let mut pad = Vec::new();
    let mut left = (MIB - 4 - cmd::bytes_of(&tail)) / 4;
    while left > 0 {
        let n = left.min(255);
        pad.push(cmd::nop(n));
        left -= n;
    }
    let start_at = MIB - 4 - cmd::bytes_of(&tail);
    pad.push(tail);
    a.submit(0, &cmd::concat(&pad))?;
    a.assert_refused(
        0,
        code::STREAM_TOO_LONG,
        ring + u64::from(start_at),
        0,
        "1 MiB + 4 with the span",
    )?;
    Ok(())
}
