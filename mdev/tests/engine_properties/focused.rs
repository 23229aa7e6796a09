//! One behaviour per test, on a plain layout: slot 0 maps A's VRAM from
//! 2 MiB (a 2 MiB page), slot 1 the read-write window (a 2 MiB page),
//! slot 2 the read-only window (read-only 4 KiB pages); hostile entries go
//! in slots of their own.

use std::time::{Duration, Instant};

use vgpu_commands::{CompareOp, FLAG_PHYSICAL, StreamBuilder};
use vgpu_emulation::bar2::channels::{
    ERROR_CODE, ERROR_VA_HI, ERROR_VA_LO, RING_GET, STATUS, STATUS_BUSY,
};
use vgpu_emulation::bar2::layout::{
    CTRL_FAULT_COUNT, CTRL_FAULT_INFO, CTRL_FAULT_VA_HI, CTRL_FAULT_VA_LO,
};

use crate::drive::{Ring, assert_channels_consistent};
use crate::layout::{
    BadEntry, BadLarge, BadPage, BadTable, Hostile, Layout, SLOTS, SlotMap, Space, build, slot_va,
};
use crate::rig::{
    MIB, Outside, PAGE, RO_LEN, RUNNING, RW_IOVA, RW_LEN, Rig, STOPPED, backing, channel_reg,
    first_difference, memfd, read_file, read_reg, run_until_idle, set_root, step,
};

/// Channel error: an engine access faulted.
const ENGINE_FAULT: u32 = 16;
const WATCHDOG: u32 = 17;
const PRIVILEGED: u32 = 3;
/// FAULT_INFO reasons.
const OUTSIDE_VRAM: u32 = 3;
const NOT_MAPPED: u32 = 4;
const READ_ONLY: u32 = 5;

/// VRAM from 2 MiB, writable.
const VRAM_VA: u64 = 0x4000_0000;
/// The read-write window, writable.
const RW_VA: u64 = VRAM_VA + 4 * MIB;
/// The read-only window, read-only.
const RO_VA: u64 = VRAM_VA + 8 * MIB;

fn plain_layout() -> Layout {
    let mut slots = vec![
        SlotMap::Large {
            space: Space::VramData,
            writable: true,
        },
        SlotMap::Large {
            space: Space::RamRw,
            writable: true,
        },
        SlotMap::Pages {
            space: Space::RamRo,
            pages: (0..RO_LEN / PAGE).collect(),
            writable: false,
        },
    ];
    while slots.len() < SLOTS as usize {
        slots.push(SlotMap::Pages {
            space: Space::VramData,
            pages: vec![0],
            writable: false,
        });
    }
    let layout = Layout { slots };
    assert_eq!(
        [0, 1, 2].map(|s| layout.first_va(s)),
        [VRAM_VA, RW_VA, RO_VA]
    );
    layout
}

/// A on the plain layout plus `hostile`, channel 0 running a 4 KiB ring,
/// and a snapshot of everything outside A.
struct Focus {
    rig: Rig,
    ring: Ring,
    before: Outside,
}

impl Focus {
    fn new(hostile: &[Hostile]) -> Self {
        Self::with_layout(&plain_layout(), hostile)
    }

    fn with_layout(layout: &Layout, hostile: &[Hostile]) -> Self {
        let rig = Rig::new();
        let tables = build(layout, hostile, &[]);
        rig.put_a_vram(0, &tables.bytes);
        set_root(&rig.a, 0, tables.root);
        let mut ring = Ring::new(0, 4096);
        ring.enable(&rig.a);
        let before = rig.outside_a();
        Focus { rig, ring, before }
    }

    fn submit(&mut self, stream: &StreamBuilder) {
        self.ring
            .submit(&self.rig.a, stream.words(), &mut |_, _| {});
    }

    fn run(&self) {
        run_until_idle(&[&self.rig.a], Duration::from_secs(10));
        assert_channels_consistent(&self.rig.a);
    }

    fn reg(&self, reg: u64) -> u32 {
        channel_reg(&self.rig.a, 0, reg)
    }

