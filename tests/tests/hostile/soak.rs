//! Every attack of this suite against vGPU A of one daemon, one after the
//! other, while a client of vGPU B keeps checking its registers, its VRAM,
//! its DMA and its interrupts; then the daemon's memory, descriptors,
//! mappings and log lines are held to the bounds `docs/vfio-user.md`
//! states, and SIGTERM must still end it.

use std::os::fd::AsFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use rustix::fs::OFlags;

use vgpud_tests::config::STANDARD_CHANNELS;
use vgpud_tests::control::{CONTROL_TIMEOUT, control_request, list_entry};
use vgpud_tests::device::DmaJob;
use vgpud_tests::host::pattern;
use vgpud_tests::page_tables::{ENTRIES, LARGE_PAGE_SIZE, Level, Page, PageTables, pte};
use vgpud_tests::process::{Resources, resources};
use vgpud_tests::regs::bar2::{
    DMA_CONTROL, DMA_IOVA_LO, DMA_LENGTH, DMA_TO_VRAM, INV_CONTROL, INV_RANGE, INV_SIZE_HI,
    INV_SIZE_LO, INV_VA_HI, INV_VA_LO, MAGIC, MAGIC_VALUE, SELFTEST,
};
use vgpud_tests::regs::region;
use vgpud_tests::wire::{RegionAccess, command, flags, irq_index};
use vgpud_tests::{DaemonConfig, DmaMapRequest, EventFd, GuestMemory, TestDaemon, VGPU_A, VGPU_B};
use zerocopy::IntoBytes;

use crate::rig::{
    LINES_PER_WINDOW, full_blocking_eventfd, lines_about, wait_detached, windows, write_all,
};

const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;
/// The standard profile's framebuffer.
const FRAMEBUFFER: u64 = 16 * MIB;
/// Its entry budget: max(2 × VRAM / 4 KiB, 256 Ki).
const ENTRY_BUDGET: u64 = 256 << 10;
/// `docs/vfio-user.md`: what a vGPU's client can make the daemon allocate
/// for it: 130 bytes per budget entry, 300 KiB of fault log per channel,
/// two 1 MiB buffers. (VRAM and guest memory the daemon touches are the
/// VM's own memory, shared, not counted here.)
const HEAP_BOUND: u64 = 130 * ENTRY_BUDGET + STANDARD_CHANNELS as u64 * 300 * 1024 + 2 * MIB;
/// What the allocator and the runtime may add on top of it (free lists,
/// a thread's arena): not the client's doing.
const ALLOCATOR_SLACK: u64 = 16 * MIB;
/// `docs/vfio-user.md`: the descriptors a client can make the daemon hold
/// at once: its socket (and the daemon's duplicate of it), the triggers of
/// 1 + channels MSI-X vectors and of INTx, MSI, ERR and REQ, and the 16 of
/// one message being handled.
const FD_BOUND: usize = 2 + (1 + STANDARD_CHANNELS as usize) + 4 + 16;
/// The DMA windows of the configuration (the default).
const MAX_DMA_MAPS: usize = 1024;
/// Mappings of a vGPU besides its windows (`docs/configuration.md`).
const MAPPINGS_PER_VGPU: usize = 32;

