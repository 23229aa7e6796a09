//! Tests of the fault log: what a lookup answers after records and clears,
//! and that no sequence of them grows the log past its cap.

use proptest::prelude::*;

use super::*;
use crate::addr::GPU_VA_SPACE;

const PAGE: u64 = 0x1000;
const CHUNK: u64 = 2 << 20;

fn range(start: u64, len: u64) -> VaRange {
    VaRange::new(GpuVa(start), len).unwrap()
}

/// The ranges held, in VA order: start, end, code.
fn held<const CAP: usize>(log: &FaultLog<CAP>) -> Vec<(u64, u64, FaultCode)> {
    log.ranges
        .iter()
        .map(|(&start, &(end, code))| (start, end, code))
        .collect()
}

#[test]
fn lookup_finds_the_range_holding_the_address() {
    let mut log = FaultLog::<MAX_RANGES>::default();
    log.record(GpuVa(0x1000), 0x2000, FaultCode::OutsideVram);
    assert_eq!(log.lookup(GpuVa(0x0fff)), None);
    assert_eq!(log.lookup(GpuVa(0x1000)), Some(FaultCode::OutsideVram));
    assert_eq!(log.lookup(GpuVa(0x2fff)), Some(FaultCode::OutsideVram));
    assert_eq!(log.lookup(GpuVa(0x3000)), None);
}

#[test]
fn clear_trims_ranges_that_stick_out_on_both_sides() {
    let mut log = FaultLog::<MAX_RANGES>::default();
    log.record(GpuVa(0), 0x10_0000, FaultCode::NotMapped);
    log.record(GpuVa(0x10_0000), 0x1000, FaultCode::ReadOnly);
    log.clear(range(0x4000, 0x8000));
    assert_eq!(log.lookup(GpuVa(0x3fff)), Some(FaultCode::NotMapped));
    assert_eq!(log.lookup(GpuVa(0x4000)), None);
    assert_eq!(log.lookup(GpuVa(0xbfff)), None);
    assert_eq!(log.lookup(GpuVa(0xc000)), Some(FaultCode::NotMapped));
    assert_eq!(log.lookup(GpuVa(0x10_0000)), Some(FaultCode::ReadOnly));
    log.clear(range(0x8000, 0x10_0000));
    assert_eq!(log.lookup(GpuVa(0xc000)), None);
    assert_eq!(log.lookup(GpuVa(0x10_0fff)), None);
    assert_eq!(log.lookup(GpuVa(0x10_8000)), None);
    assert_eq!(log.lookup(GpuVa(0x3fff)), Some(FaultCode::NotMapped));
}

#[test]
fn adjacent_ranges_with_the_same_code_are_one_range() {
    let mut log = FaultLog::<MAX_RANGES>::default();
    log.record(GpuVa(0x1000), 0x1000, FaultCode::NotMapped);
    log.record(GpuVa(0x3000), 0x1000, FaultCode::NotMapped);
    log.record(GpuVa(0x2000), 0x1000, FaultCode::NotMapped);
    log.record(GpuVa(0x4000), 0x1000, FaultCode::ReadOnly);
    assert_eq!(
        held(&log),
        vec![
            (0x1000, 0x4000, FaultCode::NotMapped),
            (0x4000, 0x5000, FaultCode::ReadOnly),
        ]
    );
}

#[test]
fn a_record_replaces_what_the_log_said_about_its_range() {
    let mut log = FaultLog::<MAX_RANGES>::default();
    log.record(GpuVa(0), 0x10_0000, FaultCode::NotMapped);
    log.record(GpuVa(0x4000), 0x4000, FaultCode::OutsideVram);
    assert_eq!(log.lookup(GpuVa(0x3fff)), Some(FaultCode::NotMapped));
    assert_eq!(log.lookup(GpuVa(0x4000)), Some(FaultCode::OutsideVram));
    assert_eq!(log.lookup(GpuVa(0x8000)), Some(FaultCode::NotMapped));
    log.record(GpuVa(0x2000), 0x20_0000, FaultCode::InvalidEntry);
    assert_eq!(
        held(&log),
        vec![
            (0, 0x2000, FaultCode::NotMapped),
            (0x2000, 0x20_2000, FaultCode::InvalidEntry),
        ]
    );
}

