//! Interrupt eventfds in a hostile client's hands (`docs/vfio-user.md`,
//! "Interrupts" and `DEVICE_SET_IRQS`): full counters, eventfds made
//! blocking again, descriptors that are not eventfds, and when an
//! interrupt that a register write raises is signalled relative to the
//! replies (`docs/device-interface.md`, "Interrupts").

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use rustix::event::{EventfdFlags, eventfd};
use rustix::fs::{Mode, OFlags, open};
use vgpud_tests::config::STANDARD_CHANNELS;
use vgpud_tests::control::control_request;
use vgpud_tests::host::eventfds;
use vgpud_tests::regs::bar2::{
    ERROR_CODE, INV_ALL, INV_CONTROL, IRQ_ERROR, IRQ_FAULT, IRQ_MASK, IRQ_SELFTEST, IRQ_STATUS,
    SELFTEST,
};
use vgpud_tests::regs::{error_code, region};
use vgpud_tests::wire::{IrqSet, RegionAccess, command, irq_index, irq_set_flags};
use vgpud_tests::{EventFd, RawClient, TestDaemon, VGPU_A, VGPU_B};
use zerocopy::IntoBytes;

use crate::rig::{
    EINVAL, SIGNAL, assert_serves, counter, drain, fill_eventfd, is_nonblocking, set_nonblocking,
};

const VECTORS: u32 = STANDARD_CHANNELS + 1;

fn borrowed(fds: &[EventFd]) -> Vec<BorrowedFd<'_>> {
    fds.iter().map(AsFd::as_fd).collect()
}

/// A client of A with every MSI-X vector assigned.
fn with_msix(daemon: &TestDaemon) -> anyhow::Result<(RawClient, Vec<EventFd>)> {
    let mut c = daemon.connect(VGPU_A)?;
    let fds = eventfds(VECTORS as usize)?;
    c.assign_irq_eventfds(irq_index::MSIX, 0, VECTORS, &borrowed(&fds))?;
    Ok((c, fds))
}

#[test]
fn the_daemon_makes_each_eventfd_it_takes_nonblocking() -> anyhow::Result<()> {
    let daemon = TestDaemon::standard()?;
    let mut c = daemon.connect(VGPU_A)?;
    let fd = eventfd(0, EventfdFlags::CLOEXEC)?;
    assert!(!is_nonblocking(fd.as_fd())?);
    c.assign_irq_eventfds(irq_index::MSIX, 0, 1, &[fd.as_fd()])?;
    assert!(
        is_nonblocking(fd.as_fd())?,
        "O_NONBLOCK not set on the shared open file"
    );
    Ok(())
}

#[test]
fn a_full_counter_coalesces_and_counts_each_interrupt() -> anyhow::Result<()> {
    let daemon = TestDaemon::standard()?;
    let (mut c, fds) = with_msix(&daemon)?;
    let mut b = daemon.connect(VGPU_B)?;
    fill_eventfd(fds[1].as_fd())?;
    let coalesced = counter(&daemon, VGPU_A, "interrupts_coalesced")?;
    for _ in 0..20 {
        c.bar2_write32(SELFTEST, 1)?;
    }
    assert_serves(&mut c, "vGPU A")?;
    assert_serves(&mut b, "vGPU B")?;
    assert_eq!(
        counter(&daemon, VGPU_A, "interrupts_coalesced")? - coalesced,
        20,
        "each interrupt that met a full counter is counted"
    );
    assert_eq!(counter(&daemon, VGPU_B, "interrupts_coalesced")?, 0);
    // The pending interrupts are still there, merged.
    assert_eq!(drain(fds[1].as_fd())?, 0xffff_ffff_ffff_fffe);
    c.bar2_write32(SELFTEST, 1)?;
    assert_eq!(fds[1].wait(SIGNAL)?, 1, "delivered again once read");
    Ok(())
}

