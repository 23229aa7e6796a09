//! The daemon under the system-call filter of `configs/vgpud.service`
//! (applied by `seccomp-run`, as systemd would apply it): a client doing
//! real work (vfio-user attach, DMA map, register writes, a channel
//! doorbell running FILL, COPY into guest memory and SET_SCANOUT), a
//! screenshot through vgpuctl and a clean SIGTERM must all stay inside the
//! filter. A call outside it kills the daemon with SIGSYS (the unit's
//! refusal), which fails the test.

mod supervised;

use std::ffi::OsString;
use std::os::fd::AsFd;
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use rustix::process::Signal;
use supervised::Supervised;
use vgpu_commands::StreamBuilder;
use vgpud_tests::page_tables::{LARGE_PAGE_SIZE, Page, PageTables};
use vgpud_tests::regs::channel::{self, reg};
use vgpud_tests::regs::region;
use vgpud_tests::{DaemonConfig, DmaMapRequest, GuestMemory, VGPU_A};

const TABLES: std::ops::Range<u64> = 0x80_0000..0x88_0000;
const IOVA: u64 = 0x1_0000_0000;
const SYSTEM_VA: u64 = 0x40_0000_0000;
const GUEST_LEN: u64 = 2 << 20;
const RING: u64 = 0x10_0000;
const DATA: u64 = 0x40_0000;
const FENCES: u64 = 0x30_0000;
const WAIT: Duration = Duration::from_secs(20);

fn unit_file() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../configs/vgpud.service")
}

fn under_the_unit_filter() -> Vec<OsString> {
    vec![
        env!("CARGO_BIN_EXE_seccomp-run").into(),
        unit_file().into(),
        "--".into(),
    ]
}

#[test]
fn the_daemon_serves_a_client_and_stops_inside_the_units_filter() -> anyhow::Result<()> {
    let mut d = Supervised::start(&DaemonConfig::standard(), &under_the_unit_filter())?;
    d.wait_for("READY=1")?;
    let pid = d.pid().expect("running");
    let proc_status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    assert!(
        proc_status.lines().any(|l| l == "Seccomp:\t2"),
        "the daemon runs without a filter:\n{proc_status}"
    );

    let mut c = d.connect(VGPU_A)?;
    let guest = GuestMemory::new(GUEST_LEN as usize)?;
    c.dma_map(
        DmaMapRequest::read_write(IOVA, GUEST_LEN),
        Some(guest.as_fd()),
    )?;
    let mut tables = PageTables::in_vram(&mut c, TABLES)?;
    for page in 0..4 {
        let at = page * LARGE_PAGE_SIZE;
        tables.map(&mut c, at, Page::vram(at).large())?;
    }
    tables.map(&mut c, SYSTEM_VA, Page::system(IOVA).large())?;
    c.set_pt_root(0, tables.root_entry())?;
    c.bar2_write32(reg(0, channel::RING_BASE_LO), RING as u32)?;
    c.bar2_write32(reg(0, channel::RING_BASE_HI), 0)?;
    c.bar2_write32(reg(0, channel::RING_SIZE), 4096)?;
    c.bar2_write32(reg(0, channel::CONTROL), channel::ENABLE)?;

    let mut s = StreamBuilder::new();
    s.fill(DATA, 64 * 4 * 32, 0x00ff_0000)
        .copy(DATA, SYSTEM_VA, 4096)
        .set_scanout(0, DATA, 64 * 4, 64, 32)
        .fence32(FENCES, 7, false);
    let bytes = s.to_bytes();
    c.region_write(region::BAR0, RING, &bytes)?;
    c.bar2_write32(reg(0, channel::RING_PUT), bytes.len() as u32)?;
    let start = Instant::now();
    while c.bar2_read32(reg(0, channel::FENCE_LO))? != 7 {
        let status = c.bar2_read32(reg(0, channel::STATUS))?;
        anyhow::ensure!(
            status & 3 != channel::STOPPED,
            "channel stopped with error {}",
            c.bar2_read32(reg(0, channel::ERROR_CODE))?
        );
        anyhow::ensure!(start.elapsed() < WAIT, "the fence never came");
        std::thread::sleep(Duration::from_millis(1));
    }
    assert!(
        guest.bytes()[..4096]
            .chunks_exact(4)
            .all(|w| w == 0x00ff_0000u32.to_le_bytes()),
        "COPY did not reach guest memory"
    );

    let png = d.runtime_dir().with_file_name("shot.png");
    let vgpuctl = vgpud_tests::daemon::vgpud_binary()?.with_file_name("vgpuctl");
    let shot = Command::new(&vgpuctl)
        .arg("--runtime-dir")
        .arg(d.runtime_dir())
        .arg("screenshot")
        .arg(VGPU_A.to_string())
        .arg(&png)
        .output()?;
    assert!(
        shot.status.success(),
        "vgpuctl: {shot:?}; stderr:\n{}",
        d.stderr()
    );
    assert!(std::fs::read(&png)?.starts_with(b"\x89PNG\r\n\x1a\n"));

    drop(c);
    d.signal(Signal::TERM)?;
    let status = d.wait_exit()?;
    assert_ne!(
        status.signal(),
        Some(libc::SIGSYS),
        "a system call outside the unit's filter; stderr:\n{}",
        d.stderr()
    );
    assert!(status.success(), "{status}; stderr:\n{}", d.stderr());
    Ok(())
}

#[test]
fn a_call_outside_the_filter_kills_with_sigsys() -> anyhow::Result<()> {
    // The positive control: chroot(2) is in no group of @system-service.
    let status = Command::new(env!("CARGO_BIN_EXE_seccomp-run"))
        .arg(unit_file())
        .args(["--", "chroot", "/", "true"])
        .status()?;
    assert_eq!(status.signal(), Some(libc::SIGSYS), "{status}");
    Ok(())
}
