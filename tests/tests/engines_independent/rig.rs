//! The test rig: a daemon with the standard two vGPUs (16 MiB, 4
//! channels), each attached with page tables in VRAM, guest memory of three
//! kinds DMA-mapped, MSI-X eventfds and a 4 KiB ring per channel.
//!
//! The GPU VA layout every channel shares (one tree, one root):
//!
//! | VA | maps to |
//! | --- | --- |
//! | 0 .. 0xE0_0000 | VRAM at the same offset (seven writable 2 MiB pages) |
//! | 0xE0_0000 .. | nothing (the page tables live at VRAM 0xF0_0000) |
//! | [`VA_RO_VRAM`] | 4 read-only pages of VRAM at [`RO_VRAM`] |
//! | [`VA_GUEST`] | 2 MiB of fd-backed guest memory, writable (one large page) |
//! | [`VA_GUEST_RO`] | 64 KiB of a read-only DMA map, read-only entries |
//! | [`VA_GUEST_RO_W`] | the same map with WRITABLE entries (reason 5 always) |
//! | [`VA_REMOTE`] | 64 KiB of guest memory mapped without an fd |
//! | [`VA_OUTSIDE`] | VRAM offsets past the 16 MiB slice (reason 3) |
//! | [`VA_NO_MAP`] | an IOVA no DMA map covers (reason 4) |
//! | [`VA_UNMAPPED`] | nothing (reason 1) |

use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use uuid::Uuid;
use vgpud_tests::control::list_entry;
use vgpud_tests::device::MappedBar0;
use vgpud_tests::host::{EventFd, eventfds};
use vgpud_tests::page_tables::{LARGE_PAGE_SIZE, PAGE_SIZE, Page, PageTables};
use vgpud_tests::regs::{bar2, channel as chreg};
use vgpud_tests::wire::irq_index;
use vgpud_tests::{DaemonConfig, DmaMapRequest, GuestMemory, RawClient, TestDaemon};
pub use vgpud_tests::{VGPU_A, VGPU_B};

use crate::cmd;

pub const VRAM: u64 = 16 << 20;
pub const CHANNELS: u32 = 4;
/// VAs below this are the VRAM offsets they name.
pub const IDENTITY_END: u64 = 0xE0_0000;
/// Where the page tables live (not mapped to the GPU).
pub const PT_ARENA: std::ops::Range<u64> = 0xF0_0000..0x100_0000;

/// Scratch: semaphores at 0x0.., fence targets at [`FENCES`], marks at
/// [`MARKS`].
pub const SEM: u64 = 0x0;
pub const FENCES: u64 = 0x1000;
pub const MARKS: u64 = 0x2000;
/// Ring of channel n at `RINGS + n * RING_STRIDE`.
pub const RINGS: u64 = 0x10_0000;
pub const RING_STRIDE: u64 = 0x1_0000;
pub const RING_SIZE: u32 = 0x1000;
/// 2 MiB for batch buffers.
pub const BATCHES: u64 = 0x20_0000;
/// 10 MiB of data, up to [`IDENTITY_END`].
pub const DATA: u64 = 0x40_0000;
/// VRAM behind the read-only VRAM pages.
pub const RO_VRAM: u64 = 0xE0_0000;

pub const VA_RO_VRAM: u64 = 0x1000_0000;
pub const GUEST_IOVA: u64 = 0x1_0000_0000;
pub const GUEST_SIZE: u64 = 2 << 20;
pub const VA_GUEST: u64 = 0x2000_0000;
pub const GUEST_RO_IOVA: u64 = 0x2_0000_0000;
pub const SMALL_MAP: u64 = 64 << 10;
pub const VA_GUEST_RO: u64 = 0x2020_0000;
pub const VA_GUEST_RO_W: u64 = 0x2040_0000;
pub const REMOTE_IOVA: u64 = 0x3_0000_0000;
pub const VA_REMOTE: u64 = 0x2060_0000;
pub const VA_OUTSIDE: u64 = 0x2080_0000;
pub const VA_NO_MAP: u64 = 0x20a0_0000;
pub const NO_MAP_IOVA: u64 = 0x9_0000_0000;
pub const VA_UNMAPPED: u64 = 0x3000_0000;

