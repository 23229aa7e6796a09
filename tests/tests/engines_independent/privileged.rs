//! The privileged forms ("Commands", "Privileged forms") at every nesting
//! level: in the ring (level 0) and in batches at levels 1 to 4. Each is
//! refused with its documented code, ERROR_VA the VA of the command (in
//! the ring or the batch), RING_GET unchanged, and nothing of the
//! submission runs: a FILL of a mark and a FENCE placed before the
//! privileged command never happen.

use vgpud_tests::regs::channel as chreg;

use crate::cmd::{self, PHYSICAL, PRIVILEGED, code};
use crate::rig::*;

/// Places `bad` at nesting `level` behind a FILL of mark `mark` and a
/// FENCE, submits it on `ch` (restarted, GET 0) and checks the refusal.
/// Returns the VA the error must name.
fn refuse_at_level(
    a: &mut Vgpu,
    ch: u32,
    level: u32,
    bad: &[u32],
    expected: u32,
    mark: u64,
    what: &str,
) -> anyhow::Result<()> {
    a.restart(ch)?;
    let batch_va = |k: u32| BATCHES + 0x4_0000 * u64::from(ch) + 0x1000 * u64::from(k);
    let lead = cmd::concat(&[
        cmd::fill(mark, 4, 0x0bad_0000 | mark as u32),
        Vgpu::fence(ch, 0xbad),
    ]);
    let bad_va;
    if level == 0 {
        let ring = cmd::concat(&[lead, bad.to_vec(), cmd::nop(1)]);
        bad_va = a.ring_va(ch, 0) + 4 * 10;
        a.push(ch, &ring);
    } else {
        // The deepest batch: NOP, the command, BATCH_END.
        let deepest = cmd::batch(&[cmd::nop(1), bad.to_vec()]);
        a.write_dwords(batch_va(level), &deepest);
        bad_va = batch_va(level) + 4;
        let mut inner = cmd::bytes_of(&deepest);
        for k in (1..level).rev() {
            let b = cmd::batch(&[cmd::batch_start(batch_va(k + 1), inner)]);
            a.write_dwords(batch_va(k), &b);
            inner = cmd::bytes_of(&b);
        }
        a.push(
            ch,
            &cmd::concat(&[lead, cmd::batch_start(batch_va(1), inner), cmd::nop(1)]),
        );
    }
    a.doorbell(ch)?;
    a.assert_refused(ch, expected, bad_va, 0, &format!("{what} at level {level}"))?;
    let s = a.chan(ch)?;
    assert_eq!(
        s.fence, 0,
        "{what} at level {level}: the FENCE before it ran"
    );
    Ok(())
}

/// Every case must leave every mark unwritten, also a while later.
fn assert_marks_clear(a: &Vgpu, marks: u64) -> anyhow::Result<()> {
    std::thread::sleep(QUIET);
    let area = a.vram(MARKS, 4 * marks);
    assert!(
        area.iter().all(|&b| b == 0),
        "a refused submission ran its FILL: {:x?}",
        area.chunks(4)
            .enumerate()
            .filter(|(_, w)| w.iter().any(|&b| b != 0))
            .map(|(i, _)| i)
            .collect::<Vec<_>>()
    );
    for ch in 0..CHANNELS {
        assert_eq!(
            a.u32_at(Vgpu::fence_va(ch)),
            0,
            "a refused submission's FENCE wrote its target"
        );
    }
    Ok(())
}

/// The addressing commands with PHYSICAL set; each is valid without it.
fn physical_forms() -> Vec<(&'static str, Vec<u32>)> {
    vec![
        ("COPY", cmd::copy(DATA, DATA + 0x1000, 16)),
        ("FILL", cmd::fill(DATA, 16, 1)),
        ("BLIT2D", cmd::blit2d(DATA, 16, DATA + 0x1000, 16, 4, 2)),
        ("FENCE", cmd::fence(DATA, 1)),
        ("SEMAPHORE_WAIT", cmd::semaphore_wait(SEM, cmd::cmp::EQ, 0)),
        ("BATCH_START", cmd::batch_start(BATCHES + 0x3f_000, 4)),
        ("TIMESTAMP", cmd::timestamp(DATA)),
        ("STORE_REGISTER", cmd::store_register(0, DATA)),
        ("SET_SCANOUT", cmd::set_scanout(0, DATA, 256, 64, 4)),
    ]
}

