//! The daemon's life under misbehaving clients: socket modes whatever the
//! umask (`docs/configuration.md`, "Sockets and permissions"), SIGTERM
//! within its bound (`docs/operations.md`, "Start-up and restart"), and
//! the control API (`docs/control-api.md`) while clients misbehave.

use std::io::{BufRead, BufReader, Write};
use std::os::fd::AsFd;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixDatagram, UnixStream};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rustix::process::{Pid, Signal, kill_process};
use vgpud_tests::control::{CONTROL_TIMEOUT, control_request, list_entry};
use vgpud_tests::daemon::vgpud_binary;
use vgpud_tests::regs::bar2::{DISPI_BPP, DISPI_ENABLE, DISPI_VIRT_WIDTH, DISPI_XRES, DISPI_YRES};
use vgpud_tests::regs::region;
use vgpud_tests::wire::{RegionAccess, command, irq_index};
use vgpud_tests::{DaemonConfig, DmaMapRequest, EventFd, GuestMemory, TestDaemon, VGPU_A, VGPU_B};
use zerocopy::IntoBytes;

use crate::rig::{
    assert_serves, fill_eventfd, program_dma, reconnect, set_nonblocking, wait_detached, write32,
};

/// Starts `vgpud` on the standard configuration with `umask` in force,
/// waits for READY=1, and returns the child and its directory.
fn start_with_umask(umask: u32) -> anyhow::Result<(std::process::Child, tempfile::TempDir)> {
    let dir = tempfile::tempdir()?;
    let run = dir.path().join("run");
    let config = dir.path().join("vgpud.toml");
    std::fs::write(&config, DaemonConfig::standard().render(&run))?;
    let notify_path = dir.path().join("notify.sock");
    let notify = UnixDatagram::bind(&notify_path)?;
    notify.set_read_timeout(Some(Duration::from_millis(100)))?;
    let mut command = Command::new(vgpud_binary()?);
    command
        .arg("--config")
        .arg(&config)
        .env("NOTIFY_SOCKET", &notify_path)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let hook = move || {
        // SAFETY: umask takes no pointers and cannot fail; it only sets
        // the calling process's file mode creation mask.
        unsafe { libc::umask(umask as libc::mode_t) };
        Ok(())
    };
    // SAFETY: the hook calls only umask, which is async-signal-safe, and
    // touches no memory shared with the parent.
    unsafe { command.pre_exec(hook) };
    let mut child = command.spawn()?;
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut buf = [0u8; 4096];
    loop {
        if let Ok(n) = notify.recv(&mut buf)
            && String::from_utf8_lossy(&buf[..n])
                .lines()
                .any(|l| l.trim() == "READY=1")
        {
            return Ok((child, dir));
        }
        if let Some(status) = child.try_wait()? {
            anyhow::bail!("vgpud exited with {status} before READY=1");
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            anyhow::bail!("no READY=1");
        }
    }
}