/// Generous deadline for anything the engine should finish.
pub const DEADLINE: Duration = Duration::from_secs(5);
/// How long something that must not happen is given to happen.
pub const QUIET: Duration = Duration::from_millis(150);
/// A control-page store is taken within 4 ms; this is the slack for a
/// loaded 2-core machine.
pub const POLL_SLACK: Duration = Duration::from_millis(500);

/// How long a channel with work taken may show no progress before a
/// waiting helper rings it again (see `Vgpu::unstrand`).
pub const STRANDED: Duration = Duration::from_millis(1000);

/// What `Vgpu::unstrand` last saw of a channel.
#[derive(Debug)]
struct Strand {
    seen: Option<(u32, u64, u32)>,
    since: Instant,
}

impl Default for Strand {
    fn default() -> Self {
        Strand {
            seen: None,
            since: Instant::now(),
        }
    }
}

/// The standard configuration.
pub fn daemon() -> anyhow::Result<TestDaemon> {
    TestDaemon::start(&DaemonConfig::standard())
}

/// The standard vGPUs on a GPU with `scheduler` set (the harness has no
/// key for it, so the whole `[[gpu]]` table is written as the last
/// top-level line: the `[[profile]]` tables follow it).
pub fn daemon_with_scheduler(scheduler: &str) -> anyhow::Result<TestDaemon> {
    let mut config = DaemonConfig::standard();
    let gpu = config.gpus.remove(0);
    config = config.with(format!(
        "\n[[gpu]]\nid = {:?}\nbackend = \"sim\"\nvram = {:?}\nscheduler = {scheduler:?}\n",
        gpu.id, gpu.vram
    ));
    TestDaemon::start(&config)
}

/// One channel's registers.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Chan {
    pub status: u32,
    pub get: u32,
    pub put: u32,
    pub code: u32,
    pub va: u64,
    pub fence: u64,
    pub intr: u32,
}

/// ERROR_CODE in decimal, as the document's tables have it; the rest in
/// hex, whatever the format flags.
impl std::fmt::Debug for Chan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Chan {{ status: {:#x}, get: {:#x}, put: {:#x}, code: {} (decimal), va: {:#x}, \
             fence: {:#x}, intr: {:#x} }}",
            self.status, self.get, self.put, self.code, self.va, self.fence, self.intr
        )
    }
}

impl Chan {
    pub fn state(&self) -> u32 {
        self.status & 3
    }
    pub fn busy(&self) -> bool {
        self.status & chreg::BUSY != 0
    }
}

/// An attached vGPU, set up as the module documentation says.
#[derive(Debug)]
pub struct Vgpu {
    pub uuid: Uuid,
    pub c: RawClient,
    pub bar0: MappedBar0,
    pub irqs: Vec<EventFd>,
    pub guest: GuestMemory,
    pub guest_ro: GuestMemory,
    pub tables: PageTables,
    put: [u32; CHANNELS as usize],
    ring: [(u64, u32); CHANNELS as usize],
}

impl Vgpu {
    /// Connects to `uuid` and sets everything up; channels stay disabled.
    pub fn attach(daemon: &TestDaemon, uuid: Uuid) -> anyhow::Result<Self> {
        let c = daemon
            .connect(uuid)?
            .with_remote_memory(REMOTE_IOVA, vec![0x5a; SMALL_MAP as usize]);
        let mut v = Self::setup(c, uuid)?;
        v.map_tables()?;
        Ok(v)
    }

    fn setup(mut c: RawClient, uuid: Uuid) -> anyhow::Result<Self> {
        let guest = GuestMemory::new(GUEST_SIZE as usize)?;
        c.dma_map(
            DmaMapRequest::read_write(GUEST_IOVA, GUEST_SIZE),
            Some(guest.as_fd()),
        )?;
        let mut guest_ro = GuestMemory::new(SMALL_MAP as usize)?;
        guest_ro.bytes_mut().fill(0xc3);
        c.dma_map(
            DmaMapRequest::read_only(GUEST_RO_IOVA, SMALL_MAP),
            Some(guest_ro.as_fd()),
        )?;
        c.dma_map(DmaMapRequest::read_write(REMOTE_IOVA, SMALL_MAP), None)?;
        let irqs = eventfds(1 + CHANNELS as usize)?;
        let fds: Vec<_> = irqs.iter().map(AsFd::as_fd).collect();
        c.assign_irq_eventfds(irq_index::MSIX, 0, fds.len() as u32, &fds)?;
        let mut bar0 = c.map_bar0()?;
        let tables = PageTables::in_vram(&mut bar0, PT_ARENA)?;
        let ring = std::array::from_fn(|n| (RINGS + RING_STRIDE * n as u64, RING_SIZE));
        Ok(Vgpu {
            uuid,
            c,
            bar0,
            irqs,
            guest,
            guest_ro,
            tables,
            put: [0; CHANNELS as usize],
            ring,
        })
    }