    fn error_va(&self) -> u64 {
        u64::from(self.reg(ERROR_VA_LO)) | u64::from(self.reg(ERROR_VA_HI)) << 32
    }

    /// (FAULT_VA, write access, reason) of the first fault.
    fn fault(&self) -> (u64, bool, u32) {
        let a = &self.rig.a;
        assert!(read_reg(a, CTRL_FAULT_COUNT) > 0, "no fault was recorded");
        let info = read_reg(a, CTRL_FAULT_INFO);
        let va = u64::from(read_reg(a, CTRL_FAULT_VA_LO))
            | u64::from(read_reg(a, CTRL_FAULT_VA_HI)) << 32;
        (va, info & 1 << 8 != 0, (info >> 16) & 0xf)
    }

    fn assert_stopped(&self, code: u32) {
        assert_eq!(self.reg(STATUS), STOPPED, "channel 0 stopped");
        assert_eq!(self.reg(ERROR_CODE), code, "channel 0's error");
    }

    fn assert_outside_unchanged(&self) {
        self.rig.outside_a().assert_unchanged_since(&self.before);
    }

    fn vram_words(&self, offset: u64, len: u64) -> Vec<u32> {
        self.rig
            .a_vram(offset, len)
            .chunks_exact(4)
            .map(|w| u32::from_le_bytes(w.try_into().expect("4 bytes")))
            .collect()
    }
}

fn hostile(slot: u8, entry: BadEntry) -> Hostile {
    Hostile {
        slot,
        page: 0,
        entry,
    }
}

/// A's VRAM offset of `VRAM_VA + at`.
fn vram_of(at: u64) -> u64 {
    2 * MIB + at
}

#[test]
fn a_copy_into_the_other_vgpus_range_faults_and_changes_nothing() {
    // VRAM offset SLICE is B's first byte in the GPU's VRAM: as a page,
    // as a 2 MiB page, and as a table holding a page.
    let entries = [
        BadEntry::Page {
            page: BadPage::VramBeyond(0),
            writable: true,
        },
        BadEntry::Large {
            page: BadLarge::AtSlice,
            writable: true,
        },
        BadEntry::Table {
            table: BadTable::VramBeyond(0),
            at_l3: false,
            writable: true,
        },
    ];
    for entry in entries {
        let target = slot_va(SLOTS);
        let mut f = Focus::new(&[hostile(SLOTS, entry)]);
        let mut s = StreamBuilder::new();
        s.fill(VRAM_VA, 4096, 0x1111_1111)
            .copy(VRAM_VA, target, 4096)
            .fill(VRAM_VA + 4096, 4096, 0x2222_2222);
        f.submit(&s);
        f.run();
        f.assert_stopped(ENGINE_FAULT);
        assert_eq!(f.error_va(), target, "{entry:?}");
        assert_eq!(f.fault(), (target, true, OUTSIDE_VRAM), "{entry:?}");
        assert!(
            f.vram_words(vram_of(0), 4096)
                .iter()
                .all(|&w| w == 0x1111_1111)
        );
        assert!(
            f.vram_words(vram_of(4096), 4096)
                .iter()
                .all(|&w| w != 0x2222_2222),
            "nothing after the fault ran"
        );
        f.assert_outside_unchanged();
    }
}

#[test]
fn a_write_through_a_read_only_window_faults() {
    // A read-only page of the read-only window.
    let mut f = Focus::new(&[]);
    let mut s = StreamBuilder::new();
    s.fill(RO_VA + 8, 64, 0x3333_3333);
    f.submit(&s);
    f.run();
    f.assert_stopped(ENGINE_FAULT);
    assert_eq!(f.fault(), (RO_VA + 8, true, READ_ONLY));
    f.assert_outside_unchanged();

    // A writable page over the read-only window: refused whole, so reads
    // fault too, and writes change nothing.
    let over = slot_va(SLOTS);
    let entry = BadEntry::Page {
        page: BadPage::ReadOnlyWindow(0),
        writable: true,
    };
    for write in [false, true] {
        let mut f = Focus::new(&[hostile(SLOTS, entry)]);
        let mut s = StreamBuilder::new();
        if write {
            s.copy(VRAM_VA, over, 4096);
        } else {
            s.copy(over, VRAM_VA, 4096);
        }
        f.submit(&s);
        f.run();
        f.assert_stopped(ENGINE_FAULT);
        assert_eq!(f.fault(), (over, write, READ_ONLY), "write: {write}");
        f.assert_outside_unchanged();
    }
}