#[test]
fn physical_is_refused_on_every_opcode_at_every_level() -> anyhow::Result<()> {
    let d = daemon()?;
    let mut a = Vgpu::attach(&d, VGPU_A)?;
    a.enable_all()?;
    // The batch the BATCH_START forms name: valid on its own.
    a.write_dwords(BATCHES + 0x3f_000, &cmd::batch_end());
    let mut mark = 0;
    for level in 0..=4 {
        for (name, form) in physical_forms() {
            let ch = mark as u32 % CHANNELS;
            refuse_at_level(
                &mut a,
                ch,
                level,
                &cmd::with(form, PHYSICAL),
                code::PRIVILEGED,
                MARKS + 4 * mark,
                &format!("{name} with PHYSICAL"),
            )?;
            mark += 1;
        }
    }
    assert_marks_clear(&a, mark)?;
    // Positive control: each form without PHYSICAL runs, in a level-4
    // batch (a BATCH_START there is a fifth level, so it is left out).
    for (name, form) in physical_forms() {
        if name == "BATCH_START" {
            a.run_ok(0, &form, name)?;
            continue;
        }
        let b4 = cmd::batch(&[form]);
        a.write_dwords(BATCHES + 0x10_4000, &b4);
        let mut inner = cmd::bytes_of(&b4);
        for k in (1..4u64).rev() {
            let b = cmd::batch(&[cmd::batch_start(
                BATCHES + 0x10_0000 + 0x1000 * (k + 1),
                inner,
            )]);
            a.write_dwords(BATCHES + 0x10_0000 + 0x1000 * k, &b);
            inner = cmd::bytes_of(&b);
        }
        a.run_ok(0, &cmd::batch_start(BATCHES + 0x10_1000, inner), name)?;
    }
    Ok(())
}

#[test]
fn privileged_batch_start_set_context_and_set_pt_root_are_refused_at_every_level()
-> anyhow::Result<()> {
    let d = daemon()?;
    let mut a = Vgpu::attach(&d, VGPU_A)?;
    a.enable_all()?;
    a.write_dwords(BATCHES + 0x3f_000, &cmd::batch_end());
    let root = a.tables.root_entry();
    let forms = [
        (
            "privileged BATCH_START",
            cmd::with(cmd::batch_start(BATCHES + 0x3f_000, 4), PRIVILEGED),
        ),
        (
            "privileged physical BATCH_START",
            cmd::with(
                cmd::batch_start(BATCHES + 0x3f_000, 4),
                PRIVILEGED | PHYSICAL,
            ),
        ),
        ("SET_CONTEXT", cmd::set_context(0)),
        ("SET_CONTEXT 7", cmd::set_context(7)),
        ("SET_PT_ROOT", cmd::set_pt_root(root)),
        ("SET_PT_ROOT 0", cmd::set_pt_root(0)),
    ];
    let mut mark = 0;
    for level in 0..=4 {
        for (name, form) in &forms {
            // In a level-4 batch a BATCH_START is also one level too deep:
            // the privileged forms are checked (step 4) before the depth
            // (step 6), so the code is still PRIVILEGED.
            refuse_at_level(
                &mut a,
                (mark % 4) as u32,
                level,
                form,
                code::PRIVILEGED,
                MARKS + 4 * mark,
                name,
            )?;
            mark += 1;
        }
    }
    assert_marks_clear(&a, mark)
}

#[test]
fn registers_outside_the_guests_are_refused_at_every_level() -> anyhow::Result<()> {
    let d = daemon()?;
    let mut a = Vgpu::attach(&d, VGPU_A)?;
    a.enable_all()?;
    // LOAD_REGISTER_IMM: GPRs only (0x00..=0x3c, multiples of 4).
    let lri_refused = [
        0x40,
        0x44,
        0x48,
        0x4c,
        0x50,
        0x100,
        0x104,
        0x108,
        0x10c,
        0x110,
        0x120,
        0x124,
        0x128,
        0x1000,
        0x1010,
        0x1100,
        0x1310,
        0x01,
        0x02,
        0x03,
        0x3d,
        0x3e,
        0x3f,
        0x41,
        0xfff,
        0xffff_fffc,
        0x8000_0000,
        0x1_0000,
    ];
    // STORE_REGISTER: readable ones only (0x00..=0x4c, multiples of 4).
    let store_refused = [
        0x50,
        0x54,
        0x100,
        0x104,
        0x108,
        0x10c,
        0x110,
        0x120,
        0x124,
        0x128,
        0x1000,
        0x1004,
        0x1008,
        0x100c,
        0x1010,
        0x1110,
        0x01,
        0x02,
        0x4a,
        0x4d,
        0x4e,
        0x4f,
        0xffff_fffc,
        0x8000_0040,
        0x1_0000,
        0x1_0040,
    ];
    let mut mark = 0;
    let mut levels = (0..=4).cycle();
    for reg in lri_refused {
        let level = levels.next().unwrap_or(0);
        refuse_at_level(
            &mut a,
            (mark % 4) as u32,
            level,
            &cmd::load_register_imm(reg, 0xdead),
            code::REGISTER_NOT_ALLOWED,
            MARKS + 4 * mark,
            &format!("LOAD_REGISTER_IMM {reg:#x}"),
        )?;
        mark += 1;
    }
    for reg in store_refused {
        let level = levels.next().unwrap_or(0);
        refuse_at_level(
            &mut a,
            (mark % 4) as u32,
            level,
            &cmd::store_register(reg, DATA),
            code::REGISTER_NOT_ALLOWED,
            MARKS + 4 * mark,
            &format!("STORE_REGISTER {reg:#x}"),
        )?;
        mark += 1;
    }
    assert_marks_clear(&a, mark)?;
    // The edges of the allowed sets are allowed.
    a.run_ok(
        0,
        &cmd::concat(&[
            cmd::load_register_imm(0x00, 1),
            cmd::load_register_imm(0x3c, 2),
            cmd::store_register(0x00, DATA),
            cmd::store_register(0x4c, DATA + 4),
        ]),
        "GPR0, GPR15, TIMESTAMP_HI",
    )?;
    Ok(())
}