    fn map_tables(&mut self) -> anyhow::Result<()> {
        let t = &mut self.tables;
        let m = &mut self.bar0;
        let mut va = 0;
        while va < IDENTITY_END {
            t.map(m, va, Page::vram(va).large())?;
            va += LARGE_PAGE_SIZE;
        }
        for i in 0..4 {
            t.map(
                m,
                VA_RO_VRAM + i * PAGE_SIZE,
                Page::vram(RO_VRAM + i * PAGE_SIZE).read_only(),
            )?;
            t.map(
                m,
                VA_OUTSIDE + i * PAGE_SIZE,
                Page::vram(VRAM + i * PAGE_SIZE),
            )?;
            t.map(
                m,
                VA_NO_MAP + i * PAGE_SIZE,
                Page::system(NO_MAP_IOVA + i * PAGE_SIZE),
            )?;
        }
        t.map(m, VA_GUEST, Page::system(GUEST_IOVA).large())?;
        for i in 0..SMALL_MAP / PAGE_SIZE {
            let off = i * PAGE_SIZE;
            t.map(
                m,
                VA_GUEST_RO + off,
                Page::system(GUEST_RO_IOVA + off).read_only(),
            )?;
            t.map(m, VA_GUEST_RO_W + off, Page::system(GUEST_RO_IOVA + off))?;
            t.map(m, VA_REMOTE + off, Page::system(REMOTE_IOVA + off))?;
        }
        let root = self.tables.root_entry();
        for ch in 0..CHANNELS {
            self.c.set_pt_root(ch, root)?;
        }
        Ok(())
    }

    /// Re-commits every channel's root (after a change of the tables).
    pub fn recommit_roots(&mut self) -> anyhow::Result<()> {
        let root = self.tables.root_entry();
        for ch in 0..CHANNELS {
            self.c.set_pt_root(ch, root)?;
        }
        Ok(())
    }

    /// Maps a 4 KiB `page` at `va` and invalidates it on every channel.
    pub fn map_page(&mut self, va: u64, page: Page) -> anyhow::Result<()> {
        self.tables.map(&mut self.bar0, va, page)?;
        for ch in 0..CHANNELS {
            self.c
                .invalidate_range(ch, va & !(PAGE_SIZE - 1), page.size())?;
        }
        Ok(())
    }

    pub fn reg(&mut self, ch: u32, off: u64) -> anyhow::Result<u32> {
        Ok(self.c.bar2_read32(chreg::reg(ch, off))?)
    }

    pub fn set_reg(&mut self, ch: u32, off: u64, value: u32) -> anyhow::Result<()> {
        Ok(self.c.bar2_write32(chreg::reg(ch, off), value)?)
    }

    pub fn ctl(&mut self, off: u64) -> anyhow::Result<u32> {
        Ok(self.c.bar2_read32(off)?)
    }

    pub fn set_ctl(&mut self, off: u64, value: u32) -> anyhow::Result<()> {
        Ok(self.c.bar2_write32(off, value)?)
    }

    pub fn chan(&mut self, ch: u32) -> anyhow::Result<Chan> {
        let r = |v: &mut Self, off| v.reg(ch, off);
        Ok(Chan {
            status: r(self, chreg::STATUS)?,
            get: r(self, chreg::RING_GET)?,
            put: r(self, chreg::RING_PUT)?,
            code: r(self, chreg::ERROR_CODE)?,
            va: u64::from(r(self, chreg::ERROR_VA_HI)?) << 32
                | u64::from(r(self, chreg::ERROR_VA_LO)?),
            fence: u64::from(r(self, chreg::FENCE_HI)?) << 32
                | u64::from(r(self, chreg::FENCE_LO)?),
            intr: r(self, chreg::INTR_STATUS)?,
        })
    }

    // ---- VRAM through the BAR0 mapping ----

    pub fn vram(&self, off: u64, len: u64) -> Vec<u8> {
        self.bar0.map[off as usize..(off + len) as usize].to_vec()
    }

