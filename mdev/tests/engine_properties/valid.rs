//! The model properties: a case is A's valid tables and a stream planned
//! by the model (with at most one poisoned access), cut into submissions
//! with engine steps between; running it compares the device with the
//! model.

use proptest::collection::vec;
use proptest::prelude::*;
use vgpu_commands::StreamBuilder;
use vgpu_emulation::bar2::channels::{
    ERROR_CODE, ERROR_VA_HI, ERROR_VA_LO, FENCE_HI, FENCE_LO, INTR_FENCE, INTR_STATUS, RING_GET,
    STATUS, USERD_LO,
};
use vgpu_emulation::bar2::layout::{
    CTRL_FAULT_COUNT, CTRL_FAULT_INFO, CTRL_FAULT_VA_HI, CTRL_FAULT_VA_LO, CTRL_IRQ_STATUS,
    channel_register,
};

use crate::drive::{Ring, assert_channels_consistent, ring_size};
use crate::layout::{Layout, build, layout};
use crate::model::{Planner, find_poison, poison_entry};
use crate::rig::{
    BATCHES_AT, HANG, RUNNING, Rig, SLICE, STOPPED, channel_reg, first_difference, read_reg,
    run_until_idle, set_root, step, write_reg,
};
use crate::stream::Op;

#[derive(Clone, Debug)]
pub struct ValidCase {
    layout: Layout,
    ops: Vec<Op>,
    ring_size: u32,
    /// Bytes of NOPs submitted first, so that the stream wraps.
    pad: u32,
    /// Where the stream is cut into more submissions (indices of command
    /// ends).
    cuts: Vec<usize>,
    /// Engine steps after each doorbell.
    steps: Vec<u8>,
}

pub fn valid_case(ops: impl Strategy<Value = Vec<Op>>) -> impl Strategy<Value = ValidCase> {
    (
        layout(),
        ops,
        ring_size(),
        any::<u32>(),
        vec(any::<usize>(), 0..3),
        vec(0..4u8, 8),
    )
        .prop_map(|(layout, ops, ring_size, pad, cuts, steps)| ValidCase {
            layout,
            ops,
            ring_size,
            pad: pad % ring_size / 4 * 4,
            cuts,
            steps,
        })
}

/// Splits `words` at command ends into spans of at most `cap` dwords,
/// and at the ends `cuts` name.
fn spans(words: &[u32], ends: &[usize], cap: usize, cuts: &[usize]) -> Vec<Vec<u32>> {
    let cut_at: Vec<usize> = cuts
        .iter()
        .filter(|_| !ends.is_empty())
        .map(|c| ends[c % ends.len()])
        .collect();
    let mut out = Vec::new();
    let mut start = 0;
    let mut last = 0;
    for &end in ends {
        if end - start > cap {
            out.push(words[start..last].to_vec());
            start = last;
        }
        last = end;
        if cut_at.contains(&end) {
            out.push(words[start..end].to_vec());
            start = end;
        }
    }
    if last > start {
        out.push(words[start..last].to_vec());
    }
    out.retain(|span| !span.is_empty());
    out
}