#[test]
fn a_large_page_over_more_than_one_window_faults() {
    // 256 KiB of read-only window, then memory nobody mapped for A.
    let over = slot_va(SLOTS);
    let mut f = Focus::new(&[hostile(
        SLOTS,
        BadEntry::Large {
            page: BadLarge::OverReadOnlyWindow,
            writable: false,
        },
    )]);
    let mut s = StreamBuilder::new();
    s.copy(over, VRAM_VA, 64);
    f.submit(&s);
    f.run();
    f.assert_stopped(ENGINE_FAULT);
    assert_eq!(f.fault(), (over, false, NOT_MAPPED));
    f.assert_outside_unchanged();
}

#[test]
fn an_unmap_during_a_long_copy_stops_it() {
    let mut f = Focus::new(&[]);
    let source = f.rig.a_vram(vram_of(0), MIB);
    let window_before = read_file(&f.rig.ram_a, 0, RW_LEN);
    let mut s = StreamBuilder::new();
    // 16 chunks of 64 KiB into the read-write window.
    s.copy(VRAM_VA, RW_VA, MIB as u32);
    f.submit(&s);
    let a = &f.rig.a;
    for _ in 0..3 {
        assert!(step(a), "the copy is not done after a few chunks");
    }
    let unmapped = a.unmap_dma(RW_IOVA, Some(RW_LEN)).expect("unmap");
    assert!(unmapped.revoked.is_ok());
    let at_unmap = read_file(&f.rig.ram_a, 0, RW_LEN);
    let done = 3 * 64 * 1024;
    assert_eq!(at_unmap[..done], source[..done], "three chunks were copied");
    assert_eq!(
        first_difference(&at_unmap[done..], &window_before[done..]),
        None,
        "only three chunks were copied"
    );
    f.run();
    f.assert_stopped(ENGINE_FAULT);
    assert_eq!(f.fault(), (RW_VA + done as u64, true, NOT_MAPPED));
    assert_eq!(
        first_difference(&read_file(&f.rig.ram_a, 0, RW_LEN), &at_unmap),
        None,
        "nothing was written after the unmap returned"
    );
    f.assert_outside_unchanged();
}

#[test]
fn a_translation_revoked_by_an_unmap_stays_revoked_after_the_iova_is_mapped_again() {
    let mut f = Focus::new(&[]);
    let mut s = StreamBuilder::new();
    s.fill(RW_VA, 4096, 0x4444_4444);
    f.submit(&s);
    f.run();
    assert_eq!(f.reg(STATUS), RUNNING);
    let a = &f.rig.a;
    a.unmap_dma(RW_IOVA, Some(RW_LEN)).expect("unmap");
    let fresh = memfd("fresh", RW_LEN, true);
    a.map_dma(RW_IOVA, RW_LEN, true, backing(&fresh, 0))
        .expect("map again");
    let mut s = StreamBuilder::new();
    s.fill(RW_VA + 4096, 4096, 0x5555_5555);
    f.submit(&s);
    f.run();
    f.assert_stopped(ENGINE_FAULT);
    assert_eq!(f.fault(), (RW_VA + 4096, true, NOT_MAPPED));
    assert!(
        read_file(&fresh, 0, RW_LEN).iter().all(|&b| b == 0),
        "the new memory is reached only after the guest invalidates"
    );
    f.assert_outside_unchanged();
}

#[test]
fn doorbells_queue_work_without_a_running_engine() {
    let mut f = Focus::new(&[]);
    let before = f.rig.a_vram(vram_of(0), 4096);
    let mut s = StreamBuilder::new();
    s.fill(VRAM_VA, 4096, 0x6666_6666);
    f.submit(&s);
    assert_eq!(f.reg(RING_GET), f.ring.put, "the doorbell took the ring");
    assert_eq!(f.reg(STATUS), RUNNING | STATUS_BUSY);
    std::thread::sleep(Duration::from_millis(20));
    assert_eq!(f.rig.a_vram(vram_of(0), 4096), before, "nothing ran yet");
    f.run();
    assert_eq!(f.reg(STATUS), RUNNING);
    assert!(
        f.vram_words(vram_of(0), 4096)
            .iter()
            .all(|&w| w == 0x6666_6666)
    );
}