#[test]
fn invalidating_alternate_chunks_of_one_faulting_range_keeps_one_range() {
    // The review's attack, as the builder drives the log: the whole
    // address space faults, and each invalidation clears a chunk and
    // records it again.
    let mut log = FaultLog::<MAX_RANGES>::default();
    log.record(GpuVa(0), GPU_VA_SPACE, FaultCode::InvalidEntry);
    for n in 0..20_000 {
        let chunk = range(2 * n * CHUNK, CHUNK);
        log.clear(chunk);
        assert_eq!(log.lookup(chunk.start()), None);
        log.record(chunk.start(), CHUNK, FaultCode::InvalidEntry);
        assert_eq!(log.len(), 1);
    }
    assert_eq!(log.lookup(GpuVa(0)), Some(FaultCode::InvalidEntry));
    assert_eq!(
        log.lookup(GpuVa(GPU_VA_SPACE - 1)),
        Some(FaultCode::InvalidEntry)
    );
}

#[test]
fn a_full_log_records_nothing_more() {
    let mut log = FaultLog::<MAX_RANGES>::default();
    // Every other page, so that no two ranges join.
    for n in 0..=MAX_RANGES as u64 {
        log.record(GpuVa(2 * n * PAGE), PAGE, FaultCode::InvalidEntry);
    }
    assert_eq!(log.len(), MAX_RANGES);
    assert_eq!(log.lookup(GpuVa(0)), Some(FaultCode::InvalidEntry));
    assert_eq!(log.lookup(GpuVa(2 * MAX_RANGES as u64 * PAGE)), None);
    // Joining neighbours needs no room.
    log.record(GpuVa(PAGE), PAGE, FaultCode::InvalidEntry);
    assert_eq!(log.len(), MAX_RANGES - 1);
    assert_eq!(log.lookup(GpuVa(PAGE)), Some(FaultCode::InvalidEntry));
}

#[test]
fn a_range_split_in_a_full_log_keeps_its_larger_part() {
    let mut log = FaultLog::<2>::default();
    log.record(GpuVa(0), 0x10_0000, FaultCode::NotMapped);
    log.record(GpuVa(0x20_0000), PAGE, FaultCode::ReadOnly);
    log.clear(range(PAGE, PAGE));
    assert_eq!(log.len(), 2);
    assert_eq!(log.lookup(GpuVa(0)), None, "the smaller head went");
    assert_eq!(log.lookup(GpuVa(0x2000)), Some(FaultCode::NotMapped));
    log.clear(range(0xf_e000, PAGE));
    assert_eq!(log.len(), 2);
    assert_eq!(log.lookup(GpuVa(0xf_d000)), Some(FaultCode::NotMapped));
    assert_eq!(log.lookup(GpuVa(0xf_f000)), None, "the smaller tail went");
    assert_eq!(log.lookup(GpuVa(0x20_0000)), Some(FaultCode::ReadOnly));
}

#[test]
fn a_record_a_full_log_cannot_hold_forgets_rather_than_keeps_the_old_code() {
    let mut log = FaultLog::<1>::default();
    log.record(GpuVa(0), 0x10_0000, FaultCode::NotMapped);
    log.record(GpuVa(0x8_0000), PAGE, FaultCode::ReadOnly);
    assert_eq!(log.len(), 1);
    assert_eq!(log.lookup(GpuVa(0x8_0000)), None);
    // A range the log already holds is not split to be recorded again.
    log.record(GpuVa(0x1000), PAGE, FaultCode::NotMapped);
    assert_eq!(log.lookup(GpuVa(0x1000)), Some(FaultCode::NotMapped));
}

#[test]
fn a_rewalk_gathers_its_faults_and_joins_the_ranges_around_it() {
    let mut log = FaultLog::<MAX_RANGES>::default();
    log.record(GpuVa(0), GPU_VA_SPACE, FaultCode::InvalidEntry);
    let mut rewalk = log.rewalk(range(CHUNK, CHUNK));
    for page in 0..CHUNK / PAGE {
        let code = if page < 256 {
            FaultCode::InvalidEntry
        } else {
            FaultCode::OutsideVram
        };
        rewalk.record(GpuVa(CHUNK + page * PAGE), PAGE, code);
    }
    drop(rewalk);
    assert_eq!(
        held(&log),
        vec![
            (0, CHUNK + CHUNK / 2, FaultCode::InvalidEntry),
            (CHUNK + CHUNK / 2, 2 * CHUNK, FaultCode::OutsideVram),
            (2 * CHUNK, GPU_VA_SPACE, FaultCode::InvalidEntry),
        ]
    );
}

