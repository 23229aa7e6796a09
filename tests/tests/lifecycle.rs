//! The daemon's life: readiness, sockets, SIGTERM, stale and live sockets.

use std::fs;
use std::os::fd::AsFd;
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::UnixListener;
use std::time::Duration;

use rustix::process::{Pid, Signal, kill_process};
use vgpud_tests::daemon::run_to_exit;
use vgpud_tests::regs::config::{VENDOR, VENDOR_ID};
use vgpud_tests::wire::irq_index;
use vgpud_tests::{DaemonConfig, EventFd, TestDaemon, VGPU_A, VGPU_B};

#[test]
fn ready_daemon_listens_on_every_socket() -> anyhow::Result<()> {
    let daemon = TestDaemon::standard()?;
    for path in [
        daemon.socket(VGPU_A),
        daemon.socket(VGPU_B),
        daemon.control_socket(),
    ] {
        let kind = fs::metadata(&path)?.file_type();
        assert!(kind.is_socket(), "{} is not a socket", path.display());
    }
    let mut b = daemon.connect(VGPU_B)?;
    assert_eq!(b.config_read(VENDOR_ID, 2)?, u64::from(VENDOR));
    Ok(())
}

#[test]
fn sigterm_exits_cleanly_and_removes_the_sockets() -> anyhow::Result<()> {
    let mut daemon = TestDaemon::standard()?;
    let _connected = daemon.connect(VGPU_A)?;
    let status = daemon.terminate()?;
    assert!(status.success(), "{status}; stderr:\n{}", daemon.stderr());
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
fn sigterm_asks_a_connected_client_for_the_device_back() -> anyhow::Result<()> {
    let mut daemon = TestDaemon::standard()?;
    let mut c = daemon.connect(VGPU_A)?;
    let request = EventFd::new()?;
    c.assign_irq_eventfds(irq_index::REQ, 0, 1, &[request.as_fd()])?;
    let pid = daemon.pid().and_then(|pid| Pid::from_raw(pid as i32));
    kill_process(pid.expect("running"), Signal::TERM)?;
    assert_eq!(
        request.wait(Duration::from_secs(3))?,
        1,
        "REQ not signalled"
    );
    drop(c);
    let status = daemon.terminate()?;
    assert!(status.success(), "{status}");
    Ok(())
}

#[test]
fn stale_socket_file_is_replaced() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let run = dir.path().join("run");
    fs::create_dir(&run)?;
    // A socket file whose listener is gone, as a crashed daemon leaves it.
    drop(UnixListener::bind(run.join(format!("{VGPU_A}.sock")))?);
    let daemon = TestDaemon::start_in(dir, &DaemonConfig::standard())?;
    let mut a = daemon.connect(VGPU_A)?;
    assert_eq!(a.config_read(VENDOR_ID, 2)?, u64::from(VENDOR));
    Ok(())
}

#[test]
fn second_daemon_on_live_sockets_refuses_to_start() -> anyhow::Result<()> {
    let daemon = TestDaemon::standard()?;
    let config = DaemonConfig::standard().render(daemon.runtime_dir());
    let other = tempfile::tempdir()?;
    let exited = run_to_exit(other.path(), &config, Duration::from_secs(10))?;
    assert!(!exited.status.success(), "second daemon started");
    let mut a = daemon.connect(VGPU_A)?;
    assert_eq!(a.config_read(VENDOR_ID, 2)?, u64::from(VENDOR));
    Ok(())
}

#[test]
fn file_that_is_not_a_socket_is_never_removed() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let run = dir.path().join("run");
    fs::create_dir(&run)?;
    let path = run.join(format!("{VGPU_A}.sock"));
    fs::write(&path, b"precious")?;
    let config = DaemonConfig::standard().render(&run);
    let exited = run_to_exit(dir.path(), &config, Duration::from_secs(10))?;
    assert!(!exited.status.success(), "started over a regular file");
    assert_eq!(fs::read(&path)?, b"precious");
    Ok(())
}
