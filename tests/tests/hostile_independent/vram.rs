//! VRAM isolation between attachments: a client that kept its BAR0
//! mapping (or BAR0's fd) after it left must see nothing of a later
//! client's VRAM, and nothing it writes may reach it
//! (`docs/vfio-user.md`, "One client at a time"); and what a client can do
//! to the memfd it is given (truncate it, seal it) must not stop the daemon
//! or keep its data alive.

use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use memmap2::MmapOptions;
use rustix::fs::{SealFlags, fcntl_add_seals, fstat, ftruncate};
use vgpud_tests::config::STANDARD_FRAMEBUFFER;
use vgpud_tests::control::{CONTROL_TIMEOUT, control_request};
use vgpud_tests::device::DmaJob;
use vgpud_tests::host::pattern;
use vgpud_tests::page_tables::{Page, PageTables, Target, Translation};
use vgpud_tests::regs::bar2::{
    DISPI_BPP, DISPI_ENABLE, DISPI_VIRT_WIDTH, DISPI_XRES, DISPI_YRES, DMA_FROM_VRAM, DMA_TO_VRAM,
};
use vgpud_tests::regs::region;
use vgpud_tests::{RawClient, TestDaemon, VGPU_A, VGPU_B};

use crate::rig::{assert_serves, map_guest, reconnect};

const FB: usize = STANDARD_FRAMEBUFFER as usize;

fn all_zero(bytes: &[u8]) -> bool {
    bytes.iter().all(|&b| b == 0)
}

/// Maps `fd` (a kept BAR0 fd) afresh, read-write, over the whole slice.
fn map_fd(fd: &OwnedFd) -> anyhow::Result<memmap2::MmapMut> {
    // SAFETY: the memfd is shared with the daemon, which may change it at
    // any time; the test only reads and writes it as bytes.
    let map = unsafe { MmapOptions::new().len(FB).map_mut(fd)? };
    Ok(map)
}

/// B's first MiB, filled with a pattern the tests check at the end.
fn mark_b(b: &mut RawClient) -> anyhow::Result<Vec<u8>> {
    let data = pattern(1 << 20, 0xb);
    b.region_write(region::BAR0, 0, &data)?;
    Ok(data)
}

fn assert_b_intact(b: &mut RawClient, data: &[u8]) -> anyhow::Result<()> {
    assert_serves(b, "vGPU B")?;
    let now = b.region_read(region::BAR0, 0, data.len() as u32)?;
    assert!(now == data, "vGPU B's VRAM changed");
    Ok(())
}

#[test]
fn a_kept_bar0_mapping_is_cut_off_from_the_next_attachment() -> anyhow::Result<()> {
    let daemon = TestDaemon::standard()?;
    let mut b = daemon.connect(VGPU_B)?;
    let b_data = mark_b(&mut b)?;

    let mut first = daemon.connect(VGPU_A)?;
    let mut old = first.map_bar0()?;
    let secret = pattern(FB, 0x51);
    old.map.copy_from_slice(&secret);
    let kept_fd = old.region.fd.take().expect("BAR0 fd");
    drop(first);

    let mut second = reconnect(&daemon, VGPU_A)?;
    assert!(
        all_zero(&old.map),
        "the departed client's mapping still shows its VRAM"
    );
    let fresh = second.region_read(region::BAR0, 0, 1 << 20)?;
    assert!(all_zero(&fresh), "the new attachment starts with old VRAM");

    // The new VM writes; the old mapping sees none of it.
    let new_data = pattern(1 << 20, 0x77);
    second.region_write(region::BAR0, 0, &new_data)?;
    let mut new_map = second.map_bar0()?;
    new_map.map[FB - 4096..].copy_from_slice(&new_data[..4096]);
    assert!(all_zero(&old.map[..1 << 20]), "old mapping sees new writes");
    assert!(
        all_zero(&old.map[FB - 4096..]),
        "old mapping sees new writes"
    );
    // A fresh mapping of the kept fd sees none of it either.
    let remapped = map_fd(&kept_fd)?;
    assert!(all_zero(&remapped[..1 << 20]), "kept fd reaches new VRAM");

    // The old client writes through both; the new VM sees none of it.
    old.map[..1 << 20].copy_from_slice(&secret[..1 << 20]);
    drop(remapped);
    let mut remapped = map_fd(&kept_fd)?;
    remapped[2 << 20..3 << 20].fill(0xee);
    assert_eq!(second.region_read(region::BAR0, 0, 1 << 20)?, new_data);
    assert!(all_zero(&second.region_read(
        region::BAR0,
        2 << 20,
        1 << 20
    )?));
    assert_eq!(&new_map.map[..1 << 20], &new_data[..]);
    assert_b_intact(&mut b, &b_data)
}