fn stop(mut child: std::process::Child) -> anyhow::Result<std::process::ExitStatus> {
    let pid = Pid::from_raw(child.id() as i32).expect("pid");
    kill_process(pid, Signal::TERM)?;
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(status);
        }
        if Instant::now() > deadline {
            child.kill()?;
            child.wait()?;
            anyhow::bail!("vgpud ignored SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn sockets_have_their_documented_modes_whatever_the_umask() -> anyhow::Result<()> {
    for umask in [0o000, 0o077, 0o777] {
        let (child, dir) = start_with_umask(umask)?;
        let run = dir.path().join("run");
        let mode = |name: String| -> anyhow::Result<u32> {
            let meta = std::fs::symlink_metadata(run.join(&name))?;
            anyhow::ensure!(meta.file_type().is_socket(), "{name} is not a socket");
            Ok(meta.permissions().mode() & 0o7777)
        };
        let a = mode(format!("{VGPU_A}.sock"))?;
        let b = mode(format!("{VGPU_B}.sock"))?;
        let control = mode("control.sock".into())?;
        // Nothing else is left in the runtime directory (the private
        // directories the sockets were bound in are gone).
        let mut names: Vec<String> = std::fs::read_dir(&run)?
            .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
            .collect::<Result<_, _>>()?;
        names.sort();
        let owner = std::fs::metadata(&run)?.uid();
        stop(child)?;
        assert_eq!((a, b, control), (0o660, 0o660, 0o600), "umask {umask:03o}");
        let mut expected = vec![
            format!("{VGPU_A}.sock"),
            format!("{VGPU_B}.sock"),
            "control.sock".to_string(),
        ];
        expected.sort();
        assert_eq!(names, expected, "umask {umask:03o}");
        assert_eq!(owner, rustix::process::getuid().as_raw());
    }
    Ok(())
}

#[test]
fn a_runtime_dir_it_creates_keeps_other_users_from_replacing_the_sockets() -> anyhow::Result<()> {
    // docs/configuration.md: "Sockets are created with their final mode
    // ... so that no other user can connect in between, whatever the
    // umask." In a runtime directory that others can write, another user
    // (another VMM's) can rename a vGPU's socket away and bind its own at
    // the path, and the VM started next hands it its guest memory.
    let mut modes = Vec::new();
    for umask in [0o000, 0o002, 0o022] {
        let (child, dir) = start_with_umask(umask)?;
        let run = dir.path().join("run");
        let mode = std::fs::metadata(&run)?.permissions().mode() & 0o7777;
        let mut stolen = None;
        if umask == 0 && rustix::process::getuid().is_root() {
            // Let "nobody" reach the directory, as it could reach /run.
            std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))?;
            let status = Command::new("mv")
                .arg(run.join(format!("{VGPU_A}.sock")))
                .arg(run.join("stolen.sock"))
                .uid(65534)
                .gid(65534)
                .status()?;
            stolen = Some(status.success());
        }
        stop(child)?;
        modes.push((umask, mode, stolen));
    }
    for (umask, mode, stolen) in modes {
        assert_eq!(
            mode & 0o022,
            0,
            "umask {umask:03o}: runtime dir mode {mode:04o} (user nobody moved A's socket away: {stolen:?})"
        );
    }
    Ok(())
}

/// Everything at once that could hold shutdown up: full, blocking REQ
/// eventfds on both vGPUs, a client that stopped reading while the daemon
/// sends it replies, a server request left unanswered, a silent control
/// client with half a line, and a session busy with walks.
#[test]
fn sigterm_ends_the_daemon_within_its_bound_whatever_the_clients_do() -> anyhow::Result<()> {
    let mut daemon = TestDaemon::standard()?;
    let mut a = daemon.connect(VGPU_A)?;
    let mut b = daemon.connect(VGPU_B)?;
    let reqs = [EventFd::new()?, EventFd::new()?];
    for (c, req) in [(&mut a, &reqs[0]), (&mut b, &reqs[1])] {
        c.assign_irq_eventfds(irq_index::REQ, 0, 1, &[req.as_fd()])?;
        fill_eventfd(req.as_fd())?;
        set_nonblocking(req.as_fd(), false)?;
    }
    // A: a DMA_READ outstanding, then a flood of 1 MiB reads it never
    // reads the replies of.
    a.dma_map(DmaMapRequest::read_write(0x4_0000_0000, 1 << 20), None)?;
    program_dma(&mut a, 0x4_0000_0000, 0, 4096)?;
    write32(&mut a, vgpud_tests::regs::bar2::DMA_CONTROL, 1)?;
    let flood = a.stream().try_clone()?;
    let flooder = std::thread::spawn(move || {
        let access = RegionAccess {
            offset: 0,
            region: region::BAR0,
            count: 1 << 20,
        };
        let message = crate::rig::message(7, command::REGION_READ, 0, access.as_bytes());
        flood.set_write_timeout(Some(Duration::from_secs(8))).ok();
        for _ in 0..64 {
            if (&flood).write_all(&message).is_err() {
                break;
            }
        }
    });
    // B: walks queued behind each other.
    let mut mem = GuestMemory::new(4 * 4096)?;
    let g = 0x1_0000_0000u64;
    for i in 0..512 {
        for (table, next) in [(0, 1), (1, 2), (2, 3)] {
            let at = table * 4096 + 8 * i;
            let entry = (g + next * 4096) | 7;
            mem.bytes_mut()[at as usize..at as usize + 8].copy_from_slice(&entry.to_le_bytes());
        }
    }
    b.dma_map(DmaMapRequest::read_write(g, 4 * 4096), Some(mem.as_fd()))?;
    for _ in 0..8 {
        b.region_write_posted(region::BAR2, 0x1100, &((g as u32) | 7).to_le_bytes())?;
        b.region_write_posted(region::BAR2, 0x1104, &((g >> 32) as u32).to_le_bytes())?;
    }
    // A control client with half a request.
    let control = UnixStream::connect(daemon.control_socket())?;
    (&control).write_all(b"{\"version\":1,")?;
    std::thread::sleep(Duration::from_millis(300));

    let started = Instant::now();
    let status = daemon.terminate()?;
    let took = started.elapsed();
    flooder.join().expect("flooder");
    assert!(status.success(), "{status}; stderr:\n{}", daemon.stderr());
    assert!(
        took < Duration::from_secs(5),
        "SIGTERM took {took:?} (documented: about 3.5 s at most)"
    );
    for path in [
        daemon.socket(VGPU_A),
        daemon.socket(VGPU_B),
        daemon.control_socket(),
    ] {
        assert!(!path.exists(), "{} left behind", path.display());
    }
    Ok(())
}

