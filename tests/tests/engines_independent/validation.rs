//! The validator's rules for everything that is not a privileged form
//! ("Dwords and the header", "The commands", "Batches", "Validation"):
//! opcodes, lengths, reserved bits, fields, the 2^48 boundary with ranges
//! that would wrap a 64-bit sum, stray and missing BATCH_ENDs. Each
//! refusal names the documented VA and runs nothing of its submission.

use crate::cmd::{self, ALL, INTERRUPT, VALUE64, code, header, op};
use crate::rig::*;

const TOP: u64 = 1 << 48;

/// Submits `lead` (a FENCE) then `bad` in the ring of `ch` (restarted);
/// expects `expected` at the VA of `bad`.
fn refuse_in_ring(
    a: &mut Vgpu,
    ch: u32,
    bad: &[u32],
    expected: u32,
    what: &str,
) -> anyhow::Result<()> {
    a.restart(ch)?;
    a.submit(ch, &cmd::concat(&[Vgpu::fence(ch, 0xbad), bad.to_vec()]))?;
    let va = a.ring_va(ch, 20);
    a.assert_refused(ch, expected, va, 0, what)?;
    anyhow::ensure!(a.chan(ch)?.fence == 0, "{what}: the FENCE before it ran");
    Ok(())
}

/// `bad` must be refused with BAD_FIELD; each case is also tried in a
/// level-1 batch.
fn bad_fields() -> Vec<(&'static str, Vec<u32>)> {
    vec![
        // Addresses at or above 2^48, ranges past it.
        ("COPY SRC at 2^48", cmd::copy(TOP, DATA, 4)),
        (
            "COPY DST high bits",
            cmd::copy(DATA, DATA | 0xffff << 48, 4),
        ),
        (
            "COPY SRC + BYTES past 2^48",
            cmd::copy(TOP - 0x10, DATA, 0x11),
        ),
        ("COPY DST + BYTES past 2^48", cmd::copy(DATA, TOP - 1, 2)),
        ("COPY of 0 bytes", cmd::copy(DATA, DATA + 0x100, 0)),
        ("COPY SRC top bit", cmd::copy(1 << 63, DATA, 4)),
        ("FILL DST misaligned", cmd::fill(DATA + 2, 4, 0)),
        ("FILL of 0 bytes", cmd::fill(DATA, 0, 0)),
        ("FILL of 2 bytes", cmd::fill(DATA, 2, 0)),
        ("FILL of 2^32-1 bytes", cmd::fill(DATA, u32::MAX, 0)),
        ("FILL past 2^48", cmd::fill(TOP - 4, 8, 0)),
        ("FILL wrapping", cmd::fill(TOP - 4, u32::MAX - 3, 0)),
        (
            "BLIT2D SRC misaligned",
            cmd::blit2d(DATA + 2, 64, DATA, 64, 1, 1),
        ),
        (
            "BLIT2D DST pitch below WIDTH × 4",
            cmd::blit2d(DATA, 64, DATA + 0x1000, 12, 4, 2),
        ),
        (
            "BLIT2D pitch not a multiple of 4",
            cmd::blit2d(DATA, 66, DATA + 0x1000, 64, 4, 2),
        ),
        (
            "BLIT2D WIDTH 0",
            cmd::blit2d(DATA, 64, DATA + 0x1000, 64, 0, 1),
        ),
        (
            "BLIT2D WIDTH 16385",
            cmd::blit2d(DATA, 65540, DATA + 0x1000, 65540, 16385, 1),
        ),
        (
            "BLIT2D HEIGHT 16385",
            cmd::blit2d(DATA, 64, DATA + 0x1000, 64, 1, 16385),
        ),
        (
            "BLIT2D source footprint past 2^48",
            cmd::blit2d(TOP - 0xFFFF_FFFC * 2, 0xFFFF_FFFC, DATA, 64, 1, 3),
        ),
        (
            "BLIT2D destination footprint past 2^48 by a pixel",
            cmd::blit2d(DATA, 64, TOP - 0x1000 * 15 - 12, 0x1000, 4, 16),
        ),
        ("FENCE DST misaligned", cmd::fence(DATA + 2, 1)),
        ("FENCE VALUE64 at 4 mod 8", cmd::fence64(DATA + 4, 1)),
        (
            "FENCE VALUE_HI without VALUE64",
            vec![header(op::FENCE, 5, 0), DATA as u32, 0, 1, 1],
        ),
        ("FENCE at 2^48", cmd::fence(TOP, 1)),
        ("FENCE VALUE64 past 2^48", cmd::fence64(TOP - 4, 1)),
        ("SEMAPHORE_WAIT compare 6", cmd::semaphore_wait(SEM, 6, 0)),
        ("SEMAPHORE_WAIT compare 7", cmd::semaphore_wait(SEM, 7, 0)),
        (
            "SEMAPHORE_WAIT misaligned",
            cmd::semaphore_wait(SEM + 1, 0, 0),
        ),
        ("SEMAPHORE_WAIT at 2^48", cmd::semaphore_wait(TOP, 0, 0)),
        ("BATCH_START misaligned", cmd::batch_start(BATCHES + 2, 4)),
        ("BATCH_START of 0 bytes", cmd::batch_start(BATCHES, 0)),
        ("BATCH_START of 6 bytes", cmd::batch_start(BATCHES, 6)),
        ("BATCH_START past 2^48", cmd::batch_start(TOP - 4, 8)),
        ("BATCH_START at 2^48", cmd::batch_start(TOP, 4)),
        (
            "BATCH_START wrapping",
            cmd::batch_start(TOP - 4, 0xffff_fffc),
        ),
        (
            "TLB_INVALIDATE misaligned",
            cmd::tlb_invalidate(0x800, 0x1000),
        ),
        ("TLB_INVALIDATE of 0 bytes", cmd::tlb_invalidate(0x1000, 0)),
        (
            "TLB_INVALIDATE of half a page",
            cmd::tlb_invalidate(0x1000, 0x800),
        ),
        (
            "TLB_INVALIDATE past 2^48",
            cmd::tlb_invalidate(TOP - 0x1000, 0x2000),
        ),
        (
            "TLB_INVALIDATE whose VA + SIZE wraps 2^64",
            cmd::tlb_invalidate(0x1000, 0u64.wrapping_sub(0x1000)),
        ),
        (
            "TLB_INVALIDATE of 2^64 - 4 KiB at 2^48 - 4 KiB",
            cmd::tlb_invalidate(TOP - 0x1000, 0u64.wrapping_sub(0x1000)),
        ),
        (
            "TLB_INVALIDATE ALL with a VA",
            vec![header(op::TLB_INVALIDATE, 5, ALL), 0x1000, 0, 0, 0],
        ),
        (
            "TLB_INVALIDATE ALL with a SIZE high dword",
            vec![header(op::TLB_INVALIDATE, 5, ALL), 0, 0, 0, 1],
        ),
        ("TIMESTAMP at 4 mod 8", cmd::timestamp(DATA + 4)),
        ("TIMESTAMP at 2^48", cmd::timestamp(TOP)),
        (
            "STORE_REGISTER misaligned",
            cmd::store_register(0, DATA + 2),
        ),
        ("STORE_REGISTER at 2^48", cmd::store_register(0, TOP)),
        (
            "SET_SCANOUT surface not 4 KiB aligned",
            cmd::set_scanout(0, DATA + 0x800, 256, 64, 4),
        ),
        (
            "SET_SCANOUT pitch below WIDTH × 4",
            cmd::set_scanout(0, DATA, 252, 64, 4),
        ),
        ("SET_SCANOUT WIDTH 0", cmd::set_scanout(0, DATA, 256, 0, 4)),
        (
            "SET_SCANOUT HEIGHT 16385",
            cmd::set_scanout(0, DATA, 256, 64, 16385),
        ),
        (
            "SET_SCANOUT past 2^48",
            cmd::set_scanout(0, TOP - 0x1000, 256, 64, 17),
        ),
        // Reserved and undefined header bits.
        ("NOP with a flag", cmd::with(cmd::nop(2), 1 << 16)),
        (
            "COPY with bit 17",
            cmd::with(cmd::copy(DATA, DATA + 64, 4), 1 << 17),
        ),
        (
            "COPY with bit 31",
            cmd::with(cmd::copy(DATA, DATA + 64, 4), 1 << 31),
        ),
        (
            "FILL with bit 24",
            cmd::with(cmd::fill(DATA, 4, 0), 1 << 24),
        ),
        ("FENCE with bit 19", cmd::with(cmd::fence(DATA, 0), 1 << 19)),
        ("FENCE with bit 23", cmd::with(cmd::fence(DATA, 0), 1 << 23)),
        (
            "SEMAPHORE_WAIT with bit 20",
            cmd::with(cmd::semaphore_wait(SEM, 0, 0), 1 << 20),
        ),
        (
            "BATCH_START with bit 18",
            cmd::with(cmd::batch_start(BATCHES + 0x3f_000, 4), 1 << 18),
        ),
        (
            "TLB_INVALIDATE with bit 16",
            cmd::with(cmd::tlb_invalidate_all(), 1 << 16),
        ),
        (
            "LOAD_REGISTER_IMM with bit 16",
            cmd::with(cmd::load_register_imm(0, 0), 1 << 16),
        ),
        (
            "TIMESTAMP with bit 17",
            cmd::with(cmd::timestamp(DATA), 1 << 17),
        ),
        (
            "STORE_REGISTER with bit 17",
            cmd::with(cmd::store_register(0, DATA), 1 << 17),
        ),
        (
            "SET_SCANOUT with bit 17",
            cmd::with(cmd::set_scanout(0, DATA, 256, 64, 4), 1 << 17),
        ),
    ]
}

