//! Channels and engines over vfio-user: commands in a ring in VRAM, the
//! trapped doorbell, results in VRAM and guest memory, fences and their
//! MSI-X vector, refusals that stop one channel and nothing else.

use std::os::fd::{AsFd, BorrowedFd};
use std::time::{Duration, Instant};

use vgpu_commands::{CompareOp, FLAG_PHYSICAL, StreamBuilder};
use vgpud_tests::config::STANDARD_CHANNELS;
use vgpud_tests::control::list_entry;
use vgpud_tests::host::eventfds;
use vgpud_tests::page_tables::{LARGE_PAGE_SIZE, Page, PageTables};
use vgpud_tests::regs::channel::{self, reg};
use vgpud_tests::regs::region;
use vgpud_tests::wire::irq_index;
use vgpud_tests::{DmaMapRequest, GuestMemory, RawClient, TestDaemon, VGPU_A, VGPU_B};

/// VA → VRAM, one to one, for the first 8 MiB of the slice (2 MiB pages).
const VRAM_VA: u64 = 0;
/// Page tables live at 8 MiB into the slice.
const TABLES: std::ops::Range<u64> = 0x80_0000..0x88_0000;
/// Guest memory: mapped at this IOVA and this VA.
const IOVA: u64 = 0x1_0000_0000;
const SYSTEM_VA: u64 = 0x40_0000_0000;
const GUEST_LEN: u64 = 2 << 20;

/// Each channel's ring: 4 KiB at 1 MiB + 64 KiB × channel.
fn ring_base(channel: u32) -> u64 {
    0x10_0000 + 0x1_0000 * u64::from(channel)
}

/// Where each test puts its data: 4 MiB into the slice.
const DATA: u64 = 0x40_0000;
/// Fence values land here (per channel, 8 bytes apart).
const FENCES: u64 = 0x30_0000;
// Control pages live at 0x30_8000 (see `control_page`).

const WAIT: Duration = Duration::from_secs(10);

struct Rig {
    daemon: TestDaemon,
    c: RawClient,
    guest: GuestMemory,
    /// Bytes already in each channel's ring.
    put: Vec<u32>,
}

fn rig() -> anyhow::Result<Rig> {
    let daemon = TestDaemon::standard()?;
    let c = daemon.connect(VGPU_A)?;
    rig_on(daemon, c)
}

fn rig_on(daemon: TestDaemon, mut c: RawClient) -> anyhow::Result<Rig> {
    let guest = GuestMemory::new(GUEST_LEN as usize)?;
    c.dma_map(
        DmaMapRequest::read_write(IOVA, GUEST_LEN),
        Some(guest.as_fd()),
    )?;
    let mut tables = PageTables::in_vram(&mut c, TABLES)?;
    for page in 0..4 {
        let at = page * LARGE_PAGE_SIZE;
        tables.map(&mut c, VRAM_VA + at, Page::vram(at).large())?;
    }
    tables.map(&mut c, SYSTEM_VA, Page::system(IOVA).large())?;
    for n in 0..STANDARD_CHANNELS {
        c.set_pt_root(n, tables.root_entry())?;
        c.bar2_write32(reg(n, channel::RING_BASE_LO), ring_base(n) as u32)?;
        c.bar2_write32(reg(n, channel::RING_BASE_HI), 0)?;
        c.bar2_write32(reg(n, channel::RING_SIZE), 4096)?;
        c.bar2_write32(reg(n, channel::CONTROL), channel::ENABLE)?;
    }
    Ok(Rig {
        daemon,
        c,
        guest,
        put: vec![0; STANDARD_CHANNELS as usize],
    })
}

impl Rig {
    /// Writes `commands` into channel `n`'s ring and rings its trapped
    /// doorbell.
    fn submit(&mut self, n: u32, commands: &StreamBuilder) -> anyhow::Result<()> {
        let bytes = commands.to_bytes();
        let put = self.put[n as usize];
        anyhow::ensure!(put as usize + bytes.len() < 4096, "ring full in this test");
        self.c
            .region_write(region::BAR0, ring_base(n) + u64::from(put), &bytes)?;
        let put = put + bytes.len() as u32;
        self.put[n as usize] = put;
        self.c.bar2_write32(reg(n, channel::RING_PUT), put)?;
        Ok(())
    }