#[test]
fn list_answers_while_a_session_is_stuck_sending_to_a_client_that_does_not_read()
-> anyhow::Result<()> {
    let daemon = TestDaemon::standard()?;
    let a = daemon.connect(VGPU_A)?;
    let mut b = daemon.connect(VGPU_B)?;
    // 64 MiB of replies requested, none read.
    let access = RegionAccess {
        offset: 0,
        region: region::BAR0,
        count: 1 << 20,
    };
    let message = crate::rig::message(7, command::REGION_READ, 0, access.as_bytes());
    let flood = a.stream().try_clone()?;
    flood.set_write_timeout(Some(Duration::from_secs(2)))?;
    for _ in 0..64 {
        if (&flood).write_all(&message).is_err() {
            break;
        }
    }
    std::thread::sleep(Duration::from_millis(300));
    let socket = daemon.control_socket();
    let started = Instant::now();
    let entry = crate::rig::within(Duration::from_secs(5), "list", move || {
        list_entry(&socket, VGPU_A)
    })?;
    assert_eq!(entry["attached"], true);
    assert!(started.elapsed() < Duration::from_secs(5));
    // B and a screenshot of B are unaffected.
    assert_serves(&mut b, "vGPU B")?;
    for (index, value) in [
        (DISPI_XRES, 64),
        (DISPI_YRES, 64),
        (DISPI_BPP, 32),
        (DISPI_VIRT_WIDTH, 64),
        (DISPI_ENABLE, 0x41),
    ] {
        b.dispi_write(index, value)?;
    }
    let socket = daemon.control_socket();
    let shot = crate::rig::within(Duration::from_secs(8), "screenshot of B", move || {
        control_request(
            &socket,
            "screenshot",
            serde_json::json!({"uuid": VGPU_B.to_string()}),
            Duration::from_secs(8),
        )
    })?;
    assert_eq!(shot["ok"], true, "{shot}");
    // The client leaves: the vGPU, stuck sending to it, notices.
    drop(flood);
    drop(a);
    wait_detached(&daemon, VGPU_A)?;
    Ok(())
}