#[test]
fn a_full_eventfd_made_blocking_again_costs_only_its_own_vgpu() -> anyhow::Result<()> {
    let daemon = TestDaemon::standard()?;
    let (mut c, fds) = with_msix(&daemon)?;
    for fd in &fds {
        fill_eventfd(fd.as_fd())?;
        set_nonblocking(fd.as_fd(), false)?;
    }
    let mut b = daemon.connect(VGPU_B)?;
    let b_fd = EventFd::new()?;
    b.assign_irq_eventfds(irq_index::MSIX, 0, 1, &[b_fd.as_fd()])?;
    let coalesced = counter(&daemon, VGPU_A, "interrupts_coalesced")?;
    // A's client raises interrupts on full, blocking eventfds from a
    // thread, while B's client, the control API and A's own register path
    // are used.
    let rounds = 100u32;
    let attacker = std::thread::spawn(move || -> anyhow::Result<RawClient> {
        for round in 0..rounds {
            c.bar2_write32(SELFTEST, round % VECTORS)?;
        }
        Ok(c)
    });
    let started = Instant::now();
    for _ in 0..50 {
        b.bar2_write32(SELFTEST, 0)?;
        assert_eq!(b_fd.wait(SIGNAL)?, 1, "vGPU B's interrupt");
    }
    let list = control_request(
        &daemon.control_socket(),
        "list",
        serde_json::Value::Null,
        Duration::from_secs(3),
    )?;
    assert_eq!(list["ok"], true);
    let mut c = attacker.join().expect("attacker thread")?;
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "100 interrupts on blocking eventfds took {:?}",
        started.elapsed()
    );
    assert_serves(&mut c, "vGPU A")?;
    assert_eq!(
        counter(&daemon, VGPU_A, "interrupts_coalesced")? - coalesced,
        u64::from(rounds),
        "each interrupt on a full blocking eventfd is counted as coalesced"
    );
    Ok(())
}

/// Takes ownership of a descriptor a libc call returned.
fn owned(fd: i32) -> anyhow::Result<OwnedFd> {
    if fd < 0 {
        return Err(std::io::Error::last_os_error().into());
    }
    // SAFETY: `fd` was just returned by the kernel and nothing else owns it.
    Ok(unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) })
}

fn pipe() -> anyhow::Result<(OwnedFd, OwnedFd)> {
    let mut ends = [0i32; 2];
    // SAFETY: pipe2 writes two descriptors into the array it is given.
    let result = unsafe { libc::pipe2(ends.as_mut_ptr(), libc::O_CLOEXEC) };
    anyhow::ensure!(result == 0, "pipe2: {}", std::io::Error::last_os_error());
    Ok((owned(ends[0])?, owned(ends[1])?))
}