#[test]
fn an_old_mapping_written_during_the_reconnect_never_shows_in_new_vram() -> anyhow::Result<()> {
    let daemon = TestDaemon::standard()?;
    let mut first = daemon.connect(VGPU_A)?;
    let mut old = first.map_bar0()?;
    let stop = Arc::new(AtomicBool::new(false));
    drop(first);
    // Keep writing through the old mapping while the vGPU resets and the
    // next client attaches.
    let writer = {
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || {
            let mut round = 0u8;
            while !stop.load(Ordering::Relaxed) {
                round = round.wrapping_add(1) | 1;
                old.map[..256 << 10].fill(round);
                old.map[FB - (256 << 10)..].fill(round);
            }
        })
    };
    let mut second = reconnect(&daemon, VGPU_A)?;
    let view = second.map_bar0()?;
    let mut leaked = false;
    for _ in 0..50 {
        let head = second.region_read(region::BAR0, 0, 256 << 10)?;
        let tail = second.region_read(region::BAR0, (FB - (256 << 10)) as u64, 256 << 10)?;
        leaked |= !all_zero(&head) || !all_zero(&tail);
        leaked |= !all_zero(&view.map[..256 << 10]);
    }
    stop.store(true, Ordering::Relaxed);
    writer.join().expect("writer thread");
    assert!(
        !leaked,
        "the old client's writes reached the new attachment"
    );
    Ok(())
}

#[test]
fn a_screenshot_shows_nothing_a_departed_client_writes() -> anyhow::Result<()> {
    let daemon = TestDaemon::standard()?;
    let mut first = daemon.connect(VGPU_A)?;
    let mut old = first.map_bar0()?;
    drop(first);
    let mut second = reconnect(&daemon, VGPU_A)?;
    // 64x64, 32 bpp, at VRAM offset 0.
    for (index, value) in [
        (DISPI_XRES, 64),
        (DISPI_YRES, 64),
        (DISPI_BPP, 32),
        (DISPI_VIRT_WIDTH, 64),
        (DISPI_ENABLE, 0x41),
    ] {
        second.dispi_write(index, value)?;
    }
    let socket = daemon.control_socket();
    let args = serde_json::json!({"uuid": VGPU_A.to_string()});
    let before = control_request(&socket, "screenshot", args.clone(), CONTROL_TIMEOUT)?;
    assert_eq!(before["ok"], true, "{before}");
    old.map[..64 * 64 * 4].fill(0xff);
    let after = control_request(&socket, "screenshot", args, CONTROL_TIMEOUT)?;
    assert_eq!(
        before["result"]["png_base64"], after["result"]["png_base64"],
        "the departed client's writes show on the new VM's display"
    );
    Ok(())
}

#[test]
fn the_bar0_fd_holds_exactly_the_slice() -> anyhow::Result<()> {
    let daemon = TestDaemon::standard()?;
    let mut a = daemon.connect(VGPU_A)?;
    let mut b = daemon.connect(VGPU_B)?;
    let b_data = mark_b(&mut b)?;
    let bar0 = a.map_bar0()?;
    let fd = bar0.region.fd.as_ref().expect("fd");
    assert_eq!(bar0.region.info.offset, 0, "the slice is at file offset 0");
    assert_eq!(fstat(fd)?.st_size as u64, STANDARD_FRAMEBUFFER);
    assert_b_intact(&mut b, &b_data)
}

/// Everything that reads or writes VRAM in the daemon, after the client
/// did something to its BAR0 memfd; the daemon and vGPU B must survive.
fn touch_vram_everywhere(daemon: &TestDaemon, a: &mut RawClient) -> anyhow::Result<()> {
    let _ = a.region_read(region::BAR0, 0, 4096);
    let _ = a.region_write(region::BAR0, 4096, &[1; 4096]);
    if let Ok(guest) = map_guest(a, 0x1_0000_0000, 64 << 10) {
        for control in [DMA_TO_VRAM, DMA_FROM_VRAM] {
            let _ = a.run_dma(DmaJob {
                iova: 0x1_0000_0000,
                vram_offset: 0x2000,
                length: 4096,
                control,
            });
        }
        drop(guest);
    }
    // A page-table walk with its root table in VRAM.
    let _ = a.set_pt_root(0, 0x3000 | 1);
    let _ = a.xlate(0, 0, false);
    for (index, value) in [
        (DISPI_XRES, 64),
        (DISPI_YRES, 64),
        (DISPI_BPP, 32),
        (DISPI_VIRT_WIDTH, 64),
        (DISPI_ENABLE, 0x41),
    ] {
        let _ = a.dispi_write(index, value);
    }
    let args = serde_json::json!({"uuid": VGPU_A.to_string()});
    let _ = control_request(
        &daemon.control_socket(),
        "screenshot",
        args,
        Duration::from_secs(5),
    );
    let _ = a.reset();
    Ok(())
}