#[test]
fn bad_fields_and_reserved_bits_are_refused_in_the_ring_and_in_batches() -> anyhow::Result<()> {
    let d = daemon()?;
    let mut a = Vgpu::attach(&d, VGPU_A)?;
    a.enable_all()?;
    a.write_dwords(BATCHES + 0x3f_000, &cmd::batch_end());
    let mut failures = Vec::new();
    for (i, (name, form)) in bad_fields().into_iter().enumerate() {
        let ch = (i % 4) as u32;
        if let Err(e) = refuse_in_ring(&mut a, ch, &form, code::BAD_FIELD, name) {
            failures.push(format!("ring: {e:#}"));
        }
        // In a batch: ERROR_VA is the command's VA in the batch.
        let b = BATCHES + 0x1000 * (1 + ch as u64);
        let words = cmd::batch(&[cmd::nop(3), form.clone()]);
        a.write_dwords(b, &words);
        a.restart(ch)?;
        a.submit(
            ch,
            &cmd::concat(&[
                Vgpu::fence(ch, 0xbad),
                cmd::batch_start(b, cmd::bytes_of(&words)),
            ]),
        )?;
        if let Err(e) = a.assert_refused(ch, code::BAD_FIELD, b + 12, 0, name) {
            failures.push(format!("batch: {e:#}"));
        }
    }
    anyhow::ensure!(failures.is_empty(), "{}", failures.join("\n"));
    Ok(())
}

