//! What the hostile tests share: waiting for the daemon to notice a
//! client left, and the documented bounds they check.

use std::time::{Duration, Instant};

use uuid::Uuid;
use zerocopy::IntoBytes;

use vgpud_tests::control::list_entry;
use vgpud_tests::regs::region;
use vgpud_tests::wire::{RegionAccess, command};
use vgpud_tests::{RawClient, TestDaemon};

/// How long the daemon may take to notice that a client left.
pub const DETACH_TIMEOUT: Duration = Duration::from_secs(10);

/// Log lines one vGPU's connections may cause per 10 s window, and its
/// client's messages and guest as many again (`docs/operations.md`), each
/// plus one line owning up to what was dropped.
pub const LINES_PER_WINDOW: usize = 2 * (20 + 1);

/// Waits until `list` says `uuid` has no client.
pub fn wait_detached(daemon: &TestDaemon, uuid: Uuid) -> anyhow::Result<()> {
    let deadline = Instant::now() + DETACH_TIMEOUT;
    loop {
        let entry = list_entry(&daemon.control_socket(), uuid)?;
        if entry["attached"] == false {
            return Ok(());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "vGPU {uuid} still attached {DETACH_TIMEOUT:?} after its client left"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The lines of the daemon's stderr that name `uuid`, or that come from
/// its session thread (whose span names it).
pub fn lines_about(daemon: &TestDaemon, uuid: Uuid) -> usize {
    let uuid = uuid.to_string();
    daemon
        .stderr()
        .lines()
        .filter(|line| line.contains(&uuid))
        .count()
}

/// How many log windows an action that took `elapsed` can span.
pub fn windows(elapsed: Duration) -> usize {
    elapsed.as_secs() as usize / 10 + 2
}

/// Writes 32-bit BAR2 registers in order without waiting between them,
/// then waits for every reply: many register writes for a few round trips.
pub fn write_all(c: &mut RawClient, writes: &[(u64, u32)]) -> anyhow::Result<()> {
    for batch in writes.chunks(256) {
        let mut ids = Vec::with_capacity(batch.len());
        for &(offset, value) in batch {
            let access = RegionAccess {
                offset,
                region: region::BAR2,
                count: 4,
            };
            ids.push(c.send_command(
                command::REGION_WRITE,
                0,
                &[access.as_bytes(), &value.to_le_bytes()],
                &[],
            )?);
        }
        for id in ids {
            c.wait_reply(id, command::REGION_WRITE)?;
        }
    }
    Ok(())
}

/// A blocking eventfd whose counter is one below its maximum: the next
/// `write(1)` to it blocks until someone reads it.
pub fn full_blocking_eventfd() -> anyhow::Result<std::os::fd::OwnedFd> {
    use rustix::event::{EventfdFlags, eventfd};
    let fd = eventfd(0, EventfdFlags::CLOEXEC)?;
    rustix::io::write(&fd, &(u64::MAX - 1).to_ne_bytes())?;
    Ok(fd)
}