    pub fn u32_at(&self, off: u64) -> u32 {
        let at = off as usize;
        u32::from_le_bytes(self.bar0.map[at..at + 4].try_into().expect("4 bytes"))
    }

    pub fn u64_at(&self, off: u64) -> u64 {
        let at = off as usize;
        u64::from_le_bytes(self.bar0.map[at..at + 8].try_into().expect("8 bytes"))
    }

    pub fn write_vram(&mut self, off: u64, bytes: &[u8]) {
        self.bar0.map[off as usize..off as usize + bytes.len()].copy_from_slice(bytes);
    }

    pub fn write_dwords(&mut self, off: u64, dwords: &[u32]) {
        self.write_vram(off, &cmd::to_bytes(dwords));
    }

    pub fn set_u32(&mut self, off: u64, value: u32) {
        self.write_vram(off, &value.to_le_bytes());
    }

    // ---- rings ----

    /// Points channel `ch`'s ring at `base` (a VA) of `size` bytes; the
    /// channel must be disabled.
    pub fn set_ring(&mut self, ch: u32, base: u64, size: u32) -> anyhow::Result<()> {
        self.ring[ch as usize] = (base, size);
        self.set_reg(ch, chreg::RING_BASE_LO, base as u32)?;
        self.set_reg(ch, chreg::RING_BASE_HI, (base >> 32) as u32)?;
        self.set_reg(ch, chreg::RING_SIZE, size)
    }

    /// Programs the ring registers and ENABLEs channel `ch`.
    pub fn enable(&mut self, ch: u32) -> anyhow::Result<()> {
        let (base, size) = self.ring[ch as usize];
        self.set_ring(ch, base, size)?;
        self.set_reg(ch, chreg::CONTROL, chreg::ENABLE)?;
        self.put[ch as usize] = 0;
        Ok(())
    }

    pub fn enable_all(&mut self) -> anyhow::Result<()> {
        for ch in 0..CHANNELS {
            self.enable(ch)?;
        }
        Ok(())
    }

    /// RESET then ENABLE: the channel starts again at offset 0.
    pub fn restart(&mut self, ch: u32) -> anyhow::Result<()> {
        self.set_reg(ch, chreg::CONTROL, chreg::RESET)?;
        self.set_reg(ch, chreg::CONTROL, chreg::ENABLE)?;
        self.put[ch as usize] = 0;
        Ok(())
    }

    pub fn ring_base(&self, ch: u32) -> u64 {
        self.ring[ch as usize].0
    }

    /// The VA of ring offset `off` of channel `ch`.
    pub fn ring_va(&self, ch: u32, off: u32) -> u64 {
        self.ring[ch as usize].0 + u64::from(off)
    }

    /// The ring offset where the next pushed command goes.
    pub fn put(&self, ch: u32) -> u32 {
        self.put[ch as usize]
    }

    /// Sets where the next pushed command goes (without a doorbell).
    pub fn set_put(&mut self, ch: u32, put: u32) {
        self.put[ch as usize] = put;
    }

    /// Writes `dwords` into the ring at PUT (wrapping), advancing PUT;
    /// returns the offset of the first dword. The ring must lie in the
    /// identity-mapped VRAM or in [`VA_GUEST`].
    pub fn push(&mut self, ch: u32, dwords: &[u32]) -> u32 {
        let (base, size) = self.ring[ch as usize];
        let start = self.put[ch as usize];
        let mut off = start;
        for d in dwords {
            let va = base + u64::from(off);
            let bytes = d.to_le_bytes();
            if va + 4 <= IDENTITY_END {
                self.write_vram(va, &bytes);
            } else if (VA_GUEST..VA_GUEST + GUEST_SIZE).contains(&va) {
                let at = (va - VA_GUEST) as usize;
                self.guest.bytes_mut()[at..at + 4].copy_from_slice(&bytes);
            } else {
                panic!("ring at {base:#x} is not where the rig can write");
            }
            off = (off + 4) % size;
        }
        self.put[ch as usize] = off;
        start
    }

    /// Writes RING_PUT with the pushed PUT.
    pub fn doorbell(&mut self, ch: u32) -> anyhow::Result<()> {
        let put = self.put[ch as usize];
        self.set_reg(ch, chreg::RING_PUT, put)
    }

    /// Pushes and rings; returns the ring offset of the first dword.
    pub fn submit(&mut self, ch: u32, dwords: &[u32]) -> anyhow::Result<u32> {
        let at = self.push(ch, dwords);
        self.doorbell(ch)?;
        Ok(at)
    }