/// vGPU B's client, checking everything it can in a loop until told to
/// stop: returns how many rounds it made.
fn keep_checking_b(daemon: &TestDaemon, stop: Arc<AtomicBool>) -> anyhow::Result<Checker> {
    let mut b = daemon.connect(VGPU_B)?;
    let mut bar0 = b.map_bar0()?;
    let mut memory = GuestMemory::new(256 << 10)?;
    b.dma_map(
        DmaMapRequest::read_write(0x100_0000, 256 << 10),
        Some(memory.as_fd()),
    )?;
    let irq = EventFd::new()?;
    b.assign_irq_eventfds(irq_index::MSIX, 0, 1, &[irq.as_fd()])?;
    let rounds = Arc::new(AtomicU64::new(0));
    let counted = Arc::clone(&rounds);
    let thread = std::thread::spawn(move || -> anyhow::Result<()> {
        let mut round = 0u64;
        while !stop.load(Ordering::Relaxed) {
            let seed = round as u8;
            ensure!(b.bar2_read32(MAGIC)? == MAGIC_VALUE, "B's MAGIC");
            // VRAM through the mapping, read back through the daemon.
            let at = (round % 64) as usize * 4096;
            let data = pattern(4096, seed);
            bar0.map[at..at + 4096].copy_from_slice(&data);
            ensure!(
                b.region_read(region::BAR0, at as u64, 4096)? == data,
                "B's VRAM at {at:#x}, round {round}"
            );
            // Guest memory into VRAM by DMA.
            let data = pattern(8192, seed.wrapping_add(1));
            memory.bytes_mut()[..8192].copy_from_slice(&data);
            let status = b.run_dma(DmaJob {
                iova: 0x100_0000,
                vram_offset: 0x80_0000,
                length: 8192,
                control: DMA_TO_VRAM,
            })?;
            ensure!(status == 0, "B's DMA status {status}, round {round}");
            ensure!(
                bar0.map[0x80_0000..0x80_2000] == data[..],
                "B's DMA data, round {round}"
            );
            // An interrupt.
            b.bar2_write32(SELFTEST, 0)?;
            ensure!(
                irq.wait(Duration::from_secs(5))? == 1,
                "B's interrupt, round {round}"
            );
            round += 1;
            counted.store(round, Ordering::Relaxed);
        }
        Ok(())
    });
    Ok(Checker { thread, rounds })
}

struct Checker {
    thread: JoinHandle<anyhow::Result<()>>,
    rounds: Arc<AtomicU64>,
}

impl Checker {
    fn rounds(&self) -> u64 {
        self.rounds.load(Ordering::Relaxed)
    }

    /// Waits until B made `more` rounds beyond now (it keeps serving
    /// between the attacks, not only before and after them).
    fn wait_for(&self, more: u64) -> anyhow::Result<()> {
        let target = self.rounds() + more;
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.rounds() < target {
            ensure!(!self.thread.is_finished(), "B's checker stopped");
            ensure!(Instant::now() < deadline, "B made no progress");
            std::thread::sleep(Duration::from_millis(1));
        }
        Ok(())
    }
}

/// The largest reading of each resource.
#[derive(Default)]
struct Peaks {
    rss_anon: u64,
    fds: usize,
    mappings: usize,
}

impl Peaks {
    fn sample(&mut self, daemon: &TestDaemon) -> anyhow::Result<Resources> {
        let now = resources(daemon.pid().context("the daemon exited")?)?;
        self.rss_anon = self.rss_anon.max(now.rss_anon);
        self.fds = self.fds.max(now.fds);
        self.mappings = self.mappings.max(now.mappings);
        Ok(now)
    }
}

/// A client that left keeps its BAR0 mapping; the next one's VRAM must
/// not show through it.
fn vram_across_attachments(daemon: &TestDaemon) -> anyhow::Result<()> {
    let mut first = daemon.connect(VGPU_A)?;
    let kept = first.map_bar0()?;
    drop(first);
    wait_detached(daemon, VGPU_A)?;
    let mut second = daemon.connect(VGPU_A)?;
    let mut bar0 = second.map_bar0()?;
    bar0.map[..64].fill(0x5e);
    ensure!(kept.map.iter().all(|&b| b == 0), "VRAM across attachments");
    Ok(())
}

/// Full triggers, triggers made blocking again, and triggers that are no
/// eventfds, while interrupts are raised.
fn hostile_triggers(daemon: &TestDaemon) -> anyhow::Result<()> {
    let mut a = daemon.connect(VGPU_A)?;
    let full = full_blocking_eventfd()?;
    a.assign_irq_eventfds(irq_index::MSIX, 0, 1, &[full.as_fd()])?;
    rustix::fs::fcntl_setfl(&full, OFlags::empty())?;
    for _ in 0..200 {
        a.bar2_write32(SELFTEST, 0)?;
    }
    let (pipe, _other_end) = std::io::pipe()?;
    let refused = a
        .assign_irq_eventfds(irq_index::MSIX, 0, 1, &[pipe.as_fd()])
        .expect_err("a pipe as a trigger");
    ensure!(refused.errno() == Some(libc::EINVAL as u32));
    Ok(())
}