#[test]
fn list_answers_while_a_session_works_through_queued_walks() -> anyhow::Result<()> {
    let daemon = TestDaemon::standard()?;
    let mut a = daemon.connect(VGPU_A)?;
    let mut mem = GuestMemory::new(4 * 4096)?;
    let g = 0x1_0000_0000u64;
    for i in 0..512 {
        for (table, next) in [(0u64, 1u64), (1, 2), (2, 3)] {
            let at = (table * 4096 + 8 * i) as usize;
            mem.bytes_mut()[at..at + 8].copy_from_slice(&((g + next * 4096) | 7).to_le_bytes());
        }
    }
    a.dma_map(DmaMapRequest::read_write(g, 4 * 4096), Some(mem.as_fd()))?;
    for _ in 0..6 {
        a.region_write_posted(region::BAR2, 0x1100, &((g as u32) | 7).to_le_bytes())?;
        a.region_write_posted(region::BAR2, 0x1104, &((g >> 32) as u32).to_le_bytes())?;
    }
    std::thread::sleep(Duration::from_millis(100));
    for _ in 0..3 {
        let socket = daemon.control_socket();
        let response = crate::rig::within(Duration::from_secs(4), "list", move || {
            control_request(&socket, "list", serde_json::Value::Null, CONTROL_TIMEOUT)
        })?;
        assert_eq!(response["ok"], true);
    }
    let mut b = daemon.connect(VGPU_B)?;
    assert_serves(&mut b, "vGPU B")?;
    drop(a);
    Ok(())
}

#[test]
fn a_stalled_or_flooding_control_client_does_not_stop_others() -> anyhow::Result<()> {
    let daemon = TestDaemon::standard()?;
    // Half a line, never finished.
    let stalled = UnixStream::connect(daemon.control_socket())?;
    (&stalled).write_all(b"{\"version\":1,\"command\":")?;
    // Many requests whose responses are never read.
    let flooder = UnixStream::connect(daemon.control_socket())?;
    flooder.set_write_timeout(Some(Duration::from_secs(2)))?;
    let line = b"{\"version\":1,\"command\":\"list\"}\n".repeat(2000);
    let _ = (&flooder).write_all(&line);
    // Idle connections.
    let idle: Vec<UnixStream> = (0..50)
        .map(|_| UnixStream::connect(daemon.control_socket()))
        .collect::<Result<_, _>>()?;
    let socket = daemon.control_socket();
    let response = crate::rig::within(Duration::from_secs(5), "list", move || {
        control_request(&socket, "list", serde_json::Value::Null, CONTROL_TIMEOUT)
    })?;
    assert_eq!(response["ok"], true);
    let mut a = daemon.connect(VGPU_A)?;
    assert_serves(&mut a, "vGPU A")?;
    drop((stalled, flooder, idle));
    Ok(())
}

#[test]
fn control_requests_that_break_the_framing_get_bad_request() -> anyhow::Result<()> {
    let daemon = TestDaemon::standard()?;
    let stream = UnixStream::connect(daemon.control_socket())?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut ask = |bytes: &[u8]| -> anyhow::Result<serde_json::Value> {
        (&stream).write_all(bytes)?;
        let mut line = String::new();
        reader.read_line(&mut line)?;
        Ok(serde_json::from_str(&line)?)
    };
    let cases: [(&[u8], &str); 4] = [
        (b"not json\n", "bad_request"),
        (
            b"{\"version\":1,\"command\":\"list\",\"extra\":1}\n",
            "bad_request",
        ),
        (
            b"{\"version\":2,\"command\":\"list\"}\n",
            "unsupported_version",
        ),
        (
            b"{\"version\":1,\"command\":\"frobnicate\"}\n",
            "unknown_command",
        ),
    ];
    for (request, kind) in cases {
        let response = ask(request)?;
        assert_eq!(response["ok"], false, "{response}");
        assert_eq!(response["error"]["kind"], kind, "{response}");
        assert_eq!(response["version"], 1);
    }
    let screenshot = ask(b"{\"version\":1,\"command\":\"screenshot\",\"args\":{\"uuid\":\"00000000-0000-0000-0000-000000000000\"}}\n")?;
    assert_eq!(screenshot["error"]["kind"], "not_found", "{screenshot}");
    let no_scanout = ask(format!(
        "{{\"version\":1,\"command\":\"screenshot\",\"args\":{{\"uuid\":\"{VGPU_A}\"}}}}\n"
    )
    .as_bytes())?;
    assert_eq!(no_scanout["error"]["kind"], "no_scanout", "{no_scanout}");
    // A line over 64 KiB.
    let mut long = b"{\"version\":1,\"command\":\"list\",\"pad\":\"".to_vec();
    long.resize(70 << 10, b'x');
    long.extend_from_slice(b"\"}\n");
    let response = ask(&long)?;
    assert_eq!(response["error"]["kind"], "bad_request", "{response}");
    Ok(())
}