#[test]
fn what_runs_is_what_was_validated() {
    let mut f = Focus::new(&[]);
    let batch = crate::rig::BATCHES_AT;
    let mut inner = StreamBuilder::new();
    inner.fill(VRAM_VA, 4096, 0x7777_7777).batch_end();
    f.rig.put_a_vram(batch, &inner.to_bytes());
    let mut s = StreamBuilder::new();
    s.batch_start(crate::rig::BATCH_VA, inner.byte_len())
        .fill(VRAM_VA + 4096, 4096, 0x8888_8888);
    f.submit(&s);
    // The guest rewrites the ring and the batch after the doorbell: into
    // a privileged copy over B's VRAM, and a fill elsewhere.
    let mut evil = StreamBuilder::new();
    evil.copy(0, crate::rig::SLICE, 4096)
        .with_flags(FLAG_PHYSICAL);
    f.rig.put_a_vram(f.ring.vram(), &evil.to_bytes());
    let mut other = StreamBuilder::new();
    other.fill(VRAM_VA + 8192, 4096, 0x9999_9999).batch_end();
    f.rig.put_a_vram(batch, &other.to_bytes());
    f.run();
    assert_eq!(f.reg(STATUS), RUNNING);
    assert!(
        f.vram_words(vram_of(0), 4096)
            .iter()
            .all(|&w| w == 0x7777_7777)
    );
    assert!(
        f.vram_words(vram_of(4096), 4096)
            .iter()
            .all(|&w| w == 0x8888_8888)
    );
    assert!(
        f.vram_words(vram_of(8192), 4096)
            .iter()
            .all(|&w| w != 0x9999_9999)
    );
    f.assert_outside_unchanged();
}

#[test]
fn a_refused_command_runs_nothing_of_its_span() {
    let mut f = Focus::new(&[]);
    let mut s = StreamBuilder::new();
    s.fill(VRAM_VA, 4096, 0xaaaa_aaaa)
        .copy(0, crate::rig::SLICE, 4096)
        .with_flags(FLAG_PHYSICAL);
    f.submit(&s);
    f.assert_stopped(PRIVILEGED);
    assert_eq!(f.reg(RING_GET), 0, "GET stays where it was");
    f.run();
    assert!(
        f.vram_words(vram_of(0), 4096)
            .iter()
            .all(|&w| w != 0xaaaa_aaaa)
    );
    f.assert_outside_unchanged();
}

#[test]
fn a_semaphore_that_never_holds_is_stopped_by_the_watchdog() {
    let mut f = Focus::new(&[]);
    let mut s = StreamBuilder::new();
    s.fill(VRAM_VA, 4, 1)
        .semaphore_wait(VRAM_VA, CompareOp::Eq, 2)
        .fill(VRAM_VA + 4096, 4096, 0xbbbb_bbbb);
    f.submit(&s);
    let start = Instant::now();
    f.run();
    assert!(start.elapsed() >= Duration::from_millis(100));
    f.assert_stopped(WATCHDOG);
    // The SEMAPHORE_WAIT is the second command: 5 dwords in.
    assert_eq!(f.error_va(), f.ring.va() + 5 * 4);
    assert!(
        f.vram_words(vram_of(4096), 4096)
            .iter()
            .all(|&w| w != 0xbbbb_bbbb)
    );
}

#[test]
fn an_access_past_the_end_of_a_mapping_writes_nothing_of_its_chunk() {
    // The read-write window's 2 MiB page ends where nothing is mapped: a
    // FILL across that end faults there, and its chunk writes nothing.
    let mut f = Focus::new(&[]);
    let tail = read_file(&f.rig.ram_a, RW_LEN - 64, 64);
    let mut s = StreamBuilder::new();
    s.fill(RW_VA + RW_LEN - 64, 128, 0xcccc_cccc);
    f.submit(&s);
    f.run();
    f.assert_stopped(ENGINE_FAULT);
    let (va, write, _) = f.fault();
    assert_eq!((va, write), (RW_VA + RW_LEN, true));
    assert_eq!(read_file(&f.rig.ram_a, RW_LEN - 64, 64), tail);
    f.assert_outside_unchanged();
}