/// As many maps as the daemon allows, then maps of a huge sparse file.
fn map_floods(daemon: &TestDaemon, peaks: &mut Peaks) -> anyhow::Result<()> {
    let mut a = daemon.connect(VGPU_A)?;
    let memory = GuestMemory::new(4096)?;
    let mut refused = 0;
    for i in 0..(MAX_DMA_MAPS as u64 + 64) {
        let map = DmaMapRequest::read_write(0x1_0000_0000 + i * 0x2000, 4096);
        if let Err(e) = a.dma_map(map, Some(memory.as_fd())) {
            ensure!(e.errno() == Some(libc::ENOSPC as u32), "{e}");
            refused += 1;
        }
    }
    ensure!(refused == 64, "{refused} maps refused past the bound");
    peaks.sample(daemon)?;
    let huge = std::fs::File::from(rustix::fs::memfd_create(
        "vgpud-soak-huge",
        rustix::fs::MemfdFlags::CLOEXEC,
    )?);
    huge.set_len(1 << 40)?;
    let err = a
        .dma_map(
            DmaMapRequest::read_write(1 << 44, 1 << 40),
            Some(huge.as_fd()),
        )
        .expect_err("a map past max_dma_bytes");
    ensure!(err.errno() == Some(libc::ENOSPC as u32) || err.errno() == Some(libc::ENOMEM as u32));
    // Unmaps that name no map exactly: refused unless they cover no map
    // at all (then they remove nothing).
    for (iova, size) in [(0x1_0000_0000u64, 0x2000u64), (0, 4096), (1 << 44, GIB)] {
        match a.dma_unmap(iova, size) {
            Ok(()) => {}
            Err(err) => ensure!(err.errno() == Some(libc::ENOENT as u32)),
        }
    }
    drop(a);
    wait_detached(daemon, VGPU_A)?;
    Ok(())
}

/// Page tables that fill the vGPU's page budget the costliest way: one
/// aliased 2 MiB page of guest memory under every level-2 entry (each its
/// own chunk of the revocation index), walked first; then aliased tables
/// in VRAM mapping far more 4 KiB pages than the budget, which fault.
fn shadow_budget(daemon: &TestDaemon, peaks: &mut Peaks) -> anyhow::Result<()> {
    let refused_before = list_entry(&daemon.control_socket(), VGPU_A)?["refused_ptes"]
        .as_u64()
        .unwrap_or(0);
    let mut a = daemon.connect(VGPU_A)?;
    // Each PT_ROOT write walks up to the whole page budget (about a second
    // in a debug build, several on a loaded machine), and the next reply
    // waits for it: this is about bounds, not latency.
    a.set_timeout(std::time::Duration::from_secs(60))?;
    let mut bar0 = a.map_bar0()?;
    let arena = FRAMEBUFFER - 64 * 4096..FRAMEBUFFER;
    let mut tables = PageTables::in_vram(&mut bar0, arena)?;
    let memory = GuestMemory::new(LARGE_PAGE_SIZE as usize)?;
    a.dma_map(
        DmaMapRequest::read_write(0x4000_0000, LARGE_PAGE_SIZE),
        Some(memory.as_fd()),
    )?;
    // VA 0 to 512 GiB: 2^18 large pages of the same guest memory.
    let large = Page::system(0x4000_0000).large().entry();
    let l2 = tables.new_table(&mut bar0)?;
    tables.fill_table(&mut bar0, l2, &[large; ENTRIES])?;
    let l3 = tables.table(&mut bar0, 0, Level::L3)?;
    tables.fill_table(&mut bar0, l3, &[tables.pointer_to(l2); ENTRIES])?;
    // VA 512 GiB to 1 TiB: 2^27 4 KiB pages of VRAM.
    let l1 = tables.new_table(&mut bar0)?;
    let pages: [u64; ENTRIES] = std::array::from_fn(|i| Page::vram((i as u64 % 64) * 4096).entry());
    tables.fill_table(&mut bar0, l1, &pages)?;
    let l2 = tables.new_table(&mut bar0)?;
    tables.fill_table(&mut bar0, l2, &[tables.pointer_to(l1); ENTRIES])?;
    let l3 = tables.table(&mut bar0, 1 << 39, Level::L3)?;
    tables.fill_table(&mut bar0, l3, &[tables.pointer_to(l2); ENTRIES])?;
    for channel in 0..STANDARD_CHANNELS {
        a.set_pt_root(channel, tables.root_entry())?;
    }
    // The budget is spent: the pages past it were refused (reason 6).
    let entry = list_entry(&daemon.control_socket(), VGPU_A)?;
    ensure!(
        entry["refused_ptes"].as_u64() > Some(refused_before),
        "the budget was not reached: {entry}"
    );
    // Sampled while the translations are held: they go with the client.
    peaks.sample(daemon)?;
    drop(a);
    wait_detached(daemon, VGPU_A)?;
    Ok(())
}