/// Descriptors that are not eventfds, each in a fresh form.
fn not_eventfds() -> anyhow::Result<Vec<(&'static str, OwnedFd)>> {
    let (read_end, write_end) = pipe()?;
    let (sock, _peer) = UnixStream::pair()?;
    let file = tempfile::tempfile()?;
    let memfd = rustix::fs::memfd_create("not-an-eventfd", rustix::fs::MemfdFlags::CLOEXEC)?;
    let null = open("/dev/null", OFlags::RDWR | OFlags::CLOEXEC, Mode::empty())?;
    let epoll = rustix::event::epoll::create(rustix::event::epoll::CreateFlags::CLOEXEC)?;
    // SAFETY: timerfd_create takes no pointers.
    let timer = unsafe { libc::timerfd_create(libc::CLOCK_MONOTONIC, libc::TFD_CLOEXEC) };
    let timer = owned(timer)?;
    // An O_PATH descriptor of an eventfd: the same inode, but nothing can
    // be written through it.
    let real = EventFd::new()?;
    let path_fd = open(
        format!(
            "/proc/self/fd/{}",
            rustix::fd::AsRawFd::as_raw_fd(&real.as_fd())
        ),
        OFlags::PATH | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    Ok(vec![
        ("pipe read end", read_end),
        ("pipe write end", write_end),
        ("socket", OwnedFd::from(sock)),
        ("regular file", OwnedFd::from(file)),
        ("memfd", memfd),
        ("/dev/null", null),
        ("epoll", epoll),
        ("timerfd", timer),
        ("O_PATH of an eventfd", path_fd),
    ])
}

#[test]
fn a_descriptor_that_is_not_an_eventfd_refuses_the_whole_request() -> anyhow::Result<()> {
    let daemon = TestDaemon::standard()?;
    let (mut c, fds) = with_msix(&daemon)?;
    let mut b = daemon.connect(VGPU_B)?;
    for (what, bad) in not_eventfds()? {
        let fresh = eventfds(3)?;
        let offered = [fresh[0].as_fd(), bad.as_fd(), fresh[2].as_fd()];
        let result = c.assign_irq_eventfds(irq_index::MSIX, 0, 3, &offered);
        assert_eq!(
            result.as_ref().err().and_then(|e| e.errno()),
            Some(EINVAL),
            "{what}: {result:?}"
        );
        // Nothing changed: the earlier triggers still fire.
        for vector in [0, 2] {
            c.bar2_write32(SELFTEST, vector)?;
            assert_eq!(
                fds[vector as usize].wait(SIGNAL)?,
                1,
                "{what}: vector {vector}"
            );
            assert_eq!(fresh[vector as usize].take()?, 0, "{what}: {vector}");
        }
        // Also refused for the single-vector indexes.
        for index in [
            irq_index::INTX,
            irq_index::MSI,
            irq_index::ERR,
            irq_index::REQ,
        ] {
            let result = c.assign_irq_eventfds(index, 0, 1, &[bad.as_fd()]);
            assert_eq!(
                result.as_ref().err().and_then(|e| e.errno()),
                Some(EINVAL),
                "{what} for index {index}: {result:?}"
            );
        }
    }
    assert_serves(&mut c, "vGPU A")?;
    assert_serves(&mut b, "vGPU B")
}

#[test]
fn more_descriptors_than_max_msg_fds_are_refused_and_closed() -> anyhow::Result<()> {
    let daemon = TestDaemon::standard()?;
    let mut c = daemon.connect(VGPU_A)?;
    let pid = daemon.pid().expect("pid");
    let before = vgpud_tests::process::resources(pid)?.fds;
    let many = eventfds(20)?;
    for _ in 0..20 {
        let request = IrqSet {
            argsz: size_of::<IrqSet>() as u32,
            flags: irq_set_flags::DATA_EVENTFD | irq_set_flags::ACTION_TRIGGER,
            index: irq_index::MSIX,
            start: 0,
            count: VECTORS,
        };
        let result = c.request(
            command::DEVICE_SET_IRQS,
            0,
            &[request.as_bytes()],
            &borrowed(&many),
        );
        let errno = result.err().and_then(|e| e.errno());
        assert!(
            matches!(errno, Some(e) if e != 0),
            "20 fds: expected an error reply, got {errno:?}"
        );
        // Descriptors attached to a message that takes none: the documents
        // do not say whether it is served or refused, only that its fds
        // are closed once it is handled.
        let access = RegionAccess {
            offset: 0,
            region: region::CONFIG,
            count: 2,
        };
        let result = c.request(
            command::REGION_READ,
            0,
            &[access.as_bytes()],
            &borrowed(&many[..16]),
        );
        assert!(
            result.is_ok() || result.as_ref().err().and_then(|e| e.errno()).is_some(),
            "{result:?}"
        );
    }
    assert_serves(&mut c, "vGPU A")?;
    let after = vgpud_tests::process::resources(pid)?.fds;
    assert!(
        after <= before + 1,
        "the daemon kept descriptors: {before} before, {after} after"
    );
    Ok(())
}

#[test]
fn reassigning_triggers_over_and_over_keeps_no_descriptors() -> anyhow::Result<()> {
    let daemon = TestDaemon::standard()?;
    let mut c = daemon.connect(VGPU_A)?;
    let pid = daemon.pid().expect("pid");
    let first = eventfds(VECTORS as usize)?;
    c.assign_irq_eventfds(irq_index::MSIX, 0, VECTORS, &borrowed(&first))?;
    let before = vgpud_tests::process::resources(pid)?.fds;
    for _ in 0..200 {
        let fds = eventfds(VECTORS as usize)?;
        c.assign_irq_eventfds(irq_index::MSIX, 0, VECTORS, &borrowed(&fds))?;
        let one = EventFd::new()?;
        for index in [
            irq_index::INTX,
            irq_index::MSI,
            irq_index::ERR,
            irq_index::REQ,
        ] {
            c.assign_irq_eventfds(index, 0, 1, &[one.as_fd()])?;
        }
    }
    let after = vgpud_tests::process::resources(pid)?.fds;
    // At most 1 + channels MSI-X, and one each of INTx, MSI, ERR, REQ.
    assert!(
        after <= before + 4,
        "descriptors grew from {before} to {after}"
    );
    Ok(())
}

#[test]
fn out_of_range_vectors_are_refused_without_change() -> anyhow::Result<()> {
    let daemon = TestDaemon::standard()?;
    let (mut c, fds) = with_msix(&daemon)?;
    let trigger = irq_set_flags::DATA_EVENTFD | irq_set_flags::ACTION_TRIGGER;
    let extra = eventfds(2)?;
    for (start, count) in [(u32::MAX, 2), (VECTORS, 1), (VECTORS - 1, 2), (1, u32::MAX)] {
        let result = c.set_irqs(
            irq_index::MSIX,
            trigger,
            start,
            count,
            &[],
            &borrowed(&extra),
        );
        let errno = result.err().and_then(|e| e.errno());
        assert!(
            matches!(errno, Some(e) if e != 0),
            "start {start} count {count}: {errno:?}"
        );
    }
    c.bar2_write32(SELFTEST, VECTORS - 1)?;
    assert_eq!(fds[VECTORS as usize - 1].wait(SIGNAL)?, 1);
    assert_eq!(extra[0].take()? + extra[1].take()?, 0);
    Ok(())
}

/// Raises an interrupt with a `NO_REPLY` write and checks that it is
/// signalled before the reply to the next message.
fn assert_signalled_before_next_reply(
    c: &mut RawClient,
    fd: &EventFd,
    offset: u64,
    value: u32,
    what: &str,
) -> anyhow::Result<()> {
    c.region_write_posted(region::BAR2, offset, &value.to_le_bytes())?;
    c.config_read(0, 2)?;
    assert_eq!(
        fd.take()?,
        1,
        "{what}: not signalled when the next reply came"
    );
    Ok(())
}

#[test]
fn an_interrupt_a_write_raises_is_signalled_before_the_next_reply() -> anyhow::Result<()> {
    let daemon = TestDaemon::standard()?;
    let (mut c, fds) = with_msix(&daemon)?;
    c.bar2_write32(IRQ_MASK, IRQ_FAULT | IRQ_ERROR)?;
    for round in 0..50 {
        let vector = round % VECTORS;
        assert_signalled_before_next_reply(
            &mut c,
            &fds[vector as usize],
            SELFTEST,
            vector,
            "SELFTEST",
        )?;
        // A refused INV_CONTROL (channel 63) raises vector 0 for ERROR.
        assert_signalled_before_next_reply(&mut c, &fds[0], INV_CONTROL, 63 | INV_ALL, "refusal")?;
        // A translation fault (no root) raises vector 0 for FAULT.
        c.bar2_write32(vgpud_tests::regs::bar2::XLATE_VA_LO, 0x1000)?;
        assert_signalled_before_next_reply(
            &mut c,
            &fds[0],
            vgpud_tests::regs::bar2::XLATE_CONTROL,
            1,
            "fault",
        )?;
        // With plain writes the same holds for the write's own reply + 1.
        c.bar2_write32(SELFTEST, 0)?;
        c.bar2_read32(IRQ_STATUS)?;
        assert_eq!(fds[0].take()?, 1, "SELFTEST 0 with a reply");
    }
    assert_eq!(c.bar2_read32(ERROR_CODE)?, error_code::BAD_CHANNEL);
    Ok(())
}

#[test]
fn vector_0_is_raised_for_every_event_not_only_the_rising_edge() -> anyhow::Result<()> {
    let daemon = TestDaemon::standard()?;
    let (mut c, fds) = with_msix(&daemon)?;
    c.bar2_write32(IRQ_MASK, IRQ_FAULT | IRQ_ERROR | IRQ_SELFTEST)?;
    for _ in 0..10 {
        c.bar2_write32(vgpud_tests::regs::bar2::XLATE_CONTROL, 0)?;
    }
    for _ in 0..7 {
        c.bar2_write32(INV_CONTROL, 63 | INV_ALL)?;
    }
    c.config_read(0, 2)?;
    assert_eq!(fds[0].take()?, 17, "one signal per fault and per refusal");
    assert_eq!(
        c.bar2_read32(IRQ_STATUS)? & (IRQ_FAULT | IRQ_ERROR),
        IRQ_FAULT | IRQ_ERROR
    );
    // Unmasking an already set bit raises vector 0 once.
    c.bar2_write32(IRQ_MASK, 0)?;
    c.bar2_write32(IRQ_MASK, IRQ_FAULT)?;
    c.config_read(0, 2)?;
    assert_eq!(fds[0].take()?, 1, "unmasking a set status bit");
    Ok(())
}

#[test]
fn an_assigned_socket_pair_cannot_be_smuggled_in_between_eventfds() -> anyhow::Result<()> {
    // QEMU-style chunks: the first chunk is good, the second carries a
    // socket; the second is refused whole and the first stays.
    let daemon = TestDaemon::standard()?;
    let mut c = daemon.connect(VGPU_A)?;
    let good = eventfds(3)?;
    c.assign_irq_eventfds(irq_index::MSIX, 0, 3, &borrowed(&good))?;
    let (sock, _peer) = UnixStream::pair()?;
    let later = EventFd::new()?;
    let result = c.assign_irq_eventfds(irq_index::MSIX, 3, 2, &[later.as_fd(), sock.as_fd()]);
    assert_eq!(result.err().and_then(|e| e.errno()), Some(EINVAL));
    c.bar2_write32(SELFTEST, 3)?;
    assert_eq!(
        later.wait(crate::rig::QUIET)?,
        0,
        "vector 3 was not assigned"
    );
    c.bar2_write32(SELFTEST, 2)?;
    assert_eq!(good[2].wait(SIGNAL)?, 1);
    Ok(())
}

#[test]
fn unmasking_a_set_bit_and_an_fd_backed_dma_signal_before_the_next_reply() -> anyhow::Result<()> {
    let daemon = TestDaemon::standard()?;
    let (mut c, fds) = with_msix(&daemon)?;
    let _memory = crate::rig::map_guest(&mut c, 0x1_0000_0000, 64 << 10)?;
    for round in 0..20 {
        // Unmasking FAULT while it is set raises vector 0 at once.
        c.bar2_write32(vgpud_tests::regs::bar2::XLATE_CONTROL, 0)?;
        c.config_read(0, 2)?;
        assert_eq!(fds[0].take()?, 0, "round {round}: masked");
        assert_signalled_before_next_reply(&mut c, &fds[0], IRQ_MASK, IRQ_FAULT, "unmask")?;
        c.bar2_write32(IRQ_MASK, 0)?;
        c.acknowledge_faults()?;
        // An fd-backed copy completes before the next access is answered,
        // and so is its DMA_DONE interrupt signalled.
        c.bar2_write32(IRQ_MASK, vgpud_tests::regs::bar2::IRQ_DMA_DONE)?;
        crate::rig::program_dma(&mut c, 0x1_0000_0000, 0, 4096)?;
        assert_signalled_before_next_reply(
            &mut c,
            &fds[0],
            vgpud_tests::regs::bar2::DMA_CONTROL,
            1,
            "DMA_DONE",
        )?;
        c.bar2_write32(IRQ_MASK, 0)?;
        c.bar2_write32(IRQ_STATUS, vgpud_tests::regs::bar2::IRQ_DMA_DONE)?;
    }
    Ok(())
}