#[test]
fn list_tracks_attachment_and_counts_refusals_of_each_vgpu_alone() -> anyhow::Result<()> {
    let daemon = TestDaemon::standard()?;
    let socket = daemon.control_socket();
    assert_eq!(list_entry(&socket, VGPU_A)?["attached"], false);
    let mut a = daemon.connect(VGPU_A)?;
    assert_eq!(list_entry(&socket, VGPU_A)?["attached"], true);
    assert_eq!(list_entry(&socket, VGPU_B)?["attached"], false);
    for _ in 0..10 {
        let _ = a.region_read(20, 0, 4);
    }
    for _ in 0..7 {
        a.xlate(0, 0x1000, false)?;
    }
    let entry = list_entry(&socket, VGPU_A)?;
    assert_eq!(entry["refused_messages"], 10, "{entry}");
    assert_eq!(entry["mmu_faults"], 7, "{entry}");
    let other = list_entry(&socket, VGPU_B)?;
    assert_eq!(other["refused_messages"], 0, "{other}");
    assert_eq!(other["mmu_faults"], 0, "{other}");
    assert_eq!(entry["max_dma_maps"], 1024);
    assert_eq!(entry["max_dma_bytes"], 256u64 << 30);
    drop(a);
    wait_detached(&daemon, VGPU_A)?;
    let mut again = reconnect(&daemon, VGPU_A)?;
    assert_serves(&mut again, "vGPU A")?;
    Ok(())
}

fn set_mode(c: &mut vgpud_tests::RawClient, mode: [u16; 6]) -> anyhow::Result<()> {
    use vgpud_tests::regs::bar2::{DISPI_X_OFFSET, DISPI_Y_OFFSET};
    c.dispi_write(DISPI_ENABLE, 0)?;
    for (index, value) in [
        DISPI_XRES,
        DISPI_YRES,
        DISPI_BPP,
        DISPI_VIRT_WIDTH,
        DISPI_X_OFFSET,
        DISPI_Y_OFFSET,
    ]
    .into_iter()
    .zip(mode)
    {
        c.dispi_write(index, value)?;
    }
    c.dispi_write(DISPI_ENABLE, 0x41)?;
    Ok(())
}

fn screenshot(daemon: &TestDaemon, uuid: uuid::Uuid) -> anyhow::Result<serde_json::Value> {
    let socket = daemon.control_socket();
    crate::rig::within(Duration::from_secs(12), "screenshot", move || {
        control_request(
            &socket,
            "screenshot",
            serde_json::json!({"uuid": uuid.to_string()}),
            Duration::from_secs(12),
        )
    })
}