#[test]
fn truncating_the_bar0_memfd_cannot_stop_the_daemon() -> anyhow::Result<()> {
    let mut daemon = TestDaemon::standard()?;
    let mut b = daemon.connect(VGPU_B)?;
    let b_data = mark_b(&mut b)?;
    let mut a = daemon.connect(VGPU_A)?;
    let bar0 = a.map_bar0()?;
    let fd = bar0.region.fd.as_ref().expect("fd");
    let truncated = ftruncate(fd, 0).is_ok();
    touch_vram_everywhere(&daemon, &mut a)?;
    assert!(
        daemon.is_running(),
        "the daemon died after the client truncated BAR0's memfd (truncate allowed: {truncated}); stderr:\n{}",
        daemon.stderr()
    );
    assert_b_intact(&mut b, &b_data)?;
    drop(bar0);
    drop(a);
    let mut again = reconnect(&daemon, VGPU_A)?;
    assert_serves(&mut again, "vGPU A after the truncating client")?;
    assert!(all_zero(&again.region_read(region::BAR0, 0, 1 << 20)?));
    Ok(())
}

#[test]
fn seals_a_client_adds_do_not_keep_its_vram_alive() -> anyhow::Result<()> {
    let mut daemon = TestDaemon::standard()?;
    let mut b = daemon.connect(VGPU_B)?;
    let b_data = mark_b(&mut b)?;
    let mut a = daemon.connect(VGPU_A)?;
    let mut bar0 = a.map_bar0()?;
    bar0.map.fill(0x5a);
    let fd = bar0.region.fd.take().expect("fd");
    // Every seal the kernel lets it add, one at a time.
    let mut added = Vec::new();
    for seal in [
        SealFlags::SHRINK,
        SealFlags::GROW,
        SealFlags::FUTURE_WRITE,
        SealFlags::WRITE,
        SealFlags::SEAL,
    ] {
        if fcntl_add_seals(&fd, seal).is_ok() {
            added.push(seal);
        }
    }
    touch_vram_everywhere(&daemon, &mut a)?;
    // After the reset, the attachment's VRAM is zeroed.
    let reset_view = a.region_read(region::BAR0, 0, 1 << 20);
    assert!(
        matches!(&reset_view, Ok(bytes) if all_zero(bytes)),
        "DEVICE_RESET left VRAM unzeroed after seals {added:?}"
    );
    bar0.map.fill(0x5b);
    drop(a);
    let mut again = reconnect(&daemon, VGPU_A)?;
    assert!(
        all_zero(&bar0.map),
        "after seals {added:?} the departed client's memfd keeps its data"
    );
    assert!(all_zero(&again.region_read(region::BAR0, 0, 1 << 20)?));
    assert!(daemon.is_running());
    assert_b_intact(&mut b, &b_data)
}

#[test]
fn page_tables_of_a_new_attachment_ignore_a_departed_clients_writes() -> anyhow::Result<()> {
    let daemon = TestDaemon::standard()?;
    let mut first = daemon.connect(VGPU_A)?;
    let mut old = first.map_bar0()?;
    drop(first);
    let mut second = reconnect(&daemon, VGPU_A)?;
    let mut tables = PageTables::in_vram(&mut second, 0x10_0000..0x11_0000)?;
    tables.map(&mut second, 0x4000_0000, Page::vram(0x20_0000))?;
    // The old client writes a different tree where the new one lives.
    old.map[0x10_0000..0x11_0000].fill(0);
    let evil = (0x30_0000u64 | 3).to_le_bytes();
    for chunk in old.map[0x10_0000..0x11_0000].chunks_mut(8) {
        chunk.copy_from_slice(&evil);
    }
    second.set_pt_root(0, tables.root_entry())?;
    assert_eq!(
        second.xlate(0, 0x4000_0000, false)?,
        Translation::ok(0x20_0000, Target::Vram)
    );
    Ok(())
}