#[test]
fn ranges_ending_exactly_at_2_48_pass_the_validator() -> anyhow::Result<()> {
    let d = daemon()?;
    let mut a = Vgpu::attach(&d, VGPU_A)?;
    a.enable_all()?;
    // Valid fields, unmapped memory: accepted, then the engine faults
    // (16) on the first access, at the address the command names.
    for (name, form, va) in [
        (
            "COPY from the last 16 bytes",
            cmd::copy(TOP - 16, DATA, 16),
            TOP - 16,
        ),
        (
            "FILL of the last 8 bytes",
            cmd::fill(TOP - 8, 8, 1),
            TOP - 8,
        ),
        (
            "FENCE VALUE64 in the last 8",
            cmd::fence64(TOP - 8, 1),
            TOP - 8,
        ),
        ("TIMESTAMP in the last 8", cmd::timestamp(TOP - 8), TOP - 8),
        (
            "COPY of 2^32-1 bytes ending at 2^48",
            cmd::copy(DATA, TOP - u64::from(u32::MAX), u32::MAX),
            TOP - u64::from(u32::MAX),
        ),
    ] {
        a.restart(0)?;
        a.submit(0, &form)?;
        let s = a.wait_stopped(0, DEADLINE)?;
        assert!(
            s.code == code::ENGINE_FAULT && s.va == va,
            "{name}: expected an engine fault at {va:#x}: {s:x?}"
        );
        a.clear_device_status()?;
    }
    // TLB_INVALIDATE of the last page, and of everything from 0 to 2^48.
    a.run_ok(1, &cmd::tlb_invalidate(TOP - 0x1000, 0x1000), "last page")?;
    a.run_ok(1, &cmd::tlb_invalidate(0, TOP), "0 to 2^48")?;
    // A batch whose last dword is the last of the address space: fields
    // valid, the read faults (FETCH_FAULT at the BATCH_START).
    a.restart(2)?;
    a.submit(2, &cmd::batch_start(TOP - 4, 4))?;
    a.assert_refused(
        2,
        code::FETCH_FAULT,
        a.ring_va(2, 0),
        0,
        "batch at 2^48 - 4",
    )?;
    Ok(())
}