#[test]
fn a_guest_mode_can_only_show_its_own_slice() -> anyhow::Result<()> {
    let mut daemon = TestDaemon::standard()?;
    let mut a = daemon.connect(VGPU_A)?;
    let mut b = daemon.connect(VGPU_B)?;
    set_mode(&mut b, [64, 64, 32, 64, 0, 0])?;
    let last_line = ((16 << 20) / 7680 - 1) as u16;
    // [XRES, YRES, BPP, VIRT_WIDTH, X_OFFSET, Y_OFFSET] → shown?
    let cases: [([u16; 6], Option<u64>); 10] = [
        ([1920, 64, 32, 65535, 0, 0], Some(0)),
        ([1920, 64, 32, 65535, 0, 1], None),
        ([1920, 64, 32, 65535, 65535, 0], None),
        ([64, 64, 32, 65535, 65535, 65535], None),
        ([64, 1, 32, 64, 0, 65535], Some(65535 * 256)),
        (
            [1920, 1, 32, 1920, 0, last_line],
            Some(u64::from(last_line) * 7680),
        ),
        ([1920, 2, 32, 1920, 0, last_line], None),
        ([64, 64, 8, 64, 0, 0], None),
        ([64, 64, 15, 64, 0, 0], None),
        ([64, 64, 32, 63, 0, 0], None),
    ];
    for (mode, shown) in cases {
        set_mode(&mut a, mode)?;
        let response = screenshot(&daemon, VGPU_A)?;
        match shown {
            Some(offset) => {
                assert_eq!(response["ok"], true, "{mode:?}: {response}");
                assert_eq!(response["result"]["offset"], offset, "{mode:?}");
            }
            None => assert_eq!(
                response["error"]["kind"], "no_scanout",
                "{mode:?}: {response}"
            ),
        }
        assert_eq!(screenshot(&daemon, VGPU_B)?["ok"], true, "B after {mode:?}");
    }
    assert!(daemon.is_running());
    Ok(())
}

#[test]
fn screenshots_and_list_answer_while_a_session_is_stuck_sending_a_dma_request() -> anyhow::Result<()>
{
    let daemon = TestDaemon::standard()?;
    let mut a = daemon.connect(VGPU_A)?;
    let mut b = daemon.connect(VGPU_B)?;
    set_mode(&mut a, [64, 64, 32, 64, 0, 0])?;
    set_mode(&mut b, [64, 64, 32, 64, 0, 0])?;
    // A 1 MiB DMA_WRITE request to a client that reads nothing, then more
    // requests behind it.
    a.dma_map(DmaMapRequest::read_write(0x4_0000_0000, 1 << 20), None)?;
    program_dma(&mut a, 0x4_0000_0000, 0, 1 << 20)?;
    let stream = a.stream().try_clone()?;
    let access = RegionAccess {
        offset: vgpud_tests::regs::bar2::DMA_CONTROL,
        region: region::BAR2,
        count: 4,
    };
    let mut start = crate::rig::message(900, command::REGION_WRITE, 0, access.as_bytes());
    start.extend_from_slice(&2u32.to_le_bytes());
    (&stream).write_all(&start)?;
    let read = RegionAccess {
        offset: 0,
        region: region::BAR0,
        count: 1 << 20,
    };
    let flood = crate::rig::message(901, command::REGION_READ, 0, read.as_bytes());
    stream.set_write_timeout(Some(Duration::from_secs(1)))?;
    for _ in 0..8 {
        if (&stream).write_all(&flood).is_err() {
            break;
        }
    }
    std::thread::sleep(Duration::from_millis(300));
    for uuid in [VGPU_A, VGPU_B, VGPU_B] {
        let response = screenshot(&daemon, uuid)?;
        assert_eq!(response["ok"], true, "{uuid}: {response}");
    }
    let socket = daemon.control_socket();
    let entry = crate::rig::within(Duration::from_secs(5), "list", move || {
        list_entry(&socket, VGPU_A)
    })?;
    assert_eq!(entry["attached"], true);
    assert_serves(&mut b, "vGPU B")?;
    drop(stream);
    drop(a);
    wait_detached(&daemon, VGPU_A)?;
    Ok(())
}

/// Starts the standard configuration with `line` and says whether it
/// came up (it is stopped again) or exited, with its stderr.
fn starts_with(line: &str) -> anyhow::Result<(bool, String)> {
    let dir = tempfile::tempdir()?;
    let config = DaemonConfig::standard().with(line);
    match TestDaemon::start_in(dir, &config) {
        Ok(daemon) => Ok((true, daemon.stderr())),
        Err(error) => Ok((false, format!("{error:#}"))),
    }
}

