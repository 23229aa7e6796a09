//! Shared helpers: a daemon with its two vGPUs, clients that handle the
//! server's `DMA_READ`/`DMA_WRITE` requests by hand (so that a test can
//! leave them unanswered, answer them late or answer them wrongly), the
//! control API's counters, and eventfd manipulation.

use std::os::fd::{AsFd, BorrowedFd};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use uuid::Uuid;
use vgpud_tests::client::RawMessage;
use vgpud_tests::control::list_entry;
use vgpud_tests::regs::bar2;
use vgpud_tests::regs::config::{VENDOR, VENDOR_ID};
use vgpud_tests::regs::region;
use vgpud_tests::wire::{DmaAccess, HEADER_SIZE, Header, RegionAccess, command, flags};
use vgpud_tests::{DaemonConfig, DmaMapRequest, GuestMemory, RawClient, TestDaemon};
use zerocopy::{FromBytes, IntoBytes};

pub const EINVAL: u32 = libc::EINVAL as u32;
pub const ENOENT: u32 = libc::ENOENT as u32;
pub const ENOSPC: u32 = libc::ENOSPC as u32;
pub const ENOMEM: u32 = libc::ENOMEM as u32;
pub const EEXIST: u32 = libc::EEXIST as u32;

/// Long enough for a loaded 2-core machine to deliver a signal.
pub const SIGNAL: Duration = Duration::from_secs(2);
/// How long something that must not come is waited for.
pub const QUIET: Duration = Duration::from_millis(200);

/// A standard daemon (two vGPUs, 16 MiB, 4 channels) with extra top-level
/// configuration lines.
pub fn daemon_with(lines: &[&str]) -> anyhow::Result<TestDaemon> {
    let mut config = DaemonConfig::standard();
    for line in lines {
        config = config.with(*line);
    }
    TestDaemon::start(&config)
}

/// Connects to `uuid`, retrying while the vGPU still resets after a
/// disconnect (the previous client's connection is closed at once, so a
/// refusal here only means "not yet").
pub fn reconnect(daemon: &TestDaemon, uuid: Uuid) -> anyhow::Result<RawClient> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match RawClient::connect(&daemon.socket(uuid)) {
            Ok(client) => return Ok(client),
            Err(error) if Instant::now() < deadline => {
                let _ = error;
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(error) => {
                return Err(error).with_context(|| format!("stderr:\n{}", daemon.stderr()));
            }
        }
    }
}

/// Waits until the control API shows `uuid` as not attached (the vGPU has
/// finished handling a disconnect).
pub fn wait_detached(daemon: &TestDaemon, uuid: Uuid) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if list_entry(&daemon.control_socket(), uuid)?["attached"] == false {
            return Ok(());
        }
        ensure!(Instant::now() < deadline, "{uuid} still attached after 5 s");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A counter of `uuid`'s `list` entry.
pub fn counter(daemon: &TestDaemon, uuid: Uuid, name: &str) -> anyhow::Result<u64> {
    let entry = list_entry(&daemon.control_socket(), uuid)?;
    entry[name]
        .as_u64()
        .with_context(|| format!("no counter {name} in {entry}"))
}

/// The vGPU still answers: its vendor id reads back.
pub fn assert_serves(c: &mut RawClient, what: &str) -> anyhow::Result<()> {
    let vendor = c
        .config_read(VENDOR_ID, 2)
        .with_context(|| format!("{what} stopped answering"))?;
    ensure!(vendor == u64::from(VENDOR), "{what}: vendor id {vendor:#x}");
    Ok(())
}

/// A read-write DMA map of a new memfd of `len` bytes at `iova`.
pub fn map_guest(c: &mut RawClient, iova: u64, len: usize) -> anyhow::Result<GuestMemory> {
    let memory = GuestMemory::new(len)?;
    c.dma_map(
        DmaMapRequest::read_write(iova, len as u64),
        Some(memory.as_fd()),
    )?;
    Ok(memory)
}

/// Builds one message.
pub fn message(id: u16, cmd: u16, msg_flags: u32, payload: &[u8]) -> Vec<u8> {
    let header = Header {
        id,
        command: cmd,
        size: (HEADER_SIZE + payload.len()) as u32,
        flags: msg_flags,
        error: 0,
    };
    let mut bytes = header.as_bytes().to_vec();
    bytes.extend_from_slice(payload);
    bytes
}