#[test]
fn unknown_opcodes_and_bad_lengths() -> anyhow::Result<()> {
    let d = daemon()?;
    let mut a = Vgpu::attach(&d, VGPU_A)?;
    a.enable_all()?;
    let mut cases: Vec<(String, Vec<u32>, u32)> = Vec::new();
    for opcode in [0x00u32, 0x10, 0x11, 0x7f, 0x80, 0xff] {
        cases.push((
            format!("opcode {opcode:#x}"),
            vec![header(opcode, 1, 0)],
            code::UNKNOWN_OPCODE,
        ));
    }
    cases.push(("a zero dword".into(), vec![0], code::UNKNOWN_OPCODE));
    // Wrong DWORDS for each fixed-length opcode.
    for (opcode, len) in [
        (op::COPY, 6),
        (op::FILL, 5),
        (op::BLIT2D, 9),
        (op::FENCE, 5),
        (op::SEMAPHORE_WAIT, 4),
        (op::BATCH_START, 4),
        (op::TLB_INVALIDATE, 5),
        (op::TIMESTAMP, 3),
        (op::LOAD_REGISTER_IMM, 3),
        (op::STORE_REGISTER, 4),
        (op::SET_SCANOUT, 7),
        (op::SET_CONTEXT, 2),
        (op::SET_PT_ROOT, 3),
    ] {
        for wrong in [0, len - 1, len + 1, 255] {
            let mut words = vec![0u32; (wrong as usize).max(1) + 2];
            words[0] = header(opcode, wrong, 0);
            // Followed by NOPs so that the span is long enough.
            for w in words.iter_mut().skip(1) {
                *w = header(op::NOP, 1, 0);
            }
            cases.push((
                format!("opcode {opcode:#x} with {wrong} dwords"),
                words,
                code::BAD_LENGTH,
            ));
        }
    }
    cases.push((
        "NOP of 0 dwords".into(),
        vec![header(op::NOP, 0, 0)],
        code::BAD_LENGTH,
    ));
    cases.push((
        "BATCH_END in the ring".into(),
        cmd::batch_end(),
        code::STRAY_BATCH_END,
    ));
    for (i, (name, words, expected)) in cases.iter().enumerate() {
        refuse_in_ring(&mut a, (i % 4) as u32, words, *expected, name)?;
    }
    // A command that runs past PUT: a FILL whose last dword is not
    // submitted.
    a.restart(0)?;
    a.push(0, &Vgpu::fence(0, 1));
    a.push(0, &cmd::fill(DATA, 4, 0)[..4]);
    a.doorbell(0)?;
    a.assert_refused(0, code::BAD_LENGTH, a.ring_va(0, 20), 0, "FILL past PUT")?;
    // NOP of 255 dwords that runs past PUT.
    a.restart(1)?;
    a.push(1, &cmd::nop(255)[..254]);
    a.doorbell(1)?;
    a.assert_refused(1, code::BAD_LENGTH, a.ring_va(1, 0), 0, "NOP past PUT")?;
    Ok(())
}