    /// The fence target of channel `ch`.
    pub fn fence_va(ch: u32) -> u64 {
        FENCES + 8 * u64::from(ch)
    }

    /// A 4-byte FENCE of `value` to the channel's fence target.
    pub fn fence(ch: u32, value: u32) -> Vec<u32> {
        cmd::fence(Self::fence_va(ch), value)
    }

    /// Waits until FENCE_LO of `ch` reads `value`; fails early if the
    /// channel stops.
    pub fn wait_fence(&mut self, ch: u32, value: u32) -> anyhow::Result<()> {
        let deadline = Instant::now() + DEADLINE;
        let mut watch = Strand::default();
        loop {
            let state = self.chan(ch)?;
            if state.fence as u32 == value {
                return Ok(());
            }
            if state.state() == chreg::STOPPED {
                bail!("channel {ch} stopped waiting for fence {value}: {state:?}");
            }
            ensure!(
                Instant::now() < deadline,
                "channel {ch}: fence {value} not reached within {DEADLINE:?} ({state:?})"
            );
            self.unstrand(ch, state, &mut watch)?;
            std::thread::sleep(Duration::from_micros(200));
        }
    }

    /// Waits until channel `ch` is stopped and returns its registers.
    pub fn wait_stopped(&mut self, ch: u32, timeout: Duration) -> anyhow::Result<Chan> {
        self.wait_stopped_kicking(ch, timeout, true)
    }

    /// As [`Vgpu::wait_stopped`], for work that rightly runs for seconds
    /// without visible progress: no kick.
    pub fn wait_stopped_long(&mut self, ch: u32, timeout: Duration) -> anyhow::Result<Chan> {
        self.wait_stopped_kicking(ch, timeout, false)
    }

    fn wait_stopped_kicking(
        &mut self,
        ch: u32,
        timeout: Duration,
        kick: bool,
    ) -> anyhow::Result<Chan> {
        let deadline = Instant::now() + timeout;
        let mut watch = Strand::default();
        loop {
            let state = self.chan(ch)?;
            if state.state() == chreg::STOPPED {
                return Ok(state);
            }
            ensure!(
                Instant::now() < deadline,
                "channel {ch} not stopped within {timeout:?}: {state:?}"
            );
            if kick {
                self.unstrand(ch, state, &mut watch)?;
            }
            std::thread::sleep(Duration::from_micros(300));
        }
    }

    /// Waits until channel `ch` has nothing taken and not completed.
    pub fn wait_for_idle(&mut self, ch: u32) -> anyhow::Result<()> {
        let deadline = Instant::now() + DEADLINE;
        let mut watch = Strand::default();
        loop {
            let state = self.chan(ch)?;
            if !state.busy() {
                return Ok(());
            }
            ensure!(
                Instant::now() < deadline,
                "channel {ch} still busy: {state:?}"
            );
            self.unstrand(ch, state, &mut watch)?;
            std::thread::sleep(Duration::from_micros(200));
        }
    }

    /// The workaround for a known bug (see the ignored
    /// `sched::an_accepted_submission_runs_without_another_doorbell`): a
    /// submission the device took (BUSY) sometimes does not run until the
    /// vGPU's next doorbell. A test about something else that waits on a
    /// channel showing no progress for [`STRANDED`] rings one with a NOP,
    /// says so on stderr, and goes on, when `ENGINES_KICK=1` is set.
    fn unstrand(&mut self, ch: u32, state: Chan, watch: &mut Strand) -> anyhow::Result<()> {
        let now = Instant::now();
        let progress = (state.get, state.fence, state.status);
        if watch.seen != Some(progress) {
            watch.seen = Some(progress);
            watch.since = now;
            return Ok(());
        }
        if state.state() != chreg::RUNNING
            || !state.busy()
            || now - watch.since < STRANDED
            || std::env::var_os("ENGINES_KICK").is_none()
        {
            return Ok(());
        }
        eprintln!(
            "KICK: channel {ch} of {} made no progress for {STRANDED:?} with work taken \
             ({state:?}); ringing a NOP (known bug: stranded submissions)",
            self.uuid
        );
        self.submit(ch, &cmd::nop(1))?;
        watch.since = now;
        Ok(())
    }