/// A's window without an fd, as a 4 KiB page at `slot_va(SLOTS)`, with
/// `after` as the page after it.
fn remote_then(after: BadEntry) -> Vec<Hostile> {
    vec![
        Hostile {
            slot: SLOTS,
            page: 0,
            entry: BadEntry::Page {
                page: BadPage::Remote(0),
                writable: true,
            },
        },
        Hostile {
            slot: SLOTS,
            page: 1,
            entry: after,
        },
    ]
}

#[test]
fn a_fault_is_reported_at_the_first_address_the_access_cannot_reach() {
    // The first page is A's window without an fd (engines fault there
    // with reason 4); the second is not present (reason 1).
    let at = slot_va(SLOTS);
    let mut f = Focus::new(&remote_then(BadEntry::Page {
        page: BadPage::ReservedBit(0),
        writable: true,
    }));
    let mut s = StreamBuilder::new();
    s.fill(at, 2 * PAGE as u32, 0xdddd_dddd);
    f.submit(&s);
    f.run();
    f.assert_stopped(ENGINE_FAULT);
    assert_eq!(f.error_va(), at, "ERROR_VA: the first address not reached");
    assert_eq!(f.fault(), (at, true, NOT_MAPPED));
}

#[test]
fn a_write_that_faults_writes_nothing_past_the_fault() {
    // Slot 3: three VRAM pages, the middle one replaced by a page of A's
    // window without an fd.
    let mut layout = plain_layout();
    layout.slots[3] = SlotMap::Pages {
        space: Space::VramData,
        pages: vec![0x100, 0x101, 0x102],
        writable: true,
    };
    let at = layout.first_va(3);
    let remote = Hostile {
        slot: 3,
        page: 1,
        entry: BadEntry::Page {
            page: BadPage::Remote(0),
            writable: true,
        },
    };
    let mut f = Focus::with_layout(&layout, &[remote]);
    let third = crate::rig::DATA_AT + 0x102 * PAGE;
    let before = f.rig.a_vram(third, PAGE);
    let mut s = StreamBuilder::new();
    s.fill(at, 3 * PAGE as u32, 0xeeee_eeee);
    f.submit(&s);
    f.run();
    f.assert_stopped(ENGINE_FAULT);
    assert_eq!(f.fault(), (at + PAGE, true, NOT_MAPPED));
    assert_eq!(
        first_difference(&f.rig.a_vram(third, PAGE), &before),
        None,
        "the page after the faulting address was written"
    );
}

#[test]
fn a_channel_reset_drops_its_work_at_once() {
    let mut f = Focus::new(&[]);
    let mut s = StreamBuilder::new();
    s.fill(VRAM_VA, MIB as u32, 0x1212_1212);
    f.submit(&s);
    let a = &f.rig.a;
    step(a);
    step(a);
    crate::rig::reset_channel(a, 0);
    let at_reset = f.rig.a_vram(vram_of(0), MIB);
    let done = 2 * 64 * 1024;
    assert!(at_reset[..done].iter().all(|&b| b == 0x12));
    assert!(at_reset[done..done + 4].iter().any(|&b| b != 0x12));
    f.run();
    assert_eq!(f.reg(STATUS), RUNNING, "RESET, then ENABLE");
    assert_eq!(
        f.rig.a_vram(vram_of(0), MIB),
        at_reset,
        "nothing ran after the reset"
    );
}