#[test]
fn a_rewalk_in_a_full_log_stores_only_what_fits() {
    let mut log = FaultLog::<3>::default();
    log.record(GpuVa(0), PAGE, FaultCode::NotMapped);
    let mut rewalk = log.rewalk(range(CHUNK, CHUNK));
    for page in (0..8).step_by(2) {
        rewalk.record(GpuVa(CHUNK + page * PAGE), PAGE, FaultCode::ReadOnly);
    }
    // Out of order: recorded over what the re-walk stored.
    rewalk.record(GpuVa(CHUNK), PAGE, FaultCode::WalkLimit);
    drop(rewalk);
    assert_eq!(
        held(&log),
        vec![
            (0, PAGE, FaultCode::NotMapped),
            (CHUNK, CHUNK + PAGE, FaultCode::WalkLimit),
            (CHUNK + 2 * PAGE, CHUNK + 3 * PAGE, FaultCode::ReadOnly),
        ]
    );
}

#[test]
fn a_rewalk_fault_running_past_its_range_replaces_what_is_there() {
    let mut log = FaultLog::<MAX_RANGES>::default();
    log.record(GpuVa(3 * CHUNK), CHUNK, FaultCode::NotMapped);
    let mut rewalk = log.rewalk(range(CHUNK, CHUNK));
    rewalk.record(GpuVa(CHUNK + PAGE), CHUNK - PAGE, FaultCode::ReadOnly);
    rewalk.record(GpuVa(2 * CHUNK), 2 * CHUNK, FaultCode::ReadOnly);
    drop(rewalk);
    assert_eq!(
        held(&log),
        vec![(CHUNK + PAGE, 4 * CHUNK, FaultCode::ReadOnly)]
    );
}

/// The property tests cut the address space into this many units, so
/// that ranges reach its ends and a small model holds every address.
const UNITS: u64 = 64;
const UNIT: u64 = GPU_VA_SPACE / UNITS;

/// A change to the log, in units.
#[derive(Clone, Debug)]
enum Op {
    Record {
        start: u64,
        len: u64,
        code: FaultCode,
    },
    Clear {
        start: u64,
        len: u64,
    },
    /// A re-walk of `len` units at `start` that faults at each piece:
    /// start, length, code.
    Rewalk {
        start: u64,
        len: u64,
        faults: Vec<(u64, u64, FaultCode)>,
    },
}

fn code() -> impl Strategy<Value = FaultCode> {
    prop::sample::select(vec![
        FaultCode::NotPresent,
        FaultCode::InvalidEntry,
        FaultCode::OutsideVram,
        FaultCode::NotMapped,
        FaultCode::ReadOnly,
        FaultCode::WalkLimit,
    ])
}

/// A start and a length in units, inside the address space; mostly
/// short, as invalidations are.
fn span() -> impl Strategy<Value = (u64, u64)> {
    (0..UNITS).prop_flat_map(|start| {
        let room = UNITS - start;
        (
            Just(start),
            prop_oneof![3 => 1..=room.min(3), 1 => 1..=room],
        )
    })
}

/// A re-walk's faults: runs from a point mostly inside its range, in VA
/// order as the walker reports them, sometimes in reverse; they may run
/// past the range.
fn rewalk() -> impl Strategy<Value = Op> {
    span().prop_flat_map(|(start, len)| {
        (
            prop_oneof![4 => start..start + len, 1 => 0..UNITS],
            prop::collection::vec((0..2u64, 1..4u64, code()), 0..8),
            prop::bool::weighted(0.8),
        )
            .prop_map(move |(first, runs, in_order)| {
                let mut faults = Vec::new();
                let mut at = first;
                for (gap, len, code) in runs {
                    at += gap;
                    if at >= UNITS {
                        break;
                    }
                    let len = len.min(UNITS - at);
                    faults.push((at, len, code));
                    at += len;
                }
                if !in_order {
                    faults.reverse();
                }
                Op::Rewalk { start, len, faults }
            })
    })
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (span(), code()).prop_map(|((start, len), code)| Op::Record { start, len, code }),
        span().prop_map(|(start, len)| Op::Clear { start, len }),
        rewalk(),
    ]
}