    /// Asserts that the last doorbell of `ch` was refused with `code` about
    /// `va`, and RING_GET stayed at `get`.
    pub fn assert_refused(
        &mut self,
        ch: u32,
        code: u32,
        va: u64,
        get: u32,
        what: &str,
    ) -> anyhow::Result<()> {
        let s = self.chan(ch)?;
        ensure!(
            s.state() == chreg::STOPPED && s.code == code && s.va == va && s.get == get,
            "{what}: expected stopped with code {code} at VA {va:#x}, GET {get:#x}; got {s:x?}"
        );
        ensure!(
            s.intr & chreg::INTR_ERROR != 0,
            "{what}: INTR_STATUS.ERROR not set: {s:x?}"
        );
        ensure!(
            !s.busy(),
            "{what}: BUSY still set on a stopped channel: {s:x?}"
        );
        Ok(())
    }

    /// Asserts the channel runs with no error.
    pub fn assert_running(&mut self, ch: u32, what: &str) -> anyhow::Result<Chan> {
        let s = self.chan(ch)?;
        ensure!(
            s.state() == chreg::RUNNING && s.code == 0,
            "{what}: channel {ch} not running cleanly: {s:x?}"
        );
        Ok(s)
    }

    /// Runs `dwords` on `ch` (restarted) followed by a fence, and waits for
    /// it: a positive control that the commands are accepted and complete.
    pub fn run_ok(&mut self, ch: u32, dwords: &[u32], what: &str) -> anyhow::Result<()> {
        self.restart(ch)?;
        let all = cmd::concat(&[dwords.to_vec(), Self::fence(ch, 0x600d)]);
        self.submit(ch, &all)?;
        self.wait_fence(ch, 0x600d)
            .with_context(|| format!("{what} should run"))
    }

    /// Acknowledges faults and clears every IRQ_STATUS bit.
    pub fn clear_device_status(&mut self) -> anyhow::Result<()> {
        self.set_ctl(bar2::FAULT_COUNT, 0)?;
        self.set_ctl(bar2::ERROR_CODE, 0)?;
        self.set_ctl(bar2::IRQ_STATUS, 0xf)
    }

    /// Drains every eventfd.
    pub fn drain_irqs(&self) -> anyhow::Result<Vec<u64>> {
        self.irqs
            .iter()
            .map(|e| Ok(e.take()?))
            .collect::<anyhow::Result<_>>()
    }
}

/// A daemon and both vGPUs attached.
pub fn pair(daemon: &TestDaemon) -> anyhow::Result<(Vgpu, Vgpu)> {
    Ok((Vgpu::attach(daemon, VGPU_A)?, Vgpu::attach(daemon, VGPU_B)?))
}

/// Compares two snapshots and names the first differing byte.
pub fn assert_same(before: &[u8], after: &[u8], what: &str) -> anyhow::Result<()> {
    ensure!(before.len() == after.len(), "{what}: lengths differ");
    if before == after {
        return Ok(());
    }
    if let Some(i) = before.iter().zip(after).position(|(a, b)| a != b) {
        let changed = before.iter().zip(after).filter(|(a, b)| a != b).count();
        bail!(
            "{what}: {changed} bytes changed, the first at {i:#x} ({:#04x} -> {:#04x})",
            before[i],
            after[i]
        );
    }
    Ok(())
}

/// A counter of `uuid`'s `list` entry.
pub fn counter(daemon: &TestDaemon, uuid: Uuid, name: &str) -> anyhow::Result<u64> {
    let entry = list_entry(&daemon.control_socket(), uuid)?;
    entry[name]
        .as_u64()
        .with_context(|| format!("no counter {name} in {entry}"))
}

/// Polls `uuid`'s counter `name` until `ok` holds (the counters follow the
/// session's messages with a small lag); returns the last value.
pub fn wait_counter(
    daemon: &TestDaemon,
    uuid: Uuid,
    name: &str,
    ok: impl Fn(u64) -> bool,
) -> anyhow::Result<u64> {
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let value = counter(daemon, uuid, name)?;
        if ok(value) || Instant::now() > deadline {
            return Ok(value);
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The vGPU answers a register read.
pub fn assert_serves(v: &mut Vgpu) -> anyhow::Result<()> {
    let magic = v.ctl(bar2::MAGIC)?;
    ensure!(magic == bar2::MAGIC_VALUE, "MAGIC read {magic:#x}");
    Ok(())
}