    fn read(&mut self, reg_offset: u64) -> anyhow::Result<u32> {
        Ok(self.c.bar2_read32(reg_offset)?)
    }

    /// Waits until channel `n`'s FENCE reads `value` (or it stops).
    fn wait_fence(&mut self, n: u32, value: u32) -> anyhow::Result<()> {
        let start = Instant::now();
        loop {
            if self.read(reg(n, channel::FENCE_LO))? == value {
                return Ok(());
            }
            let status = self.read(reg(n, channel::STATUS))?;
            anyhow::ensure!(
                status & 3 != channel::STOPPED,
                "channel {n} stopped with error {}",
                self.read(reg(n, channel::ERROR_CODE))?
            );
            anyhow::ensure!(start.elapsed() < WAIT, "fence {value} never came");
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Waits until channel `n` stopped; returns its error code.
    fn wait_stopped(&mut self, n: u32) -> anyhow::Result<u32> {
        let start = Instant::now();
        while self.read(reg(n, channel::STATUS))? & 3 != channel::STOPPED {
            anyhow::ensure!(start.elapsed() < WAIT, "channel {n} never stopped");
            std::thread::sleep(Duration::from_millis(1));
        }
        self.read(reg(n, channel::ERROR_CODE))
    }

    fn vram(&mut self, offset: u64, len: u32) -> anyhow::Result<Vec<u8>> {
        Ok(self.c.region_read(region::BAR0, offset, len)?)
    }
}

fn words(bytes: &[u8]) -> Vec<u32> {
    bytes
        .chunks_exact(4)
        .map(|w| u32::from_le_bytes(w.try_into().unwrap()))
        .collect()
}

#[test]
fn fill_copy_and_fence_through_the_trapped_doorbell() -> anyhow::Result<()> {
    let mut r = rig()?;
    let mut s = StreamBuilder::new();
    s.fill(DATA, 8192, 0xdead_beef)
        .copy(DATA, DATA + 0x1_0000, 8192)
        .fence32(FENCES, 1, false);
    r.submit(0, &s)?;
    assert_eq!(
        r.read(reg(0, channel::RING_GET))?,
        r.put[0],
        "GET reaches PUT when the doorbell write is answered"
    );
    r.wait_fence(0, 1)?;
    assert!(
        words(&r.vram(DATA + 0x1_0000, 8192)?)
            .iter()
            .all(|&w| w == 0xdead_beef)
    );
    assert_eq!(words(&r.vram(FENCES, 4)?), [1]);
    assert_eq!(r.read(reg(0, channel::RING_GET))?, r.put[0]);
    assert_eq!(r.read(reg(1, channel::STATUS))?, channel::RUNNING);
    Ok(())
}

#[test]
fn copies_reach_guest_memory_through_the_gpu_mmu() -> anyhow::Result<()> {
    let mut r = rig()?;
    let pattern: Vec<u8> = (0..4096u32).map(|i| (i * 7) as u8).collect();
    r.guest.bytes_mut()[..4096].copy_from_slice(&pattern);
    let mut s = StreamBuilder::new();
    s.copy(SYSTEM_VA, DATA, 4096)
        .fill(SYSTEM_VA + 0x1000, 64, 0x0102_0304)
        .fence32(FENCES, 2, false);
    r.submit(1, &s)?;
    r.wait_fence(1, 2)?;
    assert_eq!(r.vram(DATA, 4096)?, pattern);
    assert_eq!(&r.guest.bytes()[0x1000..0x1008], &[4, 3, 2, 1, 4, 3, 2, 1]);
    Ok(())
}

#[test]
fn blit2d_copies_a_rectangle_with_pitches() -> anyhow::Result<()> {
    let mut r = rig()?;
    let src: Vec<u8> = (0..64 * 16 * 4).map(|i| i as u8).collect();
    r.c.region_write(region::BAR0, DATA, &src)?;
    let mut s = StreamBuilder::new();
    // 8x4 pixels from (2, 1) of a 64-pixel-wide source into a 16-pixel-wide
    // destination.
    s.blit2d(DATA + (64 + 2) * 4, 64 * 4, DATA + 0x2_0000, 16 * 4, 8, 4)
        .fence32(FENCES, 3, false);
    r.submit(0, &s)?;
    r.wait_fence(0, 3)?;
    let dst = r.vram(DATA + 0x2_0000, 16 * 4 * 4)?;
    for row in 0..4usize {
        let from = ((1 + row) * 64 + 2) * 4;
        assert_eq!(
            &dst[row * 64..row * 64 + 32],
            &src[from..from + 32],
            "row {row}"
        );
        assert!(dst[row * 64 + 32..row * 64 + 64].iter().all(|&b| b == 0));
    }
    Ok(())
}

#[test]
fn a_fence_with_its_interrupt_raises_the_channels_vector() -> anyhow::Result<()> {
    let mut r = rig()?;
    let fds = eventfds(1 + STANDARD_CHANNELS as usize)?;
    let borrowed: Vec<BorrowedFd<'_>> = fds.iter().map(AsFd::as_fd).collect();
    r.c.assign_irq_eventfds(irq_index::MSIX, 0, borrowed.len() as u32, &borrowed)?;
    let mut s = StreamBuilder::new();
    s.fence64(FENCES + 8, 0x1_0000_0009, true);
    r.submit(2, &s)?;
    assert!(fds[3].wait(WAIT)? >= 1, "vector 1 + 2");
    assert_eq!(r.read(reg(2, channel::FENCE_HI))?, 1);
    assert_eq!(r.read(reg(2, channel::FENCE_LO))?, 9);
    assert_eq!(r.read(reg(2, channel::INTR_STATUS))?, channel::INTR_FENCE);
    assert_eq!(fds[0].take()?, 0, "vector 0 is not the channel's");
    Ok(())
}

#[test]
fn a_semaphore_waits_for_another_channel() -> anyhow::Result<()> {
    let mut r = rig()?;
    let sem = DATA + 0x3_0000;
    let mut waiter = StreamBuilder::new();
    waiter
        .semaphore_wait(sem, CompareOp::Ge, 5)
        .fill(DATA, 4, 0x5a5a_5a5a)
        .fence32(FENCES, 10, false);
    r.submit(0, &waiter)?;
    let mut release = StreamBuilder::new();
    release
        .fence32(sem, 5, false)
        .fence32(FENCES + 8, 11, false);
    r.submit(1, &release)?;
    r.wait_fence(1, 11)?;
    r.wait_fence(0, 10)?;
    assert_eq!(words(&r.vram(DATA, 4)?), [0x5a5a_5a5a]);
    Ok(())
}

#[test]
fn a_privileged_command_stops_only_its_channel() -> anyhow::Result<()> {
    let mut r = rig()?;
    let mut bad = StreamBuilder::new();
    bad.fill(DATA, 4, 1)
        .copy(0, DATA, 4096)
        .with_flags(FLAG_PHYSICAL);
    r.submit(3, &bad)?;
    assert_eq!(r.wait_stopped(3)?, 3, "PRIVILEGED");
    assert_eq!(r.read(reg(3, channel::RING_GET))?, 0, "nothing was taken");
    let fill_len = {
        let mut fill = StreamBuilder::new();
        fill.fill(DATA, 4, 1);
        fill.byte_len()
    };
    assert_eq!(
        r.read(reg(3, channel::ERROR_VA_LO))?,
        ring_base(3) as u32 + fill_len,
        "the COPY's header, after the FILL"
    );
    assert_eq!(
        words(&r.vram(DATA, 4)?),
        [0],
        "the FILL before it did not run either"
    );
    // The other channels go on.
    let mut s = StreamBuilder::new();
    s.fence32(FENCES, 21, false);
    r.submit(0, &s)?;
    r.wait_fence(0, 21)?;
    // RESET and ENABLE bring the channel back.
    r.c.bar2_write32(reg(3, channel::CONTROL), channel::RESET)?;
    assert_eq!(r.read(reg(3, channel::STATUS))?, channel::DISABLED);
    r.c.bar2_write32(reg(3, channel::CONTROL), channel::ENABLE)?;
    r.put[3] = 0;
    let mut s = StreamBuilder::new();
    s.fence32(FENCES + 24, 22, false);
    r.submit(3, &s)?;
    r.wait_fence(3, 22)
}

#[test]
fn an_engine_fault_stops_the_channel_with_the_mmu_report() -> anyhow::Result<()> {
    let mut r = rig()?;
    let unmapped = 0x7000_0000_0000;
    let mut s = StreamBuilder::new();
    s.copy(unmapped, DATA, 64);
    r.submit(0, &s)?;
    assert_eq!(r.wait_stopped(0)?, 16, "ENGINE_FAULT");
    assert_eq!(r.read(reg(0, channel::ERROR_VA_HI))?, 0x7000);
    let fault = r.c.fault_record()?;
    assert_eq!(fault.va, unmapped);
    assert_eq!(fault.count, 1);
    Ok(())
}

#[test]
fn a_semaphore_that_never_releases_is_stopped_by_the_watchdog() -> anyhow::Result<()> {
    let mut r = rig()?;
    let mut s = StreamBuilder::new();
    s.semaphore_wait(DATA + 0x3_0000, CompareOp::Eq, 0xffff);
    r.submit(0, &s)?;
    assert_eq!(r.wait_stopped(0)?, 17, "WATCHDOG");
    let mut other = StreamBuilder::new();
    other.fence32(FENCES, 31, false);
    r.submit(1, &other)?;
    r.wait_fence(1, 31)
}

#[test]
fn another_vgpu_runs_while_one_channel_is_hung() -> anyhow::Result<()> {
    let daemon = TestDaemon::standard()?;
    let a = daemon.connect(VGPU_A)?;
    let mut b = daemon.connect(VGPU_B)?;
    let mut ra = rig_on(daemon, a)?;
    let mut hang = StreamBuilder::new();
    hang.semaphore_wait(DATA, CompareOp::Eq, 0xffff);
    ra.submit(0, &hang)?;
    // B: its own tables and ring.
    let mut tables = PageTables::in_vram(&mut b, TABLES)?;
    tables.map(&mut b, 0, Page::vram(0).large())?;
    b.set_pt_root(0, tables.root_entry())?;
    b.bar2_write32(reg(0, channel::RING_BASE_LO), 0x10_0000)?;
    b.bar2_write32(reg(0, channel::RING_SIZE), 4096)?;
    b.bar2_write32(reg(0, channel::CONTROL), channel::ENABLE)?;
    let mut s = StreamBuilder::new();
    s.fence32(0x1_0000, 41, false);
    let bytes = s.to_bytes();
    b.region_write(region::BAR0, 0x10_0000, &bytes)?;
    b.bar2_write32(reg(0, channel::RING_PUT), bytes.len() as u32)?;
    let start = Instant::now();
    while b.bar2_read32(reg(0, channel::FENCE_LO))? != 41 {
        anyhow::ensure!(start.elapsed() < WAIT, "B's fence never came");
        std::thread::sleep(Duration::from_millis(1));
    }
    Ok(())
}

/// The control page of each channel: 64 bytes at 3 MiB + 64 × channel.
fn control_page(channel: u32) -> u64 {
    0x30_8000 + 0x40 * u64::from(channel)
}

fn word_at(map: &[u8], offset: u64) -> u32 {
    let at = offset as usize;
    u32::from_le_bytes(map[at..at + 4].try_into().unwrap())
}

#[test]
fn the_control_page_doorbell_needs_no_register_write() -> anyhow::Result<()> {
    let mut r = rig()?;
    let mut bar0 = r.c.map_bar0()?;
    let n = 1;
    r.c.bar2_write32(reg(n, channel::USERD_LO), control_page(n) as u32 | 1)?;
    r.c.bar2_write32(reg(n, channel::USERD_HI), 0)?;
    let mut s = StreamBuilder::new();
    s.fill(DATA, 256, 0x7777_7777).fence32(FENCES, 51, false);
    let bytes = s.to_bytes();
    let ring = ring_base(n) as usize;
    bar0.map[ring..ring + bytes.len()].copy_from_slice(&bytes);
    // PUT through the page: a plain store into the mmapped BAR0.
    let put = bytes.len() as u32;
    let page = control_page(n) as usize;
    bar0.map[page..page + 4].copy_from_slice(&put.to_le_bytes());
    let start = Instant::now();
    // The device mirrors GET and FENCE into the page.
    while word_at(&bar0.map, control_page(n) + 8) != 51 {
        anyhow::ensure!(start.elapsed() < WAIT, "the page's fence never came");
        std::thread::sleep(Duration::from_micros(100));
    }
    assert_eq!(
        word_at(&bar0.map, control_page(n) + 4),
        put,
        "GET in the page"
    );
    assert_eq!(r.read(reg(n, channel::RING_PUT))?, put, "RING_PUT reads it");
    assert_eq!(r.read(reg(n, channel::FENCE_LO))?, 51);
    assert!(words(&r.vram(DATA, 256)?).iter().all(|&w| w == 0x7777_7777));
    Ok(())
}

#[test]
fn what_runs_is_what_was_validated_whatever_the_guest_writes_after() -> anyhow::Result<()> {
    let mut r = rig()?;
    let sem = DATA + 0x3_0000;
    let batch = DATA + 0x4_0000;
    let target = DATA + 0x5_0000;
    // A batch that fills the target with A, behind a semaphore so that the
    // guest has all the time it wants to rewrite after the doorbell.
    let mut inner = StreamBuilder::new();
    inner.fill(target, 64, 0xaaaa_aaaa).batch_end();
    r.c.region_write(region::BAR0, batch, &inner.to_bytes())?;
    let mut s = StreamBuilder::new();
    s.semaphore_wait(sem, CompareOp::Eq, 1)
        .batch_start(batch, inner.byte_len())
        .fence32(FENCES, 61, false);
    let ring_at = ring_base(0);
    r.submit(0, &s)?;
    // After the doorbell: the batch now fills with B, and the ring's
    // commands are replaced by a privileged copy; then release.
    let mut evil_inner = StreamBuilder::new();
    evil_inner.fill(target, 64, 0xbbbb_bbbb).batch_end();
    r.c.region_write(region::BAR0, batch, &evil_inner.to_bytes())?;
    let mut evil_ring = StreamBuilder::new();
    evil_ring.copy(0, target, 64).with_flags(FLAG_PHYSICAL);
    r.c.region_write(region::BAR0, ring_at, &evil_ring.to_bytes())?;
    let mut release = StreamBuilder::new();
    release.fence32(sem, 1, false);
    r.submit(1, &release)?;
    r.wait_fence(0, 61)?;
    assert!(
        words(&r.vram(target, 64)?)
            .iter()
            .all(|&w| w == 0xaaaa_aaaa),
        "the validated batch ran, not the rewritten one"
    );
    assert_eq!(r.read(reg(0, channel::RING_GET))?, r.put[0]);
    assert_eq!(r.read(reg(1, channel::STATUS))?, channel::RUNNING);
    Ok(())
}

#[test]
fn a_privileged_command_in_a_nested_batch_is_refused() -> anyhow::Result<()> {
    let mut r = rig()?;
    let outer = DATA + 0x4_0000;
    let inner = DATA + 0x4_1000;
    let mut deepest = StreamBuilder::new();
    deepest.set_pt_root(0x1234_5000).batch_end();
    r.c.region_write(region::BAR0, inner, &deepest.to_bytes())?;
    let mut middle = StreamBuilder::new();
    middle
        .fill(DATA, 4, 9)
        .batch_start(inner, deepest.byte_len())
        .batch_end();
    r.c.region_write(region::BAR0, outer, &middle.to_bytes())?;
    let mut s = StreamBuilder::new();
    s.batch_start(outer, middle.byte_len());
    r.submit(2, &s)?;
    assert_eq!(r.wait_stopped(2)?, 3, "PRIVILEGED");
    assert_eq!(r.read(reg(2, channel::ERROR_VA_LO))?, inner as u32);
    assert_eq!(words(&r.vram(DATA, 4)?), [0], "nothing of it ran");
    Ok(())
}

#[test]
fn list_counts_submissions_refusals_and_engine_time() -> anyhow::Result<()> {
    let mut r = rig()?;
    let mut s = StreamBuilder::new();
    s.fill(DATA, 1 << 20, 1).fence32(FENCES, 71, false);
    r.submit(0, &s)?;
    r.wait_fence(0, 71)?;
    let mut bad = StreamBuilder::new();
    bad.set_context(3);
    r.submit(1, &bad)?;
    r.wait_stopped(1)?;
    let entry = list_entry(&r.daemon.control_socket(), VGPU_A)?;
    assert_eq!(entry["submissions"], 1);
    assert_eq!(entry["commands"], 2);
    assert_eq!(entry["refused_submissions"], 1);
    assert!(entry["engine_run_ns"].as_u64().unwrap() > 0, "{entry}");
    Ok(())
}

fn screenshot(daemon: &TestDaemon, uuid: uuid::Uuid) -> anyhow::Result<serde_json::Value> {
    vgpud_tests::control::control_request(
        &daemon.control_socket(),
        "screenshot",
        serde_json::json!({"uuid": uuid.to_string()}),
        vgpud_tests::control::CONTROL_TIMEOUT,
    )
}

#[test]
fn set_scanout_shows_a_surface_found_in_vram() -> anyhow::Result<()> {
    let mut r = rig()?;
    assert_eq!(
        screenshot(&r.daemon, VGPU_A)?["error"]["kind"],
        "no_scanout"
    );
    let mut s = StreamBuilder::new();
    s.fill(DATA, 64 * 4 * 32, 0x00ff_0000)
        .set_scanout(0, DATA, 64 * 4, 64, 32)
        .fence32(FENCES, 81, false);
    r.submit(0, &s)?;
    r.wait_fence(0, 81)?;
    let shot = screenshot(&r.daemon, VGPU_A)?;
    assert_eq!(shot["ok"], true, "{shot}");
    let result = &shot["result"];
    assert_eq!(
        (result["width"].as_u64(), result["height"].as_u64()),
        (Some(64), Some(32))
    );
    assert_eq!(result["offset"].as_u64(), Some(DATA));
    // A DISPI write takes the display back.
    r.c.dispi_write(vgpud_tests::regs::bar2::DISPI_ENABLE, 0)?;
    assert_eq!(
        screenshot(&r.daemon, VGPU_A)?["error"]["kind"],
        "no_scanout"
    );
    Ok(())
}

#[test]
fn set_scanout_of_guest_memory_or_another_head_is_refused() -> anyhow::Result<()> {
    let mut r = rig()?;
    let mut s = StreamBuilder::new();
    s.set_scanout(0, SYSTEM_VA, 64 * 4, 64, 32);
    r.submit(0, &s)?;
    assert_eq!(r.wait_stopped(0)?, 18, "BAD_SURFACE");
    let mut s = StreamBuilder::new();
    s.set_scanout(1, DATA, 64 * 4, 64, 32);
    r.submit(1, &s)?;
    assert_eq!(r.wait_stopped(1)?, 5, "DISPLAY_HEAD");
    assert_eq!(
        screenshot(&r.daemon, VGPU_A)?["error"]["kind"],
        "no_scanout"
    );
    Ok(())
}

#[test]
fn a_channel_holds_sixteen_submissions_and_takes_more_as_they_complete() -> anyhow::Result<()> {
    let mut r = rig()?;
    let sem = DATA + 0x3_0000;
    let mut first = StreamBuilder::new();
    first.semaphore_wait(sem, CompareOp::Eq, 1);
    r.submit(0, &first)?;
    let mut gets = Vec::new();
    for i in 1..=20u32 {
        let mut s = StreamBuilder::new();
        s.fence32(FENCES, i, false);
        r.submit(0, &s)?;
        gets.push(r.read(reg(0, channel::RING_GET))?);
    }
    // The blocked one and 15 more are held; doorbells after that wait.
    assert!(gets[14] > gets[13], "the 16th submission was taken");
    assert_eq!(gets[15], gets[14], "the 17th waits for room");
    assert_eq!(gets[19], gets[14], "and so do the later ones");
    let mut release = StreamBuilder::new();
    release.fence32(sem, 1, false);
    r.submit(1, &release)?;
    r.wait_fence(0, 20)?;
    assert_eq!(
        r.read(reg(0, channel::RING_GET))?,
        r.put[0],
        "all taken in the end"
    );
    Ok(())
}

#[test]
fn registers_load_and_store_and_timestamps_move_forward() -> anyhow::Result<()> {
    use vgpu_commands::{
        COMPLETED_FENCE_LO_OFFSET, GPR0_OFFSET, TIMESTAMP_HI_OFFSET, TIMESTAMP_LO_OFFSET,
    };
    let mut r = rig()?;
    // Past the 1 MiB FILL below.
    let out = DATA + 0x20_0000;
    let mut s = StreamBuilder::new();
    s.fence32(FENCES, 90, false)
        .load_register_imm(GPR0_OFFSET + 4 * 3, 0xfeed_f00d)
        .store_register(GPR0_OFFSET + 4 * 3, out)
        .store_register(COMPLETED_FENCE_LO_OFFSET, out + 4)
        .timestamp(out + 8)
        .fill(DATA, 1 << 20, 0)
        .timestamp(out + 16)
        .store_register(TIMESTAMP_LO_OFFSET, out + 24)
        .store_register(TIMESTAMP_HI_OFFSET, out + 28)
        .fence32(FENCES, 91, false);
    r.submit(0, &s)?;
    r.wait_fence(0, 91)?;
    let bytes = r.vram(out, 32)?;
    let w = words(&bytes);
    assert_eq!(w[0], 0xfeed_f00d, "GPR 3");
    assert_eq!(w[1], 90, "the completed fence when the store ran");
    let t = |i: usize| u64::from(w[i]) | u64::from(w[i + 1]) << 32;
    assert!(t(2) > 0, "a timestamp");
    assert!(
        t(4) > t(2),
        "a 1 MiB fill later, time has moved: {} {}",
        t(2),
        t(4)
    );
    assert!(t(6) >= t(4), "the timestamp registers agree");
    Ok(())
}

#[test]
fn gprs_are_per_channel() -> anyhow::Result<()> {
    use vgpu_commands::GPR0_OFFSET;
    let mut r = rig()?;
    let out = DATA + 0x6_0000;
    let mut a = StreamBuilder::new();
    a.load_register_imm(GPR0_OFFSET, 1)
        .fence32(FENCES, 1, false);
    r.submit(0, &a)?;
    r.wait_fence(0, 1)?;
    let mut b = StreamBuilder::new();
    b.store_register(GPR0_OFFSET, out)
        .fence32(FENCES + 8, 2, false);
    r.submit(1, &b)?;
    r.wait_fence(1, 2)?;
    assert_eq!(words(&r.vram(out, 4)?), [0], "channel 1's GPR 0 is its own");
    Ok(())
}

#[test]
fn tlb_invalidate_by_command_makes_a_table_change_take_effect() -> anyhow::Result<()> {
    let mut r = rig()?;
    // A VA that maps nothing yet: a FILL there faults…
    let va = 0x10_0000_0000u64;
    let mut probe = StreamBuilder::new();
    probe.fill(va, 4, 0x1111_1111);
    r.submit(0, &probe)?;
    assert_eq!(r.wait_stopped(0)?, 16);
    r.c.bar2_write32(reg(0, channel::CONTROL), channel::RESET)?;
    r.c.bar2_write32(reg(0, channel::CONTROL), channel::ENABLE)?;
    r.put[0] = 0;
    // …the guest maps it (tables in VRAM), and invalidates by command
    // before the FILL in the same submission.
    let mut tables = PageTables::in_vram(&mut r.c, TABLES)?;
    for page in 0..4 {
        let at = page * LARGE_PAGE_SIZE;
        tables.map(&mut r.c, VRAM_VA + at, Page::vram(at).large())?;
    }
    tables.map(&mut r.c, SYSTEM_VA, Page::system(IOVA).large())?;
    tables.map(&mut r.c, va, Page::vram(DATA + 0x7_0000))?;
    r.c.set_pt_root(0, tables.root_entry())?;
    // (PT_ROOT invalidates too; map one more page afterwards and rely on
    // the command for that one.)
    tables.map(&mut r.c, va + 0x1000, Page::vram(DATA + 0x7_1000))?;
    let mut s = StreamBuilder::new();
    s.tlb_invalidate_range(va + 0x1000, 0x1000)
        .fill(va + 0x1000, 4, 0x2222_2222)
        .fence32(FENCES, 95, false);
    r.submit(0, &s)?;
    r.wait_fence(0, 95)?;
    assert_eq!(words(&r.vram(DATA + 0x7_1000, 4)?), [0x2222_2222]);
    Ok(())
}

#[test]
fn a_vgpu_takes_doorbells_while_it_holds_under_16_mib_of_copies_while_another_works()
-> anyhow::Result<()> {
    let daemon = TestDaemon::standard()?;
    let a = daemon.connect(VGPU_A)?;
    let mut b = daemon.connect(VGPU_B)?;
    let mut r = rig_on(daemon, a)?;
    // A batch of about 1 MiB that waits on a semaphore first.
    let sem = DATA + 0x3_0000;
    let batch = DATA + 0x10_0000;
    let mut inner = StreamBuilder::new();
    inner.semaphore_wait(sem, CompareOp::Eq, 1);
    while inner.byte_len() < (1 << 20) - 2048 {
        inner.nop(255);
    }
    inner.batch_end();
    r.c.region_write(region::BAR0, batch, &inner.to_bytes())?;
    // Nine submissions on each of two channels: no channel reaches its
    // count of 16, so only the vGPU's 16 MiB stops them.
    let mut taken = 0;
    for n in [0, 1] {
        let mut gets = vec![0];
        for _ in 0..9 {
            let mut s = StreamBuilder::new();
            s.batch_start(batch, inner.byte_len());
            r.submit(n, &s)?;
            gets.push(r.read(reg(n, channel::RING_GET))?);
        }
        taken += gets.windows(2).filter(|w| w[1] > w[0]).count();
    }
    // Each holds a little under 1 MiB: doorbells are taken while less
    // than 16 MiB is held, so the 17th is, and the 18th waits.
    assert_eq!(taken, 17, "taken of 18");
    // B works meanwhile.
    let mut tables = PageTables::in_vram(&mut b, TABLES)?;
    tables.map(&mut b, 0, Page::vram(0).large())?;
    b.set_pt_root(0, tables.root_entry())?;
    b.bar2_write32(reg(0, channel::RING_BASE_LO), 0x10_0000)?;
    b.bar2_write32(reg(0, channel::RING_SIZE), 4096)?;
    b.bar2_write32(reg(0, channel::CONTROL), channel::ENABLE)?;
    let mut s = StreamBuilder::new();
    s.fence32(0x1_0000, 7, false);
    let bytes = s.to_bytes();
    b.region_write(region::BAR0, 0x10_0000, &bytes)?;
    b.bar2_write32(reg(0, channel::RING_PUT), bytes.len() as u32)?;
    let start = Instant::now();
    while b.bar2_read32(reg(0, channel::FENCE_LO))? != 7 {
        anyhow::ensure!(start.elapsed() < WAIT, "B's fence never came");
        std::thread::sleep(Duration::from_millis(1));
    }
    // Release from the CPU (a submission would wait for room too):
    // everything is taken and runs.
    r.c.region_write(region::BAR0, sem, &1u32.to_le_bytes())?;
    let start = Instant::now();
    while r.read(reg(1, channel::RING_GET))? != r.put[1]
        || r.read(reg(0, channel::STATUS))? & channel::BUSY != 0
        || r.read(reg(1, channel::STATUS))? & channel::BUSY != 0
    {
        if start.elapsed() > WAIT {
            let mut state = Vec::new();
            for n in 0..3 {
                state.push((
                    r.read(reg(n, channel::STATUS))?,
                    r.read(reg(n, channel::ERROR_CODE))?,
                    r.read(reg(n, channel::RING_GET))?,
                    r.put[n as usize],
                ));
            }
            anyhow::bail!("A's work never drained: {state:x?}\n{}", r.daemon.stderr());
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(r.read(reg(0, channel::RING_GET))?, r.put[0]);
    assert_eq!(r.read(reg(1, channel::STATUS))?, channel::RUNNING);
    Ok(())
}

#[test]
fn refused_commands_are_logged_at_most_20_times_per_10_s() -> anyhow::Result<()> {
    let mut r = rig()?;
    for _ in 0..60 {
        r.c.bar2_write32(reg(0, channel::CONTROL), channel::RESET)?;
        r.c.bar2_write32(reg(0, channel::CONTROL), channel::ENABLE)?;
        r.put[0] = 0;
        let mut bad = StreamBuilder::new();
        bad.set_context(1);
        r.submit(0, &bad)?;
        assert_eq!(r.read(reg(0, channel::ERROR_CODE))?, 3);
    }
    // Another channel still works, and the refusals all counted.
    let mut s = StreamBuilder::new();
    s.fence32(FENCES, 5, false);
    r.submit(1, &s)?;
    r.wait_fence(1, 5)?;
    let entry = list_entry(&r.daemon.control_socket(), VGPU_A)?;
    assert_eq!(entry["refused_submissions"], 60);
    let log = r.daemon.stderr();
    let lines = log
        .lines()
        .filter(|l| l.contains("commands refused"))
        .count();
    assert_eq!(lines, 20, "{log}");
    Ok(())
}
