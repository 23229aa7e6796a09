//! Interrupt triggers are the client's files: one whose counter is full,
//! or that the client makes blocking again, must not hang the vGPU's
//! session, the control API, other vGPUs or shutdown; anything that is not
//! an eventfd is refused.

use std::os::fd::AsFd;
use std::time::Duration;

use rustix::fs::OFlags;
use vgpud_tests::control::{CONTROL_TIMEOUT, control_request, list_entry};
use vgpud_tests::regs::bar2::{MAGIC, MAGIC_VALUE, SELFTEST};
use vgpud_tests::wire::irq_index;
use vgpud_tests::{EventFd, TestDaemon, VGPU_A, VGPU_B};

use crate::rig::full_blocking_eventfd;

/// Everything that must still answer while vGPU A's client holds a full
/// trigger: A's own registers, the control API, a new client of B, and
/// SIGTERM.
fn everything_still_answers(mut daemon: TestDaemon) -> anyhow::Result<()> {
    let control = daemon.control_socket();
    let list = control_request(&control, "list", serde_json::Value::Null, CONTROL_TIMEOUT)?;
    assert_eq!(list["ok"], true, "{list}");
    let shot = control_request(
        &control,
        "screenshot",
        serde_json::json!({"uuid": VGPU_A.to_string()}),
        CONTROL_TIMEOUT,
    )?;
    assert_eq!(shot["error"]["kind"], "no_scanout", "{shot}");
    let mut b = daemon.connect(VGPU_B)?;
    assert_eq!(b.bar2_read32(MAGIC)?, MAGIC_VALUE);
    drop(b);
    let status = daemon.terminate()?;
    assert!(status.success(), "{status}; stderr:\n{}", daemon.stderr());
    Ok(())
}

#[test]
fn a_full_eventfd_hangs_nothing() -> anyhow::Result<()> {
    let daemon = TestDaemon::standard()?;
    let mut a = daemon.connect(VGPU_A)?;
    let trigger = full_blocking_eventfd()?;
    a.assign_irq_eventfds(irq_index::MSIX, 0, 1, &[trigger.as_fd()])?;
    for _ in 0..3 {
        a.bar2_write32(SELFTEST, 0)?;
        // The session answers the next access: it did not wait on the
        // client's counter.
        assert_eq!(a.bar2_read32(MAGIC)?, MAGIC_VALUE);
    }
    let entry = list_entry(&daemon.control_socket(), VGPU_A)?;
    assert_eq!(entry["interrupts_coalesced"], 3, "{entry}");
    // The counter was not touched: the interrupts merged into the pending
    // ones.
    let mut count = [0u8; 8];
    rustix::io::read(&trigger, &mut count)?;
    assert_eq!(u64::from_ne_bytes(count), u64::MAX - 1);
    everything_still_answers(daemon)
}

#[test]
fn a_trigger_made_blocking_again_cannot_hang_a_signal() -> anyhow::Result<()> {
    let daemon = TestDaemon::standard()?;
    let mut a = daemon.connect(VGPU_A)?;
    let trigger = full_blocking_eventfd()?;
    a.assign_irq_eventfds(irq_index::MSIX, 0, 1, &[trigger.as_fd()])?;
    // The daemon made it non-blocking; the flag belongs to the open file,
    // which the client shares and clears again.
    assert!(rustix::fs::fcntl_getfl(&trigger)?.contains(OFlags::NONBLOCK));
    rustix::fs::fcntl_setfl(&trigger, OFlags::empty())?;
    for _ in 0..3 {
        a.bar2_write32(SELFTEST, 0)?;
        assert_eq!(a.bar2_read32(MAGIC)?, MAGIC_VALUE);
    }
    let entry = list_entry(&daemon.control_socket(), VGPU_A)?;
    assert_eq!(entry["interrupts_coalesced"], 3, "{entry}");
    everything_still_answers(daemon)
}

#[test]
fn a_full_req_trigger_does_not_stop_sigterm() -> anyhow::Result<()> {
    let mut daemon = TestDaemon::standard()?;
    let mut a = daemon.connect(VGPU_A)?;
    let trigger = full_blocking_eventfd()?;
    a.assign_irq_eventfds(irq_index::REQ, 0, 1, &[trigger.as_fd()])?;
    rustix::fs::fcntl_setfl(&trigger, OFlags::empty())?;
    // The harness kills a daemon that has not exited 5 s after SIGTERM and
    // reports it as an error.
    let status = daemon.terminate()?;
    assert!(status.success(), "{status}; stderr:\n{}", daemon.stderr());
    drop(a);
    Ok(())
}

#[test]
fn descriptors_that_are_not_eventfds_are_refused() -> anyhow::Result<()> {
    let daemon = TestDaemon::standard()?;
    let mut a = daemon.connect(VGPU_A)?;
    let good = EventFd::new()?;
    a.assign_irq_eventfds(irq_index::MSIX, 0, 1, &[good.as_fd()])?;

    let (pipe_read, pipe_write) = std::io::pipe()?;
    let file = tempfile::tempfile()?;
    let memfd = rustix::fs::memfd_create("not-a-trigger", rustix::fs::MemfdFlags::CLOEXEC)?;
    let (socket, _peer) = std::os::unix::net::UnixStream::pair()?;
    let candidates: [(&str, std::os::fd::BorrowedFd<'_>); 5] = [
        ("pipe read end", pipe_read.as_fd()),
        ("pipe write end", pipe_write.as_fd()),
        ("regular file", file.as_fd()),
        ("memfd", memfd.as_fd()),
        ("socket", socket.as_fd()),
    ];
    for (what, fd) in candidates {
        let refused = a
            .assign_irq_eventfds(irq_index::MSIX, 0, 1, &[fd])
            .expect_err(what);
        assert_eq!(refused.errno(), Some(libc::EINVAL as u32), "{what}");
        // One bad descriptor refuses the whole request, good ones with it.
        let refused = a
            .assign_irq_eventfds(irq_index::MSIX, 0, 2, &[good.as_fd(), fd])
            .expect_err(what);
        assert_eq!(refused.errno(), Some(libc::EINVAL as u32), "{what}");
    }
    // Nothing changed: vector 0 still goes to the eventfd assigned first,
    // and only there.
    a.bar2_write32(SELFTEST, 0)?;
    assert_eq!(good.wait(Duration::from_secs(5))?, 1);
    rustix::fs::fcntl_setfl(&pipe_read, OFlags::NONBLOCK)?;
    let mut byte = [0u8; 1];
    assert_eq!(
        rustix::io::read(&pipe_read, &mut byte),
        Err(rustix::io::Errno::AGAIN),
        "nothing was written to the pipe"
    );
    assert_eq!(file.metadata()?.len(), 0, "nothing was written to the file");
    Ok(())
}