/// The review's fault-log attack: a root with a reserved bit (one fault
/// over the whole address space), then invalidations of every other 2 MiB
/// range, on every channel.
fn fault_log_growth(daemon: &TestDaemon) -> anyhow::Result<()> {
    let mut a = daemon.connect(VGPU_A)?;
    let root = 0x1000 | pte::VALID | 0x10;
    for channel in 0..STANDARD_CHANNELS {
        a.set_pt_root(channel, root)?;
    }
    let mut writes = Vec::new();
    for i in 0..5000u64 {
        let va = 2 * i * LARGE_PAGE_SIZE;
        let channel = (i % u64::from(STANDARD_CHANNELS)) as u32;
        writes.extend([
            (INV_VA_LO, va as u32),
            (INV_VA_HI, (va >> 32) as u32),
            (INV_SIZE_LO, LARGE_PAGE_SIZE as u32),
            (INV_SIZE_HI, 0),
            (INV_CONTROL, INV_RANGE | channel),
        ]);
    }
    write_all(&mut a, &writes)?;
    drop(a);
    wait_detached(daemon, VGPU_A)?;
    Ok(())
}

/// Resets, refused messages, reconnections, and DMA_CONTROLs while the
/// client does not answer the daemon's DMA_READ.
fn log_floods(daemon: &TestDaemon) -> anyhow::Result<()> {
    let mut a = daemon.connect(VGPU_A)?;
    for _ in 0..5000 {
        a.reset()?;
    }
    let no_region = RegionAccess {
        offset: 0,
        region: 42,
        count: 4,
    };
    for _ in 0..1000 {
        let refused = a.request(command::REGION_READ, 0, &[no_region.as_bytes()], &[]);
        ensure!(refused.is_err(), "region 42 read");
    }
    a.dma_map(DmaMapRequest::read_write(0x40000, 4096), None)?;
    write_all(&mut a, &[(DMA_IOVA_LO, 0x40000), (DMA_LENGTH, 4096)])?;
    // Posted: the client reads nothing, so the daemon's DMA_READ waits.
    let start = RegionAccess {
        offset: DMA_CONTROL,
        region: region::BAR2,
        count: 4,
    };
    for _ in 0..2000 {
        a.send_command(
            command::REGION_WRITE,
            flags::NO_REPLY,
            &[start.as_bytes(), &DMA_TO_VRAM.to_le_bytes()],
            &[],
        )?;
    }
    ensure!(a.bar2_read32(MAGIC)? == MAGIC_VALUE);
    drop(a);
    wait_detached(daemon, VGPU_A)?;
    for _ in 0..100 {
        let c = daemon.connect(VGPU_A)?;
        drop(c);
        wait_detached(daemon, VGPU_A)?;
    }
    Ok(())
}

/// Screenshots of both vGPUs, from several control clients at once.
fn screenshots(daemon: &TestDaemon) -> anyhow::Result<()> {
    let control = daemon.control_socket();
    let threads: Vec<_> = (0..4)
        .map(|i| {
            let control = control.clone();
            std::thread::spawn(move || {
                let uuid = if i % 2 == 0 { VGPU_A } else { VGPU_B };
                control_request(
                    &control,
                    "screenshot",
                    serde_json::json!({"uuid": uuid.to_string()}),
                    CONTROL_TIMEOUT,
                )
            })
        })
        .collect();
    for thread in threads {
        let response = thread.join().expect("no panic")?;
        ensure!(response["ok"] == true || response["error"]["kind"].is_string());
    }
    Ok(())
}