#[test]
fn a_device_reset_during_a_long_copy_runs_nothing_more() {
    let mut f = Focus::new(&[]);
    let mut s = StreamBuilder::new();
    s.copy(VRAM_VA, RW_VA, MIB as u32);
    f.submit(&s);
    let a = &f.rig.a;
    step(a);
    a.reset().expect("DEVICE_RESET");
    let window = read_file(&f.rig.ram_a, 0, RW_LEN);
    run_until_idle(&[a], Duration::from_secs(10));
    assert!(
        f.rig.a_vram(0, crate::rig::SLICE).iter().all(|&b| b == 0),
        "VRAM cleared"
    );
    assert_eq!(
        first_difference(&read_file(&f.rig.ram_a, 0, RW_LEN), &window),
        None,
        "nothing ran after the reset"
    );
    assert_eq!(f.reg(STATUS), 0, "the channel is disabled");
    f.assert_outside_unchanged();
}

#[test]
fn a_doorbell_past_sixteen_submissions_is_taken_when_one_completes() {
    let mut f = Focus::new(&[]);
    let mut puts = Vec::new();
    for n in 0..17u32 {
        let mut s = StreamBuilder::new();
        s.fill(VRAM_VA + u64::from(n) * 4, 4, n);
        f.submit(&s);
        puts.push(f.ring.put);
    }
    assert_eq!(f.reg(RING_GET), puts[15], "the 17th doorbell waits");
    // One step completes the first submission's FILL; the next step
    // finds it done, and takes the waiting doorbell.
    step(&f.rig.a);
    step(&f.rig.a);
    assert_eq!(f.reg(RING_GET), puts[16], "taken once one completed");
    f.run();
    let words = f.vram_words(vram_of(0), 17 * 4);
    assert_eq!(words, (0..17).collect::<Vec<u32>>());
}

#[test]
fn a_fault_on_one_channel_leaves_the_other_running() {
    let mut f = Focus::new(&[]);
    let a = &f.rig.a;
    let mut other = Ring::new(1, 4096);
    set_root(a, 1, read_root(a, 0));
    other.enable(a);
    let mut long = StreamBuilder::new();
    long.fill(VRAM_VA, MIB as u32, 0x3434_3434)
        .fence32(VRAM_VA + MIB, 9, false);
    other.submit(a, long.words(), &mut |_, _| {});
    let mut bad = StreamBuilder::new();
    bad.fill(slot_va(SLOTS), 4, 1);
    f.submit(&bad);
    f.run();
    f.assert_stopped(ENGINE_FAULT);
    assert_eq!(channel_reg(&f.rig.a, 1, STATUS), RUNNING);
    assert_eq!(
        channel_reg(&f.rig.a, 1, vgpu_emulation::bar2::channels::FENCE_LO),
        9
    );
    assert!(
        f.vram_words(vram_of(0), MIB)
            .iter()
            .all(|&w| w == 0x3434_3434)
    );
}

/// Channel `channel`'s PT_ROOT as last written.
fn read_root(a: &vgpu_mdev::VirtualGpu, channel: u32) -> u64 {
    a.hw()
        .device
        .page_table_root(channel)
        .expect("the channel exists")
}

#[test]
fn a_waiting_semaphore_does_not_end_the_other_channels_turn() {
    let mut f = Focus::new(&[]);
    let a = &f.rig.a;
    let mut other = Ring::new(1, 4096);
    set_root(a, 1, read_root(a, 0));
    other.enable(a);
    let mut wait = StreamBuilder::new();
    wait.fill(VRAM_VA, 4, 1)
        .semaphore_wait(VRAM_VA, CompareOp::Eq, 2);
    f.submit(&wait);
    let mut long = StreamBuilder::new();
    long.fill(VRAM_VA + 4096, MIB as u32, 0x5656_5656)
        .fence32(VRAM_VA + 2 * MIB - 8, 7, false);
    other.submit(&f.rig.a, long.words(), &mut |_, _| {});
    // One turn, long enough for channel 1's 16 chunks many times over
    // (and shorter than the semaphore's watchdog).
    let a = &f.rig.a;
    assert_ne!(
        a.run_engines(Instant::now() + Duration::from_millis(60)),
        vgpu_mdev::TurnEnd::Done
    );
    assert_eq!(
        channel_reg(a, 1, vgpu_emulation::bar2::channels::FENCE_LO),
        7,
        "channel 1 could progress all turn, but the turn ended at the waiting semaphore"
    );
}