/// The review's attack: one fault over the whole address space, then
/// every `stride`th unit invalidated in turn, `count` of them (wrapping
/// round), each re-walk finding the first code again or another one.
fn attack() -> impl Strategy<Value = Vec<Op>> {
    (
        code(),
        1..4u64,
        0..UNITS,
        1..160u64,
        prop::collection::vec(prop::option::of(code()), 1..6),
    )
        .prop_map(|(code, stride, first, count, rewalks)| {
            let mut ops = vec![Op::Record {
                start: 0,
                len: UNITS,
                code,
            }];
            for n in 0..count {
                let start = (first + n * stride) % UNITS;
                let rewalk = rewalks[(n as usize) % rewalks.len()];
                ops.push(Op::Clear { start, len: 1 });
                ops.push(Op::Record {
                    start,
                    len: 1,
                    code: rewalk.unwrap_or(code),
                });
            }
            ops
        })
}

/// Runs `ops` on a log of `CAP` ranges and on a model holding a code per
/// unit, checking after each that the log is within its cap, its ranges
/// are disjoint and joined, and every answer is the model's or, once the
/// log may have had to drop something, none.
fn check<const CAP: usize>(ops: &[Op]) -> Result<(), TestCaseError> {
    let mut log = FaultLog::<CAP>::default();
    let mut model = [None; UNITS as usize];
    let mut crowded = false;
    for (at, op) in ops.iter().enumerate() {
        // A record adds at most two ranges (a split range's head and the
        // new one) and a clear one, so a change drops nothing unless it
        // finds the log that close to its cap.
        let growth = match op {
            Op::Rewalk { faults, .. } => 1 + 2 * faults.len(),
            _ => 2,
        };
        crowded |= log.len() + growth > CAP;
        match *op {
            Op::Record { start, len, code } => {
                log.record(GpuVa(start * UNIT), len * UNIT, code);
                model[start as usize..(start + len) as usize].fill(Some(code));
            }
            Op::Clear { start, len } => {
                log.clear(range(start * UNIT, len * UNIT));
                model[start as usize..(start + len) as usize].fill(None);
            }
            Op::Rewalk {
                start,
                len,
                ref faults,
            } => {
                let mut rewalk = log.rewalk(range(start * UNIT, len * UNIT));
                model[start as usize..(start + len) as usize].fill(None);
                for &(start, len, code) in faults {
                    rewalk.record(GpuVa(start * UNIT), len * UNIT, code);
                    model[start as usize..(start + len) as usize].fill(Some(code));
                }
            }
        }
        prop_assert!(log.len() <= CAP, "{} ranges after op {at}", log.len());
        let ranges = held(&log);
        for &(start, end, _) in &ranges {
            prop_assert!(start < end, "empty range after op {at}: {ranges:x?}");
        }
        for pair in ranges.windows(2) {
            let ((_, end, code), (next, _, next_code)) = (pair[0], pair[1]);
            prop_assert!(end <= next, "overlap after op {at}: {ranges:x?}");
            prop_assert!(
                end < next || code != next_code,
                "unjoined neighbours after op {at}: {ranges:x?}"
            );
        }
        for (unit, &want) in model.iter().enumerate() {
            let first = unit as u64 * UNIT;
            for va in [first, first + UNIT / 2, first + UNIT - 1] {
                let got = log.lookup(GpuVa(va));
                prop_assert!(
                    got == want || (got.is_none() && crowded),
                    "{va:#x} after op {at} ({op:?}): log says {got:?}, model {want:?}"
                );
            }
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn no_changes_grow_the_log_past_its_cap_or_make_it_lie(
        before in prop::collection::vec(op(), 0..48),
        attack in prop::option::of(attack()),
        after in prop::collection::vec(op(), 0..48),
        cap in 0..4usize,
    ) {
        let ops: Vec<Op> = before
            .into_iter()
            .chain(attack.into_iter().flatten())
            .chain(after)
            .collect();
        match cap {
            0 => check::<1>(&ops)?,
            1 => check::<2>(&ops)?,
            2 => check::<5>(&ops)?,
            _ => check::<MAX_RANGES>(&ops)?,
        }
    }
}