#[test]
fn every_attack_on_one_vgpu_leaves_the_other_serving_within_bounds() -> anyhow::Result<()> {
    let mut daemon =
        TestDaemon::start(&DaemonConfig::standard().with("max_dma_bytes = \"64GiB\""))?;
    let started = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let checker = keep_checking_b(&daemon, Arc::clone(&stop))?;
    checker.wait_for(20)?;
    let mut peaks = Peaks::default();
    let baseline = peaks.sample(&daemon)?;

    type Attack = fn(&TestDaemon) -> anyhow::Result<()>;
    let attacks: [(&str, Attack); 5] = [
        ("VRAM across attachments", vram_across_attachments),
        ("hostile triggers", hostile_triggers),
        ("fault log growth", fault_log_growth),
        ("log floods", log_floods),
        ("screenshots", screenshots),
    ];
    for (name, attack) in attacks {
        attack(&daemon).with_context(|| name.to_string())?;
        peaks.sample(&daemon)?;
        checker
            .wait_for(3)
            .with_context(|| format!("after {name}"))?;
    }
    shadow_budget(&daemon, &mut peaks).context("shadow budget")?;
    checker.wait_for(3).context("after the shadow budget")?;
    map_floods(&daemon, &mut peaks).context("map floods")?;
    checker.wait_for(3).context("after map floods")?;

    // A last client holds a full, blocking REQ trigger through SIGTERM.
    let mut last = daemon.connect(VGPU_A)?;
    let req = full_blocking_eventfd()?;
    last.assign_irq_eventfds(irq_index::REQ, 0, 1, &[req.as_fd()])?;
    rustix::fs::fcntl_setfl(&req, OFlags::empty())?;
    let end = peaks.sample(&daemon)?;

    // Counted while B's checker is still attached: created, listening,
    // attached, and nothing that the attacks on A caused.
    let lines_b = lines_about(&daemon, VGPU_B);
    let b = VGPU_B.to_string();
    ensure!(
        lines_b <= 3,
        "{lines_b} lines about B:\n{}",
        daemon
            .stderr()
            .lines()
            .filter(|line| line.contains(&b))
            .collect::<Vec<_>>()
            .join("\n")
    );
    stop.store(true, Ordering::Relaxed);
    let rounds = checker.rounds();
    checker.thread.join().expect("no panic")?;
    ensure!(rounds > 40, "B made {rounds} rounds");

    let heap = peaks.rss_anon.saturating_sub(baseline.rss_anon);
    ensure!(
        heap <= HEAP_BOUND + ALLOCATOR_SLACK,
        "the daemon's heap grew by {} MiB, bound {} MiB (+{} slack)",
        heap / MIB,
        HEAP_BOUND / MIB,
        ALLOCATOR_SLACK / MIB
    );
    ensure!(
        peaks.fds <= baseline.fds + FD_BOUND,
        "{} descriptors at most, {} at the start",
        peaks.fds,
        baseline.fds
    );
    ensure!(
        peaks.mappings <= baseline.mappings + MAX_DMA_MAPS + MAPPINGS_PER_VGPU,
        "{} mappings at most, {} at the start",
        peaks.mappings,
        baseline.mappings
    );
    ensure!(
        end.mappings <= baseline.mappings + MAPPINGS_PER_VGPU,
        "{} mappings once the floods were over, {} at the start",
        end.mappings,
        baseline.mappings
    );
    let lines_a = lines_about(&daemon, VGPU_A);
    let bound_a = LINES_PER_WINDOW * windows(started.elapsed()) + 2;
    ensure!(
        lines_a <= bound_a,
        "{lines_a} lines about A, bound {bound_a}"
    );
    eprintln!(
        "soak: {rounds} rounds of B; heap +{} KiB (bound {} KiB), fds {} → {} (peak), mappings {} → {} (peak) → {}; {lines_a} lines about A, {} s",
        heap / 1024,
        HEAP_BOUND / 1024,
        baseline.fds,
        peaks.fds,
        baseline.mappings,
        peaks.mappings,
        end.mappings,
        started.elapsed().as_secs()
    );

    let status = daemon.terminate()?;
    ensure!(status.success(), "{status}; stderr:\n{}", daemon.stderr());
    drop(last);
    Ok(())
}