#[test]
fn a_fresh_memfd_per_attachment_does_not_leak_descriptors_or_mappings() -> anyhow::Result<()> {
    let daemon = TestDaemon::standard()?;
    let pid = daemon.pid().expect("pid");
    // Warm up one attachment, then measure across many.
    drop(reconnect(&daemon, VGPU_A)?.map_bar0()?);
    crate::rig::wait_detached(&daemon, VGPU_A)?;
    let before = vgpud_tests::process::resources(pid)?;
    let mut kept = Vec::new();
    for round in 0..40 {
        let mut c = reconnect(&daemon, VGPU_A)?;
        let mut bar0 = c.map_bar0()?;
        bar0.map[..4096].fill(round as u8 + 1);
        // Half the clients keep their mapping and fd past the disconnect.
        if round % 2 == 0 {
            kept.push(bar0);
        }
        drop(c);
    }
    crate::rig::wait_detached(&daemon, VGPU_A)?;
    let after = vgpud_tests::process::resources(pid)?;
    assert!(
        after.fds <= before.fds + 2,
        "descriptors grew from {} to {} over 40 attachments",
        before.fds,
        after.fds
    );
    assert!(
        after.mappings <= before.mappings + 8,
        "mappings grew from {} to {} over 40 attachments",
        before.mappings,
        after.mappings
    );
    for bar0 in &kept {
        assert!(all_zero(&bar0.map[..4096]), "a kept mapping kept its data");
    }
    Ok(())
}

#[test]
fn clients_racing_for_one_vgpu_get_one_attachment_and_zeroed_vram() -> anyhow::Result<()> {
    let daemon = TestDaemon::standard()?;
    let path = daemon.socket(VGPU_A);
    for round in 0..15u8 {
        let barrier = Arc::new(std::sync::Barrier::new(6));
        let racers: Vec<_> = (0..6)
            .map(|_| {
                let barrier = Arc::clone(&barrier);
                let path = path.clone();
                std::thread::spawn(move || -> Option<RawClient> {
                    barrier.wait();
                    let mut c = RawClient::connect(&path).ok()?;
                    // Served: it must be the only one, and see fresh VRAM.
                    let vram = c.region_read(region::BAR0, 0, 64 << 10).ok()?;
                    assert!(all_zero(&vram), "an attachment started with old VRAM");
                    c.region_write(region::BAR0, 0, &[round | 0x80; 64 << 10])
                        .ok()?;
                    Some(c)
                })
            })
            .collect();
        let winners: Vec<RawClient> = racers
            .into_iter()
            .filter_map(|racer| racer.join().expect("racer"))
            .collect();
        assert_eq!(
            winners.len(),
            1,
            "round {round}: {} clients served",
            winners.len()
        );
        drop(winners);
        crate::rig::wait_detached(&daemon, VGPU_A)?;
    }
    Ok(())
}

/// One vGPU's side of the concurrent isolation test: DMA both ways through
/// a map at `iova` (the same IOVA in both vGPUs, different memory), page
/// tables at the same IOVA, and checks that only its own bytes move.
fn own_traffic(mut c: RawClient, seed: u8, rounds: usize) -> anyhow::Result<()> {
    use vgpud_tests::GuestMemory;
    let iova = 0x1_0000_0000u64;
    let mut memory = GuestMemory::new(1 << 20)?;
    let mine = pattern(1 << 20, seed);
    memory.bytes_mut().copy_from_slice(&mine);
    c.dma_map(
        vgpud_tests::DmaMapRequest::read_write(iova, 1 << 20),
        Some(std::os::fd::AsFd::as_fd(&memory)),
    )?;
    let bar0 = c.map_bar0()?;
    let tables_iova = 0x2_0000_0000u64;
    let mut tables_memory = GuestMemory::new(64 << 10)?;
    c.dma_map(
        vgpud_tests::DmaMapRequest::read_write(tables_iova, 64 << 10),
        Some(std::os::fd::AsFd::as_fd(&tables_memory)),
    )?;
    let mut tables =
        PageTables::in_guest(&mut tables_memory, tables_iova..tables_iova + (64 << 10), 0)?;
    let page = 0x10_0000 + u64::from(seed) * 0x1000;
    tables.map(&mut tables_memory, 0x7000_0000, Page::vram(page))?;
    for round in 0..rounds {
        let offset = (round * 4096 * 7) % ((1 << 20) - 8192);
        let vram = ((round * 8192) % (8 << 20)) as u64;
        let status = c.run_dma(DmaJob {
            iova: iova + offset as u64,
            vram_offset: vram,
            length: 8192,
            control: DMA_TO_VRAM,
        })?;
        anyhow::ensure!(status == 0, "seed {seed} round {round}: status {status}");
        anyhow::ensure!(
            bar0.map[vram as usize..vram as usize + 8192] == mine[offset..offset + 8192],
            "seed {seed} round {round}: VRAM does not hold this VM's bytes"
        );
        let back = c.run_dma(DmaJob {
            iova: iova + offset as u64,
            vram_offset: vram,
            length: 8192,
            control: DMA_FROM_VRAM,
        })?;
        anyhow::ensure!(back == 0, "seed {seed} round {round}: status {back}");
        anyhow::ensure!(
            memory.bytes() == &mine[..],
            "seed {seed}: guest memory changed"
        );
        if round % 16 == 0 {
            c.set_pt_root(round as u32 % 4, tables.root_entry())?;
            let t = c.xlate(round as u32 % 4, 0x7000_0123, true)?;
            anyhow::ensure!(
                t == Translation::ok(page + 0x123, Target::Vram),
                "seed {seed} round {round}: {t:?}"
            );
        }
    }
    Ok(())
}

