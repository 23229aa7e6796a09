//! The sd_notify contract of docs/operations.md ("The systemd unit"): what
//! a service manager hears from vgpud at start, on SIGHUP and on SIGTERM.

mod supervised;

use rustix::process::Signal;
use supervised::Supervised;
use vgpud_tests::DaemonConfig;

fn value<'a>(lines: &'a [String], key: &str) -> Option<&'a str> {
    lines.iter().find_map(|l| l.strip_prefix(key))
}

#[test]
fn ready_says_how_many_vgpus_listen() -> anyhow::Result<()> {
    let mut d = Supervised::start(&DaemonConfig::standard(), &[])?;
    let ready = d.wait_for("READY=1")?;
    assert_eq!(
        value(&ready, "STATUS="),
        Some("2 vGPUs: 2 listening, 0 attached"),
        "{ready:?}"
    );
    Ok(())
}

#[test]
fn sighup_is_bracketed_by_reloading_and_ready() -> anyhow::Result<()> {
    let mut d = Supervised::start(&DaemonConfig::standard(), &[])?;
    d.wait_for("READY=1")?;
    d.signal(Signal::HUP)?;
    let reloading = d.wait_for("RELOADING=1")?;
    let usec = value(&reloading, "MONOTONIC_USEC=")
        .unwrap_or_else(|| panic!("no MONOTONIC_USEC= with RELOADING=1: {reloading:?}"));
    assert!(
        usec.parse::<u64>().is_ok_and(|us| us > 0),
        "MONOTONIC_USEC={usec}"
    );
    let ready = d.wait_for("READY=1")?;
    assert!(value(&ready, "STATUS=").is_some(), "{ready:?}");
    // Still serving after the reload.
    d.connect(vgpud_tests::VGPU_A)?;
    Ok(())
}

#[test]
fn sigterm_says_stopping_and_exits_0() -> anyhow::Result<()> {
    let mut d = Supervised::start(&DaemonConfig::standard(), &[])?;
    d.wait_for("READY=1")?;
    d.signal(Signal::TERM)?;
    let stopping = d.wait_for("STOPPING=1")?;
    assert_eq!(
        value(&stopping, "STATUS="),
        Some("stopping"),
        "{stopping:?}"
    );
    let status = d.wait_exit()?;
    assert!(status.success(), "{status}; stderr:\n{}", d.stderr());
    Ok(())
}

#[test]
fn status_follows_attach_and_detach() -> anyhow::Result<()> {
    let mut d = Supervised::start(&DaemonConfig::standard(), &[])?;
    d.wait_for("READY=1")?;
    let client = d.connect(vgpud_tests::VGPU_A)?;
    d.wait_for("STATUS=2 vGPUs: 1 listening, 1 attached")?;
    drop(client);
    d.wait_for("STATUS=2 vGPUs: 2 listening, 0 attached")?;
    Ok(())
}