#[test]
fn set_scanout_to_any_head_but_0_is_refused_at_every_level() -> anyhow::Result<()> {
    let d = daemon()?;
    let mut a = Vgpu::attach(&d, VGPU_A)?;
    a.enable_all()?;
    let mut mark = 0;
    for level in 0..=4 {
        for head in [1u32, 2, 3, 4, 0x100, 0xffff_ffff] {
            refuse_at_level(
                &mut a,
                (mark % 4) as u32,
                level,
                &cmd::set_scanout(head, DATA, 256, 64, 4),
                code::DISPLAY_HEAD,
                MARKS + 4 * mark,
                &format!("SET_SCANOUT head {head}"),
            )?;
            mark += 1;
        }
    }
    assert_marks_clear(&a, mark)
}

#[test]
fn the_validators_steps_come_in_their_documented_order() -> anyhow::Result<()> {
    let d = daemon()?;
    let mut a = Vgpu::attach(&d, VGPU_A)?;
    a.enable_all()?;
    let cases: Vec<(&str, Vec<u32>, u32)> = vec![
        // 2 before 4: the length of SET_CONTEXT is checked first.
        (
            "SET_CONTEXT of 3 dwords",
            vec![cmd::header(cmd::op::SET_CONTEXT, 3, 0), 0, 0],
            code::BAD_LENGTH,
        ),
        // 3 (reserved header bits) before 4.
        (
            "FILL with PHYSICAL and header bit 24",
            cmd::with(cmd::fill(DATA, 4, 0), PHYSICAL | 1 << 24),
            code::BAD_FIELD,
        ),
        (
            "SET_PT_ROOT with a flag bit",
            cmd::with(cmd::set_pt_root(0), 1 << 16),
            code::BAD_FIELD,
        ),
        // 4 before 5: a privileged form with bad fields is PRIVILEGED.
        (
            "COPY with PHYSICAL and 0 bytes",
            cmd::with(cmd::copy(DATA, DATA, 0), PHYSICAL),
            code::PRIVILEGED,
        ),
        (
            "FILL with PHYSICAL at 2^48",
            cmd::with(cmd::fill(1 << 48, 4, 0), PHYSICAL),
            code::PRIVILEGED,
        ),
        (
            "STORE_REGISTER of 0x100 to a misaligned DST",
            cmd::store_register(0x100, DATA + 1),
            code::REGISTER_NOT_ALLOWED,
        ),
        (
            "SET_SCANOUT head 1 of a misaligned surface",
            cmd::set_scanout(1, DATA + 4, 256, 64, 4),
            code::DISPLAY_HEAD,
        ),
    ];
    for (i, (name, form, expected)) in cases.into_iter().enumerate() {
        refuse_at_level(
            &mut a,
            (i % 4) as u32,
            (i % 5) as u32,
            &form,
            expected,
            MARKS + 4 * i as u64,
            name,
        )?;
    }
    Ok(())
}

#[test]
fn a_refusal_on_one_channel_leaves_the_others_running() -> anyhow::Result<()> {
    let d = daemon()?;
    let mut a = Vgpu::attach(&d, VGPU_A)?;
    a.enable_all()?;
    a.submit(0, &cmd::set_context(1))?;
    a.assert_refused(0, code::PRIVILEGED, a.ring_va(0, 0), 0, "SET_CONTEXT")?;
    for ch in 1..CHANNELS {
        a.submit(ch, &Vgpu::fence(ch, 5))?;
        a.wait_fence(ch, 5)?;
    }
    // The stopped channel's doorbell is not rung again until RESET+ENABLE.
    a.set_put(0, 0);
    a.push(0, &Vgpu::fence(0, 9));
    a.doorbell(0)?;
    std::thread::sleep(QUIET);
    let s = a.chan(0)?;
    assert_eq!(
        (s.state(), s.code, s.fence, s.get),
        (2, code::PRIVILEGED, 0, 0),
        "{s:x?}"
    );
    a.set_reg(0, chreg::CONTROL, chreg::ENABLE)?;
    assert_eq!(a.chan(0)?.state(), 2, "ENABLE restarted a stopped channel");
    a.restart(0)?;
    a.submit(0, &Vgpu::fence(0, 10))?;
    a.wait_fence(0, 10)
}