/// Runs `case` and checks A's memory against the model's; a stream with
/// a poisoned access must stop where the model says, with the fault the
/// model expects.
pub fn run_valid(case: &ValidCase) {
    let rig = Rig::new();
    let a = &rig.a;
    let poison = find_poison(&case.ops);
    let extra: Vec<_> = poison
        .and_then(|p| poison_entry(&case.layout, p))
        .into_iter()
        .collect();
    let tables = build(&case.layout, &[], &extra);
    rig.put_a_vram(0, &tables.bytes);
    set_root(a, 0, tables.root);
    let mut ring = Ring::new(0, case.ring_size);
    ring.enable(a);
    // The channel's control page, in VRAM nothing else uses: the device
    // mirrors GET, FENCE and ERROR_CODE there.
    write_reg(a, channel_register(0, USERD_LO), CONTROL_PAGE as u32 | 1);

    let mut planner = Planner::new(&case.layout, rig.a_memory(), poison);
    let (words, ends) = planner.plan(&case.ops);
    for (at, bytes) in &planner.batches {
        rig.put_a_vram(BATCHES_AT + at, bytes);
    }
    let before = rig.outside_a();

    let mut steps = case.steps.iter().cycle();
    let mut submit = |words: &[u32], planner: &mut Planner| {
        ring.submit(a, words, &mut |offset, bytes| {
            planner.model.put(offset as usize, bytes)
        });
        for _ in 0..*steps.next().expect("cycles") {
            step(a);
        }
    };
    let mut pad = StreamBuilder::new();
    let mut left = case.pad / 4;
    while left > 0 {
        let n = left.min(255);
        pad.nop(n as u8);
        left -= n;
    }
    if !pad.words().is_empty() {
        submit(pad.words(), &mut planner);
    }
    let cap = case.ring_size as usize / 4 - 1;
    for span in spans(&words, &ends, cap, &case.cuts) {
        submit(&span, &mut planner);
    }
    run_until_idle(&[a], HANG);

    assert_channels_consistent(a);
    let fence =
        u64::from(channel_reg(a, 0, FENCE_LO)) | u64::from(channel_reg(a, 0, FENCE_HI)) << 32;
    assert_eq!(
        fence, planner.model.fence,
        "FENCE is the last fence's value"
    );
    assert_eq!(
        channel_reg(a, 0, INTR_STATUS) & INTR_FENCE != 0,
        planner.model.fence_interrupt,
        "INTR_STATUS.FENCE: a FENCE that asked for an interrupt completed"
    );
    let faulted = read_reg(a, CTRL_IRQ_STATUS) & IRQ_FAULT != 0;
    assert_eq!(faulted, planner.fault.is_some(), "IRQ_STATUS.FAULT");
    // What the control page must hold: the registers it mirrors.
    let mirrored: Vec<u8> = [RING_GET, FENCE_LO, FENCE_HI, ERROR_CODE]
        .into_iter()
        .flat_map(|reg| channel_reg(a, 0, reg).to_le_bytes())
        .collect();
    planner.model.put(CONTROL_PAGE as usize + 4, &mirrored);
    match planner.fault {
        None => {
            assert_eq!(read_reg(a, CTRL_FAULT_COUNT), 0, "a valid stream faulted");
            assert_eq!(
                channel_reg(a, 0, ERROR_CODE),
                0,
                "a valid stream was refused"
            );
            assert_eq!(channel_reg(a, 0, STATUS), RUNNING);
            assert_eq!(channel_reg(a, 0, RING_GET), ring.put);
        }
        Some((va, write, reason)) => {
            assert_eq!(channel_reg(a, 0, STATUS), STOPPED, "the channel stopped");
            assert_eq!(channel_reg(a, 0, ERROR_CODE), 16, "ENGINE_FAULT");
            let error_va = u64::from(channel_reg(a, 0, ERROR_VA_LO))
                | u64::from(channel_reg(a, 0, ERROR_VA_HI)) << 32;
            let fault_va = u64::from(read_reg(a, CTRL_FAULT_VA_LO))
                | u64::from(read_reg(a, CTRL_FAULT_VA_HI)) << 32;
            let info = read_reg(a, CTRL_FAULT_INFO);
            let expected = reason << 16 | u32::from(write) << 8;
            assert_eq!(
                (error_va, fault_va, info, read_reg(a, CTRL_FAULT_COUNT)),
                (va, va, expected, 1),
                "(ERROR_VA, FAULT_VA, FAULT_INFO, FAULT_COUNT)"
            );
        }
    }

    let actual = rig.a_memory();
    planner.model.settle(&actual);
    if let Some(at) = first_difference(&planner.model.mem, &actual) {
        let place = if at < SLICE as usize {
            format!("VRAM offset {at:#x}")
        } else {
            format!("guest memory file offset {:#x}", at - SLICE as usize)
        };
        panic!(
            "A's memory differs from the model at {place}: model {:#04x}, device {:#04x}",
            planner.model.mem[at], actual[at]
        );
    }
    rig.outside_a().assert_unchanged_since(&before);
}

/// Channel 0's control page in the valid-stream properties: between the
/// batch buffers and the data, where no mapping reaches.
const CONTROL_PAGE: u64 = 0x7_0000;

/// IRQ_STATUS bit 3: a GPU MMU fault.
const IRQ_FAULT: u32 = 1 << 3;