/// Sends a command and receives until its reply, keeping the server's
/// requests that arrive meanwhile unanswered. Returns the reply (an error
/// reply is returned, not turned into an error) and the requests.
pub fn call(
    c: &mut RawClient,
    cmd: u16,
    parts: &[&[u8]],
    fds: &[BorrowedFd<'_>],
) -> anyhow::Result<(RawMessage, Vec<RawMessage>)> {
    let id = c.send_command(cmd, 0, parts, fds)?;
    let mut requests = Vec::new();
    loop {
        let message = c.recv_raw().context("waiting for a reply")?;
        match message.header.kind() {
            flags::TYPE_COMMAND => requests.push(message),
            flags::TYPE_REPLY => {
                ensure!(
                    message.header.id == id && message.header.command == cmd,
                    "reply {:?} to request id {id} command {cmd}",
                    message.header
                );
                return Ok((message, requests));
            }
            other => bail!("message of type {other}"),
        }
    }
}

/// The errno of an error reply, or 0 for a success.
pub fn errno_of(reply: &RawMessage) -> u32 {
    if reply.header.flags & flags::ERROR != 0 {
        reply.header.error
    } else {
        0
    }
}

/// A 32-bit BAR2 read that leaves server requests unanswered.
pub fn read32(c: &mut RawClient, offset: u64) -> anyhow::Result<(u32, Vec<RawMessage>)> {
    let access = RegionAccess {
        offset,
        region: region::BAR2,
        count: 4,
    };
    let (reply, requests) = call(c, command::REGION_READ, &[access.as_bytes()], &[])?;
    ensure!(errno_of(&reply) == 0, "read of {offset:#x} refused");
    let data = reply
        .body
        .get(size_of::<RegionAccess>()..size_of::<RegionAccess>() + 4)
        .context("short REGION_READ reply")?;
    Ok((u32::from_le_bytes(data.try_into()?), requests))
}

/// A 32-bit BAR2 write that leaves server requests unanswered.
pub fn write32(c: &mut RawClient, offset: u64, value: u32) -> anyhow::Result<Vec<RawMessage>> {
    let access = RegionAccess {
        offset,
        region: region::BAR2,
        count: 4,
    };
    let (reply, requests) = call(
        c,
        command::REGION_WRITE,
        &[access.as_bytes(), &value.to_le_bytes()],
        &[],
    )?;
    ensure!(errno_of(&reply) == 0, "write of {offset:#x} refused");
    Ok(requests)
}

/// Programs a DMA self-test's registers (not DMA_CONTROL).
pub fn program_dma(
    c: &mut RawClient,
    iova: u64,
    vram_offset: u64,
    length: u32,
) -> anyhow::Result<Vec<RawMessage>> {
    let mut requests = Vec::new();
    for (offset, value) in [
        (bar2::DMA_IOVA_LO, iova as u32),
        (bar2::DMA_IOVA_HI, (iova >> 32) as u32),
        (bar2::DMA_VRAM_LO, vram_offset as u32),
        (bar2::DMA_VRAM_HI, (vram_offset >> 32) as u32),
        (bar2::DMA_LENGTH, length),
    ] {
        requests.extend(write32(c, offset, value)?);
    }
    Ok(requests)
}

/// Waits up to `timeout` for the next server request; `None` if none came.
pub fn next_request(c: &mut RawClient, timeout: Duration) -> anyhow::Result<Option<RawMessage>> {
    c.set_timeout(timeout)?;
    let result = c.recv_raw();
    c.set_timeout(vgpud_tests::client::DEFAULT_TIMEOUT)?;
    match result {
        Ok(message) => {
            ensure!(
                message.header.kind() == flags::TYPE_COMMAND,
                "expected a server request, got {:?}",
                message.header
            );
            Ok(Some(message))
        }
        Err(error) if error.is_timeout() => Ok(None),
        Err(error) => Err(error.into()),
    }
}

/// The address and count of a server `DMA_READ`/`DMA_WRITE` request
/// (specification layout: 64-bit address and count).
pub fn access_of(request: &RawMessage) -> anyhow::Result<DmaAccess> {
    DmaAccess::read_from_prefix(&request.body)
        .map(|(access, _)| access)
        .map_err(|_| anyhow::anyhow!("request body of {} bytes", request.body.len()))
}

/// Answers a `DMA_READ` request with `data`.
pub fn answer_read(c: &mut RawClient, request: &RawMessage, data: &[u8]) -> anyhow::Result<()> {
    let access = access_of(request)?;
    let header = Header {
        id: request.header.id,
        command: request.header.command,
        size: (HEADER_SIZE + size_of::<DmaAccess>() + data.len()) as u32,
        flags: flags::TYPE_REPLY,
        error: 0,
    };
    let mut bytes = header.as_bytes().to_vec();
    bytes.extend_from_slice(access.as_bytes());
    bytes.extend_from_slice(data);
    c.send_raw(&bytes, &[])?;
    Ok(())
}

/// Answers a `DMA_WRITE` request as done.
pub fn answer_write(c: &mut RawClient, request: &RawMessage) -> anyhow::Result<()> {
    let access = access_of(request)?;
    let header = Header {
        id: request.header.id,
        command: request.header.command,
        size: (HEADER_SIZE + size_of::<DmaAccess>()) as u32,
        flags: flags::TYPE_REPLY,
        error: 0,
    };
    let mut bytes = header.as_bytes().to_vec();
    bytes.extend_from_slice(access.as_bytes());
    c.send_raw(&bytes, &[])?;
    Ok(())
}

/// Answers a server request with an error reply.
pub fn refuse(c: &mut RawClient, request: &RawMessage, errno: u32) -> anyhow::Result<()> {
    let header = Header {
        id: request.header.id,
        command: request.header.command,
        size: HEADER_SIZE as u32,
        flags: flags::TYPE_REPLY | flags::ERROR,
        error: errno,
    };
    c.send_raw(header.as_bytes(), &[])?;
    Ok(())
}

/// Sets or clears `O_NONBLOCK` on the open file description of `fd`.
pub fn set_nonblocking(fd: BorrowedFd<'_>, nonblocking: bool) -> anyhow::Result<()> {
    use rustix::fs::{OFlags, fcntl_getfl, fcntl_setfl};
    let mut flags = fcntl_getfl(fd)?;
    flags.set(OFlags::NONBLOCK, nonblocking);
    fcntl_setfl(fd, flags)?;
    Ok(())
}

/// Whether `O_NONBLOCK` is set on the open file description of `fd`.
pub fn is_nonblocking(fd: BorrowedFd<'_>) -> anyhow::Result<bool> {
    Ok(rustix::fs::fcntl_getfl(fd)?.contains(rustix::fs::OFlags::NONBLOCK))
}

/// Brings an eventfd's counter to its maximum (0xffff_ffff_ffff_fffe), so
/// that a further write of 1 cannot succeed.
pub fn fill_eventfd(fd: BorrowedFd<'_>) -> anyhow::Result<()> {
    let value: u64 = 0xffff_ffff_ffff_fffe;
    rustix::io::write(fd, &value.to_ne_bytes())?;
    Ok(())
}

/// Reads an eventfd's counter without blocking (0 if it is 0).
pub fn drain(fd: BorrowedFd<'_>) -> anyhow::Result<u64> {
    let was = is_nonblocking(fd)?;
    set_nonblocking(fd, true)?;
    let mut bytes = [0u8; 8];
    let result = rustix::io::read(fd, &mut bytes);
    set_nonblocking(fd, was)?;
    match result {
        Ok(_) => Ok(u64::from_ne_bytes(bytes)),
        Err(rustix::io::Errno::AGAIN) => Ok(0),
        Err(errno) => Err(errno.into()),
    }
}

/// Lines the daemon wrote to stderr so far.
pub fn log_lines(daemon: &TestDaemon) -> Vec<String> {
    daemon.stderr().lines().map(str::to_owned).collect()
}

/// Lines of the daemon's stderr from `from` on.
pub fn log_lines_since(daemon: &TestDaemon, from: usize) -> Vec<String> {
    log_lines(daemon).into_iter().skip(from).collect()
}

/// Runs `work` on a thread and fails if it does not finish within
/// `timeout` (the thread is left behind; the test then fails anyway).
pub fn within<T: Send + 'static>(
    timeout: Duration,
    what: &str,
    work: impl FnOnce() -> anyhow::Result<T> + Send + 'static,
) -> anyhow::Result<T> {
    let (sender, receiver) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = sender.send(work());
    });
    match receiver.recv_timeout(timeout) {
        Ok(result) => result,
        Err(_) => bail!("{what} did not finish within {timeout:?}"),
    }
}