#[test]
fn batch_ends_missing_stray_or_overrun() -> anyhow::Result<()> {
    let d = daemon()?;
    let mut a = Vgpu::attach(&d, VGPU_A)?;
    a.enable_all()?;
    let b = BATCHES;
    let start_at = |a: &Vgpu, ch| a.ring_va(ch, 20);
    let lead = |ch| Vgpu::fence(ch, 0xbad);
    // No BATCH_END at the end: UNTERMINATED_BATCH at the BATCH_START.
    a.write_dwords(b, &cmd::concat(&[cmd::nop(1), cmd::fill(DATA, 4, 1)]));
    a.submit(0, &cmd::concat(&[lead(0), cmd::batch_start(b, 24)]))?;
    a.assert_refused(
        0,
        code::UNTERMINATED_BATCH,
        start_at(&a, 0),
        0,
        "no BATCH_END",
    )?;
    // BATCH_END before the last dword: STRAY_BATCH_END at it.
    a.write_dwords(
        b + 0x1000,
        &cmd::concat(&[cmd::nop(1), cmd::batch_end(), cmd::nop(1), cmd::batch_end()]),
    );
    a.submit(
        1,
        &cmd::concat(&[lead(1), cmd::batch_start(b + 0x1000, 16)]),
    )?;
    a.assert_refused(1, code::STRAY_BATCH_END, b + 0x1004, 0, "early BATCH_END")?;
    // A command running past the batch's end: BAD_LENGTH at it. The
    // batch's last dword, inside the FILL (its DST high dword), reads as a
    // BATCH_END, so the batch is not unterminated.
    let end_word = u64::from(cmd::batch_end()[0]);
    a.write_dwords(
        b + 0x2000,
        &cmd::concat(&[cmd::nop(1), cmd::fill(DATA | end_word << 32, 4, 1)]),
    );
    a.submit(
        2,
        &cmd::concat(&[lead(2), cmd::batch_start(b + 0x2000, 16)]),
    )?;
    a.assert_refused(2, code::BAD_LENGTH, b + 0x2004, 0, "FILL past the batch")?;
    // A batch of 4 bytes that is not a BATCH_END.
    a.write_dwords(b + 0x3000, &cmd::nop(1));
    a.submit(3, &cmd::concat(&[lead(3), cmd::batch_start(b + 0x3000, 4)]))?;
    a.assert_refused(3, code::UNTERMINATED_BATCH, start_at(&a, 3), 0, "NOP batch")?;
    // The shortest batch, a lone BATCH_END, is fine.
    a.write_dwords(b + 0x4000, &cmd::batch_end());
    a.run_ok(0, &cmd::batch_start(b + 0x4000, 4), "empty batch")?;
    Ok(())
}

#[test]
fn flags_each_opcode_defines_are_accepted() -> anyhow::Result<()> {
    let d = daemon()?;
    let mut a = Vgpu::attach(&d, VGPU_A)?;
    a.enable_all()?;
    a.run_ok(
        0,
        &cmd::concat(&[
            cmd::with(cmd::fence(DATA, 1), INTERRUPT),
            cmd::with(cmd::fence64(DATA + 8, 2), INTERRUPT),
            cmd::with(cmd::fence(DATA + 16, 3), VALUE64),
            cmd::tlb_invalidate_all(),
        ]),
        "FENCE flags and TLB_INVALIDATE ALL",
    )?;
    assert_eq!(a.u64_at(DATA + 16), 3);
    Ok(())
}

#[test]
fn a_command_wrapping_past_put_is_bad_length() -> anyhow::Result<()> {
    let d = daemon()?;
    let mut a = Vgpu::attach(&d, VGPU_A)?;
    a.enable(0)?;
    // GET at the ring's last 8 bytes, then a FILL (20 bytes) written across
    // the end, but PUT only 8 bytes after the wrap (4 bytes short).
    let mut pads = Vec::new();
    let mut left = (RING_SIZE - 8) / 4;
    while left > 0 {
        let n = left.min(255);
        pads.push(cmd::nop(n));
        left -= n;
    }
    a.submit(0, &cmd::concat(&pads))?;
    a.wait_for_idle(0)?;
    a.push(0, &cmd::fill(DATA, 4, 1));
    a.set_reg(0, vgpud_tests::regs::channel::RING_PUT, 8)?;
    a.assert_refused(
        0,
        code::BAD_LENGTH,
        a.ring_va(0, RING_SIZE - 8),
        RING_SIZE - 8,
        "FILL across the ring end past PUT",
    )
}