#[test]
fn two_vgpus_busy_at_the_same_iovas_never_touch_each_others_memory() -> anyhow::Result<()> {
    let daemon = TestDaemon::standard()?;
    let a = daemon.connect(VGPU_A)?;
    let b = daemon.connect(VGPU_B)?;
    let ta = std::thread::spawn(move || own_traffic(a, 0xa, 120));
    let tb = std::thread::spawn(move || own_traffic(b, 0xb, 120));
    ta.join().expect("A")?;
    tb.join().expect("B")
}

#[test]
fn an_old_bar0_fd_mapped_into_another_vgpu_never_reaches_the_next_attachment() -> anyhow::Result<()>
{
    // VMM 1 holds A and B. It DMA-maps A's BAR0 memfd into B as guest
    // memory (once while attached to A, once after leaving), leaves A, and
    // VM 2 attaches A. B's DMA self-test and page-table walks go through
    // the daemon's own mapping of the old memfd: they must see none of
    // VM 2's VRAM, and reach none of it.
    let daemon = TestDaemon::standard()?;
    let mut b = daemon.connect(VGPU_B)?;
    let mut a = daemon.connect(VGPU_A)?;
    let mut old = a.map_bar0()?;
    let old_fd = old.region.fd.take().expect("fd");
    let window = 0x10_0000_0000u64;
    b.dma_map(
        vgpud_tests::DmaMapRequest::read_write(window, STANDARD_FRAMEBUFFER),
        Some(std::os::fd::AsFd::as_fd(&old_fd)),
    )?;
    drop(a);
    let late_window = 0x20_0000_0000u64;
    let mut vm2 = reconnect(&daemon, VGPU_A)?;
    b.dma_map(
        vgpud_tests::DmaMapRequest::read_write(late_window, STANDARD_FRAMEBUFFER),
        Some(std::os::fd::AsFd::as_fd(&old_fd)),
    )?;
    let secret = pattern(1 << 20, 0x99);
    vm2.region_write(region::BAR0, 0, &secret)?;
    for base in [window, late_window] {
        let status = b.run_dma(DmaJob {
            iova: base,
            vram_offset: 0,
            length: 1 << 20,
            control: DMA_TO_VRAM,
        })?;
        assert_eq!(status, 0);
        assert!(
            all_zero(&b.region_read(region::BAR0, 0, 1 << 20)?),
            "B read VM 2's VRAM through the old memfd at {base:#x}"
        );
        b.region_write(region::BAR0, 0, &[0xee; 1 << 20])?;
        let status = b.run_dma(DmaJob {
            iova: base + (2 << 20),
            vram_offset: 0,
            length: 1 << 20,
            control: DMA_FROM_VRAM,
        })?;
        assert_eq!(status, 0);
    }
    assert_eq!(vm2.region_read(region::BAR0, 0, 1 << 20)?, secret);
    assert!(
        all_zero(&vm2.region_read(region::BAR0, 2 << 20, 1 << 20)?),
        "B wrote into VM 2's VRAM through the old memfd"
    );
    // Page tables that B walks in the old memfd see zeros, not VM 2's.
    let tables = [(0x3000u64, 0x4003u64)];
    for (at, entry) in tables {
        vm2.region_write(region::BAR0, at, &entry.to_le_bytes())?;
    }
    b.set_pt_root(0, (window + 0x3000) | 0x5)?;
    assert_eq!(
        b.xlate(0, 0, false)?.status,
        1,
        "an empty table: not present"
    );
    drop(old);
    Ok(())
}