#[test]
fn dma_allowances_are_carved_from_the_system_limits_exactly_as_documented() -> anyhow::Result<()> {
    // docs/configuration.md, "DMA budget": vm.max_map_count less 2048,
    // and 32 per vGPU besides its windows; RLIMIT_AS or 128 TiB less
    // 64 GiB, each vGPU taking max_dma_bytes and twice its framebuffer.
    let max_map_count: u64 = std::fs::read_to_string("/proc/sys/vm/max_map_count")?
        .trim()
        .parse()?;
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit into the struct it is given.
    let got = unsafe { libc::getrlimit(libc::RLIMIT_AS, &raw mut limit) };
    anyhow::ensure!(got == 0, "getrlimit");
    if limit.rlim_cur != libc::RLIM_INFINITY {
        eprintln!("skipped: RLIMIT_AS is set");
        return Ok(());
    }
    let per_vgpu_maps = (max_map_count - 2048) / 2 - 32;
    let (fits, log) = starts_with(&format!("max_dma_maps = {}", per_vgpu_maps.min(65535)))?;
    assert!(fits, "two vGPUs of {per_vgpu_maps} windows fit: {log}");
    if per_vgpu_maps < 65535 {
        let (fits, log) = starts_with(&format!("max_dma_maps = {}", per_vgpu_maps + 1))?;
        assert!(!fits, "one window too many started");
        assert!(log.contains("max_dma_maps"), "{log}");
    }
    // Address space: two vGPUs of 16 MiB framebuffers.
    let left_mib = (128u64 << 20) - (64 << 10);
    let per_vgpu_mib = left_mib / 2 - 32;
    let (fits, log) = starts_with(&format!("max_dma_bytes = \"{per_vgpu_mib}MiB\""))?;
    assert!(fits, "two vGPUs of {per_vgpu_mib} MiB fit: {log}");
    let (fits, log) = starts_with(&format!("max_dma_bytes = \"{}MiB\"", per_vgpu_mib + 1))?;
    assert!(!fits, "1 MiB too many started");
    assert!(log.contains("max_dma_bytes"), "{log}");
    Ok(())
}

#[test]
fn check_refuses_what_the_daemon_would_refuse_at_start() -> anyhow::Result<()> {
    // docs/configuration.md: "`vgpud --check --config FILE` validates a
    // file and exits without serving"; "a configuration that does not fit
    // is refused when the daemon starts". Two vGPUs of 65535 windows never
    // fit under the default vm.max_map_count (65530).
    let dir = tempfile::tempdir()?;
    let config = dir.path().join("vgpud.toml");
    std::fs::write(
        &config,
        DaemonConfig::standard()
            .with("max_dma_maps = 65535")
            .render(&dir.path().join("run")),
    )?;
    if starts_with("max_dma_maps = 65535")?.0 {
        eprintln!("skipped: this system's limits fit two vGPUs of 65535 windows");
        return Ok(());
    }
    let output = Command::new(vgpud_binary()?)
        .arg("--check")
        .arg("--config")
        .arg(&config)
        .output()?;
    assert!(
        !output.status.success(),
        "--check passed a configuration the daemon refuses: {}",
        String::from_utf8_lossy(&output.stdout)
    );
    Ok(())
}

#[test]
fn sigint_ends_the_daemon_like_sigterm_with_a_full_blocking_req() -> anyhow::Result<()> {
    let mut daemon = TestDaemon::standard()?;
    let mut a = daemon.connect(VGPU_A)?;
    let req = EventFd::new()?;
    a.assign_irq_eventfds(irq_index::REQ, 0, 1, &[req.as_fd()])?;
    fill_eventfd(req.as_fd())?;
    set_nonblocking(req.as_fd(), false)?;
    let pid = Pid::from_raw(daemon.pid().expect("pid") as i32).expect("pid");
    let started = Instant::now();
    kill_process(pid, Signal::INT)?;
    let deadline = started + Duration::from_secs(5);
    while daemon.is_running() {
        assert!(
            Instant::now() < deadline,
            "SIGINT did not end the daemon in 5 s"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let status = daemon.terminate()?;
    assert!(status.success(), "{status}");
    assert!(!daemon.socket(VGPU_A).exists());
    drop(a);
    Ok(())
}
